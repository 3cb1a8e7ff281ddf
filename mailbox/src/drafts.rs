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
//! The container writes this table, so the host reads it bounded like every other row:
//! a text beyond [`READ_DRAFT_BYTES`] is not loaded, a row of the wrong types is skipped.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::Result;
use crate::sql::{parse_ts, ts};

/// The outbound schema version that added `drafts`.
pub(crate) const OUTBOUND_DRAFTS_VERSION: i64 = 4;
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
    pub updated_at: DateTime<Utc>,
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
        "INSERT INTO drafts (turn, reply_to, step, text, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(turn) DO UPDATE SET reply_to = excluded.reply_to, step = excluded.step,
             text = excluded.text, updated_at = excluded.updated_at",
        params![
            draft.turn,
            draft.reply_to,
            draft.step,
            capped(&draft.text),
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
    let row = conn
        .query_row(
            "SELECT turn, reply_to, step,
                 CASE WHEN octet_length(text) <= ?1 THEN text END,
                 CASE WHEN octet_length(updated_at) <= 64 THEN updated_at END
             FROM drafts ORDER BY turn DESC LIMIT 1",
            [READ_DRAFT_BYTES],
            |r| {
                Ok((
                    r.get::<_, V>(0)?,
                    r.get::<_, V>(1)?,
                    r.get::<_, V>(2)?,
                    r.get::<_, V>(3)?,
                    r.get::<_, V>(4)?,
                ))
            },
        )
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let (V::Integer(turn), V::Integer(reply_to), V::Integer(step), V::Text(text), V::Text(at)) =
        row
    else {
        return Ok(None);
    };
    let (Ok(step), Ok(updated_at)) = (u32::try_from(step), parse_ts("drafts", &at)) else {
        return Ok(None);
    };
    Ok(Some(Draft {
        turn,
        reply_to,
        step,
        text,
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
}
