//! [`HostCtx`]: what the admin socket's handlers need of a running host — its configuration,
//! central database, supervisor, router, channels, runtime, proxy and scheduler — and the facts
//! only a running host knows. `app.rs` builds it when the host starts.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::HostError;
use crate::channels::Channels;
use crate::config::Config;
use crate::db::bootstrap::{CLI_CHAT, DEFAULT_AGENT};
use crate::db::{self, Db};
use crate::proxy::Proxy;
use crate::report::inspect::{HostFacts, InspectError, ProxySummary};
use crate::runtime::AgentRuntime;
use crate::scheduler::Scheduler;
use crate::session::retention::Retention;
use crate::session::router::Router;
use crate::session::supervisor::Supervisor;

/// What request handlers need of a running host.
#[derive(Clone)]
pub struct HostCtx {
    pub config: Arc<Config>,
    pub db: Db,
    pub supervisor: Supervisor,
    pub router: Router,
    pub channels: Channels,
    pub runtime: Arc<dyn AgentRuntime>,
    pub install_id: String,
    pub proxy: Proxy,
    pub started_at: DateTime<Utc>,
    /// Fires scheduled tasks; `clawbox tasks` wakes it and runs tasks through it.
    pub scheduler: Scheduler,
    /// Deletes old settled rows in the background; its summary is in `clawbox status`.
    pub retention: Retention,
}

impl HostCtx {
    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    pub fn runtime_isolated(&self) -> bool {
        self.runtime.isolated()
    }

    pub async fn default_agent_name(&self) -> String {
        self.db
            .call(|conn| db::agent_group(conn, DEFAULT_AGENT))
            .await
            .ok()
            .flatten()
            .map_or_else(|| self.config.assistant_name.clone(), |a| a.name)
    }

    /// Wakes the sessions of the CLI chat so replies that waited for a terminal go out.
    pub async fn wake_cli_sessions(&self) {
        match self
            .db
            .call(|conn| db::sessions_of_chat(conn, CLI_CHAT))
            .await
        {
            Ok(sessions) => {
                for s in sessions {
                    if let Err(e) = self.supervisor.wake(&s.id).await {
                        tracing::warn!(session_id = %s.id, "cannot wake session: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list CLI sessions: {e}"),
        }
    }

    /// What only this running host knows, for the operator reports (inspect.rs).
    pub fn facts(&self) -> HostFacts {
        HostFacts {
            install_id: self.install_id.clone(),
            started_at: self.started_at,
            runtime: self.runtime.name().to_owned(),
            isolated: self.runtime.isolated(),
            image: self.runtime.image().map(str::to_owned),
            live: self.supervisor.live(),
            slot_cap: self.supervisor.slot_cap(),
            model_proxy: ProxySummary {
                loopback: self.proxy.loopback().to_string(),
                socket: self.proxy.socket_path().to_path_buf(),
                live_tokens: self.proxy.live_tokens(),
                token_budget_per_session_day: self.proxy.budget(),
            },
            retention: self.retention.summary(),
        }
    }

    /// Runs an operator query on the blocking pool with its own read-only connection to the
    /// central database: reading every session's mailbox must not hold the connection the
    /// router and the supervisor write through.
    pub async fn read_only<R, F>(&self, f: F) -> Result<R, HostError>
    where
        F: FnOnce(&rusqlite::Connection, &crate::config::Config) -> Result<R, InspectError>
            + Send
            + 'static,
        R: Send + 'static,
    {
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || {
            let conn = db::open_read_only(&config.db_path())?;
            Ok(f(&conn, &config)?)
        })
        .await
        .map_err(|e| HostError::Task(e.to_string()))?
    }
}
