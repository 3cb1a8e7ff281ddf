//! Typed rows of the two session databases.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// Where a message came from or goes to: a chat on a channel, optionally a thread in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

impl Route {
    pub fn new(channel_type: impl Into<String>, platform_id: impl Into<String>) -> Self {
        Route {
            channel_type: channel_type.into(),
            platform_id: platform_id.into(),
            thread_id: None,
        }
    }
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub(crate) fn parse(table: &'static str, s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::Malformed {
                        table,
                        detail: format!("unknown {} {other:?}", stringify!($name)),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What an inbound row is.
    InboundKind {
        /// A chat message from a user: content `{"text": …}`.
        Chat = "chat",
        /// A scheduled task firing: content `{"prompt": …}`.
        Task = "task",
        /// A notice from the host to the agent (e.g. a reply that could not be delivered).
        System = "system",
    }
}

text_enum! {
    /// Lifecycle of an inbound row, owned by the host (`messages_in.status`).
    InboundStatus {
        Pending = "pending",
        Completed = "completed",
        Failed = "failed",
    }
}

text_enum! {
    /// What an outbound row asks the host to do.
    OutboundKind {
        /// A message to a chat: content `{"text": …, "files": ["name", …]}` (files optional, each
        /// stored at `outbound/files/<message id>/<name>`).
        Chat = "chat",
        /// Replace the text of an earlier outbound message: content `{"edit_of": seq, "text": …}`.
        Edit = "edit",
        /// React to a message (inbound: even seq, outbound: odd seq): content
        /// `{"reaction_to": seq, "emoji": "👍"}`.
        Reaction = "reaction",
        /// A question for the host, not a message to a chat: content `{"op": …, "args": {…}}`
        /// (see [`crate::request`]). The host answers it in `inbound.responses`; the route is a
        /// placeholder ([`crate::request::HOST_ROUTE`]).
        Request = "request",
    }
}

text_enum! {
    /// The container's verdict on one inbound message (`outbound.acks`).
    AckStatus {
        Processing = "processing",
        Completed = "completed",
        Failed = "failed",
    }
}

text_enum! {
    /// The host's record of one outbound row's delivery (`inbound.delivery`).
    DeliveryStatus {
        /// Seen, not yet attempted.
        Pending = "pending",
        /// An attempt is under way or was interrupted; retried on restart (at-least-once).
        Sending = "sending",
        Delivered = "delivered",
        /// Gave up after `MAX_DELIVERY_ATTEMPTS` or a permanent error.
        Failed = "failed",
    }
}

text_enum! {
    /// What the runner is doing, for `clawbox status` and the host's liveness tolerance.
    Activity {
        Starting = "starting",
        Idle = "idle",
        Model = "model",
        Tool = "tool",
    }
}

/// A message the host is about to write into `inbound.db`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    /// Idempotency key derived from the platform, e.g. `tg:<chat>:<message_id>:<agent>`.
    pub id: String,
    pub kind: InboundKind,
    /// `false`: context only (accumulated), does not start a turn by itself.
    pub trigger: bool,
    pub route: Route,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    pub content: Value,
    /// Not before this time (scheduled tasks); `None` = now.
    pub process_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub seq: i64,
    pub id: String,
    pub kind: InboundKind,
    pub created_at: DateTime<Utc>,
    pub status: InboundStatus,
    pub process_after: Option<DateTime<Utc>>,
    /// Attempts that ended without a verdict (runner died or went silent).
    pub tries: u32,
    pub trigger: bool,
    pub route: Route,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    pub content: Value,
    pub error: Option<String>,
    /// What the container reported with its verdict besides the status (see [`Ack::detail`]),
    /// folded by the host together with the status.
    pub detail: Option<Value>,
}

impl InboundMessage {
    /// The attempt number a claim of this row carries now (1-based).
    pub fn attempt(&self) -> u32 {
        self.tries + 1
    }

    /// The `text` field of the content, if any.
    pub fn text(&self) -> Option<&str> {
        self.content.get("text").and_then(Value::as_str)
    }

    /// The command the host authorised this chat message to carry out (`"/clear"`), from
    /// `content.command` ([`COMMAND_FIELD`]). A text that merely starts with a command is not
    /// one: only the host knows the sender's role, so the runner acts on this field alone.
    pub fn authorised_command(&self) -> Option<&str> {
        if self.kind != InboundKind::Chat {
            return None;
        }
        self.content.get(COMMAND_FIELD).and_then(Value::as_str)
    }
}

/// The content field in which the host marks a chat message's command as authorised (the
/// sender may use it); see [`InboundMessage::authorised_command`].
pub const COMMAND_FIELD: &str = "command";

/// A message the container is about to write into `outbound.db`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbound {
    pub id: String,
    pub kind: OutboundKind,
    /// Seq of the inbound message this answers, if any.
    pub in_reply_to: Option<i64>,
    pub route: Route,
    pub content: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub seq: i64,
    pub id: String,
    pub kind: OutboundKind,
    pub in_reply_to: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub route: Route,
    pub content: Value,
}

impl OutboundMessage {
    pub fn text(&self) -> Option<&str> {
        self.content.get("text").and_then(Value::as_str)
    }
}

/// One ack row. Acks are append-only; the latest per message wins.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// Monotonic row id: the host's cursor into the ack log.
    pub id: i64,
    pub message_seq: i64,
    pub attempt: u32,
    pub status: AckStatus,
    pub error: Option<String>,
    /// Structured facts about the verdict for the host's records, e.g. the outcome of a
    /// scheduled task's script: `{"script": {"outcome": "skip", …}}`.
    pub detail: Option<Value>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub out_seq: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub platform_message_id: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A name the agent may send to (a copy of the central ACL, refreshed by the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub name: String,
    pub display_name: Option<String>,
    pub route: Route,
}

/// The runner's self-description (single row in `outbound.runner_state`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerState {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub activity: Activity,
    /// Model step within the current turn (0 when idle).
    pub step: u32,
    /// Tool being called when `activity` is `Tool`.
    pub tool: Option<String>,
    /// The running tool's declared timeout; the host waits at least this long before calling the
    /// runner stuck.
    pub tool_timeout_ms: Option<u64>,
    pub updated_at: DateTime<Utc>,
}

/// What folding one ack did to an inbound row (host side).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub seq: i64,
    pub status: InboundStatus,
    pub error: Option<String>,
    pub detail: Option<Value>,
}

/// What re-queueing a stuck claim did (host side).
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue {
    /// Will be retried not before `at`.
    Retry {
        seq: i64,
        tries: u32,
        at: DateTime<Utc>,
    },
    /// Gave up: `MAX_TRIES` attempts used.
    Failed { seq: i64, tries: u32 },
}

/// The slash command a chat text starts with, lowercased (`"/clear"` for `"/Clear now"`), or
/// `None` for ordinary text. The host's permission gate and the runner use this one parser, so
/// a text the gate lets through as "not /clear" can never clear the conversation.
pub fn command_of(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let cmd = first.strip_prefix('/')?;
    // `/clear@my_bot` is how Telegram addresses a command to one bot in a group.
    let cmd = cmd.split('@').next().unwrap_or(cmd);
    (!cmd.is_empty()).then(|| format!("/{}", cmd.to_lowercase()))
}

/// The host's answer to one request (see [`crate::request`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub request_seq: i64,
    /// Whether the host did what was asked; `body` is the result, or `{"error": …}`.
    pub ok: bool,
    pub body: Value,
    pub at: DateTime<Utc>,
}

impl Response {
    /// The error text of a refused request (`body.error`), or the whole body.
    pub fn error_text(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| self.body.to_string(), str::to_owned)
    }
}

/// What [`crate::InboundDb::answer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The answer was recorded.
    New,
    /// The request had been answered before; that answer stands.
    Already,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_parsing() {
        let table = [
            ("/clear", Some("/clear")),
            ("  /CLEAR please", Some("/clear")),
            ("/clear@clawbox_bot", Some("/clear")),
            ("/clearx", Some("/clearx")),
            ("clear", None),
            ("/", None),
            ("", None),
            ("hello /clear", None),
        ];
        for (text, want) in table {
            assert_eq!(command_of(text).as_deref(), want, "{text:?}");
        }
    }
}
