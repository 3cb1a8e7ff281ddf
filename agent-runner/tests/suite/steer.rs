//! Steering: messages that arrive while a turn runs join it before its next model request,
//! are acknowledged with its verdict, and are seen once even when the runner dies in between.

use std::time::Duration;

use chrono::Utc;
use mailbox::{AckStatus, Requeue};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session, last_user};

/// The model's first answer (a tool call) comes late enough for a second message to arrive
/// while the first step is under way.
const SLOW_STEP: Duration = Duration::from_secs(3);

fn texts_mentioning<'a>(messages: &'a [Value], needle: &str) -> Vec<&'a str> {
    messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn a_message_sent_during_a_step_joins_the_turn_and_is_answered_with_it() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(
        Reply::ToolCalls(vec![ToolCall::with_id("call_a", "lookup", json!({}))]).after(SLOW_STEP),
    );
    fake.push(Reply::text("looked at the other file"));
    let mut session = Session::new();
    let first = session.send("look at the file");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();
    let second = session.send("no, the other file");
    session.wait_exit(&mut child).await;

    assert_eq!(fake.request_count(), 2);
    let request = fake.last_request().unwrap();
    let roles: Vec<&str> = request
        .messages()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    let joined = last_user(request.messages());
    assert!(joined.starts_with("<now>"), "{joined}");
    assert!(
        joined.contains("New messages arrived while you were working"),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("<message id=\"{second}\""))
            && joined.contains("no, the other file"),
        "{joined}"
    );
    assert_eq!(
        texts_mentioning(request.messages(), "no, the other file").len(),
        1
    );

    // One reply for the turn, answering the message it started for (whose draft it takes
    // over); both acknowledged once, together.
    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].in_reply_to, Some(first));
    let acks: Vec<(i64, AckStatus)> = session
        .acks()
        .iter()
        .map(|a| (a.message_seq, a.status))
        .collect();
    assert_eq!(
        acks,
        [
            (first, AckStatus::Processing),
            (second, AckStatus::Processing),
            (first, AckStatus::Completed),
            (second, AckStatus::Completed),
        ]
    );
    // The history keeps the joined message where the model saw it.
    let history = session.history();
    assert_eq!(history.len(), 5, "{history:?}");
    assert_eq!(history[3]["content"].as_str(), Some(joined.as_str()));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn a_runner_killed_after_a_message_joined_resumes_and_answers_both_once() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(
        Reply::ToolCalls(vec![ToolCall::with_id("call_a", "lookup", json!({}))]).after(SLOW_STEP),
    );
    fake.push(Reply::Hang);
    let mut session = Session::new();
    let first = session.send("look at the file");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();
    let second = session.send("no, the other file");
    // The second request means the step and the joined message are persisted together.
    fake.wait_for_requests(2, RUN_LIMIT).await.unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // What the host does when a runner dies holding claims: both are re-queued.
    let requeued = session
        .inbound
        .requeue(
            &[first, second],
            /*max_tries*/ 3,
            Duration::from_millis(50),
            "runner died",
            Utc::now(),
        )
        .unwrap();
    assert!(
        matches!(requeued[..], [Requeue::Retry { .. }, Requeue::Retry { .. }]),
        "{requeued:?}"
    );
    fake.push(Reply::text("looked at the other file"));
    session.run(&fake).await;

    // The resumed attempt continues after the joined message: seen once, not twice.
    assert_eq!(fake.request_count(), 3);
    let resumed = fake.last_request().unwrap();
    let roles: Vec<&str> = resumed
        .messages()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(
        texts_mentioning(resumed.messages(), "no, the other file").len(),
        1
    );
    assert_eq!(
        texts_mentioning(resumed.messages(), "look at the file").len(),
        1
    );

    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let completed: Vec<(i64, u32)> = session
        .acks()
        .iter()
        .filter(|a| a.status == AckStatus::Completed)
        .map(|a| (a.message_seq, a.attempt))
        .collect();
    assert_eq!(completed, [(first, 2), (second, 2)]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn a_clear_sent_during_a_turn_waits_for_it_to_end() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(
        Reply::ToolCalls(vec![ToolCall::with_id("call_a", "lookup", json!({}))]).after(SLOW_STEP),
    );
    fake.push(Reply::text("done"));
    let mut session = Session::new();
    session.send("look at the file");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();
    let clear = session.send("/clear");
    session.wait_exit(&mut child).await;

    // The turn ends without it; then the conversation is cleared, in order.
    assert_eq!(fake.request_count(), 2);
    let request = fake.last_request().unwrap();
    assert!(texts_mentioning(request.messages(), "/clear").is_empty());
    let replies = session.replies();
    let texts: Vec<&str> = replies.iter().filter_map(|r| r.text()).collect();
    assert_eq!(texts, ["done", "Conversation cleared."]);
    assert_eq!(replies[1].in_reply_to, Some(clear));
    assert!(session.history().is_empty());
}
