//! MCP servers from the agent's `container.json`: a real third-party server from PyPI
//! (`mcp-server-time`), one on the official Python SDK that hangs on a call, servers that never
//! start, and one whose grandchild would outlive it.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{
    RUN_LIMIT, Session, alive, fixture, python, system_prompt, tool_names, tool_results,
};

#[tokio::test]
async fn a_third_party_server_from_pypi_in_a_full_turn() {
    let python = python();
    let fake = FakeModel::start().await.unwrap();
    let call = ToolCall::new(
        "mcp__time__get_current_time",
        json!({ "timezone": "Asia/Tokyo" }),
    );
    fake.push(Reply::ToolCalls(vec![call.clone()]));
    fake.push(Reply::text("It is late in Tokyo."));
    let mut session = Session::new();
    session.with_builtin_tools();
    session.container_json(&json!({
        "model": "gpt-4o",
        "mcp_servers": [
            { "name": "time", "command": python, "args": ["-m", "mcp_server_time"], "env": {} },
        ],
    }));
    session.send("what time is it in Tokyo?");
    session.run(&fake).await;

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "log:\n{}", session.log());
    let tools = tool_names(&requests[0]);
    for name in [
        "mcp__time__get_current_time",
        "mcp__time__convert_time",
        "read_file",
        "run_bash",
    ] {
        assert!(
            tools.contains(&name.to_owned()),
            "{name} missing from {tools:?}"
        );
    }
    let system = system_prompt(&requests[0]);
    assert!(!system.contains("Problems with your setup"), "{system}");

    let results = tool_results(requests[1].messages());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, call.id);
    let result: serde_json::Value =
        serde_json::from_str(&results[0].1).unwrap_or_else(|e| panic!("{e}: {}", results[0].1));
    assert_eq!(result["timezone"], "Asia/Tokyo", "{result}");
    assert!(result["datetime"].as_str().is_some(), "{result}");
    assert_eq!(session.replies()[0].text(), Some("It is late in Tokyo."));
    // user, assistant with the call, its result, the final answer.
    assert_eq!(session.history().len(), 4);
}

#[tokio::test]
async fn servers_that_fail_to_start_are_reported_and_the_built_in_tools_still_work() {
    let fake = FakeModel::start().await.unwrap();
    let write = ToolCall::new(
        "write_file",
        json!({ "path": "a.txt", "content": "still works" }),
    );
    fake.push(Reply::ToolCalls(vec![write.clone()]));
    fake.push(Reply::text("done"));
    let mut session = Session::new();
    session.with_builtin_tools();
    session.container_json(&json!({
        "mcp_servers": {
            "silent": { "command": "sleep", "args": ["100"], "startup_timeout_ms": 500 },
            "quitter": { "command": "/bin/sh", "args": ["-c", "echo 'cannot find my config' >&2; exit 3"] },
            "ghost": { "command": "/nonexistent/mcp-ghost" },
            "clawbox": { "command": "/bin/true" },
            "broken": { "args": ["no command"] },
        },
    }));
    session.send("write a file");
    let started = std::time::Instant::now();
    session.run(&fake).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "servers start concurrently, each within its timeout"
    );

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let requests = fake.requests();
    let tools = tool_names(&requests[0]);
    assert!(tools.contains(&"write_file".to_owned()), "{tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("mcp__")), "{tools:?}");
    let results = tool_results(requests[1].messages());
    assert!(!results[0].1.starts_with("Error"), "{}", results[0].1);
    assert_eq!(
        std::fs::read_to_string(session.paths.workspace.join("a.txt")).unwrap(),
        "still works"
    );

    let system = system_prompt(&requests[0]);
    let problems: Vec<&str> = system
        .split_once("Problems with your setup")
        .unwrap_or_else(|| panic!("no problems section in\n{system}"))
        .1
        .lines()
        .skip(1)
        .collect();
    // (`json!` writes the map sorted by name; the runner keeps the file's order.)
    let expected = [
        "- container.json: mcp_servers.broken was not started: missing field `command`",
        "- container.json: mcp_servers.clawbox was not started: the name \"clawbox\" is reserved for the built-in tools",
        "- MCP server \"ghost\" from container.json is not available: cannot start MCP server ghost (/nonexistent/mcp-ghost): ",
        "- MCP server \"quitter\" from container.json is not available: MCP server quitter failed the handshake: ",
        "- MCP server \"silent\" from container.json is not available: MCP server silent did not start within 500 ms",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (line, want) in problems.iter().zip(expected) {
        assert!(line.starts_with(want), "{line}\nwanted: {want}");
    }
    assert!(
        problems[3].ends_with("its last output: cannot find my config"),
        "{}",
        problems[3]
    );
    assert!(
        session.log().contains("skipping MCP server"),
        "{}",
        session.log()
    );
}

#[tokio::test]
async fn a_call_that_hangs_times_out_and_the_output_of_others_is_cleaned() {
    let python = python();
    let fake = FakeModel::start().await.unwrap();
    let hang = ToolCall::new("mcp__slow__sleep", json!({ "seconds": 60 }));
    let tricky = ToolCall::new("mcp__slow__tricky", json!({}));
    fake.push(Reply::ToolCalls(vec![hang.clone(), tricky.clone()]));
    fake.push(Reply::text("gave up waiting"));
    let mut session = Session::new();
    session.container_json(&json!({
        "mcp_call_timeout_s": 600,
        "mcp_servers": [{
            "name": "slow",
            "command": python,
            "args": [fixture("fake_mcp_server.py")],
            "call_timeout_ms": 1000,
        }],
    }));
    session.send("wait for a minute");
    let started = std::time::Instant::now();
    session.run(&fake).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hanging call was not cut off"
    );

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let results = tool_results(fake.last_request().unwrap().messages());
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, hang.id);
    assert_eq!(
        results[0].1,
        "Error: tool 'mcp__slow__sleep' timed out after 1 s (MCP server slow did not answer)"
    );
    assert_eq!(results[1].0, tricky.id);
    let cleaned = &results[1].1;
    assert!(
        cleaned.starts_with("invoicegpj.exe zerowidth START"),
        "{}",
        &cleaned[..80.min(cleaned.len())]
    );
    assert!(cleaned.ends_with("END"));
    assert!(cleaned.chars().count() <= 30_000, "{}", cleaned.len());
    assert!(cleaned.contains("characters omitted here"));
    assert_eq!(session.replies()[0].text(), Some("gave up waiting"));
    // What the history keeps is what the model saw.
    let history = session.history();
    assert_eq!(history[3]["content"].as_str(), Some(cleaned.as_str()));
}

#[tokio::test]
async fn a_servers_grandchild_dies_with_the_runner() {
    let python = python();
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("hi"));
    let mut session = Session::new();
    let pidfile = session.dir.path().join("grandchild.pid");
    // `sleep` keeps the server's stdout and stderr open, like a real straggler would.
    let script = format!(
        "sleep 300 & echo $! > '{}'; exec '{}' -m mcp_server_time",
        pidfile.display(),
        python.display()
    );
    session.container_json(&json!({
        "mcp_servers": [{ "name": "forker", "command": "/bin/sh", "args": ["-c", script] }],
    }));
    session.send("hello");
    let mut child = session.start(&fake);
    session.wait_replies(1, RUN_LIMIT).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        alive(pid),
        "the grandchild should run while the runner does"
    );
    let tools = tool_names(&fake.last_request().unwrap());
    assert!(
        tools.contains(&"mcp__forker__get_current_time".to_owned()),
        "{tools:?}"
    );

    session.wait_exit(&mut child).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(pid),
        "the server's grandchild ({pid}) outlived the runner"
    );
}
