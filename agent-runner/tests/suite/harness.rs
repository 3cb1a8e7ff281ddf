//! A host-side session in a tempdir and a way to run the real runner binary against it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use mailbox::{
    Ack, InboundDb, InboundKind, Journal, NewInbound, OutboundDb, OutboundMessage, OutboundReader,
    Route, SessionPaths,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use testkit::FakeModel;
use tokio::process::{Child, Command};

/// How long a runner may take to finish a scripted test session.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

pub fn route() -> Route {
    Route::new("cli", "local")
}

/// The `mcp-tools` binary next to ours (the Makefile builds every workspace binary first).
pub fn mcp_tools_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_agent-runner")).with_file_name("mcp-tools");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// The Python interpreter of the test venv, which has the official MCP SDK and
/// `mcp-server-time` from PyPI: `CLAWBOX_TEST_PYTHON`, else `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    let path = std::env::var_os("CLAWBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            workspace.join(".venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run `make venv` (or set CLAWBOX_TEST_PYTHON) for the MCP \
         interoperability tests",
        path.display()
    );
    path
}

/// A fixture file of this crate's tests.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The function names of a request's `tools`.
pub fn tool_names(request: &testkit::RecordedRequest) -> Vec<String> {
    request.body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The system prompt of a request.
pub fn system_prompt(request: &testkit::RecordedRequest) -> String {
    request.messages()[0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub struct Session {
    pub dir: TempDir,
    pub paths: SessionPaths,
    pub agent_dir: PathBuf,
    pub inbound: InboundDb,
    next_id: u32,
    /// Extra or overriding environment for the runner.
    pub env: Vec<(String, String)>,
}

impl Session {
    pub fn new() -> Session {
        Self::with_journal(Journal::Delete)
    }

    /// A session whose host chose `journal` for its mailbox (the runner follows it).
    pub fn with_journal(journal: Journal) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let paths = SessionPaths::from_root(dir.path());
        paths.create_dirs().unwrap();
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(agent_dir.join("CLAUDE.md"), "You are a test agent.").unwrap();
        let mut inbound = InboundDb::open_with(&paths, journal).unwrap();
        inbound.set_routing(&route()).unwrap();
        Session {
            dir,
            paths,
            agent_dir,
            inbound,
            next_id: 0,
            env: Vec::new(),
        }
    }

    /// Inserts a triggering chat message from Alice (an owner: her `/clear` and `/compact` are
    /// marked authorised, as the host's router marks them); returns its seq.
    pub fn send(&mut self, text: &str) -> i64 {
        let mut content = json!({ "text": text });
        if let Some(cmd) = mailbox::command_of(text).filter(|c| c == "/clear" || c == "/compact") {
            content[mailbox::COMMAND_FIELD] = json!(cmd);
        }
        self.insert(InboundKind::Chat, content, true)
    }

    /// Inserts a triggering chat message exactly as given: a command in it is not authorised.
    pub fn send_unmarked(&mut self, text: &str) -> i64 {
        self.insert(InboundKind::Chat, json!({ "text": text }), true)
    }

    pub fn insert(&mut self, kind: InboundKind, content: Value, trigger: bool) -> i64 {
        self.next_id += 1;
        let msg = NewInbound {
            id: format!("test:{}", self.next_id),
            kind,
            trigger,
            route: route(),
            sender_id: Some("cli:local".to_owned()),
            sender_name: Some("Alice".to_owned()),
            content,
            process_after: None,
        };
        self.inbound.insert(&msg, Utc::now()).unwrap().seq()
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Turns on the built-in tools (`mcp-tools`).
    pub fn with_builtin_tools(&mut self) {
        self.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    }

    /// Writes the agent's `container.json`.
    pub fn container_json(&self, value: &Value) {
        std::fs::write(
            self.agent_dir.join("container.json"),
            serde_json::to_vec_pretty(value).unwrap(),
        )
        .unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("runner.log")
    }

    /// What the runner wrote to stderr (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the runner. Tools are off unless the test sets `CLAWBOX_MCP_TOOLS_BIN`.
    pub fn start(&self, model: &FakeModel) -> Child {
        self.start_at(&model.base_url())
    }

    /// [`Session::start`] against any OpenAI-compatible base URL (a real model server).
    pub fn start_at(&self, base_url: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-runner"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "info,agent_runner=debug")
            .env("CLAWBOX_SESSION_ID", "s1")
            .env("CLAWBOX_AGENT_ID", "default")
            .env("CLAWBOX_MAILBOX_DIR", self.dir.path())
            .env("CLAWBOX_WORKSPACE", &self.paths.workspace)
            .env("CLAWBOX_AGENT_DIR", &self.agent_dir)
            .env("CLAWBOX_MODEL", "test-model")
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", "sk-session")
            .env("TIMEZONE", "Europe/Berlin")
            .env("CLAWBOX_IDLE_TIMEOUT_MS", "400")
            .env("CLAWBOX_HEARTBEAT_MS", "100")
            .env("CLAWBOX_MODEL_BACKOFF_MS", "5")
            .env("CLAWBOX_MCP_TOOLS_BIN", "")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        cmd.spawn().unwrap()
    }

    /// Runs the runner until it exits by itself (idle); asserts exit status 0.
    pub async fn run(&self, model: &FakeModel) {
        let mut child = self.start(model);
        self.wait_exit(&mut child).await;
    }

    pub async fn wait_exit(&self, child: &mut Child) {
        self.wait_exit_within(child, RUN_LIMIT).await;
    }

    /// [`Session::wait_exit`] with its own limit (a real model on a busy CPU is slow).
    pub async fn wait_exit_within(&self, child: &mut Child, limit: Duration) {
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .unwrap_or_else(|_| panic!("runner did not exit; log:\n{}", self.log()))
            .unwrap();
        assert!(
            status.success(),
            "runner exited with {status}; log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then expects a clean exit (status 0) within 10 s.
    pub async fn stop(&self, child: &mut Child) {
        signal(child, libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap_or_else(|_| panic!("runner ignored SIGTERM; log:\n{}", self.log()))
            .unwrap();
        assert!(status.success(), "{status}; log:\n{}", self.log());
    }

    pub fn outbound(&self) -> OutboundReader {
        OutboundReader::open(&self.paths.outbound_db()).unwrap()
    }

    pub fn replies(&self) -> Vec<OutboundMessage> {
        self.outbound().messages_after(0).unwrap()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.outbound().acks_after(0).unwrap()
    }

    /// The conversation's messages (open only while no runner writes).
    pub fn history(&self) -> Vec<Value> {
        OutboundDb::open(&self.paths)
            .unwrap()
            .history()
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// Waits until the runner has written `n` outbound messages.
    pub async fn wait_replies(&self, n: usize, limit: Duration) -> Vec<OutboundMessage> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // The file exists a moment before the runner's migration has committed its tables.
            if self.paths.outbound_db().exists() && self.outbound().is_ready().unwrap() {
                let replies = self.replies();
                if replies.len() >= n {
                    return replies;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {n} replies within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill(2) with plain integers.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Whether a process runs (a zombie waiting for its reaper does not count).
pub fn alive(pid: i32) -> bool {
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

/// `role: "tool"` messages of a request, as (tool_call_id, content).
pub fn tool_results(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The content of the last user message of a request.
pub fn last_user(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}
