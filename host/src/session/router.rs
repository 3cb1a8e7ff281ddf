//! From a chat message to session mailboxes: find the chat and its wirings, decide per wiring
//! whether the agent engages, check the sender (unknown senders per the chat's policy: refused,
//! welcome, or held for the owner's approval) and the permission for admin commands such as
//! `/clear` (an authorised one is marked in the row, `content.command`: the runner acts on that
//! mark, never on the text), answer `/status` without waking the agent, resolve the session,
//! fetch the message's files, and write the message into the session's `inbound.db`. A pairing
//! code sent in a private chat (`/start <code>`) is redeemed here, before any of that
//! (`db::pairing`). Every refusal is recorded in `dropped_messages` with its reason.

use chrono::{DateTime, Utc};
use mailbox::{InboundKind, NewInbound, Route, command_of};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::HostError;
use crate::db::{self, Dropped, MessagingGroup, Wiring};
use crate::session::first_contact::{
    self, FirstContacts, NO_AGENT_WIRED, UNKNOWN_CHAT, UNKNOWN_SENDER,
};
use crate::session::inbound_files::{self, FileSource, IncomingFile};
use crate::session::resolve::{self, SessionInfo};
use crate::session::supervisor::Supervisor;

/// A message as a channel adapter hands it over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub channel_type: String,
    pub platform_id: String,
    /// A forum topic (Telegram) or other sub-conversation of the chat.
    pub thread_id: Option<String>,
    /// The platform's id of the message; with the chat and agent it forms the idempotency key.
    pub message_id: String,
    /// Stable platform identity, e.g. `telegram:123456`, `cli:local`.
    pub sender_id: String,
    pub sender_name: Option<String>,
    /// Other names roles may have been granted to before the stable id was known
    /// (`telegram:@username`); the first message binds them to `sender_id`.
    #[serde(default)]
    pub sender_aliases: Vec<String>,
    pub text: String,
    pub is_mention: bool,
    /// A group chat (private chats engage mention modes without a mention).
    #[serde(default)]
    pub is_group: bool,
    /// Files the message carries; fetched only when an agent takes the message.
    #[serde(default)]
    pub files: Vec<IncomingFile>,
    /// Set when a held message is replayed after its sender was approved: it engaged when it
    /// arrived, so the stickiness that may have run out since does not matter.
    #[serde(default)]
    pub engaged_before: bool,
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
    /// A command the host answered itself (`/status`); `text` goes back to the chat.
    Answered { agent_id: String, text: String },
    /// The sender is unknown and the chat asks an owner first; the message is held.
    /// `new_request`: no request was pending, so the owners have to be asked now.
    AwaitingApproval {
        agent_id: String,
        approval_id: String,
        new_request: bool,
    },
}

/// Commands only an agent's owner or admins may send.
const ADMIN_COMMANDS: &[&str] = &["/clear", "/compact", "/stop"];
/// Messages held for one unknown sender while an owner decides; more are refused.
pub const MAX_HELD_MESSAGES: usize = 20;

/// Whether the wiring's agent engages with a message. `sticky_until` is when the agent's
/// stickiness in this scope (chat or topic) runs out, if it was engaged there. In private chats
/// the mention modes always engage: there is nobody else to address.
pub fn engages(
    wiring: &Wiring,
    text: &str,
    is_mention: bool,
    is_group: bool,
    sticky_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match wiring.engage_mode.as_str() {
        "pattern" => match wiring.engage_pattern.as_deref() {
            None | Some(".") => true,
            // A pattern that does not compile engages nobody (fail closed); create-agent
            // refuses such patterns in the first place. The regex crate matches in linear
            // time, so a pattern cannot be used to stall the router.
            Some(p) => regex::Regex::new(p).is_ok_and(|re| re.is_match(text)),
        },
        "mention" => is_mention || !is_group,
        "mention-sticky" => is_mention || !is_group || sticky_until.is_some_and(|t| now <= t),
        _ => false,
    }
}

/// Files are not fetched (channels without attachments).
pub struct NoFiles;

impl FileSource for NoFiles {
    fn fetch<'a>(
        &'a self,
        _file: &'a IncomingFile,
        _dest: &'a std::path::Path,
        _max_bytes: u64,
    ) -> futures::future::BoxFuture<'a, Result<u64, inbound_files::FetchError>> {
        Box::pin(async {
            Err(inbound_files::FetchError::Failed(
                "this channel cannot fetch files".into(),
            ))
        })
    }
}

#[derive(Clone)]
pub struct Router {
    supervisor: Supervisor,
    first_contacts: FirstContacts,
}

impl Router {
    pub fn new(supervisor: Supervisor) -> Self {
        Router {
            supervisor,
            first_contacts: FirstContacts::default(),
        }
    }

    /// Routes a message that carries no files.
    pub async fn route(&self, event: InboundEvent) -> Result<Vec<Routed>, HostError> {
        self.route_with(event, &NoFiles, 0).await
    }

    /// Routes a message, fetching its files from `files` (at most `max_file_bytes` each) for
    /// the agents that take it.
    pub async fn route_with(
        &self,
        event: InboundEvent,
        files: &dyn FileSource,
        max_file_bytes: u64,
    ) -> Result<Vec<Routed>, HostError> {
        let shared = self.supervisor.shared();
        let sessions_dir = shared.config.sessions_dir();
        let ev = event.clone();
        let seen = self.first_contacts.clone();
        let plan = shared
            .db
            .call(move |conn| {
                let now = Utc::now();
                let drop = |conn: &rusqlite::Connection, agent: Option<&str>, reason: &str| {
                    record_drop(conn, &seen, &ev, agent, reason, now)
                };
                let chat =
                    db::messaging_group_by_platform(conn, &ev.channel_type, &ev.platform_id)?;
                let wirings = match &chat {
                    Some(chat) => db::wirings_of(conn, &chat.id)?,
                    None => Vec::new(),
                };
                if let Some(code) = pairing_attempt(&ev, !wirings.is_empty()) {
                    return Ok(vec![Plan::Done(pair(conn, &seen, &ev, &code, now)?)]);
                }
                let Some(chat) = chat else {
                    drop(conn, None, UNKNOWN_CHAT)?;
                    return Ok(vec![Plan::Done(Routed::Refused {
                        agent_id: None,
                        reason: "unknown chat".into(),
                        notice: None,
                    })]);
                };
                if wirings.is_empty() {
                    drop(conn, None, NO_AGENT_WIRED)?;
                    return Ok(vec![Plan::Done(Routed::Refused {
                        agent_id: None,
                        reason: "no agent is wired to this chat".into(),
                        notice: None,
                    })]);
                }
                db::note_user(
                    conn,
                    &ev.sender_id,
                    ev.sender_name.as_deref(),
                    &ev.sender_aliases,
                    now,
                )?;
                let mut plans = Vec::new();
                for wiring in wirings {
                    plans.push(plan_one(
                        conn,
                        &seen,
                        &sessions_dir,
                        &chat,
                        &wiring,
                        &ev,
                        now,
                    )?);
                }
                Ok(plans)
            })
            .await?;

        let mut out = Vec::new();
        // Files are fetched once, for the first session that takes the message, and copied
        // to the others.
        let mut fetched: Option<(std::path::PathBuf, Vec<inbound_files::StoredFile>)> = None;
        let dir = inbound_files::message_dir(&event.platform_id, &event.message_id);
        for plan in plan {
            match plan {
                Plan::Done(r) => out.push(r),
                Plan::Answer { agent_id, info } => {
                    let text = crate::session::activity::describe(&info, &shared.config).await;
                    out.push(Routed::Answered { agent_id, text });
                }
                Plan::Stop { agent_id, info } => {
                    let failed = self.supervisor.stop_turn(&info.session.id).await;
                    let text = if failed == 0 {
                        format!(
                            "{} is not working on anything; nothing to stop.",
                            info.agent.name
                        )
                    } else {
                        format!("⏹ Stopped {}'s turn.", info.agent.name)
                    };
                    out.push(Routed::Answered { agent_id, text });
                }
                Plan::Deliver {
                    info,
                    trigger,
                    command,
                } => {
                    let mut content = json!({
                        "text": event.text,
                        "platform_message_id": event.message_id,
                    });
                    if let Some(command) = command {
                        content[mailbox::COMMAND_FIELD] = json!(command);
                    }
                    if !event.files.is_empty() {
                        let root = info.paths.inbound_files();
                        let stored = match &fetched {
                            Some((first_root, stored)) => {
                                let (from, to, d, s) = (
                                    first_root.clone(),
                                    root.clone(),
                                    dir.clone(),
                                    stored.clone(),
                                );
                                tokio::task::spawn_blocking(move || {
                                    inbound_files::copy_stored(&from, &to, &d, &s)
                                })
                                .await
                                .map_err(|e| HostError::Task(e.to_string()))?
                                .map_err(|e| HostError::io("copy inbound files", &root, e))?;
                                stored.clone()
                            }
                            None => {
                                let stored = inbound_files::fetch_all(
                                    files,
                                    &event.files,
                                    &root,
                                    &dir,
                                    max_file_bytes,
                                )
                                .await;
                                fetched = Some((root.clone(), stored.clone()));
                                stored
                            }
                        };
                        content["files"] = stored
                            .iter()
                            .map(|f| f.to_json(&dir))
                            .collect::<Vec<_>>()
                            .into();
                    }
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
                        content,
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
    /// Decided; nothing more to do than report it (refused, or held for an owner).
    Done(Routed),
    /// `/status`: describe what the agent of this session is doing.
    Answer {
        agent_id: String,
        info: Box<SessionInfo>,
    },
    /// `/stop`: stop the turn the agent of this session is working on.
    Stop {
        agent_id: String,
        info: Box<SessionInfo>,
    },
    Deliver {
        info: Box<SessionInfo>,
        trigger: bool,
        /// An admin command the sender may use, marked in the row for the runner.
        command: Option<String>,
    },
}

/// What a refused pairing code is answered with: the same for a wrong, an expired and a spent
/// code, so the answer tells a guesser nothing.
pub const PAIRING_REFUSED: &str = "That pairing code is not valid. A code works once, within ten \
     minutes of being made: run `clawbox pair` on the host for a new one.";
/// What a sender over the pairing rate limit is told.
pub const PAIRING_LIMITED: &str = "Too many pairing attempts; wait ten minutes before trying \
     again.";

/// The code in a message that tries to pair (db/pairing.rs), if it is one: in a private
/// Telegram chat, `/start <code>` (what a `t.me/<bot>?start=<code>` link sends) always is, and
/// a message that is nothing but a code-shaped word is one in a chat no agent is wired to yet.
/// The decision depends on the message and the chat only, never on which codes exist.
pub fn pairing_attempt(ev: &InboundEvent, wired: bool) -> Option<String> {
    if ev.is_group || ev.channel_type != "telegram" {
        return None;
    }
    let text = ev.text.trim();
    if command_of(text).as_deref() == Some("/start") {
        let arg = text
            .split_once(char::is_whitespace)
            .map_or("", |(_, arg)| arg.trim());
        return (!arg.is_empty()).then(|| arg.to_owned());
    }
    (!wired && db::pairing::normalize(text).is_some()).then(|| text.to_owned())
}

/// Redeems a pairing code for the sender and says how it went.
fn pair(
    conn: &mut rusqlite::Connection,
    seen: &FirstContacts,
    ev: &InboundEvent,
    code: &str,
    now: DateTime<Utc>,
) -> db::DbResult<Routed> {
    use db::pairing::{Claimant, Redeemed};
    let who = Claimant {
        channel_type: &ev.channel_type,
        platform_id: &ev.platform_id,
        user_id: &ev.sender_id,
        display_name: ev.sender_name.as_deref(),
    };
    let refused = |reason: &str, notice: &str| Routed::Refused {
        agent_id: None,
        reason: reason.to_owned(),
        notice: Some(notice.to_owned()),
    };
    Ok(match db::pairing::redeem(conn, code, who, now)? {
        Redeemed::Paired {
            agent_id,
            agent_name,
        } => {
            // Roles granted to the sender's username before bind to the numeric id now.
            db::note_user(
                conn,
                &ev.sender_id,
                ev.sender_name.as_deref(),
                &ev.sender_aliases,
                now,
            )?;
            tracing::info!(
                user = %ev.sender_id,
                agent = %agent_id,
                chat = %ev.platform_id,
                "paired: the sender owns the agent and this private chat is wired to it"
            );
            Routed::Answered {
                agent_id,
                text: format!(
                    "✅ Paired. You are the owner of {agent_name}, and this chat is wired to it: \
                     send a message to start."
                ),
            }
        }
        Redeemed::Refused => {
            record_drop(conn, seen, ev, None, "pairing code refused", now)?;
            tracing::warn!(user = %ev.sender_id, "a pairing code was refused");
            refused("pairing code refused", PAIRING_REFUSED)
        }
        Redeemed::TooManyAttempts => {
            record_drop(conn, seen, ev, None, "too many pairing attempts", now)?;
            tracing::warn!(user = %ev.sender_id, "pairing attempt over the rate limit");
            refused("too many pairing attempts", PAIRING_LIMITED)
        }
    })
}

/// Records a refusal in `dropped_messages`; the first of its kind for a stranger is logged
/// with the command that wires them (`first_contact`).
fn record_drop(
    conn: &rusqlite::Connection,
    seen: &FirstContacts,
    ev: &InboundEvent,
    agent: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> db::DbResult<()> {
    seen.note(
        conn,
        &first_contact::Refusal {
            channel_type: &ev.channel_type,
            platform_id: &ev.platform_id,
            sender_id: Some(&ev.sender_id),
            sender_name: ev.sender_name.as_deref(),
            agent,
            reason,
        },
    )?;
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
    seen: &FirstContacts,
    sessions_dir: &std::path::Path,
    chat: &MessagingGroup,
    wiring: &Wiring,
    ev: &InboundEvent,
    now: DateTime<Utc>,
) -> db::DbResult<Plan> {
    let drop = |conn: &rusqlite::Connection, agent: Option<&str>, reason: &str| {
        record_drop(conn, seen, ev, agent, reason, now)
    };
    let agent = wiring.agent_group_id.clone();
    let refuse = |reason: &str, notice: Option<String>| {
        Plan::Done(Routed::Refused {
            agent_id: Some(agent.clone()),
            reason: reason.to_owned(),
            notice,
        })
    };
    let scope = ev.thread_id.as_deref().unwrap_or_default();
    let sticky_until = if wiring.engage_mode == "mention-sticky" {
        db::engagement(conn, &agent, &chat.id, scope)?
            .map(|last| last + chrono::Duration::seconds(wiring.sticky_window_s))
    } else {
        None
    };
    let engaged = ev.engaged_before
        || engages(
            wiring,
            &ev.text,
            ev.is_mention,
            ev.is_group,
            sticky_until,
            now,
        );
    if !engaged && wiring.ignored_message_policy != "accumulate" {
        drop(conn, Some(&agent), "not engaged")?;
        return Ok(refuse("the agent was not addressed", None));
    }
    let role = db::role_of(conn, &ev.sender_id, &agent)?;
    if role.is_none() {
        let policy = if wiring.sender_scope == "known" {
            "strict"
        } else {
            chat.unknown_sender_policy.as_str()
        };
        match policy {
            "public" => {}
            "request_approval" if engaged => {
                return hold(conn, seen, chat, &agent, ev, now);
            }
            _ => {
                drop(conn, Some(&agent), UNKNOWN_SENDER)?;
                return Ok(refuse("the sender is not allowed to use this agent", None));
            }
        }
    }
    let text_command = command_of(&ev.text);
    // The host alone decides whether a command is carried out: an admin command from an owner
    // or admin is marked in the row (`content.command`), and the runner acts on nothing else.
    // Addressed from anyone else it is refused with a notice; unaddressed (kept as context) it
    // is ordinary text.
    let mut authorised = None;
    if let Some(cmd) = text_command.as_deref()
        && ADMIN_COMMANDS.contains(&cmd)
    {
        if matches!(role.as_deref(), Some("owner" | "admin")) {
            authorised = Some(cmd.to_owned());
        } else if engaged {
            drop(conn, Some(&agent), "admin command from non-admin")?;
            return Ok(refuse(
                "permission denied",
                Some(format!(
                    "Only an owner or admin of this agent can use {cmd}."
                )),
            ));
        }
    }
    let command = if engaged { text_command } else { None };
    if engaged && wiring.engage_mode == "mention-sticky" {
        db::touch_engagement(conn, &agent, &chat.id, scope, now)?;
    }
    let info = resolve::resolve(conn, sessions_dir, wiring, chat, ev.thread_id.as_deref())?;
    if command.as_deref() == Some("/status") {
        return Ok(Plan::Answer {
            agent_id: agent,
            info: Box::new(info),
        });
    }
    if command.as_deref() == Some("/stop") {
        return Ok(Plan::Stop {
            agent_id: agent,
            info: Box::new(info),
        });
    }
    db::touch_session(conn, &info.session.id, now)?;
    Ok(Plan::Deliver {
        info: Box::new(info),
        trigger: engaged,
        command: authorised,
    })
}

/// Holds a message of an unknown sender until an owner decides (or refuses it when the sender
/// was denied, or too many wait already).
fn hold(
    conn: &rusqlite::Connection,
    seen: &FirstContacts,
    chat: &MessagingGroup,
    agent: &str,
    ev: &InboundEvent,
    now: DateTime<Utc>,
) -> db::DbResult<Plan> {
    let refused = |reason: &str| {
        Plan::Done(Routed::Refused {
            agent_id: Some(agent.to_owned()),
            reason: reason.to_owned(),
            notice: None,
        })
    };
    let event = serde_json::to_string(ev).map_err(|e| db::DbError::Malformed(e.to_string()))?;
    match db::hold_message(
        conn,
        agent,
        &chat.id,
        db::HeldSender {
            id: &ev.sender_id,
            name: ev.sender_name.as_deref(),
        },
        &event,
        MAX_HELD_MESSAGES,
        now,
    )? {
        db::Held::Denied => {
            record_drop(
                conn,
                seen,
                ev,
                Some(agent),
                "sender denied by an owner",
                now,
            )?;
            Ok(refused("an owner declined this sender"))
        }
        db::Held::Full => {
            record_drop(
                conn,
                seen,
                ev,
                Some(agent),
                "too many messages awaiting approval",
                now,
            )?;
            Ok(refused(
                "too many messages are waiting for an owner's approval",
            ))
        }
        db::Held::Queued {
            approval_id,
            new_request,
        } => Ok(Plan::Done(Routed::AwaitingApproval {
            agent_id: agent.to_owned(),
            approval_id,
            new_request,
        })),
    }
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
    fn pairing_attempts_are_told_by_the_message_and_the_chat() {
        let ev = |text: &str, is_group: bool, channel: &str| InboundEvent {
            channel_type: channel.into(),
            text: text.into(),
            is_group,
            ..InboundEvent::default()
        };
        let table = [
            // (text, group, channel, chat wired, code)
            (
                "/start ABCD-EFGH",
                false,
                "telegram",
                false,
                Some("ABCD-EFGH"),
            ),
            ("/start abcdefgh", false, "telegram", true, Some("abcdefgh")),
            (
                "/start@clawbox_bot XYZ",
                false,
                "telegram",
                false,
                Some("XYZ"),
            ),
            ("/start", false, "telegram", false, None),
            ("ABCD-EFGH", false, "telegram", false, Some("ABCD-EFGH")),
            ("abcd efgh", false, "telegram", false, Some("abcd efgh")),
            // A wired chat's messages that look like a code go to its agent.
            ("ABCD-EFGH", false, "telegram", true, None),
            ("hello there", false, "telegram", false, None),
            // Never in groups, never on other channels.
            ("/start ABCD-EFGH", true, "telegram", false, None),
            ("ABCD-EFGH", true, "telegram", false, None),
            ("/start ABCD-EFGH", false, "cli", false, None),
        ];
        for (text, group, channel, wired, want) in table {
            assert_eq!(
                pairing_attempt(&ev(text, group, channel), wired).as_deref(),
                want,
                "{text:?} group={group} {channel} wired={wired}"
            );
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
                engages(&w, text, mention, true, sticky, now),
                want,
                "{} {:?} {text:?} mention={mention}",
                w.engage_mode,
                w.engage_pattern
            );
        }
        // Private chats: mention modes always engage, patterns still apply.
        for (mode, pattern, want) in [
            ("mention", None, true),
            ("mention-sticky", None, true),
            ("pattern", Some("^!ask"), false),
        ] {
            assert_eq!(
                engages(&wiring(mode, pattern), "hi", false, false, None, now),
                want,
                "{mode} in a private chat"
            );
        }
    }
}
