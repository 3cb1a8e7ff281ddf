//! `send_message`, `edit_message` and `add_reaction` against real session databases.

use mailbox::{InboundKind, OutboundKind, OutboundReader, Route};
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

#[tokio::test]
async fn edit_message_replaces_the_text_of_own_messages() {
    let s = Session::start().await;
    s.call("send_message", json!({"text": "draft", "to": "work"}))
        .await
        .ok();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let original = reader.messages_after(0).unwrap().remove(0);

    let reply = s
        .call(
            "edit_message",
            json!({"message_id": original.seq, "text": "final"}),
        )
        .await
        .ok();
    let edit = reader.messages_after(original.seq).unwrap().remove(0);
    assert_eq!(
        reply,
        format!("edited message {} (id {})", original.seq, edit.seq)
    );
    assert_eq!(edit.kind, OutboundKind::Edit);
    assert_eq!(
        edit.content,
        json!({"edit_of": original.seq, "text": "final"})
    );
    assert_eq!(
        edit.route, original.route,
        "the edit goes where the original went"
    );
    assert_eq!(edit.route, Route::new("telegram", "200"));

    // The id as text, as a model copies it from `<message id="…">`, works too.
    s.call(
        "edit_message",
        json!({"message_id": original.seq.to_string(), "text": "final 2"}),
    )
    .await
    .ok();

    let user = s.receive(InboundKind::Chat, routing(), json!({"text": "hi"}));
    let table = [
        (
            json!({"message_id": user, "text": "x"}),
            format!("message {user} is a user message; you can only edit your own messages"),
        ),
        (
            json!({"message_id": 999, "text": "x"}),
            "there is no message with id 999".to_owned(),
        ),
        (
            json!({"message_id": 0, "text": "x"}),
            "there is no message with id 0".to_owned(),
        ),
        (
            json!({"message_id": original.seq, "text": " "}),
            "text is empty".to_owned(),
        ),
        (
            json!({"message_id": edit.seq, "text": "x"}),
            format!(
                "message {} is an edit, not a chat message; pass the id of the message you \
                 first sent",
                edit.seq
            ),
        ),
    ];
    let before = reader.messages_after(0).unwrap().len();
    for (args, want) in table {
        assert_eq!(
            s.call("edit_message", args.clone()).await.err(),
            want,
            "{args}"
        );
    }
    let bad_id = s
        .call("edit_message", json!({"message_id": "seven", "text": "x"}))
        .await
        .err();
    assert!(
        bad_id.contains("message_id must be a message's number, got \"seven\""),
        "{bad_id}"
    );
    assert_eq!(reader.messages_after(0).unwrap().len(), before);
}

#[tokio::test]
async fn add_reaction_to_user_and_own_messages() {
    let s = Session::start().await;
    let elsewhere = Route::new("telegram", "300");
    let user = s.receive(InboundKind::Chat, elsewhere.clone(), json!({"text": "hi"}));
    let reply = s
        .call("add_reaction", json!({"message_id": user, "emoji": "👍"}))
        .await
        .ok();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let reaction = reader.messages_after(0).unwrap().remove(0);
    assert_eq!(
        reply,
        format!("reacted 👍 to message {user} (id {})", reaction.seq)
    );
    assert_eq!(reaction.kind, OutboundKind::Reaction);
    assert_eq!(
        reaction.content,
        json!({"reaction_to": user, "emoji": "👍"})
    );
    assert_eq!(
        reaction.route, elsewhere,
        "routed like the message reacted to"
    );

    s.call("send_message", json!({"text": "done", "to": "work"}))
        .await
        .ok();
    let own = reader.messages_after(reaction.seq).unwrap().remove(0);
    s.call(
        "add_reaction",
        json!({"message_id": own.seq.to_string(), "emoji": " 🎉 "}),
    )
    .await
    .ok();
    let second = reader.messages_after(own.seq).unwrap().remove(0);
    assert_eq!(
        second.content,
        json!({"reaction_to": own.seq, "emoji": "🎉"})
    );
    assert_eq!(second.route, Route::new("telegram", "200"));

    let task = s.receive(InboundKind::Task, routing(), json!({"prompt": "report"}));
    let table = [
        (
            json!({"message_id": 998, "emoji": "👍"}),
            "there is no message with id 998".to_owned(),
        ),
        (
            json!({"message_id": 999, "emoji": "👍"}),
            "there is no message with id 999".to_owned(),
        ),
        (
            json!({"message_id": user, "emoji": ""}),
            "invalid emoji \"\": it is empty".to_owned(),
        ),
        (
            json!({"message_id": user, "emoji": "👍 great"}),
            "invalid emoji \"👍 great\": it contains spaces or control characters; give one emoji"
                .to_owned(),
        ),
        (
            json!({"message_id": user, "emoji": "thumbs-up-please!!"}),
            "invalid emoji \"thumbs-up-please!!\": give one emoji, at most 16 characters"
                .to_owned(),
        ),
        (
            json!({"message_id": task, "emoji": "👍"}),
            format!(
                "message {task} is a scheduled task, not a chat message; reactions go on chat \
                 messages"
            ),
        ),
        (
            json!({"message_id": reaction.seq, "emoji": "👍"}),
            format!(
                "message {} is a reaction, not a chat message; reactions go on chat messages",
                reaction.seq
            ),
        ),
    ];
    let before = reader.messages_after(0).unwrap().len();
    for (args, want) in table {
        assert_eq!(
            s.call("add_reaction", args.clone()).await.err(),
            want,
            "{args}"
        );
    }
    assert_eq!(reader.messages_after(0).unwrap().len(), before);
}
