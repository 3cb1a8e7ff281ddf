//! Interoperability with MCP software we did not write: the official Python SDK's stdio client
//! (`mcp` from PyPI, installed by `make venv`) drives the real binary through every tool
//! (`tests/python/client_all_tools.py`); this side prepares the session and checks what the
//! calls left in the session databases.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mailbox::{InboundDb, InboundKind, OutboundKind, OutboundReader, Route, SessionPaths};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::harness::{BIN, destinations, routing};

/// `CLAWBOX_TEST_PYTHON`, else the workspace's `.venv`. A missing interpreter fails the test:
/// skipping would let the interoperability check silently stop running.
fn python() -> PathBuf {
    let python = std::env::var_os("CLAWBOX_TEST_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        python.exists(),
        "no Python for the MCP SDK interoperability test at {}: run `make venv` in the \
         workspace root (or set CLAWBOX_TEST_PYTHON to a Python with the `mcp` package)",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_official_python_client_calls_every_tool() {
    let python = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_all_tools.py");

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("session");
    let paths = SessionPaths::from_root(&root);
    paths.create_dirs().unwrap();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let skills = dir.path().join("skills");
    std::fs::create_dir_all(skills.join("welcome")).unwrap();
    std::fs::write(
        skills.join("welcome/SKILL.md"),
        "---\nname: welcome\n---\nSay hello.\n",
    )
    .unwrap();
    let mut inbound = InboundDb::open(&paths).unwrap();
    inbound.set_routing(&routing()).unwrap();
    inbound.set_destinations(&destinations()).unwrap();
    let user_message = inbound
        .insert(
            &mailbox::NewInbound {
                id: "tg:100:1:default".into(),
                kind: InboundKind::Chat,
                trigger: true,
                route: routing(),
                sender_id: Some("telegram:1".into()),
                sender_name: Some("Alice".into()),
                content: json!({"text": "hi"}),
                process_after: None,
            },
            chrono::Utc::now(),
        )
        .unwrap()
        .seq();
    drop(inbound);

    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("MCP_TOOLS_BIN", BIN)
        .env("CLAWBOX_MAILBOX_DIR", &root)
        .env("CLAWBOX_WORKSPACE", &paths.workspace)
        .env("CLAWBOX_AGENT_DIR", &agent_dir)
        .env("CLAWBOX_SKILLS_DIR", &skills)
        .env("USER_MESSAGE_ID", user_message.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Python client did not finish within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python MCP client failed ({}); if it cannot import `mcp`, run `make venv`\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let ids: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}) in:\n{stdout}\n--- stderr\n{stderr}"));
    let id = |key: &str| ids[key].as_i64().unwrap();

    let rows = OutboundReader::open(&paths.outbound_db())
        .unwrap()
        .messages_after(0)
        .unwrap();
    let row = |seq: i64| rows.iter().find(|r| r.seq == seq).unwrap();
    let summary: Vec<(i64, OutboundKind, Route, Value)> = rows
        .iter()
        .map(|r| (r.seq, r.kind, r.route.clone(), r.content.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                id("sent"),
                OutboundKind::Chat,
                routing(),
                json!({"text": "hello from python"})
            ),
            (
                id("file"),
                OutboundKind::Chat,
                Route::new("telegram", "200"),
                json!({"text": "a file", "files": ["hello.txt"]})
            ),
            (
                id("edit"),
                OutboundKind::Edit,
                routing(),
                json!({"edit_of": id("sent"), "text": "edited from python"})
            ),
            (
                id("reaction"),
                OutboundKind::Reaction,
                routing(),
                json!({"reaction_to": user_message, "emoji": "👍"})
            ),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(
            paths
                .outbound_files()
                .join(&row(id("file")).id)
                .join("hello.txt")
        )
        .unwrap(),
        "hello\npython\n"
    );
}
