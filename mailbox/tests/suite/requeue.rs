//! Retries (DESIGN §5): a claim whose runner died is re-queued with doubling backoff and fails
//! after `max_tries` attempts; the runner claims a row only if this attempt was not taken yet.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use mailbox::outbound::is_claimable;
use mailbox::{Ack, AckStatus, InboundDb, InboundMessage, InboundReader, InboundStatus, Requeue};
use pretty_assertions::assert_eq;

use super::common::{Session, chat, t};

const BASE: Duration = Duration::from_secs(10);

#[test]
fn backoff_doubles_then_the_row_fails() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "crash me"), t(0)).unwrap().seq();
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();

    let mut now = t(0);
    for (tries, wait) in [(1, 10), (2, 20), (3, 40)] {
        let out = host.requeue(&[seq], 4, BASE, "runner died", now).unwrap();
        let at = now + chrono::Duration::seconds(wait);
        assert_eq!(out, [Requeue::Retry { seq, tries, at }]);
        let row = host.get(seq).unwrap().unwrap();
        assert_eq!(
            (row.status, row.tries, row.attempt(), row.process_after),
            (InboundStatus::Pending, tries, tries + 1, Some(at))
        );
        assert_eq!(row.error.as_deref(), Some("runner died"));
        // Waiting out the backoff: invisible to the runner until `at`.
        assert_eq!(
            reader.due(at - chrono::Duration::milliseconds(1)).unwrap(),
            []
        );
        assert_eq!(reader.next_due_after(now).unwrap(), Some(at));
        assert_eq!(reader.due(at).unwrap().len(), 1);
        now = at;
    }

    // The fourth attempt dies too: out of tries.
    let out = host
        .requeue(&[seq], 4, BASE, "heartbeat stale", now)
        .unwrap();
    assert_eq!(out, [Requeue::Failed { seq, tries: 4 }]);
    let row = host.get(seq).unwrap().unwrap();
    assert_eq!((row.status, row.tries), (InboundStatus::Failed, 4));
    let error = row.error.unwrap();
    assert!(
        error.contains("heartbeat stale") && error.contains("4 attempts"),
        "{error}"
    );
    assert_eq!(reader.due(t(10_000)).unwrap(), []);

    // The sender is told once, even across a host restart.
    assert_eq!(
        host.unnotified_failures()
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [seq]
    );
    drop(host);
    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(host.unnotified_failures().unwrap().len(), 1);
    host.mark_notified(seq).unwrap();
    assert_eq!(host.unnotified_failures().unwrap(), []);

    // A finished row is not re-queued again.
    assert_eq!(host.requeue(&[seq], 4, BASE, "again", now).unwrap(), []);
}

#[test]
fn requeue_skips_finished_and_unknown_rows() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let done = host.insert(&chat("tg:1", "a"), t(0)).unwrap().seq();
    let open = host.insert(&chat("tg:2", "b"), t(0)).unwrap().seq();
    assert!(host.fail(done, "could not start the runner").unwrap());
    assert!(!host.fail(done, "twice").unwrap(), "only pending rows fail");

    let out = host
        .requeue(&[done, open, 98], 3, BASE, "runner died", t(5))
        .unwrap();
    assert_eq!(
        out,
        [Requeue::Retry {
            seq: open,
            tries: 1,
            at: t(15),
        }]
    );
    assert_eq!(
        host.get(done).unwrap().unwrap().error.as_deref(),
        Some("could not start the runner")
    );
}

#[test]
fn huge_backoff_does_not_panic_and_stays_readable() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "a"), t(0)).unwrap().seq();
    // A silly configuration: a day's base with 64 tries allowed.
    let day = Duration::from_secs(86_400);
    let mut last = t(0);
    for _ in 0..40 {
        let out = host.requeue(&[seq], 64, day, "runner died", t(0)).unwrap();
        let [Requeue::Retry { at, .. }] = out.as_slice() else {
            panic!("expected a retry: {out:?}");
        };
        assert!(*at >= last);
        last = *at;
    }
    // The row still decodes, and its time still sorts as text.
    let row = host.get(seq).unwrap().unwrap();
    assert_eq!(row.process_after, Some(last));
    assert!(last.year() <= 9999, "{last}");
    assert!(
        last > Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(),
        "clamped, not wrapped"
    );
}

fn message(tries: u32) -> InboundMessage {
    InboundMessage {
        seq: 2,
        id: "tg:1".to_owned(),
        kind: mailbox::InboundKind::Chat,
        created_at: t(0),
        status: InboundStatus::Pending,
        process_after: None,
        tries,
        trigger: true,
        route: super::common::route(),
        sender_id: None,
        sender_name: None,
        content: serde_json::json!({"text": "hi"}),
        error: None,
        detail: None,
    }
}

fn ack(attempt: u32, status: AckStatus) -> Ack {
    Ack {
        id: 1,
        message_seq: 2,
        attempt,
        status,
        error: None,
        detail: None,
        at: t(0),
    }
}

#[test]
fn claimability_table() {
    use AckStatus::{Completed, Failed, Processing};
    let table = [
        // (tries, latest ack, claimable)
        (0, None, true),
        (0, Some(ack(1, Processing)), false),
        (0, Some(ack(1, Completed)), false),
        (0, Some(ack(1, Failed)), false),
        (1, None, true),
        (1, Some(ack(1, Processing)), true),
        (1, Some(ack(1, Completed)), true),
        (1, Some(ack(2, Processing)), false),
        (1, Some(ack(2, Failed)), false),
        (3, Some(ack(2, Processing)), true),
        (3, Some(ack(4, Completed)), false),
        // A verdict from a later attempt than the row knows of: still taken.
        (0, Some(ack(2, Processing)), false),
    ];
    for (tries, latest, want) in table {
        assert_eq!(
            is_claimable(&message(tries), latest.as_ref()),
            want,
            "tries {tries}, latest {latest:?}"
        );
    }
}
