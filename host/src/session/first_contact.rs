//! First contact: a message the router refuses because of how the host is set up (a chat no
//! agent is wired to, a sender the agent does not know) is logged once at INFO with the exact
//! `clawbox create-agent` command that lets the next one through. Owns that command
//! ([`wiring_command`], also printed by `clawbox dropped` and the dashboard) and the "once":
//! the `dropped_messages` audit knows whether the chat (or sender) was refused for that reason
//! before, across restarts; [`FirstContacts`] remembers what was looked up, so a busy stranger
//! costs one lookup per host run. Recording the refusal itself stays in `router.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::db::DbResult;
use crate::db::bootstrap::DEFAULT_AGENT;

/// `dropped_messages.reason` of a message from a chat the host does not know.
pub const UNKNOWN_CHAT: &str = "unknown chat";
/// … of a known chat without any wiring (its agents were removed).
pub const NO_AGENT_WIRED: &str = "no agent wired";
/// … of a sender without a role, in a chat whose policy is strict.
pub const UNKNOWN_SENDER: &str = "unknown sender";
/// … recorded (no message refused) when the bot is added to a group no agent is wired to.
pub const ADDED_TO_UNKNOWN_CHAT: &str = "bot added to an unknown chat";

/// Keys looked up, at most this many; past it the set starts again (a lookup more, not a log
/// line more: the database still knows).
const REMEMBERED: usize = 10_000;

/// The command that makes a refused message's successor go through, for the refusals an
/// operator fixes by wiring; `None` for other reasons and for chats `create-agent` does not
/// wire (only Telegram ones: the terminal is always wired). A chat gets its sender as the
/// agent's owner, so their next message is answered whatever the chat's sender policy; a known
/// chat's stranger gets the approval policy, so an owner is asked instead of the message being
/// dropped.
pub fn wiring_command(
    channel_type: &str,
    platform_id: &str,
    agent: Option<&str>,
    sender_id: Option<&str>,
    reason: &str,
) -> Option<String> {
    if channel_type != "telegram" {
        return None;
    }
    // Numbers only: the command is meant to be pasted into a shell.
    let chat: i64 = platform_id.parse().ok()?;
    let agent = agent.unwrap_or(DEFAULT_AGENT);
    let owner = sender_id
        .and_then(|s| s.strip_prefix("telegram:"))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(String::new(), |n| format!(" --owner-user-id telegram:{n}"));
    match reason {
        UNKNOWN_CHAT | NO_AGENT_WIRED | ADDED_TO_UNKNOWN_CHAT => Some(format!(
            "clawbox create-agent --agent-id {agent} --telegram-chat-id {chat}{owner}"
        )),
        UNKNOWN_SENDER => Some(format!(
            "clawbox create-agent --agent-id {agent} --telegram-chat-id {chat} \
             --unknown-sender-policy request_approval"
        )),
        _ => None,
    }
}

/// The first-contact keys this host has looked up. Cheap to clone.
#[derive(Clone, Default)]
pub struct FirstContacts {
    // std Mutex: held for one insert, never across an await.
    seen: Arc<Mutex<HashSet<String>>>,
}

/// One refusal, as [`FirstContacts::note`] needs it.
pub struct Refusal<'a> {
    pub channel_type: &'a str,
    pub platform_id: &'a str,
    pub sender_id: Option<&'a str>,
    pub sender_name: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub reason: &'a str,
}

impl FirstContacts {
    /// Logs `refusal` with its wiring command if it is the first of its kind for the chat (for
    /// an unknown sender: for that sender in the chat). Call it before the refusal is recorded
    /// in `dropped_messages`.
    pub fn note(&self, conn: &rusqlite::Connection, refusal: &Refusal<'_>) -> DbResult<()> {
        let Some(command) = wiring_command(
            refusal.channel_type,
            refusal.platform_id,
            refusal.agent,
            refusal.sender_id,
            refusal.reason,
        ) else {
            return Ok(());
        };
        let per_sender = refusal.reason == UNKNOWN_SENDER;
        let sender = if per_sender { refusal.sender_id } else { None };
        let key = format!(
            "{}:{}:{}:{}",
            refusal.channel_type,
            refusal.platform_id,
            refusal.reason,
            sender.unwrap_or_default()
        );
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            if !seen.insert(key) {
                return Ok(());
            }
        }
        if crate::db::dropped_before(
            conn,
            refusal.channel_type,
            refusal.platform_id,
            refusal.reason,
            sender,
        )? {
            return Ok(());
        }
        log_first_contact(refusal, &command);
        Ok(())
    }
}

/// The INFO line of a first contact.
pub fn log_first_contact(refusal: &Refusal<'_>, command: &str) {
    let who = match (refusal.sender_name, refusal.sender_id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (None, Some(id)) => id.to_owned(),
        (_, None) => "someone".to_owned(),
    };
    let chat = format!("{}:{}", refusal.channel_type, refusal.platform_id);
    match refusal.reason {
        UNKNOWN_SENDER => tracing::info!(
            chat,
            sender = refusal.sender_id,
            "a message from {who}, who has no role on agent {}, was refused in chat {chat}; \
             to have its owners asked about such senders: {command}",
            refusal.agent.unwrap_or(DEFAULT_AGENT)
        ),
        ADDED_TO_UNKNOWN_CHAT => tracing::info!(
            chat,
            sender = refusal.sender_id,
            "{who} added the bot to chat {chat}, which no agent is wired to; to wire it: {command}"
        ),
        _ => tracing::info!(
            chat,
            sender = refusal.sender_id,
            "a message from {who} was refused: no agent is wired to chat {chat}; to wire it: \
             {command}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiring_commands_by_reason() {
        let table = [
            (
                (
                    "telegram",
                    "-1001234",
                    Some("sales"),
                    Some("telegram:42"),
                    UNKNOWN_CHAT,
                ),
                Some(
                    "clawbox create-agent --agent-id sales --telegram-chat-id -1001234 \
                     --owner-user-id telegram:42",
                ),
            ),
            (
                ("telegram", "42", None, None, NO_AGENT_WIRED),
                Some("clawbox create-agent --agent-id default --telegram-chat-id 42"),
            ),
            (
                (
                    "telegram",
                    "-5",
                    None,
                    Some("telegram:@bob"),
                    ADDED_TO_UNKNOWN_CHAT,
                ),
                Some("clawbox create-agent --agent-id default --telegram-chat-id -5"),
            ),
            (
                (
                    "telegram",
                    "-5",
                    Some("a"),
                    Some("telegram:7"),
                    UNKNOWN_SENDER,
                ),
                Some(
                    "clawbox create-agent --agent-id a --telegram-chat-id -5 \
                     --unknown-sender-policy request_approval",
                ),
            ),
            (
                (
                    "telegram",
                    "-5",
                    Some("a"),
                    Some("telegram:7"),
                    "not engaged",
                ),
                None,
            ),
            (("telegram", "42; rm -rf /", None, None, UNKNOWN_CHAT), None),
            (
                ("telegram", "42", None, Some("telegram:1; rm"), UNKNOWN_CHAT),
                Some("clawbox create-agent --agent-id default --telegram-chat-id 42"),
            ),
            (("cli", "local", None, None, UNKNOWN_CHAT), None),
        ];
        for ((channel, platform, agent, sender, reason), want) in table {
            assert_eq!(
                wiring_command(channel, platform, agent, sender, reason).as_deref(),
                want,
                "{channel}:{platform} {reason}"
            );
        }
    }
}
