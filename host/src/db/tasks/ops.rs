//! What agents (through tool requests) and the operator (`clawbox tasks`) do to tasks:
//! schedule, update, pause, resume, cancel — each validated before anything is stored.

use super::*;

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
