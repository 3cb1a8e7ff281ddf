//! Session rows: which agent serves which chat (and thread), their status, the runner state
//! the last host left, and the view operators list.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};

use super::{DbResult, parse_ts, ts};

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub agent_group_id: String,
    pub messaging_group_id: String,
    pub thread_id: Option<String>,
    pub status: String,
    pub runner_state: String,
    pub last_activity: DateTime<Utc>,
}

const SESSION_COLS: &str =
    "id, agent_group_id, messaging_group_id, thread_id, status, runner_state, last_activity";

fn session_row(r: &Row<'_>) -> rusqlite::Result<(Session, String)> {
    let last: String = r.get(6)?;
    Ok((
        Session {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            thread_id: r.get(3)?,
            status: r.get(4)?,
            runner_state: r.get(5)?,
            last_activity: DateTime::<Utc>::UNIX_EPOCH,
        },
        last,
    ))
}

fn decode_session((mut s, last): (Session, String)) -> DbResult<Session> {
    s.last_activity = parse_ts(&last)?;
    Ok(s)
}

fn query_sessions(
    conn: &Connection,
    filter: &str,
    p: impl rusqlite::Params,
) -> DbResult<Vec<Session>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {SESSION_COLS} FROM sessions {filter}"))?;
    let rows = stmt.query_map(p, session_row)?;
    rows.map(|r| decode_session(r?)).collect()
}

pub fn find_active_session(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: Option<&str>,
    thread_id: Option<&str>,
) -> DbResult<Option<Session>> {
    let rows = match messaging_group_id {
        Some(mg) => query_sessions(
            conn,
            "WHERE status = 'active' AND agent_group_id = ?1 AND messaging_group_id = ?2
               AND COALESCE(thread_id, '') = COALESCE(?3, '')",
            params![agent_group_id, mg, thread_id],
        )?,
        None => query_sessions(
            conn,
            "WHERE status = 'active' AND agent_group_id = ?1 ORDER BY created_at DESC LIMIT 1",
            params![agent_group_id],
        )?,
    };
    Ok(rows.into_iter().next())
}

pub fn session(conn: &Connection, id: &str) -> DbResult<Option<Session>> {
    Ok(query_sessions(conn, "WHERE id = ?1", [id])?
        .into_iter()
        .next())
}

pub fn insert_session(
    conn: &Connection,
    id: &str,
    agent_group_id: &str,
    messaging_group_id: &str,
    thread_id: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, last_activity, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, agent_group_id, messaging_group_id, thread_id, ts(now)],
    )?;
    Ok(())
}

pub fn touch_session(conn: &Connection, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET last_activity = ?1 WHERE id = ?2",
        params![ts(now), id],
    )?;
    Ok(())
}

/// Records what the supervisor knows of a session's runner (`stopped` | `running` | `waiting`).
pub fn set_runner_state(conn: &Connection, id: &str, state: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET runner_state = ?1 WHERE id = ?2",
        params![state, id],
    )?;
    Ok(())
}

/// Sessions the supervisor left running or waiting: the only ones a restart must look at.
pub fn busy_sessions(conn: &Connection) -> DbResult<Vec<Session>> {
    query_sessions(conn, "WHERE runner_state != 'stopped' ORDER BY id", [])
}

pub fn sessions_of_chat(conn: &Connection, messaging_group_id: &str) -> DbResult<Vec<Session>> {
    query_sessions(
        conn,
        "WHERE status = 'active' AND messaging_group_id = ?1",
        [messaging_group_id],
    )
}

/// A session with what operators see of it: its agent's name and its chat.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    pub session: Session,
    pub agent_name: String,
    pub channel_type: String,
    pub platform_id: String,
    pub created_at: DateTime<Utc>,
}

/// Every session (active and closed), most recently active first.
pub fn session_views(conn: &Connection) -> DbResult<Vec<SessionView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, s.status,
                s.runner_state, s.last_activity, a.name, m.channel_type, m.platform_id,
                s.created_at
         FROM sessions s
         JOIN agent_groups a ON a.id = s.agent_group_id
         JOIN messaging_groups m ON m.id = s.messaging_group_id
         ORDER BY s.last_activity DESC, s.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            session_row(r)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, String>(10)?,
        ))
    })?;
    rows.map(|r| {
        let (session, agent_name, channel_type, platform_id, created_at) = r?;
        Ok(SessionView {
            session: decode_session(session)?,
            agent_name,
            channel_type,
            platform_id,
            created_at: parse_ts(&created_at)?,
        })
    })
    .collect()
}
