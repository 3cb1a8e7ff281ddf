//! A session directory with a running `mcp-tools` and a connected rmcp client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mailbox::{Destination, InboundDb, InboundKind, NewInbound, Route, SessionPaths};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-tools");

pub struct Session {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub paths: SessionPaths,
    pub agent_dir: PathBuf,
    pub client: RunningService<RoleClient, ()>,
}

/// What a tool call returned.
#[derive(Debug)]
pub struct Reply {
    pub is_error: bool,
    pub text: String,
}

impl Reply {
    #[track_caller]
    pub fn ok(self) -> String {
        assert!(!self.is_error, "expected success, got error: {}", self.text);
        self.text
    }

    #[track_caller]
    pub fn err(self) -> String {
        assert!(
            self.is_error,
            "expected an error, got success: {}",
            self.text
        );
        self.text
    }
}

/// The chat the session belongs to.
pub fn routing() -> Route {
    Route {
        channel_type: "telegram".into(),
        platform_id: "100".into(),
        thread_id: Some("7".into()),
    }
}

pub fn destinations() -> Vec<Destination> {
    vec![
        Destination {
            name: "family".into(),
            display_name: Some("Family chat".into()),
            route: Route::new("telegram", "100"),
        },
        Destination {
            name: "work".into(),
            display_name: None,
            route: Route::new("telegram", "200"),
        },
    ]
}

impl Session {
    pub async fn start() -> Session {
        Self::start_with(&[]).await
    }

    /// Starts the server with the standard variables plus `extra`.
    pub async fn start_with(extra: &[(&str, &str)]) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("session");
        let paths = SessionPaths::from_root(&root);
        paths.create_dirs().unwrap();
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        let mut inbound = InboundDb::open(&paths).unwrap();
        inbound.set_routing(&routing()).unwrap();
        inbound.set_destinations(&destinations()).unwrap();
        drop(inbound);

        let command = tokio::process::Command::new(BIN).configure(|c| {
            c.env_clear()
                .env("CLAWBOX_MAILBOX_DIR", &root)
                .env("CLAWBOX_WORKSPACE", &paths.workspace)
                .env("CLAWBOX_AGENT_DIR", &agent_dir)
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("RUST_LOG", "mcp_tools=debug")
                .envs(extra.iter().copied());
        });
        let transport = TokioChildProcess::new(command).unwrap();
        let client = ().serve(transport).await.unwrap();
        Session {
            dir,
            root,
            paths,
            agent_dir,
            client,
        }
    }

    pub fn workspace(&self) -> &Path {
        &self.paths.workspace
    }

    /// Writes an inbound row as the host would; returns its (even) seq.
    pub fn receive(&self, kind: InboundKind, route: Route, content: Value) -> i64 {
        let mut inbound = InboundDb::open(&self.paths).unwrap();
        let message = NewInbound {
            id: format!("test-{}", NEXT_INBOUND_ID.fetch_add(1, Ordering::Relaxed)),
            kind,
            trigger: true,
            route,
            sender_id: Some("telegram:1".into()),
            sender_name: Some("Alice".into()),
            content,
            process_after: None,
        };
        inbound.insert(&message, chrono::Utc::now()).unwrap().seq()
    }

    /// Calls a tool with a JSON object of arguments.
    pub async fn call(&self, tool: &str, args: Value) -> Reply {
        let Value::Object(args) = args else {
            panic!("arguments must be an object: {args}");
        };
        let result = self
            .client
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .unwrap();
        Reply {
            is_error: result.is_error == Some(true),
            text: result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Idempotency keys of the inbound rows tests write.
static NEXT_INBOUND_ID: AtomicU64 = AtomicU64::new(1);

/// Whether a process has exited (a zombie waiting for its reaper counts as exited).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Reads a pid a command wrote into the workspace.
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
