//! Records what the runner is doing (starting, idle, model step n, tool + declared timeout) in
//! `outbound.runner_state`, for `clawbox status` and for the host's liveness tolerance (a tool
//! with a long declared timeout may keep a claim longer). The heartbeat file is `runner.rs`'s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::{Activity, RunnerState};

use crate::store::{Store, StoreError};

/// Writes the runner's state row on every change.
#[derive(Clone)]
pub struct ActivityLog {
    store: Store,
    pid: u32,
    started_at: DateTime<Utc>,
}

impl ActivityLog {
    pub fn new(store: Store) -> Self {
        ActivityLog {
            store,
            pid: std::process::id(),
            started_at: Utc::now(),
        }
    }

    pub async fn starting(&self) -> Result<(), StoreError> {
        self.write(Activity::Starting, 0, None, None).await
    }

    pub async fn idle(&self) -> Result<(), StoreError> {
        self.write(Activity::Idle, 0, None, None).await
    }

    /// Waiting for model request number `step` of the current turn.
    pub async fn model(&self, step: u32) -> Result<(), StoreError> {
        self.write(Activity::Model, step, None, None).await
    }

    /// Running the tool calls of `step`; `tools` names them, `timeout` is the longest.
    pub async fn tools(
        &self,
        step: u32,
        tools: String,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.write(Activity::Tool, step, Some(tools), Some(ms))
            .await
    }

    async fn write(
        &self,
        activity: Activity,
        step: u32,
        tool: Option<String>,
        tool_timeout_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let state = RunnerState {
            pid: self.pid,
            started_at: self.started_at,
            activity,
            step,
            tool,
            tool_timeout_ms,
            updated_at: Utc::now(),
        };
        self.store
            .run(move |dbs| dbs.outbound.set_runner_state(&state))
            .await
    }
}
