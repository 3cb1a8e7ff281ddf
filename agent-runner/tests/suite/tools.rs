//! Tool calls through the real `mcp-tools` server.

use std::time::Duration;

use chrono::Utc;
use mailbox::{AckStatus, Activity};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, Reply, ToolCall, quirks};

use super::harness::{RUN_LIMIT, Session, alive, mcp_tools_bin, tool_results};

fn with_tools() -> Session {
    let mut session = Session::new();
    session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    session
}

#[tokio::test]
async fn a_tool_round_trip() {
    let fake = FakeModel::start().await.unwrap();
    let write = ToolCall::new(
        "write_file",
        json!({ "path": "notes/a.txt", "content": "hello from the model" }),
    );
    let read = ToolCall::new("read_file", json!({ "path": "notes/a.txt" }));
    fake.push(Reply::ToolCalls(vec![write.clone()]));
    fake.push(Reply::ToolCalls(vec![read.clone()]));
    fake.push(Reply::text("done"));
    let mut session = with_tools();
    session.send("write a note and read it back");
    session.run(&fake).await;

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let written = std::fs::read_to_string(session.paths.workspace.join("notes/a.txt")).unwrap();
    assert_eq!(written, "hello from the model");

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    for name in [
        "send_message",
        "read_file",
        "write_file",
        "edit_file",
        "run_bash",
    ] {
        assert!(tools.contains(&name), "{name} missing from {tools:?}");
    }
    assert!(
        !requests[0].body["tools"].to_string().contains("$schema"),
        "schemas are sent without $schema"
    );
    let second = tool_results(requests[1].messages());
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, write.id);
    assert!(!second[0].1.starts_with("Error"), "{}", second[0].1);
    let third = tool_results(requests[2].messages());
    assert_eq!(third.len(), 2);
    assert_eq!(third[1].0, read.id);
    assert!(
        third[1].1.contains("hello from the model"),
        "{}",
        third[1].1
    );
    assert_eq!(session.replies()[0].text(), Some("done"));
    // user, 2 × (assistant + tool), final answer.
    assert_eq!(session.history().len(), 6);
}

#[tokio::test]
async fn bad_calls_get_error_results_and_the_turn_completes() {
    let fake = FakeModel::start().await.unwrap();
    let unknown = ToolCall::with_id("call_u", "teleport", json!({ "to": "mars" }));
    let broken = ToolCall::with_id("call_b", "read_file", json!({}));
    let mut body = quirks::tool_calls(&[unknown, broken]);
    body["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = json!("{\"path\": ");
    fake.push(Reply::Json(body));
    fake.push(Reply::text("sorry"));
    let mut session = with_tools();
    let seq = session.send("do impossible things");
    session.run(&fake).await;

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let results = tool_results(fake.last_request().unwrap().messages());
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, "call_u");
    assert!(
        results[0]
            .1
            .starts_with("Error: unknown tool 'teleport'. Available tools: ")
            && results[0].1.contains("read_file"),
        "{}",
        results[0].1
    );
    assert_eq!(results[1].0, "call_b");
    assert!(
        results[1].1.starts_with("Error: invalid arguments: "),
        "{}",
        results[1].1
    );
    assert_eq!(session.replies()[0].text(), Some("sorry"));
    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Completed));
}

#[tokio::test]
async fn the_tool_server_is_stopped_with_the_runner() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::tool_call(
        "run_bash",
        json!({ "command": "echo $PPID" }),
    ));
    fake.push(Reply::text("ok"));
    let mut session = with_tools();
    session.send("who is your parent?");
    session.run(&fake).await;

    let results = tool_results(fake.last_request().unwrap().messages());
    let output: &str = &results[0].1;
    let server_pid: i32 = output
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {output:?}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(server_pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(server_pid),
        "mcp-tools ({server_pid}) outlived the runner"
    );
}

#[tokio::test]
async fn sigterm_during_a_tool_call_persists_a_cancelled_result_and_resumes() {
    let fake = FakeModel::start().await.unwrap();
    let call = ToolCall::new(
        "run_bash",
        json!({ "command": "sleep 30", "timeout_ms": 30000 }),
    );
    fake.push(Reply::ToolCalls(vec![call.clone()]));
    let mut session = with_tools();
    let seq = session.send("take your time");
    let mut child = session.start(&fake);
    fake.wait_for_requests(1, RUN_LIMIT).await.unwrap();

    // The runner says what it is running and for how long it may take.
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let state = loop {
        let state = session.outbound().runner_state().unwrap();
        if let Some(state) = state.filter(|s| s.activity == Activity::Tool) {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never in a tool; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(state.tool.as_deref(), Some("run_bash"));
    assert_eq!(
        state.tool_timeout_ms,
        Some(40_000),
        "timeout_ms plus the margin"
    );
    assert_eq!(state.step, 1);

    session.stop(&mut child).await;
    let history = session.history();
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(history[2]["tool_call_id"], call.id.as_str());
    assert_eq!(
        history[2]["content"],
        "Error: the tool call was cancelled because the agent is shutting down"
    );
    assert!(session.replies().is_empty());

    session
        .inbound
        .requeue(
            &[seq],
            3,
            Duration::from_millis(20),
            "runner stopped",
            Utc::now(),
        )
        .unwrap();
    fake.push(Reply::text("resumed"));
    session.run(&fake).await;
    let replies = session.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].text(), Some("resumed"));
    let results = tool_results(fake.last_request().unwrap().messages());
    assert_eq!(results.len(), 1);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
