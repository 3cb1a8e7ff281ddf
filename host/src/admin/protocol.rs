//! The admin socket's wire format (`DATA_DIR/clawbox.sock`, documented for clients in
//! `docs/admin-protocol.md`): one JSON object per line in each direction. A client sends
//! [`Request`]s, tagged by `op`; the host answers each with one [`Event`], tagged by `event`,
//! in request order — except `logs` with `follow`, which keeps sending `logs` batches until the
//! client hangs up, and `attach`, after which chat events arrive whenever the agents write.
//!
//! A line that is not a request gets an `error` event saying why, and the connection stays
//! usable. Variants are only ever added: a client may rely on every field it knows.
//!
//! | request | answer |
//! |---|---|
//! | `attach` | `attached`, then chat events (`reply`, `reaction`, `done`, `notice`) |
//! | `send {text}` | `accepted` or `rejected` |
//! | `activity` | `activity` |
//! | `status` | `status` |
//! | `sessions` | `sessions` |
//! | `agents` | `agents` |
//! | `logs {session, follow?, tail?}` | `logs` (then more `logs` batches with `follow`) |
//! | `dropped {limit?}` | `dropped` |
//! | `doctor` | `doctor` |

use mailbox::tasks::TaskView;
use serde::{Deserialize, Serialize};

use crate::channels::cli::ChatEvent;
use crate::report::doctor::DoctorReport;
use crate::report::inspect::{AgentList, DroppedList, SessionList, StatusReport};
use crate::report::logs::LogEntry;

/// `dropped` without a `limit`.
pub const DEFAULT_DROPPED_LIMIT: u32 = 50;
use crate::db::tasks::TaskRunView;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Become a terminal of the CLI chat: replies and verdicts are pushed from now on.
    Attach,
    /// Send a chat message as `cli:local`.
    Send { text: String },
    /// A snapshot of the host and its live sessions.
    Status,
    /// What the terminal chat's agent is doing, in the sentence `/status` answers (the
    /// terminal's live status line). Answer: `activity`.
    Activity,
    /// Answers an agent's question shown to the terminal (`choice`: 1-based option number).
    /// Answer: nothing on success (the `question_closed` chat event follows), `error` else.
    Answer { question_id: String, choice: usize },
    /// Every session, live or idle, with its counts.
    Sessions,
    /// Every agent with its wirings, destinations and roles.
    Agents,
    /// The event log of one session: `session` is its id, a unique part of it, or an agent id
    /// (that agent's most recent session). `tail`: only the last entries; `follow`: keep
    /// sending new entries until the connection closes.
    Logs {
        session: String,
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        tail: Option<usize>,
    },
    /// The audit of refused messages, newest first (`limit` defaults to 50).
    Dropped {
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Runs the health checks with the host's configuration.
    Doctor,
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
    /// The host answered the message itself (`/status`); no verdict follows.
    Answered {
        text: String,
    },
    Status {
        status: StatusReport,
    },
    /// The answer to `activity`.
    Activity {
        text: String,
    },
    Sessions {
        sessions: SessionList,
    },
    Agents {
        agents: AgentList,
    },
    /// A batch of log entries of the session `session_id`, oldest first.
    Logs {
        session_id: String,
        entries: Vec<LogEntry>,
    },
    Dropped {
        dropped: DroppedList,
    },
    Doctor {
        doctor: DoctorReport,
    },
    /// A request could not be served (malformed, unknown session, a database error); the
    /// connection stays usable.
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

/// Parses one request line, or says what is wrong with it in words a client author can act on.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        format!(
            r#"malformed request: not JSON ({e}); send one object per line, e.g. {{"op":"status"}}"#
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(format!(
            r#"malformed request: expected a JSON object like {{"op":"status"}}, got {}"#,
            kind_of(&value)
        ));
    };
    let op = match object.get("op") {
        Some(serde_json::Value::String(op)) => op.clone(),
        Some(other) => {
            return Err(format!(
                "malformed request: \"op\" must be a string, got {}",
                kind_of(other)
            ));
        }
        None => return Err(r#"malformed request: no "op" field"#.to_owned()),
    };
    // serde names the known ops itself when `op` is unknown, and the field when one is wrong.
    serde_json::from_value(value).map_err(|e| format!("malformed request (op {op:?}): {e}"))
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
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
        let err = Event::Error {
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"event":"error","message":"m"}"#
        );
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

    #[test]
    fn requests_parse_with_their_defaults() {
        let table = [
            (r#"{"op":"status"}"#, Request::Status),
            (r#"{"op":"sessions"}"#, Request::Sessions),
            (r#"{"op":"agents"}"#, Request::Agents),
            (r#"{"op":"doctor"}"#, Request::Doctor),
            (r#"{"op":"dropped"}"#, Request::Dropped { limit: None }),
            (
                r#"{"op":"dropped","limit":5}"#,
                Request::Dropped { limit: Some(5) },
            ),
            (
                r#"{"op":"logs","session":"abc"}"#,
                Request::Logs {
                    session: "abc".into(),
                    follow: false,
                    tail: None,
                },
            ),
            (
                r#"{"op":"logs","session":"abc","follow":true,"tail":20}"#,
                Request::Logs {
                    session: "abc".into(),
                    follow: true,
                    tail: Some(20),
                },
            ),
            (r#"{"op":"attach"}"#, Request::Attach),
        ];
        for (line, want) in table {
            assert_eq!(parse_request(line).unwrap(), want, "{line}");
            // Every request serialises back to what parses into it.
            let again = serde_json::to_string(&want).unwrap();
            assert_eq!(parse_request(&again).unwrap(), want, "{again}");
        }
    }

    #[test]
    fn malformed_requests_are_explained() {
        let table = [
            ("status", "not JSON"),
            ("[1, 2]", "expected a JSON object"),
            (r#"{"text":"hi"}"#, r#"no "op" field"#),
            (r#"{"op":7}"#, r#""op" must be a string, got a number"#),
            (
                r#"{"op":"reboot"}"#,
                "unknown variant `reboot`, expected one of",
            ),
            (r#"{"op":"logs"}"#, "(op \"logs\"): missing field `session`"),
            (r#"{"op":"send","text":5}"#, "(op \"send\"): invalid type"),
        ];
        for (line, want) in table {
            let err = parse_request(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
        // The known ops are named for an unknown one.
        let err = parse_request(r#"{"op":"reboot"}"#).unwrap_err();
        for op in ["status", "sessions", "agents", "logs", "dropped", "doctor"] {
            assert!(err.contains(&format!("`{op}`")), "{err}");
        }
    }
}
