//! `outbound.drafts`: the growing text of the turn in progress, so that a chat can show a
//! reply while the model is still writing it. One row per turn (keyed by the turn, the seq of
//! its first claimed message), overwritten in a small commit of its own as the text grows and
//! deleted by the turn's verdict — in the same transaction as the reply row, so a chat never
//! sees a final reply and its draft as two things at once.
//!
//! A draft is only a preview: the reply row stays the single source of truth for what was
//! said and what was delivered. A runner that dies mid-stream leaves a stale draft; the next
//! runner deletes it when it starts, and the retried turn writes a new one.
//!
//! While a step's tool calls run, its row also names them ([`DraftCall`]: the tool and its
//! string arguments, cut short), so a chat can show what the agent is doing ("running
//! `npm test`…"); the row of the next step has none. How a call reads as a line is the
//! host's business.
//!
//! The container writes this table, so the host reads it bounded like every other row:
//! a text beyond [`READ_DRAFT_BYTES`] is not loaded, a row of the wrong types is skipped, and
//! calls beyond [`READ_CALLS_BYTES`] or not of the expected shape are dropped (the text is
//! still shown).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Result;
use crate::sql::{parse_ts, ts};

/// The outbound schema version that added `drafts`.
pub(crate) const OUTBOUND_DRAFTS_VERSION: i64 = 4;
/// The outbound schema version that added `drafts.calls`.
pub(crate) const OUTBOUND_DRAFT_CALLS_VERSION: i64 = 5;
/// The most calls of one step a draft names (a model may ask for dozens at once).
pub const MAX_DRAFT_CALLS: usize = 8;
/// The most string arguments of one call a draft keeps, and the most characters of each:
/// enough to say which command or file, far from a file's whole content.
pub const MAX_CALL_ARGS: usize = 8;
pub const MAX_ARG_CHARS: usize = 200;
/// The most characters of a tool's name a draft keeps.
pub const MAX_TOOL_CHARS: usize = 128;
/// The most the host loads of a draft row's calls; longer ones are not shown.
pub const READ_CALLS_BYTES: i64 = 32 * 1024;
/// The most of a draft the runner stores: more than a Telegram message (4096 characters) or
/// a screenful of terminal shows while it is being written. The whole text comes with the
/// reply.
pub const MAX_DRAFT_BYTES: usize = 8 * 1024;
/// The most the host loads of a draft row's text; a longer one (a runner that ignored
/// [`MAX_DRAFT_BYTES`]) is not shown.
pub const READ_DRAFT_BYTES: i64 = 16 * 1024;

/// The text of one turn's current step, as written so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The turn (seq of its first claimed inbound message).
    pub turn: i64,
    /// The inbound message the turn's reply will answer (the reply row's `in_reply_to`).
    pub reply_to: i64,
    /// The model step whose text this is (a new step starts a new text).
    pub step: u32,
    pub text: String,
    /// The tool calls the step is running (empty while the model writes).
    pub calls: Vec<DraftCall>,
    pub updated_at: DateTime<Utc>,
}

/// One tool call a draft's step is running: the tool and its string arguments, cut short
/// ([`DraftCall::new`]). Facts from the container, not yet fit to show: the host cleans them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftCall {
    pub tool: String,
    /// The call's top-level arguments that are strings, each at most [`MAX_ARG_CHARS`]
    /// characters, at most [`MAX_CALL_ARGS`] of them.
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

impl DraftCall {
    /// The call of `tool` with `arguments` (the call's JSON object), cut to the bounds above.
    pub fn new(tool: &str, arguments: &Value) -> Self {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let arguments = arguments
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let v = v.as_str()?;
                Some((cut(k, MAX_ARG_CHARS), Value::String(cut(v, MAX_ARG_CHARS))))
            })
            .take(MAX_CALL_ARGS)
            .collect();
        DraftCall {
            tool: cut(tool, MAX_TOOL_CHARS),
            arguments,
        }
    }
}

/// The calls as stored: `NULL` for none.
fn calls_json(calls: &[DraftCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    let calls = &calls[..calls.len().min(MAX_DRAFT_CALLS)];
    serde_json::to_string(calls).ok()
}

/// `text` cut to at most [`MAX_DRAFT_BYTES`], at a character boundary.
pub fn capped(text: &str) -> &str {
    if text.len() <= MAX_DRAFT_BYTES {
        return text;
    }
    let mut end = MAX_DRAFT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes (or replaces) the draft of `draft.turn`, its text capped.
pub(crate) fn upsert(conn: &Connection, draft: &Draft) -> Result<()> {
    conn.execute(
        "INSERT INTO drafts (turn, reply_to, step, text, calls, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(turn) DO UPDATE SET reply_to = excluded.reply_to, step = excluded.step,
             text = excluded.text, calls = excluded.calls, updated_at = excluded.updated_at",
        params![
            draft.turn,
            draft.reply_to,
            draft.step,
            capped(&draft.text),
            calls_json(&draft.calls),
            ts(draft.updated_at)
        ],
    )?;
    Ok(())
}

pub(crate) fn delete(conn: &Connection, turn: i64) -> Result<()> {
    conn.execute("DELETE FROM drafts WHERE turn = ?1", [turn])?;
    Ok(())
}

pub(crate) fn delete_all(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM drafts", [])?;
    Ok(())
}

/// The newest turn's draft, read bounded; `None` when there is none, when the file predates
/// the table, or when the row is not usable (too long, wrong types).
pub(crate) fn latest(conn: &Connection) -> Result<Option<Draft>> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < OUTBOUND_DRAFTS_VERSION {
        return Ok(None);
    }
    use rusqlite::types::Value as V;
    // A file from before `calls` (a runner of an older build) has no calls to show.
    let calls = if version >= OUTBOUND_DRAFT_CALLS_VERSION {
        "CASE WHEN octet_length(calls) <= ?2 THEN calls END"
    } else {
        "NULL AND ?2"
    };
    let row = conn
        .query_row(
            &format!(
                "SELECT turn, reply_to, step,
                     CASE WHEN octet_length(text) <= ?1 THEN text END,
                     CASE WHEN octet_length(updated_at) <= 64 THEN updated_at END,
                     {calls}
                 FROM drafts ORDER BY turn DESC LIMIT 1"
            ),
            [READ_DRAFT_BYTES, READ_CALLS_BYTES],
            |r| {
                Ok((
                    r.get::<_, V>(0)?,
                    r.get::<_, V>(1)?,
                    r.get::<_, V>(2)?,
                    r.get::<_, V>(3)?,
                    r.get::<_, V>(4)?,
                    r.get::<_, V>(5)?,
                ))
            },
        )
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let (
        V::Integer(turn),
        V::Integer(reply_to),
        V::Integer(step),
        V::Text(text),
        V::Text(at),
        calls,
    ) = row
    else {
        return Ok(None);
    };
    // Calls the host cannot use are not shown; the draft's text still is.
    let calls = match calls {
        V::Text(json) => serde_json::from_str::<Vec<DraftCall>>(&json)
            .map(|mut calls| {
                calls.truncate(MAX_DRAFT_CALLS);
                calls
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let (Ok(step), Ok(updated_at)) = (u32::try_from(step), parse_ts("drafts", &at)) else {
        return Ok(None);
    };
    Ok(Some(Draft {
        turn,
        reply_to,
        step,
        text,
        calls,
        updated_at,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn capping_keeps_whole_characters() {
        assert_eq!(capped("short"), "short");
        let long = "é".repeat(MAX_DRAFT_BYTES); // two bytes each
        let cut = capped(&long);
        assert_eq!(cut.len(), MAX_DRAFT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("a{long}");
        let cut = capped(&odd);
        assert_eq!(cut.len(), MAX_DRAFT_BYTES - 1);
        assert!(cut.starts_with('a'));
    }

    #[test]
    fn a_call_keeps_short_string_arguments_only() {
        let long = "x".repeat(MAX_ARG_CHARS + 50);
        let call = DraftCall::new(
            &"t".repeat(MAX_TOOL_CHARS * 2),
            &serde_json::json!({"command": long, "timeout_ms": 5000, "nested": {"a": "b"}}),
        );
        assert_eq!(call.tool.chars().count(), MAX_TOOL_CHARS);
        assert_eq!(call.arguments.len(), 1);
        assert_eq!(
            call.arguments["command"]
                .as_str()
                .map(|s| s.chars().count()),
            Some(MAX_ARG_CHARS)
        );
        let many: serde_json::Map<String, Value> = (0..20)
            .map(|i| (format!("k{i:02}"), Value::String("v".into())))
            .collect();
        assert_eq!(
            DraftCall::new("t", &Value::Object(many)).arguments.len(),
            MAX_CALL_ARGS
        );
        assert!(
            DraftCall::new("t", &serde_json::json!([1, 2]))
                .arguments
                .is_empty()
        );
        let calls = vec![DraftCall::new("t", &Value::Null); MAX_DRAFT_CALLS + 3];
        let stored: Vec<DraftCall> =
            serde_json::from_str(&calls_json(&calls).unwrap_or_default()).unwrap();
        assert_eq!(stored.len(), MAX_DRAFT_CALLS);
        assert_eq!(calls_json(&[]), None);
    }
}
