//! The server as a whole: tool list, startup configuration, shutdown.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::{BIN, Session, eventually, process_gone, read_pid};

#[tokio::test]
async fn lists_the_tools_with_schemas() {
    let s = Session::start().await;
    let tools = s.client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "add_reaction",
            "ask_user_question",
            "cancel_task",
            "edit_file",
            "edit_message",
            "grep",
            "list_files",
            "list_tasks",
            "load_skill",
            "pause_task",
            "read_file",
            "resume_task",
            "run_bash",
            "schedule_task",
            "send_file",
            "send_message",
            "update_task",
            "write_file"
        ]
    );
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a description a model can follow",
            tool.name
        );
        let properties = tool.input_schema["properties"].as_object().unwrap();
        for (name, schema) in properties {
            assert!(
                schema["description"].is_string(),
                "{}.{name} has no description",
                tool.name
            );
        }
    }
    let required = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .input_schema
            .get("required")
            .cloned()
            .unwrap_or(json!([]))
    };
    let table = [
        ("send_message", json!(["text"])),
        ("send_file", json!(["path"])),
        ("edit_message", json!(["message_id", "text"])),
        ("add_reaction", json!(["message_id", "emoji"])),
        ("list_files", json!([])),
        ("grep", json!(["pattern"])),
        ("load_skill", json!(["name"])),
        ("run_bash", json!(["command"])),
        ("schedule_task", json!(["prompt"])),
        ("update_task", json!(["task_id"])),
        ("pause_task", json!(["task_id"])),
        ("resume_task", json!(["task_id"])),
        ("cancel_task", json!(["task_id"])),
        ("list_tasks", json!([])),
    ];
    for (name, want) in table {
        assert_eq!(required(name), want, "{name}");
    }
    let edit = tools.iter().find(|t| t.name == "edit_message").unwrap();
    assert_eq!(
        edit.input_schema["properties"]["message_id"]["type"],
        "integer"
    );
    let info = s.client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "mcp-tools");
}

#[tokio::test]
async fn bad_configuration_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .env("CLAWBOX_MAILBOX_DIR", dir.path())
        .env("CLAWBOX_WORKSPACE", dir.path().join("missing"))
        .env("CLAWBOX_AGENT_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is the protocol channel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CLAWBOX_WORKSPACE must name an existing directory"),
        "{stderr}"
    );

    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .env("CLAWBOX_MAILBOX_DIR", dir.path())
        .env("CLAWBOX_WORKSPACE", dir.path())
        .env("CLAWBOX_AGENT_DIR", dir.path())
        .env("TIMEZONE", "Nowhere/Special")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIMEZONE is not a known IANA time zone"),
        "{stderr}"
    );
}

/// Closing the client stops the server, and with it every process its commands started: the
/// background job of a finished command is already gone when its result arrives (bash.rs), and
/// the whole tree of a command still running dies with the server.
#[tokio::test]
async fn closing_the_client_kills_what_commands_left_running() {
    let s = Session::start().await;
    let ws = s.workspace().to_path_buf();
    s.call(
        "run_bash",
        json!({"command": "sleep 300 > /dev/null 2>&1 & echo $! > left.pid"}),
    )
    .await
    .ok();
    let left = read_pid(&ws.join("left.pid"));
    assert!(
        process_gone(left),
        "the background job outlived its command"
    );

    let peer = s.client.peer().clone();
    let running = tokio::spawn(async move {
        let args =
            json!({"command": "sleep 300 & echo $! > inflight.pid; wait", "timeout_ms": 600000});
        let serde_json::Value::Object(args) = args else {
            unreachable!()
        };
        peer.call_tool(rmcp::model::CallToolRequestParams::new("run_bash").with_arguments(args))
            .await
    });
    let pid_file = ws.join("inflight.pid");
    assert!(eventually(Duration::from_secs(5), || pid_file.exists()).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let inflight = read_pid(&pid_file);

    s.client.cancel().await.unwrap();
    running.abort();
    assert!(
        eventually(Duration::from_secs(10), || process_gone(left)
            && process_gone(inflight))
        .await,
        "background processes survived the server: left {left} gone={}, in flight {inflight} gone={}",
        process_gone(left),
        process_gone(inflight)
    );
}
