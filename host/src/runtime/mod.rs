//! Where agent runners run. [`AgentRuntime`] is the seam between the supervisor and an
//! execution environment: `docker` (one hardened container per session, `docker.rs`, the
//! default) and `process` (a child process, unisolated), others behind the same trait. Owns the runner's environment contract (docs/architecture.md); the
//! decision *when* to start or stop a runner lives in `session::supervisor`.

pub mod container_json;
pub mod docker;
pub mod image;
pub mod ownership;
pub mod probe;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use mailbox::env;

use crate::config::Config;
use crate::proxy::{self, ModelAccess};

/// Everything a runtime needs to start the runner of one session, in host paths.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    pub session_id: String,
    pub agent_id: String,
    /// The session directory holding `inbound/` and `outbound/`.
    pub mailbox_dir: PathBuf,
    pub workspace: PathBuf,
    /// `groups/<folder>`.
    pub agent_dir: PathBuf,
    /// `groups/global` (may not exist).
    pub global_dir: PathBuf,
    pub model: String,
    pub assistant_name: String,
    /// The model proxy and this runner's session token. The real API key never reaches a
    /// runtime: it stays in the proxy.
    pub model_access: ModelAccess,
    /// The largest file the runner and its tools may write (`RLIMIT_FSIZE`, soft and hard):
    /// the room left under the session's disk quota when it starts (`session::disk`).
    /// `None`: no quota.
    pub max_file_bytes: Option<u64>,
}

/// How a runner ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerExit {
    /// Exited on its own with this status (0: idle or asked to stop).
    Code(i32),
    /// Killed by this signal (SIGKILL from us, the OOM killer, a crash).
    Signal(i32),
    /// The runtime lost track of it (its wait failed).
    Lost(String),
    /// Killed for using more memory than its limit (the docker runtime reads the engine's
    /// OOM flag). The supervisor fails the claimed messages with this reason instead of
    /// retrying: the same work in the same limit would run out again.
    OutOfMemory { limit_mb: u64 },
}

impl std::fmt::Display for RunnerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunnerExit::Code(c) => write!(f, "exit code {c}"),
            RunnerExit::Signal(s) => write!(f, "killed by signal {s}"),
            RunnerExit::Lost(why) => write!(f, "lost: {why}"),
            RunnerExit::OutOfMemory { limit_mb } => {
                write!(f, "out of memory (limit {limit_mb} MB)")
            }
        }
    }
}

/// A started runner: its runtime id and a watch that turns `Some` when it has ended.
#[derive(Debug, Clone)]
pub struct RunnerHandle {
    pub id: String,
    pub exit: watch::Receiver<Option<RunnerExit>>,
}

impl RunnerHandle {
    /// Resolves when the runner has ended.
    pub async fn exited(&mut self) -> RunnerExit {
        match self.exit.wait_for(Option::is_some).await {
            Ok(v) => v
                .clone()
                .unwrap_or_else(|| RunnerExit::Lost("no status".into())),
            Err(_) => RunnerExit::Lost("runtime dropped the runner".into()),
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// A runner of this install found running (e.g. left by a host that crashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRunner {
    pub id: String,
    pub session_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runner could not be started; the supervisor fails or retries the pending messages.
    #[error("cannot start the agent runner: {0}")]
    Start(String),
    /// Stopping or inspecting runners failed; logged, retried on the next occasion.
    #[error("runtime operation failed: {0}")]
    Control(String),
}

pub trait AgentRuntime: Send + Sync {
    /// Short name for logs and status (`process`, `docker`).
    fn name(&self) -> &'static str;
    /// Whether runners are sandboxed from the host.
    fn isolated(&self) -> bool;
    /// The image runners start from, when the runtime has one (docker: the tag decided at
    /// start, `runtime::image`).
    fn image(&self) -> Option<&str>;
    /// Whether runners run on the host's kernel, so that the mailbox's WAL index (shared
    /// memory) is coherent between them and the host; false across a VM boundary.
    fn shares_kernel(&self) -> bool;
    fn start(&self, spec: RunnerSpec) -> BoxFuture<'_, Result<RunnerHandle, RuntimeError>>;
    /// Asks the runner to exit, and kills it after `grace`.
    fn stop(&self, id: &str, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Kills the runner and everything it started, now.
    fn kill(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Runners of this install that are alive, whoever started them.
    fn list(&self) -> BoxFuture<'_, Result<Vec<FoundRunner>, RuntimeError>>;
}

/// Settings every runner gets, whatever the runtime.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub install_id: String,
    pub timezone: String,
    pub idle_timeout: Duration,
    pub heartbeat: Duration,
    pub max_steps: u32,
    pub model_timeout: Duration,
    pub model_retries: u32,
    pub model_backoff: Duration,
    pub tool_timeout: Duration,
    pub task_script_timeout: Duration,
    /// The context budget of every request (`CONTEXT_TOKENS`).
    pub context_tokens: u64,
    /// Days after which the runner prunes settled rows of `outbound.db` (`RETENTION_DAYS`).
    pub retention_days: u32,
    /// Built-in skills, as a host path (the process runtime passes it through).
    pub skills_dir: Option<std::path::PathBuf>,
}

impl RunnerSettings {
    pub fn from_config(config: &Config, install_id: &str) -> Self {
        RunnerSettings {
            install_id: install_id.to_owned(),
            timezone: config.timezone.name().to_owned(),
            idle_timeout: config.idle_timeout,
            heartbeat: config.heartbeat,
            max_steps: config.max_steps,
            model_timeout: config.model_timeout,
            model_retries: config.model_retries,
            model_backoff: config.model_backoff,
            tool_timeout: config.tool_timeout,
            task_script_timeout: config.task_script_timeout,
            context_tokens: config.context_tokens,
            retention_days: config.retention_days,
            skills_dir: config.skills_dir.clone(),
        }
    }

    /// The runner's environment (docs/architecture.md, "The runner's environment"), with the
    /// paths as the runner will see them. The model endpoint is always the host's proxy, with
    /// the session token as `CLAWBOX_MODEL_TOKEN` (no `OPENAI_API_KEY` at all).
    pub fn env(&self, spec: &RunnerSpec, paths: &RunnerPaths) -> Vec<(String, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let base_url = match &paths.model_socket {
            Some(_) => proxy::SOCKET_BASE_URL.to_owned(),
            None => spec.model_access.loopback_url.clone(),
        };
        let mut env = vec![
            (env::SESSION_ID, spec.session_id.clone()),
            (env::AGENT_ID, spec.agent_id.clone()),
            (env::INSTALL, self.install_id.clone()),
            (env::MAILBOX_DIR, paths.mailbox_dir.clone()),
            (env::WORKSPACE, paths.workspace.clone()),
            (env::AGENT_DIR, paths.agent_dir.clone()),
            (env::GLOBAL_DIR, paths.global_dir.clone()),
            (env::MODEL, spec.model.clone()),
            (env::OPENAI_BASE_URL, base_url),
            (
                env::MODEL_TOKEN,
                spec.model_access.token.expose().to_owned(),
            ),
            (env::TIMEZONE, self.timezone.clone()),
            (env::ASSISTANT_NAME, spec.assistant_name.clone()),
            (env::IDLE_TIMEOUT_MS, ms(self.idle_timeout)),
            (env::HEARTBEAT_MS, ms(self.heartbeat)),
            (env::MAX_STEPS, self.max_steps.to_string()),
            (env::MODEL_TIMEOUT_MS, ms(self.model_timeout)),
            (env::MODEL_RETRIES, self.model_retries.to_string()),
            (env::MODEL_BACKOFF_MS, ms(self.model_backoff)),
            (env::TOOL_TIMEOUT_MS, ms(self.tool_timeout)),
            (env::TASK_SCRIPT_TIMEOUT_MS, ms(self.task_script_timeout)),
            (env::CONTEXT_TOKENS, self.context_tokens.to_string()),
            (env::RETENTION_DAYS, self.retention_days.to_string()),
        ];
        if let Some(dir) = &paths.skills_dir {
            env.push((env::SKILLS_DIR, dir.clone()));
        }
        if let Some(socket) = &paths.model_socket {
            env.push((env::MODEL_SOCKET, socket.clone()));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// The session's paths as seen from inside the runner.
#[derive(Debug, Clone)]
pub struct RunnerPaths {
    pub mailbox_dir: String,
    pub workspace: String,
    pub agent_dir: String,
    pub global_dir: String,
    pub skills_dir: Option<String>,
    /// The model proxy's Unix socket, when the runner reaches the proxy through one
    /// (containers: `proxy::CONTAINER_MODEL_SOCKET`); `None` uses the loopback URL.
    pub model_socket: Option<String>,
}

impl RunnerPaths {
    /// The runner sees host paths as they are (process runtime).
    pub fn host(spec: &RunnerSpec, settings: &RunnerSettings) -> Self {
        let s = |p: &PathBuf| p.to_string_lossy().into_owned();
        RunnerPaths {
            mailbox_dir: s(&spec.mailbox_dir),
            workspace: s(&spec.workspace),
            agent_dir: s(&spec.agent_dir),
            global_dir: s(&spec.global_dir),
            skills_dir: settings.skills_dir.as_ref().map(s),
            model_socket: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proxy::Token;

    #[test]
    fn runners_get_the_proxy_and_a_token_never_the_key() {
        let config = Config::from_lookup(
            |k| match k {
                "OPENAI_API_KEY" => Some("sk-real".to_owned()),
                "OPENAI_BASE_URL" => Some("http://upstream.example/v1".to_owned()),
                _ => None,
            },
            std::path::Path::new("/srv"),
        )
        .unwrap();
        let settings = RunnerSettings::from_config(&config, "inst");
        let token = Token::generate();
        let spec = RunnerSpec {
            session_id: "s".into(),
            agent_id: "a".into(),
            mailbox_dir: "/m".into(),
            workspace: "/w".into(),
            agent_dir: "/g".into(),
            global_dir: "/gl".into(),
            model: "m".into(),
            assistant_name: "Andy".into(),
            model_access: ModelAccess {
                loopback_url: "http://127.0.0.1:4242/v1".into(),
                token: token.clone(),
            },
            max_file_bytes: None,
        };
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let mut paths = RunnerPaths::host(&spec, &settings);
        let process = settings.env(&spec, &paths);
        assert_eq!(
            get(&process, env::OPENAI_BASE_URL).as_deref(),
            Some("http://127.0.0.1:4242/v1")
        );
        assert_eq!(get(&process, env::MODEL_SOCKET), None);

        paths.model_socket = Some(proxy::CONTAINER_MODEL_SOCKET.to_owned());
        let container = settings.env(&spec, &paths);
        assert_eq!(
            get(&container, env::OPENAI_BASE_URL).as_deref(),
            Some(proxy::SOCKET_BASE_URL)
        );
        assert_eq!(
            get(&container, env::MODEL_SOCKET).as_deref(),
            Some(proxy::CONTAINER_MODEL_SOCKET)
        );
        for env in [process, container] {
            assert_eq!(get(&env, env::MODEL_TOKEN).as_deref(), Some(token.expose()));
            assert_eq!(get(&env, env::OPENAI_API_KEY), None);
            assert!(!env.iter().any(|(_, v)| v.contains("sk-real")), "{env:?}");
        }
    }
}
