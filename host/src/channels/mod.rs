//! Channel adapters behind one registry. The supervisor hands every outbound row, failure
//! notice and verdict to [`Channels`], which dispatches on the route's channel type. Owns
//! nothing about routing decisions (router.rs) or delivery bookkeeping (delivery.rs).

pub mod cli;

use mailbox::{InboundStatus, OutboundKind, OutboundMessage, Route};

use cli::CliChannel;

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

/// A verdict on an inbound message, for channels that show progress (the terminal chat).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub session_id: &'a str,
    pub seq: i64,
    pub status: InboundStatus,
    pub error: Option<&'a str>,
}

#[derive(Clone, Default)]
pub struct Channels {
    pub cli: CliChannel,
}

impl Channels {
    pub fn is_available(&self, route: &Route) -> bool {
        match route.channel_type.as_str() {
            "cli" => self.cli.is_attached(),
            _ => true,
        }
    }

    /// Sends one outbound row; returns the platform's message id when it has one.
    pub async fn deliver(
        &self,
        session_id: &str,
        msg: &OutboundMessage,
    ) -> Result<Option<String>, DeliveryError> {
        if msg.kind == OutboundKind::Reaction {
            return Err(DeliveryError::Permanent(
                "reactions are not supported by this channel yet".into(),
            ));
        }
        let text = match msg.text() {
            Some(t) if !t.trim().is_empty() => t,
            _ => {
                return Err(DeliveryError::Permanent(
                    "message has no text to send".into(),
                ));
            }
        };
        let edit_of = match msg.kind {
            OutboundKind::Chat | OutboundKind::Reaction => None,
            OutboundKind::Edit => Some(
                msg.content
                    .get("edit_of")
                    .and_then(serde_json::Value::as_i64)
                    .ok_or_else(|| DeliveryError::Permanent("edit without edit_of".into()))?,
            ),
        };
        match msg.route.channel_type.as_str() {
            "cli" => self
                .cli
                .reply(session_id, msg.seq, msg.in_reply_to, text, edit_of),
            other => Err(DeliveryError::Permanent(format!(
                "no channel adapter for {other:?}"
            ))),
        }
    }

    /// A host-originated notice to a chat (e.g. a message that failed for good).
    pub async fn notify(&self, route: &Route, text: &str) -> Result<(), DeliveryError> {
        match route.channel_type.as_str() {
            "cli" => self.cli.notice(text),
            other => Err(DeliveryError::Permanent(format!(
                "no channel adapter for {other:?}"
            ))),
        }
    }

    /// Tells channels that show progress that an inbound message reached a final state.
    pub fn outcome(&self, route: &Route, outcome: Outcome<'_>) {
        if route.channel_type == "cli" {
            self.cli.done(outcome);
        }
    }
}
