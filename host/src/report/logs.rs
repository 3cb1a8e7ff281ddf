//! `clawbox logs`: one session's story as a time-ordered stream of [`LogEntry`]s, merged from
//! what its two databases record — messages in (`messages_in`), claims and verdicts (`acks`),
//! the runner's event log (its start, model steps with tokens and latency, tool calls with
//! duration and outcome), replies (`messages_out`), deliveries (`delivery`) and the host's event
//! log (re-queues, failures, delivery errors, runner exits). Read-only, so it works the same
//! with the host running or not.
//!
//! A [`LogReader`] keeps a cursor per source and returns only what is new on each
//! [`LogReader::poll`], which is what `--follow` repeats (woken by the host's change
//! announcements, or on a timer without a host). Entries are ordered by time, then by a fixed
//! rank of their kind (a step's model event before its tool calls, a reply before its verdict),
//! then by row id. Each entry has a stable `id` (`in:2`, `ack:7`, `run:12`, `host:3`, `out:5`,
//! `dlv:5`), so a client can drop what it has already shown.
//!
//! A retired session has no files left to read; [`retirement`] says when it was retired and
//! where its archive is, which `clawbox logs` prints instead of an empty log.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use mailbox::{
    AckStatus, DeliveryStatus, HostEvent, InboundKind, InboundReader, OutboundKind, OutboundReader,
    Route, RunnerEvent, SessionPaths,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::DbError;
use crate::report::inspect::{self, InspectError};
use crate::session::outlet::attachment_names;

/// One thing that happened in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Stable across reads: the source and its row (`in:2`, `ack:7`, `run:12`, …).
    pub id: String,
    pub session_id: String,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: LogEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEvent {
    /// A message reached the session (`kind`: chat, task, or a system notice from the host).
    MessageIn {
        seq: i64,
        kind: InboundKind,
        sender: Option<String>,
        text: String,
        /// `false`: context only, it does not start a turn by itself.
        trigger: bool,
    },
    /// The runner took a message into a turn (attempt 2+ after a re-queue).
    Claimed {
        seq: i64,
        attempt: u32,
    },
    RunnerStarted {
        pid: u32,
        model: String,
    },
    RunnerReady {
        tools: u32,
        problems: Vec<String>,
    },
    ModelStep {
        turn: i64,
        step: u32,
        latency_ms: u64,
        attempts: u32,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        tool_calls: u32,
        finish_reason: Option<String>,
    },
    ModelFailed {
        turn: i64,
        step: u32,
        latency_ms: u64,
        error: String,
    },
    ToolCall {
        turn: i64,
        step: u32,
        call_id: String,
        tool: String,
        duration_ms: u64,
        ok: bool,
        error: Option<String>,
        /// The call's arguments and the start of its result, shortened by the runner (`None`
        /// from runners that predate them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// The conversation was compacted: `replaced` history entries became one summary, `kept`
    /// stayed word for word, the history's tokens before and after; `turn` is `None` for
    /// `/compact`. `archive` holds what was replaced (relative to the workspace).
    Compacted {
        turn: Option<i64>,
        replaced: u32,
        kept: u32,
        tokens_before: u64,
        tokens_after: u64,
        archive: String,
    },
    /// The agent wrote a message; `to` is set when it goes elsewhere than the session's chat.
    Reply {
        seq: i64,
        in_reply_to: Option<i64>,
        text: String,
        files: Vec<String>,
        to: Option<String>,
    },
    Edit {
        seq: i64,
        edit_of: Option<i64>,
        text: String,
    },
    Reaction {
        seq: i64,
        reaction_to: Option<i64>,
        emoji: String,
    },
    /// A tool asked the host to act (`op`, e.g. `schedule_task`).
    Request {
        seq: i64,
        op: String,
    },
    /// The message got its answer.
    Completed {
        seq: i64,
    },
    /// The message failed: a runner verdict, or the host gave up on it.
    Failed {
        seq: i64,
        error: Option<String>,
    },
    /// The attempt ended without a verdict; another follows at `retry_at`.
    Requeued {
        seq: i64,
        tries: u32,
        retry_at: DateTime<Utc>,
        reason: String,
    },
    Delivered {
        seq: i64,
        attempts: u32,
    },
    DeliveryFailed {
        seq: i64,
        error: String,
        gave_up: bool,
    },
    RunnerExited {
        runner: String,
        exit: String,
        reason: Option<String>,
        unexpected: bool,
    },
}

impl LogEvent {
    /// Order among entries stamped the same millisecond.
    fn rank(&self) -> u8 {
        match self {
            LogEvent::MessageIn { .. } => 0,
            LogEvent::RunnerStarted { .. } => 1,
            LogEvent::RunnerReady { .. } => 2,
            LogEvent::Claimed { .. } => 3,
            LogEvent::ModelStep { .. } => 4,
            LogEvent::ToolCall { .. } => 5,
            LogEvent::ModelFailed { .. } | LogEvent::Compacted { .. } => 6,
            LogEvent::Reply { .. }
            | LogEvent::Edit { .. }
            | LogEvent::Reaction { .. }
            | LogEvent::Request { .. } => 7,
            LogEvent::Completed { .. } | LogEvent::Failed { .. } => 8,
            LogEvent::Delivered { .. } | LogEvent::DeliveryFailed { .. } => 9,
            LogEvent::Requeued { .. } => 10,
            LogEvent::RunnerExited { .. } => 11,
        }
    }
}

/// Deliveries are read again from this long before the last read: a record stamped just before
/// a read may commit just after it.
const DELIVERY_OVERLAP: chrono::Duration = chrono::Duration::seconds(10);

/// Reads a session's log incrementally.
pub struct LogReader {
    session_id: String,
    paths: SessionPaths,
    inbound: Option<InboundReader>,
    outbound: Option<OutboundReader>,
    /// The session's own chat (a reply elsewhere says where it went).
    origin: Option<Route>,
    in_seq: i64,
    ack_id: i64,
    event_id: i64,
    host_id: i64,
    out_seq: i64,
    delivered: HashSet<i64>,
    deliveries_read: Option<DateTime<Utc>>,
}

impl LogReader {
    pub fn new(session_id: &str, paths: SessionPaths) -> Self {
        LogReader {
            session_id: session_id.to_owned(),
            paths,
            inbound: None,
            outbound: None,
            origin: None,
            in_seq: 0,
            ack_id: 0,
            event_id: 0,
            host_id: 0,
            out_seq: 0,
            delivered: HashSet::new(),
            deliveries_read: None,
        }
    }

    /// The reader of the session `arg` names (see [`inspect::resolve_session`]).
    pub fn open(
        conn: &rusqlite::Connection,
        config: &Config,
        arg: &str,
    ) -> Result<LogReader, InspectError> {
        let view = inspect::resolve_session(conn, arg)?;
        let paths = SessionPaths::for_session(
            &config.sessions_dir(),
            &view.session.agent_group_id,
            &view.session.id,
        )
        // Ids in the database passed this check when their session was created.
        .map_err(|e| DbError::Malformed(e.to_string()))?;
        Ok(LogReader::new(&view.session.id, paths))
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Everything new since the last call (everything on the first), in order.
    pub fn poll(&mut self) -> mailbox::Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        self.open_files()?;
        if let Some(inbound) = &self.inbound {
            if self.origin.is_none() {
                self.origin = inbound.routing()?;
            }
            for m in inbound.messages_after(self.in_seq)? {
                self.in_seq = self.in_seq.max(m.seq);
                let text = match m.kind {
                    InboundKind::Task => m.content.get("prompt").and_then(|p| p.as_str()),
                    InboundKind::Chat | InboundKind::System => m.text(),
                };
                entries.push(self.entry(
                    format!("in:{}", m.seq),
                    m.created_at,
                    LogEvent::MessageIn {
                        seq: m.seq,
                        kind: m.kind,
                        sender: m.sender_name.clone().or(m.sender_id.clone()),
                        text: text.unwrap_or_default().to_owned(),
                        trigger: m.trigger,
                    },
                ));
            }
            for e in inbound.host_events_after(self.host_id, u32::MAX)? {
                self.host_id = self.host_id.max(e.id);
                let event = match e.event {
                    HostEvent::Requeued {
                        seq,
                        tries,
                        retry_at,
                        reason,
                    } => LogEvent::Requeued {
                        seq,
                        tries,
                        retry_at,
                        reason,
                    },
                    HostEvent::Failed { seq, error } => LogEvent::Failed {
                        seq,
                        error: Some(error),
                    },
                    HostEvent::DeliveryFailed {
                        out_seq,
                        error,
                        gave_up,
                    } => LogEvent::DeliveryFailed {
                        seq: out_seq,
                        error,
                        gave_up,
                    },
                    HostEvent::RunnerExited {
                        runner,
                        exit,
                        reason,
                        unexpected,
                    } => LogEvent::RunnerExited {
                        runner,
                        exit,
                        reason,
                        unexpected,
                    },
                    // Written by a newer host; nothing this build can say about it.
                    HostEvent::Unknown => continue,
                };
                entries.push(self.entry(format!("host:{}", e.id), e.at, event));
            }
            let since = self
                .deliveries_read
                .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t - DELIVERY_OVERLAP);
            self.deliveries_read = Some(Utc::now());
            for d in inbound.deliveries_since(since)? {
                if d.status != DeliveryStatus::Delivered || !self.delivered.insert(d.out_seq) {
                    continue;
                }
                entries.push(self.entry(
                    format!("dlv:{}", d.out_seq),
                    d.updated_at,
                    LogEvent::Delivered {
                        seq: d.out_seq,
                        attempts: d.attempts,
                    },
                ));
            }
        }
        if let Some(outbound) = &self.outbound {
            for a in outbound.acks_after(self.ack_id)? {
                self.ack_id = self.ack_id.max(a.id);
                let event = match a.status {
                    AckStatus::Processing => LogEvent::Claimed {
                        seq: a.message_seq,
                        attempt: a.attempt,
                    },
                    AckStatus::Completed => LogEvent::Completed { seq: a.message_seq },
                    AckStatus::Failed => LogEvent::Failed {
                        seq: a.message_seq,
                        error: a.error.clone(),
                    },
                };
                entries.push(self.entry(format!("ack:{}", a.id), a.at, event));
            }
            for e in outbound.events_after(self.event_id, u32::MAX)? {
                self.event_id = self.event_id.max(e.id);
                let event = match e.event {
                    RunnerEvent::Started { pid, model } => LogEvent::RunnerStarted { pid, model },
                    RunnerEvent::Ready { tools, problems } => {
                        LogEvent::RunnerReady { tools, problems }
                    }
                    RunnerEvent::ModelStep {
                        turn,
                        step,
                        latency_ms,
                        attempts,
                        prompt_tokens,
                        completion_tokens,
                        tool_calls,
                        finish_reason,
                    } => LogEvent::ModelStep {
                        turn,
                        step,
                        latency_ms,
                        attempts,
                        prompt_tokens,
                        completion_tokens,
                        tool_calls,
                        finish_reason,
                    },
                    RunnerEvent::ModelFailed {
                        turn,
                        step,
                        latency_ms,
                        error,
                    } => LogEvent::ModelFailed {
                        turn,
                        step,
                        latency_ms,
                        error,
                    },
                    RunnerEvent::ToolCall {
                        turn,
                        step,
                        call_id,
                        tool,
                        duration_ms,
                        ok,
                        error,
                        arguments,
                        result,
                    } => LogEvent::ToolCall {
                        turn,
                        step,
                        call_id,
                        tool,
                        duration_ms,
                        ok,
                        error,
                        arguments,
                        result,
                    },
                    RunnerEvent::Compacted {
                        turn,
                        replaced,
                        kept,
                        tokens_before,
                        tokens_after,
                        archive,
                    } => LogEvent::Compacted {
                        turn,
                        replaced,
                        kept,
                        tokens_before,
                        tokens_after,
                        archive,
                    },
                    // Written by a newer runner.
                    RunnerEvent::Unknown => continue,
                };
                entries.push(self.entry(format!("run:{}", e.id), e.at, event));
            }
            for m in outbound.messages_after(self.out_seq)? {
                self.out_seq = self.out_seq.max(m.seq);
                let number = |field: &str| m.content.get(field).and_then(|v| v.as_i64());
                let text = m.text().unwrap_or_default().to_owned();
                let event = match m.kind {
                    OutboundKind::Chat => LogEvent::Reply {
                        seq: m.seq,
                        in_reply_to: m.in_reply_to,
                        files: attachment_names(&m),
                        to: match &self.origin {
                            Some(origin)
                                if origin.channel_type == m.route.channel_type
                                    && origin.platform_id == m.route.platform_id =>
                            {
                                None
                            }
                            _ => Some(format!("{}:{}", m.route.channel_type, m.route.platform_id)),
                        },
                        text,
                    },
                    OutboundKind::Edit => LogEvent::Edit {
                        seq: m.seq,
                        edit_of: number("edit_of"),
                        text,
                    },
                    OutboundKind::Reaction => LogEvent::Reaction {
                        seq: m.seq,
                        reaction_to: number("reaction_to"),
                        emoji: m
                            .content
                            .get("emoji")
                            .and_then(|e| e.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                    },
                    OutboundKind::Request => LogEvent::Request {
                        seq: m.seq,
                        op: m
                            .content
                            .get("op")
                            .and_then(|o| o.as_str())
                            .unwrap_or("?")
                            .to_owned(),
                    },
                };
                entries.push(self.entry(format!("out:{}", m.seq), m.created_at, event));
            }
        }
        sort(&mut entries);
        Ok(entries)
    }

    /// Opens each database once it exists (the runner creates `outbound.db` on its first start).
    fn open_files(&mut self) -> mailbox::Result<()> {
        if self.inbound.is_none() && self.paths.inbound_db().exists() {
            self.inbound = Some(InboundReader::open(&self.paths.inbound_db())?);
        }
        if self.outbound.is_none() && self.paths.outbound_db().exists() {
            let reader = OutboundReader::open(&self.paths.outbound_db())?;
            if reader.is_ready()? {
                self.outbound = Some(reader);
            }
        }
        Ok(())
    }

    fn entry(&self, id: String, at: DateTime<Utc>, event: LogEvent) -> LogEntry {
        LogEntry {
            id,
            session_id: self.session_id.clone(),
            at,
            event,
        }
    }
}

/// A session that retention retired (`session/retention.rs`): its folder is gone (or going), its
/// history is in `archive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retirement {
    pub session_id: String,
    /// `None` for sessions retired before clawbox recorded the time.
    pub retired_at: Option<DateTime<Utc>>,
    pub last_activity: DateTime<Utc>,
    /// `GROUPS_DIR/<agent folder>/conversations/<session id>/`.
    pub archive: std::path::PathBuf,
    /// `false` while the removal of its folder is still to be finished.
    pub removed: bool,
}

/// The retirement of the session `arg` names (see [`inspect::resolve_session`]), `None` when
/// it was not retired.
pub fn retirement(
    conn: &rusqlite::Connection,
    config: &Config,
    arg: &str,
) -> Result<Option<Retirement>, InspectError> {
    let view = inspect::resolve_session(conn, arg)?;
    let (retired, retired_at, folder): (Option<String>, Option<String>, String) = conn
        .query_row(
            "SELECT s.retired, s.retired_at, a.folder FROM sessions s
             JOIN agent_groups a ON a.id = s.agent_group_id WHERE s.id = ?1",
            [&view.session.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(DbError::from)?;
    let Some(retired) = retired else {
        return Ok(None);
    };
    let retired_at = retired_at.map(|at| crate::db::parse_ts(&at)).transpose()?;
    Ok(Some(Retirement {
        archive: config
            .groups_dir
            .join(folder)
            .join(mailbox::archive::ARCHIVE_DIR)
            .join(&view.session.id),
        session_id: view.session.id,
        retired_at,
        last_activity: view.session.last_activity,
        removed: retired == "done",
    }))
}

impl Retirement {
    /// What `clawbox logs` says of it, times in `tz`.
    pub fn describe(&self, tz: chrono_tz::Tz) -> String {
        let time = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
        let when = match self.retired_at {
            Some(at) => format!("on {}", time(at)),
            None => "(the time was not recorded)".to_owned(),
        };
        let removal = if self.removed {
            "its files were removed"
        } else {
            "the removal of its files is finished by the next retention pass"
        };
        format!(
            "session {} was retired {when} for inactivity (last activity {}); {removal}, and its \
             conversation is archived in {}/ . The chat's next message starts a new session.",
            self.session_id,
            time(self.last_activity),
            self.archive.display(),
        )
    }
}

/// Time order; same-millisecond entries by kind, then by their row number.
pub fn sort(entries: &mut [LogEntry]) {
    entries.sort_by(|a, b| {
        (a.at, a.event.rank(), row_of(&a.id)).cmp(&(b.at, b.event.rank(), row_of(&b.id)))
    });
}

fn row_of(id: &str) -> i64 {
    id.rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The last `tail` entries (all with `None`).
pub fn keep_tail(mut entries: Vec<LogEntry>, tail: Option<usize>) -> Vec<LogEntry> {
    if let Some(n) = tail
        && entries.len() > n
    {
        entries.drain(..entries.len() - n);
    }
    entries
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(id: &str, secs: i64, event: LogEvent) -> LogEntry {
        LogEntry {
            id: id.to_owned(),
            session_id: "s".into(),
            at: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs),
            event,
        }
    }

    #[test]
    fn order_is_time_then_kind_then_row() {
        let step = LogEvent::ModelStep {
            turn: 2,
            step: 1,
            latency_ms: 5,
            attempts: 1,
            prompt_tokens: None,
            completion_tokens: None,
            tool_calls: 0,
            finish_reason: None,
        };
        let reply = LogEvent::Reply {
            seq: 3,
            in_reply_to: Some(2),
            text: "hi".into(),
            files: vec![],
            to: None,
        };
        let mut entries = vec![
            entry("ack:9", 5, LogEvent::Completed { seq: 2 }),
            entry("out:3", 5, reply),
            entry("run:10", 5, step),
            entry("ack:2", 1, LogEvent::Claimed { seq: 2, attempt: 1 }),
            entry("in:4", 6, LogEvent::Claimed { seq: 4, attempt: 1 }),
            entry(
                "in:10",
                6,
                LogEvent::Claimed {
                    seq: 10,
                    attempt: 1,
                },
            ),
        ];
        sort(&mut entries);
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["ack:2", "run:10", "out:3", "ack:9", "in:4", "in:10"]);
        let tail = keep_tail(entries.clone(), Some(2));
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0].id, "in:4");
        assert_eq!(keep_tail(entries, None).len(), 6);
    }

    #[test]
    fn entries_are_flat_json_tagged_by_event() {
        let e = entry("in:2", 0, LogEvent::Completed { seq: 2 });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "in:2", "session_id": "s", "at": "1970-01-01T00:00:00Z",
                "event": "completed", "seq": 2
            })
        );
        assert_eq!(serde_json::from_value::<LogEntry>(json).unwrap(), e);
    }
}
