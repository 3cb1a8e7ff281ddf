//! Scheduled tasks in the central database (`tasks`, `task_runs`): the typed rows, the
//! operations agents (through tool requests, requests.rs) and the operator (`clawbox tasks`)
//! apply to them, and the bookkeeping of runs. Reading times and cron is schedule.rs's; deciding
//! when to fire is scheduler.rs's.
//!
//! Every function here is synchronous and opens no transaction of its own: callers run them
//! through `Db::call` inside one transaction, so that (for example) a request's change and the
//! answer recorded for it commit together.
//!
//! Life of a task: `active` (runs at `next_run`) ⇄ `paused` (no `next_run`); `cancelled` is
//! final; a one-shot becomes `completed` when it fires (an update with a new time makes it
//! active again). A repeating task stays active whatever its runs' outcomes: a failed run never
//! ends the series.

mod ops;
mod runs;
#[cfg(test)]
mod tests;

pub use ops::*;
pub use runs::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::tasks::{
    ListTasks, RunOutcome, ScheduleTask, ScriptReport, TaskStatus, TaskView, TimeView, UpdateTask,
};
use mailbox::{InboundMessage, InboundStatus};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::db::random_id;
use crate::db::{DbError, DbResult, parse_ts, ts};
use crate::schedule::{self, CronSchedule, ScheduleError};

/// Wakes the scheduler when tasks changed (a new task, an update, a resume). Cheap to clone; a
/// notification sent while the loop is busy is kept for its next wait.
#[derive(Clone, Default)]
pub struct TaskSignal(Arc<Notify>);

impl TaskSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Longest prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 8000;
/// Longest script, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 16 * 1024;
/// Active and paused tasks one agent may have: a loop that schedules without end stops here.
pub const MAX_OPEN_TASKS: i64 = 100;

/// When a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Once, at this instant.
    Once { at: DateTime<Utc> },
    /// Repeatedly, per this (validated, normalised) cron expression in the task's zone.
    Cron { expr: String },
}

/// One row of `tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub agent_id: String,
    /// Where results go: the session (and so the chat) the task belongs to.
    pub session_id: String,
    pub prompt: String,
    pub script: Option<String>,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub status: TaskStatus,
    /// Set exactly while the task is active.
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub last_outcome: Option<RunOutcome>,
    pub run_count: u32,
    pub created_by: String,
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    pub fn view(&self) -> TaskView {
        let tz = self.timezone;
        let time = |t: DateTime<Utc>| time_view(t, tz);
        let (cron, run_at) = match &self.schedule {
            Schedule::Once { at } => (None, Some(time(*at))),
            Schedule::Cron { expr } => (Some(expr.clone()), None),
        };
        TaskView {
            id: self.id.clone(),
            agent: self.agent_id.clone(),
            session: self.session_id.clone(),
            status: self.status,
            prompt: self.prompt.clone(),
            script: self.script.clone(),
            cron,
            run_at,
            timezone: tz.name().to_owned(),
            next_run: self.next_run.map(time),
            last_run: self.last_run.map(time),
            last_outcome: self.last_outcome,
            run_count: self.run_count,
            created_by: self.created_by.clone(),
            requested_by: self.requested_by.clone(),
            created_at: ts(self.created_at),
        }
    }
}

/// An instant in the task's zone and in UTC.
pub fn time_view(t: DateTime<Utc>, tz: Tz) -> TimeView {
    TimeView {
        local: schedule::local(t, tz),
        utc: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunTrigger {
    /// Its scheduled time came.
    Schedule,
    /// `clawbox tasks run-now`.
    RunNow,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::RunNow => "run-now",
        }
    }
}

/// One row of `task_runs`: a scheduled slot and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRun {
    pub id: i64,
    pub task_id: String,
    pub scheduled_for: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub trigger: RunTrigger,
    pub session_id: String,
    /// The task message's seq in the session's inbox (none for a skipped run).
    pub inbound_seq: Option<i64>,
    pub outcome: RunOutcome,
    pub detail: Option<String>,
}

/// A run as `clawbox tasks show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRunView {
    pub scheduled_for: TimeView,
    pub fired_at: String,
    pub trigger: RunTrigger,
    pub outcome: RunOutcome,
    pub detail: Option<String>,
    /// The task message's id in the session (`<task id="…">`).
    pub message: Option<i64>,
}

impl TaskRun {
    pub fn view(&self, tz: Tz) -> TaskRunView {
        TaskRunView {
            scheduled_for: time_view(self.scheduled_for, tz),
            fired_at: ts(self.fired_at),
            trigger: self.trigger,
            outcome: self.outcome,
            detail: self.detail.clone(),
            message: self.inbound_seq,
        }
    }
}

/// Whose tasks an operation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// An agent's, through its tools: only its own.
    Agent(&'a str),
    /// The operator's, through `clawbox tasks`: all.
    Operator,
}

/// Who asks for a new task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub agent_id: String,
    pub session_id: String,
    /// Whom the agent was answering (see [`TaskView::requested_by`]).
    pub requested_by: Option<String>,
}

/// Why an operation on tasks was refused or failed. Every variant but `Db` is the caller's to
/// fix and is shown to it as is (a tool error for an agent, an error line for the operator).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A time, cron expression or time zone was refused.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Arguments missing, contradictory or too large.
    #[error("{0}")]
    Invalid(String),
    #[error("there is no task {id:?}")]
    UnknownTask { id: String },
    /// The task exists but belongs to another agent than the one asking.
    #[error("task {id} belongs to another agent; an agent can only see and change its own tasks")]
    OtherAgent { id: String },
    /// The operation does not apply in the task's state (e.g. resuming a cancelled task).
    #[error("task {id} is {status}: {hint}")]
    WrongStatus {
        id: String,
        status: TaskStatus,
        hint: &'static str,
    },
    #[error(
        "this agent already has {limit} active or paused tasks; cancel some before scheduling more"
    )]
    TooMany { limit: i64 },
    /// The central database failed; nothing was changed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for TaskError {
    fn from(e: rusqlite::Error) -> Self {
        TaskError::Db(DbError::Sqlite(e))
    }
}

impl TaskError {
    /// A stable code for the answer to a tool request.
    pub fn code(&self) -> &'static str {
        match self {
            TaskError::Schedule(
                ScheduleError::InvalidCron { .. }
                | ScheduleError::NeverRuns { .. }
                | ScheduleError::TooFrequent { .. },
            ) => "invalid_cron",
            TaskError::Schedule(ScheduleError::UnknownTimezone { .. }) => "invalid_timezone",
            TaskError::Schedule(ScheduleError::InPast { .. }) => "time_in_past",
            TaskError::Schedule(
                ScheduleError::InvalidTime { .. } | ScheduleError::NonexistentTime { .. },
            ) => "invalid_time",
            TaskError::Invalid(_) => "invalid_arguments",
            TaskError::UnknownTask { .. } => "unknown_task",
            TaskError::OtherAgent { .. } => "other_agent",
            TaskError::WrongStatus { .. } => "wrong_status",
            TaskError::TooMany { .. } => "too_many_tasks",
            TaskError::Db(_) => "internal",
        }
    }
}

const TASK_COLS: &str = "id, agent_group_id, session_id, prompt, script, schedule_kind, run_at, \
     cron, timezone, status, next_run, last_run, last_outcome, run_count, created_by, \
     requested_by, created_at, updated_at";

fn malformed(what: String) -> DbError {
    DbError::Malformed(what)
}

/// A `tasks` row as stored, before its text columns are decoded.
struct RawTask {
    id: String,
    agent_id: String,
    session_id: String,
    prompt: String,
    script: Option<String>,
    kind: String,
    run_at: Option<String>,
    cron: Option<String>,
    timezone: String,
    status: String,
    next_run: Option<String>,
    last_run: Option<String>,
    last_outcome: Option<String>,
    run_count: u32,
    created_by: String,
    requested_by: Option<String>,
    created_at: String,
    updated_at: String,
}

impl RawTask {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawTask {
            id: r.get(0)?,
            agent_id: r.get(1)?,
            session_id: r.get(2)?,
            prompt: r.get(3)?,
            script: r.get(4)?,
            kind: r.get(5)?,
            run_at: r.get(6)?,
            cron: r.get(7)?,
            timezone: r.get(8)?,
            status: r.get(9)?,
            next_run: r.get(10)?,
            last_run: r.get(11)?,
            last_outcome: r.get(12)?,
            run_count: r.get(13)?,
            created_by: r.get(14)?,
            requested_by: r.get(15)?,
            created_at: r.get(16)?,
            updated_at: r.get(17)?,
        })
    }

    fn decode(self) -> DbResult<Task> {
        let id = self.id;
        let bad = |what: String| malformed(format!("task {id}: {what}"));
        let schedule = match (self.kind.as_str(), self.run_at, self.cron) {
            ("once", Some(at), None) => Schedule::Once { at: parse_ts(&at)? },
            ("cron", None, Some(expr)) => Schedule::Cron { expr },
            (kind, ..) => return Err(bad(format!("inconsistent {kind} schedule"))),
        };
        let time = |v: Option<String>| v.as_deref().map(parse_ts).transpose();
        Ok(Task {
            agent_id: self.agent_id,
            session_id: self.session_id,
            prompt: self.prompt,
            script: self.script,
            schedule,
            timezone: schedule::parse_timezone(&self.timezone).map_err(|e| bad(e.to_string()))?,
            status: self.status.parse().map_err(bad)?,
            next_run: time(self.next_run)?,
            last_run: time(self.last_run)?,
            last_outcome: self
                .last_outcome
                .map(|o| o.parse())
                .transpose()
                .map_err(bad)?,
            run_count: self.run_count,
            created_by: self.created_by,
            requested_by: self.requested_by,
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            id,
        })
    }
}

fn query_tasks(conn: &Connection, filter: &str, p: impl rusqlite::Params) -> DbResult<Vec<Task>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks {filter}"))?;
    let rows = stmt.query_map(p, RawTask::from_row)?;
    rows.map(|r| r?.decode()).collect()
}

fn load(conn: &Connection, id: &str) -> DbResult<Option<Task>> {
    Ok(query_tasks(conn, "WHERE id = ?1", [id])?.into_iter().next())
}

/// The task `id`, if `scope` may see it.
pub fn get(conn: &Connection, scope: Scope<'_>, id: &str) -> Result<Task, TaskError> {
    let id = id.trim();
    let Some(task) = load(conn, id)? else {
        return Err(TaskError::UnknownTask { id: id.to_owned() });
    };
    match scope {
        Scope::Agent(agent) if agent != task.agent_id => {
            Err(TaskError::OtherAgent { id: id.to_owned() })
        }
        Scope::Agent(_) | Scope::Operator => Ok(task),
    }
}

/// Tasks `scope` may see; `status` as in [`ListTasks`] (default: active and paused).
pub fn list(
    conn: &Connection,
    scope: Scope<'_>,
    filter: &ListTasks,
) -> Result<Vec<Task>, TaskError> {
    let statuses: Vec<TaskStatus> = match filter.status.as_deref().map(str::trim) {
        None | Some("") => vec![TaskStatus::Active, TaskStatus::Paused],
        Some("all") => TaskStatus::ALL.to_vec(),
        Some(one) => vec![one.parse().map_err(|_| {
            TaskError::Invalid(format!(
                "unknown status {one:?}; use active, paused, cancelled, completed or all"
            ))
        })?],
    };
    let order = "ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'paused' THEN 1 ELSE 2 END,
                 next_run IS NULL, next_run, created_at, id";
    let all = match scope {
        Scope::Agent(agent) => {
            query_tasks(conn, &format!("WHERE agent_group_id = ?1 {order}"), [agent])?
        }
        Scope::Operator => query_tasks(conn, order, [])?,
    };
    Ok(all
        .into_iter()
        .filter(|t| statuses.contains(&t.status))
        .collect())
}
