//! Session resolution: which session of an agent a chat message belongs to, creating it (row,
//! directories, `inbound.db` with its routing and destinations) on first use. The session mode
//! of the wiring decides the key: `shared` and `per-thread` (agent + chat + thread),
//! `agent-shared` (the agent's latest session, whatever the chat). The only threads channels
//! report today are Telegram forum topics, which people use as separate conversations, so a
//! topic is its own session in both modes (`per-thread` is kept for clawside's wirings).

use chrono::Utc;
use mailbox::{Destination, Route, SessionPaths};
use rusqlite::Connection;

use crate::db::random_id;
use crate::db::{self, AgentGroup, DbError, DbResult, MessagingGroup, Session, Wiring};

/// Everything the supervisor needs to run one session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session: Session,
    pub agent: AgentGroup,
    /// Where replies go by default: the chat (and thread) the session belongs to.
    pub route: Route,
    pub destinations: Vec<Destination>,
    pub paths: SessionPaths,
}

/// Finds or creates the session for a message in `chat` (and `thread`) handled by `wiring`.
pub fn resolve(
    conn: &mut Connection,
    sessions_dir: &std::path::Path,
    wiring: &Wiring,
    chat: &MessagingGroup,
    thread_id: Option<&str>,
) -> DbResult<SessionInfo> {
    let thread = match wiring.session_mode.as_str() {
        "agent-shared" => None,
        _ => thread_id,
    };
    let existing = match wiring.session_mode.as_str() {
        "agent-shared" => db::find_active_session(conn, &wiring.agent_group_id, None, None)?,
        _ => db::find_active_session(conn, &wiring.agent_group_id, Some(&chat.id), thread)?,
    };
    let session = match existing {
        Some(s) => s,
        None => {
            let id = format!(
                "sess-{}-{}",
                Utc::now().format("%Y%m%d%H%M%S"),
                random_id(6)
            );
            db::insert_session(
                conn,
                &id,
                &wiring.agent_group_id,
                &chat.id,
                thread,
                Utc::now(),
            )?;
            db::session(conn, &id)?
                .ok_or_else(|| DbError::Malformed(format!("session {id} vanished")))?
        }
    };
    load(conn, sessions_dir, &session.id)?
        .ok_or_else(|| DbError::Malformed(format!("session {} has no agent or chat", session.id)))
}

/// Loads a session with its agent, route and destinations.
pub fn load(
    conn: &Connection,
    sessions_dir: &std::path::Path,
    session_id: &str,
) -> DbResult<Option<SessionInfo>> {
    let Some(session) = db::session(conn, session_id)? else {
        return Ok(None);
    };
    let Some(agent) = db::agent_group(conn, &session.agent_group_id)? else {
        return Ok(None);
    };
    let chat: Option<(String, String)> = conn
        .query_row(
            "SELECT channel_type, platform_id FROM messaging_groups WHERE id = ?1",
            [&session.messaging_group_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    let Some((channel_type, platform_id)) = chat else {
        return Ok(None);
    };
    let route = Route {
        channel_type,
        platform_id,
        thread_id: session.thread_id.clone(),
    };
    let destinations = db::destinations_of(conn, &agent.id)?
        .into_iter()
        .map(|d| Destination {
            name: d.name,
            display_name: d.display_name,
            route: Route {
                channel_type: d.channel_type,
                platform_id: d.platform_id,
                thread_id: d.thread_id,
            },
        })
        .collect();
    let paths = SessionPaths::for_session(sessions_dir, &agent.id, &session.id)
        .map_err(|e| DbError::Malformed(e.to_string()))?;
    Ok(Some(SessionInfo {
        session,
        agent,
        route,
        destinations,
        paths,
    }))
}
