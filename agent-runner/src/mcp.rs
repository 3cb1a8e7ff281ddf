//! Launches and supervises the agent's MCP stdio servers (rmcp client) and routes tool calls to
//! them. Owns child-process lifetime (own process group, allow-listed environment, stderr into
//! `tracing`, SIGTERM → grace → SIGKILL of the whole group, also when the manager is dropped),
//! the tool-name → (server, tool) map and the per-call timeout. It always turns a call into
//! exactly one text result; cleaning that text for the model is `hygiene.rs`'s business, what
//! the turn does with it `turn.rs`'s. The names the model sees come from `tool_names.rs`.
//!
//! Servers: the built-in `mcp-tools` ([`ServerRole::Builtin`], required) and the user's servers
//! from `container.json` ([`ServerRole::User`]): all start concurrently, each within its startup
//! timeout; a user server that fails is skipped and reported in [`McpManager::problems`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::container_config::UserServer;
use crate::hygiene::{cap, strip_controls};
use crate::model::{ToolSpec, clean_schema};
use crate::tool_names::ToolNamer;

/// How long a server may take to start and list its tools, unless its config says otherwise.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest tool description sent to the model (a third-party server writes them).
const MAX_DESCRIPTION_CHARS: usize = 4_000;
/// Stderr lines kept per server, to explain a failed start.
const STDERR_TAIL_LINES: usize = 5;
/// Longest stderr line logged or kept, in bytes; the rest of the line is dropped.
const MAX_STDERR_LINE: usize = 1_000;
/// Added to a call's own `timeout_ms` argument, so that the tool reports its timeout before the
/// client gives up on it.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);
/// The longest timeout a call's `timeout_ms` argument can ask for.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Between SIGTERM to a server's process group and SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What a server is to the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// `mcp-tools`: required (if it fails to start the runner stops), its tools keep their
    /// plain names, and a call's numeric `timeout_ms` / `timeout_s` argument (`run_bash`,
    /// `ask_user_question`) sets the call's timeout.
    Builtin,
    /// A server from `container.json`: skipped and reported if it fails to start, its tools
    /// named `mcp__<server>__<tool>`, its calls bounded by its configured timeout only.
    User,
}

/// How to start one MCP stdio server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// For logs, error messages and (user servers) tool names.
    pub name: String,
    pub role: ServerRole,
    pub command: PathBuf,
    pub args: Vec<String>,
    /// The child's complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Spawn, handshake and `tools/list` together.
    pub startup_timeout: Duration,
    /// One call (`None`: the manager's default, `CLAWBOX_TOOL_TIMEOUT_MS`).
    pub call_timeout: Option<Duration>,
}

/// The allow-listed environment every server starts from: PATH, HOME, LANG as the runner got
/// them, and TZ/TIMEZONE set to the agent's time zone.
fn base_env(config: &Config) -> Vec<(String, String)> {
    server_base_env(&config.inherited_env, config.timezone)
}

/// [`base_env`] from its parts: the inherited variables and the time zone.
pub fn server_base_env(
    inherited: &[(String, String)],
    timezone: chrono_tz::Tz,
) -> Vec<(String, String)> {
    let mut env = inherited.to_vec();
    let tz = timezone.name().to_owned();
    env.extend([
        ("TZ".to_owned(), tz.clone()),
        (mailbox::env::TIMEZONE.to_owned(), tz),
    ]);
    env
}

/// The built-in `mcp-tools` server, unless the config disables it. Its environment is the
/// allow-list of `docs/architecture.md`: PATH, HOME, LANG, TZ/TIMEZONE, the three paths, and
/// `CLAWBOX_SKILLS_DIR` when set (its `load_skill` reads the same skills as the prompt).
pub fn builtin_server(config: &Config) -> Option<ServerSpec> {
    let command = config.mcp_tools_bin.clone()?;
    let mut env = base_env(config);
    let skills_dir = config.skills_dir.as_ref().map(|dir| {
        (
            mailbox::env::SKILLS_DIR.to_owned(),
            dir.display().to_string(),
        )
    });
    env.extend(skills_dir);
    env.extend([
        (
            mailbox::env::MAILBOX_DIR.to_owned(),
            config.mailbox_dir.display().to_string(),
        ),
        (
            mailbox::env::WORKSPACE.to_owned(),
            config.workspace.display().to_string(),
        ),
        (
            mailbox::env::AGENT_DIR.to_owned(),
            config.agent_dir.display().to_string(),
        ),
    ]);
    Some(ServerSpec {
        name: "mcp-tools".to_owned(),
        role: ServerRole::Builtin,
        command,
        args: Vec::new(),
        env,
        cwd: config.workspace.is_dir().then(|| config.workspace.clone()),
        startup_timeout: STARTUP_TIMEOUT,
        call_timeout: None,
    })
}

/// A server from `container.json`. Its environment is the allow-list of [`base_env`] plus
/// exactly the variables its `env` names (which may override those); it runs in the session's
/// workspace, and a relative command path is relative to that too. `call_timeout` is the file's
/// `mcp_call_timeout_s`.
pub fn user_server(
    config: &Config,
    server: &UserServer,
    call_timeout: Option<Duration>,
) -> ServerSpec {
    user_server_in(base_env(config), &config.workspace, server, call_timeout)
}

/// [`user_server`] from its parts: the allow-listed base environment and the working directory
/// (`agent-runner check-mcp` has no session).
pub fn user_server_in(
    base_env: Vec<(String, String)>,
    workspace: &std::path::Path,
    server: &UserServer,
    call_timeout: Option<Duration>,
) -> ServerSpec {
    let mut env = base_env;
    env.retain(|(key, _)| !server.env.contains_key(key));
    env.extend(server.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // A relative path (`./server.py`, `bin/tool`) is resolved here: which directory the OS
    // resolves it against when the child also changes directory is platform-specific.
    let command = PathBuf::from(&server.command);
    let command = if command.is_relative() && server.command.contains('/') {
        workspace.join(command)
    } else {
        command
    };
    ServerSpec {
        name: server.name.clone(),
        role: ServerRole::User,
        command,
        args: server.args.clone(),
        env,
        cwd: workspace.is_dir().then(|| workspace.to_path_buf()),
        startup_timeout: server.startup_timeout.unwrap_or(STARTUP_TIMEOUT),
        call_timeout: server.call_timeout.or(call_timeout),
    }
}

/// A server could not be started. For the built-in server the runner exits with this error
/// (the host re-queues and eventually tells the user); a user server is skipped, and the error
/// becomes one of [`McpManager::problems`].
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The command could not be spawned (missing binary, not executable).
    #[error("cannot start MCP server {server} ({}): {source}", command.display())]
    Spawn {
        server: String,
        command: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The MCP initialize handshake failed (the process exited, or spoke something else).
    #[error("MCP server {server} failed the handshake: {detail}")]
    Handshake { server: String, detail: String },
    /// `tools/list` failed.
    #[error("MCP server {server} could not list its tools: {source}")]
    ListTools {
        server: String,
        #[source]
        source: rmcp::ServiceError,
    },
    /// Startup took longer than the server's startup timeout. `output` is the server's last
    /// stderr lines, if any, introduced by `; `.
    #[error("MCP server {server} did not start within {}{output}", human(*after))]
    StartupTimeout {
        server: String,
        after: Duration,
        output: String,
    },
}

/// `30 s`, `1.5 s`, `250 ms`.
pub fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// The result of one tool call, as the model will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub text: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(text: impl Into<String>) -> Self {
        ToolOutput {
            text: text.into(),
            is_error: false,
        }
    }

    /// An error result; `Error: ` is prefixed unless the text already says so.
    pub fn error(text: impl Into<String>) -> Self {
        let text = text.into();
        let text = if text.starts_with("Error") {
            text
        } else {
            format!("Error: {text}")
        };
        ToolOutput {
            text,
            is_error: true,
        }
    }
}

struct Server {
    name: String,
    role: ServerRole,
    call_timeout: Option<Duration>,
    client: RunningService<RoleClient, ()>,
    /// Process group of the server (= its pid); `None` if the pid was unknown, and after the
    /// group was killed (so that a later signal cannot hit a recycled id).
    pgid: Option<i32>,
    stderr: Option<JoinHandle<()>>,
}

impl Drop for Server {
    /// A server dropped without [`McpManager::shutdown`] (an error path, a panic) still takes
    /// its whole process group with it; `kill_on_drop` alone would reach only the direct child.
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

/// Where a tool name the model uses leads.
#[derive(Debug, Clone)]
struct Route {
    /// Index into `servers`.
    server: usize,
    /// The tool's name on its server.
    tool: String,
}

/// The running servers and their tools.
pub struct McpManager {
    servers: Vec<Server>,
    /// Tool name as the model sees it → server and the server's own name for it.
    routes: HashMap<String, Route>,
    tools: Vec<ToolSpec>,
    default_timeout: Duration,
    /// User servers that were skipped, one readable line each.
    problems: Vec<String>,
}

impl McpManager {
    /// Starts all servers concurrently, each within its startup timeout. Tools are named in
    /// server order: built-in servers' first, then the others in `specs` order (which decides
    /// who keeps a name when two want the same). A built-in tool name offered twice goes to the
    /// first server; the duplicate is dropped with a warning (sending both would make the
    /// model's choice ambiguous).
    pub async fn start(
        specs: Vec<ServerSpec>,
        default_timeout: Duration,
    ) -> Result<Self, McpError> {
        let started = join_all(specs.iter().map(start_server)).await;
        let mut manager = McpManager::empty(default_timeout);
        let mut namer = ToolNamer::new();
        let mut first_error = None;
        let mut results: Vec<(&ServerSpec, _)> = specs.iter().zip(started).collect();
        // Stable: user servers keep their relative order.
        results.sort_by_key(|(spec, _)| match spec.role {
            ServerRole::Builtin => 0,
            ServerRole::User => 1,
        });
        for (spec, result) in results {
            match (result, spec.role) {
                (Ok((server, tools)), _) => manager.add(server, tools, &mut namer),
                (Err(err), ServerRole::Builtin) => {
                    first_error.get_or_insert(err);
                }
                (Err(err), ServerRole::User) => {
                    tracing::warn!(server = %spec.name, error = %err, "skipping MCP server");
                    manager.problems.push(format!(
                        "MCP server \"{}\" from container.json is not available: {err}",
                        spec.name
                    ));
                }
            }
        }
        if let Some(err) = first_error {
            manager.shutdown().await;
            return Err(err);
        }
        Ok(manager)
    }

    fn add(&mut self, server: Server, mut tools: Vec<ToolSpec>, namer: &mut ToolNamer) {
        let index = self.servers.len();
        // Sorted: servers list their tools in any order (rmcp's router from a hash map, so it
        // changes between runs), and the tool list is part of the request prefix that
        // providers' prompt caches key on. Same servers, same bytes.
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        for tool in tools {
            let exposed = match server.role {
                ServerRole::Builtin => {
                    let Some(name) = namer.plain(&tool.name) else {
                        tracing::warn!(server = %server.name, tool = %tool.name,
                            "duplicate tool name; keeping the earlier server's");
                        continue;
                    };
                    name
                }
                ServerRole::User => namer.prefixed(&server.name, &tool.name),
            };
            self.routes.insert(
                exposed.clone(),
                Route {
                    server: index,
                    tool: tool.name,
                },
            );
            self.tools.push(ToolSpec {
                name: exposed,
                description: cap(&strip_controls(&tool.description), MAX_DESCRIPTION_CHARS),
                parameters: tool.parameters,
            });
        }
        tracing::info!(server = %server.name, "MCP server started");
        self.servers.push(server);
    }

    /// Stops offering the built-in tools `keep` refuses (tool groups switched off in
    /// `container.json`): the model does not see them, and a call to one is an unknown tool.
    pub fn retain_builtin(&mut self, keep: impl Fn(&str) -> bool) {
        let servers = &self.servers;
        let builtin = |route: &Route| {
            servers
                .get(route.server)
                .is_some_and(|s| s.role == ServerRole::Builtin)
        };
        self.routes
            .retain(|name, route| !builtin(route) || keep(name));
        let routes = &self.routes;
        self.tools.retain(|tool| routes.contains_key(&tool.name));
    }

    /// A manager without servers (no tools).
    pub fn empty(default_timeout: Duration) -> Self {
        McpManager {
            servers: Vec::new(),
            routes: HashMap::new(),
            tools: Vec::new(),
            default_timeout,
            problems: Vec::new(),
        }
    }

    /// User servers that failed to start, one readable line each (for the agent's context).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Every tool, in server order.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    pub fn has_tool(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// The result of calling a tool no server offers.
    pub fn unknown_tool(&self, name: &str) -> ToolOutput {
        let mut available: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
        available.sort_unstable();
        let available = if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        };
        ToolOutput::error(format!(
            "unknown tool '{name}'. Available tools: {available}"
        ))
    }

    /// The timeout of one call to the tool the model calls `name`: for a built-in tool, the
    /// call's own numeric `timeout_ms` (`run_bash`) or `timeout_s` (`ask_user_question`)
    /// argument plus a margin; else the server's configured timeout; else
    /// `CLAWBOX_TOOL_TIMEOUT_MS`.
    pub fn call_timeout(&self, name: &str, arguments: &Map<String, Value>) -> Duration {
        let server = self
            .routes
            .get(name)
            .and_then(|r| self.servers.get(r.server));
        let role = server.map_or(ServerRole::Builtin, |s| s.role);
        let configured = server
            .and_then(|s| s.call_timeout)
            .unwrap_or(self.default_timeout);
        // `run_bash` declares `timeout_ms`; `ask_user_question` how long it waits, `timeout_s`.
        let declared = arguments
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .or_else(|| {
                arguments
                    .get("timeout_s")
                    .and_then(Value::as_u64)
                    .map(|s| s.saturating_mul(1000))
            });
        match (role, declared) {
            (ServerRole::Builtin, Some(ms)) => {
                (Duration::from_millis(ms) + TIMEOUT_MARGIN).min(MAX_CALL_TIMEOUT)
            }
            (ServerRole::Builtin, None) | (ServerRole::User, _) => configured,
        }
    }

    /// Calls a tool. Never fails: an unknown tool, a timeout, a transport error or cancellation
    /// all become an error result the model can read.
    pub async fn call(
        &self,
        name: &str,
        arguments: Map<String, Value>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        let Some((route, server)) = self
            .routes
            .get(name)
            .and_then(|r| Some((r, self.servers.get(r.server)?)))
        else {
            return self.unknown_tool(name);
        };
        let params = CallToolRequestParams::new(route.tool.clone()).with_arguments(arguments);
        // Dropping the request future (timeout, cancellation) sends `notifications/cancelled`
        // to the server.
        tokio::select! {
            () = cancel.cancelled() => ToolOutput::error(
                "the tool call was cancelled because the agent is shutting down",
            ),
            result = tokio::time::timeout(timeout, server.client.call_tool(params)) => match result {
                Err(_elapsed) => ToolOutput::error(format!(
                    "tool '{name}' timed out after {} (MCP server {} did not answer)",
                    human(timeout), server.name
                )),
                Ok(Err(err)) => ToolOutput::error(format!(
                    "tool '{name}' failed (MCP server {}): {err}", server.name
                )),
                Ok(Ok(result)) => render(&result),
            },
        }
    }

    /// Stops every server: SIGTERM to its process group, close the connection (stdin EOF) with
    /// a grace period, then SIGKILL to the group so that nothing it started survives.
    pub async fn shutdown(self) {
        join_all(self.servers.into_iter().map(stop_server)).await;
    }
}

/// Starts one server exactly as [`McpManager::start`] would (startup timeout, handshake,
/// `tools/list`), stops it again, and returns the names of its tools (`agent-runner check-mcp`).
pub async fn probe(spec: &ServerSpec) -> Result<Vec<String>, McpError> {
    let (server, tools) = start_server(spec).await?;
    stop_server(server).await;
    Ok(tools.into_iter().map(|t| t.name).collect())
}

async fn stop_server(mut server: Server) {
    if let Some(pgid) = server.pgid {
        signal_group(pgid, libc::SIGTERM);
    }
    match server.client.close_with_timeout(SHUTDOWN_GRACE).await {
        Ok(_) => {}
        Err(err) => tracing::warn!(server = %server.name, error = %err, "MCP client task failed"),
    }
    if let Some(pgid) = server.pgid.take() {
        signal_group(pgid, libc::SIGKILL);
    }
    if let Some(stderr) = server.stderr.take() {
        // The pipe closes when the group is dead; don't wait on a grandchild that kept it open.
        if tokio::time::timeout(Duration::from_secs(1), stderr)
            .await
            .is_err()
        {
            tracing::debug!(server = %server.name, "stderr reader still open; leaving it");
        }
    }
    tracing::info!(server = %server.name, "MCP server stopped");
}

/// Sends `signal` to process group `pgid`.
fn signal_group(pgid: i32, signal: i32) {
    // kill(-1) would signal every process we may signal; a group id ≤ 1 is never ours.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. A negative pid
    // addresses the process group the server leads (spawned with `process_group(0)`).
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // ESRCH: the group is already gone, which is the goal.
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, error = %err, "cannot signal MCP server group");
        }
    }
}

async fn start_server(spec: &ServerSpec) -> Result<(Server, Vec<ToolSpec>), McpError> {
    let mut child = Spawned::default();
    let started = tokio::time::timeout(spec.startup_timeout, connect(spec, &mut child)).await;
    let result = match started {
        Ok(result) => result,
        Err(_elapsed) => Err(McpError::StartupTimeout {
            server: spec.name.clone(),
            after: spec.startup_timeout,
            output: String::new(),
        }),
    };
    match result {
        Ok((client, tools)) => Ok((
            Server {
                name: spec.name.clone(),
                role: spec.role,
                call_timeout: spec.call_timeout,
                client,
                pgid: child.pgid,
                stderr: child.stderr_task,
            },
            tools,
        )),
        Err(err) => {
            // The transport (and with it the direct child) is already dropped; take down
            // anything else the server started.
            if let Some(pgid) = child.pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            // What the server printed on its way out is usually the explanation ("No module
            // named …"); give the reader a moment to collect it.
            if let Some(task) = child.stderr_task {
                // Timing out only means a grandchild still holds the pipe; the tail so far
                // is what we report.
                let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
            }
            Err(with_stderr(err, &child.stderr_tail))
        }
    }
}

/// Logs a server's stderr line by line and keeps the last lines in `tail`. Reads to the end
/// whatever comes: lines are cut at [`MAX_STDERR_LINE`] bytes and invalid UTF-8 is replaced, so
/// that the pipe is always drained (a server blocked on a full stderr pipe would hang).
async fn log_stderr(
    stderr: tokio::process::ChildStderr,
    server: String,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &[u8]| {
        let text = strip_controls(&String::from_utf8_lossy(line));
        tracing::info!(target: "mcp_server", server = %server, "{text}");
        let mut tail = match tail.lock() {
            Ok(tail) => tail,
            // A panic while pushing leaves a usable queue of strings.
            Err(poisoned) => poisoned.into_inner(),
        };
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        let room = MAX_STDERR_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            emit(&line);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

/// Appends the server's last stderr lines to a startup error.
fn with_stderr(err: McpError, tail: &Mutex<VecDeque<String>>) -> McpError {
    let lines: Vec<String> = match tail.lock() {
        Ok(tail) => tail.iter().cloned().collect(),
        // A reader that panicked mid-push; the lines are only an explanation.
        Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
    };
    if lines.is_empty() {
        return err;
    }
    let stderr = format!("; its last output: {}", lines.join(" | "));
    match err {
        McpError::Handshake { server, detail } => McpError::Handshake {
            server,
            detail: detail + &stderr,
        },
        McpError::StartupTimeout { server, after, .. } => McpError::StartupTimeout {
            server,
            after,
            output: stderr,
        },
        other @ (McpError::Spawn { .. } | McpError::ListTools { .. }) => other,
    }
}

/// What is known about a server's process while it starts.
#[derive(Default)]
struct Spawned {
    pgid: Option<i32>,
    stderr_task: Option<JoinHandle<()>>,
    /// The last [`STDERR_TAIL_LINES`] lines of its stderr. A std mutex: held only to push or
    /// copy, never across an await.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

async fn connect(
    spec: &ServerSpec,
    child: &mut Spawned,
) -> Result<(RunningService<RoleClient, ()>, Vec<ToolSpec>), McpError> {
    let mut command = tokio::process::Command::new(&spec.command);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        // Its own process group: a signal to the runner's group (Ctrl-C in a terminal) does
        // not hit the server mid-call, and the runner can kill everything the server started.
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| McpError::Spawn {
            server: spec.name.clone(),
            command: spec.command.clone(),
            source,
        })?;
    child.pgid = transport.id().and_then(|pid| i32::try_from(pid).ok());
    if let Some(stderr) = stderr {
        child.stderr_task = Some(tokio::spawn(log_stderr(
            stderr,
            spec.name.clone(),
            Arc::clone(&child.stderr_tail),
        )));
    }
    let client =
        ().serve(transport)
            .await
            .map_err(|err| McpError::Handshake {
                server: spec.name.clone(),
                detail: err.to_string(),
            })?;
    let tools = client
        .list_all_tools()
        .await
        .map_err(|source| McpError::ListTools {
            server: spec.name.clone(),
            source,
        })?;
    let tools = tools
        .into_iter()
        .map(|tool| ToolSpec {
            name: tool.name.to_string(),
            description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
            parameters: clean_schema(&tool.input_schema),
        })
        .collect();
    Ok((client, tools))
}

/// One text for the model: the text parts joined by newlines, other parts as JSON; the
/// structured content when there is nothing else.
fn render(result: &CallToolResult) -> ToolOutput {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block.as_text() {
            Some(text) => text.text.clone(),
            None => serde_json::to_string(block).unwrap_or_else(|e| format!("[unprintable: {e}]")),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        ToolOutput::error(if text.is_empty() {
            "the tool failed without a message".to_owned()
        } else {
            text
        })
    } else if text.is_empty() {
        ToolOutput::ok("(no output)")
    } else {
        ToolOutput::ok(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;
    use rmcp::model::ContentBlock;
    use serde_json::json;
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn results_are_rendered_as_one_text() {
        let ok = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(render(&ok), ToolOutput::ok("a\nb"));
        let failed = CallToolResult::error(vec![ContentBlock::text("no such file")]);
        assert_eq!(render(&failed), ToolOutput::error("no such file"));
        assert_eq!(render(&failed).text, "Error: no such file");
        let already = CallToolResult::error(vec![ContentBlock::text("Error: x")]);
        assert_eq!(render(&already).text, "Error: x");
        let empty = CallToolResult::success(vec![]);
        assert_eq!(render(&empty), ToolOutput::ok("(no output)"));
    }

    #[tokio::test]
    async fn unknown_tools_list_the_available_ones() {
        let manager = McpManager::empty(Duration::from_secs(1));
        let out = manager
            .call(
                "nope",
                Map::new(),
                Duration::from_secs(1),
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(
            out,
            ToolOutput::error("unknown tool 'nope'. Available tools: none")
        );
    }

    #[test]
    fn builtin_call_timeouts() {
        let manager = McpManager::empty(Duration::from_secs(600));
        let args = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            manager.call_timeout("run_bash", &args(json!({}))),
            Duration::from_secs(600)
        );
        assert_eq!(
            manager.call_timeout("run_bash", &args(json!({ "timeout_ms": 5000 }))),
            Duration::from_secs(15)
        );
        assert_eq!(
            manager.call_timeout("run_bash", &args(json!({ "timeout_ms": u64::MAX }))),
            MAX_CALL_TIMEOUT
        );
    }

    #[test]
    fn user_servers_get_the_allow_list_and_what_they_name() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("CLAWBOX_MAILBOX_DIR", "/mailbox"),
            ("CLAWBOX_MODEL", "m"),
            ("CLAWBOX_WORKSPACE", "/ws"),
            ("TIMEZONE", "Europe/Berlin"),
            ("PATH", "/usr/bin"),
            ("HOME", "/home/agent"),
            ("OPENAI_API_KEY", "sk-secret"),
        ]);
        let config = Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
        let server = UserServer {
            name: "weather".to_owned(),
            command: "./bin/weather".to_owned(),
            args: vec!["--fast".to_owned()],
            env: [("API_TOKEN", "t"), ("PATH", "/opt/bin")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            startup_timeout: None,
            call_timeout: Some(Duration::from_secs(5)),
        };
        let spec = user_server(&config, &server, Some(Duration::from_secs(60)));
        let mut env = spec.env.clone();
        env.sort();
        assert_eq!(
            env,
            [
                ("API_TOKEN", "t"),
                ("HOME", "/home/agent"),
                ("PATH", "/opt/bin"),
                ("TIMEZONE", "Europe/Berlin"),
                ("TZ", "Europe/Berlin"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(spec.command, PathBuf::from("/ws/./bin/weather"));
        assert_eq!(spec.role, ServerRole::User);
        assert_eq!(spec.startup_timeout, STARTUP_TIMEOUT);
        assert_eq!(spec.call_timeout, Some(Duration::from_secs(5)));
        let plain = UserServer {
            command: "uvx".to_owned(),
            call_timeout: None,
            ..server
        };
        let spec = user_server(&config, &plain, Some(Duration::from_secs(60)));
        assert_eq!(spec.command, PathBuf::from("uvx"));
        assert_eq!(spec.call_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn durations_for_people() {
        let table = [
            (Duration::from_millis(250), "250 ms"),
            (Duration::from_secs(30), "30 s"),
            (Duration::from_millis(1_500), "1.5 s"),
        ];
        for (duration, want) in table {
            assert_eq!(human(duration), want);
        }
    }

    fn spec(name: &str, role: ServerRole, command: &str, args: &[&str]) -> ServerSpec {
        ServerSpec {
            name: name.to_owned(),
            role,
            command: PathBuf::from(command),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            cwd: None,
            startup_timeout: Duration::from_secs(5),
            call_timeout: None,
        }
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let builtin = spec("ghost", ServerRole::Builtin, "/nonexistent/mcp-ghost", &[]);
        let err = McpManager::start(vec![builtin.clone()], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, McpError::Spawn { .. }), "{err}");
        let user = ServerSpec {
            role: ServerRole::User,
            ..builtin
        };
        let manager = McpManager::start(vec![user], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(manager.tools().is_empty());
        assert_eq!(manager.problems().len(), 1);
        assert!(
            manager.problems()[0].starts_with(
                "MCP server \"ghost\" from container.json is not available: cannot start MCP \
                 server ghost (/nonexistent/mcp-ghost): "
            ),
            "{:?}",
            manager.problems()
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_mcp_fails_the_handshake_with_its_stderr() {
        let liar = spec(
            "liar",
            ServerRole::Builtin,
            "/bin/sh",
            &[
                "-c",
                "echo not-json; echo 'No module named liar' >&2; exit 0",
            ],
        );
        let err = McpManager::start(vec![liar], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, McpError::Handshake { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("; its last output: No module named liar"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stderr_is_drained_whatever_it_holds() {
        // Not UTF-8, then a 200 kB line: a reader that stopped at either would leave the
        // server blocked on a full pipe until the startup timeout.
        let noisy = spec(
            "noisy",
            ServerRole::Builtin,
            "/bin/sh",
            &[
                "-c",
                "{ printf '\\377bad\\n'; head -c 200000 /dev/zero | tr '\\0' x; echo; echo last; } >&2",
            ],
        );
        let started = std::time::Instant::now();
        let err = McpManager::start(vec![noisy], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(4), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("its last output: \u{FFFD}bad | xxx"),
            "{text}"
        );
        assert!(text.ends_with("x | last"), "{text}");
        assert!(text.len() < 2 * MAX_STDERR_LINE + 500, "{}", text.len());
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let mut silent = spec("silent", ServerRole::User, "/bin/sleep", &["100"]);
        silent.startup_timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let manager = McpManager::start(vec![silent], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            manager.problems(),
            [
                "MCP server \"silent\" from container.json is not available: MCP server silent did \
              not start within 200 ms"
            ]
        );
    }

    /// A minimal MCP server in sh: answers `initialize` and `tools/list` (echoing the request
    /// ids), after putting a `sleep 300` in the background and its pid into `pidfile`.
    fn fake_server(pidfile: &std::path::Path) -> ServerSpec {
        let script = format!(
            r#"sleep 300 >/dev/null 2>&1 &
echo $! > '{pidfile}'
id() {{ printf '%s' "$1" | sed -n 's/.*"id":\([0-9]*\).*/\1/p'; }}
read -r line
printf '{{"jsonrpc":"2.0","id":%s,"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"fake","version":"0"}}}}}}\n' "$(id "$line")"
read -r line
read -r line
printf '{{"jsonrpc":"2.0","id":%s,"result":{{"tools":[{{"name":"noop","inputSchema":{{"type":"object"}}}}]}}}}\n' "$(id "$line")"
cat >/dev/null
"#,
            pidfile = pidfile.display()
        );
        let mut fake = spec("fake", ServerRole::Builtin, "/bin/sh", &["-c"]);
        fake.args.push(script);
        fake
    }

    /// Running and not a zombie waiting for its reaper.
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z")
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn shutdown_kills_what_the_server_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sleep.pid");
        let manager = McpManager::start(vec![fake_server(&pidfile)], Duration::from_secs(5))
            .await
            .unwrap();
        let names: Vec<&str> = manager.tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["noop"]);
        assert_eq!(
            manager.tools()[0].parameters,
            json!({ "type": "object", "properties": {} })
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(running(pid));

        manager.shutdown().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !running(pid),
            "the background sleep ({pid}) survived the shutdown"
        );
    }

    #[tokio::test]
    async fn dropping_the_manager_kills_what_a_user_server_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sleep.pid");
        let mut user = fake_server(&pidfile);
        user.role = ServerRole::User;
        user.call_timeout = Some(Duration::from_millis(1_500));
        let manager = McpManager::start(vec![user], Duration::from_secs(600))
            .await
            .unwrap();
        let names: Vec<&str> = manager.tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["mcp__fake__noop"]);
        let args = json!({ "timeout_ms": 100_000 })
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            manager.call_timeout("mcp__fake__noop", &args),
            Duration::from_millis(1_500),
            "a user tool's timeout_ms argument is its own business"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(running(pid));

        drop(manager);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !running(pid),
            "the background sleep ({pid}) survived the drop"
        );
    }
}
