//! The runner's event log (`outbound.events`, read by `clawbox logs`): its start and readiness,
//! each model step with tokens and latency, each tool call with duration and outcome, a model
//! failure — and `agent-runner check-mcp`, which `clawbox doctor` runs.

use std::process::Stdio;

use mailbox::RunnerEvent;
use mailbox::check::McpCheck;
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session, python};

fn events(session: &Session) -> Vec<RunnerEvent> {
    session
        .outbound()
        .events_after(0, u32::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[tokio::test]
async fn a_turn_with_tool_calls_logs_its_steps_and_calls() {
    let fake = FakeModel::start().await.unwrap();
    let lookup = ToolCall::new("lookup", json!({ "q": "x" }));
    let write = ToolCall::new(
        "write_file",
        json!({ "path": "notes.txt", "content": "hello" }),
    );
    fake.push(Reply::ToolCalls(vec![lookup.clone(), write.clone()]));
    fake.push(Reply::text("done"));
    let mut session = Session::new();
    session.with_builtin_tools();
    session.container_json(&json!({
        "mcp_servers": [ { "name": "ghost", "command": "/nonexistent/server" } ]
    }));
    let seq = session.send("look it up and take a note");
    session.run(&fake).await;
    assert_eq!(session.replies()[0].text(), Some("done"));

    let log = events(&session);
    assert_eq!(log.len(), 6, "{log:#?}");
    let RunnerEvent::Started { model, .. } = &log[0] else {
        panic!("{log:#?}");
    };
    assert_eq!(model, "test-model");
    let RunnerEvent::Ready { tools, problems } = &log[1] else {
        panic!("{log:#?}");
    };
    assert!(*tools >= 10, "the built-in tools: {tools}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("ghost"), "{problems:?}");

    let RunnerEvent::ModelStep {
        turn,
        step: 1,
        attempts: 1,
        prompt_tokens: Some(prompt),
        completion_tokens: Some(_),
        tool_calls: 2,
        ..
    } = &log[2]
    else {
        panic!("{log:#?}");
    };
    assert_eq!(*turn, seq);
    assert!(*prompt > 0);
    match (&log[3], &log[4]) {
        (
            RunnerEvent::ToolCall {
                tool: unknown,
                call_id: unknown_id,
                ok: false,
                error: Some(error),
                step: 1,
                ..
            },
            RunnerEvent::ToolCall {
                tool: written,
                call_id: written_id,
                ok: true,
                error: None,
                step: 1,
                arguments: Some(arguments),
                result: Some(result),
                ..
            },
        ) => {
            // What the call was asked and what it answered, for the session's story.
            let arguments: serde_json::Value = serde_json::from_str(arguments).unwrap();
            assert_eq!(
                arguments,
                json!({ "path": "notes.txt", "content": "hello" })
            );
            assert!(result.contains("notes.txt"), "{result}");
            assert_eq!(
                (unknown.as_str(), unknown_id, written.as_str(), written_id),
                ("lookup", &lookup.id, "write_file", &write.id)
            );
            assert!(error.starts_with("Error: unknown tool 'lookup'"), "{error}");
        }
        other => panic!("{other:#?}"),
    }
    assert!(
        matches!(
            &log[5],
            RunnerEvent::ModelStep { step: 2, tool_calls: 0, finish_reason: Some(f), .. } if f == "stop"
        ),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_model_failure_is_logged_with_its_error() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::Status(400, "no such model".to_owned()));
    let mut session = Session::new();
    session.send("hello");
    session.run(&fake).await;
    let log = events(&session);
    let Some(RunnerEvent::ModelFailed { step: 1, error, .. }) = log.last() else {
        panic!("{log:#?}");
    };
    assert!(error.contains("HTTP 400"), "{error}");
    assert!(error.contains("no such model"), "{error}");
}

#[tokio::test]
async fn check_mcp_starts_each_server_once_and_reports() {
    let python = python();
    let session = Session::new();
    session.container_json(&json!({
        "mcp_servers": [
            { "name": "time", "command": python, "args": ["-m", "mcp_server_time"] },
            { "name": "broken", "command": "/nonexistent/mcp-server" },
            { "name": "no-command" },
        ]
    }));
    let out = tokio::time::timeout(
        RUN_LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"))
            .args(["check-mcp", "--agent-dir"])
            .arg(&session.agent_dir)
            .arg("--workspace")
            .arg(&session.paths.workspace)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TIMEZONE", "Europe/Berlin")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: McpCheck = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert!(report.problems[0].contains("mcp_servers[2]"), "{report:#?}");
    assert_eq!(report.servers.len(), 2, "{report:#?}");
    let time = &report.servers[0];
    assert_eq!((time.name.as_str(), &time.error), ("time", &None));
    let mut tools = time.tools.clone();
    tools.sort();
    assert_eq!(tools, ["convert_time", "get_current_time"]);
    let broken = &report.servers[1];
    assert_eq!(broken.name, "broken");
    assert_eq!(broken.command, "/nonexistent/mcp-server");
    let error = broken.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("broken") && error.contains("/nonexistent/mcp-server"),
        "{error}"
    );

    // Bad arguments are refused with a message, not a report.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"))
        .args(["check-mcp", "--agent-dir"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--agent-dir needs a value"),
        "{out:?}"
    );
}
