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
/// makes sure the top level is an object schema, as the function-calling API requires.
pub fn clean_schema(schema: &Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    schema.remove("$schema");
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
        let mut message = json!({ "role": "assistant", "content": self.content });
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
}

/// Chat-completions client for one model.
#[derive(Debug, Clone)]
pub struct ModelClient {
    transport: Transport,
    url: String,
    settings: ModelSettings,
}

#[derive(Debug, Clone)]
enum Transport {
    Tcp(reqwest::Client),
    Unix(PathBuf),
}

/// What came back from the server, whatever the transport.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
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
        })
    }

    /// The request body for `messages` (system prompt included) and `tools`.
    pub fn request_body(&self, messages: &[Value], tools: &[ToolSpec]) -> Value {
        let mut body = json!({
            "model": self.settings.model,
            "messages": messages,
            "stream": false,
        });
        if !tools.is_empty() {
            body["tools"] = tools.iter().map(ToolSpec::to_json).collect();
        }
        body
    }

    /// Runs one step: sends the request, retrying 429, 5xx, timeouts, connection errors and
    /// malformed bodies with exponential backoff (or the server's `Retry-After`, capped).
    pub async fn complete(
        &self,
        messages: &[Value],
        tools: &[ToolSpec],
        cancel: &CancellationToken,
    ) -> Result<ModelReply, ModelError> {
        let body = self.request_body(messages, tools);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Err(ModelError::Cancelled),
                outcome = self.attempt(&body) => outcome,
            };
            let failure = match outcome {
                Ok(reply) => return Ok(ModelReply { attempts, ..reply }),
                Err(failure) => failure,
            };
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

    async fn attempt(&self, body: &Value) -> Result<ModelReply, AttemptError> {
        let Answer {
            status,
            headers,
            body: bytes,
        } = match &self.transport {
            Transport::Tcp(http) => self.send_tcp(http, body).await?,
            Transport::Unix(socket) => self.send_unix(socket, body).await?,
        };
        let retry_after = retry_after(&headers);
        if !status.is_success() {
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Err(AttemptError {
                retryable,
                retry_after,
                kind: AttemptKind::Status(status.as_u16(), error_detail(&bytes)),
            });
        }
        parse_response(&bytes).map_err(|Malformed(detail)| AttemptError {
            retryable: true,
            retry_after: None,
            kind: AttemptKind::Malformed(detail),
        })
    }

    async fn send_tcp(&self, http: &reqwest::Client, body: &Value) -> Result<Answer, AttemptError> {
        let mut request = http.post(&self.url).json(body);
        if !self.settings.api_key.is_empty() {
            request = request.bearer_auth(&self.settings.api_key);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The same request over the Unix socket, within the same per-attempt timeout.
    async fn send_unix(&self, socket: &Path, body: &Value) -> Result<Answer, AttemptError> {
        let failed = |kind| AttemptError {
            retryable: true,
            retry_after: None,
            kind,
        };
        let body = serde_json::to_vec(body)
            .map_err(|e| failed(AttemptKind::Unreachable(format!("cannot encode: {e}"))))?;
        let exchange = unix_exchange(socket, &self.url, &self.settings.api_key, body);
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(detail)) => Err(failed(AttemptKind::Unreachable(detail))),
            Err(_elapsed) => Err(failed(AttemptKind::Timeout)),
        }
    }
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
    let _driver = AbortOnDrop(tokio::spawn(async move {
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
    let body = body
        .collect()
        .await
        .map_err(|e| error_chain(&e))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
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
            "The model service refused the request: HTTP 400 context length exceeded"
        );
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
