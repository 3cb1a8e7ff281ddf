//! The Telegram channel: a bot on the Bot API (teloxide's client, long polling). This file owns
//! the sending side — replies rendered from Markdown to Telegram HTML and split to fit,
//! threaded into the topic they belong to, files as photos or documents, edits as real edits,
//! reactions, the typing indicator, and Telegram's rate limits: every message posted or edited
//! waits for its chat's slot (`pace.rs`: a second apart, 20 a minute in a group), and a
//! `429 retry_after` is waited out, holding that chat's later messages too. `poll.rs` owns receiving (the update journal and per-chat ordering), `callbacks.rs`
//! the inline buttons (approving unknown senders), `inbound.rs` what a message means and
//! `format.rs` the rendering.
//!
//! A reply of several parts (long text, or files plus text) remembers which parts went out, so
//! an attempt that failed half-way resumes where it stopped instead of sending the first parts
//! twice. The delivery record keeps the ids of all parts, comma-separated, for edits.

mod callbacks;
pub mod format;
pub mod inbound;
mod pace;
mod poll;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mailbox::{OutboundMessage, Route};
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::payloads::{
    EditMessageTextSetters, SendChatActionSetters, SendDocumentSetters, SendMessageSetters,
    SendPhotoSetters,
};
use teloxide::prelude::*;
use teloxide::requests::Output;
use teloxide::types::{
    ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, MessageEntity, MessageId,
    ParseMode, ReactionType, ReplyParameters, ThreadId,
};
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::config::Config;
use crate::session::Inlet;
use crate::session::outbox::Attachment;
use crate::session::outlet::{Content, DeliveryError, Drafting, PlatformRefs};
use format::{CAPTION_LIMIT, MESSAGE_LIMIT, Part};
use inbound::BotIdentity;

/// How long one send may wait for Telegram's rate limit in all before it counts as failed
/// (and is retried by the delivery loop).
const MAX_RATE_WAIT: Duration = Duration::from_secs(60);
/// Network failures of one call retried right away (then the delivery loop retries).
const NETWORK_RETRIES: u32 = 2;
/// `sendChatAction` lasts five seconds; it is renewed a little sooner.
const TYPING_RENEW: Duration = Duration::from_secs(4);
/// A typing indicator nobody turned off stops by itself after this long.
const TYPING_MAX: Duration = Duration::from_secs(600);
/// Telegram's limit for `sendPhoto`; larger images go as documents.
const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;
/// The least time between two edits of one draft. Telegram allows about one message a second
/// per chat (20 a minute in groups), edits included; a draft stays far below, so the reply
/// itself never meets a rate limit the draft caused.
pub const DRAFT_EDIT_EVERY: Duration = Duration::from_millis(1500);

#[derive(Clone)]
pub struct TelegramChannel {
    inner: Arc<Inner>,
}

struct Inner {
    bot: Bot,
    /// Set once `getMe` answered.
    me: OnceLock<BotIdentity>,
    max_file_bytes: u64,
    poll_timeout: Duration,
    /// `TELEGRAM_ANNOUNCE_UNKNOWN`: say in a new unwired group how to wire it.
    announce_unknown: bool,
    /// Live typing indicators by (chat, topic).
    typing: Mutex<HashMap<(String, Option<String>), CancellationToken>>,
    /// Message ids of the parts already sent, per (session, outbound seq), while a
    /// multi-part reply is not complete.
    progress: Mutex<HashMap<(String, i64), Vec<String>>>,
    /// The message showing each session's draft, until its reply takes it over.
    drafts: Mutex<HashMap<String, Drafted>>,
    /// The pace of messages per chat; std Mutex, never held across an await.
    pace: Mutex<pace::Pacer>,
}

/// The message showing a session's draft (plain text while it grows).
#[derive(Debug, Clone)]
struct Drafted {
    reply_to: i64,
    chat: ChatId,
    /// `None` until `sendMessage` succeeded.
    message: Option<MessageId>,
    /// The text it shows.
    shown: String,
    /// No call for this draft before then (the edit interval, or Telegram's `retry_after`).
    quiet_until: tokio::time::Instant,
}

/// One thing to send for an outbound row.
enum Step<'a> {
    Text(&'a Part),
    File(&'a Attachment, Option<&'a Part>),
}

impl TelegramChannel {
    pub fn new(config: &Config, token: &str) -> Result<Self, HostError> {
        let url = url::Url::parse(&config.telegram_api_url).map_err(|e| {
            HostError::Config(format!(
                "TELEGRAM_API_URL={:?}: {e}",
                config.telegram_api_url
            ))
        })?;
        let client = teloxide::net::default_reqwest_settings()
            .build()
            .map_err(|e| HostError::Config(format!("cannot build the Telegram client: {e}")))?;
        Ok(TelegramChannel {
            inner: Arc::new(Inner {
                bot: Bot::with_client(token, client).set_api_url(url),
                me: OnceLock::new(),
                max_file_bytes: config.telegram_max_file_bytes,
                poll_timeout: config.telegram_poll_timeout,
                announce_unknown: config.telegram_announce_unknown,
                typing: Mutex::default(),
                progress: Mutex::default(),
                drafts: Mutex::default(),
                pace: Mutex::default(),
            }),
        })
    }

    /// Starts receiving: `getMe`, then long polling until `cancel`.
    pub fn start(&self, ctx: Inlet, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(poll::run(self.clone(), ctx, cancel))
    }

    fn bot(&self) -> &Bot {
        &self.inner.bot
    }

    /// [`call`] for a request that posts or edits a message in `chat`: each attempt waits for
    /// the chat's next slot, and a `429 retry_after` holds the chat for every sender.
    async fn paced<R>(&self, chat: ChatId, req: &R) -> Result<Output<R>, RequestError>
    where
        R: Request<Err = RequestError>,
    {
        send_retrying(req, Some((&self.inner.pace, chat.0))).await
    }

    /// Sends one outbound row; returns the ids of the messages it became, comma-separated.
    pub(super) async fn deliver(
        &self,
        session_id: &str,
        msg: &OutboundMessage,
        content: Content<'_>,
        attachments: &[Attachment],
        refs: &PlatformRefs,
    ) -> Result<Option<String>, DeliveryError> {
        let chat = chat_of(&msg.route)?;
        let thread = thread_of(&msg.route);
        match content {
            Content::Text {
                text,
                edit_of: None,
            } => {
                // Quoting the message answered keeps group conversations readable; in a
                // private chat it is only noise.
                let reply_to = refs
                    .reply_to
                    .as_deref()
                    .filter(|_| chat.0 < 0)
                    .and_then(first_id);
                let key = (session_id.to_owned(), msg.seq);
                if attachments.is_empty() && !self.progress().contains_key(&key) {
                    self.finish_draft(session_id, msg, &key, text).await;
                }
                self.send_steps(key, chat, thread, reply_to, text, attachments)
                    .await
                    .map(Some)
            }
            Content::Text {
                text,
                edit_of: Some(seq),
            } => {
                let target = refs.target.as_deref().ok_or_else(|| {
                    DeliveryError::Permanent(format!(
                        "message {seq} was never delivered, so it cannot be edited"
                    ))
                })?;
                self.edit(chat, thread, target, text).await.map(Some)
            }
            Content::Reaction {
                reaction_to, emoji, ..
            } => {
                let target = refs.target.as_deref().and_then(first_id).ok_or_else(|| {
                    DeliveryError::Permanent(format!(
                        "message {reaction_to} has no Telegram message to react to"
                    ))
                })?;
                let req = self.bot().set_message_reaction(chat, target).reaction(vec![
                    ReactionType::Emoji {
                        emoji: emoji.to_owned(),
                    },
                ]);
                call(&req).await.map(|_| None).map_err(classify)
            }
        }
    }

    /// Sends the files (the first with the text's first part as caption) and the text parts,
    /// skipping what an earlier attempt already sent.
    async fn send_steps(
        &self,
        key: (String, i64),
        chat: ChatId,
        thread: Option<ThreadId>,
        reply_to: Option<MessageId>,
        text: &str,
        attachments: &[Attachment],
    ) -> Result<String, DeliveryError> {
        let first_limit = if attachments.is_empty() {
            MESSAGE_LIMIT
        } else {
            CAPTION_LIMIT
        };
        let parts = format::to_parts(text, first_limit);
        let mut steps: Vec<Step<'_>> = Vec::new();
        let mut texts = parts.iter();
        for (i, a) in attachments.iter().enumerate() {
            steps.push(Step::File(a, if i == 0 { texts.next() } else { None }));
        }
        steps.extend(texts.map(Step::Text));
        if steps.is_empty() {
            return Err(DeliveryError::Permanent(
                "message has no text to send".into(),
            ));
        }
        let mut sent = self.progress().get(&key).cloned().unwrap_or_default();
        for (i, step) in steps.iter().enumerate().skip(sent.len()) {
            let reply = if i == 0 { reply_to } else { None };
            let result = match step {
                Step::Text(part) => self.send_part(chat, thread, reply, part).await,
                Step::File(a, caption) => self.send_file(chat, thread, reply, a, *caption).await,
            };
            match result {
                Ok(id) => {
                    sent.push(id.0.to_string());
                    self.progress().insert(key.clone(), sent.clone());
                }
                Err(e) => {
                    let e = classify(e);
                    if matches!(e, DeliveryError::Permanent(_)) {
                        self.progress().remove(&key);
                    }
                    return Err(e);
                }
            }
        }
        self.progress().remove(&key);
        Ok(sent.join(","))
    }

    /// Shows a session's draft: one `sendMessage` at the first text, then `editMessageText`
    /// as it grows, at most every [`DRAFT_EDIT_EVERY`]; `None` deletes the message of a draft
    /// whose turn ended without taking it over. Plain text (a half-written Markdown reply does
    /// not render); the reply's formatting comes with the reply. While the agent's tools run
    /// (and its `show_tools` is on) the draft's last line says what they do, in italics; with
    /// nothing written yet, that line is the whole draft. The reply, edited in, has no such
    /// line. Every call is tried once: a draft never waits out a rate limit, it just shows
    /// less often.
    pub(super) async fn draft(&self, session_id: &str, route: &Route, draft: Option<&Drafting>) {
        let Some(draft) = draft else {
            let gone = self.drafts().remove(session_id);
            if let Some(Drafted {
                chat,
                message: Some(message),
                ..
            }) = gone
                && let Err(e) = self.bot().delete_message(chat, message).send_ref().await
            {
                tracing::info!(session_id, "cannot delete a draft whose turn ended: {e}");
            }
            return;
        };
        let Ok(chat) = chat_of(route) else { return };
        let footer = draft.progress.as_deref().filter(|_| draft.show_tools);
        let (text, footer) = draft_message(&draft.text, footer);
        if text.trim().is_empty() {
            return;
        }
        let entities = || footer.iter().cloned().collect::<Vec<_>>();
        let now = tokio::time::Instant::now();
        let current = self.drafts().get(session_id).cloned();
        let current = match current {
            Some(d) if d.reply_to == draft.reply_to => d,
            other => {
                // Another turn's draft whose end this host did not see: it stays as it is.
                if other.is_some() {
                    self.drafts().remove(session_id);
                }
                Drafted {
                    reply_to: draft.reply_to,
                    chat,
                    message: None,
                    shown: String::new(),
                    quiet_until: now,
                }
            }
        };
        if current.shown == text || now < current.quiet_until {
            return;
        }
        let sent = match current.message {
            Some(id) => {
                let mut req = self.bot().edit_message_text(chat, id, &text);
                if footer.is_some() {
                    req = req.entities(entities());
                }
                req.send_ref().await.map(|_| id)
            }
            None => {
                let mut req = self.bot().send_message(chat, &text);
                if footer.is_some() {
                    req = req.entities(entities());
                }
                if let Some(t) = thread_of(route) {
                    req = req.message_thread_id(t);
                }
                // As the reply will: quoting the message answered in groups only.
                if let Some(quote) = draft.reply_to_platform.as_deref().and_then(first_id)
                    && chat.0 < 0
                {
                    req = req.reply_parameters(
                        ReplyParameters::new(quote).allow_sending_without_reply(),
                    );
                }
                req.send_ref().await.map(|m| m.id)
            }
        };
        let mut next = current;
        // Counted from the answer: the next call starts a whole interval after this one ended.
        let now = tokio::time::Instant::now();
        match sent {
            Ok(id) => {
                next.message = Some(id);
                next.shown = text;
                next.quiet_until = now + DRAFT_EDIT_EVERY;
            }
            Err(RequestError::Api(ApiError::MessageNotModified)) => {
                next.shown = text;
                next.quiet_until = now + DRAFT_EDIT_EVERY;
            }
            Err(RequestError::RetryAfter(wait)) => {
                next.quiet_until = now + wait.duration();
            }
            Err(e) => {
                tracing::info!(session_id, "cannot show the draft: {e}");
                next.quiet_until = now + DRAFT_EDIT_EVERY;
            }
        }
        self.drafts().insert(session_id.to_owned(), next);
    }

    /// A reply that answers the session's draft takes its message over: the first part is
    /// edited into it (with the reply's formatting), and `send_steps` sends the other parts as
    /// it would. If the edit fails the draft stays as it is and the reply is sent whole.
    async fn finish_draft(
        &self,
        session_id: &str,
        msg: &OutboundMessage,
        key: &(String, i64),
        text: &str,
    ) {
        let taken = {
            let mut drafts = self.drafts();
            match drafts.get(session_id) {
                Some(d) if msg.in_reply_to == Some(d.reply_to) => drafts.remove(session_id),
                _ => None,
            }
        };
        let Some(Drafted {
            chat,
            message: Some(message),
            ..
        }) = taken
        else {
            return;
        };
        let Some(first) = format::to_parts(text, MESSAGE_LIMIT).into_iter().next() else {
            return;
        };
        match self.edit_part(chat, message, &first).await {
            Ok(()) => {
                self.progress()
                    .insert(key.clone(), vec![message.0.to_string()]);
            }
            Err(e) => {
                tracing::warn!(
                    session_id,
                    out_seq = msg.seq,
                    "cannot turn the draft into the reply ({e}); sending the reply as a new message"
                );
            }
        }
    }

    fn drafts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Drafted>> {
        self.inner.drafts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), Vec<String>>> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// One text part as HTML; as plain text if Telegram refuses the entities.
    async fn send_part(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        reply_to: Option<MessageId>,
        part: &Part,
    ) -> Result<MessageId, RequestError> {
        let request = |text: &str, html: bool| {
            let mut req = self.bot().send_message(chat, text);
            if html {
                req = req.parse_mode(ParseMode::Html);
            }
            if let Some(t) = thread {
                req = req.message_thread_id(t);
            }
            if let Some(r) = reply_to {
                req = req.reply_parameters(ReplyParameters::new(r).allow_sending_without_reply());
            }
            req
        };
        match self.paced(chat, &request(&part.html, true)).await {
            Ok(m) => Ok(m.id),
            Err(RequestError::Api(ApiError::CantParseEntities(why))) => {
                tracing::warn!("Telegram refused the formatting ({why}); sending plain text");
                self.paced(chat, &request(&part.plain, false))
                    .await
                    .map(|m| m.id)
            }
            Err(e) => Err(e),
        }
    }

    /// A file as a photo (images up to Telegram's photo limit) or a document.
    async fn send_file(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        reply_to: Option<MessageId>,
        file: &Attachment,
        caption: Option<&Part>,
    ) -> Result<MessageId, RequestError> {
        // Uploaded from memory (at most a message's attachment cap), read off the runtime.
        let opened = file.clone();
        let bytes = tokio::task::spawn_blocking(move || opened.read_all())
            .await
            .map_err(|e| RequestError::Io(Arc::new(std::io::Error::other(e.to_string()))))?
            .map_err(|e| RequestError::Io(Arc::new(std::io::Error::other(e.to_string()))))?;
        let input = || InputFile::memory(bytes.clone()).file_name(file.name.clone());
        let lower = file.name.to_ascii_lowercase();
        let as_photo = [".jpg", ".jpeg", ".png", ".webp"]
            .iter()
            .any(|ext| lower.ends_with(ext))
            && bytes.len() <= MAX_PHOTO_BYTES;
        for html in [true, false] {
            let text = caption.map(|c| {
                if html {
                    c.html.clone()
                } else {
                    c.plain.clone()
                }
            });
            let result = if as_photo {
                let mut req = self.bot().send_photo(chat, input());
                if let Some(t) = &text {
                    req = req.caption(t.clone());
                    if html {
                        req = req.parse_mode(ParseMode::Html);
                    }
                }
                if let Some(t) = thread {
                    req = req.message_thread_id(t);
                }
                if let Some(r) = reply_to {
                    req =
                        req.reply_parameters(ReplyParameters::new(r).allow_sending_without_reply());
                }
                match self.paced(chat, &req).await {
                    // Telegram could not use it as a photo (dimensions, format): a document.
                    Err(RequestError::Api(e)) if is_photo_problem(&e) => {
                        self.send_document(chat, thread, reply_to, input(), text.as_deref(), html)
                            .await
                    }
                    other => other.map(|m| m.id),
                }
            } else {
                self.send_document(chat, thread, reply_to, input(), text.as_deref(), html)
                    .await
            };
            match result {
                Err(RequestError::Api(ApiError::CantParseEntities(why))) if html => {
                    tracing::warn!(
                        "Telegram refused the caption's formatting ({why}); sending it plain"
                    );
                }
                other => return other,
            }
        }
        Err(RequestError::Api(ApiError::CantParseEntities(
            "the plain caption was refused as well".into(),
        )))
    }

    async fn send_document(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        reply_to: Option<MessageId>,
        input: InputFile,
        caption: Option<&str>,
        html: bool,
    ) -> Result<MessageId, RequestError> {
        let mut req = self.bot().send_document(chat, input);
        if let Some(c) = caption {
            req = req.caption(c.to_owned());
            if html {
                req = req.parse_mode(ParseMode::Html);
            }
        }
        if let Some(t) = thread {
            req = req.message_thread_id(t);
        }
        if let Some(r) = reply_to {
            req = req.reply_parameters(ReplyParameters::new(r).allow_sending_without_reply());
        }
        self.paced(chat, &req).await.map(|m| m.id)
    }

    /// Replaces the text of the messages `target` (ids as delivered) with `text`: part by part;
    /// extra parts are sent, surplus old parts deleted.
    async fn edit(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        target: &str,
        text: &str,
    ) -> Result<String, DeliveryError> {
        let old: Vec<MessageId> = target.split(',').filter_map(first_id).collect();
        let parts = format::to_parts(text, MESSAGE_LIMIT);
        if old.is_empty() {
            return Err(DeliveryError::Permanent(
                "the message to edit was never delivered".into(),
            ));
        }
        if parts.is_empty() {
            return Err(DeliveryError::Permanent("an edit needs some text".into()));
        }
        let mut ids = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let id = match old.get(i) {
                Some(&id) => {
                    self.edit_part(chat, id, part).await.map_err(classify)?;
                    id
                }
                None => self
                    .send_part(chat, thread, None, part)
                    .await
                    .map_err(classify)?,
            };
            ids.push(id.0.to_string());
        }
        for &surplus in old.iter().skip(parts.len()) {
            if let Err(e) = call(&self.bot().delete_message(chat, surplus)).await {
                tracing::warn!(
                    message = surplus.0,
                    "cannot delete the surplus part of an edited message: {e}"
                );
            }
        }
        Ok(ids.join(","))
    }

    async fn edit_part(
        &self,
        chat: ChatId,
        id: MessageId,
        part: &Part,
    ) -> Result<(), RequestError> {
        let html = self
            .bot()
            .edit_message_text(chat, id, &part.html)
            .parse_mode(ParseMode::Html);
        let result = match self.paced(chat, &html).await {
            Err(RequestError::Api(ApiError::CantParseEntities(why))) => {
                tracing::warn!("Telegram refused the formatting of an edit ({why}); editing plain");
                self.paced(chat, &self.bot().edit_message_text(chat, id, &part.plain))
                    .await
            }
            other => other,
        };
        match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Shows a question with one button per option (`q:<question id>:<index>`); returns the
    /// card's message id.
    pub(super) async fn ask(
        &self,
        q: &crate::session::questions::Question,
    ) -> Result<String, DeliveryError> {
        let chat = chat_of(&q.route)?;
        let keyboard = InlineKeyboardMarkup::new(q.options.iter().enumerate().map(|(i, c)| {
            vec![InlineKeyboardButton::callback(
                c.label.clone(),
                format!("{}{}:{i}", callbacks::QUESTION_PREFIX, q.id),
            )]
        }));
        let mut req = self
            .bot()
            .send_message(chat, question_card(q))
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard);
        if let Some(t) = thread_of(&q.route) {
            req = req.message_thread_id(t);
        }
        self.paced(chat, &req)
            .await
            .map(|m| m.id.0.to_string())
            .map_err(classify)
    }

    /// Edits a question's card to say how it ended; the buttons go.
    pub(super) async fn close_question(
        &self,
        q: &crate::session::questions::Question,
    ) -> Result<(), DeliveryError> {
        let chat = chat_of(&q.route)?;
        let Some(card) = q.card.as_deref().and_then(first_id) else {
            return Ok(());
        };
        let text = format!(
            "{}\n\n{}",
            question_card(q),
            format::escape_text(&q.outcome_text().unwrap_or_default())
        );
        let req = self
            .bot()
            .edit_message_text(chat, card, text)
            .parse_mode(ParseMode::Html);
        match self.paced(chat, &req).await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// A host notice (plain text), in the chat's topic, replying to `reply_to` if given.
    pub(super) async fn notice(
        &self,
        route: &Route,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<(), DeliveryError> {
        let chat = chat_of(route)?;
        let thread = thread_of(route);
        let reply_to = reply_to.and_then(first_id);
        for (i, plain) in format::plain_parts(text).iter().enumerate() {
            let part = Part {
                html: format::escape_text(plain),
                plain: plain.clone(),
            };
            self.send_part(chat, thread, if i == 0 { reply_to } else { None }, &part)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Shows (or stops showing) "typing…" in the chat and topic of `route`.
    pub(super) fn typing(&self, route: &Route, on: bool) {
        let key = (route.platform_id.clone(), route.thread_id.clone());
        let mut map = self.inner.typing.lock().unwrap_or_else(|e| e.into_inner());
        if !on {
            if let Some(token) = map.remove(&key) {
                token.cancel();
            }
            return;
        }
        if map.get(&key).is_some_and(|t| !t.is_cancelled()) {
            return;
        }
        let Ok(chat) = chat_of(route) else { return };
        let thread = thread_of(route);
        let token = CancellationToken::new();
        map.insert(key, token.clone());
        let bot = self.bot().clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + TYPING_MAX;
            while tokio::time::Instant::now() < deadline {
                let mut req = bot.send_chat_action(chat, ChatAction::Typing);
                if let Some(t) = thread {
                    req = req.message_thread_id(t);
                }
                if let Err(e) = req.send().await {
                    // Cosmetic: the reply still arrives.
                    tracing::debug!("typing indicator failed: {e}");
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(TYPING_RENEW) => {}
                }
            }
            token.cancel();
        });
    }
}

/// Sends a request, waiting out `429 retry_after` (up to [`MAX_RATE_WAIT`] in all) and retrying
/// network failures a couple of times.
async fn call<R>(req: &R) -> Result<Output<R>, RequestError>
where
    R: Request<Err = RequestError>,
{
    send_retrying(req, None).await
}

/// [`call`], with each attempt paced for the chat when `pace` names one (see `pace.rs`).
async fn send_retrying<R>(
    req: &R,
    pace: Option<(&Mutex<pace::Pacer>, i64)>,
) -> Result<Output<R>, RequestError>
where
    R: Request<Err = RequestError>,
{
    // Never held across an await; a poisoned pacer only means a panic elsewhere.
    fn pacer(p: &Mutex<pace::Pacer>) -> std::sync::MutexGuard<'_, pace::Pacer> {
        p.lock().unwrap_or_else(|e| e.into_inner())
    }
    let mut waited = Duration::ZERO;
    let mut network_failures = 0;
    loop {
        if let Some((p, chat)) = pace {
            let at = pacer(p).reserve(chat, tokio::time::Instant::now());
            tokio::time::sleep_until(at).await;
        }
        match req.send_ref().await {
            Err(RequestError::RetryAfter(s)) => {
                if let Some((p, chat)) = pace {
                    pacer(p).hold(chat, tokio::time::Instant::now() + s.duration());
                }
                if waited + s.duration() > MAX_RATE_WAIT {
                    return Err(RequestError::RetryAfter(s));
                }
                tracing::info!(retry_after = s.seconds(), "Telegram rate limit; waiting");
                if pace.is_none() {
                    tokio::time::sleep(s.duration()).await;
                }
                waited += s.duration();
            }
            Err(RequestError::Network(e)) if network_failures < NETWORK_RETRIES => {
                network_failures += 1;
                tracing::warn!("Telegram unreachable ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500) * network_failures).await;
            }
            other => return other,
        }
    }
}

/// The most UTF-16 units of a draft's footer (a progress line is far shorter).
const FOOTER_LIMIT: usize = 200;

/// A draft as its message shows it: the text cut to fit one message (UTF-16 units, as
/// Telegram counts), with an ellipsis when cut; with a `footer`, room is left for it on the
/// last line, after a blank one, and the italic entity covering it comes back too. Telegram
/// trims a message's ends, so the text is trimmed here and the entity's offset stays true.
fn draft_message(text: &str, footer: Option<&str>) -> (String, Option<MessageEntity>) {
    let Some(footer) = footer.map(str::trim).filter(|f| !f.is_empty()) else {
        return (cut_units(text.trim_end(), MESSAGE_LIMIT - 1), None);
    };
    let footer = cut_units(footer, FOOTER_LIMIT);
    let footer_units = footer.encode_utf16().count();
    // The blank line and the ellipsis a cut may add.
    let room = MESSAGE_LIMIT - footer_units - 3;
    let mut out = cut_units(text.trim(), room);
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    let offset = out.encode_utf16().count();
    out.push_str(&footer);
    (out, Some(MessageEntity::italic(offset, footer_units)))
}

/// `text` cut after at most `limit` UTF-16 units, with an ellipsis when cut (so at most
/// `limit + 1` units).
fn cut_units(text: &str, limit: usize) -> String {
    let mut units = 0;
    let mut out = String::new();
    for c in text.chars() {
        units += c.len_utf16();
        if units > limit {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// Whether an API error is worth another attempt later.
fn transient_api(e: &ApiError) -> bool {
    match e {
        ApiError::Unknown(text) => {
            let t = text.to_ascii_lowercase();
            !(t.starts_with("bad request")
                || t.starts_with("forbidden")
                || t.starts_with("unauthorized"))
        }
        _ => false,
    }
}

fn is_photo_problem(e: &ApiError) -> bool {
    let text = e.to_string().to_ascii_uppercase();
    text.contains("PHOTO") || text.contains("IMAGE")
}

/// What a failed Telegram call means for the delivery.
fn classify(e: RequestError) -> DeliveryError {
    match e {
        RequestError::RetryAfter(s) => DeliveryError::Transient(format!(
            "Telegram's rate limit asks to wait {} s",
            s.seconds()
        )),
        RequestError::Network(e) => DeliveryError::Transient(format!("Telegram unreachable: {e}")),
        RequestError::InvalidJson { raw, .. } => DeliveryError::Transient(format!(
            "Telegram answered something that is not the Bot API: {}",
            raw.chars().take(120).collect::<String>()
        )),
        RequestError::Io(e) => DeliveryError::Transient(format!("cannot send the file: {e}")),
        RequestError::MigrateToChatId(id) => DeliveryError::Permanent(format!(
            "the group was upgraded to a supergroup with chat id {}; wire that id with create-agent",
            id.0
        )),
        RequestError::Api(e) if transient_api(&e) => DeliveryError::Transient(e.to_string()),
        RequestError::Api(e) => DeliveryError::Permanent(e.to_string()),
    }
}

fn chat_of(route: &Route) -> Result<ChatId, DeliveryError> {
    route.platform_id.parse().map(ChatId).map_err(|_| {
        DeliveryError::Permanent(format!("{:?} is not a Telegram chat id", route.platform_id))
    })
}

fn thread_of(route: &Route) -> Option<ThreadId> {
    route
        .thread_id
        .as_deref()
        .and_then(|t| t.parse().ok())
        .map(|t| ThreadId(MessageId(t)))
}

/// A question as its card shows it (HTML).
fn question_card(q: &crate::session::questions::Question) -> String {
    format!(
        "❓ <b>{}</b>\n{}",
        format::escape_text(&q.title),
        format::escape_text(&q.question)
    )
}

/// The first message id of a delivery record (`"12,13,14"` → 12).
fn first_id(ids: &str) -> Option<MessageId> {
    ids.split(',').next()?.trim().parse().ok().map(MessageId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_draft_footer_is_its_italic_last_line() {
        assert_eq!(draft_message("Hello  \n", None), ("Hello".to_owned(), None));
        let (text, entity) = draft_message("\n Let me look.\n", Some("running `ls`…"));
        assert_eq!(text, "Let me look.\n\nrunning `ls`…");
        assert_eq!(entity, Some(MessageEntity::italic(14, 13)));
        // Nothing written yet: the footer alone.
        let (text, entity) = draft_message("  ", Some("reading `a`"));
        assert_eq!(text, "reading `a`");
        assert_eq!(entity, Some(MessageEntity::italic(0, 11)));
        // Offsets count UTF-16 units, as Telegram does.
        let (text, entity) = draft_message("😀 é", Some("using x"));
        assert_eq!(text, "😀 é\n\nusing x");
        assert_eq!(entity, Some(MessageEntity::italic(6, 7)));
    }

    #[test]
    fn a_long_draft_leaves_room_for_its_footer() {
        let long = "😀".repeat(MESSAGE_LIMIT);
        let (text, entity) = draft_message(&long, None);
        assert_eq!(text.encode_utf16().count(), MESSAGE_LIMIT - 1);
        assert!(entity.is_none());
        let footer = "f".repeat(FOOTER_LIMIT * 2);
        let (text, entity) = draft_message(&long, Some(&footer));
        let units = text.encode_utf16().count();
        assert!(units <= MESSAGE_LIMIT, "{units}");
        let entity = entity.unwrap_or_else(|| MessageEntity::bold(0, 0));
        assert_eq!(entity.offset + entity.length, units);
        assert_eq!(entity.length, FOOTER_LIMIT + 1);
        assert!(text.ends_with("f…"));
    }
}
