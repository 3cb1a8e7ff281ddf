//! Answers the requests a session's container sends the host ([`mailbox::request`]): decodes
//! the op, applies it to the central database, and journals the answer in `tool_requests` in the
//! same transaction. A request handled a second time (the host crashed after applying it but
//! before its answer reached the inbox) gets the journaled answer: its change is applied once.
//! Writing the answer into the session's inbox is delivery.rs's job.
//!
//! A request is only applied while the runner that wrote it may still be waiting for the
//! answer. One written by a runner that is gone (the host restarted, the runner was stopped)
//! is refused unapplied: its turn is retried by a new runner, which asks again — applying the
//! old request too would, say, schedule the same task twice.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::request::Request;
use mailbox::tasks::{self as ops, ListTasks, ScheduleTask, TaskList, TaskRef, UpdateTask};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::db::tasks::TaskSignal;
use crate::db::tasks::{self, Requester, Scope, TaskError};
use crate::db::{Db, DbError, DbResult, ts};

/// Who sent a request, as the session's supervisor knows it.
#[derive(Debug, Clone)]
pub struct Asker {
    pub agent_id: String,
    pub session_id: String,
    /// Whom the agent was answering when it asked (the sender of the claimed message).
    pub requested_by: Option<String>,
    /// Whether the runner that wrote the request may still wait for the answer.
    pub waiting: bool,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ok: bool,
    pub body: Value,
}

impl Answer {
    /// A refusal: `body.error` says why, `body.code` is stable for programs.
    pub fn refused(error: impl Into<String>, code: &str) -> Self {
        Answer {
            ok: false,
            body: json!({ "error": error.into(), "code": code }),
        }
    }
}

/// Applies requests for the sessions' supervisors.
#[derive(Clone)]
pub struct Requests {
    db: Db,
    /// `TIMEZONE`: the zone of tasks that name none.
    default_tz: Tz,
    /// Wakes the scheduler after a task changed.
    signal: TaskSignal,
}

impl Requests {
    pub fn new(db: Db, default_tz: Tz, signal: TaskSignal) -> Self {
        Requests {
            db,
            default_tz,
            signal,
        }
    }

    /// Answers `request`; a failure of the central database becomes a refusal that says so
    /// (nothing was applied: the transaction rolled back).
    pub async fn answer(&self, asker: Asker, request: Request) -> Answer {
        let default_tz = self.default_tz;
        let seq = request.seq;
        let op = request.op.clone();
        let result = self
            .db
            .call(move |conn| handle(conn, &asker, &request, default_tz, Utc::now()))
            .await;
        match result {
            Ok((answer, changed)) => {
                if changed {
                    self.signal.notify();
                }
                answer
            }
            Err(e) => {
                tracing::error!(request_seq = seq, op = %op, "cannot apply the request: {e}");
                Answer::refused(
                    format!("the host could not apply the request ({e}); nothing was changed"),
                    "internal",
                )
            }
        }
    }
}

/// Applies one request in one transaction with its journal entry; returns the answer and
/// whether tasks changed. A request already in the journal gets its journaled answer.
pub fn handle(
    conn: &mut Connection,
    asker: &Asker,
    request: &Request,
    default_tz: Tz,
    now: DateTime<Utc>,
) -> DbResult<(Answer, bool)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let journaled: Option<(bool, String)> = tx
        .query_row(
            "SELECT ok, body FROM tool_requests WHERE session_id = ?1 AND request_seq = ?2",
            params![asker.session_id, request.seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((ok, body)) = journaled {
        let body = serde_json::from_str(&body)
            .map_err(|e| DbError::Malformed(format!("journaled answer: {e}")))?;
        return Ok((Answer { ok, body }, false));
    }
    let (answer, changed) = if asker.waiting {
        match apply(&tx, asker, request, default_tz, now) {
            Ok((body, changed)) => (Answer { ok: true, body }, changed),
            Err(TaskError::Db(e)) => return Err(e),
            Err(e) => (Answer::refused(e.to_string(), e.code()), false),
        }
    } else {
        (
            Answer::refused(
                "the agent runner that sent this request stopped before it was answered; \
                 nothing was done",
                "asker_gone",
            ),
            false,
        )
    };
    tx.execute(
        "INSERT INTO tool_requests (session_id, request_seq, op, ok, body, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            asker.session_id,
            request.seq,
            request.op,
            answer.ok,
            answer.body.to_string(),
            ts(now)
        ],
    )?;
    tx.commit()?;
    Ok((answer, changed))
}

/// The typed arguments of `request`, or a refusal naming the op and the problem.
fn args<T: DeserializeOwned>(request: &Request) -> Result<T, TaskError> {
    serde_json::from_value(request.args.clone())
        .map_err(|e| TaskError::Invalid(format!("invalid arguments for {}: {e}", request.op)))
}

fn view(task: &tasks::Task) -> Result<Value, TaskError> {
    serde_json::to_value(task.view())
        .map_err(|e| TaskError::Db(DbError::Malformed(format!("task view: {e}"))))
}

/// Does what `request` asks; returns the answer's body and whether tasks changed.
fn apply(
    conn: &Connection,
    asker: &Asker,
    request: &Request,
    default_tz: Tz,
    now: DateTime<Utc>,
) -> Result<(Value, bool), TaskError> {
    let scope = Scope::Agent(&asker.agent_id);
    let changed = |task: tasks::Task| Ok((view(&task)?, true));
    match request.op.as_str() {
        ops::SCHEDULE_TASK => {
            let args: ScheduleTask = args(request)?;
            let who = Requester {
                agent_id: asker.agent_id.clone(),
                session_id: asker.session_id.clone(),
                requested_by: asker.requested_by.clone(),
            };
            changed(tasks::schedule(conn, &who, &args, default_tz, now)?)
        }
        ops::UPDATE_TASK => changed(tasks::update(
            conn,
            scope,
            &args::<UpdateTask>(request)?,
            now,
        )?),
        ops::PAUSE_TASK => changed(tasks::pause(
            conn,
            scope,
            &args::<TaskRef>(request)?.task_id,
            now,
        )?),
        ops::RESUME_TASK => changed(tasks::resume(
            conn,
            scope,
            &args::<TaskRef>(request)?.task_id,
            now,
        )?),
        ops::CANCEL_TASK => changed(tasks::cancel(
            conn,
            scope,
            &args::<TaskRef>(request)?.task_id,
            now,
        )?),
        ops::LIST_TASKS => {
            let list = TaskList {
                tasks: tasks::list(conn, scope, &args::<ListTasks>(request)?)?
                    .iter()
                    .map(tasks::Task::view)
                    .collect(),
            };
            let body = serde_json::to_value(list)
                .map_err(|e| TaskError::Db(DbError::Malformed(format!("task list: {e}"))))?;
            Ok((body, false))
        }
        other => Err(TaskError::Invalid(format!(
            "unknown request op {other:?}; this host knows {}",
            [
                ops::SCHEDULE_TASK,
                ops::LIST_TASKS,
                ops::UPDATE_TASK,
                ops::PAUSE_TASK,
                ops::RESUME_TASK,
                ops::CANCEL_TASK
            ]
            .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    fn setup() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('a', 'A', 'a', 'x');
             INSERT INTO messaging_groups (id, channel_type, platform_id, created_at)
                 VALUES ('m', 'cli', 'local', 'x');
             INSERT INTO sessions (id, agent_group_id, messaging_group_id, last_activity, created_at)
                 VALUES ('s', 'a', 'm', 'x', 'x');",
        )
        .unwrap();
        (dir, conn)
    }

    fn asker(waiting: bool) -> Asker {
        Asker {
            agent_id: "a".into(),
            session_id: "s".into(),
            requested_by: Some("cli:local".into()),
            waiting,
        }
    }

    fn request(seq: i64, op: &str, args: Value) -> Request {
        Request {
            seq,
            op: op.into(),
            args,
            created_at: Utc::now(),
        }
    }

    fn tasks_stored(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_request_handled_twice_is_applied_once_with_the_same_answer() {
        let (_dir, mut conn) = setup();
        let now = Utc::now();
        let req = request(
            3,
            ops::SCHEDULE_TASK,
            json!({ "prompt": "x", "cron": "0 9 * * *" }),
        );
        let (first, changed) = handle(&mut conn, &asker(true), &req, Tz::UTC, now).unwrap();
        assert!(first.ok && changed, "{first:?}");
        assert_eq!(first.body["cron"], "0 9 * * *");
        assert_eq!(first.body["requested_by"], "cli:local");
        // The host crashed before the answer reached the inbox, and handles it again.
        let (again, changed) = handle(&mut conn, &asker(true), &req, Tz::UTC, now).unwrap();
        assert_eq!((again, changed), (first, false));
        assert_eq!(tasks_stored(&conn), 1);
    }

    #[test]
    fn a_request_whose_runner_is_gone_is_not_applied() {
        let (_dir, mut conn) = setup();
        let req = request(
            3,
            ops::SCHEDULE_TASK,
            json!({ "prompt": "x", "process_after": "+1h" }),
        );
        let (answer, changed) =
            handle(&mut conn, &asker(false), &req, Tz::UTC, Utc::now()).unwrap();
        assert!(!answer.ok && !changed);
        assert_eq!(answer.body["code"], "asker_gone");
        assert_eq!(tasks_stored(&conn), 0);
    }

    #[test]
    fn refusals_carry_the_reason_and_a_code() {
        let (_dir, mut conn) = setup();
        let table = [
            (
                ops::SCHEDULE_TASK,
                json!({ "prompt": "x", "cron": "0 9 * *" }),
                "invalid_cron",
            ),
            (
                ops::SCHEDULE_TASK,
                json!({ "prompt": 5 }),
                "invalid_arguments",
            ),
            (
                ops::SCHEDULE_TASK,
                json!({ "prompt": "x", "cron": "0 9 * * *", "every": "day" }),
                "invalid_arguments",
            ),
            (
                ops::CANCEL_TASK,
                json!({ "task_id": "task-none" }),
                "unknown_task",
            ),
            (ops::PAUSE_TASK, json!({}), "invalid_arguments"),
            ("format_disk", json!({}), "invalid_arguments"),
        ];
        for (i, (op, args, code)) in table.into_iter().enumerate() {
            let req = request(2 * i as i64 + 1, op, args.clone());
            let (answer, _) = handle(&mut conn, &asker(true), &req, Tz::UTC, Utc::now()).unwrap();
            assert!(!answer.ok, "{op} {args}");
            assert_eq!(answer.body["code"], code, "{op} {args}: {}", answer.body);
            assert!(answer.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let (answer, _) = handle(
            &mut conn,
            &asker(true),
            &request(99, "format_disk", json!({})),
            Tz::UTC,
            Utc::now(),
        )
        .unwrap();
        assert!(
            answer.body["error"]
                .as_str()
                .unwrap()
                .starts_with("unknown request op \"format_disk\""),
            "{}",
            answer.body
        );
        assert_eq!(tasks_stored(&conn), 0);
    }
}
