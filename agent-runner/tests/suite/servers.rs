//! What real OpenAI-compatible servers refuse, end to end through the runner binary: each
//! `RequestQuirk` of testkit's fake is a server's behaviour (`docs/models.md`), and each test
//! shows the runner's requests pass it, or that a turn it fails leaves the session working.

use mailbox::AckStatus;
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::quirks::RequestQuirk;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{Session, mcp_tools_bin};

fn statuses(session: &Session) -> Vec<(i64, AckStatus)> {
    let mut acks: Vec<(i64, AckStatus)> = session
        .acks()
        .into_iter()
        .filter(|a| a.status != AckStatus::Processing)
        .map(|a| (a.message_seq, a.status))
        .collect();
    acks.sort_by_key(|a| a.0);
    acks
}

#[tokio::test]
async fn a_tool_step_passes_llama_cpp_python_validation_and_tool_choice() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_request_quirks(&[
        RequestQuirk::NullContentIs500,
        RequestQuirk::ToolsNeedToolChoice,
    ]);
    fake.push(Reply::ToolCalls(vec![ToolCall::new(
        "list_files",
        json!({ "path": "." }),
    )]));
    fake.push(Reply::text("one file"));
    let mut session = Session::new();
    session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    let seq = session.send("what is here?");
    session.run(&fake).await;

    assert_eq!(statuses(&session), [(seq, AckStatus::Completed)]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{}", session.log());
    assert_eq!(requests[0].body["tool_choice"], "auto");
    let assistant = &requests[1].messages()[2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["content"], "");
    assert_eq!(session.replies()[0].text(), Some("one file"));
}

/// A server that refuses `""` beside tool calls (Anthropic behind a gateway): configured, the
/// runner sends `null` from the first request; unconfigured, the refusal is repaired once.
#[tokio::test]
async fn a_server_refusing_empty_content_gets_null() {
    for configured in [true, false] {
        let fake = FakeModel::start().await.unwrap();
        fake.set_request_quirks(&[RequestQuirk::EmptyContentRefused]);
        fake.push(Reply::ToolCalls(vec![ToolCall::new(
            "list_files",
            json!({ "path": "." }),
        )]));
        fake.push(Reply::text("one file"));
        let mut session = Session::new();
        session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
        if configured {
            session.container_json(&json!({ "tool_call_content": "null" }));
        }
        let seq = session.send("what is here?");
        session.run(&fake).await;

        assert_eq!(
            statuses(&session),
            [(seq, AckStatus::Completed)],
            "{}",
            session.log()
        );
        let requests = fake.requests();
        let want = if configured { 2 } else { 3 };
        assert_eq!(
            requests.len(),
            want,
            "configured: {configured}\n{}",
            session.log()
        );
        let accepted = requests.last().unwrap();
        let assistant = &accepted.messages()[2];
        assert_eq!(assistant["role"], "assistant");
        assert!(assistant["tool_calls"].is_array());
        assert_eq!(assistant["content"], serde_json::Value::Null);
        assert_eq!(session.replies()[0].text(), Some("one file"));
    }
}

#[tokio::test]
async fn a_turn_the_server_rejects_does_not_poison_the_next() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_request_quirks(&[RequestQuirk::AlternatingRoles]);
    // The first turn's request is refused (a request the runner cannot repair): the turn fails,
    // its user message stays in history, unanswered.
    fake.push(Reply::Status(
        400,
        "Invalid request: unsupported parameter".to_owned(),
    ));
    let mut session = Session::new();
    let first = session.send("one");
    session.run(&fake).await;
    assert_eq!(statuses(&session), [(first, AckStatus::Failed)]);
    assert_eq!(fake.request_count(), 1, "not retried blindly");

    // The next turn has two user messages in a row, which this server refuses; the runner
    // repairs that once and the turn is answered.
    let second = session.send("two");
    session.run(&fake).await;
    assert_eq!(
        statuses(&session),
        [(first, AckStatus::Failed), (second, AckStatus::Completed)],
        "{}",
        session.log()
    );
    assert_eq!(fake.request_count(), 3);
    let accepted = fake.last_request().unwrap();
    let users: Vec<&str> = accepted
        .messages()
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(users.len(), 1);
    assert!(users[0].contains(">one</message>") && users[0].contains(">two</message>"));

    // So is the turn after: each runner learns the repair again (one refused request per
    // runner, not per turn).
    let third = session.send("three");
    session.run(&fake).await;
    assert_eq!(
        statuses(&session).last(),
        Some(&(third, AckStatus::Completed))
    );
    assert_eq!(fake.request_count(), 5);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn refused_request_fields_are_dropped_once() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_request_quirks(&[
        RequestQuirk::AutoToolChoiceRefused,
        RequestQuirk::StreamOptionsRefused,
    ]);
    fake.push(Reply::text("streamed"));
    let mut session = Session::new();
    session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    session.container_json(&json!({ "model_params": { "stream": true, "temperature": 0.3 } }));
    let seq = session.send("hi");
    session.run(&fake).await;

    assert_eq!(
        statuses(&session),
        [(seq, AckStatus::Completed)],
        "{}",
        session.log()
    );
    let requests = fake.requests();
    // tool_choice refused, then stream_options: one repair each, then accepted.
    assert_eq!(requests.len(), 3, "{}", session.log());
    let last = &requests[2].body;
    assert!(last.get("tool_choice").is_none() && last.get("stream_options").is_none());
    assert_eq!(last["stream"], true);
    assert_eq!(last["temperature"], 0.3);
    assert!(last["tools"].as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(session.replies()[0].text(), Some("streamed"));
}

#[tokio::test]
async fn tool_groups_switched_off_are_not_offered() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    session.container_json(&json!({ "tools": { "tasks": false, "questions": false } }));
    fake.push(Reply::ToolCalls(vec![ToolCall::new(
        "list_tasks",
        json!({}),
    )]));
    fake.push(Reply::text("ok"));
    session.send("hi");
    session.run(&fake).await;

    let requests = fake.requests();
    let names = super::harness::tool_names(&requests[0]);
    assert!(names.contains(&"read_file".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("task") || n == "ask_user_question"),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "the tool list is sorted");
    let system = super::harness::system_prompt(&requests[0]);
    assert!(!system.contains("schedule_task"), "{system}");
    // A call to a switched-off tool is an unknown tool.
    let result = super::harness::tool_results(requests[1].messages());
    assert!(
        result[0].1.starts_with("Error: unknown tool 'list_tasks'"),
        "{result:?}"
    );
}
