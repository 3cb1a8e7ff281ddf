//! The `process` runtime: `agent-runner` as a child process of the host, in its own process
//! group so that stopping it also stops its MCP servers and their children. No isolation: the
//! agent can do whatever the host's user can (it is reported as unisolated at start).
//!
//! Runners carry `CLAWBOX_INSTALL` in their environment; [`ProcessRuntime::list`] finds them
//! through `/proc/<pid>/environ`, the equivalent of a container label, so a restarted host can
//! stop the runners its predecessor left behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::*;

pub struct ProcessRuntime {
    runner_bin: PathBuf,
    settings: RunnerSettings,
    /// Exit watches of the runners this host started, by pid (std Mutex: never held across an
    /// await).
    running: Arc<Mutex<HashMap<i32, watch::Receiver<Option<RunnerExit>>>>>,
}

impl ProcessRuntime {
    pub fn new(runner_bin: PathBuf, settings: RunnerSettings) -> Self {
        ProcessRuntime {
            runner_bin,
            settings,
            running: Arc::default(),
        }
    }

    fn spawn(&self, spec: &RunnerSpec) -> Result<RunnerHandle, RuntimeError> {
        let mut cmd = Command::new(&self.runner_bin);
        cmd.env_clear();
        for key in ["PATH", "HOME", "LANG", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(
            self.settings
                .env(spec, &RunnerPaths::host(spec, &self.settings)),
        )
        .current_dir(&spec.workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("{}: {e}", self.runner_bin.display())))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| RuntimeError::Start("runner exited before it got a pid".into()))?;
        if let Some(stderr) = child.stderr.take() {
            let session = spec.session_id.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "runner", session_id = %session, "{line}");
                }
            });
        }
        let (tx, rx) = watch::channel(None);
        self.lock().insert(pid, rx.clone());
        let running = Arc::clone(&self.running);
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (Some(code), _) => RunnerExit::Code(code),
                        (None, Some(sig)) => RunnerExit::Signal(sig),
                        (None, None) => RunnerExit::Lost("no exit status".into()),
                    }
                }
                Err(e) => RunnerExit::Lost(e.to_string()),
            };
            // The group may still hold MCP servers or tool processes the runner started.
            signal_group(pid, libc::SIGKILL);
            if let Ok(mut map) = running.lock() {
                map.remove(&pid);
            }
            // Nobody listening is fine: the supervisor may have moved on.
            let _ = tx.send(Some(exit));
        });
        Ok(RunnerHandle {
            id: pid.to_string(),
            exit: rx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, watch::Receiver<Option<RunnerExit>>>> {
        // A poisoned map only means a panic elsewhere; its contents are still valid.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parse_pid(id: &str) -> Result<i32, RuntimeError> {
        id.parse()
            .map_err(|_| RuntimeError::Control(format!("not a process id: {id:?}")))
    }
}

/// Sends `sig` to process group `pgid`; a group that is already gone is not an error.
fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; a stale pgid yields ESRCH.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

impl AgentRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn isolated(&self) -> bool {
        false
    }

    fn shares_kernel(&self) -> bool {
        true
    }

    fn start(&self, spec: RunnerSpec) -> BoxFuture<'_, Result<RunnerHandle, RuntimeError>> {
        Box::pin(async move { self.spawn(&spec) })
    }

    fn stop(&self, id: &str, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let pid = Self::parse_pid(&id)?;
            let watch = self.lock().get(&pid).cloned();
            signal_group(pid, libc::SIGTERM);
            if let Some(mut rx) = watch
                && tokio::time::timeout(grace, rx.wait_for(Option::is_some))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            signal_group(pid, libc::SIGKILL);
            Ok(())
        })
    }

    fn kill(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_owned();
        Box::pin(async move {
            signal_group(Self::parse_pid(&id)?, libc::SIGKILL);
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<FoundRunner>, RuntimeError>> {
        Box::pin(async move {
            let install = self.settings.install_id.clone();
            tokio::task::spawn_blocking(move || scan_proc(&install))
                .await
                .map_err(|e| RuntimeError::Control(e.to_string()))?
        })
    }
}

/// Group leaders whose environment carries `CLAWBOX_INSTALL=<install>`.
fn scan_proc(install: &str) -> Result<Vec<FoundRunner>, RuntimeError> {
    let want = format!("CLAWBOX_INSTALL={install}");
    let entries = std::fs::read_dir("/proc")
        .map_err(|e| RuntimeError::Control(format!("cannot list /proc: {e}")))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes of other users, or gone meanwhile, are unreadable: not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&want.as_bytes()) {
            continue;
        }
        // SAFETY: getpgid has no memory-safety preconditions.
        if unsafe { libc::getpgid(pid) } != pid {
            continue; // an MCP server or tool inside a runner's group; the leader is listed
        }
        let session_id = vars.iter().find_map(|v| {
            v.strip_prefix(b"CLAWBOX_SESSION_ID=")
                .map(|s| String::from_utf8_lossy(s).into_owned())
        });
        found.push(FoundRunner {
            id: pid.to_string(),
            session_id,
        });
    }
    Ok(found)
}
