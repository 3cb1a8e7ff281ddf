//! `run_bash`: one `bash -c` per call, asynchronous (the server keeps answering other calls),
//! in the workspace, in its own process group, with an allow-listed environment. Owns the
//! command's lifetime and its output cap; paths inside the command are not confined (see
//! `paths.rs`).
//!
//! Lifetime: nothing a command starts outlives its call. When bash exits, times out, or the call
//! is cancelled (the future is dropped), the process group gets SIGKILL and then the server's
//! sweep (`reaper.rs`) kills whatever is left: background jobs, processes that left the group
//! with `setsid`, a fork bomb's children. So `sleep 300 &` dies with the call, and a later call
//! never finds the container's process table full of an earlier call's leftovers. A model that
//! needs a server runs it and its client in one command.
//!
//! Result: a non-zero exit, a signal or a timeout is a tool error (`is_error: true`) whose text
//! starts with `[exit N]`, `[killed by signal N]` or `[timed out …]` and still carries the full
//! (capped) output. The model sees the same text either way; the flag lets the runner and the
//! logs tell failed commands from successful ones without parsing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{tool, tool_router};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use super::{Context, Tools};
use crate::error::{ToolError, tool_result};

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Output kept from the start and from the end; what lies between is cut (about 30 000
/// characters in all, a size a model's context can afford per call).
const OUTPUT_HEAD: usize = 15_000;
const OUTPUT_TAIL: usize = 15_000;
/// How long we keep reading after bash exited, for output still in flight from background
/// jobs that hold the pipe open.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunBashArgs {
    /// The bash command line to run (`bash -c`), in the workspace folder.
    pub command: String,
    /// Kill the command after this many milliseconds. Default 30000.
    #[serde(default)]
    #[schemars(range(min = 1, max = 600_000))]
    pub timeout_ms: Option<u64>,
}

#[tool_router(router = bash_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Run a bash command in the workspace; returns stdout and stderr together, \
                       with `[exit N]` first if it failed. Killed with all it started after \
                       `timeout_ms` (default 30 s, at most 10 min). Output over about 30 000 \
                       characters is cut in the middle. stdin is empty. Nothing it starts \
                       outlives it: background jobs (`cmd &`) still running when it returns are \
                       killed, so start a server and its client in the same command. The files \
                       people sent are under $INBOUND_FILES."
    )]
    async fn run_bash(&self, Parameters(args): Parameters<RunBashArgs>) -> CallToolResult {
        match run_bash(self.ctx.clone(), args).await {
            Ok(outcome) if outcome.succeeded() => {
                CallToolResult::success(vec![ContentBlock::text(outcome.render())])
            }
            Ok(outcome) => CallToolResult::error(vec![ContentBlock::text(outcome.render())]),
            Err(err) => tool_result("run_bash", Err(err)),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited(i32),
    Signaled(i32),
    TimedOut(Duration),
}

impl Ending {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(signal)) => Ending::Signaled(signal),
            // Neither code nor signal does not happen for a waited child on Unix.
            (None, None) => Ending::Exited(-1),
        }
    }
}

#[derive(Debug)]
struct Outcome {
    ending: Ending,
    output: String,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    fn render(&self) -> String {
        let header = match self.ending {
            Ending::Exited(0) => None,
            Ending::Exited(code) => Some(format!("[exit {code}]")),
            Ending::Signaled(signal) => Some(format!("[killed by signal {signal}]")),
            Ending::TimedOut(after) => Some(format!(
                "[timed out after {} ms; the command and its background processes were killed]",
                after.as_millis()
            )),
        };
        match (header, self.output.is_empty()) {
            (None, true) => "[no output]".to_owned(),
            (None, false) => self.output.clone(),
            (Some(header), true) => format!("{header}\n[no output]"),
            (Some(header), false) => format!("{header}\n{}", self.output),
        }
    }
}

async fn run_bash(ctx: Arc<Context>, args: RunBashArgs) -> Result<Outcome, ToolError> {
    if args.command.trim().is_empty() {
        return Err(ToolError::EmptyCommand);
    }
    let timeout_ms = args.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ToolError::OutOfRange {
            name: "timeout_ms",
            rule: "between 1 and 600000",
            value: timeout_ms,
        });
    }
    let timeout = Duration::from_millis(timeout_ms);
    let config = &ctx.config;

    // One pipe for stdout and stderr: the output reads in the order it was written.
    let (reader, writer) = std::io::pipe().map_err(ToolError::Spawn)?;
    let writer_for_stderr = writer.try_clone().map_err(ToolError::Spawn)?;
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(&args.command)
        .current_dir(&config.workspace)
        .env_clear()
        .env("PATH", &config.bash_path)
        .env("HOME", &config.workspace)
        .env("LANG", &config.bash_lang)
        // Where the files people sent are, for commands (the file tools call it `inbound/`).
        .env("INBOUND_FILES", config.session_paths().inbound_files())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_for_stderr)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(tz) = &config.timezone {
        command.env("TZ", tz);
    }
    // The registry is held from spawn to registration, so no sweep of another call mistakes
    // this bash for an orphan.
    let (child, pid) = {
        let mut live = ctx.reaper.lock();
        let spawned = command.spawn();
        // The command holds our copies of the pipe's write end; until they are closed the read
        // end never reaches EOF.
        drop(command);
        let child = spawned.map_err(ToolError::Spawn)?;
        let Some(pid) = child.id() else {
            return Err(ToolError::Spawn(std::io::Error::other(
                "bash exited before its process id was known",
            )));
        };
        // process_group(0): the group id is bash's pid.
        let pid = pid as libc::pid_t;
        live.insert(pid);
        (child, pid)
    };
    let mut call = Call {
        ctx: ctx.clone(),
        pid,
        child: Some(child),
    };
    let mut reader =
        pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(ToolError::Spawn)?;
    tracing::debug!(pid, timeout_ms, command = %args.command, "bash started");

    let mut output = CappedOutput::new(OUTPUT_HEAD, OUTPUT_TAIL);
    let mut buf = vec![0u8; 16 * 1024];
    let mut eof = false;
    let deadline = Instant::now() + timeout;
    let ending = loop {
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) => eof = true,
                Ok(n) => output.push(&buf[..n]),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "reading bash output failed");
                    eof = true;
                }
            },
            status = call.wait() => {
                break match status {
                    Ok(status) => Ending::from_status(status),
                    Err(e) => return Err(ToolError::Spawn(e)),
                };
            }
            () = tokio::time::sleep_until(deadline) => {
                kill_group(pid);
                // Reap bash so it leaves no zombie; SIGKILL makes this immediate.
                if let Err(e) = call.wait().await {
                    tracing::warn!(pid, error = %e, "waiting for killed bash failed");
                }
                break Ending::TimedOut(timeout);
            }
        }
    };
    // bash is done; what it left running goes now, which also closes the pipe's write ends.
    let killed = call.finish().await;
    if killed > 0 {
        tracing::info!(pid, killed, "killed processes the command left running");
    }
    let grace = Instant::now() + DRAIN_GRACE;
    while !eof {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                // A read error after bash exited only ends the output early; the loop above
                // already logged any error that happened while it ran.
                Ok(0) | Err(_) => eof = true,
                Ok(n) => output.push(&buf[..n]),
            },
            () = tokio::time::sleep_until(grace) => break,
        }
    }
    tracing::debug!(pid, ?ending, bytes = output.total, "bash finished");
    Ok(Outcome {
        ending,
        output: output.render(),
    })
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: killpg only sends a signal; no memory is shared with the callee. ESRCH (the
    // group is already gone) is the only expected failure and needs no handling.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// One command in flight: its bash (until reaped) and the group it leads. Dropped before
/// [`Call::finish`] (the call was cancelled), it kills the group and hands bash and the sweep
/// to a task of their own, so a cancelled call leaves nothing behind either.
struct Call {
    ctx: Arc<Context>,
    pid: libc::pid_t,
    child: Option<tokio::process::Child>,
}

impl Call {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().await,
            None => Err(std::io::Error::other("bash was already reaped")),
        }
    }

    /// bash has been waited for: leaves the registry and sweeps the call's leftovers. Returns
    /// how many processes were killed.
    async fn finish(&mut self) -> usize {
        self.child = None;
        sweep(self.ctx.clone(), self.pid).await
    }
}

async fn sweep(ctx: Arc<Context>, pid: libc::pid_t) -> usize {
    ctx.reaper.finished(pid);
    match tokio::task::spawn_blocking(move || ctx.reaper.sweep(pid)).await {
        Ok(killed) => killed,
        Err(e) => {
            tracing::warn!(pid, error = %e, "sweeping a command's processes failed");
            0
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_group(self.pid);
        let (ctx, pid) = (self.ctx.clone(), self.pid);
        // Outside a runtime (the server is being torn down) `kill_on_drop` still kills bash and
        // the server's final `kill_all` takes the rest.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = child.wait().await {
                    tracing::warn!(pid, error = %e, "waiting for a cancelled bash failed");
                }
                sweep(ctx, pid).await;
            });
        }
    }
}

/// Command output with bounded memory: the first `head` bytes, the last `tail` bytes, and a
/// count of what was cut between them.
struct CappedOutput {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

impl CappedOutput {
    fn new(head_cap: usize, tail_cap: usize) -> Self {
        CappedOutput {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_cap - self.head.len();
        let (to_head, rest) = data.split_at(data.len().min(room));
        self.head.extend_from_slice(to_head);
        let rest = &rest[rest.len().saturating_sub(self.tail_cap)..];
        self.tail.extend(rest);
        let excess = self.tail.len().saturating_sub(self.tail_cap);
        self.tail.drain(..excess);
    }

    fn render(&self) -> String {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let cut = self.total - kept;
        let (front, back) = self.tail.as_slices();
        if cut == 0 {
            let all = [self.head.as_slice(), front, back].concat();
            return String::from_utf8_lossy(&all).into_owned();
        }
        format!(
            "{}\n[… {cut} bytes cut …]\n{}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&[front, back].concat())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_head_and_tail() {
        let mut out = CappedOutput::new(4, 3);
        out.push(b"ab");
        assert_eq!(out.render(), "ab");
        out.push(b"cdefg");
        assert_eq!(out.render(), "abcdefg");
        out.push(b"h");
        assert_eq!(out.render(), "abcd\n[… 1 bytes cut …]\nfgh");
        out.push(&[b'x'; 100]);
        out.push(b"yz");
        assert_eq!(out.render(), "abcd\n[… 103 bytes cut …]\nxyz");
        assert_eq!(out.total, 110);
    }

    #[test]
    fn rendering_of_endings() {
        let table = [
            (Ending::Exited(0), "", "[no output]"),
            (Ending::Exited(0), "hi\n", "hi\n"),
            (
                Ending::Exited(2),
                "no such file\n",
                "[exit 2]\nno such file\n",
            ),
            (Ending::Exited(1), "", "[exit 1]\n[no output]"),
            (Ending::Signaled(9), "x", "[killed by signal 9]\nx"),
            (
                Ending::TimedOut(Duration::from_millis(500)),
                "partial",
                "[timed out after 500 ms; the command and its background processes were \
                 killed]\npartial",
            ),
        ];
        for (ending, output, want) in table {
            let outcome = Outcome {
                ending,
                output: output.to_owned(),
            };
            assert_eq!(outcome.render(), want);
            assert_eq!(outcome.succeeded(), ending == Ending::Exited(0));
        }
    }
}
