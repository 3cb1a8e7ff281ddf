//! The audit of messages the router refused (`dropped_messages`): who, where, and why.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{DbResult, parse_ts, ts};

pub struct Dropped<'a> {
    pub channel_type: &'a str,
    pub platform_id: &'a str,
    pub sender_id: Option<&'a str>,
    pub sender_name: Option<&'a str>,
    pub agent_group_id: Option<&'a str>,
    pub reason: &'a str,
}

pub fn record_dropped(conn: &Connection, d: &Dropped<'_>, now: DateTime<Utc>) -> DbResult<()> {
    conn.execute(
        "INSERT INTO dropped_messages (channel_type, platform_id, sender_id, sender_name, agent_group_id, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            d.channel_type,
            d.platform_id,
            d.sender_id,
            d.sender_name,
            d.agent_group_id,
            d.reason,
            ts(now)
        ],
    )?;
    Ok(())
}

/// Whether a message of this chat (and, given `sender_id`, of this sender) was refused for
/// `reason` before; the start of a stranger's first contact is the first such row.
pub fn dropped_before(
    conn: &Connection,
    channel_type: &str,
    platform_id: &str,
    reason: &str,
    sender_id: Option<&str>,
) -> DbResult<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM dropped_messages
             WHERE channel_type = ?1 AND platform_id = ?2 AND reason = ?3
               AND (?4 IS NULL OR sender_id = ?4))",
        params![channel_type, platform_id, reason, sender_id],
        |r| r.get(0),
    )?)
}

/// One refused message of the `dropped_messages` audit.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub channel_type: String,
    pub platform_id: String,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    pub agent_group_id: Option<String>,
    pub reason: String,
}

/// The newest `limit` refused messages, newest first, and how many there are in all.
pub fn dropped(conn: &Connection, limit: u32) -> DbResult<(Vec<DroppedRow>, u64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, channel_type, platform_id, sender_id, sender_name, agent_group_id, reason
         FROM dropped_messages ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok((
            DroppedRow {
                id: r.get(0)?,
                at: DateTime::<Utc>::UNIX_EPOCH,
                channel_type: r.get(2)?,
                platform_id: r.get(3)?,
                sender_id: r.get(4)?,
                sender_name: r.get(5)?,
                agent_group_id: r.get(6)?,
                reason: r.get(7)?,
            },
            r.get::<_, String>(1)?,
        ))
    })?;
    let rows = rows
        .map(|r| {
            let (mut row, at) = r?;
            row.at = parse_ts(&at)?;
            Ok(row)
        })
        .collect::<DbResult<Vec<_>>>()?;
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM dropped_messages", [], |r| r.get(0))?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}
