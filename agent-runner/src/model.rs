//! The OpenAI-compatible chat-completions client: one non-streaming `POST
//! {base}/chat/completions` per step, with retries and a tolerant response parser. Owns the wire
//! format of requests and responses; what goes into the conversation is `turn.rs`'s business.
//!
//! Two transports, one retry policy and one parser: reqwest over TCP (the process runtime, or a
//! model service reached directly), and plain HTTP/1.1 over a Unix socket when
//! `CLAWBOX_MODEL_SOCKET` is set (a container reaches the host's model proxy through a mounted
//! socket with networking off; reqwest cannot dial one). The socket transport opens one
//! connection per request: on a local socket that costs microseconds, and it needs no pool.
//!
//! Why not async-openai's typed structs: real OpenAI-compatible servers (Ollama, vLLM, llama.cpp,
//! LiteLLM) omit `id`/`index`/`type`/`role`, send `arguments` as an object, invent finish
//! reasons, send `null` usage counters and float timestamps; the typed structs reject 7 of those
//! 9 quirks (`reference/rust-stack.md` §4). Here every field the loop does not need is ignored,
//! and every field it needs has a fallback.
//!
//! Requests are shaped for what real servers accept (`docs/models.md` lists the servers and
//! their quirks): an assistant message with tool calls carries `"content": ""`, not `null`
//! (llama-cpp-python's validation rejects `null` with an HTTP 500), unless the agent's
//! `container.json` says `"tool_call_content": "null"` (Anthropic behind a gateway refuses the
//! empty text); a refusal of either that names `content` flips it once; `tool_choice: "auto"` goes
//! with every non-empty tool list (llama-cpp-python's `chatml-function-calling` treats a missing
//! value as "none"); the agent's `model_params` (`container.json`) are merged in last. With
//! `"stream": true` the answer is read as server-sent events and assembled into the same
//! [`ModelReply`]; an event stream is also accepted when it was not asked for.
//!
//! Errors are classified before anything is retried: 429, 5xx and transport failures are
//! transient and retried with backoff; a request the server rejects as invalid (400, 422, or a
//! 500 whose body is request validation) is never retried as it was. If [`repair`] can change
//! it (messages no server accepts, a `tool_choice` or `stream_options` the server refuses), the
//! repaired request is sent (each kind of repair at most once); what made it pass is remembered for the client's lifetime, so
//! the next requests do not pay a rejection first. A context-length error is its own
//! [`ModelError::ContextLength`]: no retry or repair can make a conversation fit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// The longest `Retry-After` the client honours; a server asking for more gets this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How much of an error body is kept for logs and the user-visible reason.
const DETAIL_CHARS: usize = 300;

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments, `$schema` already stripped.
    pub parameters: Value,
}

impl ToolSpec {
    /// The `tools[]` entry of a request.
    fn to_json(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        })
    }
}

/// Cleans an MCP input schema for an LLM: drops `$schema` (some local servers reject it) and
/// makes sure the top level is an object schema, as the function-calling API requires. It is
/// also made smaller with the same meaning (the schemas are read by the model with every
/// request): an optional property's `"type": ["string", "null"]` becomes `"string"` and its
/// `"default": null` goes (leaving it out already means null; Gemini-backed gateways refuse
/// type lists, too), schemars' integer formats (`uint32`, `int64`, `double`…, not JSON Schema
/// formats; the `minimum` stays) go, and line breaks in descriptions become spaces.
pub fn clean_schema(schema: &Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    schema.remove("$schema");
    compact_schema(&mut schema);
    inline_definitions(&mut schema);
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".to_owned()));
    if schema.get("type") == Some(&Value::String("object".to_owned())) {
        schema
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Value::Object(schema)
}

/// Formats schemars writes for Rust number types; no JSON Schema validator or model knows them.
const NUMBER_FORMATS: &[&str] = &[
    "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
    "float", "double",
];

/// Replaces each `{"$ref": "#/$defs/<name>"}` (or `#/definitions/`) by the definition when the
/// definition holds no reference itself (so nothing recursive is unrolled), and drops the
/// definitions once nothing refers to them: schemars puts every named Rust type there, and a
/// model reads a type used once more easily where it is used, in fewer bytes.
fn inline_definitions(schema: &mut Map<String, Value>) {
    for key in ["$defs", "definitions"] {
        let Some(Value::Object(defs)) = schema.get(key) else {
            continue;
        };
        let flat: Map<String, Value> = defs
            .iter()
            .filter(|(_, def)| !def.to_string().contains("\"$ref\""))
            .map(|(name, def)| (format!("#/{key}/{name}"), def.clone()))
            .collect();
        for (name, value) in schema.iter_mut() {
            if name != key {
                replace_refs(value, &flat);
            }
        }
        let still_used = schema
            .iter()
            .filter(|(name, _)| name.as_str() != key)
            .any(|(_, value)| value.to_string().contains(&format!("\"#/{key}/")));
        if !still_used {
            schema.remove(key);
        }
    }
}

fn replace_refs(value: &mut Value, defs: &Map<String, Value>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref")
                && let Some(Value::Object(def)) = defs.get(target)
            {
                let def = def.clone();
                object.remove("$ref");
                for (k, v) in def {
                    object.entry(k).or_insert(v);
                }
            }
            for inner in object.values_mut() {
                replace_refs(inner, defs);
            }
        }
        Value::Array(items) => {
            for item in items {
                replace_refs(item, defs);
            }
        }
        _ => {}
    }
}

fn compact_schema(schema: &mut Map<String, Value>) {
    // No model writes a property the schema does not list; `false` here only tells a validator
    // (the tool server keeps rejecting unknown fields). schemars' `title`s repeat type names.
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        schema.remove("additionalProperties");
    }
    if matches!(schema.get("title"), Some(Value::String(_))) {
        schema.remove("title");
    }
    if let Some(Value::String(format)) = schema.get("format")
        && NUMBER_FORMATS.contains(&format.as_str())
    {
        schema.remove("format");
    }
    if let Some(Value::String(description)) = schema.get_mut("description")
        && description.contains('\n')
    {
        *description = description.replace('\n', " ");
    }
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let Value::Object(property) = property else {
                continue;
            };
            if !required.contains(name) {
                if let Some(Value::Array(types)) = property.get("type")
                    && types.len() == 2
                    && types.contains(&json!("null"))
                    && let Some(other) = types.iter().find(|t| **t != json!("null")).cloned()
                {
                    property.insert("type".to_owned(), other);
                }
                if property.get("default") == Some(&Value::Null) {
                    property.remove("default");
                }
            }
            compact_schema(property);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(Value::Object(inner)) = schema.get_mut(key) {
            compact_schema(inner);
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = schema.get_mut(key) {
            for def in defs.values_mut() {
                if let Value::Object(def) = def {
                    compact_schema(def);
                }
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(variants)) = schema.get_mut(key) {
            for variant in variants {
                if let Value::Object(variant) = variant {
                    compact_schema(variant);
                }
            }
        }
    }
}

/// One tool call the model asked for, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCall {
    /// The server's id, or `call_{i}` when it sent none.
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them (an object sent by the
    /// server is serialised); parsing and validation happen when the call runs.
    pub arguments: String,
}

/// Token counts, when the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// The model's answer to one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    /// The text, `None` when absent or empty.
    pub content: Option<String>,
    pub tool_calls: Vec<ModelCall>,
    /// Whatever the server said (`stop`, `tool_calls`, `eos`, `""`…); informational only.
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Requests it took, retries included (for the runner's event log).
    pub attempts: u32,
}

impl ModelReply {
    /// The assistant message as stored in history and sent back in later requests.
    pub fn to_message(&self) -> Value {
        // `""`, not `null`, beside tool calls: see `wire_message`.
        let content = self.content.clone().unwrap_or_default();
        let mut message = json!({ "role": "assistant", "content": content });
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|call| {
                    json!({
                        "id": call.id,
                        "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments },
                    })
                })
                .collect();
        }
        message
    }
}

/// Why a model request finally failed. Returned by [`ModelClient::complete`] after the retries
/// it allows; the turn loop ends the turn with `failed` acks carrying
/// [`ModelError::user_message`], except for [`ModelError::Cancelled`].
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The server answered with an HTTP error: 429 or 5xx on every attempt, or another 4xx
    /// (not retried: the same request would fail again). The turn fails.
    #[error("HTTP {status} from the model service after {attempts} attempt(s): {detail}")]
    Status {
        status: u16,
        detail: String,
        attempts: u32,
    },
    /// The server rejected the request as invalid (400, 422, or a 500 whose body is request
    /// validation): not retried as it was; `repaired` says whether a repaired copy was sent
    /// and rejected too. The turn fails.
    #[error("HTTP {status}: the model service rejected the request{}: {detail}", if *repaired { " (also once repaired)" } else { "" })]
    Invalid {
        status: u16,
        detail: String,
        attempts: u32,
        repaired: bool,
    },
    /// The conversation does not fit the model's context window. The turn fails.
    #[error("HTTP {status}: the request exceeds the model's context window: {detail}")]
    ContextLength { status: u16, detail: String },
    /// No complete answer within `CLAWBOX_MODEL_TIMEOUT_MS` on every attempt. The turn fails.
    #[error("the model service did not answer within {after:?} ({attempts} attempt(s))")]
    Timeout { after: Duration, attempts: u32 },
    /// The connection failed on every attempt (refused, reset, DNS). The turn fails.
    #[error("the model service could not be reached after {attempts} attempt(s): {detail}")]
    Unreachable { detail: String, attempts: u32 },
    /// HTTP 200 with a body that is not a usable completion (not JSON, no choices), on every
    /// attempt. The turn fails.
    #[error("malformed model response after {attempts} attempt(s): {detail}")]
    Malformed { detail: String, attempts: u32 },
    /// The runner is shutting down; the request was abandoned. The turn stops without a
    /// verdict, so the host re-queues the claim.
    #[error("model request cancelled")]
    Cancelled,
}

impl ModelError {
    /// The reason shown to the user (the `failed` ack's error text).
    pub fn user_message(&self) -> String {
        match self {
            ModelError::Status {
                status,
                detail,
                attempts,
            } => {
                let tries = tries_suffix(*attempts);
                if *status == 429 || *status >= 500 {
                    format!("The model service failed: HTTP {status} {detail}{tries}")
                } else {
                    format!("The model service refused the request: HTTP {status} {detail}")
                }
            }
            ModelError::Invalid { status, detail, .. } => {
                format!("The model service refused the request: HTTP {status} {detail}")
            }
            ModelError::ContextLength { status, detail } => format!(
                "The conversation no longer fits in the model's context window (HTTP {status} \
                 {detail}). Send /clear to start a new conversation."
            ),
            ModelError::Timeout { after, attempts } => format!(
                "The model service did not answer within {} s{}.",
                after.as_secs(),
                tries_suffix(*attempts)
            ),
            ModelError::Unreachable { detail, attempts } => format!(
                "The model service could not be reached: {detail}{}",
                tries_suffix(*attempts)
            ),
            ModelError::Malformed { detail, attempts } => format!(
                "The model returned a malformed response: {detail}{}",
                tries_suffix(*attempts)
            ),
            ModelError::Cancelled => "The request was cancelled.".to_owned(),
        }
    }
}

fn tries_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// A response body that is not a usable chat completion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

/// Settings of [`ModelClient`], taken from the runner's config.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Includes `/v1`, no trailing slash.
    pub base_url: String,
    /// Empty: no `Authorization` header.
    pub api_key: String,
    /// Send requests over this Unix socket instead of dialling `base_url`'s host (whose path
    /// still applies).
    pub socket: Option<PathBuf>,
    pub model: String,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    /// Extra request fields (`model_params` in `container.json`: `temperature`, `max_tokens`,
    /// `top_p`…), merged into every request after clawbox's own.
    pub params: Map<String, Value>,
    /// `tool_call_content` in `container.json`: the `content` of an assistant message with
    /// tool calls and no text.
    pub tool_call_content: ToolCallContent,
    /// Ask for the answer as an event stream (`stream` in `container.json`, default on), so
    /// that its text can be shown while it is written.
    pub stream: bool,
}

/// What an assistant message with tool calls and no text carries as `content`. Both are valid
/// OpenAI; servers disagree on which they accept (`docs/models.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolCallContent {
    /// `""`: llama-cpp-python's request validation refuses `null` (HTTP 500).
    #[default]
    Empty,
    /// `null`: for servers that refuse an empty text (Anthropic's API behind a gateway).
    Null,
}

impl ToolCallContent {
    /// The `container.json` spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "empty" => Some(ToolCallContent::Empty),
            "null" => Some(ToolCallContent::Null),
            _ => None,
        }
    }
}

/// Request fields `model_params` cannot set: clawbox owns them.
pub const RESERVED_PARAMS: &[&str] = &["model", "messages", "tools", "n", "stream_options"];
/// The one request field that is a setting of its own: `model_params.stream` means the same as
/// `container.json`'s `stream` (see `container_config.rs`), so it is never merged as a field.
pub const STREAM_PARAM: &str = "stream";

/// Chat-completions client for one model.
#[derive(Debug, Clone)]
pub struct ModelClient {
    transport: Transport,
    url: String,
    settings: ModelSettings,
    /// Repairs that made a rejected request pass; applied to every later request.
    learned: std::sync::Arc<std::sync::Mutex<Repairs>>,
}

#[derive(Debug, Clone)]
enum Transport {
    Tcp(reqwest::Client),
    Unix(PathBuf),
}

/// Where the growing content of a streamed answer goes while it arrives (the turn's draft).
/// The text always holds the content of the current attempt so far: it is emptied when an
/// attempt starts and only appended to while it streams.
pub type DraftSink = tokio::sync::watch::Sender<String>;

/// What came back from the server, whatever the transport: status and headers, and the body
/// still to be read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: AnswerBody,
}

enum AnswerBody {
    Tcp(reqwest::Response),
    Unix {
        body: hyper::body::Incoming,
        /// Drives the connection for as long as the body is read.
        _driver: AbortOnDrop,
    },
}

impl AnswerBody {
    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        match self {
            AnswerBody::Tcp(response) => response.chunk().await.map_err(transport_error),
            AnswerBody::Unix { body, .. } => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => {
                        return Err(AttemptError {
                            retryable: true,
                            retry_after: None,
                            kind: AttemptKind::Unreachable(error_chain(&e)),
                        });
                    }
                    Some(Ok(frame)) => {
                        // Trailers carry no content.
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
        }
    }
}

/// One failed attempt and whether another may help.
struct AttemptError {
    retryable: bool,
    retry_after: Option<Duration>,
    kind: AttemptKind,
}

enum AttemptKind {
    Status(u16, String),
    Timeout,
    Unreachable(String),
    Malformed(String),
}

impl ModelClient {
    pub fn new(settings: ModelSettings) -> Result<Self, reqwest::Error> {
        let transport = match &settings.socket {
            Some(socket) => Transport::Unix(socket.clone()),
            None => Transport::Tcp(
                reqwest::Client::builder()
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
                    .build()?,
            ),
        };
        Ok(ModelClient {
            transport,
            url: format!("{}/chat/completions", settings.base_url),
            settings,
            learned: std::sync::Arc::default(),
        })
    }

    /// Whether requests ask for an event stream: the `stream` setting, unless the server
    /// refused streaming once (see [`Repairs::no_stream`]).
    pub fn streams(&self) -> bool {
        let learned = *self
            .learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.settings.stream && !learned.no_stream
    }

    /// The request body for `messages` (system prompt included) and `tools`, with the repairs
    /// this client has learned applied. Deterministic: the same input gives the same bytes.
    pub fn request_body(&self, messages: &[Value], tools: &[ToolSpec]) -> Value {
        let mut body = json!({
            "model": self.settings.model,
            "messages": messages
                .iter()
                .map(|m| wire_message(m, self.settings.tool_call_content))
                .collect::<Vec<_>>(),
            "stream": self.settings.stream,
        });
        if !tools.is_empty() {
            body["tools"] = tools.iter().map(ToolSpec::to_json).collect();
            body["tool_choice"] = json!("auto");
        }
        for (key, value) in &self.settings.params {
            if !RESERVED_PARAMS.contains(&key.as_str()) && key != STREAM_PARAM {
                body[key.as_str()] = value.clone();
            }
        }
        if body["stream"] == json!(true) {
            // Without it most servers send no token counts in a stream.
            body["stream_options"] = json!({ "include_usage": true });
        }
        let learned = *self
            .learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if learned != Repairs::default() {
            repair_with(&mut body, learned);
        }
        body
    }

    /// Runs one step: sends the request, retrying 429, 5xx, timeouts, connection errors and
    /// malformed bodies with exponential backoff (or the server's `Retry-After`, capped). A
    /// request rejected as invalid is repaired and sent once more if [`repair`] can change it.
    pub async fn complete(
        &self,
        messages: &[Value],
        tools: &[ToolSpec],
        cancel: &CancellationToken,
    ) -> Result<ModelReply, ModelError> {
        self.complete_streaming(messages, tools, cancel, None).await
    }

    /// [`complete`](Self::complete), reporting the content of a streamed answer to `sink` as
    /// it arrives (each attempt starts it over from empty).
    pub async fn complete_streaming(
        &self,
        messages: &[Value],
        tools: &[ToolSpec],
        cancel: &CancellationToken,
        sink: Option<&DraftSink>,
    ) -> Result<ModelReply, ModelError> {
        let mut body = self.request_body(messages, tools);
        let mut attempts = 0u32;
        // What repairs changed so far. Each one changes the body and they only accumulate, so
        // there are at most as many repaired retries as kinds of repair.
        let mut repaired = Repairs::default();
        loop {
            attempts += 1;
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Err(ModelError::Cancelled),
                outcome = self.attempt(&body, sink) => outcome,
            };
            let failure = match outcome {
                Ok(reply) => {
                    if repaired != Repairs::default() {
                        let mut learned = self
                            .learned
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        *learned = learned.union(repaired);
                        tracing::info!(
                            ?repaired,
                            "a repaired request was accepted; keeping the repair"
                        );
                    }
                    return Ok(ModelReply { attempts, ..reply });
                }
                Err(failure) => failure,
            };
            if let AttemptKind::Status(status, detail) = &failure.kind {
                match classify(*status, detail) {
                    Class::Other => {}
                    Class::ContextLength => {
                        return Err(ModelError::ContextLength {
                            status: *status,
                            detail: detail.clone(),
                        });
                    }
                    Class::Invalid => {
                        let Some((fixed, repairs)) = repair(&body, detail) else {
                            return Err(ModelError::Invalid {
                                status: *status,
                                detail: detail.clone(),
                                attempts,
                                repaired: repaired != Repairs::default(),
                            });
                        };
                        tracing::warn!(status, %detail, ?repairs,
                            "the model service rejected the request; sending it once repaired");
                        body = fixed;
                        repaired = repaired.union(repairs);
                        continue;
                    }
                }
            }
            if !failure.retryable || attempts > self.settings.retries {
                return Err(self.final_error(failure.kind, attempts));
            }
            let delay = failure
                .retry_after
                .map(|d| d.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| backoff(self.settings.backoff, attempts));
            tracing::warn!(
                attempt = attempts,
                retry_in_ms = delay.as_millis() as u64,
                error = %self.final_error(failure.kind, attempts),
                "model request failed; retrying"
            );
            tokio::select! {
                () = cancel.cancelled() => return Err(ModelError::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn final_error(&self, kind: AttemptKind, attempts: u32) -> ModelError {
        match kind {
            AttemptKind::Status(status, detail) => ModelError::Status {
                status,
                detail,
                attempts,
            },
            AttemptKind::Timeout => ModelError::Timeout {
                after: self.settings.timeout,
                attempts,
            },
            AttemptKind::Unreachable(detail) => ModelError::Unreachable { detail, attempts },
            AttemptKind::Malformed(detail) => ModelError::Malformed { detail, attempts },
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        sink: Option<&DraftSink>,
    ) -> Result<ModelReply, AttemptError> {
        if let Some(sink) = sink {
            sink.send_if_modified(|text| {
                let had = !text.is_empty();
                text.clear();
                had
            });
        }
        match &self.transport {
            // reqwest's own timeout covers the whole exchange, body included.
            Transport::Tcp(http) => {
                let answer = self.send_tcp(http, body).await?;
                read_answer(answer, sink).await
            }
            Transport::Unix(socket) => {
                let exchange = async {
                    let answer = self.send_unix(socket, body).await?;
                    read_answer(answer, sink).await
                };
                match tokio::time::timeout(self.settings.timeout, exchange).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(AttemptError {
                        retryable: true,
                        retry_after: None,
                        kind: AttemptKind::Timeout,
                    }),
                }
            }
        }
    }

    async fn send_tcp(&self, http: &reqwest::Client, body: &Value) -> Result<Answer, AttemptError> {
        let mut request = http.post(&self.url).json(body);
        if !self.settings.api_key.is_empty() {
            request = request.bearer_auth(&self.settings.api_key);
        }
        let response = request.send().await.map_err(transport_error)?;
        Ok(Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: AnswerBody::Tcp(response),
        })
    }

    /// The same request over the Unix socket (the caller bounds it by the attempt timeout).
    async fn send_unix(&self, socket: &Path, body: &Value) -> Result<Answer, AttemptError> {
        let failed = |kind| AttemptError {
            retryable: true,
            retry_after: None,
            kind,
        };
        let body = serde_json::to_vec(body)
            .map_err(|e| failed(AttemptKind::Unreachable(format!("cannot encode: {e}"))))?;
        unix_exchange(socket, &self.url, &self.settings.api_key, body)
            .await
            .map_err(|detail| failed(AttemptKind::Unreachable(detail)))
    }
}

/// Reads an answer's body: an event stream (by its content type, or by its first bytes) is
/// parsed as it arrives and its content reported to `sink`; anything else is read whole and
/// parsed as one completion.
async fn read_answer(answer: Answer, sink: Option<&DraftSink>) -> Result<ModelReply, AttemptError> {
    let Answer {
        status,
        headers,
        mut body,
    } = answer;
    let retry_after = retry_after(&headers);
    let malformed = |Malformed(detail)| AttemptError {
        retryable: true,
        retry_after: None,
        kind: AttemptKind::Malformed(detail),
    };
    let mut bytes = Vec::new();
    if !status.is_success() {
        while let Some(chunk) = body.chunk().await? {
            bytes.extend_from_slice(&chunk);
        }
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        return Err(AttemptError {
            retryable,
            retry_after,
            kind: AttemptKind::Status(status.as_u16(), error_detail(&bytes)),
        });
    }
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // Undecided until the content type says so or enough of the body has come to tell.
    let mut parser = event_stream.then(StreamParser::default);
    let mut whole = false;
    // The body's bytes as long as no event has come: a server that labels a JSON answer (or
    // an error) as an event stream gets it read as what it is.
    let mut head = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        let Some(p) = parser.as_mut() else {
            bytes.extend_from_slice(&chunk);
            if whole {
                continue;
            }
            let start = bytes.trim_ascii_start();
            if start.len() >= SSE_SNIFF_BYTES {
                if looks_like_sse(start) {
                    let mut p = StreamParser::default();
                    p.feed(&std::mem::take(&mut bytes)).map_err(malformed)?;
                    report(sink, &p);
                    parser = Some(p);
                } else {
                    whole = true;
                }
            }
            continue;
        };
        if p.is_empty() && head.len() < MAX_ROW_SNIFF {
            head.extend_from_slice(&chunk);
        }
        if p.feed(&chunk).map_err(malformed)? {
            report(sink, p);
        }
    }
    match parser {
        Some(p) if p.is_empty() && !looks_like_sse(&head) => parse_response(&head),
        Some(p) => p.finish(),
        None if looks_like_sse(&bytes) => parse_stream(&bytes),
        None => parse_response(&bytes),
    }
    .map_err(malformed)
}

/// The most of a labelled event stream kept in case it turns out to hold no event.
const MAX_ROW_SNIFF: usize = 1 << 20;

/// How much of a body's start tells an event stream from JSON (`event:` is the longest prefix
/// [`looks_like_sse`] knows).
const SSE_SNIFF_BYTES: usize = 6;

/// Appends what the sink has not seen yet of the parser's content.
fn report(sink: Option<&DraftSink>, parser: &StreamParser) {
    let Some(sink) = sink else { return };
    let content = parser.content();
    sink.send_if_modified(|text| {
        // The sink holds a prefix of this attempt's content (emptied when the attempt began).
        match content.get(text.len()..) {
            Some(new) if !new.is_empty() && content.starts_with(text.as_str()) => {
                text.push_str(new);
                true
            }
            Some(_) => false,
            None => {
                text.clear();
                text.push_str(content);
                true
            }
        }
    });
}

/// One `POST` over a fresh connection to `socket`; the error is readable text.
async fn unix_exchange(
    socket: &Path,
    url: &str,
    api_key: &str,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = uri.authority().map_or("localhost", |a| a.as_str());
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    // Drives the connection; aborted with this guard when the exchange ends or is dropped
    // (timeout, cancellation), so no task outlives its request.
    let driver = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("model socket connection ended: {e}");
        }
    }));
    let mut request = hyper::Request::post(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json");
    if !api_key.is_empty() {
        request = request.header(header::AUTHORIZATION, format!("Bearer {api_key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| error_chain(&e))?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: AnswerBody::Unix {
            body,
            _driver: driver,
        },
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `backoff * 2^(attempt-1)`, plus up to 10 % jitter so that many runners hitting the same
/// overloaded server do not retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let delay = base.saturating_mul(factor).min(MAX_RETRY_AFTER);
    let jitter = delay.mul_f64(rand::random::<f64>() * 0.1);
    delay + jitter
}

fn transport_error(err: reqwest::Error) -> AttemptError {
    let kind = if err.is_timeout() {
        AttemptKind::Timeout
    } else {
        AttemptKind::Unreachable(error_chain(&err))
    };
    AttemptError {
        retryable: true,
        retry_after: None,
        kind,
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message alone says only "error sending
/// request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` in seconds (OpenAI also sends `retry-after-ms`). HTTP dates are ignored: the
/// backoff applies instead.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    read("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| read("retry-after").map(Duration::from_secs_f64))
}

/// The readable part of an error body: OpenAI's `error.message`, else the text, shortened.
fn error_detail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let from_json = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    shorten(from_json.as_deref().unwrap_or(&text).trim())
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= DETAIL_CHARS {
        return text.to_owned();
    }
    let cut: String = text.chars().take(DETAIL_CHARS).collect();
    format!("{cut}…")
}

/// Parses a `chat.completion` body, accepting every deviation listed in the module header.
pub fn parse_response(bytes: &[u8]) -> Result<ModelReply, Malformed> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| {
        Malformed(format!(
            "the body is not JSON ({e}): {}",
            shorten(String::from_utf8_lossy(bytes).trim())
        ))
    })?;
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(Malformed(format!(
            "an error instead of a completion: {}",
            shorten(&message)
        )));
    }
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| Malformed("no choices in the response".to_owned()))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| Malformed("the first choice has no message".to_owned()))?;

    let content = content_text(message.get("content")).filter(|t| !t.is_empty());
    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(i, call)| parse_tool_call(i, call))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Malformed(format!(
                "tool_calls is not an array: {}",
                shorten(&other.to_string())
            )));
        }
    };
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let usage = body.get("usage").map_or_else(Usage::default, |u| Usage {
        prompt_tokens: count(u.get("prompt_tokens")),
        completion_tokens: count(u.get("completion_tokens")),
    });
    Ok(ModelReply {
        content,
        tool_calls,
        finish_reason,
        usage,
        attempts: 1,
    })
}

/// A string, or the text parts of an array of content parts.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    other => other.get("text").and_then(Value::as_str),
                })
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

fn parse_tool_call(i: usize, call: &Value) -> Result<ModelCall, Malformed> {
    let function = call.get("function").unwrap_or(call);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Malformed(format!("tool call {i} has no function name")))?;
    let id = match call.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("call_{i}"),
    };
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Ok(ModelCall {
        id,
        name: name.to_owned(),
        arguments,
    })
}

/// How a rejected request is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The conversation is too long for the model.
    ContextLength,
    /// The request itself is wrong; sending it again cannot help.
    Invalid,
    /// Anything else: 429 and 5xx are retried, other statuses fail at once.
    Other,
}

/// What servers say when the prompt is too long: OpenAI and LiteLLM
/// (`context_length_exceeded`, "maximum context length"), vLLM ("This model's maximum context
/// length is"), llama.cpp's server ("exceeds the available context size"), llama-cpp-python
/// ("Requested tokens (…) exceed context window of …"), OpenRouter ("maximum context length"),
/// LM Studio and Ollama ("context length", "context window").
const CONTEXT_PATTERNS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context size",
    "context length",
    "exceed_context_size",
    "too many tokens",
    "prompt is too long",
];

/// What a 500 says when it is request validation, not a server failure: pydantic (llama-cpp-python,
/// LiteLLM, vLLM's FastAPI layer), chat templates refusing a message order (vLLM, llama.cpp).
const VALIDATION_PATTERNS: &[&str] = &[
    "validation error",
    "input should be",
    "field required",
    "invalid_request_error",
    "roles must alternate",
    "unexpected message role",
];

fn classify(status: u16, detail: &str) -> Class {
    let text = detail.to_lowercase();
    let has = |patterns: &[&str]| patterns.iter().any(|p| text.contains(p));
    if matches!(status, 400 | 413 | 422 | 500) && has(CONTEXT_PATTERNS) {
        Class::ContextLength
    } else if matches!(status, 400 | 422) || (status == 500 && has(VALIDATION_PATTERNS)) {
        Class::Invalid
    } else {
        Class::Other
    }
}

/// Changes [`repair`] can make to a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Drop tool results without a call, answer calls without a result, drop empty assistant
    /// messages, merge consecutive user messages.
    pub messages: bool,
    /// Send no `tool_choice` (vLLM without `--enable-auto-tool-choice` refuses `"auto"`).
    pub no_tool_choice: bool,
    /// Send no `stream_options` (servers that predate it refuse the field).
    pub no_stream_options: bool,
    /// `null` instead of `""` beside tool calls (a server refused the empty text).
    pub null_content: bool,
    /// `""` instead of `null` beside tool calls (a server refused `null`).
    pub empty_content: bool,
    /// Do not ask for an event stream (servers that cannot stream refuse `"stream": true`).
    pub no_stream: bool,
}

impl Repairs {
    fn union(self, other: Repairs) -> Repairs {
        Repairs {
            messages: self.messages || other.messages,
            no_tool_choice: self.no_tool_choice || other.no_tool_choice,
            no_stream_options: self.no_stream_options || other.no_stream_options,
            null_content: self.null_content || other.null_content,
            empty_content: self.empty_content || other.empty_content,
            no_stream: self.no_stream || other.no_stream,
        }
    }
}

/// Error texts of servers refusing `""` beside tool calls (Anthropic: "text content blocks
/// must be non-empty"; Bedrock: "… is blank"), lower case; the text must also name `content`.
const EMPTY_CONTENT_REFUSED: &[&str] = &["non-empty", "must not be empty", "is blank", "empty"];
/// Error texts of servers refusing `null` there (llama-cpp-python's pydantic: "Input should be
/// a valid string"; OpenAI-style: "expected a string, got null").
const NULL_CONTENT_REFUSED: &[&str] = &["valid string", "string_type", "got null", "nonetype"];

/// Whether `body` has an assistant message with tool calls whose content is `want`.
fn has_tool_call_content(body: &Value, want: &Value) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| {
            messages.iter().any(|m| {
                is_tool_call_message(m) && m.get("content").unwrap_or(&Value::Null) == want
            })
        })
}

fn is_tool_call_message(message: &Value) -> bool {
    message.get("role").and_then(Value::as_str) == Some("assistant")
        && message
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|calls| !calls.is_empty())
}

/// Sets the content of each assistant message with tool calls and no text to `content`.
fn set_tool_call_content(messages: &mut [Value], content: &Value) {
    for message in messages.iter_mut().filter(|m| is_tool_call_message(m)) {
        let blank = message
            .get("content")
            .is_none_or(|c| c.is_null() || c.as_str() == Some(""));
        if blank {
            message["content"] = content.clone();
        }
    }
}

/// A repaired copy of a rejected request, and what was done; `None` when no repair changes it
/// (then the request fails without being sent again). `detail` is the server's error text: a
/// field it names is dropped.
pub fn repair(body: &Value, detail: &str) -> Option<(Value, Repairs)> {
    let text = detail.to_lowercase();
    let mut repairs = Repairs {
        messages: true,
        ..Repairs::default()
    };
    if body.get("tool_choice").is_some()
        && (text.contains("tool_choice") || text.contains("tool choice"))
    {
        repairs.no_tool_choice = true;
    }
    if body.get("stream_options").is_some() && text.contains("stream_options") {
        repairs.no_stream_options = true;
    } else if body.get("stream") == Some(&json!(true))
        && text.replace("upstream", "").contains("stream")
    {
        // The answer then comes whole: the reply is the same, only its draft is lost.
        repairs.no_stream = true;
    }
    if text.contains("content") {
        let has = |patterns: &[&str]| patterns.iter().any(|p| text.contains(p));
        if has(EMPTY_CONTENT_REFUSED) && has_tool_call_content(body, &json!("")) {
            repairs.null_content = true;
        } else if has(NULL_CONTENT_REFUSED) && has_tool_call_content(body, &Value::Null) {
            repairs.empty_content = true;
        }
    }
    let mut fixed = body.clone();
    repair_with(&mut fixed, repairs);
    if fixed == *body {
        return None;
    }
    // Report only what changed something.
    let mut messages_only = body.clone();
    repair_with(
        &mut messages_only,
        Repairs {
            messages: true,
            ..Repairs::default()
        },
    );
    repairs.messages = messages_only != *body;
    Some((fixed, repairs))
}

fn repair_with(body: &mut Value, repairs: Repairs) {
    let Some(object) = body.as_object_mut() else {
        return;
    };
    if repairs.no_tool_choice {
        object.remove("tool_choice");
    }
    if repairs.no_stream_options {
        object.remove("stream_options");
    }
    if repairs.no_stream {
        object.insert("stream".to_owned(), Value::Bool(false));
        object.remove("stream_options");
    }
    let Some(Value::Array(messages)) = object.get_mut("messages") else {
        return;
    };
    if repairs.messages {
        *messages = repair_messages(std::mem::take(messages));
    }
    // Never both in practice (a server refusing both cannot take tool calls); `""` wins then,
    // as the default every server tried accepts.
    if repairs.null_content {
        set_tool_call_content(messages, &Value::Null);
    }
    if repairs.empty_content {
        set_tool_call_content(messages, &json!(""));
    }
}

/// The conversation in a shape every server accepts: each tool result follows the assistant
/// message that called it (orphans are dropped), each call has a result (a missing one is
/// answered "no result"), no assistant message is empty, and user messages do not follow each
/// other (a failed turn leaves its user message unanswered; strict chat templates require
/// user/assistant alternation), nor does a user message follow a system message twice.
pub fn repair_messages(messages: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    // Calls of the last assistant message still waiting for their result.
    let mut waiting: Vec<String> = Vec::new();
    let close = |out: &mut Vec<Value>, waiting: &mut Vec<String>| {
        for id in waiting.drain(..) {
            out.push(json!({
                "role": "tool",
                "tool_call_id": id,
                "content": "(no result: the call was interrupted)",
            }));
        }
    };
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(at) = waiting.iter().position(|w| w == id) {
                    waiting.remove(at);
                    out.push(message);
                }
            }
            "assistant" => {
                close(&mut out, &mut waiting);
                let calls: Vec<String> = message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| {
                        calls
                            .iter()
                            .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let has_text = message
                    .get("content")
                    .and_then(content_text_ref)
                    .is_some_and(|t| !t.trim().is_empty());
                if calls.is_empty() && !has_text {
                    continue;
                }
                waiting = calls;
                out.push(message);
            }
            "user" => {
                close(&mut out, &mut waiting);
                if let Some(previous) = out.last_mut()
                    && previous.get("role").and_then(Value::as_str) == Some("user")
                    && let (Some(Value::String(before)), Some(Value::String(now))) =
                        (previous.get("content").cloned(), message.get("content"))
                {
                    previous["content"] = Value::String(format!("{before}\n\n{now}"));
                    continue;
                }
                out.push(message);
            }
            _ => {
                close(&mut out, &mut waiting);
                out.push(message);
            }
        }
    }
    close(&mut out, &mut waiting);
    out
}

fn content_text_ref(content: &Value) -> Option<String> {
    content_text(Some(content))
}

/// A history message as sent: an assistant message's missing or `null` content becomes `""`.
/// OpenAI allows `null` beside `tool_calls`, but llama-cpp-python's request validation (and
/// others built on the same pydantic models) answers HTTP 500 for it, while every server tried
/// accepts `""`. Stored history is not rewritten: older rows with `null` are fixed here too.
/// With [`ToolCallContent::Null`] a message with tool calls and no text gets `null` instead.
fn wire_message(message: &Value, tool_call_content: ToolCallContent) -> Value {
    if message.get("role").and_then(Value::as_str) != Some("assistant") {
        return message.clone();
    }
    let blank = message
        .get("content")
        .is_none_or(|c| c.is_null() || c.as_str() == Some(""));
    if !blank {
        return message.clone();
    }
    let mut message = message.clone();
    message["content"] = match tool_call_content {
        ToolCallContent::Null if is_tool_call_message(&message) => Value::Null,
        ToolCallContent::Null | ToolCallContent::Empty => Value::String(String::new()),
    };
    message
}

/// A body that is a server-sent event stream although its content type does not say so.
fn looks_like_sse(bytes: &[u8]) -> bool {
    let start = bytes.trim_ascii_start();
    start.starts_with(b"data:") || start.starts_with(b": ") || start.starts_with(b"event:")
}

/// One tool call being assembled from stream deltas.
#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// The longest line of an event stream the parser holds while waiting for its end: far more
/// than any real event (a delta is a few hundred bytes, a whole message in one event a few
/// hundred KB), and a bound on what a broken server can make the runner buffer.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// Assembles a `chat.completion.chunk` event stream into one reply, as its bytes arrive:
/// content deltas joined, tool calls merged by `index` (by `id`, or in order, when a server
/// sends none — Ollama sends each call whole in one delta), the last finish reason and usage
/// kept. Comment lines (`: OPENROUTER PROCESSING` keep-alives), `event:` lines and `[DONE]` are
/// skipped; an `error` event fails the request.
///
/// Bytes are split into lines before they are decoded, so a chunk boundary anywhere — inside
/// an event, inside a UTF-8 character — changes nothing: a line is decoded once it is whole.
#[derive(Default)]
pub struct StreamParser {
    /// The unfinished last line.
    pending: Vec<u8>,
    content: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: Usage,
    chunks: usize,
}

impl StreamParser {
    /// Feeds the next bytes of the body; returns whether the content grew.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<bool, Malformed> {
        let before = self.content.len();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(end);
            rest = &tail[1..];
            if self.pending.is_empty() {
                self.line(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                self.line(&whole)?;
            }
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(Malformed(format!(
                "a stream event is longer than {} MiB",
                MAX_EVENT_BYTES >> 20
            )));
        }
        Ok(self.content.len() > before)
    }

    /// Whether no event has been read yet.
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// The content so far.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// The reply, once the body has ended (a last line without a newline still counts).
    pub fn finish(mut self) -> Result<ModelReply, Malformed> {
        let last = std::mem::take(&mut self.pending);
        self.line(&last)?;
        if self.chunks == 0 {
            return Err(Malformed("the event stream holds no completion".to_owned()));
        }
        let tool_calls = self
            .calls
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !(c.name.is_empty() && c.arguments.is_empty() && c.id.is_none()))
            .map(|(i, c)| {
                if c.name.is_empty() {
                    return Err(Malformed(format!("tool call {i} has no function name")));
                }
                Ok(ModelCall {
                    id: c.id.unwrap_or_else(|| format!("call_{i}")),
                    name: c.name,
                    arguments: if c.arguments.trim().is_empty() {
                        "{}".to_owned()
                    } else {
                        c.arguments
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let content = self.content;
        Ok(ModelReply {
            content: (!content.is_empty()).then_some(content),
            tool_calls,
            finish_reason: self.finish_reason,
            usage: self.usage,
            attempts: 1,
        })
    }

    /// One whole line of the stream.
    fn line(&mut self, line: &[u8]) -> Result<(), Malformed> {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(());
        };
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            Malformed(format!(
                "a stream event is not JSON ({e}): {}",
                shorten(data)
            ))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(Malformed(format!(
                "an error instead of a completion: {}",
                shorten(&message)
            )));
        }
        self.chunks += 1;
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Usage {
                prompt_tokens: count(u.get("prompt_tokens")).or(self.usage.prompt_tokens),
                completion_tokens: count(u.get("completion_tokens"))
                    .or(self.usage.completion_tokens),
            };
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        // Some servers put a whole message in the last chunk instead of a delta.
        let Some(delta) = choice.get("delta").or_else(|| choice.get("message")) else {
            return Ok(());
        };
        if let Some(piece) = content_text(delta.get("content")) {
            self.content.push_str(&piece);
        }
        let Some(deltas) = delta.get("tool_calls").and_then(Value::as_array) else {
            return Ok(());
        };
        let calls = &mut self.calls;
        for call in deltas {
            let id = match call.get("id") {
                Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let slot = match call.get("index").and_then(Value::as_u64) {
                Some(index) => usize::try_from(index).unwrap_or(usize::MAX),
                None => match &id {
                    Some(id) => calls
                        .iter()
                        .position(|c| c.id.as_deref() == Some(id))
                        .unwrap_or(calls.len()),
                    // No index, no id: a name opens a call, anything else continues one.
                    None if call.pointer("/function/name").is_some() => calls.len(),
                    None => calls.len().saturating_sub(1),
                },
            };
            if slot > calls.len() + 64 {
                return Err(Malformed(format!("tool call index {slot} is out of range")));
            }
            while calls.len() <= slot {
                calls.push(PartialCall::default());
            }
            let partial = &mut calls[slot];
            if id.is_some() {
                partial.id = id;
            }
            let function = call.get("function").unwrap_or(call);
            // OpenAI sends the name once, in the call's first delta; llama-cpp-python repeats
            // it whole in every delta of the call. Pieces of a name are joined, a repeat is not.
            if let Some(name) = function.get("name").and_then(Value::as_str)
                && partial.name != name
            {
                partial.name.push_str(name);
            }
            match function.get("arguments") {
                None | Some(Value::Null) => {}
                Some(Value::String(piece)) => partial.arguments.push_str(piece),
                Some(other) => partial.arguments.push_str(&other.to_string()),
            }
        }
        Ok(())
    }
}

/// A whole event-stream body assembled into one reply ([`StreamParser`]).
pub fn parse_stream(bytes: &[u8]) -> Result<ModelReply, Malformed> {
    let mut parser = StreamParser::default();
    parser.feed(bytes)?;
    parser.finish()
}

/// A token counter: an integer, a float, or anything else as unknown.
fn count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;
    use testkit::{FakeModel, Reply, ToolCall, quirks};

    use super::*;

    fn text_reply(text: &str) -> ModelReply {
        ModelReply {
            content: Some(text.to_owned()),
            tool_calls: Vec::new(),
            finish_reason: Some("stop".to_owned()),
            usage: Usage::default(),
            attempts: 1,
        }
    }

    /// Parses and forgets usage and finish reason where a test does not look at them.
    fn parse(body: &Value) -> ModelReply {
        let mut reply = parse_response(body.to_string().as_bytes()).unwrap();
        reply.usage = Usage::default();
        reply
    }

    #[test]
    fn every_quirk_parses() {
        let call = ToolCall::with_id("call_q", "read_file", json!({ "path": "a.txt" }));
        let want_call = ModelCall {
            id: "call_q".to_owned(),
            name: "read_file".to_owned(),
            arguments: r#"{"path":"a.txt"}"#.to_owned(),
        };
        let tool_reply = |finish: &str| ModelReply {
            content: None,
            tool_calls: vec![want_call.clone()],
            finish_reason: Some(finish.to_owned()),
            usage: Usage::default(),
            attempts: 1,
        };
        assert_eq!(parse(&quirks::text("hi")), text_reply("hi"));
        assert_eq!(parse(&quirks::bare_text("hi")), text_reply("hi"));
        assert_eq!(parse(&quirks::roleless_message("hi")), text_reply("hi"));
        assert_eq!(parse(&quirks::float_created("hi")), text_reply("hi"));
        assert_eq!(
            parse(&quirks::null_completion_tokens("hi")),
            text_reply("hi")
        );
        let mut eos = text_reply("hi");
        eos.finish_reason = Some("eos".to_owned());
        assert_eq!(parse(&quirks::finish_reason("hi", "eos")), eos);
        eos.finish_reason = Some(String::new());
        assert_eq!(parse(&quirks::finish_reason("hi", "")), eos);
        assert_eq!(
            parse(&quirks::tool_calls(std::slice::from_ref(&call))),
            tool_reply("tool_calls")
        );
        assert_eq!(
            parse(&quirks::untyped_tool_call(&call)),
            tool_reply("tool_calls")
        );
        assert_eq!(
            parse(&quirks::object_arguments(&call)),
            tool_reply("tool_calls")
        );
    }

    #[test]
    fn usage_tolerates_nulls_and_floats() {
        let body = quirks::null_completion_tokens("hi");
        let reply = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(reply.usage.completion_tokens, None);
        assert_eq!(reply.usage.prompt_tokens, Some(16));
        let mut body = quirks::text("hi");
        body["usage"]["prompt_tokens"] = json!(12.0);
        let reply = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(reply.usage.prompt_tokens, Some(12));
    }

    #[test]
    fn missing_ids_and_arguments_get_defaults() {
        let body = json!({ "choices": [{ "message": { "tool_calls": [
            { "function": { "name": "a" } },
            { "id": 7, "function": { "name": "b", "arguments": null } },
            { "id": "", "function": { "name": "c", "arguments": [1, 2] } },
        ]}}]});
        let reply = parse(&body);
        let got: Vec<(&str, &str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("call_0", "a", "{}"),
                ("7", "b", "{}"),
                ("call_2", "c", "[1,2]")
            ]
        );
        assert_eq!(reply.content, None);
        assert_eq!(reply.finish_reason, None);
    }

    #[test]
    fn content_parts_are_joined() {
        let body = json!({ "choices": [{ "message": { "content": [
            { "type": "text", "text": "a" }, { "type": "image_url" }, { "type": "text", "text": "b" }
        ]}}]});
        assert_eq!(parse(&body).content.as_deref(), Some("ab"));
    }

    #[test]
    fn unusable_bodies_are_malformed() {
        let table: [(&[u8], &str); 6] = [
            (b"not json", "the body is not JSON"),
            (b"{}", "no choices"),
            (br#"{"choices": []}"#, "no choices"),
            (br#"{"choices": [{"text": "x"}]}"#, "has no message"),
            (
                br#"{"error": {"message": "overloaded"}}"#,
                "an error instead of a completion: overloaded",
            ),
            (
                br#"{"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}"#,
                "tool call 0 has no function name",
            ),
        ];
        for (body, want) in table {
            let err = parse_response(body).unwrap_err();
            assert!(err.0.contains(want), "{err} should contain {want:?}");
        }
    }

    #[test]
    fn schemas_are_cleaned() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": { "path": { "type": "string" } },
        });
        assert_eq!(
            clean_schema(schema.as_object().unwrap()),
            json!({ "type": "object", "properties": { "path": { "type": "string" } } })
        );
        assert_eq!(
            clean_schema(&Map::new()),
            json!({ "type": "object", "properties": {} })
        );
        // Smaller, same meaning.
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["path", "either"],
            "properties": {
                "path": { "type": "string", "description": "Where:\nrelative." },
                "depth": { "type": ["integer", "null"], "format": "uint32", "minimum": 0, "default": null },
                "either": { "type": ["string", "null"] },
                "when": { "type": "string", "format": "date-time" },
                "items": { "type": "array", "items": { "type": "object", "properties": {
                    "n": { "type": ["number", "null"], "format": "double" } } } },
            },
        });
        assert_eq!(
            clean_schema(schema.as_object().unwrap()),
            json!({
                "type": "object",
                "required": ["path", "either"],
                "properties": {
                    "path": { "type": "string", "description": "Where: relative." },
                    "depth": { "type": "integer", "minimum": 0 },
                    "either": { "type": ["string", "null"] },
                    "when": { "type": "string", "format": "date-time" },
                    "items": { "type": "array", "items": { "type": "object", "properties": {
                        "n": { "type": "number" } } } },
                },
            })
        );
    }

    #[test]
    fn definitions_used_inline_and_validator_keywords_go() {
        let schema = json!({
            "type": "object",
            "title": "AskArgs",
            "additionalProperties": false,
            "$defs": {
                "Option": { "anyOf": [{ "type": "string" }, { "type": "object", "title": "Pair",
                    "additionalProperties": false,
                    "properties": { "label": { "type": "string" } } }] },
                "Node": { "type": "object", "properties": { "next": { "$ref": "#/$defs/Node" } } },
            },
            "properties": {
                "options": { "type": "array", "items": { "$ref": "#/$defs/Option" } },
                "title": { "type": "string", "description": "A heading." },
                "map": { "type": "object", "additionalProperties": { "type": "string" } },
            },
        });
        assert_eq!(
            clean_schema(schema.as_object().unwrap()),
            json!({
                "type": "object",
                "properties": {
                    "options": { "type": "array", "items": { "anyOf": [{ "type": "string" },
                        { "type": "object", "properties": { "label": { "type": "string" } } }] } },
                    "title": { "type": "string", "description": "A heading." },
                    "map": { "type": "object", "additionalProperties": { "type": "string" } },
                },
            })
        );
        // A recursive definition stays, and so does what refers to it.
        let schema = json!({
            "type": "object",
            "$defs": { "Node": { "type": "object",
                "properties": { "next": { "$ref": "#/$defs/Node" } } } },
            "properties": { "root": { "$ref": "#/$defs/Node" } },
        });
        assert_eq!(
            clean_schema(schema.as_object().unwrap()),
            json!({
                "type": "object",
                "$defs": { "Node": { "type": "object",
                    "properties": { "next": { "$ref": "#/$defs/Node" } } } },
                "properties": { "root": { "$ref": "#/$defs/Node" } },
            })
        );
    }

    #[test]
    fn retry_after_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&dated), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        for (attempt, min) in [(1, 100), (2, 200), (3, 400)] {
            let d = backoff(base, attempt);
            assert!(d >= Duration::from_millis(min) && d <= Duration::from_millis(min * 11 / 10));
        }
        assert!(backoff(base, 40) <= MAX_RETRY_AFTER.mul_f64(1.1));
    }

    fn client(fake: &FakeModel, retries: u32) -> ModelClient {
        ModelClient::new(ModelSettings {
            base_url: fake.base_url(),
            api_key: "sk-test".to_owned(),
            socket: None,
            model: "test-model".to_owned(),
            timeout: Duration::from_secs(5),
            retries,
            backoff: Duration::from_millis(5),
            params: Map::new(),
            tool_call_content: ToolCallContent::Empty,
            stream: false,
        })
        .unwrap()
    }

    fn user(text: &str) -> Vec<Value> {
        vec![json!({ "role": "user", "content": text })]
    }

    #[tokio::test]
    async fn every_quirk_round_trips_over_http() {
        let fake = FakeModel::start().await.unwrap();
        let call = ToolCall::with_id("call_q", "f", json!({ "a": 1 }));
        let bodies = [
            quirks::bare_text("t"),
            quirks::untyped_tool_call(&call),
            quirks::object_arguments(&call),
            quirks::finish_reason("t", "eos"),
            quirks::finish_reason("t", ""),
            quirks::null_completion_tokens("t"),
            quirks::float_created("t"),
            quirks::roleless_message("t"),
        ];
        let c = client(&fake, 0);
        for body in bodies {
            fake.push(Reply::Json(body.clone()));
            let reply = c
                .complete(&user("hi"), &[], &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            if reply.tool_calls.is_empty() {
                assert_eq!(reply.content.as_deref(), Some("t"), "{body}");
            } else {
                assert_eq!(reply.tool_calls[0].arguments, r#"{"a":1}"#, "{body}");
            }
        }
        assert!(fake.violations().is_empty());
    }

    #[tokio::test]
    async fn request_shape() {
        let fake = FakeModel::start().await.unwrap();
        let c = client(&fake, 0);
        let tools = [ToolSpec {
            name: "read_file".to_owned(),
            description: "Read".to_owned(),
            parameters: json!({ "type": "object", "properties": {} }),
        }];
        c.complete(&user("hi"), &tools, &CancellationToken::new())
            .await
            .unwrap();
        let request = fake.last_request().unwrap();
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(request.body["model"], "test-model");
        assert_eq!(request.body["stream"], false);
        assert_eq!(
            request.body["tools"],
            json!([{ "type": "function", "function": {
                "name": "read_file", "description": "Read",
                "parameters": { "type": "object", "properties": {} } } }])
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let fake = FakeModel::start().await.unwrap();
        fake.push(Reply::Status(500, "boom".to_owned()));
        fake.push(Reply::Status(429, "slow down".to_owned()));
        fake.push(Reply::Garbage("<html>".to_owned()));
        fake.push(Reply::text("ok"));
        let reply = client(&fake, 3)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.content.as_deref(), Some("ok"));
        assert_eq!(fake.request_count(), 4);
    }

    #[tokio::test]
    async fn final_failures_are_readable() {
        let fake = FakeModel::start().await.unwrap();
        fake.set_default(Reply::Status(503, "overloaded".to_owned()));
        let err = client(&fake, 2)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(fake.request_count(), 3);
        assert_eq!(
            err.user_message(),
            "The model service failed: HTTP 503 overloaded (after 3 attempts)"
        );

        fake.set_default(Reply::Garbage("{not json".to_owned()));
        let err = client(&fake, 1)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            err.user_message()
                .starts_with("The model returned a malformed response: the body is not JSON"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let fake = FakeModel::start().await.unwrap();
        fake.set_default(Reply::Status(400, "context length exceeded".to_owned()));
        let err = client(&fake, 3)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(fake.request_count(), 1);
        assert_eq!(
            err.user_message(),
            "The conversation no longer fits in the model's context window (HTTP 400 context \
             length exceeded). Send /clear to start a new conversation."
        );

        // Nothing to repair: one request, no blind retries.
        fake.set_default(Reply::Status(422, "unsupported value: 'top_k'".to_owned()));
        let err = client(&fake, 3)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(fake.request_count(), 2);
        assert!(
            matches!(
                err,
                ModelError::Invalid {
                    status: 422,
                    repaired: false,
                    ..
                }
            ),
            "{err:?}"
        );
        fake.set_default(Reply::Status(401, "bad key".to_owned()));
        let err = client(&fake, 3)
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(fake.request_count(), 3);
        assert_eq!(
            err.user_message(),
            "The model service refused the request: HTTP 401 bad key"
        );
    }

    #[test]
    fn errors_are_classified() {
        let table = [
            (
                400,
                "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens",
                Class::ContextLength,
            ),
            (
                400,
                "Requested tokens (5000) exceed context window of 2048",
                Class::ContextLength,
            ),
            (
                400,
                "the request exceeds the available context size, try increasing it",
                Class::ContextLength,
            ),
            (
                500,
                "litellm.ContextWindowExceededError: prompt is too long",
                Class::ContextLength,
            ),
            (
                400,
                "Invalid value for 'content': expected a string, got null.",
                Class::Invalid,
            ),
            (422, "Field required", Class::Invalid),
            (
                500,
                "1 validation error for ChatCompletionRequestAssistantMessage content Input should be a valid string",
                Class::Invalid,
            ),
            (
                500,
                "Conversation roles must alternate user/assistant/user/assistant/...",
                Class::Invalid,
            ),
            (500, "CUDA out of memory", Class::Other),
            (503, "overloaded", Class::Other),
            (429, "rate limited", Class::Other),
            (401, "bad key", Class::Other),
        ];
        for (status, detail, want) in table {
            assert_eq!(classify(status, detail), want, "{status} {detail}");
        }
    }

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.to_owned(),
            description: "d".to_owned(),
            parameters: json!({ "type": "object", "properties": {} }),
        }
    }

    #[tokio::test]
    async fn requests_carry_tool_choice_empty_content_and_params() {
        let fake = FakeModel::start().await.unwrap();
        let mut c = client(&fake, 0);
        let history = vec![
            json!({ "role": "user", "content": "hi" }),
            // Stored by an older version, with `null`.
            json!({ "role": "assistant", "content": null, "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "f", "arguments": "{}" } } ] }),
            json!({ "role": "tool", "tool_call_id": "c1", "content": "ok" }),
        ];
        c.complete(&history, &[spec("f")], &CancellationToken::new())
            .await
            .unwrap();
        let body = fake.last_request().unwrap().body;
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["messages"][1]["content"], "");
        assert_eq!(body["stream"], false);
        assert!(body.get("max_tokens").is_none());

        // No tools, no tool_choice.
        c.complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert!(
            fake.last_request()
                .unwrap()
                .body
                .get("tool_choice")
                .is_none()
        );

        // The agent's model_params are merged in; they may override tool_choice, not the model.
        c.settings.params = json!({ "temperature": 0.1, "max_tokens": 32, "tool_choice": "required", "model": "x" })
            .as_object()
            .unwrap()
            .clone();
        c.complete(&user("hi"), &[spec("f")], &CancellationToken::new())
            .await
            .unwrap();
        let body = fake.last_request().unwrap().body;
        assert_eq!(body["temperature"], 0.1);
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["model"], "test-model");

        // A stored reply with tool calls has "" too.
        let reply = ModelReply {
            content: None,
            tool_calls: vec![ModelCall {
                id: "a".to_owned(),
                name: "f".to_owned(),
                arguments: "{}".to_owned(),
            }],
            finish_reason: None,
            usage: Usage::default(),
            attempts: 1,
        };
        assert_eq!(reply.to_message()["content"], "");
    }

    fn tool_call_history() -> Vec<Value> {
        vec![
            json!({ "role": "user", "content": "hi" }),
            json!({ "role": "assistant", "content": "", "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "f", "arguments": "{}" } } ] }),
            json!({ "role": "tool", "tool_call_id": "c1", "content": "ok" }),
            json!({ "role": "assistant", "content": "done" }),
            json!({ "role": "user", "content": "again" }),
        ]
    }

    #[tokio::test]
    async fn tool_call_content_null_is_sent_when_configured() {
        let fake = FakeModel::start().await.unwrap();
        let mut c = client(&fake, 0);
        c.settings.tool_call_content = ToolCallContent::Null;
        c.complete(
            &tool_call_history(),
            &[spec("f")],
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let body = fake.last_request().unwrap().body;
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(body["messages"][3]["content"], "done", "text is kept");
    }

    #[tokio::test]
    async fn a_refused_empty_or_null_content_is_flipped_once_and_remembered() {
        let fake = FakeModel::start().await.unwrap();
        fake.set_request_quirks(&[quirks::RequestQuirk::EmptyContentRefused]);
        let c = client(&fake, 3);
        let reply = c
            .complete(
                &tool_call_history(),
                &[spec("f")],
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(reply.attempts, 2);
        let requests = fake.requests();
        assert_eq!(requests[0].body["messages"][1]["content"], "");
        assert_eq!(requests[1].body["messages"][1]["content"], Value::Null);
        c.complete(
            &tool_call_history(),
            &[spec("f")],
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(fake.request_count(), 3, "learned: no second refusal");

        // The other way round: configured null, a server that wants a string.
        let fake = FakeModel::start().await.unwrap();
        fake.set_request_quirks(&[quirks::RequestQuirk::NullContentIs500]);
        let mut c = client(&fake, 3);
        c.settings.tool_call_content = ToolCallContent::Null;
        let reply = c
            .complete(
                &tool_call_history(),
                &[spec("f")],
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(reply.attempts, 2);
        assert_eq!(
            fake.last_request().unwrap().body["messages"][1]["content"],
            ""
        );

        // A refusal that names neither: no flip, no blind retry.
        let body = c.request_body(&tool_call_history(), &[spec("f")]);
        assert_eq!(repair(&body, "content policy violation"), None);
    }

    #[tokio::test]
    async fn a_refused_tool_choice_is_dropped_once_and_remembered() {
        let fake = FakeModel::start().await.unwrap();
        // vLLM started without --enable-auto-tool-choice.
        fake.push(Reply::Status(
            400,
            "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set".to_owned(),
        ));
        let c = client(&fake, 3);
        let reply = c
            .complete(&user("hi"), &[spec("f")], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.attempts, 2);
        let requests = fake.requests();
        assert_eq!(requests[0].body["tool_choice"], "auto");
        assert!(requests[1].body.get("tool_choice").is_none());
        assert_eq!(requests[1].body["tools"], requests[0].body["tools"]);
        // Learned: the next request goes without it at once.
        c.complete(&user("again"), &[spec("f")], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(fake.request_count(), 3);
        assert!(
            fake.last_request()
                .unwrap()
                .body
                .get("tool_choice")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_rejected_conversation_is_repaired_once() {
        let fake = FakeModel::start().await.unwrap();
        let history = vec![
            json!({ "role": "user", "content": "first (its turn failed)" }),
            json!({ "role": "user", "content": "second" }),
        ];
        fake.push(Reply::Status(
            500,
            "Conversation roles must alternate user/assistant/user/assistant/...".to_owned(),
        ));
        fake.push(Reply::Status(
            500,
            "Conversation roles must alternate".to_owned(),
        ));
        let err = client(&fake, 3)
            .complete(&history, &[], &CancellationToken::new())
            .await
            .unwrap_err();
        // Sent as it was, then once repaired; not retried like a transient 500.
        assert_eq!(fake.request_count(), 2);
        assert!(
            matches!(
                err,
                ModelError::Invalid {
                    repaired: true,
                    attempts: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            fake.last_request().unwrap().body["messages"],
            json!([{ "role": "user", "content": "first (its turn failed)\n\nsecond" }])
        );
    }

    #[test]
    fn broken_conversations_are_repaired() {
        let call = |id: &str| json!({ "id": id, "type": "function", "function": { "name": "f", "arguments": "{}" } });
        let result = |id: &str| json!({ "role": "tool", "tool_call_id": id, "content": "ok" });
        let messages = vec![
            json!({ "role": "system", "content": "s" }),
            result("orphan"),
            json!({ "role": "user", "content": "a" }),
            json!({ "role": "assistant", "content": "", "tool_calls": [call("x"), call("y")] }),
            result("x"),
            json!({ "role": "user", "content": "b" }),
            json!({ "role": "user", "content": "c" }),
            json!({ "role": "assistant", "content": null }),
            json!({ "role": "assistant", "content": "done" }),
        ];
        assert_eq!(
            repair_messages(messages),
            vec![
                json!({ "role": "system", "content": "s" }),
                json!({ "role": "user", "content": "a" }),
                json!({ "role": "assistant", "content": "", "tool_calls": [call("x"), call("y")] }),
                result("x"),
                json!({ "role": "tool", "tool_call_id": "y", "content": "(no result: the call was interrupted)" }),
                json!({ "role": "user", "content": "b\n\nc" }),
                json!({ "role": "assistant", "content": "done" }),
            ]
        );
        // A whole conversation is left as it is, so `repair` reports nothing to do.
        let body = json!({ "messages": [{ "role": "user", "content": "hi" }] });
        assert_eq!(repair(&body, "bad request"), None);
    }

    #[test]
    fn streams_are_assembled() {
        // Text in pieces, usage last, an OpenRouter keep-alive comment, an `event:` line.
        let stream = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "event: message\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let reply = parse_stream(stream.as_bytes()).unwrap();
        assert_eq!(reply.content.as_deref(), Some("Hello"));
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: Some(9),
                completion_tokens: Some(2)
            }
        );

        // Tool calls by index, arguments in fragments; Ollama's whole call without an index.
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c0\",\"function\":{\"name\":\"read_file\",\"arguments\":\"\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\":\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"a\\\"}\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"grep\",\"arguments\":{\"pattern\":\"x\"}}}]},\"finish_reason\":\"tool_calls\"}]}\n",
        );
        let reply = parse_stream(stream.as_bytes()).unwrap();
        let calls: Vec<(&str, &str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("c0", "read_file", r#"{"path":"a"}"#),
                ("c1", "grep", r#"{"pattern":"x"}"#)
            ]
        );
        assert_eq!(reply.content, None);

        let err =
            parse_stream(b"data: {\"error\":{\"message\":\"upstream died\"}}\n\n").unwrap_err();
        assert_eq!(err.0, "an error instead of a completion: upstream died");
        assert!(parse_stream(b"data: [DONE]\n").is_err());
    }

    #[test]
    fn a_name_repeated_in_every_delta_is_one_name() {
        // llama-cpp-python's chatml-function-calling: the whole name in each delta of a call.
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"list_files\",\"arguments\":\"{\\\"pa\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"list_files\",\"arguments\":\"th\\\": \\\".\\\"}\"}}]}}]}\n\n",
            // OpenAI: a name in pieces (seen from some proxies), arguments in pieces.
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"d\",\"function\":{\"name\":\"read\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"name\":\"_file\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]",
        );
        let reply = parse_stream(stream.as_bytes()).unwrap();
        let calls: Vec<(&str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [("list_files", r#"{"path": "."}"#), ("read_file", "{}")]
        );
    }

    #[test]
    fn stream_chunks_may_split_anywhere() {
        // A content delta with a two-byte and a four-byte character, a tool call, usage.
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hé\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"llo 😀\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"déjà\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
            "data: [DONE]",
        );
        let bytes = stream.as_bytes();
        let whole = parse_stream(bytes).unwrap();
        assert_eq!(whole.content.as_deref(), Some("héllo 😀déjà"));
        assert_eq!(whole.tool_calls.len(), 1);
        assert_eq!(whole.usage.completion_tokens, Some(4));
        // Every split point, including inside "é" and inside "😀".
        for at in 0..=bytes.len() {
            let mut parser = StreamParser::default();
            parser.feed(&bytes[..at]).unwrap();
            // Only whole lines are decoded: no replacement character ever shows.
            assert!(!parser.content().contains('\u{FFFD}'), "split at {at}");
            assert!(
                "héllo 😀déjà".starts_with(parser.content()),
                "split at {at}"
            );
            parser.feed(&bytes[at..]).unwrap();
            assert_eq!(parser.finish().unwrap(), whole, "split at {at}");
        }
        // Byte by byte: the content grows as each event's line ends.
        let mut parser = StreamParser::default();
        let mut seen = Vec::new();
        for b in bytes {
            if parser.feed(std::slice::from_ref(b)).unwrap() {
                seen.push(parser.content().to_owned());
            }
        }
        assert_eq!(seen, ["hé", "héllo 😀", "héllo 😀déjà"]);
        assert_eq!(parser.finish().unwrap(), whole);
    }

    #[tokio::test]
    async fn streamed_content_reaches_the_sink_as_it_arrives() {
        let fake = FakeModel::start().await.unwrap();
        let mut c = client(&fake, 0);
        c.settings.stream = true;
        let gate = testkit::fake_model::Gate::new();
        fake.push(Reply::held("one two three four", 4, 2, &gate));
        let (sink, mut seen) = tokio::sync::watch::channel(String::new());
        let call = tokio::spawn(async move {
            c.complete_streaming(&user("hi"), &[], &CancellationToken::new(), Some(&sink))
                .await
        });
        // The first half arrives while the model is still "writing" the rest.
        // Pieces of five characters: "one t", "wo th", then the stream is held.
        let half = seen
            .wait_for(|text| text.len() >= "one two th".len())
            .await
            .unwrap()
            .clone();
        assert_eq!(half, "one two th");
        gate.open();
        let reply = call.await.unwrap().unwrap();
        assert_eq!(reply.content.as_deref(), Some("one two three four"));
        assert_eq!(*seen.borrow(), "one two three four");
    }

    #[tokio::test]
    async fn a_server_that_refuses_to_stream_is_asked_again_without() {
        let fake = FakeModel::start().await.unwrap();
        let mut c = client(&fake, 0);
        c.settings.stream = true;
        assert!(c.streams());
        fake.push(Reply::Status(400, "stream mode is not supported".into()));
        fake.push(Reply::text("whole"));
        fake.push(Reply::text("again"));
        let reply = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.content.as_deref(), Some("whole"));
        let requests = fake.requests();
        assert_eq!(requests[0].body["stream"], true);
        assert_eq!(requests[1].body["stream"], false);
        assert!(requests[1].body.get("stream_options").is_none());
        // Remembered: no more drafts, no more refusals.
        assert!(!c.streams());
        c.complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(fake.request_count(), 3);
        assert_eq!(fake.last_request().unwrap().body["stream"], false);
    }

    #[tokio::test]
    async fn streamed_steps_over_http() {
        let fake = FakeModel::start().await.unwrap();
        let mut c = client(&fake, 0);
        c.settings.stream = true;
        fake.push(Reply::ToolCalls(vec![ToolCall::with_id(
            "call_s",
            "f",
            json!({ "a": 1 }),
        )]));
        fake.push(Reply::text("streamed answer"));
        let reply = c
            .complete(&user("hi"), &[spec("f")], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.tool_calls[0].arguments, r#"{"a":1}"#);
        let body = fake.last_request().unwrap().body;
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({ "include_usage": true }));
        let reply = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.content.as_deref(), Some("streamed answer"));
        assert!(reply.usage.prompt_tokens.is_some());
        // An event stream that was not asked for is read too.
        c.settings.stream = false;
        fake.push(Reply::Sse(vec![
            json!({ "choices": [{ "delta": { "content": "forced" } }] }),
        ]));
        let reply = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.content.as_deref(), Some("forced"));
    }

    #[tokio::test]
    async fn timeouts_and_cancellation() {
        let fake = FakeModel::start().await.unwrap();
        fake.set_default(Reply::Hang);
        let mut c = client(&fake, 1);
        c.transport = Transport::Tcp(
            reqwest::Client::builder()
                .timeout(Duration::from_millis(200))
                .build()
                .unwrap(),
        );
        c.settings.timeout = Duration::from_millis(200);
        let err = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ModelError::Timeout { attempts: 2, .. }),
            "{err:?}"
        );

        let cancel = CancellationToken::new();
        let slow = client(&fake, 0);
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            canceller.cancel();
        });
        let err = slow.complete(&user("hi"), &[], &cancel).await.unwrap_err();
        assert!(matches!(err, ModelError::Cancelled), "{err:?}");
    }

    /// Relays connections on a Unix socket in `dir` to `to` (the fake model's TCP port), as the
    /// host's proxy socket would; returns the socket path and a connection counter.
    fn unix_relay(
        dir: &Path,
        to: std::net::SocketAddr,
    ) -> (PathBuf, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let path = dir.join("model.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut unix, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut tcp = tokio::net::TcpStream::connect(to).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                });
            }
        });
        (path, accepted)
    }

    fn socket_client(socket: &Path, retries: u32, timeout: Duration) -> ModelClient {
        ModelClient::new(ModelSettings {
            // The host name is never resolved: the socket is the connection.
            base_url: "http://clawbox-proxy/v1".to_owned(),
            api_key: "cbx-session".to_owned(),
            socket: Some(socket.to_path_buf()),
            model: "test-model".to_owned(),
            timeout,
            retries,
            backoff: Duration::from_millis(5),
            params: Map::new(),
            tool_call_content: ToolCallContent::Empty,
            stream: false,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_socket_transport_shares_parsing_and_retries() {
        let fake = FakeModel::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (socket, accepted) = unix_relay(dir.path(), fake.addr());
        fake.push(Reply::Status(500, "boom".to_owned()));
        fake.push(Reply::Json(quirks::untyped_tool_call(&ToolCall::with_id(
            "call_u",
            "f",
            json!({ "a": 1 }),
        ))));
        let c = socket_client(&socket, 2, Duration::from_secs(5));
        let reply = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(reply.tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(reply.attempts, 2);
        assert_eq!(fake.request_count(), 2);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        let request = fake.last_request().unwrap();
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer cbx-session"));
        assert_eq!(request.header("host"), Some("clawbox-proxy"));
        assert_eq!(request.body["model"], "test-model");

        fake.set_default(Reply::Status(400, "bad request".to_owned()));
        let err = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.user_message(),
            "The model service refused the request: HTTP 400 bad request"
        );
    }

    #[tokio::test]
    async fn the_socket_transport_times_out_and_reports_a_missing_socket() {
        let fake = FakeModel::start().await.unwrap();
        fake.set_default(Reply::Hang);
        let dir = tempfile::tempdir().unwrap();
        let (socket, _) = unix_relay(dir.path(), fake.addr());
        let err = socket_client(&socket, 1, Duration::from_millis(200))
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ModelError::Timeout { attempts: 2, .. }),
            "{err:?}"
        );

        let missing = dir.path().join("absent.sock");
        let err = socket_client(&missing, 0, Duration::from_secs(1))
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        let message = err.user_message();
        assert!(
            message.starts_with("The model service could not be reached:")
                && message.contains("absent.sock"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = ModelClient::new(ModelSettings {
            base_url: format!("http://{addr}/v1"),
            api_key: String::new(),
            socket: None,
            model: "m".to_owned(),
            timeout: Duration::from_secs(2),
            retries: 1,
            backoff: Duration::from_millis(1),
            params: Map::new(),
            tool_call_content: ToolCallContent::Empty,
            stream: false,
        })
        .unwrap();
        let err = c
            .complete(&user("hi"), &[], &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            err.user_message()
                .starts_with("The model service could not be reached:"),
            "{err}"
        );
    }
}
