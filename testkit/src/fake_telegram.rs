//! A fake Telegram Bot API server on 127.0.0.1. It speaks the real wire protocol
//! (`POST /bot<token>/<method>` with JSON or multipart bodies, `{"ok":…}` envelopes, method
//! names matched case-insensitively as Telegram does, files at `/file/bot<token>/<path>`), keeps
//! the chats' messages the way Telegram would (message ids per chat, topics, replies, edits,
//! reactions), validates what the real server validates (HTML entities, the `entities` of a
//! plain text (stricter: see [`check_entities`]), the 4096/1024
//! character limits, unknown messages), records every call, and lets a test inject failures
//! such as `429 retry_after`, or hold an answer to a request it handled (to crash a client in
//! between).
//!
//! Tests play the users: [`FakeTelegram::message`] builds an incoming message (text, mentions
//! and commands get their entities automatically; photos, documents and voice notes are
//! downloadable through `getFile`), [`FakeTelegram::press`] presses an inline button, and
//! [`FakeTelegram::redeliver`] hands out an update a second time, as Telegram does when the
//! offset was not confirmed.
//!
//! Methods: getMe, getUpdates (long polling), getWebhookInfo, deleteWebhook, sendMessage,
//! editMessageText, editMessageReplyMarkup, deleteMessage, sendChatAction, sendDocument,
//! sendPhoto, setMessageReaction, getFile, answerCallbackQuery. Anything else is answered with
//! `404 Not Found` as the real API does.

pub mod html;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use html::{utf16_len, visible_text};

/// Telegram's limit for a message text, in UTF-16 units after entity parsing.
pub const MAX_TEXT: usize = 4096;
/// Telegram's limit for a caption.
pub const MAX_CAPTION: usize = 1024;
/// Telegram's limit for a file a bot uploads.
pub const MAX_UPLOAD: usize = 50 << 20;

/// A Telegram user as tests use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgUser {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
    pub is_bot: bool,
}

impl TgUser {
    pub fn new(id: i64, first_name: &str, username: Option<&str>) -> Self {
        TgUser {
            id,
            first_name: first_name.to_owned(),
            username: username.map(str::to_owned),
            is_bot: false,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "id": self.id, "is_bot": self.is_bot, "first_name": self.first_name });
        if let Some(u) = &self.username {
            v["username"] = json!(u);
        }
        v
    }
}

/// A chat as tests use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgChat {
    pub id: i64,
    pub kind: ChatKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatKind {
    Private { first_name: String },
    Group { title: String },
    Supergroup { title: String, forum: bool },
}

impl TgChat {
    /// The private chat with `user` (its id is the user's id).
    pub fn private(user: &TgUser) -> Self {
        TgChat {
            id: user.id,
            kind: ChatKind::Private {
                first_name: user.first_name.clone(),
            },
        }
    }

    /// A supergroup (negative ids, as Telegram's `-100…`).
    pub fn group(id: i64, title: &str) -> Self {
        TgChat {
            id,
            kind: ChatKind::Supergroup {
                title: title.to_owned(),
                forum: false,
            },
        }
    }

    /// A supergroup with topics.
    pub fn forum(id: i64, title: &str) -> Self {
        TgChat {
            id,
            kind: ChatKind::Supergroup {
                title: title.to_owned(),
                forum: true,
            },
        }
    }

    fn to_json(&self) -> Value {
        match &self.kind {
            ChatKind::Private { first_name } => {
                json!({ "id": self.id, "type": "private", "first_name": first_name })
            }
            ChatKind::Group { title } => json!({ "id": self.id, "type": "group", "title": title }),
            ChatKind::Supergroup { title, forum } => {
                let mut v = json!({ "id": self.id, "type": "supergroup", "title": title });
                if *forum {
                    v["is_forum"] = json!(true);
                }
                v
            }
        }
    }
}

/// One API call as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The method as Telegram documents it (`sendMessage`), whatever case the client used.
    pub method: String,
    /// The parameters: the JSON body, or the multipart fields (text fields parsed as JSON
    /// where they are JSON, e.g. `chat_id`, `reply_parameters`).
    pub params: Value,
    /// Files uploaded with the call: (field, file name, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
    /// Whether the fake answered with success.
    pub ok: bool,
    /// When the call arrived.
    pub at: tokio::time::Instant,
}

impl Call {
    pub fn chat_id(&self) -> Option<i64> {
        self.params.get("chat_id").and_then(as_i64)
    }
}

/// What a message the bot sent looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct BotMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub thread_id: Option<i64>,
    /// The message it replies to.
    pub reply_to: Option<i64>,
    /// Text or caption as sent (HTML source when `parse_mode` was HTML).
    pub raw: String,
    pub parse_mode: Option<String>,
    /// What the user sees (entities parsed).
    pub visible: String,
    /// The `entities` sent with a plain text (`type`, `offset`, `length` in UTF-16 units of
    /// `visible`), as checked by [`check_entities`]; empty when none were sent.
    pub entities: Vec<Value>,
    /// `document`/`photo`: the file name and bytes.
    pub file: Option<(String, Vec<u8>)>,
    pub kind: BotMessageKind,
    /// The inline keyboard, if any.
    pub reply_markup: Option<Value>,
    /// Earlier visible texts, oldest first, when it was edited.
    pub edits: Vec<String>,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotMessageKind {
    Text,
    Document,
    Photo,
}

/// A failure to answer the next call of a method with.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// `429 Too Many Requests: retry after N`, with `parameters.retry_after`.
    RetryAfter(u32),
    /// Any error status with this description (e.g. 400, "Bad Request: chat not found").
    Error(u16, String),
    /// An HTML page instead of JSON, as a proxy in front of Telegram might send.
    Garbage(u16),
}

/// An update a test made, with the ids the fake gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub update_id: i64,
    pub message_id: i64,
}

/// A running fake Bot API server; dropping it stops the server.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    token: String,
    bot: TgUser,
    state: Mutex<Chats>,
    /// Woken on every change (new update, new call), for long polls and `wait_*`.
    changed: Notify,
    /// Lets held answers go ([`FakeTelegram::release`]).
    released: Notify,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Chats {
    next_update_id: i64,
    /// Updates not yet confirmed (their id is at least the last `offset`).
    updates: VecDeque<(i64, Value)>,
    /// Updates to hand out again regardless of the offset.
    redeliver: VecDeque<(i64, Value)>,
    /// Every update ever made, by id.
    history: HashMap<i64, Value>,
    next_message_id: HashMap<i64, i64>,
    /// Every message in every chat (users' and the bot's), by (chat, id), as JSON.
    messages: HashMap<(i64, i64), Value>,
    bot_messages: Vec<BotMessage>,
    files: HashMap<String, (String, Vec<u8>)>,
    next_file: u64,
    /// Per method: what the next calls get (`None`: answered normally).
    failures: HashMap<String, VecDeque<Option<Failure>>>,
    calls: Vec<Call>,
    next_callback: u64,
    /// Per method: calls still to be held (see [`FakeTelegram::hold_next`]).
    holds: HashMap<String, usize>,
    /// Calls handled whose answer is being held now.
    held: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Chats> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Entities Telegram would attach to `text`: `@mentions`, a leading `/command`, URLs are not
/// needed by tests. Offsets and lengths are in UTF-16 units.
fn auto_entities(text: &str) -> Vec<Value> {
    let mut entities = Vec::new();
    let mut utf16 = 0usize;
    let mut chars = text.char_indices().peekable();
    let mut prev: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        let starts_token = prev.is_none_or(|p| p.is_whitespace());
        if starts_token && (c == '@' || (c == '/' && i == 0)) {
            let rest = &text[i + 1..];
            let len = rest
                .find(|ch: char| {
                    !(ch.is_ascii_alphanumeric() || ch == '_' || (c == '/' && ch == '@'))
                })
                .unwrap_or(rest.len());
            if len > 0 {
                let token = &text[i..i + 1 + len];
                entities.push(json!({
                    "type": if c == '@' { "mention" } else { "bot_command" },
                    "offset": utf16,
                    "length": utf16_len(token),
                }));
                utf16 += utf16_len(token);
                for _ in 0..token.chars().count() - 1 {
                    chars.next();
                }
                prev = token.chars().last();
                continue;
            }
        }
        utf16 += c.len_utf16();
        prev = Some(c);
    }
    entities
}

/// An incoming message under construction; [`Incoming::send`] makes it an update.
pub struct Incoming<'a> {
    fake: &'a FakeTelegram,
    chat: TgChat,
    from: TgUser,
    text: Option<String>,
    caption: Option<String>,
    thread_id: Option<i64>,
    reply_to: Option<i64>,
    extra_entities: Vec<Value>,
    media: Option<(String, Value)>,
}

impl Incoming<'_> {
    pub fn text(mut self, text: &str) -> Self {
        self.text = Some(text.to_owned());
        self
    }

    pub fn caption(mut self, caption: &str) -> Self {
        self.caption = Some(caption.to_owned());
        self
    }

    /// Sent in this forum topic.
    pub fn topic(mut self, thread_id: i64) -> Self {
        self.thread_id = Some(thread_id);
        self
    }

    /// A reply to this message of the same chat.
    pub fn reply_to(mut self, message_id: i64) -> Self {
        self.reply_to = Some(message_id);
        self
    }

    /// Adds a `text_mention` of `user` over the whole text (users without a username are
    /// mentioned this way).
    pub fn text_mention(mut self, user: &TgUser) -> Self {
        let len = self.text.as_deref().map_or(0, utf16_len);
        self.extra_entities.push(
            json!({ "type": "text_mention", "offset": 0, "length": len, "user": user.to_json() }),
        );
        self
    }

    /// Adds `entity` to the text's entities as given, unchecked: a real client can send
    /// entities whose offsets lie outside the text, and the host must survive them.
    pub fn raw_entity(mut self, entity: Value) -> Self {
        self.extra_entities.push(entity);
        self
    }

    pub fn photo(mut self, bytes: &[u8]) -> Self {
        let file = self.fake.add_file("photo.jpg", bytes);
        let size = bytes.len();
        self.media = Some((
            "photo".into(),
            json!([
                { "file_id": format!("{file}-thumb"), "file_unique_id": "t", "width": 90, "height": 90, "file_size": 10 },
                { "file_id": file, "file_unique_id": "p", "width": 800, "height": 600, "file_size": size },
            ]),
        ));
        self
    }

    pub fn document(mut self, name: &str, mime: &str, bytes: &[u8]) -> Self {
        let file = self.fake.add_file(name, bytes);
        self.media = Some((
            "document".into(),
            json!({ "file_id": file, "file_unique_id": "d", "file_name": name, "mime_type": mime, "file_size": bytes.len() }),
        ));
        self
    }

    pub fn voice(mut self, bytes: &[u8], duration_s: u32) -> Self {
        let file = self.fake.add_file("voice.ogg", bytes);
        self.media = Some((
            "voice".into(),
            json!({ "file_id": file, "file_unique_id": "v", "duration": duration_s, "mime_type": "audio/ogg", "file_size": bytes.len() }),
        ));
        self
    }

    /// Makes the message an update (`message`) and returns its ids.
    pub fn send(self) -> Pushed {
        let shared = &self.fake.shared;
        let mut st = shared.lock();
        let message_id = next_message_id(&mut st, self.chat.id);
        let mut msg = json!({
            "message_id": message_id,
            "date": now_unix(),
            "chat": self.chat.to_json(),
            "from": self.from.to_json(),
        });
        if let Some(thread) = self.thread_id {
            msg["message_thread_id"] = json!(thread);
            msg["is_topic_message"] = json!(true);
        }
        if let Some(reply) = self.reply_to {
            if let Some(original) = st.messages.get(&(self.chat.id, reply)) {
                msg["reply_to_message"] = original.clone();
            }
        } else if let Some(thread) = self.thread_id {
            // In a topic, a message that is no reply points at the topic's first message.
            msg["reply_to_message"] = json!({
                "message_id": thread, "date": now_unix(), "chat": self.chat.to_json(),
                "from": self.from.to_json(), "message_thread_id": thread, "is_topic_message": true,
                "forum_topic_created": { "name": "topic", "icon_color": 7322096 },
            });
        }
        if let Some(text) = &self.text {
            msg["text"] = json!(text);
            let mut entities = auto_entities(text);
            entities.extend(self.extra_entities.iter().cloned());
            if !entities.is_empty() {
                msg["entities"] = json!(entities);
            }
        }
        if let Some((field, value)) = self.media {
            msg[field.as_str()] = value;
            if let Some(caption) = &self.caption {
                msg["caption"] = json!(caption);
                let entities = auto_entities(caption);
                if !entities.is_empty() {
                    msg["caption_entities"] = json!(entities);
                }
            }
        }
        st.messages.insert((self.chat.id, message_id), msg.clone());
        let update_id = push_update(&mut st, "message", msg);
        drop(st);
        shared.changed.notify_waiters();
        Pushed {
            update_id,
            message_id,
        }
    }
}

fn next_message_id(st: &mut Chats, chat_id: i64) -> i64 {
    let next = st.next_message_id.entry(chat_id).or_insert(100);
    *next += 1;
    *next
}

fn push_update(st: &mut Chats, field: &str, payload: Value) -> i64 {
    st.next_update_id += 1;
    let id = st.next_update_id;
    let update = json!({ "update_id": id, field: payload });
    st.history.insert(id, update.clone());
    st.updates.push_back((id, update));
    id
}

impl FakeTelegram {
    /// Serves a bot `@clawbox_test_bot` (id 7000001) that accepts only `token`.
    pub async fn start(token: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake Telegram server")?;
        let addr = listener.local_addr()?;
        let bot = TgUser {
            id: 7_000_001,
            first_name: "Clawbox".into(),
            username: Some("clawbox_test_bot".into()),
            is_bot: true,
        };
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            bot,
            state: Mutex::new(Chats {
                next_update_id: 5000,
                ..Chats::default()
            }),
            changed: Notify::new(),
            released: Notify::new(),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", any(method))
            .route("/file/{bot}/{*path}", any(download))
            // Bots upload files of up to 50 MB (axum's default cap is 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD))
            .with_state(Arc::clone(&shared));
        let shutdown = shared.shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%addr, error = %err, "fake Telegram server stopped");
            }
        });
        Ok(FakeTelegram { addr, shared })
    }

    /// The Bot API base URL (`TELEGRAM_API_URL`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bot(&self) -> TgUser {
        self.shared.bot.clone()
    }

    /// `@clawbox_test_bot`.
    pub fn bot_mention(&self) -> String {
        format!(
            "@{}",
            self.shared.bot.username.as_deref().unwrap_or_default()
        )
    }

    /// Starts an incoming message from `from` in `chat`.
    pub fn message(&self, chat: &TgChat, from: &TgUser) -> Incoming<'_> {
        Incoming {
            fake: self,
            chat: chat.clone(),
            from: from.clone(),
            text: None,
            caption: None,
            thread_id: None,
            reply_to: None,
            extra_entities: Vec::new(),
            media: None,
        }
    }

    /// A text message (shorthand for `message(..).text(..).send()`).
    /// `from` adds the bot to `chat`: the service message (`new_chat_members`) Telegram sends
    /// the bot then.
    pub fn add_bot_to(&self, chat: &TgChat, from: &TgUser) -> i64 {
        let bot = self.bot();
        let mut st = self.shared.lock();
        let message_id = next_message_id(&mut st, chat.id);
        let msg = json!({
            "message_id": message_id,
            "date": now_unix(),
            "chat": chat.to_json(),
            "from": from.to_json(),
            "new_chat_members": [bot.to_json()],
        });
        let update_id = push_update(&mut st, "message", msg);
        drop(st);
        self.shared.changed.notify_waiters();
        update_id
    }

    pub fn say(&self, chat: &TgChat, from: &TgUser, text: &str) -> Pushed {
        self.message(chat, from).text(text).send()
    }

    /// An `edited_message` update changing the text of a user's message.
    pub fn edit(&self, chat: &TgChat, from: &TgUser, message_id: i64, text: &str) -> i64 {
        let mut st = self.shared.lock();
        let mut msg = st
            .messages
            .get(&(chat.id, message_id))
            .cloned()
            .unwrap_or_else(|| json!({ "message_id": message_id, "date": now_unix(), "chat": chat.to_json(), "from": from.to_json() }));
        msg["text"] = json!(text);
        msg["edit_date"] = json!(now_unix());
        st.messages.insert((chat.id, message_id), msg.clone());
        let id = push_update(&mut st, "edited_message", msg);
        drop(st);
        self.shared.changed.notify_waiters();
        id
    }

    /// Presses the inline button with `data` under the bot's message `message_id`; returns the
    /// callback query id.
    pub fn press(&self, chat: &TgChat, from: &TgUser, message_id: i64, data: &str) -> String {
        let mut st = self.shared.lock();
        st.next_callback += 1;
        let id = format!("cbq-{}", st.next_callback);
        let message = st
            .messages
            .get(&(chat.id, message_id))
            .cloned()
            .unwrap_or_else(
                || json!({ "message_id": message_id, "date": 0, "chat": chat.to_json() }),
            );
        let query = json!({
            "id": id,
            "from": from.to_json(),
            "message": message,
            "chat_instance": format!("ci{}", chat.id),
            "data": data,
        });
        push_update(&mut st, "callback_query", query);
        drop(st);
        self.shared.changed.notify_waiters();
        id
    }

    /// Hands out update `update_id` once more, even though its offset was confirmed (what
    /// Telegram does when a client crashed before confirming).
    pub fn redeliver(&self, update_id: i64) {
        let mut st = self.shared.lock();
        if let Some(update) = st.history.get(&update_id).cloned() {
            st.redeliver.push_back((update_id, update));
        }
        drop(st);
        self.shared.changed.notify_waiters();
    }

    /// Answers the next call of `method` (case-insensitive) with `failure`; several queue up,
    /// together with [`FakeTelegram::pass_next`].
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.queue_outcome(method, Some(failure));
    }

    /// Lets the next call of `method` through (so a failure queued after it hits a later call,
    /// e.g. the second part of a long message).
    pub fn pass_next(&self, method: &str) {
        self.queue_outcome(method, None);
    }

    fn queue_outcome(&self, method: &str, outcome: Option<Failure>) {
        self.shared
            .lock()
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(outcome);
    }

    /// Handles the next call of `method` as usual (a sent message is in the chat) but holds its
    /// answer until [`FakeTelegram::release`]: the client is left between Telegram accepting a
    /// request and learning that it did, where a crash is ambiguous.
    pub fn hold_next(&self, method: &str) {
        *self
            .shared
            .lock()
            .holds
            .entry(method.to_ascii_lowercase())
            .or_default() += 1;
    }

    /// Calls whose answer is being held now.
    pub fn held(&self) -> usize {
        self.shared.lock().held
    }

    /// Sends the answers held so far.
    pub fn release(&self) {
        self.shared.released.notify_waiters();
    }

    /// A file users can send (its `file_id`).
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> String {
        let mut st = self.shared.lock();
        st.next_file += 1;
        let id = format!("file-{}", st.next_file);
        st.files
            .insert(id.clone(), (name.to_owned(), bytes.to_vec()));
        id
    }

    /// Every call so far, in order (long polls included).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Calls of one method (as documented, e.g. `sendMessage`).
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    /// The bot's messages in `chat_id`, in the order they were sent (deleted ones included,
    /// marked).
    pub fn bot_messages(&self, chat_id: i64) -> Vec<BotMessage> {
        self.shared
            .lock()
            .bot_messages
            .iter()
            .filter(|m| m.chat_id == chat_id)
            .cloned()
            .collect()
    }

    /// Updates handed out but not yet confirmed by a later `getUpdates` offset.
    pub fn unconfirmed_updates(&self) -> usize {
        self.shared.lock().updates.len()
    }

    /// Waits until `pred` holds for the recorded state, or fails after `timeout` with what
    /// was seen.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&FakeTelegram) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if pred(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "fake Telegram: timed out waiting for {what}; bot messages: {:#?}",
                    self.shared.lock().bot_messages
                );
            }
        }
    }

    /// Waits until the bot has at least `n` live (not deleted) messages in `chat_id`.
    pub async fn wait_for_bot_messages(
        &self,
        chat_id: i64,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<BotMessage>> {
        self.wait_until(timeout, &format!("{n} bot messages in {chat_id}"), |f| {
            f.bot_messages(chat_id)
                .iter()
                .filter(|m| !m.deleted)
                .count()
                >= n
        })
        .await?;
        Ok(self.bot_messages(chat_id))
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP side

fn envelope_ok(result: Value) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({ "ok": true, "result": result })),
    )
        .into_response()
}

fn envelope_err(code: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({ "ok": false, "error_code": code, "description": description });
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(body)).into_response()
}

fn bad_request(description: &str) -> Response {
    envelope_err(400, &format!("Bad Request: {description}"), None)
}

/// Multipart text fields that are strings even when they look like JSON.
const STRING_FIELDS: &[&str] = &[
    "text",
    "caption",
    "parse_mode",
    "emoji",
    "callback_query_id",
];

async fn parse_body(req: Request) -> (Value, Vec<(String, String, Vec<u8>)>) {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut params = serde_json::Map::new();
        let mut files = Vec::new();
        if let Ok(mut multipart) = Multipart::from_request(req, &()).await {
            while let Ok(Some(field)) = multipart.next_field().await {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    continue;
                };
                match file_name {
                    Some(file_name) => files.push((name, file_name, bytes.to_vec())),
                    None => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let value = if STRING_FIELDS.contains(&name.as_str()) {
                            Value::String(text)
                        } else {
                            serde_json::from_str(&text).unwrap_or(Value::String(text))
                        };
                        params.insert(name, value);
                    }
                }
            }
        }
        (Value::Object(params), files)
    } else {
        let bytes = Bytes::from_request(req, &()).await.unwrap_or_default();
        let params = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}))
        };
        (params, Vec::new())
    }
}

const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "getWebhookInfo",
    "deleteWebhook",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "deleteMessage",
    "sendChatAction",
    "sendDocument",
    "sendPhoto",
    "setMessageReaction",
    "getFile",
    "answerCallbackQuery",
];

async fn method(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (params, files) = parse_body(req).await;
    let Some(token) = bot.strip_prefix("bot") else {
        return envelope_err(404, "Not Found", None);
    };
    if token != shared.token {
        return envelope_err(401, "Unauthorized", None);
    }
    let Some(name) = METHODS.iter().find(|m| m.eq_ignore_ascii_case(&method)) else {
        return envelope_err(404, "Not Found: method not found", None);
    };
    let name = (*name).to_owned();
    let arrived = tokio::time::Instant::now();
    let failure = shared
        .lock()
        .failures
        .get_mut(&name.to_ascii_lowercase())
        .and_then(VecDeque::pop_front)
        .flatten();
    let response = match failure {
        Some(Failure::RetryAfter(secs)) => envelope_err(
            429,
            &format!("Too Many Requests: retry after {secs}"),
            Some(json!({ "retry_after": secs })),
        ),
        Some(Failure::Error(code, description)) => envelope_err(code, &description, None),
        Some(Failure::Garbage(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        None if name == "getUpdates" => get_updates(&shared, &params).await,
        None => handle(&shared, &name, &params, &files),
    };
    let ok = response.status().is_success();
    let hold = {
        let mut st = shared.lock();
        let hold = match st.holds.get_mut(&name.to_ascii_lowercase()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                st.held += 1;
                true
            }
            _ => false,
        };
        st.calls.push(Call {
            method: name,
            params,
            files,
            ok,
            at: arrived,
        });
        hold
    };
    if hold {
        let released = shared.released.notified();
        shared.changed.notify_waiters();
        tokio::select! {
            () = released => {}
            () = shared.shutdown.cancelled() => {}
        }
        shared.lock().held -= 1;
    }
    shared.changed.notify_waiters();
    response
}

async fn get_updates(shared: &Shared, params: &Value) -> Response {
    let offset = params.get("offset").and_then(as_i64).unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(as_i64)
        .filter(|&l| (1..=100).contains(&l))
        .unwrap_or(100) as usize;
    let timeout = params.get("timeout").and_then(as_i64).unwrap_or(0).max(0) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.changed.notified();
        {
            let mut st = shared.lock();
            // An offset confirms every update before it.
            if offset > 0 {
                st.updates.retain(|(id, _)| *id >= offset);
            }
            let mut batch: Vec<Value> = st.redeliver.drain(..).map(|(_, u)| u).collect();
            batch.extend(st.updates.iter().take(limit).map(|(_, u)| u.clone()));
            if !batch.is_empty() {
                return envelope_ok(Value::Array(batch));
            }
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return envelope_ok(json!([])),
            () = shared.shutdown.cancelled() => return envelope_ok(json!([])),
        }
    }
}

/// Checks a text or caption as Telegram would; returns what the user sees, or Telegram's
/// `400 Bad Request` description.
fn check_text(
    text: &str,
    parse_mode: Option<&str>,
    limit: usize,
    caption: bool,
) -> Result<String, String> {
    let visible = match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => text.to_owned(),
        Some("html") => html::visible_text(text)?,
        Some(other) => {
            return Err(format!(
                "Bad Request: unsupported parse_mode {other:?} in this fake"
            ));
        }
    };
    if !caption && visible.trim().is_empty() {
        return Err("Bad Request: message text is empty".into());
    }
    if utf16_len(&visible) > limit {
        return Err(if caption {
            "Bad Request: message caption is too long"
        } else {
            "Bad Request: message is too long"
        }
        .into());
    }
    Ok(visible)
}

/// Entity types of the Bot API's `MessageEntity`.
const ENTITY_TYPES: &[&str] = &[
    "mention",
    "hashtag",
    "cashtag",
    "bot_command",
    "url",
    "email",
    "phone_number",
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "blockquote",
    "expandable_blockquote",
    "code",
    "pre",
    "text_link",
    "text_mention",
    "custom_emoji",
];

/// Checks the `entities` of a plain text: a list of objects with a known `type` and an
/// `offset` and `length` (UTF-16 units) inside `visible`. Stricter than Telegram, which may
/// drop or clamp a bad entity instead of refusing the message: a sender that gets them wrong
/// should find out here.
fn check_entities(entities: Option<&Value>, visible: &str) -> Result<Vec<Value>, String> {
    let refuse = |why: &str| format!("Bad Request: can't parse entities: {why}");
    let list = match entities {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(refuse("entities must be an array")),
    };
    let len = utf16_len(visible) as u64;
    for e in list {
        let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
        if !ENTITY_TYPES.contains(&kind) {
            return Err(refuse(&format!("unsupported entity type {kind:?}")));
        }
        let (Some(offset), Some(length)) = (
            e.get("offset").and_then(Value::as_u64),
            e.get("length").and_then(Value::as_u64),
        ) else {
            return Err(refuse("an entity needs an offset and a length"));
        };
        if length == 0 || offset + length > len {
            return Err(refuse(&format!(
                "entity at offset {offset} of length {length} is outside the text ({len} units)"
            )));
        }
    }
    Ok(list.clone())
}

fn handle(
    shared: &Shared,
    method: &str,
    p: &Value,
    files: &[(String, String, Vec<u8>)],
) -> Response {
    let mut st = shared.lock();
    let chat_id = p.get("chat_id").and_then(as_i64);
    let str_param = |k: &str| p.get(k).and_then(Value::as_str);
    match method {
        "getMe" => {
            let mut me = shared.bot.to_json();
            me["can_join_groups"] = json!(true);
            me["can_read_all_group_messages"] = json!(false);
            me["supports_inline_queries"] = json!(false);
            me["has_main_web_app"] = json!(false);
            envelope_ok(me)
        }
        "getWebhookInfo" => envelope_ok(
            json!({ "url": "", "has_custom_certificate": false, "pending_update_count": st.updates.len() }),
        ),
        "deleteWebhook" => envelope_ok(json!(true)),
        "sendChatAction" => match chat_id {
            Some(_) => envelope_ok(json!(true)),
            None => bad_request("chat_id is empty"),
        },
        "answerCallbackQuery" => match str_param("callback_query_id") {
            Some(_) => envelope_ok(json!(true)),
            None => bad_request("query_id is empty"),
        },
        "getFile" => {
            let Some(id) = str_param("file_id") else {
                return bad_request("file_id is empty");
            };
            match st.files.get(id) {
                Some((name, bytes)) => envelope_ok(json!({
                    "file_id": id, "file_unique_id": format!("u-{id}"),
                    "file_size": bytes.len(), "file_path": format!("files/{id}/{name}"),
                })),
                None => bad_request("invalid file_id"),
            }
        }
        "sendMessage" | "sendDocument" | "sendPhoto" => {
            let Some(chat_id) = chat_id else {
                return bad_request("chat_id is empty");
            };
            let (kind, raw, limit) = match method {
                "sendMessage" => (
                    BotMessageKind::Text,
                    str_param("text").unwrap_or_default(),
                    MAX_TEXT,
                ),
                "sendDocument" => (
                    BotMessageKind::Document,
                    str_param("caption").unwrap_or_default(),
                    MAX_CAPTION,
                ),
                _ => (
                    BotMessageKind::Photo,
                    str_param("caption").unwrap_or_default(),
                    MAX_CAPTION,
                ),
            };
            let parse_mode = str_param("parse_mode");
            let visible = match check_text(raw, parse_mode, limit, kind != BotMessageKind::Text) {
                Ok(v) => v,
                Err(description) => return envelope_err(400, &description, None),
            };
            let entities = match check_entities(p.get("entities"), &visible) {
                Ok(e) => e,
                Err(description) => return envelope_err(400, &description, None),
            };
            let field = if kind == BotMessageKind::Photo {
                "photo"
            } else {
                "document"
            };
            let file = match kind {
                BotMessageKind::Text => None,
                // The file is its own part (`document`), or a part the field names as
                // `attach://<part>` (how teloxide and most clients upload).
                _ => match files.iter().find(|(f, _, _)| {
                    f == field
                        || p.get(field).and_then(Value::as_str) == Some(&format!("attach://{f}"))
                }) {
                    Some((_, name, bytes)) => Some((name.clone(), bytes.clone())),
                    None => return bad_request(&format!("there is no {field} in the request")),
                },
            };
            let thread_id = p.get("message_thread_id").and_then(as_i64);
            let reply_to = p.pointer("/reply_parameters/message_id").and_then(as_i64);
            let allow_without = p
                .pointer("/reply_parameters/allow_sending_without_reply")
                .and_then(Value::as_bool)
                == Some(true);
            if let Some(r) = reply_to
                && !st.messages.contains_key(&(chat_id, r))
                && !allow_without
            {
                return bad_request("message to be replied not found");
            }
            let message_id = next_message_id(&mut st, chat_id);
            let mut msg = json!({
                "message_id": message_id, "date": now_unix(),
                "chat": { "id": chat_id, "type": if chat_id < 0 { "supergroup" } else { "private" }, "title": "chat", "first_name": "user" },
                "from": shared.bot.to_json(),
            });
            if let Some(t) = thread_id {
                msg["message_thread_id"] = json!(t);
                msg["is_topic_message"] = json!(true);
            }
            if !entities.is_empty() {
                msg["entities"] = json!(entities);
            }
            match kind {
                BotMessageKind::Text => msg["text"] = json!(visible),
                BotMessageKind::Document => {
                    let (name, bytes) = file.clone().unwrap_or_default();
                    msg["document"] = json!({ "file_id": format!("sent-{message_id}"), "file_unique_id": "s", "file_name": name, "file_size": bytes.len() });
                }
                BotMessageKind::Photo => {
                    let size = file.as_ref().map_or(0, |(_, b)| b.len());
                    msg["photo"] = json!([{ "file_id": format!("sent-{message_id}"), "file_unique_id": "s", "width": 800, "height": 600, "file_size": size }]);
                }
            }
            if kind != BotMessageKind::Text && !visible.is_empty() {
                msg["caption"] = json!(visible);
            }
            if let Some(markup) = p.get("reply_markup") {
                msg["reply_markup"] = markup.clone();
            }
            st.messages.insert((chat_id, message_id), msg.clone());
            st.bot_messages.push(BotMessage {
                chat_id,
                message_id,
                thread_id,
                reply_to,
                raw: raw.to_owned(),
                parse_mode: parse_mode.map(str::to_owned),
                visible,
                entities,
                file,
                kind,
                reply_markup: p.get("reply_markup").cloned(),
                edits: Vec::new(),
                deleted: false,
            });
            envelope_ok(msg)
        }
        "editMessageText" | "editMessageReplyMarkup" | "deleteMessage" | "setMessageReaction" => {
            let (Some(chat_id), Some(message_id)) = (chat_id, p.get("message_id").and_then(as_i64))
            else {
                return bad_request("message identifier is not specified");
            };
            if method == "setMessageReaction" {
                if !st.messages.contains_key(&(chat_id, message_id)) {
                    return bad_request("message to react not found");
                }
                let emoji_ok = p
                    .get("reaction")
                    .and_then(Value::as_array)
                    .is_some_and(|r| {
                        r.iter().all(|e| {
                            e["type"] == "emoji"
                                && e["emoji"].as_str().is_some_and(|s| !s.is_empty())
                        })
                    });
                return if emoji_ok {
                    envelope_ok(json!(true))
                } else {
                    bad_request("REACTION_INVALID")
                };
            }
            let Some(index) = st
                .bot_messages
                .iter()
                .position(|m| m.chat_id == chat_id && m.message_id == message_id && !m.deleted)
            else {
                return bad_request(if method == "deleteMessage" {
                    "message to delete not found"
                } else {
                    "message to edit not found"
                });
            };
            match method {
                "deleteMessage" => {
                    st.bot_messages[index].deleted = true;
                    st.messages.remove(&(chat_id, message_id));
                    envelope_ok(json!(true))
                }
                "editMessageReplyMarkup" => {
                    st.bot_messages[index].reply_markup = p.get("reply_markup").cloned();
                    envelope_ok(json!(true))
                }
                _ => {
                    let raw = str_param("text").unwrap_or_default();
                    let parse_mode = str_param("parse_mode");
                    let visible = match check_text(raw, parse_mode, MAX_TEXT, false) {
                        Ok(v) => v,
                        Err(description) => return envelope_err(400, &description, None),
                    };
                    let entities = match check_entities(p.get("entities"), &visible) {
                        Ok(e) => e,
                        Err(description) => return envelope_err(400, &description, None),
                    };
                    let markup = p.get("reply_markup").cloned();
                    let m = &mut st.bot_messages[index];
                    if m.visible == visible && m.reply_markup == markup && m.entities == entities {
                        return bad_request(
                            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                        );
                    }
                    let old = std::mem::replace(&mut m.visible, visible.clone());
                    m.edits.push(old);
                    m.raw = raw.to_owned();
                    m.parse_mode = parse_mode.map(str::to_owned);
                    m.reply_markup = markup;
                    // An edit replaces the entities too: none sent, none left.
                    m.entities.clone_from(&entities);
                    let mut msg = st
                        .messages
                        .get(&(chat_id, message_id))
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                    msg["text"] = json!(visible);
                    if entities.is_empty() {
                        if let Some(o) = msg.as_object_mut() {
                            o.remove("entities");
                        }
                    } else {
                        msg["entities"] = json!(entities);
                    }
                    msg["edit_date"] = json!(now_unix());
                    st.messages.insert((chat_id, message_id), msg.clone());
                    envelope_ok(msg)
                }
            }
        }
        _ => envelope_err(404, "Not Found: method not found", None),
    }
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    // `files/<file id>/<name>`, as getFile described it.
    let id = path.split('/').nth(1).unwrap_or_default();
    match shared.lock().files.get(id) {
        Some((_, bytes)) => (StatusCode::OK, bytes.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_of_mentions_and_commands() {
        let e = auto_entities("/clear@bot now, @andy and é @x");
        assert_eq!(e[0]["type"], "bot_command");
        assert_eq!(e[0]["length"], 10);
        assert_eq!(e[1]["type"], "mention");
        assert_eq!(e[1]["offset"], 16);
        assert_eq!(e[2]["offset"], 28);
        assert!(auto_entities("mail me at a@b.c").is_empty());
    }
}
