//! Records what the runner is doing (starting, idle, model step n, tool + declared timeout) in
//! `outbound.runner_state`, for `clawbox status` and for the host's liveness tolerance (a tool
//! with a long declared timeout may keep a claim longer). The heartbeat file is `runner.rs`'s.
//!
//! A commit to `outbound.db` costs about four fsyncs with the rollback journal
//! (`synchronous=FULL`), and separate activity commits once dominated the per-message latency;
//! in WAL mode it costs none, but each commit still wakes the host. So on the per-message
//! path the row rides along with a transaction the turn commits anyway ([`ActivityRows`] builds
//! it; the transaction's owner writes it):
//!
//! | row | written by |
//! |---|---|
//! | Starting, the first Idle | [`ActivityLog`], once per runner (with the `started` and `ready` events) |
//! | Model(first step) | the claim (`claim.rs`) |
//! | Model(step + 1) | the transaction persisting a step with tool calls (`turn.rs`) |
//! | Tool(names, longest timeout) | [`ActivityLog::tools`], before the calls run (see there), with the draft naming the calls |
//! | Idle | the verdict: reply or failure, and `/clear` (`turn.rs`) |
//!
//! A plain turn (claim, one model request, final answer) therefore commits exactly twice. The
//! runner's event log (`outbound.events`, `clawbox logs`) follows the same rule: model steps and
//! tool calls ride with the step or verdict transaction in `turn.rs`, and the runner's start and
//! readiness with the two once-per-runner rows here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::{Activity, Draft, RunnerEvent, RunnerState};

use crate::store::{Store, StoreError};

/// Builds this runner's `runner_state` rows. `Copy`, so a closure sent to the store thread can
/// take it and put the row into the transaction it commits anyway.
#[derive(Debug, Clone, Copy)]
pub struct ActivityRows {
    pid: u32,
    started_at: DateTime<Utc>,
}

impl ActivityRows {
    fn new() -> Self {
        ActivityRows {
            pid: std::process::id(),
            started_at: Utc::now(),
        }
    }

    pub fn starting(self) -> RunnerState {
        self.row(Activity::Starting, 0, None, None)
    }

    /// Between turns; `step` is 0.
    pub fn idle(self) -> RunnerState {
        self.row(Activity::Idle, 0, None, None)
    }

    /// Waiting for (or about to send) model request number `step` of the current turn.
    pub fn model(self, step: u32) -> RunnerState {
        self.row(Activity::Model, step, None, None)
    }

    /// Running the tool calls of `step`; `tools` names them, `timeout` is the longest.
    pub fn tools(self, step: u32, tools: String, timeout: Duration) -> RunnerState {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.row(Activity::Tool, step, Some(tools), Some(ms))
    }

    fn row(
        self,
        activity: Activity,
        step: u32,
        tool: Option<String>,
        tool_timeout_ms: Option<u64>,
    ) -> RunnerState {
        RunnerState {
            pid: self.pid,
            started_at: self.started_at,
            activity,
            step,
            tool,
            tool_timeout_ms,
            updated_at: Utc::now(),
        }
    }
}

/// Writes the rows that have no transaction to ride along with, each in its own commit.
#[derive(Clone)]
pub struct ActivityLog {
    store: Store,
    rows: ActivityRows,
}

impl ActivityLog {
    pub fn new(store: Store) -> Self {
        ActivityLog {
            store,
            rows: ActivityRows::new(),
        }
    }

    /// The row builder, for transactions that record the activity themselves.
    pub fn rows(&self) -> ActivityRows {
        self.rows
    }

    /// The runner has started: the Starting row and a `started` event, in one commit that also
    /// prunes the event log.
    pub async fn starting(&self, model: &str) -> Result<(), StoreError> {
        let state = self.rows.starting();
        let event = RunnerEvent::Started {
            pid: self.rows.pid,
            model: model.to_owned(),
        };
        self.store
            .run(move |dbs| {
                let mut tx = dbs.outbound.transaction()?;
                tx.set_runner_state(&state)?;
                tx.prune_events()?;
                tx.record_events(&[(state.updated_at, event)])?;
                tx.commit()
            })
            .await
    }

    /// The MCP servers are up: the first Idle row and a `ready` event naming the tool count and
    /// what could not be used, in one commit.
    pub async fn ready(&self, tools: usize, problems: Vec<String>) -> Result<(), StoreError> {
        let state = self.rows.idle();
        let event = RunnerEvent::Ready {
            tools: u32::try_from(tools).unwrap_or(u32::MAX),
            problems,
        };
        self.store
            .run(move |dbs| {
                let mut tx = dbs.outbound.transaction()?;
                tx.set_runner_state(&state)?;
                tx.record_events(&[(state.updated_at, event)])?;
                tx.commit()
            })
            .await
    }

    /// Only where no verdict transaction records it (the runner has just started).
    pub async fn idle(&self) -> Result<(), StoreError> {
        self.write(self.rows.idle()).await
    }

    /// Running the tool calls of `step`. Its own commit: the host must see the declared timeout
    /// before a long call starts, and no transaction precedes the calls (the assistant message
    /// is persisted only together with its results, so the pair is never split). Not on the
    /// plain-turn path: only steps that run tool calls pay for it. `draft`, the turn's draft
    /// naming the calls (the chat's progress line), rides in the same commit.
    pub async fn tools(
        &self,
        step: u32,
        tools: String,
        timeout: Duration,
        draft: Option<Draft>,
    ) -> Result<(), StoreError> {
        let state = self.rows.tools(step, tools, timeout);
        let Some(draft) = draft else {
            return self.write(state).await;
        };
        self.store
            .run(move |dbs| {
                let mut tx = dbs.outbound.transaction()?;
                tx.set_runner_state(&state)?;
                tx.set_draft(&draft)?;
                tx.commit()
            })
            .await
    }

    /// Model step `step` again after work that was no model request (a task's script).
    pub async fn model(&self, step: u32) -> Result<(), StoreError> {
        self.write(self.rows.model(step)).await
    }

    async fn write(&self, state: RunnerState) -> Result<(), StoreError> {
        self.store
            .run(move |dbs| dbs.outbound.set_runner_state(&state))
            .await
    }
}
