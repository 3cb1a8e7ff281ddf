//! Launches and supervises the agent's MCP stdio servers (rmcp client) and routes tool calls to
//! them. Owns child-process lifetime (own process group, allow-listed environment, stderr into
//! `tracing`, SIGTERM → grace → SIGKILL of the whole group), the tool-name → server map and the
//! per-call timeout. It always turns a call into exactly one text result; what the turn does with
//! it is `turn.rs`'s business.
//!
//! Today the only server is the built-in `mcp-tools`; servers from the agent's `container.json`
//! are further [`ServerSpec`]s with `required: false` (a failing one is skipped with a log line).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
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
use crate::model::{ToolSpec, clean_schema};

/// How long a server may take to start and list its tools.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a call's own `timeout_ms` argument, so that the tool reports its timeout before the
/// client gives up on it.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);
/// The longest timeout a call's `timeout_ms` argument can ask for.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Between SIGTERM to a server's process group and SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How to start one MCP stdio server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// For logs and error messages.
    pub name: String,
    pub command: PathBuf,
    pub args: Vec<String>,
    /// The child's complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// A required server that fails to start stops the runner; others are skipped.
    pub required: bool,
}

/// The built-in `mcp-tools` server, unless the config disables it. Its environment is the
/// allow-list of `docs/architecture.md`: PATH, HOME, LANG, TZ/TIMEZONE and the three paths.
pub fn builtin_server(config: &Config) -> Option<ServerSpec> {
    let command = config.mcp_tools_bin.clone()?;
    let mut env = config.inherited_env.clone();
    let tz = config.timezone.name().to_owned();
    env.extend([
        ("TZ".to_owned(), tz.clone()),
        (mailbox::env::TIMEZONE.to_owned(), tz),
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
        command,
        args: Vec::new(),
        env,
        cwd: config.workspace.is_dir().then(|| config.workspace.clone()),
        required: true,
    })
}

/// A server could not be started. For a required server the runner exits with this error
/// (the host re-queues and eventually tells the user); other servers are skipped.
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
    /// Startup took longer than [`STARTUP_TIMEOUT`].
    #[error("MCP server {server} did not start within {after:?}")]
    StartupTimeout { server: String, after: Duration },
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
    client: RunningService<RoleClient, ()>,
    /// Process group of the server (= its pid); `None` if the pid was unknown.
    pgid: Option<i32>,
    stderr: Option<JoinHandle<()>>,
}

/// The running servers and their tools.
pub struct McpManager {
    servers: Vec<Server>,
    /// Tool name → index into `servers`.
    routes: HashMap<String, usize>,
    tools: Vec<ToolSpec>,
    default_timeout: Duration,
}

impl McpManager {
    /// Starts all servers concurrently, each within [`STARTUP_TIMEOUT`]. A tool name offered by
    /// two servers goes to the first in `specs` order; the duplicate is dropped with a warning
    /// (sending both would make the model's choice ambiguous).
    pub async fn start(
        specs: Vec<ServerSpec>,
        default_timeout: Duration,
    ) -> Result<Self, McpError> {
        let started = join_all(specs.iter().map(start_server)).await;
        let mut manager = McpManager {
            servers: Vec::new(),
            routes: HashMap::new(),
            tools: Vec::new(),
            default_timeout,
        };
        let mut first_error = None;
        for (spec, result) in specs.iter().zip(started) {
            match result {
                Ok((server, tools)) => {
                    let index = manager.servers.len();
                    for tool in tools {
                        if manager.routes.contains_key(&tool.name) {
                            tracing::warn!(server = %server.name, tool = %tool.name,
                                "duplicate tool name; keeping the earlier server's");
                            continue;
                        }
                        manager.routes.insert(tool.name.clone(), index);
                        manager.tools.push(tool);
                    }
                    tracing::info!(server = %server.name, "MCP server started");
                    manager.servers.push(server);
                }
                Err(err) if spec.required => {
                    first_error.get_or_insert(err);
                }
                Err(err) => tracing::warn!(error = %err, "skipping MCP server"),
            }
        }
        if let Some(err) = first_error {
            manager.shutdown().await;
            return Err(err);
        }
        Ok(manager)
    }

    /// A manager without servers (no tools).
    pub fn empty(default_timeout: Duration) -> Self {
        McpManager {
            servers: Vec::new(),
            routes: HashMap::new(),
            tools: Vec::new(),
            default_timeout,
        }
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

    /// The timeout of one call: the call's own numeric `timeout_ms` argument (`run_bash`) plus
    /// a margin, else `CLAWBOX_TOOL_TIMEOUT_MS`.
    pub fn call_timeout(&self, arguments: &Map<String, Value>) -> Duration {
        match arguments.get("timeout_ms").and_then(Value::as_u64) {
            Some(ms) => (Duration::from_millis(ms) + TIMEOUT_MARGIN).min(MAX_CALL_TIMEOUT),
            None => self.default_timeout,
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
        let Some(server) = self.routes.get(name).and_then(|&i| self.servers.get(i)) else {
            return self.unknown_tool(name);
        };
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        // Dropping the request future (timeout, cancellation) sends `notifications/cancelled`
        // to the server.
        tokio::select! {
            () = cancel.cancelled() => ToolOutput::error(
                "the tool call was cancelled because the agent is shutting down",
            ),
            result = tokio::time::timeout(timeout, server.client.call_tool(params)) => match result {
                Err(_elapsed) => ToolOutput::error(format!(
                    "tool '{name}' timed out after {} s", timeout.as_secs_f64().round()
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

async fn stop_server(mut server: Server) {
    if let Some(pgid) = server.pgid {
        signal_group(pgid, libc::SIGTERM);
    }
    match server.client.close_with_timeout(SHUTDOWN_GRACE).await {
        Ok(_) => {}
        Err(err) => tracing::warn!(server = %server.name, error = %err, "MCP client task failed"),
    }
    if let Some(pgid) = server.pgid {
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
    let mut pgid = None;
    let mut stderr_task = None;
    let started =
        tokio::time::timeout(STARTUP_TIMEOUT, connect(spec, &mut pgid, &mut stderr_task)).await;
    let result = match started {
        Ok(result) => result,
        Err(_elapsed) => Err(McpError::StartupTimeout {
            server: spec.name.clone(),
            after: STARTUP_TIMEOUT,
        }),
    };
    match result {
        Ok((client, tools)) => Ok((
            Server {
                name: spec.name.clone(),
                client,
                pgid,
                stderr: stderr_task,
            },
            tools,
        )),
        Err(err) => {
            // The transport (and with it the direct child) is already dropped; take down
            // anything else the server started.
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            Err(err)
        }
    }
}

async fn connect(
    spec: &ServerSpec,
    pgid: &mut Option<i32>,
    stderr_task: &mut Option<JoinHandle<()>>,
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
    *pgid = transport.id().and_then(|pid| i32::try_from(pid).ok());
    if let Some(stderr) = stderr {
        let name = spec.name.clone();
        *stderr_task = Some(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "mcp_server", server = %name, "{line}");
            }
        }));
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
    fn call_timeouts() {
        let manager = McpManager::empty(Duration::from_secs(600));
        let args = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            manager.call_timeout(&args(json!({}))),
            Duration::from_secs(600)
        );
        assert_eq!(
            manager.call_timeout(&args(json!({ "timeout_ms": 5000 }))),
            Duration::from_secs(15)
        );
        assert_eq!(
            manager.call_timeout(&args(json!({ "timeout_ms": u64::MAX }))),
            MAX_CALL_TIMEOUT
        );
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let spec = ServerSpec {
            name: "ghost".to_owned(),
            command: PathBuf::from("/nonexistent/mcp-ghost"),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            required: true,
        };
        let err = McpManager::start(vec![spec.clone()], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, McpError::Spawn { .. }), "{err}");
        let optional = ServerSpec {
            required: false,
            ..spec
        };
        let manager = McpManager::start(vec![optional], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(manager.tools().is_empty());
    }

    #[tokio::test]
    async fn a_server_that_is_not_mcp_fails_the_handshake() {
        let spec = ServerSpec {
            name: "liar".to_owned(),
            command: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_owned(), "echo not-json; exit 0".to_owned()],
            env: Vec::new(),
            cwd: None,
            required: true,
        };
        let err = McpManager::start(vec![spec], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, McpError::Handshake { .. }), "{err}");
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
        ServerSpec {
            name: "fake".to_owned(),
            command: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_owned(), script],
            env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            cwd: None,
            required: true,
        }
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
}
