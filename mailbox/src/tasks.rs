//! The scheduled-task requests a container may send the host ([`crate::request`]): their `op`
//! names, their arguments, and the task as the host answers with it. mcp-tools writes these;
//! the host validates and applies them (host/src/tasks.rs) and `clawbox tasks` shows the same
//! [`TaskView`]. Validation (times, cron, time zones) is the host's: these types only carry text.

use serde::{Deserialize, Serialize};

/// `op` of [`ScheduleTask`].
pub const SCHEDULE_TASK: &str = "schedule_task";
/// `op` of [`ListTasks`].
pub const LIST_TASKS: &str = "list_tasks";
/// `op` of [`UpdateTask`].
pub const UPDATE_TASK: &str = "update_task";
/// `op` of a [`TaskRef`]: pause an active task.
pub const PAUSE_TASK: &str = "pause_task";
/// `op` of a [`TaskRef`]: resume a paused task.
pub const RESUME_TASK: &str = "resume_task";
/// `op` of a [`TaskRef`]: cancel a task for good.
pub const CANCEL_TASK: &str = "cancel_task";

/// A new task. Exactly one of `process_after` (once) and `cron` (repeating) is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTask {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Changes to a task; absent fields stay as they are. `process_after` makes the task a
/// one-shot at that time, `cron` a repeating one; `cron: ""` ends the recurrence after the next
/// run, `script: ""` removes the script.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Names one task (pause, resume, cancel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    pub task_id: String,
}

/// Lists the agent's tasks; `status` filters (`active`, `paused`, `cancelled`, `completed`,
/// `all`); absent: active and paused ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The answer to [`ListTasks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Runs at `next_run`.
    Active,
    /// Kept, but does not run until resumed.
    Paused,
    /// Ended for good by the agent or the operator; never runs again.
    Cancelled,
    /// A one-shot that has fired.
    Completed,
}

/// How one scheduled run ended (the run history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// The task message is in the session's inbox; the verdict is not in yet.
    Fired,
    /// Not fired: the previous run of the task was still pending.
    SkippedOverlap,
    /// The script said `wakeAgent: false`; the model was not called.
    ScriptFalse,
    /// The script failed (exit status, timeout, output that is not the JSON contract); the
    /// model was not called.
    ScriptError,
    /// The agent answered.
    Completed,
    /// The run failed (the model, the runner, the mailbox); a repeating task runs again.
    Failed,
}

macro_rules! names {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(TaskStatus {
    Active = "active",
    Paused = "paused",
    Cancelled = "cancelled",
    Completed = "completed",
});

names!(RunOutcome {
    Fired = "fired",
    SkippedOverlap = "skipped-overlap",
    ScriptFalse = "script-false",
    ScriptError = "script-error",
    Completed = "completed",
    Failed = "failed",
});

/// What a task's script decided, as the runner reports it to the host in the verdict's
/// [`crate::Ack::detail`] under `"script"` (see [`ScriptReport::detail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScriptReport {
    /// `{"wakeAgent": true}`: the model ran with the script's `data`.
    Wake,
    /// `{"wakeAgent": false}`: the run ended without calling the model.
    Skip,
    /// The script failed or broke the output contract; the run ended without the model.
    Error { reason: String },
}

impl ScriptReport {
    /// The verdict detail carrying this report.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "script": self })
    }

    /// The report in a verdict detail, if there is one.
    pub fn from_detail(detail: &serde_json::Value) -> Option<ScriptReport> {
        serde_json::from_value(detail.get("script")?.clone()).ok()
    }
}

/// An instant shown both ways: in the task's time zone and in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeView {
    /// `2026-12-24 09:00:00 CET (Europe/Berlin)`.
    pub local: String,
    /// RFC 3339, `2026-12-24T08:00:00Z`.
    pub utc: String,
}

/// A task as the host stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub agent: String,
    /// The session whose chat gets the results.
    pub session: String,
    pub status: TaskStatus,
    pub prompt: String,
    pub script: Option<String>,
    /// Set for a repeating task.
    pub cron: Option<String>,
    /// Set for a one-shot: when it runs (or ran).
    pub run_at: Option<TimeView>,
    /// IANA zone of `cron` and of times given without an offset.
    pub timezone: String,
    /// The next run; none unless active.
    pub next_run: Option<TimeView>,
    /// The scheduled time of the latest run, and how it ended.
    pub last_run: Option<TimeView>,
    pub last_outcome: Option<RunOutcome>,
    /// Runs fired so far (skipped ones not counted).
    pub run_count: u32,
    /// `agent:<id>` for tasks an agent scheduled.
    pub created_by: String,
    /// Who the agent was answering when it scheduled the task (a user id such as
    /// `telegram:42`, or `task:<id>` when another task's run scheduled it), when known.
    pub requested_by: Option<String>,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), *status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        for outcome in RunOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<RunOutcome>().unwrap(), *outcome);
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
        assert!("skipped_overlap".parse::<RunOutcome>().is_err());
    }

    #[test]
    fn script_reports_round_trip_through_a_detail() {
        for report in [
            ScriptReport::Wake,
            ScriptReport::Skip,
            ScriptReport::Error {
                reason: "exit status 2".into(),
            },
        ] {
            assert_eq!(ScriptReport::from_detail(&report.detail()), Some(report));
        }
        assert_eq!(
            ScriptReport::Skip.detail(),
            serde_json::json!({ "script": { "outcome": "skip" } })
        );
        assert_eq!(ScriptReport::from_detail(&serde_json::json!({})), None);
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let err = serde_json::from_value::<ScheduleTask>(
            serde_json::json!({ "prompt": "x", "recurrence": "0 9 * * *" }),
        )
        .unwrap_err();
        assert!(err.to_string().contains("recurrence"), "{err}");
        let args: UpdateTask =
            serde_json::from_value(serde_json::json!({ "task_id": "t", "cron": "" })).unwrap();
        assert_eq!(args.cron.as_deref(), Some(""));
        assert_eq!(args.prompt, None);
    }
}
