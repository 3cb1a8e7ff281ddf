//! Streamed steps publish their growing text as the turn's draft; the verdict replaces it with
//! the reply in one transaction; `stream: false` publishes nothing. While a step's tool calls
//! run, the draft names them (the chat's progress line), with or without streaming.

use std::time::Duration;

use mailbox::{AckStatus, Draft};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::fake_model::Gate;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session};

/// Polls until `f` holds for the session's draft.
async fn wait_draft(
    session: &Session,
    what: &str,
    f: impl Fn(Option<&Draft>) -> bool,
) -> Option<Draft> {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    loop {
        let draft = session.outbound().draft().unwrap();
        if f(draft.as_ref()) {
            return draft;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no draft {what}; last {draft:?}; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_verdict(session: &Session, seq: i64) {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    while session.acks().last().map(|a| (a.message_seq, a.status))
        != Some((seq, AckStatus::Completed))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no verdict; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_streamed_reply_is_drafted_then_replaced_by_the_reply() {
    let fake = FakeModel::start().await.unwrap();
    let gate = Gate::new();
    let text = "The answer, written slowly: forty-two.";
    fake.push(Reply::held(
        text, /*pieces*/ 4, /*before*/ 2, &gate,
    ));
    let mut session = Session::new();
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    let seq = session.send("what is it?");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();

    // Pieces of ten characters: two of them are out while the model "writes" the rest.
    let draft = wait_draft(&session, "with the first half", |d| {
        d.is_some_and(|d| d.text.len() >= 20)
    })
    .await
    .unwrap();
    assert_eq!(
        (draft.turn, draft.reply_to, draft.step, draft.text.as_str()),
        (seq, seq, 1, &text[..20])
    );
    assert!(session.replies().is_empty());

    gate.open();
    wait_verdict(&session, seq).await;
    // The verdict deleted the draft in the transaction that wrote the reply.
    assert_eq!(session.outbound().draft().unwrap(), None);
    let replies = session.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].text(), Some(text));
    let request = fake.last_request().unwrap();
    assert_eq!(request.body["stream"], true);
    session.stop(&mut child).await;
}

#[tokio::test]
async fn stream_false_asks_for_the_whole_answer_and_drafts_nothing() {
    let fake = FakeModel::start().await.unwrap();
    let gate = Gate::new();
    fake.push(Reply::held("all at once", 4, 2, &gate));
    let mut session = Session::new();
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    session.container_json(&json!({ "stream": false }));
    let seq = session.send("hi");
    let mut child = session.start(&fake);

    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();
    // The fake answers a non-streaming request only once the gate opens: nothing to draft.
    assert_eq!(session.outbound().draft().unwrap(), None);
    gate.open();
    wait_verdict(&session, seq).await;
    assert_eq!(session.outbound().draft().unwrap(), None);
    assert_eq!(session.replies()[0].text(), Some("all at once"));
    let body = fake.last_request().unwrap().body;
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
    session.stop(&mut child).await;
}

#[tokio::test]
async fn a_stale_draft_is_cleared_when_a_runner_starts() {
    let fake = FakeModel::start().await.unwrap();
    let session = Session::new();
    {
        let mut out = mailbox::OutboundDb::open(&session.paths).unwrap();
        out.set_draft(&Draft {
            turn: 2,
            reply_to: 2,
            step: 1,
            text: "half a repl".into(),
            calls: Vec::new(),
            updated_at: chrono::Utc::now(),
        })
        .unwrap();
    }
    session.run(&fake).await;
    assert_eq!(session.outbound().draft().unwrap(), None);
}

/// The draft while run_bash `sleep 2` runs, then after the turn.
async fn calls_while_a_tool_runs(stream: bool) {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::ToolCalls(vec![
        ToolCall::new(
            "run_bash",
            json!({ "command": "sleep 2", "timeout_ms": 30000 }),
        ),
        // Unknown: answered without running, so not named.
        ToolCall::new("no_such_tool", json!({ "x": "y" })),
    ]));
    fake.push(Reply::text("slept"));
    let mut session = Session::new();
    session.with_builtin_tools();
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    session.container_json(&json!({ "stream": stream }));
    let seq = session.send("sleep a bit");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();

    let draft = wait_draft(&session, "naming the call", |d| {
        d.is_some_and(|d| !d.calls.is_empty())
    })
    .await
    .unwrap();
    assert_eq!((draft.turn, draft.reply_to, draft.step), (seq, seq, 1));
    assert_eq!(draft.text, "");
    assert_eq!(draft.calls.len(), 1, "{draft:?}");
    assert_eq!(draft.calls[0].tool, "run_bash");
    assert_eq!(draft.calls[0].arguments["command"], "sleep 2");
    // Only string arguments travel.
    assert!(draft.calls[0].arguments.get("timeout_ms").is_none());
    // Written while the call runs: no reply yet.
    assert!(session.replies().is_empty());

    wait_verdict(&session, seq).await;
    assert_eq!(session.outbound().draft().unwrap(), None);
    assert_eq!(session.replies()[0].text(), Some("slept"));
    session.stop(&mut child).await;
}

#[tokio::test]
async fn a_running_tool_call_is_named_in_the_draft() {
    calls_while_a_tool_runs(/*stream*/ true).await;
}

#[tokio::test]
async fn a_running_tool_call_is_named_without_streaming_too() {
    calls_while_a_tool_runs(/*stream*/ false).await;
}
