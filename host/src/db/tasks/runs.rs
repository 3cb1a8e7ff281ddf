//! The bookkeeping of runs for the scheduler: which tasks are due, when to wake next, recording
//! a run and moving the schedule on, and folding a run's outcome from its inbox message.

use super::*;

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
