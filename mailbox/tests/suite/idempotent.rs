//! Invariant 4, idempotent inbound: a re-delivered platform update is a no-op.

use mailbox::inbound::Inserted;
use mailbox::{InboundDb, InboundKind, InboundMessage, InboundStatus, Route};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::common::{Session, chat, t};

#[test]
fn the_same_key_twice_stores_one_row() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let first = host
        .insert(&chat("tg:chat-1:100:agent", "hi"), t(0))
        .unwrap();
    assert_eq!(first, Inserted::New(2));

    // Re-delivered, even with different content and time: the first write wins.
    let again = host
        .insert(&chat("tg:chat-1:100:agent", "edited"), t(5))
        .unwrap();
    assert_eq!(again, Inserted::Duplicate(2));
    assert_eq!(again.seq(), first.seq());

    // Also after a restart of the host.
    drop(host);
    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(
        host.insert(&chat("tg:chat-1:100:agent", "hi"), t(9))
            .unwrap(),
        Inserted::Duplicate(2)
    );
    // Even once the row is finished: a processed update is never answered twice.
    host.fail(2, "cannot start runner").unwrap();
    assert_eq!(
        host.insert(&chat("tg:chat-1:100:agent", "hi"), t(9))
            .unwrap(),
        Inserted::Duplicate(2)
    );

    assert_eq!(host.status_counts().unwrap(), [(InboundStatus::Failed, 1)]);
    assert_eq!(
        host.get(2).unwrap().unwrap(),
        InboundMessage {
            seq: 2,
            id: "tg:chat-1:100:agent".to_owned(),
            kind: InboundKind::Chat,
            created_at: t(0),
            status: InboundStatus::Failed,
            process_after: None,
            tries: 0,
            trigger: true,
            route: Route::new("telegram", "chat-1"),
            sender_id: Some("telegram:42".to_owned()),
            sender_name: Some("Ada".to_owned()),
            content: json!({ "text": "hi" }),
            error: Some("cannot start runner".to_owned()),
            detail: None,
        }
    );

    // A different key is a different message.
    assert_eq!(
        host.insert(&chat("tg:chat-1:101:agent", "hi"), t(10))
            .unwrap(),
        Inserted::New(4)
    );
}
