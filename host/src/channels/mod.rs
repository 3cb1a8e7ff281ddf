//! Channel adapters behind one registry. The supervisor hands every outbound row, failure
//! notice, verdict and "the agent is working" signal to [`Channels`], which dispatches on the
//! route's channel type. Owns nothing about routing decisions (router.rs) or delivery
//! bookkeeping (delivery.rs).

pub mod cli;
pub mod telegram;

use std::path::PathBuf;

use mailbox::{InboundStatus, OutboundKind, OutboundMessage, Route};

use crate::outbox::Attachment;
use cli::CliChannel;
use telegram::TelegramChannel;

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Nobody can receive on this route right now (no terminal attached); not an attempt: the
    /// row stays pending until the channel becomes available.
    #[error("channel unavailable")]
    Unavailable,
    /// Worth another attempt (network error, rate limit).
    #[error("{0}")]
    Transient(String),
    /// Will never work (unknown chat, forbidden destination, malformed content).
    #[error("{0}")]
    Permanent(String),
}

/// What an outbound row asks a channel to show, decoded once for every adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Content<'a> {
    Text {
        text: &'a str,
        /// Set when this replaces the text of the earlier message with this seq.
        edit_of: Option<i64>,
    },
    Reaction {
        reaction_to: i64,
        emoji: &'a str,
    },
}

impl<'a> Content<'a> {
    pub fn of(msg: &'a OutboundMessage) -> Result<Self, DeliveryError> {
        let malformed = |what: &str| DeliveryError::Permanent(format!("{what} ({} row)", msg.kind));
        let text = msg.text().unwrap_or_default();
        let seq_field = |field: &str| msg.content.get(field).and_then(serde_json::Value::as_i64);
        match msg.kind {
            OutboundKind::Chat => Ok(Content::Text {
                text,
                edit_of: None,
            }),
            OutboundKind::Edit => Ok(Content::Text {
                text,
                edit_of: Some(seq_field("edit_of").ok_or_else(|| malformed("no edit_of"))?),
            }),
            OutboundKind::Reaction => Ok(Content::Reaction {
                reaction_to: seq_field("reaction_to").ok_or_else(|| malformed("no reaction_to"))?,
                emoji: msg
                    .content
                    .get("emoji")
                    .and_then(serde_json::Value::as_str)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| malformed("no emoji"))?,
            }),
            // The delivery pass answers requests itself; one reaching a channel is a bug there.
            OutboundKind::Request => Err(malformed("a request for the host, not for a chat")),
        }
    }
}

/// The names of the files attached to an outbound row (`content.files`).
pub fn attachment_names(msg: &OutboundMessage) -> Vec<String> {
    msg.content
        .get("files")
        .and_then(serde_json::Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The platform's ids of the messages an outbound row refers to, looked up by delivery.rs
/// (channels that address messages by their own ids need them; the terminal does not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformRefs {
    /// The message this row answers (`in_reply_to`).
    pub reply_to: Option<String>,
    /// The message an edit replaces or a reaction is for (as delivered, comma-separated when
    /// it went out in parts).
    pub target: Option<String>,
}

/// A verdict on an inbound message, for channels that show progress (the terminal chat).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub session_id: &'a str,
    pub seq: i64,
    pub status: InboundStatus,
    pub error: Option<&'a str>,
}

#[derive(Clone)]
pub struct Channels {
    pub cli: CliChannel,
    /// Present when `TELEGRAM_BOT_TOKEN` is set.
    pub telegram: Option<TelegramChannel>,
}

impl Channels {
    /// `files_dir`: where channels that hand files to the local user (the terminal) put them.
    pub fn new(files_dir: PathBuf, telegram: Option<TelegramChannel>) -> Self {
        Channels {
            cli: CliChannel::new(files_dir),
            telegram,
        }
    }

    pub fn is_available(&self, route: &Route) -> bool {
        match route.channel_type.as_str() {
            "cli" => self.cli.is_attached(),
            _ => true,
        }
    }

    /// Whether the channel of `route` shows that the agent is working (Telegram's "typing…");
    /// the supervisor only tracks work for those.
    pub fn shows_typing(&self, route: &Route) -> bool {
        route.channel_type == "telegram" && self.telegram.is_some()
    }

    /// Starts or stops the "working" indicator in the chat of `route`.
    pub fn typing(&self, route: &Route, on: bool) {
        if route.channel_type == "telegram"
            && let Some(tg) = &self.telegram
        {
            tg.typing(route, on);
        }
    }

    /// Sends one outbound row of the agent `agent_name` with its (already validated)
    /// attachments; returns the platform's message id when it has one.
    pub async fn deliver(
        &self,
        session_id: &str,
        agent_name: &str,
        msg: &OutboundMessage,
        attachments: &[Attachment],
        refs: &PlatformRefs,
    ) -> Result<Option<String>, DeliveryError> {
        let content = Content::of(msg)?;
        if let Content::Text { text, .. } = &content
            && text.trim().is_empty()
            && attachments.is_empty()
        {
            return Err(DeliveryError::Permanent(
                "message has no text to send".into(),
            ));
        }
        match (msg.route.channel_type.as_str(), &self.telegram) {
            ("cli", _) => self
                .cli
                .deliver(session_id, agent_name, msg, content, attachments),
            ("telegram", Some(tg)) => {
                tg.deliver(session_id, msg, content, attachments, refs)
                    .await
            }
            (other, _) => Err(no_adapter(other)),
        }
    }

    /// Shows a question from an agent; returns the platform's id of the message showing it.
    /// The terminal shows it to attached terminals now and to others when they attach.
    pub async fn ask(
        &self,
        q: &crate::questions::Question,
    ) -> Result<Option<String>, DeliveryError> {
        match (q.route.channel_type.as_str(), &self.telegram) {
            ("cli", _) => {
                self.cli.question(q);
                Ok(None)
            }
            ("telegram", Some(tg)) => tg.ask(q).await.map(Some),
            (other, _) => Err(no_adapter(other)),
        }
    }

    /// Shows how a question ended (answered, expired) where it was asked.
    pub async fn close_question(
        &self,
        q: &crate::questions::Question,
    ) -> Result<(), DeliveryError> {
        match (q.route.channel_type.as_str(), &self.telegram) {
            ("cli", _) => {
                self.cli.question_closed(q);
                Ok(())
            }
            ("telegram", Some(tg)) => tg.close_question(q).await,
            (other, _) => Err(no_adapter(other)),
        }
    }

    /// A host-originated notice to a chat (e.g. a message that failed for good).
    pub async fn notify(&self, route: &Route, text: &str) -> Result<(), DeliveryError> {
        match (route.channel_type.as_str(), &self.telegram) {
            ("cli", _) => self.cli.notice(text),
            ("telegram", Some(tg)) => tg.notice(route, text, None).await,
            (other, _) => Err(no_adapter(other)),
        }
    }

    /// Tells channels that show progress that an inbound message reached a final state.
    pub fn outcome(&self, route: &Route, outcome: Outcome<'_>) {
        if route.channel_type == "cli" {
            self.cli.done(outcome);
        }
    }
}

fn no_adapter(channel: &str) -> DeliveryError {
    if channel == "telegram" {
        DeliveryError::Permanent(
            "the Telegram channel is off (TELEGRAM_BOT_TOKEN is not set)".into(),
        )
    } else {
        DeliveryError::Permanent(format!("no channel adapter for {channel:?}"))
    }
}
