//! The `process` runtime: `agent-runner` as a child process of the host, in its own process
//! group so that stopping it also stops its MCP servers and their children. No isolation: the
//! agent can do whatever the host's user can (it is reported as unisolated at start).
//!
//! Every runner this host starts gets a record in `DATA_DIR/runners/<pid>`: its process
//! start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) and its session id,
//! removed when it exits. [`ProcessRuntime::list`] reads these records — the equivalent of a
//! container label — so a restarted host stops the runners its predecessor left behind by
//! looking at them alone, whatever else runs on the machine (it used to read every process's
//! `/proc/<pid>/environ`, which took seconds on a loaded machine). A record whose process is
//! gone, or whose pid now belongs to a process that started at another time (the pid was
//! reused), is stale and removed. A host killed in the microseconds between spawning a runner
//! and writing its record leaves that runner unlisted; it exits on its own after
//! `IDLE_TIMEOUT_MS`, or when the proxy it needs is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    /// `DATA_DIR/runners`: one record per live runner (see the module header).
    records: PathBuf,
    /// Exit watches of the runners this host started, by pid (std Mutex: never held across an
    /// await).
    running: Arc<Mutex<HashMap<i32, watch::Receiver<Option<RunnerExit>>>>>,
}

impl ProcessRuntime {
    pub fn new(runner_bin: PathBuf, settings: RunnerSettings, records: PathBuf) -> Self {
        ProcessRuntime {
            runner_bin,
            settings,
            records,
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
        if let Some(max) = spec.max_file_bytes {
            let limit = libc::rlimit {
                rlim_cur: max as libc::rlim_t,
                rlim_max: max as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and touches nothing but the child's own
            // limits; it runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
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
        // Without its record a restarted host could not find this runner: better not to run it.
        let record = match write_record(&self.records, pid, &spec.session_id) {
            Ok(record) => record,
            Err(e) => {
                signal_group(pid, libc::SIGKILL);
                return Err(RuntimeError::Start(format!(
                    "cannot record the runner in {}: {e}",
                    self.records.display()
                )));
            }
        };
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
            // Gone already is fine (a later host start cleaned it up); anything else leaves a
            // stale record, which the next `list` recognises by its start time and removes.
            let _ = std::fs::remove_file(&record);
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

    fn image(&self) -> Option<&str> {
        None
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
            let records = self.records.clone();
            tokio::task::spawn_blocking(move || read_records(&records))
                .await
                .map_err(|e| RuntimeError::Control(e.to_string()))?
        })
    }
}

/// When process `pid` started (clock ticks since boot), `None` when there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may contain spaces and parentheses, so count the fields
    // after its last `)`; the start time is field 22, the 20th after comm.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the record of runner `pid` (write, then rename: a reader never sees half of one).
fn write_record(dir: &Path, pid: i32, session_id: &str) -> std::io::Result<PathBuf> {
    let started = start_time(pid).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the runner exited at once")
    })?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(pid.to_string());
    let tmp = dir.join(format!(".{pid}.tmp"));
    std::fs::write(&tmp, format!("{started} {session_id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The runners whose records in `dir` still match a live process group leader; stale records
/// are removed.
fn read_records(dir: &Path) -> Result<Vec<FoundRunner>, RuntimeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuntimeError::Control(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|pid| *pid > 1)
        else {
            continue; // a temporary file of a write in progress, or not ours
        };
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = record.split_whitespace();
        let recorded: Option<u64> = fields.next().and_then(|s| s.parse().ok());
        let session_id = fields.next().map(str::to_owned);
        // SAFETY: getpgid has no memory-safety preconditions.
        let leader = unsafe { libc::getpgid(pid) } == pid;
        if recorded.is_some() && recorded == start_time(pid) && leader {
            found.push(FoundRunner {
                id: pid.to_string(),
                session_id,
            });
        } else {
            // Its process is gone or the pid is someone else's now. Removing it can fail only
            // if another host start removed it first.
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn records_of_live_runners_are_found_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("runners");
        assert_eq!(read_records(&records).unwrap(), []);

        // A live group leader, as the runtime spawns runners.
        let child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        write_record(&records, pid, "sess-1").unwrap();
        // A record whose process no longer exists.
        std::fs::write(records.join("999999999"), "12 sess-gone\n").unwrap();
        // A record whose pid now belongs to a process that started at another time (reused).
        let reused = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let reused_pid = reused.id() as i32;
        let started = start_time(reused_pid).unwrap();
        std::fs::write(
            records.join(reused_pid.to_string()),
            format!("{} sess-old\n", started + 1),
        )
        .unwrap();

        assert_eq!(
            read_records(&records).unwrap(),
            [FoundRunner {
                id: pid.to_string(),
                session_id: Some("sess-1".into()),
            }]
        );
        let mut left: Vec<String> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [pid.to_string()], "stale records are removed");

        for mut c in [child, reused] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // Once it has exited, its record is stale too.
        assert_eq!(read_records(&records).unwrap(), []);
    }

    #[test]
    fn the_start_time_is_read_for_live_processes_only() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
