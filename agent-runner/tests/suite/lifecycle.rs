//! The runner process: idle exit, wake-ups, signals, resuming after a crash.

use std::time::{Duration, Instant};

use chrono::Utc;
use mailbox::{AckStatus, InboundKind, Journal, Requeue};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session, tool_results};

#[tokio::test]
async fn exits_when_idle_and_ignores_context_only_messages() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    session.insert(InboundKind::Chat, json!({ "text": "just chatting" }), false);
    let started = Instant::now();
    session.run(&fake).await;

    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fake.request_count(), 0, "no trigger, no turn");
    assert!(session.acks().is_empty());
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(state.activity, mailbox::Activity::Idle);
    assert!(mailbox::heartbeat::last_beat(&session.paths.heartbeat()).is_some());
}

#[tokio::test]
async fn wakes_on_a_new_message_and_stops_on_sigterm() {
    wakes_on_a_new_message(Session::new()).await;
}

/// In WAL mode a commit touches only `inbound.db-wal`: the watch must see that too.
#[tokio::test]
async fn wakes_on_a_new_message_in_wal_mode() {
    let session = Session::with_journal(Journal::Wal);
    wakes_on_a_new_message(session).await;
}

async fn wakes_on_a_new_message(mut session: Session) {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("pong"));
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    let mut child = session.start(&fake);
    // Let it start and go idle before the message arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    session.send("ping");
    // Well under the 5 s fallback poll: the file notification woke it.
    let replies = session.wait_replies(1, Duration::from_secs(4)).await;
    assert_eq!(replies[0].text(), Some("pong"));
    assert!(sent.elapsed() < Duration::from_secs(4));

    session.stop(&mut child).await;
}

#[tokio::test]
async fn sigterm_during_a_model_request_leaves_the_claim_for_the_host() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::Hang);
    let mut session = Session::new();
    let seq = session.send("hello");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();

    session.stop(&mut child).await;
    let acks: Vec<(i64, AckStatus)> = session
        .acks()
        .iter()
        .map(|a| (a.message_seq, a.status))
        .collect();
    assert_eq!(acks, [(seq, AckStatus::Processing)], "no verdict");
    assert!(session.replies().is_empty());
}

#[tokio::test]
async fn a_killed_turn_resumes_and_answers_exactly_once() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::ToolCalls(vec![ToolCall::with_id(
        "call_a",
        "lookup",
        json!({}),
    )]));
    fake.push(Reply::Hang);
    let mut session = Session::new();
    let seq = session.send("look it up");

    let mut child = session.start(&fake);
    // The second request means step 1 (call + result) is persisted.
    fake.wait_for_requests(2, RUN_LIMIT).await.unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // What the host does when a runner dies holding a claim.
    let requeued = session
        .inbound
        .requeue(
            &[seq],
            /*max_tries*/ 3,
            Duration::from_millis(50),
            "runner died",
            Utc::now(),
        )
        .unwrap();
    assert!(
        matches!(requeued[..], [Requeue::Retry { tries: 1, .. }]),
        "{requeued:?}"
    );

    fake.push(Reply::text("found it"));
    session.run(&fake).await;

    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].text(), Some("found it"));
    assert_eq!(replies[0].in_reply_to, Some(seq));
    let last = session.acks().pop().unwrap();
    assert_eq!(
        (last.message_seq, last.attempt, last.status),
        (seq, 2, AckStatus::Completed)
    );

    // The resumed request continues the persisted step instead of starting over.
    assert_eq!(fake.request_count(), 3);
    let resumed = fake.last_request().unwrap();
    let roles: Vec<&str> = resumed
        .messages()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(tool_results(resumed.messages())[0].0, "call_a");
    assert_eq!(session.history().len(), 4);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn an_idle_runner_does_not_wake_on_its_own_reads() {
    idle_without_spinning(Session::new()).await;
}

/// WAL readers map and lock `inbound.db-shm`; none of that may count as a change.
#[tokio::test]
async fn an_idle_runner_does_not_wake_on_its_own_reads_in_wal_mode() {
    idle_without_spinning(Session::with_journal(Journal::Wal)).await;
}

async fn idle_without_spinning(mut session: Session) {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("hi"));
    session.set_env("RUST_LOG", "info,agent_runner::runner=trace");
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "1500");
    session.send("hello");
    session.run(&fake).await;

    let log = session.log();
    let wakes = log.lines().filter(|l| l.contains("wake-up")).count();
    // The idle deadline, at most one poll, a few events from the host's insert: not a spin.
    assert!(wakes <= 6, "{wakes} wake-ups in 1.5 s idle:\n{log}");
    assert_eq!(session.replies().len(), 1);
}
