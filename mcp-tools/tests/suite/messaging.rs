//! `send_message` against real session databases.

use mailbox::{OutboundKind, OutboundReader, Route};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::{Session, routing};

#[tokio::test]
async fn default_route_is_the_session_chat() {
    let s = Session::start().await;
    let text = s
        .call("send_message", json!({"text": "working on it"}))
        .await
        .ok();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let rows = reader.messages_after(0).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(text, format!("sent (id {})", row.seq));
    assert_eq!(row.seq % 2, 1, "outbound seqs are odd");
    assert_eq!(row.kind, OutboundKind::Chat);
    assert_eq!(row.route, routing());
    assert_eq!(row.content, json!({"text": "working on it"}));
    assert_eq!(row.in_reply_to, None);
    assert!(row.id.starts_with("out-"), "{}", row.id);

    let second = s
        .call("send_message", json!({"text": "done", "to": ""}))
        .await
        .ok();
    let rows = reader.messages_after(row.seq).unwrap();
    assert_eq!(second, format!("sent (id {})", rows[0].seq));
    assert!(rows[0].seq > row.seq);
    assert_ne!(rows[0].id, row.id);
}

#[tokio::test]
async fn named_destinations() {
    let s = Session::start().await;
    let work = s
        .call("send_message", json!({"text": "hi", "to": "work"}))
        .await
        .ok();
    // Same chat as the session: keeps the session's thread.
    let family = s
        .call("send_message", json!({"text": "yo", "to": "family"}))
        .await
        .ok();
    let rows = OutboundReader::open(&s.paths.outbound_db())
        .unwrap()
        .messages_after(0)
        .unwrap();
    assert_eq!(work, format!("sent to work (id {})", rows[0].seq));
    assert_eq!(family, format!("sent to family (id {})", rows[1].seq));
    assert_eq!(rows[0].route, Route::new("telegram", "200"));
    assert_eq!(rows[1].route, routing());
}

#[tokio::test]
async fn refusals_write_nothing() {
    let s = Session::start().await;
    assert_eq!(
        s.call("send_message", json!({"text": "x", "to": "boss"}))
            .await
            .err(),
        "unknown destination \"boss\"; valid destinations: family, work"
    );
    assert_eq!(
        s.call("send_message", json!({"text": "  \n"})).await.err(),
        "text is empty"
    );
    // A missing required argument is rmcp's tool error, which the model sees too.
    let missing = s.call("send_message", json!({"to": "work"})).await.err();
    assert!(missing.contains("missing field `text`"), "{missing}");
    let rows = OutboundReader::open(&s.paths.outbound_db())
        .map(|r| r.messages_after(0).unwrap())
        .unwrap_or_default();
    assert!(rows.is_empty(), "{rows:?}");
}
