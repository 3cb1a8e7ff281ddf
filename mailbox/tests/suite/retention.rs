//! Retention: exactly what is old and settled goes, each side pruning its own file; pending work,
//! open deliveries and the newest rows (seq allocation, cursors) stay.

use mailbox::{AckStatus, InboundDb, InboundReader, InboundStatus, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;

use super::common::{Session, chat, reply, t};

const DAY: i64 = 86_400;

#[test]
fn prune_deletes_exactly_what_is_old_and_settled() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    // Old: an answered message, a failure the sender was told of, one they were not told of,
    // and one still pending (retried for weeks).
    let answered = host.insert(&chat("a", "old question"), t(0)).unwrap().seq();
    let told = host.insert(&chat("b", "old failure"), t(0)).unwrap().seq();
    let untold = host
        .insert(&chat("c", "failure, not told"), t(0))
        .unwrap()
        .seq();
    let pending = host
        .insert(&chat("d", "still pending"), t(0))
        .unwrap()
        .seq();
    let mut tx = runner.transaction().unwrap();
    for seq in [answered, told, untold, pending] {
        tx.ack(seq, 1, AckStatus::Processing, None, t(1)).unwrap();
    }
    tx.ack(answered, 1, AckStatus::Completed, None, t(1))
        .unwrap();
    tx.ack(told, 1, AckStatus::Failed, Some("boom"), t(1))
        .unwrap();
    tx.ack(untold, 1, AckStatus::Failed, Some("boom"), t(1))
        .unwrap();
    tx.commit().unwrap();
    let old_reply = runner
        .insert_message(&reply("r1", Some(answered), "old answer"), t(1))
        .unwrap();
    let open_reply = runner
        .insert_message(&reply("r2", Some(answered), "still sending"), t(1))
        .unwrap();

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let acks = outbound.acks_after(0).unwrap();
    host.settle(&[], &acks, t(2)).unwrap();
    host.mark_notified(told).unwrap();
    host.begin_deliveries(&[old_reply, open_reply], &[old_reply, open_reply], t(2))
        .unwrap();
    host.settle(&[(old_reply, Some("tg-1".to_owned()))], &[], t(2))
        .unwrap();

    // New: a message and its answer from today, which hold the max seqs and ids.
    let new = host
        .insert(&chat("e", "new question"), t(40 * DAY))
        .unwrap()
        .seq();
    let mut tx = runner.transaction().unwrap();
    tx.ack(new, 1, AckStatus::Completed, None, t(40 * DAY))
        .unwrap();
    tx.commit().unwrap();
    let new_reply = runner
        .insert_message(&reply("r3", Some(new), "new answer"), t(40 * DAY))
        .unwrap();
    let acks = outbound.acks_after(host.ack_cursor().unwrap()).unwrap();
    host.settle(&[], &acks, t(40 * DAY)).unwrap();
    host.begin_deliveries(&[new_reply], &[new_reply], t(40 * DAY))
        .unwrap();
    host.settle(&[(new_reply, None)], &[], t(40 * DAY)).unwrap();

    let cutoff = t(10 * DAY);
    // The runner first: the host's delivery records tell it what it may drop.
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let pruned = runner.prune_settled(&reader, cutoff).unwrap();
    assert_eq!(
        pruned.rows,
        1 + 6,
        "the delivered old reply; the acks of settled messages"
    );
    let left: Vec<i64> = outbound
        .messages_after(0)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, [open_reply, new_reply]);
    let acked: Vec<(i64, AckStatus)> = outbound
        .acks_after(0)
        .unwrap()
        .iter()
        .map(|a| (a.message_seq, a.status))
        .collect();
    assert_eq!(
        acked,
        [
            (pending, AckStatus::Processing),
            (new, AckStatus::Completed)
        ]
    );

    let pruned = host.prune_settled(cutoff).unwrap();
    assert_eq!(
        pruned.rows,
        2 + 1,
        "answered and told; the finished old delivery"
    );
    let statuses: Vec<(i64, InboundStatus)> = [answered, told, untold, pending, new]
        .iter()
        .filter_map(|seq| host.get(*seq).unwrap().map(|m| (m.seq, m.status)))
        .collect();
    assert_eq!(
        statuses,
        [
            (untold, InboundStatus::Failed),
            (pending, InboundStatus::Pending),
            (new, InboundStatus::Completed)
        ]
    );
    assert!(host.delivery(old_reply).unwrap().is_none());
    assert!(host.delivery(open_reply).unwrap().is_some());
    assert_eq!(
        host.out_cursor().unwrap(),
        new_reply,
        "the cursor does not go back"
    );

    // Nothing more to do: a second prune deletes nothing. And seqs keep growing.
    assert_eq!(host.prune_settled(cutoff).unwrap().rows, 0);
    assert_eq!(runner.prune_settled(&reader, cutoff).unwrap().rows, 0);
    let next = host.insert(&chat("f", "after"), t(41 * DAY)).unwrap().seq();
    assert!(next > new_reply);
}

#[test]
fn the_newest_rows_stay_however_old() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let only = host.insert(&chat("a", "q"), t(0)).unwrap().seq();
    runner
        .ack(only, 1, AckStatus::Completed, None, t(0))
        .unwrap();
    let answer = runner
        .insert_message(&reply("r", Some(only), "a"), t(0))
        .unwrap();
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    host.settle(&[], &outbound.acks_after(0).unwrap(), t(0))
        .unwrap();
    host.begin_deliveries(&[answer], &[answer], t(0)).unwrap();
    host.settle(&[(answer, None)], &[], t(0)).unwrap();

    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(runner.prune_settled(&reader, t(100 * DAY)).unwrap().rows, 0);
    assert_eq!(host.prune_settled(t(100 * DAY)).unwrap().rows, 0);
    // Seq allocation goes on above them.
    let next = host.insert(&chat("b", "q2"), t(100 * DAY)).unwrap().seq();
    assert!(next > answer);
}

#[test]
fn a_large_prune_goes_in_batches_and_reports_freed_pages() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let text = "x".repeat(2_000);
    let n = mailbox::retention::BATCH as usize * 2 + 10;
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        seqs.push(
            host.insert(&chat(&format!("m{i}"), &text), t(0))
                .unwrap()
                .seq(),
        );
    }
    let mut tx = runner.transaction().unwrap();
    for seq in &seqs {
        tx.ack(*seq, 1, AckStatus::Completed, None, t(0)).unwrap();
    }
    tx.commit().unwrap();
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    host.settle(&[], &outbound.acks_after(0).unwrap(), t(0))
        .unwrap();

    let pruned = host.prune_settled(t(DAY)).unwrap();
    assert_eq!(pruned.rows as usize, n - 1, "all but the newest");
    assert!(pruned.bytes >= (n as u64 - 1) * 2_000 / 2, "{pruned:?}");
}
