//! The host side of one session's mailbox: read what the runner wrote (acks, replies, requests),
//! deliver replies through the channels with a durable delivery record, answer requests
//! (requests.rs applies them; the answer and the row's delivery record are written together),
//! fold acks into inbound status, and tell senders about failures; every
//! [`mailbox::retention::PRUNE_EVERY`] verdicts it folds, prune the settled rows of the live
//! session's `inbound.db` and checkpoint its WAL (the runner does the same for `outbound.db`).
//! Called by the session's supervisor task after every change.
//!
//! SQLite work runs on the blocking pool; channel sends run on the async side, between two
//! short blocking sections, so no database lock is held while a network call is in flight.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mailbox::request::Request;
use mailbox::{
    Ack, AckStatus, BadRow, Destination, InboundDb, InboundKind, InboundMessage, InboundStatus,
    NewInbound, OutboundKind, OutboundMessage, OutboundReader, Route, SessionPaths,
};
use serde_json::json;

use crate::db::Db;
use crate::session::outbox::{Attachment, AttachmentError, open_attachments};
use crate::session::outlet::{
    DeliveryError, Drafting, Outcome, Outlet, PlatformRefs, attachment_names,
};
use crate::session::questions::{Asked, Asking, QuestionSignal};
use crate::session::requests::{Answer, Asker, Requests};

/// The host's handle on one session's two databases.
pub struct SessionMailbox {
    pub paths: SessionPaths,
    pub inbound: InboundDb,
    outbound: Option<OutboundReader>,
    /// Verdicts folded since `inbound.db` was last pruned.
    unpruned: u64,
}

impl SessionMailbox {
    /// Opens (creating as needed) the session's directories and `inbound.db`, in `journal`
    /// mode (the container follows it for `outbound.db`).
    pub fn open(paths: SessionPaths, journal: mailbox::Journal) -> mailbox::Result<Self> {
        paths.create_dirs()?;
        let inbound = InboundDb::open_with(&paths, journal)?;
        Ok(SessionMailbox {
            paths,
            inbound,
            outbound: None,
            unpruned: 0,
        })
    }

    /// Counts `verdicts` just folded; every [`mailbox::retention::PRUNE_EVERY`] of them, deletes
    /// the settled rows of `inbound.db` older than `retention_days` or beyond the newest
    /// [`mailbox::retention::KEEP_SETTLED`] of their table, then checkpoints its WAL with
    /// TRUNCATE (a checkpoint the runner's reads hold up does less, and is not an error).
    pub fn count_verdicts(&mut self, verdicts: usize, retention_days: u32) -> mailbox::Result<()> {
        self.unpruned += verdicts as u64;
        if self.unpruned < mailbox::retention::PRUNE_EVERY {
            return Ok(());
        }
        self.unpruned = 0;
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        let pruned = self
            .inbound
            .prune_settled(mailbox::retention::Keep::new(cutoff))?;
        let complete = self.inbound.checkpoint()?;
        if pruned.rows > 0 {
            tracing::debug!(
                rows = pruned.rows,
                bytes = pruned.bytes,
                wal_truncated = complete,
                "settled rows of a live session pruned"
            );
        }
        Ok(())
    }

    /// The runner's database, once the runner has created it and its schema.
    pub fn outbound(&mut self) -> mailbox::Result<Option<&OutboundReader>> {
        if self.outbound.is_none() && self.paths.outbound_db().exists() {
            let reader = OutboundReader::open(&self.paths.outbound_db())?;
            if reader.is_ready()? {
                self.outbound = Some(reader);
            }
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

    /// The sender of the message the current turn answers: the last triggering row the runner
    /// has claimed.
    fn turn_sender(&mut self) -> mailbox::Result<Option<String>> {
        for seq in self.claimed()?.into_iter().rev() {
            if let Some(m) = self.inbound.get(seq)?
                && m.trigger
            {
                return Ok(m.sender_id);
            }
        }
        Ok(None)
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

/// What one session may send to: its own chat and thread, and the agent's destinations.
#[derive(Debug, Clone)]
pub struct Acl {
    pub origin: Route,
    pub destinations: Vec<Destination>,
}

impl Acl {
    /// Whether a row may go to `route`. In the session's own chat only its own thread (forum
    /// topic) is allowed: a row the agent forged with another topic's `thread_id` would post
    /// into a conversation that belongs to another session.
    pub fn allows(&self, route: &Route) -> bool {
        let same_chat =
            |r: &Route| r.channel_type == route.channel_type && r.platform_id == route.platform_id;
        let same_thread = |r: &Route| same_chat(r) && r.thread_id == route.thread_id;
        same_thread(&self.origin)
            || (!same_chat(&self.origin) && self.destinations.iter().any(|d| same_chat(&d.route)))
            || self.destinations.iter().any(|d| same_thread(&d.route))
    }
}

/// The notice a chat gets for a reply that could not be delivered because of what the agent
/// wrote (the row, its files), with the reason.
pub fn undeliverable_notice(reason: &str) -> String {
    format!("⚠ the agent produced a reply clawbox could not deliver: {reason}")
}

/// What the first half of a pump decided.
#[derive(Default)]
struct Plan {
    acks: Vec<Ack>,
    /// Rows whose attempt has been recorded as started, with the attempt number and the
    /// platform ids of the messages they refer to.
    started: Vec<(OutboundMessage, u32, PlatformRefs)>,
    /// Rows addressed to a chat outside the ACL.
    refused: Vec<OutboundMessage>,
    /// Requests for the host (answered here, never sent to a chat).
    requests: Vec<OutboundMessage>,
    /// Rows that cannot be used at all (too large, out of range, not decodable).
    bad: Vec<BadRow>,
    /// The page of new rows was full: more may follow at once.
    more: bool,
    /// Whom the turn that sent the requests answers.
    requested_by: Option<String>,
    /// Whether some row waits for its channel to become available.
    waiting: bool,
    /// The draft of the turn in progress, read before the rows (see `pump_page`); `None`
    /// inside `Some` when there is none. `None`: the runner's file is not there yet.
    draft: Option<Option<Drafting>>,
}

/// The message an edit replaces or a reaction is for.
fn target_seq(msg: &OutboundMessage) -> Option<i64> {
    let field = |name: &str| msg.content.get(name).and_then(serde_json::Value::as_i64);
    field("edit_of").or_else(|| field("reaction_to"))
}

/// The platform ids of the messages `msg` refers to: inbound rows carry theirs in the content
/// (`platform_message_id`), outbound rows in their delivery record.
fn platform_refs(mb: &SessionMailbox, msg: &OutboundMessage) -> mailbox::Result<PlatformRefs> {
    let of_seq = |seq: i64| -> mailbox::Result<Option<String>> {
        if seq % 2 == 0 {
            Ok(mb.inbound.get(seq)?.and_then(|m| {
                m.content
                    .get("platform_message_id")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            }))
        } else {
            Ok(mb
                .inbound
                .delivery(seq)?
                .and_then(|d| d.platform_message_id))
        }
    };
    let target = match target_seq(msg) {
        Some(seq) => of_seq(seq)?,
        None => None,
    };
    Ok(PlatformRefs {
        reply_to: msg.in_reply_to.map(of_seq).transpose()?.flatten(),
        target,
    })
}

pub struct Delivery<'a> {
    pub session_id: &'a str,
    /// The agent's display name, which the terminal shows with its replies.
    pub agent_name: &'a str,
    pub agent_id: &'a str,
    pub mailbox: &'a SharedMailbox,
    pub outlet: &'a Arc<dyn Outlet>,
    pub acl: &'a Acl,
    pub max_attempts: u32,
    /// `RETENTION_DAYS`, for the prunes of a live session.
    pub retention_days: u32,
    pub requests: &'a Requests,
    /// Questions are recorded in the central DB, and the loop that expires them woken.
    pub db: &'a Db,
    pub questions: &'a QuestionSignal,
    /// When the session's current runner was started (requests written since then may still be
    /// waited for); `None` while no runner of this host runs.
    pub runner_since: Option<DateTime<Utc>>,
    /// The agent's `show_tools` (`container.json`), for [`Drafting::show_tools`].
    pub show_tools: bool,
}

/// What one pass did and left to do, for the supervisor.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Some row waits for its channel to become available (no terminal attached).
    pub waiting_for_channel: bool,
    /// Some row failed in a way worth another attempt soon (network, rate limit).
    pub retry_soon: bool,
    /// Task messages that reached their verdict (the scheduler's run history records them).
    pub finished_tasks: Vec<InboundMessage>,
}

impl Delivery<'_> {
    /// One full pass: answer requests, deliver new replies, fold acks, report failures.
    /// Returns what is left (rows waiting for a channel, or to be retried, so the session is
    /// not idle yet) and the task messages that reached their verdict.
    ///
    /// The database work is two transactions for a pass that sends one row (plus one per
    /// request, and one per further row sent): one records what is new and starts the
    /// attempts, one records the last row delivered and folds the acks. Each row sent is
    /// recorded delivered right after the channel's answer, before the next is sent.
    pub async fn pump(&self) -> mailbox::Result<Pumped> {
        // New rows are read a page at a time (mailbox::outbound::page_after); a full page means
        // more may be waiting, so pass again until a page is not full.
        let mut all = Pumped::default();
        loop {
            let (pumped, more) = self.pump_page().await?;
            all.waiting_for_channel |= pumped.waiting_for_channel;
            all.retry_soon |= pumped.retry_soon;
            all.finished_tasks.extend(pumped.finished_tasks);
            if !more {
                return Ok(all);
            }
        }
    }

    async fn pump_page(&self) -> mailbox::Result<(Pumped, bool)> {
        let outlet = Arc::clone(self.outlet);
        let acl = self.acl.clone();
        let show_tools = self.show_tools;
        // Acks are read before messages: a runner writes a reply and its ack in one
        // transaction, so every reply an ack refers to is in the message read that follows,
        // and terminals see the reply before the verdict.
        let plan = with_mailbox(self.mailbox, move |mb| {
            let cursor = mb.inbound.ack_cursor()?;
            let out_cursors = mb.inbound.out_cursors()?;
            let older = mb.inbound.open_deliveries()?;
            let Some(out) = mb.outbound()? else {
                return Ok(Plan::default());
            };
            let acks = out.acks_after(cursor)?;
            // The draft before the rows: the verdict deletes a draft in the transaction that
            // writes its reply, so a draft read here is either still current or its reply is
            // among the rows read next (and then the reply, delivered first, supersedes it).
            let draft = out.draft()?;
            // Each row is measured before it is loaded and decoded on its own: a bad one fails
            // alone and the rows after it flow (DESIGN §4, invariant 9).
            let page = out.page_after(out_cursors)?;
            let more = page.len() >= mailbox::outbound::PAGE_ROWS as usize;
            let seen: Vec<i64> = page
                .iter()
                .map(|r| match r {
                    Ok(m) => m.seq,
                    Err(bad) => bad.seq,
                })
                .collect();
            let mut rows = page;
            for d in older {
                if let Some(row) = out.read_message(d.out_seq)? {
                    rows.push(row);
                }
            }
            let mut open = Vec::new();
            let mut bad = Vec::new();
            for row in rows {
                match row {
                    Ok(m) => open.push(m),
                    Err(b) => bad.push(b),
                }
            }
            open.sort_by_key(|m| m.seq);
            let draft = match draft {
                Some(d) => {
                    let quote = mb.inbound.get(d.reply_to)?.and_then(|m| {
                        m.content
                            .get("platform_message_id")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned)
                    });
                    Some(Drafting {
                        reply_to: d.reply_to,
                        reply_to_platform: quote,
                        step: d.step,
                        text: d.text,
                        progress: crate::session::progress::line(&d.calls),
                        show_tools,
                    })
                }
                None => None,
            };
            let mut plan = Plan {
                acks,
                bad,
                more,
                draft: Some(draft),
                ..Plan::default()
            };
            let mut start = Vec::new();
            for m in open {
                if m.kind == OutboundKind::Request {
                    start.push(m.seq);
                    plan.requests.push(m);
                } else if !acl.allows(&m.route) {
                    plan.refused.push(m);
                } else if outlet.is_available(&m.route) {
                    start.push(m.seq);
                    plan.started.push((m, 0, PlatformRefs::default()));
                } else {
                    plan.waiting = true;
                }
            }
            let attempts: std::collections::HashMap<i64, u32> = mb
                .inbound
                .begin_deliveries(&seen, &start, Utc::now())?
                .into_iter()
                .collect();
            for (msg, attempt, refs) in &mut plan.started {
                *attempt = attempts.get(&msg.seq).copied().unwrap_or(1);
                *refs = platform_refs(mb, msg)?;
            }
            if !plan.requests.is_empty() {
                plan.requested_by = mb.turn_sender()?;
            }
            Ok(plan)
        })
        .await?;

        for msg in plan.requests {
            self.answer(msg, plan.requested_by.clone()).await?;
        }
        for bad in plan.bad {
            self.undeliverable(bad.seq, bad.reason).await?;
        }

        let mut waiting = plan.waiting;
        let mut retry_soon = false;
        for msg in plan.refused {
            // Told to the session's own chat like any row the agent got wrong: a forged route
            // must not be where the notice goes either.
            let origin = &self.acl.origin;
            let error = if msg.route.channel_type == origin.channel_type
                && msg.route.platform_id == origin.platform_id
            {
                let topic = match msg.route.thread_id.as_deref() {
                    Some(thread) => format!("topic {thread}"),
                    None => "the general topic".to_owned(),
                };
                format!(
                    "it is addressed to another topic of this chat ({topic}), which is another \
                     conversation's"
                )
            } else {
                format!(
                    "destination {}:{} is not one this agent may send to",
                    msg.route.channel_type, msg.route.platform_id
                )
            };
            self.undeliverable(msg.seq, error).await?;
        }
        // Rows sent in this pass with their platform ids (for edits of them in the same pass),
        // and the last one, whose record commits with the acks below.
        let mut sent: Vec<(i64, Option<String>)> = Vec::new();
        let mut delivered = Vec::new();
        // The `in_reply_to` of each row delivered in this pass.
        let mut delivered_replies = Vec::new();
        let started = plan.started.len();
        for (i, (msg, attempt, mut refs)) in plan.started.into_iter().enumerate() {
            if attempt > 1 {
                // An earlier attempt was started and not recorded as done: it failed, or the host
                // died around the send. On a channel without idempotency keys (Telegram) that
                // earlier attempt may have reached the chat, so this send can be a duplicate.
                tracing::warn!(
                    session_id = self.session_id,
                    out_seq = msg.seq,
                    attempt,
                    "re-sending a reply whose earlier attempt may have reached the chat"
                );
            }
            // An edit of (or reaction to) a row delivered earlier in this same pass.
            if refs.target.is_none()
                && let Some(target) = target_seq(&msg)
                && let Some((_, id)) = sent.iter().find(|(seq, _)| *seq == target)
            {
                refs.target.clone_from(id);
            }
            let attachments = match self.attachments(&msg).await {
                Ok(a) => a,
                Err(e) => {
                    self.undeliverable(msg.seq, e.to_string()).await?;
                    continue;
                }
            };
            match self
                .outlet
                .deliver(self.session_id, self.agent_name, &msg, &attachments, &refs)
                .await
            {
                Ok(platform_id) => {
                    delivered_replies.push(msg.in_reply_to);
                    sent.push((msg.seq, platform_id.clone()));
                    let done = vec![(msg.seq, platform_id)];
                    if i + 1 == started {
                        delivered = done;
                    } else {
                        // Recorded at once, not at the end of the pass: on a channel without
                        // idempotency keys a crash before this commit re-sends the row, and
                        // the later rows of the pass (paced a second apart on Telegram) would
                        // otherwise widen that window to seconds.
                        with_mailbox(self.mailbox, move |mb| {
                            mb.inbound.settle(&done, &[], Utc::now()).map(drop)
                        })
                        .await?;
                    }
                }
                Err(DeliveryError::Unavailable) => {
                    // Raced with a terminal detaching; sent again when one attaches.
                    waiting = true;
                    self.fail(msg, "channel unavailable".into(), false).await?;
                }
                Err(DeliveryError::Transient(e)) => {
                    let give_up = attempt >= self.max_attempts;
                    retry_soon |= !give_up;
                    self.fail(msg, e, give_up).await?;
                }
                Err(DeliveryError::Permanent(e)) => self.fail(msg, e, true).await?,
            }
        }

        // After the rows: a reply delivered in this pass has taken its draft's place.
        if let Some(draft) = plan.draft {
            let answered = |d: &Drafting| delivered_replies.contains(&Some(d.reply_to));
            let draft = draft.filter(|d| !answered(d));
            self.outlet
                .draft(
                    self.session_id,
                    self.agent_name,
                    &self.acl.origin,
                    draft.as_ref(),
                )
                .await;
        }

        let acks = plan.acks;
        let retention_days = self.retention_days;
        let (finished, failed) = with_mailbox(self.mailbox, move |mb| {
            let verdicts = mb.inbound.settle(&delivered, &acks, Utc::now())?;
            if !verdicts.is_empty()
                && let Err(err) = mb.count_verdicts(verdicts.len(), retention_days)
            {
                // The rows stay for the next prune; delivery goes on.
                tracing::warn!(error = %err, "settled rows could not be pruned");
            }
            let mut finished = Vec::new();
            for v in verdicts {
                if let Some(m) = mb.inbound.get(v.seq)? {
                    finished.push(m);
                }
            }
            Ok((finished, mb.inbound.unnotified_failures()?))
        })
        .await?;
        for m in finished
            .iter()
            .filter(|m| m.status == InboundStatus::Completed)
        {
            self.outcome(m);
        }
        let mut finished_tasks: Vec<InboundMessage> = finished
            .into_iter()
            .chain(failed.iter().cloned())
            .filter(|m| m.kind == InboundKind::Task)
            .collect();
        finished_tasks.dedup_by_key(|m| m.seq);
        self.report(failed).await?;
        Ok((
            Pumped {
                waiting_for_channel: waiting,
                retry_soon,
                finished_tasks,
            },
            plan.more,
        ))
    }

    /// A row that cannot be delivered because of what the agent wrote (the row itself, or its
    /// files): recorded as failed for good, the chat told, and the agent told on its next turn.
    /// Nothing of the row is used: the notice goes to the session's own chat, whatever route the
    /// row names.
    async fn undeliverable(&self, seq: i64, reason: String) -> mailbox::Result<()> {
        tracing::warn!(out_seq = seq, "undeliverable row from the agent: {reason}");
        let origin = self.acl.origin.clone();
        let error = reason.clone();
        with_mailbox(self.mailbox, move |mb| {
            let now = Utc::now();
            mb.inbound.delivery_failed(seq, &error, true, now)?;
            mb.inbound.insert(
                &NewInbound {
                    id: format!("delivery-failed:{seq}"),
                    kind: InboundKind::System,
                    trigger: false,
                    route: origin,
                    sender_id: None,
                    sender_name: Some("clawbox".into()),
                    content: json!({
                        "text": format!("Your message {seq} could not be delivered: {error}")
                    }),
                    process_after: None,
                },
                now,
            )?;
            Ok(())
        })
        .await?;
        match self
            .outlet
            .notify(&self.acl.origin, &undeliverable_notice(&reason))
            .await
        {
            Ok(()) | Err(DeliveryError::Unavailable) => {}
            Err(e) => tracing::warn!(out_seq = seq, "cannot send the undeliverable notice: {e}"),
        }
        Ok(())
    }

    /// Answers one request and records it delivered, in one transaction of the inbox.
    async fn answer(
        &self,
        msg: OutboundMessage,
        requested_by: Option<String>,
    ) -> mailbox::Result<()> {
        let seq = msg.seq;
        let answer = match Request::from_message(&msg) {
            Ok(request) => {
                let asker = Asker {
                    agent_id: self.agent_id.to_owned(),
                    session_id: self.session_id.to_owned(),
                    requested_by,
                    // The runtime starts a runner after `runner_since`: anything written before
                    // is from a runner that is gone.
                    waiting: self
                        .runner_since
                        .is_some_and(|since| request.created_at >= since),
                };
                tracing::info!(request_seq = seq, op = %request.op, waiting = asker.waiting, "request");
                if request.op == mailbox::questions::ASK_QUESTION {
                    let asking = Asking {
                        db: self.db,
                        outlet: self.outlet,
                        signal: self.questions,
                        session_id: self.session_id,
                        agent_id: self.agent_id,
                        route: &self.acl.origin,
                        asked_by: asker.requested_by,
                        waiting: asker.waiting,
                    };
                    match asking.ask(request).await {
                        // Answered later (questions.rs); taken now so it is not asked twice.
                        Asked::Deferred => {
                            return with_mailbox(self.mailbox, move |mb| {
                                mb.inbound.take_request(seq, Utc::now())
                            })
                            .await;
                        }
                        Asked::Refused(answer) => answer,
                    }
                } else {
                    self.requests.answer(asker, request).await
                }
            }
            Err(e) => Answer {
                ok: false,
                body: json!({ "error": format!("malformed request: {e}"), "code": "malformed" }),
            },
        };
        if !answer.ok {
            tracing::info!(request_seq = seq, answer = %answer.body, "request refused");
        }
        with_mailbox(self.mailbox, move |mb| {
            mb.inbound.answer(seq, answer.ok, &answer.body, Utc::now())
        })
        .await?;
        Ok(())
    }

    /// Opens and checks the files attached to `msg`, each through the symlink-proof opener of
    /// outbox.rs; the channel streams them.
    async fn attachments(&self, msg: &OutboundMessage) -> Result<Vec<Attachment>, AttachmentError> {
        let names = attachment_names(msg);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let dir = {
            let mb = self.mailbox.lock().unwrap_or_else(|e| e.into_inner());
            mb.paths.outbound_dir.clone()
        };
        let id = msg.id.clone();
        tokio::task::spawn_blocking(move || open_attachments(&dir, &id, &names))
            .await
            .map_err(|e| AttachmentError::Io {
                name: msg.id.clone(),
                error: e.to_string(),
            })?
    }

    /// Records a failed attempt; a final failure is also told to the agent on its next turn.
    async fn fail(
        &self,
        msg: OutboundMessage,
        error: String,
        give_up: bool,
    ) -> mailbox::Result<()> {
        let seq = msg.seq;
        tracing::warn!(out_seq = seq, give_up, "delivery failed: {error}");
        with_mailbox(self.mailbox, move |mb| {
            let now = Utc::now();
            mb.inbound.delivery_failed(seq, &error, give_up, now)?;
            if give_up {
                // A context row: it does not wake the agent by itself.
                mb.inbound.insert(
                    &NewInbound {
                        id: format!("delivery-failed:{seq}"),
                        kind: InboundKind::System,
                        trigger: false,
                        route: msg.route,
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
        })
        .await
    }

    /// Tells the sender of every failed message not yet reported (failures are host-originated
    /// notices: they go straight to the chat, never through `outbound.db`).
    async fn report(&self, failed: Vec<InboundMessage>) -> mailbox::Result<()> {
        for m in failed {
            if m.kind == InboundKind::System {
                // Host notices to the agent have no human sender to tell.
                with_mailbox(self.mailbox, move |mb| mb.inbound.mark_notified(m.seq)).await?;
                continue;
            }
            let reason = m.error.as_deref().unwrap_or("unknown error");
            let notice = match m.kind {
                InboundKind::Task => format!(
                    "⚠ Scheduled task {} could not be run: {reason}",
                    m.content
                        .get("task_id")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("?")
                ),
                InboundKind::Chat | InboundKind::System => {
                    format!("⚠ Your message could not be processed: {reason}")
                }
            };
            match self.outlet.notify(&m.route, &notice).await {
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
        self.outlet.outcome(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route(platform: &str, thread: Option<&str>) -> Route {
        Route {
            thread_id: thread.map(str::to_owned),
            ..Route::new("telegram", platform)
        }
    }

    #[test]
    fn acl_keeps_a_session_in_its_own_thread() {
        let acl = Acl {
            origin: route("-100", Some("10")),
            destinations: vec![
                Destination {
                    name: "ops".into(),
                    display_name: None,
                    route: route("-200", None),
                },
                Destination {
                    name: "news".into(),
                    display_name: None,
                    route: route("-100", Some("30")),
                },
            ],
        };
        let table = [
            (route("-100", Some("10")), true),
            // Another topic of the session's own chat: another session's conversation.
            (route("-100", Some("20")), false),
            (route("-100", None), false),
            // Unless a destination names that topic.
            (route("-100", Some("30")), true),
            // Destinations in other chats, any thread.
            (route("-200", None), true),
            (route("-200", Some("5")), true),
            (route("-300", None), false),
        ];
        for (r, want) in table {
            assert_eq!(acl.allows(&r), want, "{r:?}");
        }
        let cli = Acl {
            origin: Route::new("cli", "local"),
            destinations: vec![],
        };
        assert!(cli.allows(&Route::new("cli", "local")));
    }
}
