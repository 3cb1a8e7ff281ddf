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

fn check_prompt(prompt: &str) -> Result<String, TaskError> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(TaskError::Invalid(
            "prompt is empty; say what you should do when the task runs".into(),
        ));
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(TaskError::Invalid(format!(
            "prompt has {chars} characters; the limit is {MAX_PROMPT_CHARS}"
        )));
    }
    Ok(prompt.to_owned())
}

/// `None` for an absent or blank script.
fn check_script(script: Option<&str>) -> Result<Option<String>, TaskError> {
    let Some(script) = script.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(TaskError::Invalid(format!(
            "script has {} bytes; the limit is {MAX_SCRIPT_BYTES}",
            script.len()
        )));
    }
    Ok(Some(script.to_owned()))
}

fn timezone_or(name: Option<&str>, default: Tz) -> Result<Tz, TaskError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(default),
        Some(name) => Ok(schedule::parse_timezone(name)?),
    }
}

/// The schedule given as `process_after` xor `cron`, with its first run.
fn parse_schedule(
    process_after: Option<&str>,
    cron: Option<&str>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<(Schedule, DateTime<Utc>), TaskError> {
    match (process_after, cron) {
        (Some(_), Some(_)) => Err(TaskError::Invalid(
            "give either process_after (run once) or cron (repeat), not both".into(),
        )),
        (None, None) => Err(TaskError::Invalid(
            "give process_after (run once at that time) or cron (repeat on that schedule)".into(),
        )),
        (Some(at), None) => {
            let at = schedule::parse_time(at, tz, now)?;
            Ok((Schedule::Once { at }, at))
        }
        (None, Some(expr)) => {
            let cron = CronSchedule::parse(expr)?;
            let first = cron.validate(tz, now)?;
            Ok((Schedule::Cron { expr: cron.expr }, first))
        }
    }
}

/// The first run of `schedule` at or after `now` (a one-shot's own time, even if past).
fn first_run(schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, TaskError> {
    match schedule {
        Schedule::Once { at } => Ok(*at),
        Schedule::Cron { expr } => Ok(CronSchedule::parse(expr)?.next_after(tz, now)?),
    }
}

/// Stores a new task for `who`; its first run is its time, or the cron's next match.
pub fn schedule(
    conn: &Connection,
    who: &Requester,
    args: &ScheduleTask,
    default_tz: Tz,
    now: DateTime<Utc>,
) -> Result<Task, TaskError> {
    let prompt = check_prompt(&args.prompt)?;
    let script = check_script(args.script.as_deref())?;
    let tz = timezone_or(args.timezone.as_deref(), default_tz)?;
    let blank = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let (schedule, next_run) = parse_schedule(
        blank(&args.process_after).as_deref(),
        blank(&args.cron).as_deref(),
        tz,
        now,
    )?;
    let open: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE agent_group_id = ?1 AND status IN ('active', 'paused')",
        [&who.agent_id],
        |r| r.get(0),
    )?;
    if open >= MAX_OPEN_TASKS {
        return Err(TaskError::TooMany {
            limit: MAX_OPEN_TASKS,
        });
    }
    let id = format!("task-{}", random_id(8));
    let (kind, run_at, cron) = match &schedule {
        Schedule::Once { at } => ("once", Some(ts(*at)), None),
        Schedule::Cron { expr } => ("cron", None, Some(expr.clone())),
    };
    conn.execute(
        "INSERT INTO tasks (id, agent_group_id, session_id, prompt, script, schedule_kind, run_at,
             cron, timezone, status, next_run, created_by, requested_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?12, ?13, ?13)",
        params![
            id,
            who.agent_id,
            who.session_id,
            prompt,
            script,
            kind,
            run_at,
            cron,
            tz.name(),
            ts(next_run),
            format!("agent:{}", who.agent_id),
            who.requested_by,
            ts(now),
        ],
    )?;
    loaded(conn, &id)
}

fn loaded(conn: &Connection, id: &str) -> Result<Task, TaskError> {
    load(conn, id)?.ok_or_else(|| TaskError::UnknownTask { id: id.to_owned() })
}

/// Writes every mutable column of `task`.
fn store(conn: &Connection, task: &Task, now: DateTime<Utc>) -> Result<Task, TaskError> {
    let (kind, run_at, cron) = match &task.schedule {
        Schedule::Once { at } => ("once", Some(ts(*at)), None),
        Schedule::Cron { expr } => ("cron", None, Some(expr.clone())),
    };
    conn.execute(
        "UPDATE tasks SET prompt = ?2, script = ?3, schedule_kind = ?4, run_at = ?5, cron = ?6,
             timezone = ?7, status = ?8, next_run = ?9, updated_at = ?10
         WHERE id = ?1",
        params![
            task.id,
            task.prompt,
            task.script,
            kind,
            run_at,
            cron,
            task.timezone.name(),
            task.status.as_str(),
            task.next_run.map(ts),
            ts(now),
        ],
    )?;
    loaded(conn, &task.id)
}

/// Changes what `args` names (see [`UpdateTask`]); an active task's next run follows a changed
/// schedule or zone.
pub fn update(
    conn: &Connection,
    scope: Scope<'_>,
    args: &UpdateTask,
    now: DateTime<Utc>,
) -> Result<Task, TaskError> {
    let mut task = get(conn, scope, &args.task_id)?;
    if task.status == TaskStatus::Cancelled {
        return Err(TaskError::WrongStatus {
            id: task.id,
            status: TaskStatus::Cancelled,
            hint: "a cancelled task cannot be changed; schedule a new one",
        });
    }
    let nothing = args.prompt.is_none()
        && args.process_after.is_none()
        && args.cron.is_none()
        && args.script.is_none()
        && args.timezone.is_none();
    if nothing {
        return Err(TaskError::Invalid(
            "nothing to update: give at least one of prompt, process_after, cron, script, timezone"
                .into(),
        ));
    }
    if let Some(prompt) = &args.prompt {
        task.prompt = check_prompt(prompt)?;
    }
    if let Some(script) = &args.script {
        task.script = check_script(Some(script))?;
    }
    let zone_changed = match &args.timezone {
        Some(name) => {
            let tz = timezone_or(Some(name), task.timezone)?;
            let changed = tz != task.timezone;
            task.timezone = tz;
            changed
        }
        None => false,
    };
    let cron = args.cron.as_deref().map(str::trim);
    let rescheduled = match (args.process_after.as_deref(), cron) {
        (Some(_), Some(expr)) if !expr.is_empty() => {
            return Err(TaskError::Invalid(
                "give either process_after (run once) or cron (repeat), not both".into(),
            ));
        }
        (Some(at), _) => {
            let (schedule, _) = parse_schedule(Some(at), None, task.timezone, now)?;
            task.schedule = schedule;
            true
        }
        (None, Some("")) => {
            // End the recurrence: the next run becomes the last one.
            if let Schedule::Cron { .. } = task.schedule {
                let at = match task.next_run {
                    Some(at) => at,
                    None => first_run(&task.schedule, task.timezone, now)?,
                };
                task.schedule = Schedule::Once { at };
            }
            true
        }
        (None, Some(expr)) => {
            let (schedule, _) = parse_schedule(None, Some(expr), task.timezone, now)?;
            task.schedule = schedule;
            true
        }
        (None, None) => false,
    };
    if rescheduled && task.status == TaskStatus::Completed {
        task.status = TaskStatus::Active;
    }
    if task.status == TaskStatus::Active && (rescheduled || zone_changed) {
        task.next_run = Some(first_run(&task.schedule, task.timezone, now)?);
    }
    store(conn, &task, now)
}

/// Stops an active task from running until it is resumed.
pub fn pause(
    conn: &Connection,
    scope: Scope<'_>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Task, TaskError> {
    let mut task = get(conn, scope, id)?;
    match task.status {
        TaskStatus::Active => {
            task.status = TaskStatus::Paused;
            task.next_run = None;
            store(conn, &task, now)
        }
        TaskStatus::Paused => Ok(task),
        status @ (TaskStatus::Cancelled | TaskStatus::Completed) => Err(TaskError::WrongStatus {
            id: task.id,
            status,
            hint: "only active tasks can be paused",
        }),
    }
}

/// Lets a paused task run again: a repeating one from its next match after now (runs that fell
/// in the pause are not made up), a one-shot at its time (at once if that has passed).
pub fn resume(
    conn: &Connection,
    scope: Scope<'_>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Task, TaskError> {
    let mut task = get(conn, scope, id)?;
    match task.status {
        TaskStatus::Paused => {
            task.next_run = Some(first_run(&task.schedule, task.timezone, now)?);
            task.status = TaskStatus::Active;
            store(conn, &task, now)
        }
        TaskStatus::Active => Ok(task),
        status @ (TaskStatus::Cancelled | TaskStatus::Completed) => Err(TaskError::WrongStatus {
            id: task.id,
            status,
            hint: "only paused tasks can be resumed",
        }),
    }
}

/// Ends a task for good. A run already in the inbox still runs.
pub fn cancel(
    conn: &Connection,
    scope: Scope<'_>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Task, TaskError> {
    let mut task = get(conn, scope, id)?;
    match task.status {
        TaskStatus::Active | TaskStatus::Paused => {
            task.status = TaskStatus::Cancelled;
            task.next_run = None;
            store(conn, &task, now)
        }
        TaskStatus::Cancelled => Ok(task),
        TaskStatus::Completed => Err(TaskError::WrongStatus {
            id: task.id,
            status: TaskStatus::Completed,
            hint: "it has already run",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Runs (scheduler.rs)

const RUN_COLS: &str =
    "id, task_id, scheduled_for, fired_at, trigger, session_id, inbound_seq, outcome, detail";

fn query_runs(conn: &Connection, filter: &str, p: impl rusqlite::Params) -> DbResult<Vec<TaskRun>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {RUN_COLS} FROM task_runs {filter}"))?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    rows.map(|r| {
        let (
            id,
            task_id,
            scheduled_for,
            fired_at,
            trigger,
            session_id,
            inbound_seq,
            outcome,
            detail,
        ) = r?;
        Ok(TaskRun {
            id,
            scheduled_for: parse_ts(&scheduled_for)?,
            fired_at: parse_ts(&fired_at)?,
            trigger: match trigger.as_str() {
                "run-now" => RunTrigger::RunNow,
                _ => RunTrigger::Schedule,
            },
            session_id,
            inbound_seq,
            outcome: outcome
                .parse()
                .map_err(|e| malformed(format!("run {id} of {task_id}: {e}")))?,
            detail,
            task_id,
        })
    })
    .collect()
}

/// The latest `limit` runs of a task, newest first.
pub fn runs(conn: &Connection, task_id: &str, limit: u32) -> DbResult<Vec<TaskRun>> {
    query_runs(
        conn,
        "WHERE task_id = ?1 ORDER BY scheduled_for DESC, id DESC LIMIT ?2",
        params![task_id, limit],
    )
}

/// The run of `task_id` for the slot `scheduled_for`.
pub fn run_of(
    conn: &Connection,
    task_id: &str,
    scheduled_for: DateTime<Utc>,
) -> DbResult<Option<TaskRun>> {
    Ok(query_runs(
        conn,
        "WHERE task_id = ?1 AND scheduled_for = ?2",
        params![task_id, ts(scheduled_for)],
    )?
    .into_iter()
    .next())
}

/// Active tasks whose next run is due at `now`, earliest first.
pub fn due(conn: &Connection, now: DateTime<Utc>) -> DbResult<Vec<Task>> {
    query_tasks(
        conn,
        "WHERE status = 'active' AND next_run <= ?1 ORDER BY next_run, id",
        [ts(now)],
    )
}

/// When the earliest active task is due.
pub fn next_wake(conn: &Connection) -> DbResult<Option<DateTime<Utc>>> {
    let next: Option<String> = conn.query_row(
        "SELECT MIN(next_run) FROM tasks WHERE status = 'active'",
        [],
        |r| r.get(0),
    )?;
    next.as_deref().map(parse_ts).transpose()
}

/// The task's run whose message is in the inbox without a verdict yet, if any.
pub fn open_run(conn: &Connection, task_id: &str) -> DbResult<Option<TaskRun>> {
    Ok(query_runs(
        conn,
        "WHERE task_id = ?1 AND outcome = 'fired' ORDER BY id DESC LIMIT 1",
        [task_id],
    )?
    .into_iter()
    .next())
}

/// Every run without a verdict (checked against the inboxes when the host starts).
pub fn open_runs(conn: &Connection) -> DbResult<Vec<TaskRun>> {
    query_runs(conn, "WHERE outcome = 'fired' ORDER BY id", [])
}

/// What a fired or skipped run does to the task's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Nothing (a run-now run).
    Keep,
    /// The next run of a repeating task.
    To(DateTime<Utc>),
    /// A one-shot is done.
    Complete,
    /// The schedule no longer yields a run (a cron stored by hand that does not parse): the
    /// task is paused with this reason rather than fired in a loop.
    Pause(String),
}

/// How the schedule of `task` moves on after a run at `now`: a repeating task goes to its next
/// match *after now*, so the runs missed while the host was down collapse into the one that
/// fired.
pub fn advance_after(task: &Task, now: DateTime<Utc>) -> Advance {
    match &task.schedule {
        Schedule::Once { .. } => Advance::Complete,
        Schedule::Cron { expr } => {
            match CronSchedule::parse(expr).and_then(|cron| cron.next_after(task.timezone, now)) {
                Ok(next) => Advance::To(next),
                Err(e) => Advance::Pause(e.to_string()),
            }
        }
    }
}

/// A run to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub scheduled_for: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub trigger: RunTrigger,
    pub inbound_seq: Option<i64>,
    pub outcome: RunOutcome,
    pub detail: Option<String>,
}

/// Records a run (once per task and scheduled time: recording it again changes nothing) and
/// moves the schedule on as `advance` says — but only if the task is still active and still
/// due at that slot, so a pause, cancel or update that came in meanwhile wins. Returns whether
/// the run was new.
pub fn record_run(
    conn: &Connection,
    task: &Task,
    run: &NewRun,
    advance: &Advance,
) -> DbResult<bool> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, fired_at, trigger, session_id,
             inbound_seq, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            task.id,
            ts(run.scheduled_for),
            ts(run.fired_at),
            run.trigger.as_str(),
            task.session_id,
            run.inbound_seq,
            run.outcome.as_str(),
            run.detail,
        ],
    )? == 1;
    if inserted {
        conn.execute(
            "UPDATE tasks SET last_run = ?2, last_outcome = ?3,
                 run_count = run_count + ?4, updated_at = ?5
             WHERE id = ?1",
            params![
                task.id,
                ts(run.scheduled_for),
                run.outcome.as_str(),
                i64::from(run.outcome == RunOutcome::Fired),
                ts(run.fired_at),
            ],
        )?;
    }
    let (status, next_run) = match advance {
        Advance::Keep => return Ok(inserted),
        Advance::To(next) => (TaskStatus::Active, Some(ts(*next))),
        Advance::Complete => (TaskStatus::Completed, None),
        Advance::Pause(reason) => {
            tracing::error!(task = %task.id, "pausing the task: {reason}");
            (TaskStatus::Paused, None)
        }
    };
    conn.execute(
        "UPDATE tasks SET status = ?2, next_run = ?3
         WHERE id = ?1 AND status = 'active' AND next_run = ?4",
        params![task.id, status.as_str(), next_run, ts(run.scheduled_for)],
    )?;
    Ok(inserted)
}

/// Records the verdict on a task message (the row `seq` of `session_id`'s inbox) in its run;
/// returns the run's task id when this changed an open run.
pub fn fold(
    conn: &Connection,
    session_id: &str,
    seq: i64,
    outcome: RunOutcome,
    detail: Option<&str>,
) -> DbResult<Option<String>> {
    let folded: Option<(String, String)> = conn
        .query_row(
            // What the firing noted (that the run was late) stays, the verdict's detail follows.
            "UPDATE task_runs SET outcome = ?3,
                 detail = CASE WHEN detail IS NULL THEN ?4 WHEN ?4 IS NULL THEN detail
                               ELSE detail || '; ' || ?4 END
             WHERE session_id = ?1 AND inbound_seq = ?2 AND outcome = 'fired'
             RETURNING task_id, scheduled_for",
            params![session_id, seq, outcome.as_str(), detail],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((task_id, scheduled_for)) = folded else {
        return Ok(None);
    };
    conn.execute(
        "UPDATE tasks SET last_outcome = ?2 WHERE id = ?1 AND last_run = ?3",
        params![task_id, outcome.as_str(), scheduled_for],
    )?;
    Ok(Some(task_id))
}

/// Folds the final state of the task messages among `msgs` (rows of `session_id`'s inbox that
/// reached a verdict) into their runs; returns how many runs changed.
pub fn fold_messages(
    conn: &Connection,
    session_id: &str,
    msgs: &[InboundMessage],
) -> DbResult<usize> {
    let mut folded = 0;
    for m in msgs.iter().filter(|m| m.kind == mailbox::InboundKind::Task) {
        if let Some((outcome, detail)) = outcome_of(m)
            && fold(conn, session_id, m.seq, outcome, detail.as_deref())?.is_some()
        {
            folded += 1;
        }
    }
    Ok(folded)
}

/// What a task message's final state means for its run; `None` while it is pending.
pub fn outcome_of(msg: &InboundMessage) -> Option<(RunOutcome, Option<String>)> {
    match msg.status {
        InboundStatus::Pending => None,
        InboundStatus::Failed => Some((RunOutcome::Failed, msg.error.clone())),
        InboundStatus::Completed => Some(
            match msg.detail.as_ref().and_then(ScriptReport::from_detail) {
                Some(ScriptReport::Skip) => (
                    RunOutcome::ScriptFalse,
                    Some("the script said wakeAgent: false".to_owned()),
                ),
                Some(ScriptReport::Error { reason }) => (RunOutcome::ScriptError, Some(reason)),
                Some(ScriptReport::Wake) => (
                    RunOutcome::Completed,
                    Some("the script woke the agent".to_owned()),
                ),
                None => (RunOutcome::Completed, None),
            },
        ),
    }
}

#[cfg(test)]
mod tests;
