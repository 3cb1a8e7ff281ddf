//! The Telegram update journal (`telegram_updates`): every batch of updates written before it
//! is handled, with the poll offset, so a crash loses nothing and a redelivered update is
//! handled once.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{DbResult, meta, ts};

// ---------------------------------------------------------------------------------------------
// The Telegram update journal

/// An update received but not yet fully handled.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub update_id: i64,
    /// Updates with the same key are handled in order (the chat).
    pub chat_key: String,
    pub payload: String,
}

/// Records a batch of updates and moves the confirmed offset past them, in one transaction;
/// returns the entries that were new (an update seen before is not handled twice).
pub fn journal_updates(
    conn: &mut Connection,
    bot_id: i64,
    updates: &[JournalEntry],
    now: DateTime<Utc>,
) -> DbResult<Vec<JournalEntry>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut fresh = Vec::new();
    for u in updates {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO telegram_updates (bot_id, update_id, chat_key, payload, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![bot_id, u.update_id, u.chat_key, u.payload, ts(now)],
        )?;
        if inserted == 1 {
            fresh.push(u.clone());
        }
    }
    if let Some(max) = updates.iter().map(|u| u.update_id).max() {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value =
                 MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            params![format!("telegram_offset:{bot_id}"), max + 1],
        )?;
    }
    tx.commit()?;
    Ok(fresh)
}

/// The offset to poll from (0 before the first update).
pub fn telegram_offset(conn: &Connection, bot_id: i64) -> DbResult<i64> {
    Ok(meta(conn, &format!("telegram_offset:{bot_id}"))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Updates recorded but not handled (the host stopped in between), oldest first.
pub fn open_updates(conn: &Connection, bot_id: i64) -> DbResult<Vec<JournalEntry>> {
    let mut stmt = conn.prepare(
        "SELECT update_id, chat_key, payload FROM telegram_updates
         WHERE bot_id = ?1 AND done_at IS NULL ORDER BY update_id",
    )?;
    let rows = stmt.query_map([bot_id], |r| {
        Ok(JournalEntry {
            update_id: r.get(0)?,
            chat_key: r.get(1)?,
            payload: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks an update handled; its payload is not needed any more (the row stays, so a
/// redelivered update is recognised).
pub fn finish_update(
    conn: &Connection,
    bot_id: i64,
    update_id: i64,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE telegram_updates SET done_at = ?3, payload = '' WHERE bot_id = ?1 AND update_id = ?2",
    )?
    .execute(params![bot_id, update_id, ts(now)])?;
    Ok(())
}

/// Forgets handled updates older than `before` (Telegram redelivers only unconfirmed
/// updates, and only for a day).
pub fn prune_updates(conn: &Connection, before: DateTime<Utc>) -> DbResult<usize> {
    Ok(conn.execute(
        "DELETE FROM telegram_updates WHERE done_at IS NOT NULL AND done_at < ?1",
        [ts(before)],
    )?)
}
