//! The script gate of scheduled tasks. A task message whose content has a `script` runs it
//! before any model call for that message (claim.rs gives such a message a turn of its own):
//! `bash -c <script>` in the workspace, in its own process group, with a timeout and a cap on
//! its output. Its last line of stdout must be JSON `{"wakeAgent": bool, "data": any}`:
//! `true` wakes the agent with `data` beside the prompt, `false` ends the run without the
//! model, and anything else (a non-zero exit, a timeout, too much output, a last line that is
//! not the contract) ends it too, with the reason reported to the host's run history. Owns
//! running the script and reading its verdict ([`decide`], a pure function with a table test);
//! what the turn does with it is turn.rs's.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Most stdout a script may print; more is an error (a gate prints one line).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// How much of the end of stderr is kept for the reason of a failure.
const STDERR_KEPT: usize = 2048;
/// How long output is still read after the script exited (its background jobs may keep the
/// pipe open).
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// Longest piece of a bad last line quoted back in the reason.
const QUOTED: usize = 200;

/// The script of a scheduled task's message, if it has one.
pub fn task_script(m: &mailbox::InboundMessage) -> Option<&str> {
    if m.kind != mailbox::InboundKind::Task {
        return None;
    }
    m.content
        .get("script")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// What a task's script decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Run the model, with this data next to the prompt.
    Wake { data: Value },
    /// `wakeAgent: false`: the run ends here.
    Skip,
    /// The script failed or broke the contract; the run ends here, and this is why.
    Error { reason: String },
}

/// How a script ended, as [`decide`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It ran past the timeout and was killed.
    TimedOut(Duration),
    /// It printed more than [`MAX_OUTPUT`] and was killed.
    TooMuchOutput,
}

/// The gate's verdict from how the script ended and what it printed.
pub fn decide(ended: &Ended, stdout: &[u8], stderr: &[u8]) -> Gate {
    let error = |reason: String| Gate::Error { reason };
    let stderr_tail = || {
        let text = String::from_utf8_lossy(stderr);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", clip(text))
        }
    };
    match ended {
        Ended::TimedOut(after) => {
            let after = if after.as_millis() < 1000 {
                format!("{} ms", after.as_millis())
            } else {
                format!("{} s", after.as_secs())
            };
            return error(format!("the script timed out after {after} and was killed"));
        }
        Ended::TooMuchOutput => {
            return error(format!(
                "the script printed more than {} KiB and was killed",
                MAX_OUTPUT / 1024
            ));
        }
        Ended::Exited(Some(0)) => {}
        Ended::Exited(Some(code)) => {
            return error(format!(
                "the script exited with status {code}{}",
                stderr_tail()
            ));
        }
        Ended::Exited(None) => {
            return error(format!(
                "the script was killed by a signal{}",
                stderr_tail()
            ));
        }
    }
    let stdout = String::from_utf8_lossy(stdout);
    let Some(last) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return error(
            "the script printed nothing; its last line must be JSON {\"wakeAgent\": true|false, \
             \"data\": …}"
                .into(),
        );
    };
    let contract = |problem: &str| {
        error(format!(
            "the script's last line {problem}; it must be JSON {{\"wakeAgent\": true|false, \
             \"data\": …}}, got: {}",
            clip(last)
        ))
    };
    let Ok(Value::Object(mut verdict)) = serde_json::from_str::<Value>(last) else {
        return contract("is not a JSON object");
    };
    match verdict.get("wakeAgent") {
        Some(Value::Bool(true)) => Gate::Wake {
            data: verdict.remove("data").unwrap_or(Value::Null),
        },
        Some(Value::Bool(false)) => Gate::Skip,
        Some(_) => contract("has a wakeAgent that is not true or false"),
        None => contract("has no wakeAgent"),
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() > QUOTED {
        format!("{}…", text.chars().take(QUOTED).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// Runs `script` with `bash -c` in `workdir` with exactly `env`, and decides.
pub async fn run(
    script: &str,
    workdir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Gate {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(workdir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Gate::Error {
                reason: format!("the script could not be started: {e}"),
            };
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Gate::Error {
            reason: "the script's output could not be read".into(),
        };
    };
    // stderr is read on the side, to its end, keeping its tail for the reason of a failure.
    let stderr = tokio::spawn(read_tail(stderr, STDERR_KEPT));
    let mut out = Vec::new();
    let outcome = tokio::time::timeout(timeout, async {
        let mut stdout = stdout;
        let mut chunk = [0u8; 8192];
        let mut exited: Option<Option<i32>> = None;
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let until_grace_ends = async {
                match grace {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = stdout.read(&mut chunk) => match read {
                    // A read error only ends the output early; the exit status still decides.
                    Ok(0) | Err(_) => {
                        let code = match exited {
                            Some(code) => code,
                            None => child.wait().await.ok().and_then(|s| s.code()),
                        };
                        return Ended::Exited(code);
                    }
                    Ok(n) => {
                        out.extend_from_slice(&chunk[..n]);
                        if out.len() > MAX_OUTPUT {
                            return Ended::TooMuchOutput;
                        }
                    }
                },
                status = child.wait(), if exited.is_none() => {
                    // The script is done; what it left in the background may hold stdout
                    // open. Output still in flight gets a moment, then the verdict stands.
                    exited = Some(status.ok().and_then(|s| s.code()));
                    grace = Some(tokio::time::Instant::now() + EXIT_GRACE);
                }
                () = until_grace_ends => return Ended::Exited(exited.flatten()),
            }
        }
    })
    .await;
    // Whatever happened, nothing the script started outlives it.
    if let Some(pid) = pid {
        // SAFETY: killpg on the process group we created for the script; a group that is
        // already gone only makes this fail with ESRCH.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    let ended = outcome.unwrap_or(Ended::TimedOut(timeout));
    // Reap it (SIGKILL makes this immediate) so it leaves no zombie.
    let _ = child.wait().await;
    // With the group dead the pipe closes; the bound only guards against a writer that
    // escaped the group.
    let err = match tokio::time::timeout(Duration::from_secs(1), stderr).await {
        Ok(Ok(err)) => err,
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    decide(&ended, &out, &err)
}

/// Reads the pipe to its end (a script that writes a lot to stderr must not block on it) and
/// keeps the last `keep` bytes, where the reason of a failure usually is.
async fn read_tail(mut pipe: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn verdicts() {
        let ok = Ended::Exited(Some(0));
        let table: Vec<(Ended, &str, &str, Result<Gate, &str>)> = vec![
            (ok, "{\"wakeAgent\": false}\n", "", Ok(Gate::Skip)),
            (
                ok,
                "checking…\n{\"wakeAgent\": true, \"data\": {\"failed\": [\"build 42\"]}}\n\n",
                "",
                Ok(Gate::Wake {
                    data: json!({ "failed": ["build 42"] }),
                }),
            ),
            (
                ok,
                "{\"wakeAgent\": true}",
                "",
                Ok(Gate::Wake { data: Value::Null }),
            ),
            (ok, "", "", Err("the script printed nothing")),
            (
                ok,
                "all good\n",
                "",
                Err(
                    "is not a JSON object; it must be JSON {\"wakeAgent\": true|false, \"data\": …}, got: all good",
                ),
            ),
            (ok, "[true]", "", Err("is not a JSON object")),
            (ok, "{\"wake\": true}", "", Err("has no wakeAgent")),
            (
                ok,
                "{\"wakeAgent\": \"yes\"}",
                "",
                Err("has a wakeAgent that is not true or false"),
            ),
            (
                Ended::Exited(Some(2)),
                "{\"wakeAgent\": true}",
                "curl: (6) Could not resolve host\n",
                Err("the script exited with status 2: curl: (6) Could not resolve host"),
            ),
            (Ended::Exited(None), "", "", Err("killed by a signal")),
            (
                Ended::TimedOut(Duration::from_secs(30)),
                "",
                "",
                Err("the script timed out after 30 s and was killed"),
            ),
            (
                Ended::TooMuchOutput,
                "",
                "",
                Err("the script printed more than 1024 KiB"),
            ),
        ];
        for (ended, out, err, want) in table {
            let got = decide(&ended, out.as_bytes(), err.as_bytes());
            match (got, want) {
                (got, Ok(want)) => assert_eq!(got, want, "{ended:?} {out:?}"),
                (Gate::Error { reason }, Err(needle)) => {
                    assert!(reason.contains(needle), "{out:?}: {reason}")
                }
                (got, Err(needle)) => panic!("{out:?}: got {got:?}, want an error with {needle:?}"),
            }
        }
    }

    fn env() -> Vec<(String, String)> {
        vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())]
    }

    #[tokio::test]
    async fn a_real_script_runs_in_the_workdir_and_is_killed_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), "3").unwrap();
        let gate = run(
            "n=$(cat state); echo \"{\\\"wakeAgent\\\": true, \\\"data\\\": $n}\"",
            dir.path(),
            &env(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(gate, Gate::Wake { data: json!(3) });

        let started = std::time::Instant::now();
        let gate = run(
            "sleep 30 & echo $! > bg.pid; sleep 30",
            dir.path(),
            &env(),
            Duration::from_millis(300),
        )
        .await;
        assert!(
            matches!(&gate, Gate::Error { reason } if reason.contains("timed out")),
            "{gate:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // What it left in the background died with it.
        let pid: i32 = std::fs::read_to_string(dir.path().join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            if stat.is_empty() || state.starts_with('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "background sleep survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // A job left in the background keeps stdout open; the verdict does not wait for it.
        let started = std::time::Instant::now();
        let gate = run(
            "sleep 30 & echo '{\"wakeAgent\": false}'",
            dir.path(),
            &env(),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(gate, Gate::Skip);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        let gate = run(
            "head -c 2000000 /dev/zero | tr '\\0' x",
            dir.path(),
            &env(),
            Duration::from_secs(10),
        )
        .await;
        assert!(
            matches!(&gate, Gate::Error { reason } if reason.contains("more than")),
            "{gate:?}"
        );
    }
}
