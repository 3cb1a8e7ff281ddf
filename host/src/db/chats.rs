//! Chats (messaging groups), users with their aliases and roles, mention-sticky engagement
//! scopes, and the approval of unknown senders with the messages held meanwhile.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{DbError, DbResult, parse_ts, random_id, ts};

#[derive(Debug, Clone, PartialEq)]
pub struct MessagingGroup {
    pub id: String,
    pub channel_type: String,
    pub platform_id: String,
    pub name: Option<String>,
    pub is_group: bool,
    pub unknown_sender_policy: String,
}

pub fn messaging_group_by_platform(
    conn: &Connection,
    channel_type: &str,
    platform_id: &str,
) -> DbResult<Option<MessagingGroup>> {
    Ok(conn
        .query_row(
            "SELECT id, channel_type, platform_id, name, is_group, unknown_sender_policy
             FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
            params![channel_type, platform_id],
            |r| {
                Ok(MessagingGroup {
                    id: r.get(0)?,
                    channel_type: r.get(1)?,
                    platform_id: r.get(2)?,
                    name: r.get(3)?,
                    is_group: r.get(4)?,
                    unknown_sender_policy: r.get(5)?,
                })
            },
        )
        .optional()?)
}

pub fn role_of(conn: &Connection, user_id: &str, agent_group_id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT role FROM user_roles WHERE user_id = ?1 AND agent_group_id = ?2",
            params![user_id, agent_group_id],
            |r| r.get(0),
        )
        .optional()?)
}

// ---------------------------------------------------------------------------------------------
// Users, aliases and roles

/// Records the sender (kind and display name) and binds its aliases: a role granted to
/// `telegram:@name` before the numeric id was known moves to the sender the first time a user
/// with that username writes, and the alias stays bound to that id for good (usernames can
/// change hands; identities cannot).
pub fn note_user(
    conn: &Connection,
    id: &str,
    display_name: Option<&str>,
    aliases: &[String],
    now: DateTime<Utc>,
) -> DbResult<()> {
    let kind = id.split(':').next().unwrap_or("unknown");
    conn.prepare_cached(
        "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name
         WHERE excluded.display_name IS NOT NULL AND display_name IS NOT excluded.display_name",
    )?
    .execute(params![id, kind, display_name, ts(now)])?;
    for alias in aliases {
        let alias = alias.to_lowercase();
        if alias == id {
            continue;
        }
        let placeholder = conn
            .prepare_cached(
                "SELECT 1 FROM users WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM user_aliases WHERE alias = ?1)",
            )?
            .exists([&alias])?;
        if !placeholder {
            continue;
        }
        tracing::info!(alias, user = id, "binding a username to its numeric id");
        // The stronger of two roles wins: owner over admin over member.
        conn.execute(
            "INSERT INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
             SELECT ?1, agent_group_id, role, granted_by, granted_at FROM user_roles WHERE user_id = ?2
             ON CONFLICT (user_id, agent_group_id) DO UPDATE SET role = excluded.role
             WHERE excluded.role = 'owner' OR (excluded.role = 'admin' AND role = 'member')",
            params![id, alias],
        )?;
        conn.execute("DELETE FROM users WHERE id = ?1", [&alias])?;
        conn.execute(
            "INSERT INTO user_aliases (alias, user_id, bound_at) VALUES (?1, ?2, ?3)",
            params![alias, id, ts(now)],
        )?;
    }
    Ok(())
}

/// The user an alias was bound to, if it was.
pub fn alias_target(conn: &Connection, alias: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM user_aliases WHERE alias = ?1",
            [alias.to_lowercase()],
            |r| r.get(0),
        )
        .optional()?)
}

/// Users with `role_in` roles on an agent, e.g. the owners and admins to ask for approval.
pub fn users_with_roles(
    conn: &Connection,
    agent_group_id: &str,
    roles: &[&str],
) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, role FROM user_roles WHERE agent_group_id = ?1 ORDER BY granted_at, user_id",
    )?;
    let rows = stmt.query_map([agent_group_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user, role) = row?;
        if roles.contains(&role.as_str()) {
            out.push(user);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Mention-sticky engagement scopes

/// When the agent was last engaged in a scope (`scope`: a topic, `""` for the whole chat).
pub fn engagement(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    scope: &str,
) -> DbResult<Option<DateTime<Utc>>> {
    let last: Option<String> = conn
        .prepare_cached(
            "SELECT last_activity FROM engagements
             WHERE agent_group_id = ?1 AND messaging_group_id = ?2 AND thread_key = ?3",
        )?
        .query_row(params![agent_group_id, messaging_group_id, scope], |r| {
            r.get(0)
        })
        .optional()?;
    last.as_deref().map(parse_ts).transpose()
}

pub fn touch_engagement(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    scope: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO engagements (agent_group_id, messaging_group_id, thread_key, last_activity)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent_group_id, messaging_group_id, thread_key)
         DO UPDATE SET last_activity = excluded.last_activity",
    )?
    .execute(params![agent_group_id, messaging_group_id, scope, ts(now)])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Approval of unknown senders

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub agent_group_id: String,
    pub messaging_group_id: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
    /// `pending` | `allowed` | `denied`.
    pub status: String,
    /// The cards asking for a decision: (chat id, message id) on the channel.
    pub cards: Vec<(String, String)>,
    pub decided_by: Option<String>,
}

/// What holding a message of an unknown sender did.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// An owner declined this sender before.
    Denied,
    /// Too many of the sender's messages wait already.
    Full,
    /// Held; `new_request`: nobody has been asked yet, so cards must go out.
    Queued {
        approval_id: String,
        new_request: bool,
    },
}

const APPROVAL_COLS: &str =
    "id, agent_group_id, messaging_group_id, sender_id, sender_name, status, cards, decided_by";

fn approval_row(r: &Row<'_>) -> rusqlite::Result<(Approval, String)> {
    Ok((
        Approval {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            sender_id: r.get(3)?,
            sender_name: r.get(4)?,
            status: r.get(5)?,
            cards: Vec::new(),
            decided_by: r.get(7)?,
        },
        r.get(6)?,
    ))
}

fn decode_approval((mut a, cards): (Approval, String)) -> DbResult<Approval> {
    a.cards = serde_json::from_str(&cards)
        .map_err(|e| DbError::Malformed(format!("approval {} cards: {e}", a.id)))?;
    Ok(a)
}

pub fn approval(conn: &Connection, id: &str) -> DbResult<Option<Approval>> {
    conn.query_row(
        &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1"),
        [id],
        approval_row,
    )
    .optional()?
    .map(decode_approval)
    .transpose()
}

/// Who sent a message held for approval.
pub struct HeldSender<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
}

/// Holds `event_json` (a message of `sender`) until an owner decides.
pub fn hold_message(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    sender: HeldSender<'_>,
    event_json: &str,
    max_held: usize,
    now: DateTime<Utc>,
) -> DbResult<Held> {
    let existing = conn
        .query_row(
            &format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE agent_group_id = ?1 AND sender_id = ?2"
            ),
            params![agent_group_id, sender.id],
            approval_row,
        )
        .optional()?
        .map(decode_approval)
        .transpose()?;
    let (approval_id, new_request) = match existing {
        Some(a) if a.status == "denied" => return Ok(Held::Denied),
        Some(a) if a.status == "pending" => (a.id, a.cards.is_empty()),
        Some(a) => {
            // Allowed once, but the role is gone (revoked since): ask again.
            conn.execute(
                "UPDATE approvals SET status = 'pending', cards = '[]', decided_by = NULL,
                     decided_at = NULL, messaging_group_id = ?2 WHERE id = ?1",
                params![a.id, messaging_group_id],
            )?;
            (a.id, true)
        }
        None => {
            let id = random_id(10);
            conn.execute(
                "INSERT INTO approvals (id, agent_group_id, messaging_group_id, sender_id, sender_name, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, agent_group_id, messaging_group_id, sender.id, sender.name, ts(now)],
            )?;
            (id, true)
        }
    };
    let held: i64 = conn.query_row(
        "SELECT COUNT(*) FROM held_messages WHERE approval_id = ?1",
        [&approval_id],
        |r| r.get(0),
    )?;
    if held as usize >= max_held {
        return Ok(Held::Full);
    }
    conn.execute(
        "INSERT INTO held_messages (approval_id, event, created_at) VALUES (?1, ?2, ?3)",
        params![approval_id, event_json, ts(now)],
    )?;
    Ok(Held::Queued {
        approval_id,
        new_request,
    })
}

/// The oldest message held for an approval (JSON), shown on the card.
pub fn first_held_message(conn: &Connection, approval_id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT event FROM held_messages WHERE approval_id = ?1 ORDER BY id LIMIT 1",
            [approval_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records a card sent to ask for a decision.
pub fn add_approval_card(conn: &Connection, id: &str, chat: &str, message: &str) -> DbResult<()> {
    let Some(mut a) = approval(conn, id)? else {
        return Ok(());
    };
    a.cards.push((chat.to_owned(), message.to_owned()));
    let cards = serde_json::to_string(&a.cards).map_err(|e| DbError::Malformed(e.to_string()))?;
    conn.execute(
        "UPDATE approvals SET cards = ?1 WHERE id = ?2",
        params![cards, id],
    )?;
    Ok(())
}

/// What deciding on an approval did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Unknown,
    /// Somebody decided before (the approval as it stands).
    AlreadyDecided(Approval),
    /// Decided now; `held` are the held events (JSON) to replay when allowed, oldest first.
    Decided {
        approval: Approval,
        held: Vec<String>,
    },
}

/// Allows (the sender becomes a `member` of the agent) or denies a pending approval, in one
/// transaction; the held messages are handed back (allowed) or discarded (denied).
pub fn decide_approval(
    conn: &mut Connection,
    id: &str,
    allow: bool,
    decided_by: &str,
    now: DateTime<Utc>,
) -> DbResult<Decision> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut a) = approval(&tx, id)? else {
        return Ok(Decision::Unknown);
    };
    if a.status != "pending" {
        return Ok(Decision::AlreadyDecided(a));
    }
    a.status = if allow { "allowed" } else { "denied" }.to_owned();
    a.decided_by = Some(decided_by.to_owned());
    tx.execute(
        "UPDATE approvals SET status = ?1, decided_by = ?2, decided_at = ?3 WHERE id = ?4",
        params![a.status, decided_by, ts(now), id],
    )?;
    let held = {
        let mut stmt =
            tx.prepare("SELECT event FROM held_messages WHERE approval_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.execute("DELETE FROM held_messages WHERE approval_id = ?1", [id])?;
    if allow {
        note_user(&tx, &a.sender_id, a.sender_name.as_deref(), &[], now)?;
        tx.execute(
            "INSERT OR IGNORE INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
             VALUES (?1, ?2, 'member', ?3, ?4)",
            params![a.sender_id, a.agent_group_id, decided_by, ts(now)],
        )?;
    }
    tx.commit()?;
    Ok(Decision::Decided {
        approval: a,
        held: if allow { held } else { Vec::new() },
    })
}
