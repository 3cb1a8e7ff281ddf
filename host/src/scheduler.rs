//! Fires scheduled tasks: one loop per host that sleeps until the earliest active task is due
//! (no fixed sweep; woken early through [`TaskSignal`] whenever a task changes), writes each due
//! run into its session's inbox as a `task` message, and moves the task's schedule on. Owns the
//! firing rules; the task rows and their validation are tasks.rs's, running the message is the
//! session's runner's, and the outcome comes back through the session's delivery pass
//! (supervisor.rs folds it with [`tasks::fold_messages`]).
//!
//! Rules:
//! - The message id is `task:<task id>:<scheduled time>`, the inbox's idempotency key: a run is
//!   written once even if the host crashes between writing it and recording it (the next start
//!   finds the slot still due, the insert is a no-op, the bookkeeping completes).
//! - If the task's previous run is still pending in the inbox, the new slot is skipped and
//!   recorded as `skipped-overlap`; runs never pile up behind a slow or stuck one.
//! - A repeating task moves on to its next match *after now*, so after downtime the missed
//!   slots collapse into one run, which the message marks as late; a one-shot completes when
//!   it fires. Outcomes never end a series: a failed run is history, the next slot still fires.
//! - Time comes from an injected [`Clock`], so tests drive it; a single sleep lasts at most
//!   [`MAX_SLEEP`], which bounds how late a wall-clock step (NTP, suspend) can make a run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use mailbox::inbound::Inserted;
use mailbox::tasks::{RunOutcome, TaskStatus};
use mailbox::{InboundKind, InboundMessage, InboundReader, InboundStatus, NewInbound, Route};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::HostError;
pub use crate::db::tasks::TaskSignal;
use crate::db::tasks::{self, Advance, NewRun, RunTrigger, Scope, Task, TaskError, TaskRun};
use crate::db::{self, Db, ts};
use crate::schedule::{self, human_duration, is_late};
use crate::session::resolve::{self, SessionInfo};
use crate::session::supervisor::Supervisor;

/// The longest single sleep of the loop.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// First wait before firing a task again whose firing failed (doubling up to [`MAX_RETRY`]).
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Answers in the `tool_requests` journal older than this are deleted at start.
const JOURNAL_KEEP: chrono::Duration = chrono::Duration::days(30);

/// Where the scheduler gets the time and how it waits for a moment.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Completes at `at` (at once if it has passed).
    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Where runs are written: a session's inbox.
pub trait Inbox: Send + Sync {
    /// Writes `msg` (idempotent by its id) and sees to it that the session processes it.
    fn submit(
        &self,
        session: SessionInfo,
        msg: NewInbound,
    ) -> BoxFuture<'_, Result<Inserted, HostError>>;
}

/// A running host: the session's supervisor writes the message and wakes its runner.
impl Inbox for Supervisor {
    fn submit(
        &self,
        session: SessionInfo,
        msg: NewInbound,
    ) -> BoxFuture<'_, Result<Inserted, HostError>> {
        Box::pin(async move { Supervisor::submit(self, &session, msg).await })
    }
}

/// No host runs (`clawbox tasks run-now` holding the data directory's lock): write the inbox
/// directly and mark the session as waiting, so the next host start wakes it.
pub struct DirectInbox {
    pub db: Db,
}

impl Inbox for DirectInbox {
    fn submit(
        &self,
        session: SessionInfo,
        msg: NewInbound,
    ) -> BoxFuture<'_, Result<Inserted, HostError>> {
        Box::pin(async move {
            let paths = session.paths.clone();
            let inserted = tokio::task::spawn_blocking(move || {
                // In the journal mode the file is in: without a host there is no runner that
                // could be reading it, and the next host opens it in its own mode.
                paths.create_dirs()?;
                mailbox::InboundDb::open(&paths)?.insert(&msg, Utc::now())
            })
            .await
            .map_err(|e| HostError::Task(e.to_string()))??;
            let id = session.session.id.clone();
            self.db
                .call(move |conn| db::set_runner_state(conn, &id, "waiting"))
                .await?;
            Ok(inserted)
        })
    }
}

/// A message of a session's inbox, read without involving the session's supervisor.
async fn read_message(
    session: &SessionInfo,
    seq: i64,
) -> Result<Option<InboundMessage>, HostError> {
    let path = session.paths.inbound_db();
    tokio::task::spawn_blocking(move || {
        if !path.exists() {
            return Ok(None);
        }
        InboundReader::open(&path)?.get(seq)
    })
    .await
    .map_err(|e| HostError::Task(e.to_string()))?
    .map_err(HostError::from)
}

/// The inbox message of one run.
pub fn task_message(
    task: &Task,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    trigger: RunTrigger,
    route: &Route,
) -> NewInbound {
    NewInbound {
        id: format!("task:{}:{}", task.id, ts(slot)),
        kind: InboundKind::Task,
        trigger: true,
        route: route.clone(),
        sender_id: Some(format!("task:{}", task.id)),
        sender_name: Some("scheduled task".into()),
        content: json!({
            "prompt": task.prompt,
            "task_id": task.id,
            "script": task.script,
            "scheduled_for": ts(slot),
            "fired_at": ts(now),
            "timezone": task.timezone.name(),
            "late": is_late(slot, now),
            "run_now": trigger == RunTrigger::RunNow,
        }),
        process_after: None,
    }
}

/// A failed firing, and when to try again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    at: DateTime<Utc>,
}

struct Inner {
    db: Db,
    inbox: Arc<dyn Inbox>,
    clock: Arc<dyn Clock>,
    signal: TaskSignal,
    sessions_dir: PathBuf,
    /// One firing at a time: the loop and a run-now must not both pass one task's overlap check.
    firing: tokio::sync::Mutex<()>,
    /// Tasks whose firing failed (their inbox could not be written), by id. std Mutex, never
    /// held across an await.
    retries: Mutex<HashMap<String, Retry>>,
}

/// The scheduler of one host (or of `clawbox tasks run-now` without one). Cheap to clone.
#[derive(Clone)]
pub struct Scheduler(Arc<Inner>);

impl Scheduler {
    pub fn new(
        db: Db,
        inbox: Arc<dyn Inbox>,
        clock: Arc<dyn Clock>,
        signal: TaskSignal,
        sessions_dir: PathBuf,
    ) -> Self {
        Scheduler(Arc::new(Inner {
            db,
            inbox,
            clock,
            signal,
            sessions_dir,
            firing: tokio::sync::Mutex::new(()),
            retries: Mutex::default(),
        }))
    }

    /// The signal that wakes this scheduler.
    pub fn signal(&self) -> &TaskSignal {
        &self.0.signal
    }

    /// Reconciles, then fires tasks as they come due until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        if let Err(e) = self.reconcile().await {
            tracing::error!("cannot reconcile the task runs: {e}");
        }
        loop {
            let now = self.0.clock.now();
            let wake = match self.tick().await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::error!("scheduler: {e}");
                    Some(now + chrono::Duration::seconds(FIRST_RETRY.as_secs() as i64))
                }
            };
            let cap = now + chrono::Duration::seconds(MAX_SLEEP.as_secs() as i64);
            let sleep = wake.map(|at| self.0.clock.sleep_until(at.min(cap)));
            tracing::debug!(next = ?wake, "scheduler sleeping");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.0.signal.notified() => {}
                () = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
            }
        }
    }

    /// Fires every task due now; returns when the next one is due (or a failed one should be
    /// retried), `None` when no task is active.
    pub async fn tick(&self) -> Result<Option<DateTime<Utc>>, HostError> {
        let now = self.0.clock.now();
        let due = self.0.db.call(move |conn| tasks::due(conn, now)).await?;
        // Retries are only owed to tasks still due: one paused, cancelled or rescheduled since
        // its firing failed is forgotten (or its past retry time would wake the loop at once,
        // forever).
        self.lock_retries()
            .retain(|id, _| due.iter().any(|t| &t.id == id));
        let mut retry: Option<DateTime<Utc>> = None;
        for task in due {
            if let Some(at) = self.retry_at(&task.id)
                && at > now
            {
                retry = Some(retry.map_or(at, |r| r.min(at)));
                continue;
            }
            let Some(slot) = task.next_run else { continue };
            match self.fire(&task, slot, RunTrigger::Schedule).await {
                Ok(run) => {
                    self.lock_retries().remove(&task.id);
                    tracing::info!(task = %task.id, session_id = %task.session_id,
                        outcome = %run.outcome, scheduled_for = %ts(slot), "task run");
                }
                Err(e) => {
                    let failed = self.failed(&task.id, now);
                    retry = Some(retry.map_or(failed.at, |r| r.min(failed.at)));
                    tracing::error!(task = %task.id, retry_at = %ts(failed.at),
                        failures = failed.failures, "cannot fire the task: {e}");
                }
            }
        }
        let next = self
            .0
            .db
            .call(move |conn| next_active_after(conn, now))
            .await?;
        Ok(match (next, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Fires one run of a task now, whatever its schedule (`clawbox tasks run-now`), under the
    /// same rules: it is skipped if the previous run is still pending. The schedule is not
    /// moved. Returns the task and the run.
    pub async fn run_now(&self, id: &str) -> Result<(Task, TaskRun), HostError> {
        let id = id.to_owned();
        let task = self
            .0
            .db
            .call(move |conn| Ok(tasks::get(conn, Scope::Operator, &id)))
            .await??;
        if task.status == TaskStatus::Cancelled {
            return Err(TaskError::WrongStatus {
                id: task.id,
                status: TaskStatus::Cancelled,
                hint: "a cancelled task does not run",
            }
            .into());
        }
        // Whole milliseconds: the slot is stored and keyed in that precision.
        let now = self.0.clock.now();
        let slot = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let run = self.fire(&task, slot, RunTrigger::RunNow).await?;
        let id = task.id.clone();
        let task = self
            .0
            .db
            .call(move |conn| Ok(tasks::get(conn, Scope::Operator, &id)))
            .await??;
        Ok((task, run))
    }

    /// At start: folds the runs whose verdict arrived while no host recorded it, and trims the
    /// request journal.
    pub async fn reconcile(&self) -> Result<(), HostError> {
        let open = self.0.db.call(|conn| tasks::open_runs(conn)).await?;
        for run in open {
            let Some(info) = self.session(&run.session_id).await? else {
                continue;
            };
            let Some(seq) = run.inbound_seq else { continue };
            let msg = read_message(&info, seq).await?;
            self.settle_open(&run, msg.as_ref()).await?;
        }
        let cutoff = self.0.clock.now() - JOURNAL_KEEP;
        self.0
            .db
            .call(move |conn| {
                conn.execute("DELETE FROM tool_requests WHERE at < ?1", [ts(cutoff)])?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    fn lock_retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        // A poisoned map only means a panic elsewhere; its entries are still usable.
        self.0.retries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retry_at(&self, id: &str) -> Option<DateTime<Utc>> {
        self.lock_retries().get(id).map(|r| r.at)
    }

    fn failed(&self, id: &str, now: DateTime<Utc>) -> Retry {
        let mut retries = self.lock_retries();
        let failures = retries.get(id).map_or(0, |r| r.failures) + 1;
        let wait = FIRST_RETRY
            .saturating_mul(1u32.checked_shl(failures - 1).unwrap_or(u32::MAX))
            .min(MAX_RETRY);
        let retry = Retry {
            failures,
            at: now + chrono::Duration::milliseconds(wait.as_millis() as i64),
        };
        retries.insert(id.to_owned(), retry);
        retry
    }

    async fn session(&self, session_id: &str) -> Result<Option<SessionInfo>, HostError> {
        let dir = self.0.sessions_dir.clone();
        let id = session_id.to_owned();
        Ok(self
            .0
            .db
            .call(move |conn| resolve::load(conn, &dir, &id))
            .await?)
    }

    /// Records the verdict of an open run whose message is no longer pending; returns whether
    /// it was still pending.
    async fn settle_open(
        &self,
        run: &TaskRun,
        msg: Option<&InboundMessage>,
    ) -> Result<bool, HostError> {
        let (outcome, detail) = match msg {
            Some(m) if m.status == InboundStatus::Pending => return Ok(true),
            Some(m) => tasks::outcome_of(m).unwrap_or((RunOutcome::Failed, None)),
            None => (
                RunOutcome::Failed,
                Some("its message is no longer in the session's inbox".to_owned()),
            ),
        };
        let session = run.session_id.clone();
        let Some(seq) = run.inbound_seq else {
            return Ok(false);
        };
        self.0
            .db
            .call(move |conn| tasks::fold(conn, &session, seq, outcome, detail.as_deref()))
            .await?;
        Ok(false)
    }

    /// Fires one run of `task` for `slot`, or skips it when the previous run is still pending.
    async fn fire(
        &self,
        task: &Task,
        slot: DateTime<Utc>,
        trigger: RunTrigger,
    ) -> Result<TaskRun, HostError> {
        let _one_at_a_time = self.0.firing.lock().await;
        let now = self.0.clock.now();
        let advance = match trigger {
            RunTrigger::Schedule => tasks::advance_after(task, now),
            RunTrigger::RunNow => Advance::Keep,
        };
        let mut run = NewRun {
            scheduled_for: slot,
            fired_at: now,
            trigger,
            inbound_seq: None,
            outcome: RunOutcome::Fired,
            detail: None,
        };
        let Some(info) = self.session(&task.session_id).await? else {
            run.outcome = RunOutcome::Failed;
            run.detail = Some("its session no longer exists".into());
            return self.record(task, run, advance).await;
        };
        let id = task.id.clone();
        let open = self
            .0
            .db
            .call(move |conn| tasks::open_run(conn, &id))
            .await?;
        if let Some(open) = open {
            let msg = match open.inbound_seq {
                Some(seq) => read_message(&info, seq).await?,
                None => None,
            };
            if self.settle_open(&open, msg.as_ref()).await? {
                run.outcome = RunOutcome::SkippedOverlap;
                run.detail = Some(format!(
                    "the run due {} (message {}) was still pending",
                    schedule::local(open.scheduled_for, task.timezone),
                    open.inbound_seq.unwrap_or_default()
                ));
                return self.record(task, run, advance).await;
            }
        }
        let msg = task_message(task, slot, now, trigger, &info.route);
        let inserted = self.0.inbox.submit(info, msg).await?;
        run.inbound_seq = Some(inserted.seq());
        if is_late(slot, now) {
            run.detail = Some(format!(
                "{} late (the host was not running at the scheduled time)",
                human_duration(now - slot)
            ));
        }
        self.record(task, run, advance).await
    }

    async fn record(
        &self,
        task: &Task,
        run: NewRun,
        advance: Advance,
    ) -> Result<TaskRun, HostError> {
        let task = task.clone();
        let stored = self
            .0
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                tasks::record_run(&tx, &task, &run, &advance)?;
                let stored = tasks::run_of(&tx, &task.id, run.scheduled_for)?;
                tx.commit()?;
                Ok(stored)
            })
            .await?;
        stored.ok_or_else(|| HostError::Task("a recorded run vanished".into()))
    }
}

/// When the earliest active task after `after` is due.
fn next_active_after(
    conn: &rusqlite::Connection,
    after: DateTime<Utc>,
) -> db::DbResult<Option<DateTime<Utc>>> {
    let next: Option<String> = conn.query_row(
        "SELECT MIN(next_run) FROM tasks WHERE status = 'active' AND next_run > ?1",
        [ts(after)],
        |r| r.get(0),
    )?;
    next.as_deref().map(db::parse_ts).transpose()
}

#[cfg(test)]
mod tests;
