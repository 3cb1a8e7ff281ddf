//! First-start setup, idempotent: the install id, user `cli:local` (owner), agent `default`,
//! the CLI chat with its wiring and destination, and the agent's folder under `GROUPS_DIR`.
//! Existing rows and files are never overwritten: an operator's edits survive every restart.

use std::path::Path;

use chrono::Utc;
use rusqlite::{Connection, params};

use crate::db::{self, DbResult, random_id, ts};

pub const CLI_USER: &str = "cli:local";
pub const CLI_CHAT: &str = "cli:local";
pub const DEFAULT_AGENT: &str = "default";
/// The dashboard's owner, who talks to the default agent from the browser (the web chat).
pub const WEB_USER: &str = "web:owner";
pub const WEB_CHAT: &str = "web:owner";
/// The web chat user's display name (who answered a question from the browser).
pub const WEB_USER_NAME: &str = "Dashboard owner";

const DEFAULT_CLAUDE_MD: &str = "# Agent

You are a personal assistant. Each conversation you have runs in its own sandbox with a private
working directory; files you write there persist for this conversation.

Reply concisely. Your final answer is sent to the person who wrote to you; use the
`send_message` tool only for progress updates or to reach another destination.
";

const DEFAULT_LOCAL_MD: &str = "";

/// `container.json`, in clawside's format: extra MCP servers and container settings for this agent.
const DEFAULT_CONTAINER_JSON: &str = "{\n  \"mcp_servers\": []\n}\n";

/// A chat of the host's own user with the default agent (the terminal's, the dashboard's):
/// the user as its owner, the chat wired to engage on every message, and the agent's
/// destination back into it.
struct OwnChat {
    user: &'static str,
    user_kind: &'static str,
    user_name: &'static str,
    chat: &'static str,
    channel_type: &'static str,
    platform_id: &'static str,
    chat_name: &'static str,
    wiring: &'static str,
    destination: &'static str,
}

const CLI_OWN_CHAT: OwnChat = OwnChat {
    user: CLI_USER,
    user_kind: "cli",
    user_name: "CLI (local)",
    chat: CLI_CHAT,
    channel_type: "cli",
    platform_id: "local",
    chat_name: "CLI",
    wiring: "wire:cli:local:default",
    destination: "cli",
};

const WEB_OWN_CHAT: OwnChat = OwnChat {
    user: WEB_USER,
    user_kind: "web",
    user_name: WEB_USER_NAME,
    chat: WEB_CHAT,
    channel_type: "web",
    platform_id: "owner",
    chat_name: "Web chat",
    wiring: "wire:web:owner:default",
    destination: "web",
};

/// Inserts what of `c` is missing; never overwrites an operator's edit.
fn ensure_own_chat(tx: &Connection, c: &OwnChat, now: &str) -> DbResult<()> {
    tx.execute(
        "INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![c.user, c.user_kind, c.user_name, now],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
         VALUES (?1, ?2, 'owner', ?1, ?3)",
        params![c.user, DEFAULT_AGENT, now],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO messaging_groups (id, channel_type, platform_id, name, is_group, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
        params![c.chat, c.channel_type, c.platform_id, c.chat_name, now],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
         VALUES (?1, ?2, ?3, 'pattern', '.', ?4)",
        params![c.wiring, c.chat, DEFAULT_AGENT, now],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO destinations (agent_group_id, name, display_name, channel_type, platform_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![DEFAULT_AGENT, c.destination, c.chat_name, c.channel_type, c.platform_id, now],
    )?;
    Ok(())
}

/// Creates whatever of the default setup is missing; returns the install id.
pub fn ensure_defaults(conn: &mut Connection, assistant_name: &str) -> DbResult<String> {
    let now = ts(Utc::now());
    let tx = conn.transaction()?;
    let install_id = db::set_meta_if_absent(&tx, "install_id", &random_id(12))?;
    tx.execute(
        "INSERT OR IGNORE INTO agent_groups (id, name, folder, created_at) VALUES (?1, ?2, ?1, ?3)",
        params![DEFAULT_AGENT, assistant_name, now],
    )?;
    ensure_own_chat(&tx, &CLI_OWN_CHAT, &now)?;
    tx.commit()?;
    Ok(install_id)
}

/// The web chat of the dashboard's owner, created when it is first used: user `web:owner`
/// (owner of the default agent), chat `web`/`owner` wired to the default agent, and the
/// agent's destination `web`. Like [`ensure_defaults`], it never overwrites an edit.
pub fn ensure_web_chat(conn: &mut Connection) -> DbResult<()> {
    let now = ts(Utc::now());
    let tx = conn.transaction()?;
    ensure_own_chat(&tx, &WEB_OWN_CHAT, &now)?;
    tx.commit()?;
    Ok(())
}

/// Creates `groups/<folder>/` with its default files where they are missing: the folder and
/// `skills/` mode 0700, the files 0600, whatever the umask (`CLAUDE.local.md` is the agent's
/// memory; no other local user reads it). An existing folder that others could enter is
/// tightened to 0700 ([`tighten_group_folder`]).
pub fn ensure_group_folder(groups_dir: &Path, folder: &str) -> std::io::Result<()> {
    let dir = groups_dir.join(folder);
    mailbox::private::create_dir_all(&dir.join("skills"))?;
    tighten_group_folder(groups_dir, folder)?;
    for (name, content) in [
        ("CLAUDE.md", DEFAULT_CLAUDE_MD),
        ("CLAUDE.local.md", DEFAULT_LOCAL_MD),
        ("container.json", DEFAULT_CONTAINER_JSON),
    ] {
        let path = dir.join(name);
        match mailbox::private::create_new(&path) {
            Ok(mut f) => std::io::Write::write_all(&mut f, content.as_bytes())?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes an agent folder private to its owner (removes the group and other bits of the folder
/// itself: what is inside cannot be reached without entering it). Returns whether it changed.
/// A missing folder is no change.
pub fn tighten_group_folder(groups_dir: &Path, folder: &str) -> std::io::Result<bool> {
    let dir = groups_dir.join(folder);
    let changed = mailbox::private::tighten(&dir)?;
    if changed {
        tracing::info!(folder = %dir.display(), "agent folder made private (mode 0700)");
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bootstrap_is_idempotent_and_keeps_edits() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(&dir.path().join("c.db")).unwrap();
        let mut conn = Connection::open(dir.path().join("c.db")).unwrap();
        drop(db);
        let first = ensure_defaults(&mut conn, "Andy").unwrap();
        conn.execute("UPDATE agent_groups SET name = 'Renamed'", [])
            .unwrap();
        let second = ensure_defaults(&mut conn, "Andy").unwrap();
        assert_eq!(first, second);
        let name: String = conn
            .query_row(
                "SELECT name FROM agent_groups WHERE id = 'default'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(name, "Renamed");
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM wirings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            db::role_of(&conn, CLI_USER, DEFAULT_AGENT)
                .unwrap()
                .as_deref(),
            Some("owner")
        );

        let groups = dir.path().join("groups");
        ensure_group_folder(&groups, "default").unwrap();
        std::fs::write(groups.join("default/CLAUDE.md"), "custom").unwrap();
        ensure_group_folder(&groups, "default").unwrap();
        assert_eq!(
            std::fs::read_to_string(groups.join("default/CLAUDE.md")).unwrap(),
            "custom"
        );
        assert!(groups.join("default/skills").is_dir());
        assert!(groups.join("default/container.json").is_file());
        assert!(groups.join("default/CLAUDE.local.md").is_file());
    }
}
