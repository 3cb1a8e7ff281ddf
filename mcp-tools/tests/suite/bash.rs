//! `run_bash`: output, exit status, environment, timeouts and the output cap.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::{Session, eventually, process_gone, read_pid};

#[tokio::test]
async fn output_and_exit_status() {
    let s = Session::start().await;
    assert_eq!(
        s.call("run_bash", json!({"command": "echo out; echo err >&2"}))
            .await
            .ok(),
        "out\nerr\n"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "echo partial; exit 3"}))
            .await
            .err(),
        "[exit 3]\npartial\n"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "true"})).await.ok(),
        "[no output]"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "kill -9 $$"}))
            .await
            .err(),
        "[killed by signal 9]\n[no output]"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "  "})).await.err(),
        "command is empty"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "true", "timeout_ms": 600001}))
            .await
            .err(),
        "timeout_ms must be between 1 and 600000, got 600001"
    );
}

#[tokio::test]
async fn runs_in_the_workspace_with_an_allow_listed_environment() {
    let s = Session::start_with(&[("TIMEZONE", "Asia/Tokyo"), ("SECRET_TOKEN", "hunter2")]).await;
    let ws = s.workspace().to_str().unwrap().to_owned();
    let out = s
        .call("run_bash", json!({"command": "pwd; echo \"$HOME\"; echo \"$TZ\"; cat <&0; env | cut -d= -f1 | sort | tr '\\n' ' '"}))
        .await
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ws);
    assert_eq!(lines[1], ws);
    assert_eq!(lines[2], "Asia/Tokyo");
    // stdin is empty, then the variable names: bash adds its own (PWD, SHLVL, _), nothing of
    // the server's environment beyond the allow-list leaks.
    let names: Vec<&str> = lines[3].split_whitespace().collect();
    for name in &names {
        assert!(
            [
                "HOME",
                "LANG",
                "PATH",
                "TZ",
                "INBOUND_FILES",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(name),
            "unexpected variable {name} in {names:?}"
        );
    }
    assert!(
        names.contains(&"PATH") && names.contains(&"LANG"),
        "{names:?}"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let s = Session::start().await;
    let started = Instant::now();
    let out = s
        .call(
            "run_bash",
            json!({"command": "echo before; sleep 300 & echo $! > pid; wait", "timeout_ms": 500}),
        )
        .await
        .err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out,
        "[timed out after 500 ms; the command and its background processes were killed]\nbefore\n"
    );
    let pid = read_pid(&s.workspace().join("pid"));
    assert!(
        eventually(Duration::from_secs(5), || process_gone(pid)).await,
        "backgrounded grandchild {pid} survived the timeout"
    );
}

#[tokio::test]
async fn long_output_keeps_head_and_tail() {
    let s = Session::start().await;
    let out = s
        .call(
            "run_bash",
            json!({"command": "echo START; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"}),
        )
        .await
        .ok();
    assert!(out.starts_with("START\naaa"), "{}", &out[..20]);
    assert!(out.ends_with("aaa\nEND\n"), "{}", &out[out.len() - 20..]);
    // 6 + 100000 + 1 + 4 bytes written, 30000 kept.
    assert!(out.contains("\n[… 70011 bytes cut …]\n"), "no cut note");
    assert!(out.len() < 30_100, "{}", out.len());
}

/// A slow command does not hold up other calls: the server stays responsive.
#[tokio::test]
async fn commands_do_not_block_the_server() {
    let s = Session::start().await;
    let peer = s.client.peer().clone();
    let slow = tokio::spawn(async move {
        let serde_json::Value::Object(args) = json!({"command": "sleep 2; echo slow"}) else {
            unreachable!()
        };
        peer.call_tool(rmcp::model::CallToolRequestParams::new("run_bash").with_arguments(args))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(
        s.call("run_bash", json!({"command": "echo fast"}))
            .await
            .ok(),
        "fast\n"
    );
    s.call("write_file", json!({"path": "f", "content": "x"}))
        .await
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!slow.is_finished());
    let slow = slow.await.unwrap();
    assert_eq!(slow.content[0].as_text().unwrap().text, "slow\n");
}
