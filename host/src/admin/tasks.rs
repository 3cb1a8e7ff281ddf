//! The admin socket's task requests (`task_list`, `task_show`, `task_pause`, …): applied to the
//! central database and the scheduler of a running host, or — through [`execute`] — by
//! `clawbox tasks` itself when no host runs. Task rules are `db::tasks`'s and `scheduler`'s.

use mailbox::tasks::ListTasks;

use super::HostCtx;
use super::protocol::{Event, Request};
use crate::HostError;
use crate::db::Db;
use crate::db::tasks::{self, Scope};
use crate::scheduler::Scheduler;

/// Runs shown by `show`.
const SHOWN_RUNS: u32 = 20;

/// Applies a task request of the admin protocol. `None` for a request that is not about tasks.
pub async fn execute(
    db: &Db,
    scheduler: &Scheduler,
    request: Request,
) -> Option<Result<Event, HostError>> {
    type Op = fn(
        &rusqlite::Connection,
        Scope<'_>,
        &str,
        chrono::DateTime<chrono::Utc>,
    ) -> Result<tasks::Task, tasks::TaskError>;
    let change = |id: String, op: Op| async move {
        let task = db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let result = op(&tx, Scope::Operator, &id, chrono::Utc::now());
                if result.is_ok() {
                    tx.commit()?;
                }
                Ok(result)
            })
            .await??;
        scheduler.signal().notify();
        Ok(Event::Task {
            task: task.view(),
            runs: Vec::new(),
        })
    };
    Some(match request {
        Request::TaskList { all } => {
            let filter = ListTasks {
                status: all.then(|| "all".to_owned()),
            };
            db.call(move |conn| Ok(tasks::list(conn, Scope::Operator, &filter)))
                .await
                .map_err(HostError::from)
                .and_then(|r| r.map_err(HostError::from))
                .map(|list| Event::Tasks {
                    tasks: list.iter().map(tasks::Task::view).collect(),
                })
        }
        Request::TaskShow { id } => db
            .call(move |conn| {
                Ok(tasks::get(conn, Scope::Operator, &id).and_then(|task| {
                    let runs = tasks::runs(conn, &task.id, SHOWN_RUNS)?;
                    Ok((task, runs))
                }))
            })
            .await
            .map_err(HostError::from)
            .and_then(|r| r.map_err(HostError::from))
            .map(|(task, runs)| Event::Task {
                runs: runs.iter().map(|r| r.view(task.timezone)).collect(),
                task: task.view(),
            }),
        Request::TaskPause { id } => change(id, tasks::pause).await,
        Request::TaskResume { id } => change(id, tasks::resume).await,
        Request::TaskCancel { id } => change(id, tasks::cancel).await,
        Request::TaskRunNow { id } => {
            scheduler
                .run_now(&id)
                .await
                .map(|(task, run)| Event::TaskRun {
                    run: run.view(task.timezone),
                    task: task.view(),
                })
        }
        Request::Attach
        | Request::Send { .. }
        | Request::Answer { .. }
        | Request::Status
        | Request::Activity
        | Request::Sessions
        | Request::Agents
        | Request::Logs { .. }
        | Request::Dropped { .. }
        | Request::Doctor => return None,
    })
}

/// The admin socket's handler for task requests of a running host.
pub async fn handle(ctx: &HostCtx, request: Request) -> Event {
    match execute(&ctx.db, &ctx.scheduler, request).await {
        Some(Ok(event)) => event,
        Some(Err(e)) => Event::Error {
            message: e.to_string(),
        },
        None => Event::Error {
            message: "not a task request".into(),
        },
    }
}
