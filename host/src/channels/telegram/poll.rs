//! Receiving: `getMe`, then `getUpdates` long polling. Every batch is written to the update
//! journal (`telegram_updates`) and the offset moved past it in one transaction before any of
//! it is handled, so the next poll confirms it to Telegram without waiting for slow work (a
//! download), a crash in between loses nothing (open journal entries are handled at the next
//! start), and an update Telegram delivers twice is handled once.
//!
//! Handling runs on one task per chat: updates of a chat are handled in order, chats in
//! parallel, so a chat whose message is slow to fetch never holds up the others. A chat's task
//! ends when the chat has been quiet for a while.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::net::Download;
use teloxide::payloads::GetUpdatesSetters;
use teloxide::prelude::*;
use teloxide::types::{AllowedUpdate, FileId, MessageId, Update, UpdateKind};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::TelegramChannel;
use super::inbound::{self, BotIdentity, Incoming};
use crate::db::{self, JournalEntry};
use crate::session::Inlet;
use crate::session::inbound_files::{FetchError, FileSource, IncomingFile};
use crate::session::router::{InboundEvent, Routed};

/// A chat's task ends after this long without updates.
const CHAT_IDLE: Duration = Duration::from_secs(60);
/// Routing attempts of one message when the host's databases fail, before it is given up.
const ROUTE_ATTEMPTS: u32 = 3;
/// Handled updates are remembered this long (to recognise one Telegram sends again).
const JOURNAL_KEEP: chrono::Duration = chrono::Duration::days(7);
/// The journal is pruned at start and after this many updates.
const PRUNE_EVERY: usize = 1000;

pub(super) async fn run(tg: TelegramChannel, ctx: Inlet, cancel: CancellationToken) {
    let Some(me) = identify(&tg, &cancel).await else {
        return;
    };
    tracing::info!(bot = %format!("@{}", me.username), "Telegram: receiving messages");
    let _ = tg.inner.me.set(me.clone());
    let bot_id = me.id as i64;
    let chats = Chats {
        tg: tg.clone(),
        ctx: ctx.clone(),
        me,
        bot_id,
        workers: Arc::default(),
        cancel: cancel.clone(),
    };
    // What a previous run recorded but did not finish.
    let open = ctx
        .db
        .call(move |conn| {
            db::prune_updates(conn, Utc::now() - JOURNAL_KEEP)?;
            db::open_updates(conn, bot_id)
        })
        .await;
    match open {
        Ok(open) => {
            if !open.is_empty() {
                tracing::info!(
                    count = open.len(),
                    "Telegram: handling updates left from the last run"
                );
            }
            for entry in open {
                chats.dispatch(entry);
            }
        }
        Err(e) => tracing::error!("Telegram: cannot read the update journal: {e}"),
    }
    let mut offset = match ctx
        .db
        .call(move |conn| db::telegram_offset(conn, bot_id))
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("Telegram: cannot read the update offset: {e}");
            0
        }
    };
    let poll_secs = u32::try_from(tg.inner.poll_timeout.as_secs()).unwrap_or(30);
    let mut backoff = Duration::from_secs(1);
    let mut since_prune = 0;
    loop {
        if since_prune >= PRUNE_EVERY {
            since_prune = 0;
            let pruned = ctx
                .db
                .call(|conn| db::prune_updates(conn, Utc::now() - JOURNAL_KEEP))
                .await;
            if let Err(e) = pruned {
                tracing::warn!("Telegram: cannot prune the update journal: {e}");
            }
        }
        let request = tg
            .bot()
            .get_updates()
            .offset(i32::try_from(offset).unwrap_or(i32::MAX))
            .timeout(poll_secs)
            .limit(100)
            .allowed_updates([
                AllowedUpdate::Message,
                AllowedUpdate::EditedMessage,
                AllowedUpdate::CallbackQuery,
            ]);
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = request.send() => r,
        };
        let wait = match result {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                if updates.is_empty() {
                    continue;
                }
                let entries: Vec<JournalEntry> = updates.iter().filter_map(journal_entry).collect();
                let max = updates
                    .iter()
                    .map(|u| i64::from(u.id.0))
                    .max()
                    .unwrap_or(offset);
                match ctx
                    .db
                    .call(move |conn| db::journal_updates(conn, bot_id, &entries, Utc::now()))
                    .await
                {
                    Ok(fresh) => {
                        offset = offset.max(max + 1);
                        since_prune += fresh.len();
                        for entry in fresh {
                            chats.dispatch(entry);
                        }
                        continue;
                    }
                    Err(e) => {
                        // Not confirmed: Telegram hands the batch out again.
                        tracing::error!("Telegram: cannot record updates: {e}");
                        Duration::from_secs(1)
                    }
                }
            }
            Err(RequestError::RetryAfter(s)) => s.duration(),
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                tracing::error!(
                    "Telegram: another program is polling this bot (only one may); retrying"
                );
                Duration::from_secs(5)
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                tracing::error!("Telegram refuses TELEGRAM_BOT_TOKEN; check it with @BotFather");
                Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!("Telegram: polling failed ({e}); retrying in {backoff:?}");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// `getMe`, retried until it works or the token is refused.
async fn identify(tg: &TelegramChannel, cancel: &CancellationToken) -> Option<BotIdentity> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match tg.bot().get_me().await {
            Ok(me) => {
                return Some(BotIdentity {
                    id: me.user.id.0,
                    username: me.username().to_lowercase(),
                });
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                tracing::error!(
                    "Telegram refuses TELEGRAM_BOT_TOKEN (getMe: Unauthorized); the Telegram \
                     channel is off. Check the token with @BotFather and restart."
                );
                return None;
            }
            Err(e) => {
                tracing::warn!("Telegram: getMe failed ({e}); retrying in {backoff:?}");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// What a handling task that failed left to say: its panic message, or that it was cancelled.
fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "its handling was cancelled".to_owned();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("it panicked: {text}")
}

fn journal_entry(update: &Update) -> Option<JournalEntry> {
    let payload = match serde_json::to_string(update) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                update = update.id.0,
                "Telegram: an update cannot be recorded ({e}); skipped"
            );
            return None;
        }
    };
    let chat_key = update
        .chat()
        .map_or_else(|| "-".to_owned(), |c| c.id.0.to_string());
    Some(JournalEntry {
        update_id: i64::from(update.id.0),
        chat_key,
        payload,
    })
}

/// The per-chat tasks.
#[derive(Clone)]
pub(super) struct Chats {
    tg: TelegramChannel,
    ctx: Inlet,
    me: BotIdentity,
    bot_id: i64,
    /// std Mutex, never held across an await.
    workers: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<JournalEntry>>>>,
    cancel: CancellationToken,
}

impl Chats {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<JournalEntry>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dispatch(&self, entry: JournalEntry) {
        let mut workers = self.lock();
        let key = entry.chat_key.clone();
        let entry = match workers.get(&key) {
            Some(tx) => match tx.send(entry) {
                Ok(()) => return,
                Err(mpsc::error::SendError(entry)) => entry, // its task just ended
            },
            None => entry,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A fresh channel with a live receiver below: this send cannot fail.
        let _ = tx.send(entry);
        workers.insert(key.clone(), tx);
        tokio::spawn(self.clone().work(key, rx));
    }

    async fn work(self, key: String, mut rx: mpsc::UnboundedReceiver<JournalEntry>) {
        loop {
            let entry = tokio::select! {
                () = self.cancel.cancelled() => return,
                e = rx.recv() => e,
                () = tokio::time::sleep(CHAT_IDLE) => {
                    let mut workers = self.lock();
                    match rx.try_recv() {
                        Ok(e) => Some(e),
                        Err(_) => {
                            workers.remove(&key);
                            return;
                        }
                    }
                }
            };
            let Some(entry) = entry else { return };
            // Each update on a task of its own: a panic while handling one (a parser that
            // trusts what a client sent) is recorded and the update marked handled like any
            // other, so it is neither lost silently nor handled again at every start, and the
            // chat's next updates go on.
            let handling = {
                let (chats, entry) = (self.clone(), entry.clone());
                tokio::spawn(async move { chats.handle(&entry).await })
            };
            if let Err(e) = handling.await {
                let reason = format!(
                    "update {} could not be handled: {}",
                    entry.update_id,
                    panic_text(e)
                );
                tracing::error!(update_id = entry.update_id, "Telegram: {reason}");
                let chat = entry.chat_key.clone();
                if let Err(e) = self
                    .ctx
                    .db
                    .call(move |conn| {
                        db::record_dropped(
                            conn,
                            &db::Dropped {
                                channel_type: "telegram",
                                platform_id: &chat,
                                sender_id: None,
                                sender_name: None,
                                agent_group_id: None,
                                reason: &reason,
                            },
                            Utc::now(),
                        )
                    })
                    .await
                {
                    tracing::error!(
                        update_id = entry.update_id,
                        "Telegram: cannot record a dropped update: {e}"
                    );
                }
            }
            let (bot_id, update_id) = (self.bot_id, entry.update_id);
            if let Err(e) = self
                .ctx
                .db
                .call(move |conn| db::finish_update(conn, bot_id, update_id, Utc::now()))
                .await
            {
                tracing::error!(update_id, "Telegram: cannot mark an update handled: {e}");
            }
        }
    }

    async fn handle(&self, entry: &JournalEntry) {
        let update: Update = match serde_json::from_str(&entry.payload) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(
                    update = entry.update_id,
                    "Telegram: unreadable update skipped: {e}"
                );
                return;
            }
        };
        match update.kind {
            UpdateKind::Message(msg)
                if msg
                    .new_chat_members()
                    .is_some_and(|m| m.iter().any(|u| u.id.0 as i64 == self.bot_id)) =>
            {
                self.added_to_chat(&msg).await;
            }
            UpdateKind::Message(msg) => match inbound::event_of(&msg, &self.me) {
                Incoming::Route(event) => self.route(*event).await,
                Incoming::Ignore(why) => {
                    tracing::debug!(
                        chat = msg.chat.id.0,
                        message = msg.id.0,
                        "Telegram: ignored ({why})"
                    );
                }
            },
            UpdateKind::EditedMessage(msg) => {
                // What the agent answered stays answered; an edit changes nothing.
                tracing::debug!(
                    chat = msg.chat.id.0,
                    message = msg.id.0,
                    "Telegram: edit of a message ignored"
                );
            }
            UpdateKind::CallbackQuery(query) => {
                super::callbacks::handle(self, query).await;
            }
            UpdateKind::Error(value) => {
                tracing::warn!(
                    update = entry.update_id,
                    "Telegram: update of an unknown kind ignored: {value}"
                );
            }
            _ => {}
        }
    }

    /// Routes a message and acts on what the router decided (notices, `/status`, approval
    /// requests).
    pub(super) async fn route(&self, event: InboundEvent) {
        let reply_to = event.message_id.clone();
        let route = mailbox::Route {
            channel_type: event.channel_type.clone(),
            platform_id: event.platform_id.clone(),
            thread_id: event.thread_id.clone(),
        };
        let files = TelegramFiles {
            bot: self.tg.bot().clone(),
        };
        let mut attempt = 0;
        let routed = loop {
            attempt += 1;
            match self
                .ctx
                .router
                .route_with(event.clone(), &files, self.tg.inner.max_file_bytes)
                .await
            {
                Ok(r) => break r,
                Err(e) if attempt < ROUTE_ATTEMPTS => {
                    tracing::warn!("Telegram: routing failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                }
                Err(e) => {
                    tracing::error!(chat = %route.platform_id, message = %reply_to, "Telegram: message lost to an internal error: {e}");
                    let _ = self
                        .tg
                        .notice(&route, "⚠ This message could not be taken in (internal error); please send it again.", Some(&reply_to))
                        .await;
                    return;
                }
            }
        };
        for r in routed {
            let text = match r {
                Routed::Accepted { .. } | Routed::Refused { notice: None, .. } => continue,
                Routed::Refused {
                    notice: Some(text), ..
                }
                | Routed::Answered { text, .. } => text,
                Routed::AwaitingApproval {
                    approval_id,
                    new_request,
                    ..
                } => {
                    if !new_request {
                        continue;
                    }
                    super::callbacks::ask_approval(self, &approval_id, &route).await;
                    // Once per request: the sender knows why nothing answers yet.
                    "⏳ Waiting for approval: the agent's owners have been asked to let you in."
                        .to_owned()
                }
            };
            if let Err(e) = self.tg.notice(&route, &text, Some(&reply_to)).await {
                tracing::warn!("Telegram: cannot answer in chat {}: {e}", route.platform_id);
            }
        }
    }

    /// The bot was added to a group. A group no agent is wired to is recorded (the audit and
    /// `clawbox dropped` show it with its wiring command), logged once, and told once how to
    /// wire it when `TELEGRAM_ANNOUNCE_UNKNOWN` is on.
    async fn added_to_chat(&self, msg: &teloxide::types::Message) {
        use crate::session::first_contact::{self, ADDED_TO_UNKNOWN_CHAT, Refusal};
        let chat = msg.chat.id.0.to_string();
        let by = msg.from.as_ref().map(|u| format!("telegram:{}", u.id.0));
        let by_name = msg.from.as_ref().map(|u| u.full_name());
        let (c, b, n) = (chat.clone(), by.clone(), by_name.clone());
        let first = self
            .ctx
            .db
            .call(move |conn| {
                if let Some(known) = db::messaging_group_by_platform(conn, "telegram", &c)?
                    && !db::wirings_of(conn, &known.id)?.is_empty()
                {
                    return Ok(false);
                }
                let first = !db::dropped_before(conn, "telegram", &c, ADDED_TO_UNKNOWN_CHAT, None)?;
                db::record_dropped(
                    conn,
                    &db::Dropped {
                        channel_type: "telegram",
                        platform_id: &c,
                        sender_id: b.as_deref(),
                        sender_name: n.as_deref(),
                        agent_group_id: None,
                        reason: ADDED_TO_UNKNOWN_CHAT,
                    },
                    Utc::now(),
                )?;
                Ok(first)
            })
            .await;
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(chat, "Telegram: cannot record the bot's addition: {e}");
                return;
            }
        };
        let Some(command) = first_contact::wiring_command(
            "telegram",
            &chat,
            None,
            by.as_deref(),
            ADDED_TO_UNKNOWN_CHAT,
        ) else {
            return;
        };
        if !first {
            return;
        }
        first_contact::log_first_contact(
            &Refusal {
                channel_type: "telegram",
                platform_id: &chat,
                sender_id: by.as_deref(),
                sender_name: by_name.as_deref(),
                agent: None,
                reason: ADDED_TO_UNKNOWN_CHAT,
            },
            &command,
        );
        if !self.tg.inner.announce_unknown {
            return;
        }
        let route = mailbox::Route {
            channel_type: "telegram".into(),
            platform_id: chat.clone(),
            thread_id: None,
        };
        // Public, hence short and without the adder's id.
        let public =
            first_contact::wiring_command("telegram", &chat, None, None, ADDED_TO_UNKNOWN_CHAT)
                .unwrap_or(command);
        let hint = format!(
            "👋 No agent is set up for this chat yet, so I will not answer here. The bot's \
             operator can wire it with:\n{public}"
        );
        if let Err(e) = self.tg.notice(&route, &hint, None).await {
            tracing::warn!(chat, "Telegram: cannot announce in a new chat: {e}");
        }
    }

    pub(super) fn tg(&self) -> &TelegramChannel {
        &self.tg
    }

    pub(super) fn ctx(&self) -> &Inlet {
        &self.ctx
    }
}

/// Files of Telegram messages: `getFile`, then a streamed download capped at the limit.
struct TelegramFiles {
    bot: Bot,
}

impl FileSource for TelegramFiles {
    fn fetch<'a>(
        &'a self,
        file: &'a IncomingFile,
        dest: &'a Path,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<u64, FetchError>> {
        Box::pin(async move {
            let limit_mb = max_bytes / (1024 * 1024);
            let failed = |e: &dyn std::fmt::Display| FetchError::Failed(e.to_string());
            let meta = self
                .bot
                .get_file(FileId(file.source.clone()))
                .await
                .map_err(|e| failed(&e))?;
            if u64::from(meta.meta.size) > max_bytes {
                return Err(FetchError::TooLarge { limit_mb });
            }
            let mut out = tokio::fs::File::from_std(
                crate::session::inbound_files::create_download(dest).map_err(|e| failed(&e))?,
            );
            let mut stream = self.bot.download_file_stream(&meta.path);
            let mut written: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| failed(&e))?;
                written += chunk.len() as u64;
                if written > max_bytes {
                    return Err(FetchError::TooLarge { limit_mb });
                }
                out.write_all(&chunk).await.map_err(|e| failed(&e))?;
            }
            out.sync_all().await.map_err(|e| failed(&e))?;
            Ok(written)
        })
    }
}

/// A message id of this chat, as Telegram knows it.
pub(super) fn message_id(id: &str) -> Option<MessageId> {
    id.parse().ok().map(MessageId)
}
