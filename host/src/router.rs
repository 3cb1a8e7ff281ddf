//! From a chat message to session mailboxes: find the chat and its wirings, decide per wiring
//! whether the agent engages, check the sender's permission (and the permission for admin
//! commands such as `/clear`), resolve the session, and write the message into its `inbound.db`.
//! Every refusal is recorded in `dropped_messages` with its reason.

use chrono::{DateTime, Utc};
use mailbox::{InboundKind, NewInbound, Route, command_of};
use serde_json::json;

use crate::HostError;
use crate::db::{self, Dropped, MessagingGroup, Wiring};
use crate::sessions::{self, SessionInfo};
use crate::supervisor::Supervisor;

/// A message as a channel adapter hands it over.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
    /// The platform's id of the message; with the chat and agent it forms the idempotency key.
    pub message_id: String,
    /// Stable platform identity, e.g. `telegram:123456`, `cli:local`.
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub is_mention: bool,
}

/// What happened to a message for one wired agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Written to the session's mailbox (or already there: `duplicate`).
    Accepted {
        agent_id: String,
        session_id: String,
        seq: i64,
        duplicate: bool,
    },
    /// Refused; `notice` is what the sender should be told, if anything.
    Refused {
        agent_id: Option<String>,
        reason: String,
        notice: Option<String>,
    },
}

/// Commands only an agent's owner or admins may send.
const ADMIN_COMMANDS: &[&str] = &["/clear"];

/// Whether the wiring's agent engages with a message. `sticky_until` is when the agent's
/// stickiness in this chat runs out (its last activity plus the sticky window), if it has a
/// session there.
pub fn engages(
    wiring: &Wiring,
    text: &str,
    is_mention: bool,
    sticky_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match wiring.engage_mode.as_str() {
        "pattern" => match wiring.engage_pattern.as_deref() {
            None | Some(".") => true,
            // A pattern that does not compile engages nobody (fail closed). The regex crate
            // matches in linear time, so a pattern cannot be used to stall the router.
            Some(p) => regex::Regex::new(p).is_ok_and(|re| re.is_match(text)),
        },
        "mention" => is_mention,
        "mention-sticky" => is_mention || sticky_until.is_some_and(|t| now <= t),
        _ => false,
    }
}

#[derive(Clone)]
pub struct Router {
    supervisor: Supervisor,
}

impl Router {
    pub fn new(supervisor: Supervisor) -> Self {
        Router { supervisor }
    }

    pub async fn route(&self, event: InboundEvent) -> Result<Vec<Routed>, HostError> {
        let shared = self.supervisor.shared();
        let sessions_dir = shared.config.sessions_dir();
        let ev = event.clone();
        let plan = shared
            .db
            .call(move |conn| {
                let now = Utc::now();
                let drop = |conn: &rusqlite::Connection, agent: Option<&str>, reason: &str| {
                    record_drop(conn, &ev, agent, reason, now)
                };
                let Some(chat) =
                    db::messaging_group_by_platform(conn, &ev.channel_type, &ev.platform_id)?
                else {
                    drop(conn, None, "unknown chat")?;
                    return Ok(vec![Plan::Refuse(Routed::Refused {
                        agent_id: None,
                        reason: "unknown chat".into(),
                        notice: None,
                    })]);
                };
                let wirings = db::wirings_of(conn, &chat.id)?;
                if wirings.is_empty() {
                    drop(conn, None, "no agent wired")?;
                    return Ok(vec![Plan::Refuse(Routed::Refused {
                        agent_id: None,
                        reason: "no agent is wired to this chat".into(),
                        notice: None,
                    })]);
                }
                let mut plans = Vec::new();
                for wiring in wirings {
                    plans.push(plan_one(conn, &sessions_dir, &chat, &wiring, &ev, now)?);
                }
                Ok(plans)
            })
            .await?;

        let mut out = Vec::new();
        for plan in plan {
            match plan {
                Plan::Refuse(r) => out.push(r),
                Plan::Deliver { info, trigger } => {
                    let msg = NewInbound {
                        id: format!(
                            "{}:{}:{}:{}",
                            event.channel_type, event.platform_id, event.message_id, info.agent.id
                        ),
                        kind: InboundKind::Chat,
                        trigger,
                        route: Route {
                            channel_type: event.channel_type.clone(),
                            platform_id: event.platform_id.clone(),
                            thread_id: event.thread_id.clone(),
                        },
                        sender_id: Some(event.sender_id.clone()),
                        sender_name: event.sender_name.clone(),
                        content: json!({ "text": event.text }),
                        process_after: None,
                    };
                    let inserted = self.supervisor.submit(&info, msg).await?;
                    out.push(Routed::Accepted {
                        agent_id: info.agent.id.clone(),
                        session_id: info.session.id.clone(),
                        seq: inserted.seq(),
                        duplicate: matches!(inserted, mailbox::inbound::Inserted::Duplicate(_)),
                    });
                }
            }
        }
        Ok(out)
    }
}

enum Plan {
    Refuse(Routed),
    Deliver {
        info: Box<SessionInfo>,
        trigger: bool,
    },
}

fn record_drop(
    conn: &rusqlite::Connection,
    ev: &InboundEvent,
    agent: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> db::DbResult<()> {
    db::record_dropped(
        conn,
        &Dropped {
            channel_type: &ev.channel_type,
            platform_id: &ev.platform_id,
            sender_id: Some(&ev.sender_id),
            sender_name: ev.sender_name.as_deref(),
            agent_group_id: agent,
            reason,
        },
        now,
    )
}

fn plan_one(
    conn: &mut rusqlite::Connection,
    sessions_dir: &std::path::Path,
    chat: &MessagingGroup,
    wiring: &Wiring,
    ev: &InboundEvent,
    now: DateTime<Utc>,
) -> db::DbResult<Plan> {
    let drop = |conn: &rusqlite::Connection, agent: Option<&str>, reason: &str| {
        record_drop(conn, ev, agent, reason, now)
    };
    let agent = wiring.agent_group_id.clone();
    let refuse = |reason: &str, notice: Option<String>| {
        Plan::Refuse(Routed::Refused {
            agent_id: Some(agent.clone()),
            reason: reason.to_owned(),
            notice,
        })
    };
    let sticky_until = if wiring.engage_mode == "mention-sticky" {
        db::find_active_session(conn, &agent, Some(&chat.id), ev.thread_id.as_deref())?
            .map(|s| s.last_activity + chrono::Duration::seconds(wiring.sticky_window_s))
    } else {
        None
    };
    let engaged = engages(wiring, &ev.text, ev.is_mention, sticky_until, now);
    if !engaged && wiring.ignored_message_policy != "accumulate" {
        drop(conn, Some(&agent), "not engaged")?;
        return Ok(refuse("the agent was not addressed", None));
    }
    let role = db::role_of(conn, &ev.sender_id, &agent)?;
    let known = role.is_some();
    if !known && (chat.unknown_sender_policy == "strict" || wiring.sender_scope == "known") {
        drop(conn, Some(&agent), "unknown sender")?;
        return Ok(refuse("the sender is not allowed to use this agent", None));
    }
    if engaged
        && let Some(cmd) = command_of(&ev.text)
        && ADMIN_COMMANDS.contains(&cmd.as_str())
        && !matches!(role.as_deref(), Some("owner" | "admin"))
    {
        drop(conn, Some(&agent), "admin command from non-admin")?;
        return Ok(refuse(
            "permission denied",
            Some(format!(
                "Only an owner or admin of this agent can use {cmd}."
            )),
        ));
    }
    let info = sessions::resolve(conn, sessions_dir, wiring, chat, ev.thread_id.as_deref())?;
    db::touch_session(conn, &info.session.id, now)?;
    Ok(Plan::Deliver {
        info: Box::new(info),
        trigger: engaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring(mode: &str, pattern: Option<&str>) -> Wiring {
        Wiring {
            id: "w".into(),
            messaging_group_id: "mg".into(),
            agent_group_id: "a".into(),
            engage_mode: mode.into(),
            engage_pattern: pattern.map(str::to_owned),
            sticky_window_s: 600,
            sender_scope: "all".into(),
            ignored_message_policy: "drop".into(),
            session_mode: "shared".into(),
            priority: 0,
        }
    }

    #[test]
    fn engage_table() {
        let now = Utc::now();
        let later = Some(now + chrono::Duration::seconds(10));
        let expired = Some(now - chrono::Duration::seconds(10));
        let table = [
            (wiring("pattern", Some(".")), "", false, None, true),
            (wiring("pattern", None), "hi", false, None, true),
            (
                wiring("pattern", Some("(?i)andy")),
                "hey Andy!",
                false,
                None,
                true,
            ),
            (
                wiring("pattern", Some("(unclosed")),
                "(unclosed",
                false,
                None,
                false,
            ),
            (wiring("pattern", Some("Andy")), "hello", false, None, false),
            (wiring("mention", None), "hi", false, None, false),
            (wiring("mention", None), "hi", true, None, true),
            (wiring("mention-sticky", None), "hi", false, later, true),
            (wiring("mention-sticky", None), "hi", false, expired, false),
            (wiring("mention-sticky", None), "hi", false, None, false),
            (wiring("mention-sticky", None), "hi", true, None, true),
            (wiring("bogus", None), "hi", true, None, false),
        ];
        for (w, text, mention, sticky, want) in table {
            assert_eq!(
                engages(&w, text, mention, sticky, now),
                want,
                "{} {:?} {text:?} mention={mention}",
                w.engage_mode,
                w.engage_pattern
            );
        }
    }
}
