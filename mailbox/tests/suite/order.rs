//! Invariant 6, oldest first: pending rows come back in seq order; a row scheduled for later is
//! hidden until due, and both sides can tell when that is.

use mailbox::{InboundDb, InboundKind, InboundReader};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::common::{Session, chat, t};

fn seqs(rows: &[mailbox::InboundMessage]) -> Vec<i64> {
    rows.iter().map(|m| m.seq).collect()
}

#[test]
fn pending_and_due_rows_come_oldest_first() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    // Created out of time order on purpose: seq order is what counts.
    for (i, at) in [30, 10, 20, 0].into_iter().enumerate() {
        host.insert(&chat(&format!("tg:{i}"), "x"), t(at)).unwrap();
    }
    host.fail(4, "gave up").unwrap();

    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(seqs(&host.pending().unwrap()), [2, 6, 8]);
    assert_eq!(seqs(&reader.due(t(100)).unwrap()), [2, 6, 8]);
}

#[test]
fn a_scheduled_row_is_hidden_until_due() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let task = |id: &str, at: i64| mailbox::NewInbound {
        kind: InboundKind::Task,
        content: json!({ "prompt": id }),
        process_after: Some(t(at)),
        ..chat(id, "")
    };
    host.insert(&task("later", 100), t(0)).unwrap(); // 2
    host.insert(&task("soon", 50), t(0)).unwrap(); // 4
    host.insert(&chat("tg:1", "now"), t(0)).unwrap(); // 6

    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(seqs(&reader.due(t(0)).unwrap()), [6]);
    assert_eq!(reader.next_due_after(t(0)).unwrap(), Some(t(50)));
    assert_eq!(
        seqs(&reader.due(t(50)).unwrap()),
        [4, 6],
        "due at exactly process_after"
    );
    assert_eq!(reader.next_due_after(t(50)).unwrap(), Some(t(100)));
    assert_eq!(seqs(&reader.due(t(100)).unwrap()), [2, 4, 6]);
    assert_eq!(reader.next_due_after(t(100)).unwrap(), None);
    // `pending` shows everything, due or not.
    assert_eq!(seqs(&host.pending().unwrap()), [2, 4, 6]);
}

#[test]
fn next_due_is_the_earliest_triggering_row() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(host.next_due().unwrap(), None);

    // Context only: never wakes anyone by itself.
    let context = mailbox::NewInbound {
        trigger: false,
        ..chat("tg:ctx", "background chatter")
    };
    host.insert(&context, t(0)).unwrap();
    assert_eq!(host.next_due().unwrap(), None);

    let scheduled = mailbox::NewInbound {
        process_after: Some(t(60)),
        ..chat("tg:later", "x")
    };
    host.insert(&scheduled, t(10)).unwrap();
    assert_eq!(host.next_due().unwrap(), Some(t(60)));
    host.insert(&chat("tg:now", "y"), t(20)).unwrap();
    // Already due: the time it arrived.
    assert_eq!(host.next_due().unwrap(), Some(t(20)));

    // The container still sees the context row, so the turn can include it.
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let due = reader.due(t(30)).unwrap();
    assert_eq!(seqs(&due), [2, 6]);
    assert!(!due[0].trigger);
}
