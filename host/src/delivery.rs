//! The host side of one session's mailbox: read what the runner wrote (acks, replies), deliver
//! replies through the channels with a durable delivery record, fold acks into inbound status,
//! and tell senders about failures. Called by the session's supervisor task after every change.
//!
//! SQLite work runs on the blocking pool; channel sends run on the async side, between two
//! short blocking sections, so no database lock is held while a network call is in flight.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use mailbox::{
    Ack, AckStatus, Destination, InboundDb, InboundKind, InboundMessage, InboundStatus, NewInbound,
    OutboundMessage, OutboundReader, Route, SessionPaths,
};
use serde_json::json;

use crate::channels::{Channels, DeliveryError, Outcome};

/// The host's handle on one session's two databases.
pub struct SessionMailbox {
    pub paths: SessionPaths,
    pub inbound: InboundDb,
    outbound: Option<OutboundReader>,
}

impl SessionMailbox {
    /// Opens (creating as needed) the session's directories and `inbound.db`.
    pub fn open(paths: SessionPaths) -> mailbox::Result<Self> {
        paths.create_dirs()?;
        let inbound = InboundDb::open(&paths)?;
        Ok(SessionMailbox {
            paths,
            inbound,
            outbound: None,
        })
    }

    /// The runner's database, once the runner has created it.
    pub fn outbound(&mut self) -> mailbox::Result<Option<&OutboundReader>> {
        if self.outbound.is_none() && self.paths.outbound_db().exists() {
            self.outbound = Some(OutboundReader::open(&self.paths.outbound_db())?);
        }
        Ok(self.outbound.as_ref())
    }

    /// Pending rows claimed by the current attempt (the claims a dead runner leaves behind).
    pub fn claimed(&mut self) -> mailbox::Result<Vec<i64>> {
        let pending = self.inbound.pending()?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let Some(out) = self.outbound()? else {
            return Ok(Vec::new());
        };
        let seqs: Vec<i64> = pending.iter().map(|m| m.seq).collect();
        let acks = out.latest_acks(&seqs)?;
        Ok(pending
            .iter()
            .filter(|m| {
                acks.get(&m.seq)
                    .is_some_and(|a| a.status == AckStatus::Processing && a.attempt == m.attempt())
            })
            .map(|m| m.seq)
            .collect())
    }
}

pub type SharedMailbox = Arc<Mutex<SessionMailbox>>;

/// Runs `f` on the mailbox on the blocking pool.
pub async fn with_mailbox<R, F>(mailbox: &SharedMailbox, f: F) -> mailbox::Result<R>
where
    F: FnOnce(&mut SessionMailbox) -> mailbox::Result<R> + Send + 'static,
    R: Send + 'static,
{
    let mailbox = Arc::clone(mailbox);
    match tokio::task::spawn_blocking(move || {
        // A poisoned lock means a panic mid-call; the SQLite state is still transactional.
        let mut guard = mailbox.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => Err(mailbox::Error::Io {
            action: "run mailbox task",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

/// What one session may send to: its own chat and the agent's destinations.
#[derive(Debug, Clone)]
pub struct Acl {
    pub origin: Route,
    pub destinations: Vec<Destination>,
}

impl Acl {
    pub fn allows(&self, route: &Route) -> bool {
        let same_chat =
            |r: &Route| r.channel_type == route.channel_type && r.platform_id == route.platform_id;
        same_chat(&self.origin) || self.destinations.iter().any(|d| same_chat(&d.route))
    }
}

pub struct Delivery<'a> {
    pub session_id: &'a str,
    pub mailbox: &'a SharedMailbox,
    pub channels: &'a Channels,
    pub acl: &'a Acl,
    pub max_attempts: u32,
}

impl Delivery<'_> {
    /// One full pass: deliver new replies, fold acks, report failures. Returns whether anything
    /// is still waiting for a channel (so the session is not idle yet).
    pub async fn pump(&self) -> mailbox::Result<bool> {
        // Acks are read before messages: a runner writes a reply and its ack in one
        // transaction, so every reply an ack refers to is in the message read that follows,
        // and terminals see the reply before the verdict.
        let (acks, open) = with_mailbox(self.mailbox, |mb| {
            let cursor = mb.inbound.ack_cursor()?;
            let out_cursor = mb.inbound.out_cursor()?;
            let Some(out) = mb.outbound()? else {
                return Ok((Vec::new(), Vec::new()));
            };
            let acks = out.acks_after(cursor)?;
            let fresh = out.messages_after(out_cursor)?;
            let seqs: Vec<i64> = fresh.iter().map(|m| m.seq).collect();
            mb.inbound.record_outbound(&seqs, Utc::now())?;
            let mut open = Vec::new();
            for d in mb.inbound.open_deliveries()? {
                let msg = match fresh.iter().find(|m| m.seq == d.out_seq) {
                    Some(m) => Some(m.clone()),
                    None => mb
                        .outbound()?
                        .map(|o| o.message(d.out_seq))
                        .transpose()?
                        .flatten(),
                };
                if let Some(msg) = msg {
                    open.push(msg);
                }
            }
            Ok((acks, open))
        })
        .await?;

        let mut waiting = false;
        for msg in open {
            waiting |= self.deliver_one(msg).await?;
        }
        self.fold(acks).await?;
        self.report_failures().await?;
        Ok(waiting)
    }

    /// Returns true when the message waits for its channel to become available.
    async fn deliver_one(&self, msg: OutboundMessage) -> mailbox::Result<bool> {
        let seq = msg.seq;
        if !self.acl.allows(&msg.route) {
            let error = format!(
                "destination {}:{} is not one this agent may send to",
                msg.route.channel_type, msg.route.platform_id
            );
            self.finish(seq, Err((error, true)), &msg).await?;
            return Ok(false);
        }
        if !self.channels.is_available(&msg.route) {
            return Ok(true);
        }
        let attempt = with_mailbox(self.mailbox, move |mb| {
            mb.inbound.begin_delivery(seq, Utc::now())
        })
        .await?;
        let result = match self.channels.deliver(self.session_id, &msg).await {
            Ok(platform_id) => Ok(platform_id),
            Err(DeliveryError::Unavailable) => {
                // Raced with a terminal detaching; leave it for the next attach.
                with_mailbox(self.mailbox, move |mb| {
                    mb.inbound
                        .delivery_failed(seq, "channel unavailable", false, Utc::now())
                })
                .await?;
                return Ok(true);
            }
            Err(DeliveryError::Transient(e)) => Err((e, attempt >= self.max_attempts)),
            Err(DeliveryError::Permanent(e)) => Err((e, true)),
        };
        self.finish(seq, result, &msg).await?;
        Ok(false)
    }

    async fn finish(
        &self,
        seq: i64,
        result: Result<Option<String>, (String, bool)>,
        msg: &OutboundMessage,
    ) -> mailbox::Result<()> {
        let route = msg.route.clone();
        with_mailbox(self.mailbox, move |mb| {
            let now = Utc::now();
            match result {
                Ok(platform_id) => mb.inbound.delivered(seq, platform_id.as_deref(), now),
                Err((error, give_up)) => {
                    tracing::warn!(out_seq = seq, give_up, "delivery failed: {error}");
                    mb.inbound.delivery_failed(seq, &error, give_up, now)?;
                    if give_up {
                        // Tell the agent on its next turn; the row does not wake it by itself.
                        mb.inbound.insert(
                            &NewInbound {
                                id: format!("delivery-failed:{seq}"),
                                kind: InboundKind::System,
                                trigger: false,
                                route,
                                sender_id: None,
                                sender_name: Some("clawbox".into()),
                                content: json!({
                                    "text": format!("Your message {seq} could not be delivered: {error}")
                                }),
                                process_after: None,
                            },
                            now,
                        )?;
                    }
                    Ok(())
                }
            }
        })
        .await
    }

    async fn fold(&self, acks: Vec<Ack>) -> mailbox::Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let verdicts = with_mailbox(self.mailbox, move |mb| {
            let verdicts = mb.inbound.fold_acks(&acks)?;
            let mut out = Vec::new();
            for v in verdicts {
                if let Some(m) = mb.inbound.get(v.seq)? {
                    out.push(m);
                }
            }
            Ok(out)
        })
        .await?;
        for m in verdicts {
            if m.status == InboundStatus::Completed {
                self.outcome(&m);
            }
        }
        Ok(())
    }

    /// Tells the sender of every failed message not yet reported (failures are host-originated
    /// notices: they go straight to the chat, never through `outbound.db`).
    pub async fn report_failures(&self) -> mailbox::Result<()> {
        let failed = with_mailbox(self.mailbox, |mb| mb.inbound.unnotified_failures()).await?;
        for m in failed {
            if m.kind == InboundKind::System {
                // Host notices to the agent have no human sender to tell.
                with_mailbox(self.mailbox, move |mb| mb.inbound.mark_notified(m.seq)).await?;
                continue;
            }
            let reason = m.error.as_deref().unwrap_or("unknown error");
            let notice = format!("⚠ Your message could not be processed: {reason}");
            match self.channels.notify(&m.route, &notice).await {
                Ok(()) => {}
                Err(DeliveryError::Unavailable) => continue, // told when a terminal attaches
                Err(e) => tracing::warn!(seq = m.seq, "cannot send failure notice: {e}"),
            }
            self.outcome(&m);
            let seq = m.seq;
            with_mailbox(self.mailbox, move |mb| mb.inbound.mark_notified(seq)).await?;
        }
        Ok(())
    }

    fn outcome(&self, m: &InboundMessage) {
        self.channels.outcome(
            &m.route,
            Outcome {
                session_id: self.session_id,
                seq: m.seq,
                status: m.status,
                error: m.error.as_deref(),
            },
        );
    }
}
