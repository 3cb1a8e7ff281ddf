//! The terminal channel (`cli` / `local`). Terminals attach over the admin socket
//! (`clawbox chat`); replies go to every attached terminal. With none attached the channel is
//! unavailable and replies wait in the mailbox until one attaches — nothing is lost because the
//! user closed the terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mailbox::InboundStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{DeliveryError, Outcome};

/// What the host tells attached terminals (also the admin protocol's chat events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChatEvent {
    Reply {
        session_id: String,
        seq: i64,
        in_reply_to: Option<i64>,
        text: String,
        /// Set when this replaces the text of an earlier reply.
        edit_of: Option<i64>,
    },
    Done {
        session_id: String,
        seq: i64,
        status: InboundStatus,
        error: Option<String>,
    },
    Notice {
        text: String,
    },
}

#[derive(Clone)]
pub struct CliChannel {
    events: broadcast::Sender<ChatEvent>,
    attached: Arc<AtomicUsize>,
}

impl Default for CliChannel {
    fn default() -> Self {
        CliChannel {
            events: broadcast::channel(/*capacity*/ 1024).0,
            attached: Arc::default(),
        }
    }
}

/// Keeps the terminal counted as attached while alive.
pub struct Attachment {
    pub events: broadcast::Receiver<ChatEvent>,
    attached: Arc<AtomicUsize>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CliChannel {
    pub fn attach(&self) -> Attachment {
        let events = self.events.subscribe();
        self.attached.fetch_add(1, Ordering::SeqCst);
        Attachment {
            events,
            attached: Arc::clone(&self.attached),
        }
    }

    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst) > 0
    }

    pub(super) fn reply(
        &self,
        session_id: &str,
        seq: i64,
        in_reply_to: Option<i64>,
        text: &str,
        edit_of: Option<i64>,
    ) -> Result<Option<String>, DeliveryError> {
        self.send(ChatEvent::Reply {
            session_id: session_id.to_owned(),
            seq,
            in_reply_to,
            text: text.to_owned(),
            edit_of,
        })?;
        Ok(None)
    }

    pub(super) fn notice(&self, text: &str) -> Result<(), DeliveryError> {
        self.send(ChatEvent::Notice {
            text: text.to_owned(),
        })
    }

    pub(super) fn done(&self, o: Outcome<'_>) {
        // Progress only: a terminal that is gone does not need it.
        let _ = self.events.send(ChatEvent::Done {
            session_id: o.session_id.to_owned(),
            seq: o.seq,
            status: o.status,
            error: o.error.map(str::to_owned),
        });
    }

    fn send(&self, event: ChatEvent) -> Result<(), DeliveryError> {
        self.events
            .send(event)
            .map(drop)
            .map_err(|_| DeliveryError::Unavailable)
    }
}
