//! The two event logs of a session, read together by `clawbox logs`: the runner's
//! `outbound.events` ([`RunnerEvent`]: model steps, tool calls, its own start) and the host's
//! `inbound.host_events` ([`HostEvent`]: re-queues, failures, delivery errors, runner exits).
//! Each table has one writer, like the database it lives in. Facts other rows already record
//! (an inbound message, an ack, a reply, a delivery) are not repeated here; `clawbox logs`
//! merges them in.
//!
//! Rows are written inside transactions their writer commits anyway wherever possible (a
//! model step's event rides with the step's history, a re-queue's with the re-queue), so the
//! logs cost no extra fsyncs on the message path. Both logs keep the newest [`KEEP_EVENTS`]
//! rows; older ones are pruned when a runner starts or ends, and with the settled rows of a
//! live session (`retention.rs`).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sql::{parse_ts, ts};
use crate::{Error, Result};

/// Rows kept per log and session: the last hundred or so turns of an agent that calls a tool
/// at every step, about a thousand of one that mostly talks (one model step each).
pub const KEEP_EVENTS: i64 = 1_000;
/// The outbound schema version that added `events`.
pub(crate) const OUTBOUND_EVENTS_VERSION: i64 = 2;
/// The inbound schema version that added `host_events`.
pub(crate) const INBOUND_EVENTS_VERSION: i64 = 2;

/// Something the runner did (`outbound.events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// The runner process started.
    Started { pid: u32, model: String },
    /// Its MCP servers are up; `problems` are the servers (or `container.json` entries) that
    /// could not be used, one readable line each.
    Ready { tools: u32, problems: Vec<String> },
    /// One model request answered (`latency_ms` includes retries; `attempts` counts them).
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
    /// A model request that failed for good; the turn failed with `error`.
    ModelFailed {
        turn: i64,
        step: u32,
        latency_ms: u64,
        error: String,
    },
    /// One tool call, when it ended. `error` is the first line of a failed call's result;
    /// `arguments` and `result` are the call's arguments and the start of its result as the
    /// model saw them, shortened (absent in events of runners that predate them).
    ToolCall {
        turn: i64,
        step: u32,
        call_id: String,
        tool: String,
        duration_ms: u64,
        ok: bool,
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// The conversation was compacted, in the same transaction as the history: `replaced`
    /// entries became one summary, `kept` stayed word for word; the history's size in tokens
    /// before and after, and the archive of what was replaced (relative to the workspace).
    /// `turn` is the turn it happened in (`None`: `/compact`, between turns).
    Compacted {
        turn: Option<i64>,
        replaced: u32,
        kept: u32,
        tokens_before: u64,
        tokens_after: u64,
        archive: String,
    },
    /// A kind this build does not know (written by a newer runner).
    #[serde(other)]
    Unknown,
}

/// Something the host decided or observed about a session (`inbound.host_events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostEvent {
    /// A claim whose runner died or went silent waits for another attempt.
    Requeued {
        seq: i64,
        tries: u32,
        retry_at: DateTime<Utc>,
        reason: String,
    },
    /// A message failed without a runner verdict (attempts used up, the runner could not
    /// start, it ran out of memory).
    Failed { seq: i64, error: String },
    /// A delivery attempt of an outbound row failed; `gave_up`: for good.
    DeliveryFailed {
        out_seq: i64,
        error: String,
        gave_up: bool,
    },
    /// The session's runner ended. `reason` is why the host stopped it, if it did;
    /// `unexpected` is a crash (not an idle exit or a stop the host asked for).
    RunnerExited {
        runner: String,
        exit: String,
        reason: Option<String>,
        unexpected: bool,
    },
    /// A kind this build does not know (written by a newer host).
    #[serde(other)]
    Unknown,
}

impl HostEvent {
    /// The error text of an event that reports a problem, for "last error" in `clawbox status`.
    pub fn problem(&self) -> Option<String> {
        match self {
            HostEvent::Requeued { seq, reason, .. } => {
                Some(format!("message {seq} re-queued: {reason}"))
            }
            HostEvent::Failed { seq, error } => Some(format!("message {seq} failed: {error}")),
            HostEvent::DeliveryFailed { out_seq, error, .. } => {
                Some(format!("delivery of {out_seq} failed: {error}"))
            }
            HostEvent::RunnerExited {
                exit,
                reason,
                unexpected,
                ..
            } => match (reason, unexpected) {
                (Some(reason), _) if reason_is_problem(reason) => {
                    Some(format!("runner stopped ({exit}): {reason}"))
                }
                (_, true) => Some(format!("runner ended unexpectedly ({exit})")),
                _ => None,
            },
            HostEvent::Unknown => None,
        }
    }
}

/// Stops the host makes on purpose for reasons that are not problems.
fn reason_is_problem(reason: &str) -> bool {
    !(reason.contains("shutting down") || reason.contains("made room"))
}

/// One stored event with its row id (the log's cursor) and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub event: T,
}

/// The table each event type lives in.
pub(crate) trait EventTable: Serialize + DeserializeOwned {
    const TABLE: &'static str;
}

impl EventTable for RunnerEvent {
    const TABLE: &'static str = "events";
}

impl EventTable for HostEvent {
    const TABLE: &'static str = "host_events";
}

/// Appends `events`, each with its time (inside the caller's transaction).
pub(crate) fn append<'a, T: EventTable + 'a>(
    conn: &Connection,
    events: impl IntoIterator<Item = (DateTime<Utc>, &'a T)>,
) -> Result<()> {
    for (at, event) in events {
        let at = ts(at);
        let data = serde_json::to_value(event).map_err(|e| Error::Malformed {
            table: T::TABLE,
            detail: format!("cannot encode event: {e}"),
        })?;
        let kind = data["kind"].as_str().unwrap_or("unknown").to_owned();
        conn.execute(
            &format!(
                "INSERT INTO {} (at, kind, data) VALUES (?1, ?2, ?3)",
                T::TABLE
            ),
            params![at, kind, data.to_string()],
        )?;
    }
    Ok(())
}

/// Deletes all but the newest [`KEEP_EVENTS`] rows.
pub(crate) fn prune<T: EventTable>(conn: &Connection) -> Result<()> {
    conn.execute(
        &format!(
            "DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?1",
            table = T::TABLE
        ),
        [KEEP_EVENTS],
    )?;
    Ok(())
}

/// Events with an id above `cursor`, oldest first; at most `limit`.
pub(crate) fn after<T: EventTable>(
    conn: &Connection,
    cursor: i64,
    limit: u32,
) -> Result<Vec<Stored<T>>> {
    query(
        conn,
        &format!(
            "SELECT id, at, data FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
            T::TABLE
        ),
        params![cursor, limit],
    )
}

/// The newest `limit` events, newest first.
pub(crate) fn latest<T: EventTable>(conn: &Connection, limit: u32) -> Result<Vec<Stored<T>>> {
    query(
        conn,
        &format!(
            "SELECT id, at, data FROM {} ORDER BY id DESC LIMIT ?1",
            T::TABLE
        ),
        [limit],
    )
}

fn query<T: EventTable, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<Stored<T>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|r| {
        let (id, at, data) = r?;
        let event = serde_json::from_str(&data).map_err(|e| Error::Malformed {
            table: T::TABLE,
            detail: format!("event {id}: {e}"),
        })?;
        Ok(Stored {
            id,
            at: parse_ts(T::TABLE, &at)?,
            event,
        })
    })
    .collect()
}

/// The database's schema version (a reader may meet a file its writer has not migrated yet).
pub(crate) fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_kinds_decode_as_unknown() {
        let e: RunnerEvent = serde_json::from_str(r#"{"kind":"teleported","to":"mars"}"#).unwrap();
        assert_eq!(e, RunnerEvent::Unknown);
        let e: HostEvent = serde_json::from_str(r#"{"kind":"new_thing"}"#).unwrap();
        assert_eq!(e, HostEvent::Unknown);
    }

    #[test]
    fn problems_of_host_events() {
        let exited = |reason: Option<&str>, unexpected| HostEvent::RunnerExited {
            runner: "r".into(),
            exit: "exit code 0".into(),
            reason: reason.map(str::to_owned),
            unexpected,
        };
        let table = [
            (exited(None, false), None),
            (
                exited(None, true),
                Some("runner ended unexpectedly (exit code 0)"),
            ),
            (exited(Some("the host is shutting down"), false), None),
            (
                exited(Some("the runner made room for another session"), false),
                None,
            ),
            (
                exited(
                    Some("the agent stopped responding (silent for 61 s)"),
                    false,
                ),
                Some(
                    "runner stopped (exit code 0): the agent stopped responding (silent for 61 s)",
                ),
            ),
            (
                HostEvent::Failed {
                    seq: 4,
                    error: "boom".into(),
                },
                Some("message 4 failed: boom"),
            ),
            (HostEvent::Unknown, None),
        ];
        for (event, want) in table {
            assert_eq!(event.problem().as_deref(), want, "{event:?}");
        }
    }
}
