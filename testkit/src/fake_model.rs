//! A fake OpenAI-compatible chat-completions server on 127.0.0.1. Owns the wire shapes (JSON
//! `chat.completion` and SSE `chat.completion.chunk`), the scripted reply queue, request recording
//! and the tool-call pairing check the real API enforces. Two behaviours of real servers can be
//! switched on: a context limit ([`FakeModel::set_context_limit`]: a request estimated above it
//! gets OpenAI's 400 `context_length_exceeded`), and summaries ([`FakeModel::summarise_when`]:
//! a request whose system prompt contains a marker gets a deterministic summary of its last
//! user message, without taking a scripted reply). `GET /v1/models` answers 404 (as
//! servers without a model list do) until a test sets a list with [`FakeModel::serve_models`]. Real-world deviations from the standard
//! shape live in `quirks`; tokenisation, auth and rate limits are not modelled beyond what a test
//! scripts with `Reply::Status`.

pub mod quirks;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Model name reported when the request names none.
const DEFAULT_MODEL: &str = "fake-model";

static NEXT_CALL_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_COMPLETION_ID: AtomicU64 = AtomicU64::new(1);

/// One tool call the fake model asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Sent as a JSON-encoded string in `function.arguments`, as OpenAI does.
    pub arguments: Value,
}

impl ToolCall {
    /// A call with a fresh id `call_N` (unique within the test binary).
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        let n = NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed);
        Self::with_id(format!("call_{n}"), name, arguments)
    }

    pub fn with_id(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }

    /// The standard `message.tool_calls[]` entry.
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": { "name": self.name, "arguments": self.arguments.to_string() },
        })
    }
}

/// What the fake model answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An assistant text message, `finish_reason: "stop"`.
    Text(String),
    /// An assistant message with these tool calls and no text, `finish_reason: "tool_calls"`.
    ToolCalls(Vec<ToolCall>),
    /// An HTTP error with an OpenAI error body, also for streaming requests. A status that is not
    /// a valid HTTP code becomes 500.
    Status(u16, String),
    /// HTTP 200 with this raw body, labelled `application/json` (`text/event-stream` when the
    /// request asked to stream).
    Garbage(String),
    /// HTTP 200 with exactly this JSON body, even for streaming requests. See `quirks`.
    Json(Value),
    /// HTTP 200 `text/event-stream` with each value as a `data:` event, then `data: [DONE]`,
    /// whether or not the request asked to stream.
    Sse(Vec<Value>),
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Never answer, until the client gives up or the `FakeModel` is dropped (then 503).
    Hang,
    /// Text `echo: <text of the last user message>`; the default reply.
    Echo,
    /// HTTP 400 as OpenAI refuses a request longer than the model's context.
    ContextExceeded { limit: u64, requested: u64 },
    /// Text written at a model's pace: streamed in `pieces` content deltas, `every` apart (a
    /// request that did not ask to stream gets the whole text after the same time). With
    /// `hold`, the stream stops after that many pieces until the [`Gate`] opens, so a test
    /// can look at what a client shows mid-stream without racing the stream.
    Streamed {
        text: String,
        pieces: usize,
        every: Duration,
        hold: Option<(usize, Gate)>,
    },
}

/// Holds a [`Reply::Streamed`] mid-stream until [`Gate::open`].
#[derive(Debug, Clone, Default)]
pub struct Gate(CancellationToken);

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every stream held by this gate go on.
    pub fn open(&self) {
        self.0.cancel();
    }
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A reply with a single tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::ToolCalls(vec![ToolCall::new(name, arguments)])
    }

    /// `text` in `pieces` streamed deltas spread over `total`.
    pub fn slow(text: impl Into<String>, pieces: usize, total: Duration) -> Self {
        let pieces = pieces.max(1);
        Self::Streamed {
            text: text.into(),
            pieces,
            every: total / u32::try_from(pieces).unwrap_or(u32::MAX),
            hold: None,
        }
    }

    /// `text` in `pieces` streamed deltas, the stream held after the first `before` of them
    /// until `gate` opens.
    pub fn held(text: impl Into<String>, pieces: usize, before: usize, gate: &Gate) -> Self {
        Self::Streamed {
            text: text.into(),
            pieces: pieces.max(1),
            every: Duration::ZERO,
            hold: Some((before, gate.clone())),
        }
    }

    /// This reply, after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Self::Delay(delay, Box::new(self))
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed body; a body that is not JSON is kept as a JSON string of its (lossy) text.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `body.messages`, or empty when absent.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// A running fake model server. Dropping it stops the server.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<ScriptState>,
    /// Number of requests recorded so far, for `wait_for_requests`.
    request_count: watch::Sender<usize>,
    shutdown: CancellationToken,
}

struct ScriptState {
    queue: VecDeque<Reply>,
    /// Scripts for one model name, consulted before `queue` (several agents, one fake).
    per_model: HashMap<String, VecDeque<Reply>>,
    default: Reply,
    requests: Vec<RecordedRequest>,
    violations: Vec<String>,
    /// `GET /models`: `None` answers 404.
    models: Option<Vec<String>>,
    /// `(prompt, completion)` reported by every answer instead of the estimate.
    fixed_usage: Option<(u64, u64)>,
    /// Requests estimated above this many prompt tokens are refused as too long.
    context_limit: Option<u64>,
    /// A system prompt containing this asks for a summary.
    summary_marker: Option<String>,
    /// Request shapes this server refuses, like some real one does.
    request_quirks: Vec<quirks::RequestQuirk>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        // A test that panicked while holding the lock has already failed; the state is still
        // worth reading for the next assertion.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FakeModel {
    /// Binds 127.0.0.1 on a free port and serves in a background task.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake model server")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(ScriptState {
                queue: VecDeque::new(),
                per_model: HashMap::new(),
                default: Reply::Echo,
                requests: Vec::new(),
                violations: Vec::new(),
                models: None,
                fixed_usage: None,
                context_limit: None,
                summary_marker: None,
                request_quirks: Vec::new(),
            }),
            request_count: watch::Sender::new(0),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .route("/v1/models", get(list_models))
            .route("/models", get(list_models))
            .with_state(Arc::clone(&shared));
        let shutdown = shared.shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%addr, error = %err, "fake model server stopped");
            }
        });
        Ok(Self { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the OpenAI-style base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a reply; each valid request takes the oldest one.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Appends a reply for requests naming `model` only; they use the shared queue when this
    /// one is empty.
    pub fn push_for(&self, model: &str, reply: Reply) {
        self.shared
            .lock()
            .per_model
            .entry(model.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// The reply used when the queue is empty (initially `Reply::Echo`).
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Serves `GET /models` with these model ids (not recorded as requests).
    pub fn serve_models(&self, models: &[&str]) {
        self.shared.lock().models = Some(models.iter().map(|m| (*m).to_owned()).collect());
    }

    /// Reports these token counts in every answer's `usage` (by default they are estimated from
    /// the sizes of request and answer), for output that must not vary with the prompt.
    pub fn set_usage(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.shared.lock().fixed_usage = Some((prompt_tokens, completion_tokens));
    }

    /// Refuses every request estimated (at four bytes of body per token, the figure `usage`
    /// reports) above `tokens` with HTTP 400 and OpenAI's body (`code:
    /// context_length_exceeded`, "This model's maximum context length is … tokens…"). A refused
    /// request is recorded but takes no scripted reply.
    pub fn set_context_limit(&self, tokens: u64) {
        self.shared.lock().context_limit = Some(tokens);
    }

    /// Answers requests whose system message contains `marker` with a deterministic summary of
    /// their last user message ([`summary_of`]), before any scripted reply; such requests are
    /// recorded like any other.
    pub fn summarise_when(&self, marker: &str) {
        self.shared.lock().summary_marker = Some(marker.to_owned());
    }

    /// Makes this server refuse requests the way a real server does (see
    /// [`quirks::RequestQuirk`]); a refused request is recorded, takes no scripted reply, and is
    /// not a protocol violation.
    pub fn set_request_quirks(&self, quirks: &[quirks::RequestQuirk]) {
        self.shared.lock().request_quirks = quirks.to_vec();
    }

    /// Queued replies not yet taken.
    pub fn pending_replies(&self) -> usize {
        self.shared.lock().queue.len()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().requests.last().cloned()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Protocol violations seen so far (tool-call pairing, malformed bodies); each was answered
    /// with HTTP 400.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Waits until at least `n` requests have arrived and returns all recorded so far.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RecordedRequest>> {
        let mut count = self.shared.request_count.subscribe();
        match tokio::time::timeout(timeout, count.wait_for(|&c| c >= n)).await {
            Ok(Ok(_)) => Ok(self.requests()),
            Ok(Err(closed)) => Err(closed).context("fake model request counter closed"),
            Err(_elapsed) => anyhow::bail!(
                "fake model got {} of {n} requests within {timeout:?}",
                self.request_count()
            ),
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// What a reply needs to know about the request it answers.
struct Ask {
    id: String,
    created: u64,
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    last_user_text: String,
    fixed_usage: Option<(u64, u64)>,
}

impl Ask {
    fn new(body: &Value, raw_len: usize) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            id: format!(
                "chatcmpl-fake-{}",
                NEXT_COMPLETION_ID.fetch_add(1, Ordering::Relaxed)
            ),
            created,
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_MODEL)
                .to_owned(),
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            prompt_tokens: approx_tokens(raw_len),
            last_user_text: last_user_text(body),
            fixed_usage: None,
        }
    }

    fn usage(&self, completion_tokens: u64) -> Value {
        match self.fixed_usage {
            Some((prompt, completion)) => usage(prompt, completion),
            None => usage(self.prompt_tokens, completion_tokens),
        }
    }

    fn completion(&self, message: Value, finish_reason: &str, completion_tokens: u64) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
            "usage": self.usage(completion_tokens),
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
    }

    /// The closing chunks: `finish_reason`, then usage if the request asked for it.
    fn finish_chunks(&self, finish_reason: &str, completion_tokens: u64) -> Vec<Value> {
        let mut chunks = vec![self.chunk(json!({}), Some(finish_reason))];
        if self.include_usage {
            chunks.push(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(completion_tokens),
            }));
        }
        chunks
    }

    fn text(&self, text: &str) -> Response {
        let tokens = approx_tokens(text.len());
        if !self.stream {
            let message = json!({ "role": "assistant", "content": text });
            return Json(self.completion(message, "stop", tokens)).into_response();
        }
        let mut chunks = vec![self.chunk(json!({ "role": "assistant", "content": "" }), None)];
        chunks.extend(
            pieces(text, /*parts*/ 3)
                .into_iter()
                .map(|piece| self.chunk(json!({ "content": piece }), None)),
        );
        chunks.extend(self.finish_chunks("stop", tokens));
        sse(chunks)
    }

    /// A streamed text whose deltas come `every` apart, held after `hold.0` of them until the
    /// gate opens. The body ends early (an aborted stream) if the server shuts down.
    fn slow_text(
        &self,
        text: &str,
        parts: usize,
        every: Duration,
        hold: Option<(usize, Gate)>,
        shutdown: CancellationToken,
    ) -> Response {
        let tokens = approx_tokens(text.len());
        let opening = self.chunk(json!({ "role": "assistant", "content": "" }), None);
        let deltas: Vec<Value> = pieces(text, parts)
            .into_iter()
            .map(|piece| self.chunk(json!({ "content": piece }), None))
            .collect();
        let closing = self.finish_chunks("stop", tokens);
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(/*buffer*/ 4);
        tokio::spawn(async move {
            let frame = |event: &Value| format!("data: {event}\n\n");
            if tx.send(frame(&opening)).await.is_err() {
                return;
            }
            for (i, delta) in deltas.iter().enumerate() {
                if let Some((before, gate)) = &hold
                    && i == *before
                {
                    tokio::select! {
                        () = gate.0.cancelled() => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                if i > 0 && !every.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                if tx.send(frame(delta)).await.is_err() {
                    return;
                }
            }
            for event in &closing {
                if tx.send(frame(event)).await.is_err() {
                    return;
                }
            }
            // The receiver may be gone (client hung up); nothing more to send either way.
            let _ = tx.send("data: [DONE]\n\n".to_owned()).await;
        });
        let frames = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|frame| (Ok::<_, Infallible>(frame), rx))
        });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(frames),
        )
            .into_response()
    }

    fn tool_calls(&self, calls: &[ToolCall]) -> Response {
        let tokens = calls
            .iter()
            .map(|c| approx_tokens(c.name.len() + c.arguments.to_string().len()))
            .sum();
        if !self.stream {
            let message = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().map(ToolCall::to_json).collect::<Vec<_>>(),
            });
            return Json(self.completion(message, "tool_calls", tokens)).into_response();
        }
        let mut chunks = vec![self.chunk(json!({ "role": "assistant", "content": null }), None)];
        for (index, call) in calls.iter().enumerate() {
            let opening = json!({ "tool_calls": [{
                "index": index,
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": "" },
            }]});
            chunks.push(self.chunk(opening, None));
            let arguments = call.arguments.to_string();
            for fragment in pieces(&arguments, /*parts*/ 3) {
                let delta = json!({ "tool_calls": [{
                    "index": index,
                    "function": { "arguments": fragment },
                }]});
                chunks.push(self.chunk(delta, None));
            }
        }
        chunks.extend(self.finish_chunks("tool_calls", tokens));
        sse(chunks)
    }
}

async fn list_models(State(shared): State<Arc<Shared>>) -> Response {
    let Some(models) = shared.lock().models.clone() else {
        return error_response(StatusCode::NOT_FOUND, "this server has no model list");
    };
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "testkit" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (body, problems) = match serde_json::from_slice::<Value>(&raw) {
        Ok(body) => {
            let problems = match body.get("messages").and_then(Value::as_array) {
                Some(messages) => tool_pairing_violations(messages),
                None => vec!["request body has no `messages` array".to_owned()],
            };
            (body, problems)
        }
        Err(err) => (
            Value::String(String::from_utf8_lossy(&raw).into_owned()),
            vec![format!("request body is not JSON: {err}")],
        ),
    };
    let mut ask = Ask::new(&body, raw.len());
    let recorded = RecordedRequest {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body,
    };

    // std Mutex: taken and released here, before any `.await` below.
    let (reply, count) = {
        let mut state = shared.lock();
        ask.fixed_usage = state.fixed_usage;
        state.requests.push(recorded);
        state.violations.extend(problems.iter().cloned());
        // A rejected request does not consume a scripted reply: the test fails on
        // `violations()` and the script stays aligned with the requests that were valid.
        let model = body_model(&state.requests);
        let too_long = state
            .context_limit
            .filter(|limit| ask.prompt_tokens > *limit);
        let summary = state.summary_marker.as_deref().and_then(|marker| {
            let system = state.requests.last()?.messages().first()?;
            (system["role"] == "system" && system["content"].as_str()?.contains(marker))
                .then(|| Reply::Text(summary_of(&ask.last_user_text)))
        });
        let quirk = if problems.is_empty() {
            quirks::check_request(&body_of(&state.requests), &state.request_quirks)
        } else {
            Ok(false)
        };
        let tools_hidden = match quirk {
            Ok(hidden) => hidden,
            Err((status, message)) => {
                let count = state.requests.len();
                drop(state);
                shared.request_count.send_replace(count);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                return error_response(status, &message);
            }
        };
        let reply = if let Some(limit) = too_long {
            Some(Reply::ContextExceeded {
                limit,
                requested: ask.prompt_tokens,
            })
        } else if problems.is_empty() && summary.is_some() {
            summary
        } else {
            problems.is_empty().then(|| {
                let scripted = state
                    .per_model
                    .get_mut(&model)
                    .and_then(VecDeque::pop_front);
                let reply = match scripted.or_else(|| state.queue.pop_front()) {
                    Some(reply) => reply,
                    None => state.default.clone(),
                };
                match reply {
                    // The model never saw the tools, so it answers in words.
                    Reply::ToolCalls(_) if tools_hidden => {
                        Reply::text("(this server offered the model no tools)")
                    }
                    other => other,
                }
            })
        };
        (reply, state.requests.len())
    };
    shared.request_count.send_replace(count);

    match reply {
        Some(reply) => respond(reply, &ask, &shared.shutdown).await,
        None => error_response(StatusCode::BAD_REQUEST, &problems.join("; ")),
    }
}

/// The body of the request just recorded.
fn body_of(requests: &[RecordedRequest]) -> Value {
    requests.last().map(|r| r.body.clone()).unwrap_or_default()
}

/// The `model` of the request just recorded.
fn body_model(requests: &[RecordedRequest]) -> String {
    requests
        .last()
        .and_then(|r| r.body.get("model"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn respond(mut reply: Reply, ask: &Ask, shutdown: &CancellationToken) -> Response {
    loop {
        match reply {
            Reply::Text(text) => return ask.text(&text),
            Reply::Echo => {
                return ask.text(&format!("echo: {}", last_element_text(&ask.last_user_text)));
            }
            Reply::ToolCalls(calls) => return ask.tool_calls(&calls),
            Reply::Status(code, message) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return error_response(status, &message);
            }
            Reply::Garbage(body) => {
                let content_type = if ask.stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                return ([(header::CONTENT_TYPE, content_type)], body).into_response();
            }
            Reply::Json(body) => return Json(body).into_response(),
            Reply::Sse(events) => return sse(events),
            Reply::Delay(delay, next) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => reply = *next,
                    () = shutdown.cancelled() => return shutting_down(),
                }
            }
            Reply::Hang => {
                shutdown.cancelled().await;
                return shutting_down();
            }
            Reply::Streamed {
                text,
                pieces: parts,
                every,
                hold,
            } => {
                if !ask.stream {
                    let parts = u32::try_from(parts).unwrap_or(u32::MAX);
                    tokio::select! {
                        () = tokio::time::sleep(every * parts) => {}
                        () = shutdown.cancelled() => return shutting_down(),
                    }
                    if let Some((_, gate)) = hold {
                        gate.0.cancelled().await;
                    }
                    return ask.text(&text);
                }
                return ask.slow_text(&text, parts, every, hold, shutdown.clone());
            }
            Reply::ContextExceeded { limit, requested } => {
                let body = json!({ "error": {
                    "message": format!(
                        "This model's maximum context length is {limit} tokens. However, your \
                         messages resulted in {requested} tokens. Please reduce the length of \
                         the messages."
                    ),
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }});
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
        }
    }
}

fn shutting_down() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "fake model server is shutting down",
    )
}

/// An OpenAI-style error response.
fn error_response(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        400 | 404 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "api_error",
    };
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": null },
    });
    (status, Json(body)).into_response()
}

/// `data: <event>` per value, then `data: [DONE]`, one body frame each.
fn sse(events: Vec<Value>) -> Response {
    let frames = events
        .into_iter()
        .map(|event| format!("data: {event}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(futures::stream::iter(frames)),
    )
        .into_response()
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// The fake's summary of a text: its size, its first and its last 60 characters.
/// Deterministic, short whatever the input, and it shows what was summarised.
pub fn summary_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let head: String = chars.iter().take(60).collect();
    let tail: String = chars[chars.len().saturating_sub(60)..].iter().collect();
    format!(
        "Summary of {} characters. Starts: {head:?}. Ends: {tail:?}.",
        chars.len()
    )
}

/// Roughly four bytes per token, at least one.
fn approx_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4).max(1)).unwrap_or(u64::MAX)
}

/// Splits `text` into at most `parts` non-empty pieces on char boundaries.
fn pieces(text: &str, parts: usize) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return Vec::new();
    }
    let per_piece = chars.div_ceil(parts.max(1));
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .step_by(per_piece)
        .chain([text.len()])
        .collect();
    bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// Text of the last `role: "user"` message: a string, or its `{type: "text"}` parts joined by
/// newlines. Empty when there is none.
fn last_user_text(body: &Value) -> String {
    let Some(message) = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text inside the last `<…>text</…>` element of a prompt, XML-unescaped, or the whole
/// text when it has no elements: agents wrap user messages in markup
/// (`<message id="2" …>hi</message>`), and an echo of just `hi` keeps test assertions readable.
pub fn last_element_text(text: &str) -> String {
    let mut rest = text;
    while let Some(close) = rest.rfind("</") {
        let Some(open_end) = rest[..close].rfind('>') else {
            break;
        };
        let inner = &rest[open_end + 1..close];
        if !inner.trim().is_empty() {
            return inner
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
        }
        rest = &rest[..close];
    }
    text.to_owned()
}

/// Checks the rule OpenAI's API enforces on a request's messages: each assistant message with
/// `tool_calls` is followed, before the next non-tool message, by a `tool` message for every call
/// id, and each `tool` message answers a call still waiting. Returns one line per violation.
pub fn tool_pairing_violations(messages: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    // Call ids of the latest assistant tool-call message that have no result yet.
    let mut waiting: Vec<String> = Vec::new();
    let mut asked_at = 0;
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role == "tool" {
            let Some(id) = message["tool_call_id"].as_str() else {
                problems.push(format!("messages[{i}]: tool message has no tool_call_id"));
                continue;
            };
            match waiting.iter().position(|w| w == id) {
                Some(at) => {
                    waiting.remove(at);
                }
                None => problems.push(format!(
                    "messages[{i}]: tool message answers tool_call_id {id:?}, \
                     which no preceding assistant tool call is waiting for"
                )),
            }
            continue;
        }
        if !waiting.is_empty() {
            problems.push(format!(
                "messages[{asked_at}]: tool calls {waiting:?} have no tool message \
                 before messages[{i}] (role {role:?})"
            ));
            waiting.clear();
        }
        if role == "assistant"
            && let Some(calls) = message.get("tool_calls").and_then(Value::as_array)
        {
            asked_at = i;
            if calls.is_empty() {
                problems.push(format!("messages[{i}]: tool_calls is an empty array"));
            }
            for call in calls {
                match call["id"].as_str() {
                    Some(id) => waiting.push(id.to_owned()),
                    None => problems.push(format!("messages[{i}]: tool call has no id")),
                }
            }
        }
    }
    if !waiting.is_empty() {
        problems.push(format!(
            "messages[{asked_at}]: tool calls {waiting:?} have no tool message before the end"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    fn asks(ids: &[&str]) -> Value {
        let calls: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "id": id, "type": "function", "function": { "name": "f", "arguments": "{}" } }))
            .collect();
        json!({ "role": "assistant", "content": null, "tool_calls": calls })
    }

    fn answers(id: &str) -> Value {
        json!({ "role": "tool", "tool_call_id": id, "content": "ok" })
    }

    #[test]
    fn tool_pairing_table() {
        // (case, messages, number of violations)
        let cases: Vec<(&str, Vec<Value>, usize)> = vec![
            ("plain chat", vec![user("hi")], 0),
            (
                "answered",
                vec![
                    user("hi"),
                    asks(&["a", "b"]),
                    answers("b"),
                    answers("a"),
                    user("next"),
                ],
                0,
            ),
            (
                "unanswered before user",
                vec![asks(&["a"]), user("next")],
                1,
            ),
            (
                "partly answered",
                vec![asks(&["a", "b"]), answers("a"), user("x")],
                1,
            ),
            ("unanswered at end", vec![user("hi"), asks(&["a"])], 1),
            ("orphan tool message", vec![user("hi"), answers("a")], 1),
            (
                "answered twice",
                vec![asks(&["a"]), answers("a"), answers("a")],
                1,
            ),
            (
                "answers an older turn",
                vec![
                    asks(&["a"]),
                    answers("a"),
                    asks(&["b"]),
                    answers("a"),
                    answers("b"),
                ],
                1,
            ),
            (
                "tool message without id",
                vec![
                    asks(&["a"]),
                    json!({ "role": "tool", "content": "x" }),
                    answers("a"),
                ],
                1,
            ),
            ("empty tool_calls", vec![user("hi"), asks(&[])], 1),
        ];
        for (case, messages, expected) in cases {
            let problems = tool_pairing_violations(&messages);
            assert_eq!(problems.len(), expected, "{case}: {problems:?}");
        }
    }

    #[test]
    fn pieces_split_on_char_boundaries() {
        assert_eq!(pieces("héllo wörld", 3), ["héll", "o wö", "rld"]);
        assert_eq!(pieces("{}", 3), ["{", "}"]);
        assert!(pieces("", 3).is_empty());
    }

    #[test]
    fn echo_takes_the_last_element_text() {
        assert_eq!(last_element_text("plain"), "plain");
        assert_eq!(
            last_element_text(
                "<messages>\n<message id=\"2\">a</message>\n<message id=\"4\">b &amp; c</message>\n</messages>"
            ),
            "b & c"
        );
    }

    #[test]
    fn last_user_text_reads_strings_and_parts() {
        let body = json!({ "messages": [
            user("first"),
            { "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "image_url" }, { "type": "text", "text": "b" }] },
            { "role": "assistant", "content": "reply" },
        ]});
        assert_eq!(last_user_text(&body), "a\nb");
        assert_eq!(last_user_text(&json!({})), "");
    }
}
