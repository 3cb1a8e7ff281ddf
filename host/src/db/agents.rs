//! Agents (agent groups), their wirings to chats and their destinations (the names an agent
//! may send to), and the listing `create-agent --list` and `clawbox agents` print.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::DbResult;

#[derive(Debug, Clone, PartialEq)]
pub struct AgentGroup {
    pub id: String,
    pub name: String,
    pub folder: String,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wiring {
    pub id: String,
    pub messaging_group_id: String,
    pub agent_group_id: String,
    pub engage_mode: String,
    pub engage_pattern: Option<String>,
    pub sticky_window_s: i64,
    pub sender_scope: String,
    pub ignored_message_policy: String,
    pub session_mode: String,
    pub priority: i64,
}

pub fn agent_group(conn: &Connection, id: &str) -> DbResult<Option<AgentGroup>> {
    Ok(conn
        .query_row(
            "SELECT id, name, folder, model FROM agent_groups WHERE id = ?1",
            [id],
            |r| {
                Ok(AgentGroup {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    folder: r.get(2)?,
                    model: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// Every agent, by id.
pub fn agent_groups(conn: &Connection) -> DbResult<Vec<AgentGroup>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, folder, model FROM agent_groups ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(AgentGroup {
            id: r.get(0)?,
            name: r.get(1)?,
            folder: r.get(2)?,
            model: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Wirings of a chat, highest priority first.
pub fn wirings_of(conn: &Connection, messaging_group_id: &str) -> DbResult<Vec<Wiring>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sticky_window_s,
                sender_scope, ignored_message_policy, session_mode, priority
         FROM wirings WHERE messaging_group_id = ?1 ORDER BY priority DESC, created_at",
    )?;
    let rows = stmt.query_map([messaging_group_id], |r| {
        Ok(Wiring {
            id: r.get(0)?,
            messaging_group_id: r.get(1)?,
            agent_group_id: r.get(2)?,
            engage_mode: r.get(3)?,
            engage_pattern: r.get(4)?,
            sticky_window_s: r.get(5)?,
            sender_scope: r.get(6)?,
            ignored_message_policy: r.get(7)?,
            session_mode: r.get(8)?,
            priority: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The user's role in an agent group (`owner` | `admin` | `member`), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRow {
    pub name: String,
    pub display_name: Option<String>,
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

pub fn destinations_of(conn: &Connection, agent_group_id: &str) -> DbResult<Vec<DestinationRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, display_name, channel_type, platform_id, thread_id FROM destinations
         WHERE agent_group_id = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([agent_group_id], |r| {
        Ok(DestinationRow {
            name: r.get(0)?,
            display_name: r.get(1)?,
            channel_type: r.get(2)?,
            platform_id: r.get(3)?,
            thread_id: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What `--list --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub agents: Vec<AgentListing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentListing {
    pub id: String,
    pub name: String,
    pub folder: String,
    /// `None`: DEFAULT_MODEL.
    pub model: Option<String>,
    pub wirings: Vec<WiringListing>,
    pub destinations: Vec<DestinationListing>,
    pub roles: Vec<RoleListing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WiringListing {
    pub channel_type: String,
    pub platform_id: String,
    pub is_group: bool,
    pub unknown_sender_policy: String,
    pub engage_mode: String,
    pub engage_pattern: Option<String>,
    pub sticky_window_s: i64,
    pub session_mode: String,
    pub ignored_messages: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationListing {
    pub name: String,
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleListing {
    pub user_id: String,
    pub role: String,
}

/// Every agent with its wirings, destinations and roles, by id.
pub fn list_agents(conn: &Connection) -> DbResult<Vec<AgentListing>> {
    let mut agents: Vec<AgentListing> = conn
        .prepare("SELECT id, name, folder, model FROM agent_groups ORDER BY id")?
        .query_map([], |r| {
            Ok(AgentListing {
                id: r.get(0)?,
                name: r.get(1)?,
                folder: r.get(2)?,
                model: r.get(3)?,
                wirings: Vec::new(),
                destinations: Vec::new(),
                roles: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for agent in &mut agents {
        agent.wirings = conn
            .prepare(
                "SELECT m.channel_type, m.platform_id, m.is_group, m.unknown_sender_policy,
                        w.engage_mode, w.engage_pattern, w.sticky_window_s, w.session_mode,
                        w.ignored_message_policy
                 FROM wirings w JOIN messaging_groups m ON m.id = w.messaging_group_id
                 WHERE w.agent_group_id = ?1 ORDER BY m.channel_type, m.platform_id",
            )?
            .query_map([&agent.id], |r| {
                Ok(WiringListing {
                    channel_type: r.get(0)?,
                    platform_id: r.get(1)?,
                    is_group: r.get(2)?,
                    unknown_sender_policy: r.get(3)?,
                    engage_mode: r.get(4)?,
                    engage_pattern: r.get(5)?,
                    sticky_window_s: r.get(6)?,
                    session_mode: r.get(7)?,
                    ignored_messages: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        agent.destinations = destinations_of(conn, &agent.id)?
            .into_iter()
            .map(|d| DestinationListing {
                name: d.name,
                channel_type: d.channel_type,
                platform_id: d.platform_id,
                thread_id: d.thread_id,
            })
            .collect();
        agent.roles = conn
            .prepare(
                "SELECT user_id, role FROM user_roles WHERE agent_group_id = ?1 ORDER BY role, user_id",
            )?
            .query_map([&agent.id], |r| {
                Ok(RoleListing {
                    user_id: r.get(0)?,
                    role: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(agents)
}
