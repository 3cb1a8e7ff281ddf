//! Invariant 3, acks flow outward: the runner records verdicts in `outbound.acks`; the host
//! folds them into `messages_in.status` for the row's current attempt only, behind a cursor.

use std::time::Duration;

use mailbox::outbound::is_claimable;
use mailbox::{
    Ack, AckStatus, InboundDb, InboundReader, InboundStatus, OutboundDb, OutboundReader, Verdict,
};
use pretty_assertions::assert_eq;

use super::common::{Session, chat, reply, t};

#[test]
fn verdicts_fold_into_status_and_the_cursor_only_moves_forward() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    for (id, text) in [("tg:1", "one"), ("tg:2", "two"), ("tg:3", "three")] {
        host.insert(&chat(id, text), t(0)).unwrap();
    }

    // The runner claims the whole batch in one transaction.
    let inbound = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let batch = inbound.due(t(1)).unwrap();
    assert_eq!(batch.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 4, 6]);
    let mut tx = runner.transaction().unwrap();
    for m in &batch {
        tx.ack(m.seq, m.attempt(), AckStatus::Processing, None, t(1))
            .unwrap();
    }
    tx.commit().unwrap();

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(host.ack_cursor().unwrap(), 0);
    let acks = outbound.acks_after(host.ack_cursor().unwrap()).unwrap();
    assert_eq!(
        acks[0],
        Ack {
            id: 1,
            message_seq: 2,
            attempt: 1,
            status: AckStatus::Processing,
            error: None,
            detail: None,
            at: t(1),
        }
    );
    assert_eq!(acks.len(), 3);
    // `processing` is not a verdict.
    assert_eq!(host.settle(&[], &acks, t(9)).unwrap(), []);
    // Nothing changed, so nothing was committed: the cursor stays and they are read again.
    assert_eq!(host.ack_cursor().unwrap(), 0);
    assert!(
        host.pending()
            .unwrap()
            .iter()
            .all(|m| m.status == InboundStatus::Pending)
    );

    // The turn ends: the reply and the verdicts in one transaction.
    let mut tx = runner.transaction().unwrap();
    tx.insert_message(&reply("r1", Some(2), "answer"), t(2))
        .unwrap();
    tx.ack(2, 1, AckStatus::Completed, None, t(2)).unwrap();
    tx.ack(4, 1, AckStatus::Completed, None, t(2)).unwrap();
    tx.ack(6, 1, AckStatus::Failed, Some("model unreachable"), t(2))
        .unwrap();
    tx.commit().unwrap();

    let acks = outbound.acks_after(host.ack_cursor().unwrap()).unwrap();
    assert_eq!(
        acks.iter().map(|a| a.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        host.settle(&[], &acks, t(9)).unwrap(),
        [
            Verdict {
                seq: 2,
                status: InboundStatus::Completed,
                error: None,
                detail: None,
            },
            Verdict {
                seq: 4,
                status: InboundStatus::Completed,
                error: None,
                detail: None,
            },
            Verdict {
                seq: 6,
                status: InboundStatus::Failed,
                error: Some("model unreachable".to_owned()),
                detail: None,
            },
        ]
    );
    assert_eq!(host.ack_cursor().unwrap(), 6);
    let failed = host.get(6).unwrap().unwrap();
    assert_eq!(failed.status, InboundStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("model unreachable"));
    assert_eq!(host.pending().unwrap(), []);
    assert_eq!(inbound.due(t(3)).unwrap(), []);

    // Nothing new past the cursor; folding nothing changes nothing.
    assert_eq!(outbound.acks_after(6).unwrap(), []);
    assert_eq!(host.settle(&[], &[], t(9)).unwrap(), []);
    assert_eq!(host.ack_cursor().unwrap(), 6);

    // Folding an old batch again (a second pass that read from a stale cursor) neither
    // re-applies verdicts nor moves the cursor back.
    let old = outbound.acks_after(0).unwrap();
    assert_eq!(host.settle(&[], &old[..3], t(9)).unwrap(), []);
    assert_eq!(host.ack_cursor().unwrap(), 6);

    // The cursor is durable.
    drop(host);
    let host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(host.ack_cursor().unwrap(), 6);
}

#[test]
fn acks_of_other_attempts_are_ignored() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();

    // Attempt 1 is claimed, the runner goes silent, the host re-queues: the row is on attempt 2.
    runner
        .ack(seq, 1, AckStatus::Processing, None, t(1))
        .unwrap();
    host.requeue(
        &[seq],
        5,
        Duration::from_secs(1),
        "runner went silent",
        t(2),
    )
    .unwrap();
    assert_eq!(host.get(seq).unwrap().unwrap().attempt(), 2);

    // The dead attempt's late verdict, and one from an attempt that never started.
    runner
        .ack(seq, 1, AckStatus::Completed, None, t(3))
        .unwrap();
    runner
        .ack(seq, 3, AckStatus::Failed, Some("from the future"), t(3))
        .unwrap();
    let cursor = host.ack_cursor().unwrap();
    let acks = outbound.acks_after(cursor).unwrap();
    assert_eq!(acks.len(), 3);
    assert_eq!(host.settle(&[], &acks, t(9)).unwrap(), []);
    assert_eq!(
        host.get(seq).unwrap().unwrap().status,
        InboundStatus::Pending
    );
    // Ignored, but consumed: the next pass does not look at them again.
    assert_eq!(host.ack_cursor().unwrap(), 3);

    // The current attempt's verdict counts, once.
    runner
        .ack(seq, 2, AckStatus::Completed, None, t(4))
        .unwrap();
    runner
        .ack(seq, 2, AckStatus::Failed, Some("second verdict"), t(4))
        .unwrap();
    let acks = outbound.acks_after(host.ack_cursor().unwrap()).unwrap();
    assert_eq!(
        host.settle(&[], &acks, t(9)).unwrap(),
        [Verdict {
            seq,
            status: InboundStatus::Completed,
            error: None,
            detail: None,
        }]
    );
    let row = host.get(seq).unwrap().unwrap();
    assert_eq!(row.status, InboundStatus::Completed);
    assert_eq!(
        row.error, None,
        "the re-queue reason is cleared by the verdict"
    );
}

#[test]
fn latest_ack_per_message_decides_claimability() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let a = host.insert(&chat("tg:1", "a"), t(0)).unwrap().seq();
    let b = host.insert(&chat("tg:2", "b"), t(0)).unwrap().seq();
    runner.ack(a, 1, AckStatus::Processing, None, t(1)).unwrap();
    runner.ack(a, 1, AckStatus::Completed, None, t(2)).unwrap();

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    for latest in [
        runner.latest_acks(&[a, b]).unwrap(),
        outbound.latest_acks(&[a, b]).unwrap(),
    ] {
        assert_eq!(latest.len(), 1, "b was never acked");
        assert_eq!(latest[&a].status, AckStatus::Completed);
        assert_eq!(latest[&a].id, 2);
    }

    let latest = runner.latest_acks(&[a, b]).unwrap();
    let inbound = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let claimable: Vec<i64> = inbound
        .due(t(3))
        .unwrap()
        .iter()
        .filter(|m| is_claimable(m, latest.get(&m.seq)))
        .map(|m| m.seq)
        .collect();
    // `a` is still pending (the host has not folded yet) but already answered.
    assert_eq!(claimable, [b]);
}
