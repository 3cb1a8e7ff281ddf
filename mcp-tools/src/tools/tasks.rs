//! `schedule_task`, `list_tasks`, `update_task`, `pause_task`, `resume_task`, `cancel_task`.
//! Tasks live in the host's database, which the container cannot write: each call is a
//! request to the host (`mailbox::request`) that the host validates and applies, and the tool
//! returns what the host stored — or the host's precise refusal — never an optimistic guess.
//! Owns the tools' schemas and how answers read for the model; the rules are the host's
//! (host/src/tasks.rs, host/src/schedule.rs).

use std::time::Duration;

use chrono::Utc;
use mailbox::OutboundDb;
use mailbox::request::{self, WaitError, WaitOptions};
use mailbox::tasks::{
    self as ops, ListTasks, ScheduleTask, TaskList, TaskRef, TaskView, UpdateTask,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;
use serde_json::Value;

use super::message::new_message_id;
use super::{Context, Tools};
use crate::error::{ToolError, tool_result};

/// How long a tool waits for the host's answer (it normally comes within milliseconds).
pub const HOST_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

// Unknown fields are refused, not dropped: a `recurrence` the tool ignored would quietly turn a
// repeating task into a one-shot.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTaskArgs {
    /// What to do when the task runs, as an instruction to yourself. It comes back to you as a
    /// <task> message in this conversation, and your answer goes to this chat.
    pub prompt: String,
    /// Run once at this time: `2026-12-24 09:00` (local time in the task's time zone),
    /// `2026-12-24T09:00:00+01:00` or `…Z` (exactly that instant), or a delay such as `+10m`,
    /// `+2h`, `+1d`. Give this or `cron`.
    #[serde(default)]
    pub process_after: Option<String>,
    /// Run repeatedly: a cron expression in the task's time zone with 5 fields (minute hour
    /// day-of-month month day-of-week; `0 9 * * 1-5` = weekdays at 09:00) or 6 (seconds
    /// first). At most once a minute. Give this or `process_after`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A shell script run before each run, without waking you. Its last line of output must be
    /// JSON `{"wakeAgent": true|false, "data": …}`: false ends the run quietly, true wakes you
    /// with `data` next to the prompt. Use it for checks that usually need no action.
    #[serde(default)]
    pub script: Option<String>,
    /// IANA time zone of `cron` and of times without an offset, e.g. `Europe/Berlin`
    /// (default: the time zone in your context).
    #[serde(default)]
    pub timezone: Option<String>,
}

// Unknown fields are refused, not dropped: a `recurrence` the tool ignored would quietly turn a
// repeating task into a one-shot.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskArgs {
    /// The task's id.
    pub task_id: String,
    /// A new prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Make it a one-shot at this time (same forms as in schedule_task); ends a recurrence.
    #[serde(default)]
    pub process_after: Option<String>,
    /// Make it repeat on this cron expression; `""` ends the recurrence after the next run.
    #[serde(default)]
    pub cron: Option<String>,
    /// A new script; `""` removes the script.
    #[serde(default)]
    pub script: Option<String>,
    /// A new time zone for the cron expression and for times without an offset.
    #[serde(default)]
    pub timezone: Option<String>,
}

// Unknown fields are refused, not dropped: a `recurrence` the tool ignored would quietly turn a
// repeating task into a one-shot.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdArgs {
    /// The task's id.
    pub task_id: String,
}

// Unknown fields are refused, not dropped: a `recurrence` the tool ignored would quietly turn a
// repeating task into a one-shot.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// `active`, `paused`, `cancelled`, `completed` or `all` (default: active and paused).
    #[serde(default)]
    pub status: Option<String>,
}

#[tool_router(router = task_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Schedule a task: once at a time (`process_after`) or repeatedly \
                       (`cron`). When it runs, `prompt` comes back to you as a <task> message \
                       in this conversation and your answer goes to this chat. Returns the task \
                       as stored, with its next run in local time and in UTC.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn schedule_task(
        &self,
        Parameters(args): Parameters<ScheduleTaskArgs>,
    ) -> CallToolResult {
        let args = ScheduleTask {
            prompt: args.prompt,
            process_after: args.process_after,
            cron: args.cron,
            script: args.script,
            timezone: args.timezone,
        };
        tool_result(
            "schedule_task",
            changed(&self.ctx, ops::SCHEDULE_TASK, &args, "scheduled").await,
        )
    }

    #[tool(
        description = "List your scheduled tasks with their schedule, next run, last run and \
                       its outcome.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_tasks(&self, Parameters(args): Parameters<ListTasksArgs>) -> CallToolResult {
        tool_result("list_tasks", list_tasks(&self.ctx, args).await)
    }

    #[tool(
        description = "Change a scheduled task: its prompt, script, time zone or schedule \
                       (`process_after` makes it a one-shot, `cron` a repeating task, `cron: \"\"` \
                       ends the recurrence after the next run). Only the fields you give \
                       change. Returns the task as stored.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn update_task(&self, Parameters(args): Parameters<UpdateTaskArgs>) -> CallToolResult {
        let args = UpdateTask {
            task_id: args.task_id,
            prompt: args.prompt,
            process_after: args.process_after,
            cron: args.cron,
            script: args.script,
            timezone: args.timezone,
        };
        tool_result(
            "update_task",
            changed(&self.ctx, ops::UPDATE_TASK, &args, "updated").await,
        )
    }

    #[tool(
        description = "Pause a scheduled task: it does not run until resume_task.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn pause_task(&self, Parameters(args): Parameters<TaskIdArgs>) -> CallToolResult {
        tool_result(
            "pause_task",
            changed(&self.ctx, ops::PAUSE_TASK, &task_ref(args), "paused").await,
        )
    }

    #[tool(
        description = "Resume a paused task. A repeating task continues with its next \
                       scheduled time (runs that fell into the pause are not made up).",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn resume_task(&self, Parameters(args): Parameters<TaskIdArgs>) -> CallToolResult {
        tool_result(
            "resume_task",
            changed(&self.ctx, ops::RESUME_TASK, &task_ref(args), "resumed").await,
        )
    }

    #[tool(
        description = "Cancel a scheduled task for good (a repeating one too: it never runs \
                       again).",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn cancel_task(&self, Parameters(args): Parameters<TaskIdArgs>) -> CallToolResult {
        tool_result(
            "cancel_task",
            changed(&self.ctx, ops::CANCEL_TASK, &task_ref(args), "cancelled").await,
        )
    }
}

fn task_ref(args: TaskIdArgs) -> TaskRef {
    TaskRef {
        task_id: args.task_id,
    }
}

/// Sends `op` to the host and waits for its answer: the body when it did what was asked, its
/// refusal as the error otherwise.
async fn ask(ctx: &Context, op: &'static str, args: Value) -> Result<Value, ToolError> {
    let session = ctx.session.clone();
    tokio::task::spawn_blocking(move || {
        let row = request::outbound(new_message_id(), op, args);
        let seq = OutboundDb::open(&session)?.insert_message(&row, Utc::now())?;
        tracing::info!(seq, op, "request written");
        let options = WaitOptions::with_timeout(HOST_ANSWER_TIMEOUT);
        match request::wait_for_response(&session.inbound_dir, seq, options) {
            Ok(answer) if answer.ok => Ok(answer.body),
            Ok(answer) => Err(ToolError::Refused(answer.error_text())),
            Err(WaitError::Timeout { waited, .. }) => Err(ToolError::HostTimeout(waited)),
            Err(WaitError::Mailbox(e)) => Err(ToolError::Mailbox(e)),
        }
    })
    .await?
}

/// A request that answers with the task it changed, described for the model.
async fn changed(
    ctx: &Context,
    op: &'static str,
    args: &impl serde::Serialize,
    verb: &str,
) -> Result<String, ToolError> {
    let args = serde_json::to_value(args).map_err(|e| ToolError::BadAnswer(e.to_string()))?;
    let body = ask(ctx, op, args).await?;
    let task: TaskView =
        serde_json::from_value(body).map_err(|e| ToolError::BadAnswer(e.to_string()))?;
    Ok(format!("{verb} {}\n{}", task.id, describe(&task)))
}

async fn list_tasks(ctx: &Context, args: ListTasksArgs) -> Result<String, ToolError> {
    let args = serde_json::to_value(ListTasks {
        status: args.status,
    })
    .map_err(|e| ToolError::BadAnswer(e.to_string()))?;
    let body = ask(ctx, ops::LIST_TASKS, args).await?;
    let list: TaskList =
        serde_json::from_value(body).map_err(|e| ToolError::BadAnswer(e.to_string()))?;
    if list.tasks.is_empty() {
        return Ok("no tasks".to_owned());
    }
    let mut out = format!(
        "{} task{}:",
        list.tasks.len(),
        if list.tasks.len() == 1 { "" } else { "s" }
    );
    for task in &list.tasks {
        out.push_str(&format!("\n\n{}\n{}", task.id, describe(task)));
    }
    Ok(out)
}

/// The task as the model reads it: one fact per line, times in the task's zone and in UTC.
pub fn describe(task: &TaskView) -> String {
    let mut lines = vec![format!("status: {}", task.status)];
    match (&task.cron, &task.run_at) {
        (Some(cron), _) => lines.push(format!("schedule: cron \"{cron}\" in {}", task.timezone)),
        (None, Some(at)) => lines.push(format!("schedule: once at {} = {}", at.local, at.utc)),
        (None, None) => {}
    }
    lines.push(match &task.next_run {
        Some(next) => format!("next run: {} = {}", next.local, next.utc),
        None => "next run: none".to_owned(),
    });
    if let Some(last) = &task.last_run {
        let outcome = task.last_outcome.map_or("-", |o| o.as_str());
        lines.push(format!(
            "last run: {} ({outcome}); {} run(s) so far",
            last.local, task.run_count
        ));
    }
    lines.push(format!("prompt: {}", task.prompt));
    if let Some(script) = &task.script {
        lines.push(format!("script: {} line(s)", script.lines().count()));
    }
    lines.join("\n")
}
