//! `ask_user_question` against real session databases, with the test playing the host: the
//! question arrives as a request, the answer comes back through the real mailbox API together
//! with the host's notice, and the tool marks that notice handled so it starts no second turn.

use std::time::Duration;

use mailbox::questions::{AskQuestion, Outcome};
use mailbox::request::Request;
use mailbox::{AckStatus, InboundDb, InboundKind, NewInbound, OutboundKind, OutboundReader};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::{Session, routing};

#[tokio::test]
async fn the_answer_is_returned_and_its_notice_marked_handled() {
    let s = Session::start().await;
    let paths = s.paths.clone();
    let host = tokio::task::spawn_blocking(move || {
        // Wait for the question, then answer it as the host does.
        let request = loop {
            std::thread::sleep(Duration::from_millis(10));
            let Ok(reader) = OutboundReader::open(&paths.outbound_db()) else {
                continue;
            };
            if let Some(row) = reader
                .messages_after(0)
                .unwrap()
                .into_iter()
                .find(|m| m.kind == OutboundKind::Request)
            {
                break Request::from_message(&row).unwrap();
            }
        };
        let ask: AskQuestion = serde_json::from_value(request.args.clone()).unwrap();
        let notice = NewInbound {
            id: "question:q1".into(),
            kind: InboundKind::System,
            trigger: true,
            route: routing(),
            sender_id: None,
            sender_name: Some("clawbox".into()),
            content: json!({ "text": "Answer to your question: prod" }),
            process_after: None,
        };
        let mut inbound = InboundDb::open(&paths).unwrap();
        inbound
            .answer_later(
                request.seq,
                |notice_seq| {
                    serde_json::to_value(Outcome::Answered {
                        value: "prod".into(),
                        label: "Production".into(),
                        answered_by: "telegram:7".into(),
                        answered_by_name: Some("Ann".into()),
                        notice_seq,
                    })
                    .unwrap()
                },
                Some(&notice),
                chrono::Utc::now(),
            )
            .unwrap();
        (ask, inbound.pending().unwrap())
    });
    let reply = s
        .call(
            "ask_user_question",
            json!({
                "title": "Deploy", "question": "Where?",
                "options": ["Staging", { "label": "Production", "value": "prod" }],
                "timeout_s": 60,
            }),
        )
        .await
        .ok();
    assert_eq!(
        reply,
        r#"Answer: "prod" (the option "Production", chosen by Ann)"#
    );
    let (ask, pending) = host.await.unwrap();
    assert_eq!(
        ask.options[0].value, "Staging",
        "a plain label is also the value"
    );
    assert_eq!(ask.timeout_s, 60);
    let notice = pending.iter().find(|m| m.id == "question:q1").unwrap();
    let acks = OutboundReader::open(&s.paths.outbound_db())
        .unwrap()
        .latest_acks(&[notice.seq])
        .unwrap();
    assert_eq!(acks[&notice.seq].status, AckStatus::Completed);
    assert_eq!(acks[&notice.seq].attempt, 1);
}

#[tokio::test]
async fn bad_questions_are_refused_before_anyone_sees_them() {
    let s = Session::start().await;
    let table = [
        (
            json!({"title": "", "question": "Q", "options": ["a"]}),
            "title is empty",
        ),
        (
            json!({"title": "T", "question": "Q", "options": []}),
            "options is empty",
        ),
        (
            json!({"title": "T", "question": "Q", "options": ["x".repeat(41)]}),
            "fit a button",
        ),
        (
            json!({"title": "T", "question": "Q", "options": ["a", "a"]}),
            "two options are labelled",
        ),
        (
            json!({"title": "T", "question": "Q", "options": ["a"], "timeout_s": 1}),
            "timeout_s must be between 10 and 86400",
        ),
    ];
    for (args, want) in table {
        let err = s.call("ask_user_question", args.clone()).await.err();
        assert!(err.contains(want), "{args}: {err}");
    }
    // Nothing was asked.
    let rows = OutboundReader::open(&s.paths.outbound_db())
        .map(|r| r.messages_after(0).unwrap())
        .unwrap_or_default();
    assert!(rows.iter().all(|m| m.kind != OutboundKind::Request));
}
