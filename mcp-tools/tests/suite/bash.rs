//! `run_bash`: output, exit status, environment, timeouts, the output cap, and the sweep that
//! kills whatever a command leaves running.

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

/// Processes whose environment carries `marker` (every descendant of a command inherits it
/// unless it clears its environment, which the commands below do not).
fn processes_marked(marker: &str) -> Vec<i32> {
    let needle = format!("CLAWBOX_TEST_MARK={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                && !process_gone(*pid)
        })
        .collect()
}

/// Nothing a command starts outlives the call: a background job, a `setsid` escapee and a
/// double-forked orphan are all gone when the result arrives.
#[tokio::test]
async fn leftovers_die_with_the_call() {
    let s = Session::start().await;
    let marker = format!("leftovers-{}", std::process::id());
    let out = s
        .call(
            "run_bash",
            json!({"command": format!(
                "export CLAWBOX_TEST_MARK={marker}; \
                 sleep 300 & echo $! > job; \
                 setsid sleep 300 & echo $! > escapee; \
                 (setsid sleep 300 & echo $! > orphan) ; \
                 echo done"
            )}),
        )
        .await
        .ok();
    assert_eq!(out, "done\n");
    for name in ["job", "escapee", "orphan"] {
        let pid = read_pid(&s.workspace().join(name));
        assert!(process_gone(pid), "{name} {pid} outlived the call");
    }
    assert_eq!(processes_marked(&marker), Vec::<i32>::new());
}

/// A process tree that keeps forking from outside the call's process group (each forker in a
/// session of its own, re-spawning as fast as it can) is killed to the last process, and the
/// next call runs at once. Bounded, so that a broken sweep cannot take the machine down.
#[tokio::test]
async fn a_forking_tree_outside_the_group_is_swept() {
    let s = Session::start().await;
    let marker = format!("forker-{}", std::process::id());
    let out = s
        .call(
            "run_bash",
            json!({"command": format!(
                "export CLAWBOX_TEST_MARK={marker}; \
                 for i in 1 2 3 4 5 6 7 8; do \
                   (setsid bash -c 'for j in $(seq 150); do sleep 300 & (sleep 300 &); done; wait' >/dev/null 2>&1 &); \
                 done; \
                 sleep 0.3; echo started"
            )}),
        )
        .await
        .ok();
    assert_eq!(out, "started\n");
    assert_eq!(processes_marked(&marker), Vec::<i32>::new());
    assert_eq!(
        s.call("run_bash", json!({"command": "echo after"}))
            .await
            .ok(),
        "after\n"
    );
}

/// A cleanup after one call leaves a concurrent call's processes alone.
#[tokio::test]
async fn a_sweep_spares_other_calls() {
    let s = Session::start().await;
    let peer = s.client.peer().clone();
    let slow = tokio::spawn(async move {
        let serde_json::Value::Object(args) = json!({"command": "sleep 300 & echo $! > slowjob; sleep 2; kill -0 $(cat slowjob) && echo alive"})
        else {
            unreachable!()
        };
        peer.call_tool(rmcp::model::CallToolRequestParams::new("run_bash").with_arguments(args))
            .await
            .unwrap()
    });
    assert!(
        eventually(Duration::from_secs(5), || s
            .workspace()
            .join("slowjob")
            .exists())
        .await,
        "the slow call did not start"
    );
    assert_eq!(
        s.call("run_bash", json!({"command": "sleep 100 & echo quick"}))
            .await
            .ok(),
        "quick\n"
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow.content[0].as_text().unwrap().text, "alive\n");
    let pid = read_pid(&s.workspace().join("slowjob"));
    assert!(process_gone(pid), "slow call's job {pid} outlived it");
}
