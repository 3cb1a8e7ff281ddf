//! The admin socket's wire format: one JSON object per line in each direction. A terminal
//! sends [`Request`]s; the host answers and pushes [`Event`]s (chat events included).

use mailbox::tasks::TaskView;
use serde::{Deserialize, Serialize};

use crate::channels::cli::ChatEvent;
use crate::tasks::TaskRunView;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Become a terminal of the CLI chat: replies and verdicts are pushed from now on.
    Attach,
    /// Send a chat message as `cli:local`.
    Send { text: String },
    /// A snapshot of the host, sessions and runners.
    Status,
    /// Every agent's scheduled tasks (`all`: cancelled and completed ones too). Answer: `tasks`.
    TaskList {
        #[serde(default)]
        all: bool,
    },
    /// One task with its recent runs. Answer: `task`.
    TaskShow { id: String },
    /// Answer: `task`.
    TaskPause { id: String },
    /// Answer: `task`.
    TaskResume { id: String },
    /// Answer: `task`.
    TaskCancel { id: String },
    /// Fire one run of the task now (skipped while its previous run is pending). Answer:
    /// `task_run`.
    TaskRunNow { id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Attached {
        agent: String,
        runtime: String,
        isolated: bool,
    },
    Accepted {
        session_id: String,
        seq: i64,
    },
    Rejected {
        reason: String,
    },
    Status {
        status: serde_json::Value,
    },
    Error {
        message: String,
    },
    Tasks {
        tasks: Vec<TaskView>,
    },
    Task {
        task: TaskView,
        /// The latest runs, newest first (`task_show` only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        runs: Vec<TaskRunView>,
    },
    TaskRun {
        task: TaskView,
        run: TaskRunView,
    },
    /// Chat events carry their own `event` tag (serde tries the variants above first).
    #[serde(untagged)]
    Chat(ChatEvent),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Send { text: "hi".into() }).unwrap(),
            r#"{"op":"send","text":"hi"}"#
        );
        let ev = Event::Chat(ChatEvent::Notice { text: "x".into() });
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(line, r#"{"event":"notice","text":"x"}"#);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
        let acc = Event::Accepted {
            session_id: "s".into(),
            seq: 2,
        };
        let line = serde_json::to_string(&acc).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), acc);
        assert_eq!(
            serde_json::to_string(&Request::TaskRunNow {
                id: "task-1".into()
            })
            .unwrap(),
            r#"{"op":"task_run_now","id":"task-1"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"task_list"}"#).unwrap(),
            Request::TaskList { all: false }
        );
        let tasks = Event::Tasks { tasks: vec![] };
        let line = serde_json::to_string(&tasks).unwrap();
        assert_eq!(line, r#"{"event":"tasks","tasks":[]}"#);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), tasks);
    }
}
