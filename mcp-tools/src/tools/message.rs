//! `send_message`, `edit_message`, `add_reaction`: write rows into `outbound.db` for the host
//! to deliver. Owns the choice of route (shared with `send_file`); delivery, the destination
//! ACL and retries are the host's.

use chrono::Utc;
use mailbox::seq::Parity;
use mailbox::{
    Destination, InboundKind, InboundReader, NewOutbound, OutboundDb, OutboundKind, Route,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Deserializer};

use super::{Context, Tools};
use crate::error::{ToolError, tool_result};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SendMessageArgs {
    /// The message text, as the recipient should read it.
    pub text: String,
    /// A destination name from your context; leave it out for this chat.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EditMessageArgs {
    /// The id of one of your own earlier messages: the number send_message or send_file
    /// returned (always odd).
    #[serde(deserialize_with = "message_id")]
    #[schemars(with = "i64")]
    pub message_id: i64,
    /// The complete new text of the message (it replaces the old text).
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddReactionArgs {
    /// The id of the message to react to: a user's message (the id in `<message id="…">`)
    /// or one of your own.
    #[serde(deserialize_with = "message_id")]
    #[schemars(with = "i64")]
    pub message_id: i64,
    /// One emoji, e.g. 👍 (at most 16 characters, no spaces).
    pub emoji: String,
}

/// Longest accepted `emoji`, in characters: room for a ZWJ sequence such as a family emoji.
const MAX_EMOJI_CHARS: usize = 16;

#[tool_router(router = message_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Send a chat message right away, while you keep working: a progress \
                       update in this chat, or a message to another destination (`to`). Your \
                       final answer at the end of the turn is delivered without this tool. \
                       Returns the message id.",
        annotations(destructive_hint = false, open_world_hint = true)
    )]
    async fn send_message(&self, Parameters(args): Parameters<SendMessageArgs>) -> CallToolResult {
        tool_result("send_message", send_message(&self.ctx, args).await)
    }

    #[tool(
        description = "Change the text of a message you sent earlier in this conversation. \
                       `message_id` is the id send_message or send_file returned; messages \
                       from users cannot be edited. The edit goes to the same chat as the \
                       original. Returns the id of the edit.",
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn edit_message(&self, Parameters(args): Parameters<EditMessageArgs>) -> CallToolResult {
        tool_result("edit_message", edit_message(&self.ctx, args).await)
    }

    #[tool(
        description = "React to a chat message with an emoji, e.g. 👍 to acknowledge a \
                       request without a reply. `message_id` is the id of a user's message \
                       (`<message id=\"…\">`) or of one of your own. Returns the id of the \
                       reaction.",
        annotations(destructive_hint = false, open_world_hint = true)
    )]
    async fn add_reaction(&self, Parameters(args): Parameters<AddReactionArgs>) -> CallToolResult {
        tool_result("add_reaction", add_reaction(&self.ctx, args).await)
    }
}

/// A message id as a model gives it: a number, or the same number as a string (the
/// `<message id="12">` attribute it copies from is text).
fn message_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "message_id must be a message's number, got {text:?}"
            ))
        }),
    }
}

async fn edit_message(ctx: &Context, args: EditMessageArgs) -> Result<String, ToolError> {
    if args.text.trim().is_empty() {
        return Err(ToolError::EmptyText);
    }
    let seq = args.message_id;
    if seq <= 0 {
        return Err(ToolError::UnknownMessage { seq });
    }
    if Parity::of(seq) == Parity::Inbound {
        return Err(ToolError::NotOwnMessage { seq });
    }
    let session = ctx.session.clone();
    tokio::task::spawn_blocking(move || {
        let mut outbound = OutboundDb::open(&session)?;
        let Some(original) = outbound.message(seq)? else {
            return Err(ToolError::UnknownMessage { seq });
        };
        match original.kind {
            OutboundKind::Chat => {}
            OutboundKind::Edit => {
                return Err(ToolError::NotChatMessage {
                    seq,
                    what: "an edit",
                    hint: "pass the id of the message you first sent",
                });
            }
            OutboundKind::Reaction => {
                return Err(ToolError::NotChatMessage {
                    seq,
                    what: "a reaction",
                    hint: "reactions cannot be edited; add another one with add_reaction",
                });
            }
            OutboundKind::Request => {
                return Err(ToolError::NotChatMessage {
                    seq,
                    what: "a request to the host",
                    hint: "only messages you sent to a chat can be edited",
                });
            }
        }
        let edit = NewOutbound {
            id: new_message_id(),
            kind: OutboundKind::Edit,
            in_reply_to: None,
            route: original.route,
            content: serde_json::json!({ "edit_of": seq, "text": args.text }),
        };
        let edit_seq = outbound.insert_message(&edit, Utc::now())?;
        tracing::info!(edit_seq, edit_of = seq, id = %edit.id, "edit written");
        Ok(format!("edited message {seq} (id {edit_seq})"))
    })
    .await?
}

async fn add_reaction(ctx: &Context, args: AddReactionArgs) -> Result<String, ToolError> {
    let emoji = args.emoji.trim().to_owned();
    check_emoji(&emoji)?;
    let seq = args.message_id;
    if seq <= 0 {
        return Err(ToolError::UnknownMessage { seq });
    }
    let session = ctx.session.clone();
    tokio::task::spawn_blocking(move || {
        let not_chat = |what| ToolError::NotChatMessage {
            seq,
            what,
            hint: "reactions go on chat messages",
        };
        let mut outbound = OutboundDb::open(&session)?;
        // The route of the message reacted to: a reaction lands where that message is.
        let route = match Parity::of(seq) {
            Parity::Inbound => {
                let inbound = InboundReader::open(&session.inbound_db())?;
                let Some(target) = inbound.get(seq)? else {
                    return Err(ToolError::UnknownMessage { seq });
                };
                match target.kind {
                    InboundKind::Chat => target.route,
                    InboundKind::Task => return Err(not_chat("a scheduled task")),
                    InboundKind::System => return Err(not_chat("a system notice")),
                }
            }
            Parity::Outbound => {
                let Some(target) = outbound.message(seq)? else {
                    return Err(ToolError::UnknownMessage { seq });
                };
                match target.kind {
                    OutboundKind::Chat => target.route,
                    OutboundKind::Edit => return Err(not_chat("an edit")),
                    OutboundKind::Reaction => return Err(not_chat("a reaction")),
                    OutboundKind::Request => return Err(not_chat("a request to the host")),
                }
            }
        };
        let reaction = NewOutbound {
            id: new_message_id(),
            kind: OutboundKind::Reaction,
            in_reply_to: None,
            route,
            content: serde_json::json!({ "reaction_to": seq, "emoji": emoji }),
        };
        let reaction_seq = outbound.insert_message(&reaction, Utc::now())?;
        tracing::info!(reaction_seq, reaction_to = seq, "reaction written");
        Ok(format!(
            "reacted {emoji} to message {seq} (id {reaction_seq})"
        ))
    })
    .await?
}

/// An emoji as reactions take it: one short token, nothing invisible around it.
fn check_emoji(emoji: &str) -> Result<(), ToolError> {
    let bad = |rule| {
        Err(ToolError::BadEmoji {
            emoji: emoji.to_owned(),
            rule,
        })
    };
    if emoji.is_empty() {
        return bad("it is empty");
    }
    if emoji.chars().count() > MAX_EMOJI_CHARS {
        return bad("give one emoji, at most 16 characters");
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains spaces or control characters; give one emoji");
    }
    Ok(())
}

async fn send_message(ctx: &Context, args: SendMessageArgs) -> Result<String, ToolError> {
    if args.text.trim().is_empty() {
        return Err(ToolError::EmptyText);
    }
    // An empty `to` is how some models say "no destination".
    let to = args
        .to
        .map(|to| to.trim().to_owned())
        .filter(|to| !to.is_empty());
    let session = ctx.session.clone();
    // SQLite is blocking: keep it off the async threads.
    tokio::task::spawn_blocking(move || {
        // Opened per call: the host rewrites routing and destinations at any time.
        let inbound = InboundReader::open(&session.inbound_db())?;
        let route = choose_route(to.as_deref(), inbound.routing()?, &inbound.destinations()?)?;
        let message = NewOutbound {
            id: new_message_id(),
            kind: OutboundKind::Chat,
            in_reply_to: None,
            route,
            content: serde_json::json!({ "text": args.text }),
        };
        let seq = OutboundDb::open(&session)?.insert_message(&message, Utc::now())?;
        tracing::info!(seq, id = %message.id, to = ?to, "message written");
        Ok(match to {
            Some(name) => format!("sent to {name} (id {seq})"),
            None => format!("sent (id {seq})"),
        })
    })
    .await?
}

/// `out-` and 128 random bits: unique without coordinating with agent-runner's ids. Also the
/// name of a message's folder under `outbound/files/`, so it must stay a plain file name.
pub(super) fn new_message_id() -> String {
    format!("out-{:032x}", rand::random::<u128>())
}

/// The route of a message: the destination named `to`, or the session's own chat.
///
/// A named destination on the session's own chat keeps the session's thread (so a reply to
/// "this chat" by name lands in the same topic); one elsewhere uses its own route.
pub(super) fn choose_route(
    to: Option<&str>,
    session: Option<Route>,
    destinations: &[Destination],
) -> Result<Route, ToolError> {
    let names = || destinations.iter().map(|d| d.name.clone()).collect();
    let Some(name) = to else {
        return session.ok_or_else(|| ToolError::NoDefaultRoute { valid: names() });
    };
    let Some(dest) = destinations.iter().find(|d| d.name == name) else {
        return Err(ToolError::UnknownDestination {
            name: name.to_owned(),
            valid: names(),
        });
    };
    let mut route = dest.route.clone();
    if let Some(session) = session
        && route.thread_id.is_none()
        && route.channel_type == session.channel_type
        && route.platform_id == session.platform_id
    {
        route.thread_id = session.thread_id;
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(channel: &str, platform: &str, thread: Option<&str>) -> Route {
        Route {
            channel_type: channel.into(),
            platform_id: platform.into(),
            thread_id: thread.map(Into::into),
        }
    }

    fn dest(name: &str, route: Route) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            route,
        }
    }

    #[test]
    fn route_choice() {
        let session = Some(route("telegram", "100", Some("7")));
        let dests = [
            dest("family", route("telegram", "100", None)),
            dest("work", route("telegram", "200", None)),
            dest("topic", route("telegram", "100", Some("9"))),
        ];
        /// (to, session routing, route or error)
        type Case = (
            Option<&'static str>,
            Option<Route>,
            Result<Route, &'static str>,
        );
        let table: [Case; 6] = [
            (
                None,
                session.clone(),
                Ok(route("telegram", "100", Some("7"))),
            ),
            (
                Some("family"),
                session.clone(),
                Ok(route("telegram", "100", Some("7"))),
            ),
            (
                Some("work"),
                session.clone(),
                Ok(route("telegram", "200", None)),
            ),
            (
                Some("topic"),
                session.clone(),
                Ok(route("telegram", "100", Some("9"))),
            ),
            (
                Some("nope"),
                session,
                Err("unknown destination \"nope\"; valid destinations: family, work, topic"),
            ),
            (
                None,
                None,
                Err(
                    "this session has no default chat to reply to; pass `to`: valid destinations: family, work, topic",
                ),
            ),
        ];
        for (to, session, want) in table {
            let got = choose_route(to, session, &dests).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{to:?}");
        }
        assert_eq!(
            choose_route(Some("x"), None, &[]).unwrap_err().to_string(),
            "unknown destination \"x\"; this session has no destinations"
        );
    }

    #[test]
    fn emoji_rules() {
        let table = [
            ("👍", Ok(())),
            ("❤️", Ok(())),
            ("👨‍👩‍👧", Ok(())),
            ("ok", Ok(())),
            ("", Err("invalid emoji \"\": it is empty")),
            ("👍 👍", Err("contains spaces")),
            ("👍\n", Err("contains spaces")),
            ("a\u{7}", Err("control characters")),
            ("abcdefghijklmnopq", Err("at most 16 characters")),
        ];
        for (emoji, want) in table {
            match (check_emoji(emoji), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{emoji:?}: {e}"),
                (got, want) => panic!("{emoji:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn message_ids_are_distinct() {
        let (a, b) = (new_message_id(), new_message_id());
        assert_ne!(a, b);
        assert!(a.starts_with("out-") && a.len() == 36, "{a}");
    }
}
