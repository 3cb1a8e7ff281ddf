//! The model proxy: the OpenAI-compatible endpoint every runner talks to, so that the model API
//! key never enters a runner (DESIGN §6). Owns the per-runner session tokens, the forwarding to
//! `OPENAI_BASE_URL` with the real key, token accounting per session and day, and the optional
//! daily budget. When a token is issued and revoked is the supervisor's business (a [`Grant`]
//! lives exactly as long as the runner it was issued for).
//!
//! Two listeners serve the same routes:
//! - the Unix socket `DATA_DIR/model.sock` (mode [`MODEL_SOCKET_MODE`]), which the docker runtime
//!   mounts at [`CONTAINER_MODEL_SOCKET`]: containers reach the proxy with networking off;
//! - TCP `127.0.0.1:<ephemeral>` for the process runtime; the address is written to
//!   `DATA_DIR/proxy.addr` and shown by `clawbox status`.
//!
//! Only a known `Authorization: Bearer <session token>` is forwarded; anything else is a 401.
//! Only the inference routes are forwarded (see [`route`]): a token must not let an agent manage
//! the account behind the key (files, fine-tunes, batches). Response bodies are streamed through
//! unchanged, SSE included, while a tap on the stream reads the `usage` the server reports.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::config::Config;
use crate::db::{self, Db};

/// Mode of `DATA_DIR/model.sock`. Connecting to a Unix socket needs write permission on it, so a
/// container process must run with the host's uid or have the host's gid among its groups (the
/// docker runtime runs containers as the uid:gid that owns the data directory, which is the
/// host's). Nobody else is let in: the session token is the credential, the mode is a second
/// fence. `DATA_DIR` itself stays 0700; a bind mount of the socket does not need to traverse it.
pub const MODEL_SOCKET_MODE: u32 = 0o660;
/// Where the docker runtime mounts `DATA_DIR/model.sock` inside a container.
pub const CONTAINER_MODEL_SOCKET: &str = "/run/clawbox/model.sock";
/// `OPENAI_BASE_URL` of a runner that talks over the socket: only the path matters, the runner
/// connects to `CLAWBOX_MODEL_SOCKET` whatever the host name says.
pub const SOCKET_BASE_URL: &str = "http://clawbox-proxy/v1";
/// Largest request body forwarded (conversation histories with inline images are big).
const MAX_REQUEST_BYTES: usize = 64 << 20;
/// A non-streaming response larger than this is passed through but not scanned for `usage`.
const MAX_SCANNED_BYTES: usize = 16 << 20;
/// An SSE line longer than this is passed through but not scanned.
const MAX_SSE_LINE: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A per-runner credential for the proxy: 256 random bits. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub(crate) fn generate() -> Token {
        // rand's thread RNG is a CSPRNG (ChaCha12) seeded from the OS.
        let bytes: [u8; 32] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token(format!("cbx-{hex}"))
    }

    /// The token text, for the runner's `CLAWBOX_MODEL_TOKEN`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a runtime needs to point one runner at the proxy.
#[derive(Debug, Clone)]
pub struct ModelAccess {
    /// `http://127.0.0.1:<port>/v1`: the proxy over loopback (process runtime).
    pub loopback_url: String,
    /// The runner's `CLAWBOX_MODEL_TOKEN`.
    pub token: Token,
}

/// Who a token was issued to.
#[derive(Debug, Clone)]
struct Caller {
    session_id: String,
    agent_id: String,
}

/// Live tokens. std Mutex: held for a map operation only, never across an await.
#[derive(Default)]
struct Registry(Mutex<HashMap<Token, Caller>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Token, Caller>> {
        // A poisoned map only means a panic elsewhere; its entries are still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, token: &str) -> Option<Caller> {
        self.lock().get(&Token(token.to_owned())).cloned()
    }
}

/// A token issued for one runner; dropping it revokes the token. The supervisor keeps it next
/// to the runner's handle, so every way a runner ends (exit, stop, kill, failed start, host
/// shutdown) revokes its token.
pub struct Grant {
    registry: Arc<Registry>,
    access: ModelAccess,
}

impl Grant {
    pub fn access(&self) -> &ModelAccess {
        &self.access
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.access.token);
    }
}

/// The running proxy; clones share it.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    /// `OPENAI_BASE_URL`, including `/v1`, no trailing slash.
    upstream: String,
    /// `Bearer <OPENAI_API_KEY>`, marked sensitive; `None` sends no `Authorization`.
    authorization: Option<HeaderValue>,
    http: reqwest::Client,
    db: Db,
    budget: Option<u64>,
    /// The zone whose calendar day the budget counts.
    timezone: Tz,
    loopback: SocketAddr,
    socket_path: PathBuf,
}

impl Proxy {
    /// Binds both listeners and serves until `cancel`. Called before any runner can start.
    pub async fn start(
        config: &Config,
        db: Db,
        cancel: CancellationToken,
    ) -> Result<Proxy, HostError> {
        let authorization = match &config.openai_api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    HostError::Config(
                        "OPENAI_API_KEY contains characters that cannot be sent in an HTTP header"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Statuses pass through unchanged, redirects included.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                HostError::Config(format!("cannot build the model proxy's client: {e}"))
            })?;

        let socket_path = config.model_socket_path();
        let unix = bind_socket(&socket_path)?;
        let tcp = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HostError::io("bind the model proxy on", Path::new("127.0.0.1:0"), e))?;
        let loopback = tcp
            .local_addr()
            .map_err(|e| HostError::io("read the address of", Path::new("127.0.0.1:0"), e))?;
        let addr_path = config.proxy_addr_path();
        std::fs::write(&addr_path, format!("{loopback}\n"))
            .map_err(|e| HostError::io("write", &addr_path, e))?;

        let inner = Arc::new(Inner {
            registry: Arc::default(),
            upstream: config.openai_base_url.clone(),
            authorization,
            http,
            db,
            budget: config.token_budget,
            timezone: config.timezone,
            loopback,
            socket_path,
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let shutdown = cancel.clone();
        let unix_app = app.clone();
        tokio::spawn(async move {
            let serving = axum::serve(unix, unix_app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(e) = serving {
                tracing::error!("model proxy (socket) stopped: {e}");
            }
        });
        tokio::spawn(async move {
            let serving = axum::serve(tcp, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = serving {
                tracing::error!("model proxy (loopback) stopped: {e}");
            }
        });
        tracing::info!(
            loopback = %loopback,
            socket = %inner.socket_path.display(),
            upstream = %inner.upstream,
            budget = ?inner.budget,
            "model proxy listening"
        );
        Ok(Proxy { inner })
    }

    /// A fresh token for a runner of `session_id`, valid until the grant is dropped.
    pub fn issue(&self, session_id: &str, agent_id: &str) -> Grant {
        let token = Token::generate();
        self.inner.registry.lock().insert(
            token.clone(),
            Caller {
                session_id: session_id.to_owned(),
                agent_id: agent_id.to_owned(),
            },
        );
        Grant {
            registry: Arc::clone(&self.inner.registry),
            access: ModelAccess {
                loopback_url: format!("http://{}/v1", self.inner.loopback),
                token,
            },
        }
    }

    pub fn loopback(&self) -> SocketAddr {
        self.inner.loopback
    }

    pub fn socket_path(&self) -> &Path {
        &self.inner.socket_path
    }

    /// Tokens currently valid (one per live runner), for status.
    pub fn live_tokens(&self) -> usize {
        self.inner.registry.lock().len()
    }

    pub fn budget(&self) -> Option<u64> {
        self.inner.budget
    }

    /// Removes the socket and address files (host shutdown).
    pub fn remove_files(&self, config: &Config) {
        for path in [config.model_socket_path(), config.proxy_addr_path()] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Binds the socket, replacing whatever a previous host left (the data-directory lock says no
/// other host is using it).
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, HostError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(HostError::io("remove stale socket", path, e)),
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(|e| HostError::io("bind", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODEL_SOCKET_MODE))
        .map_err(|e| HostError::io("chmod", path, e))?;
    Ok(listener)
}

/// The upstream path (after `/v1`) of a request the proxy forwards, or `None`: inference and
/// model listing only.
pub fn route<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix("/v1")?;
    let allowed = match *method {
        Method::POST => matches!(
            rest,
            "/chat/completions" | "/completions" | "/embeddings" | "/responses"
        ),
        Method::GET => {
            rest == "/models"
                || rest
                    .strip_prefix("/models/")
                    .is_some_and(|id| !id.is_empty() && !id.contains(".."))
        }
        _ => false,
    };
    allowed.then_some(rest)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Request headers not passed upstream: hop-by-hop, the runner's credential, the length (the
/// client recomputes it) and `accept-encoding` (the tap reads the body, so it stays identity).
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "content-length",
    "accept-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Response headers not passed back: hop-by-hop only (the body is passed byte for byte, so
/// `content-length` stays true).
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn filtered(headers: &HeaderMap, dropped: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !dropped.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// An OpenAI-style error response.
fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": code },
    });
    (status, Json(body)).into_response()
}

async fn handle(State(proxy): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let presented = bearer(&parts.headers);
    let Some(caller) = presented.and_then(|t| proxy.registry.lookup(t)) else {
        tracing::warn!(
            method = %parts.method,
            path,
            token_presented = presented.is_some(),
            "model proxy refused a request without a valid session token"
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "clawbox model proxy: missing or unknown session token",
        );
    };
    let Some(rest) = route(&parts.method, path) else {
        tracing::warn!(session_id = %caller.session_id, method = %parts.method, path, "model proxy refused a route it does not forward");
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            &format!(
                "clawbox model proxy: {} {path} is not forwarded (inference and model listing only)",
                parts.method
            ),
        );
    };
    let mut body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                &format!("clawbox model proxy: cannot read the request body: {e}"),
            );
        }
    };
    if let Some(budget) = proxy.budget {
        if let Some(refusal) = proxy.check_budget(&caller, budget).await {
            return refusal;
        }
        // Without usage in the stream, a streaming request would escape the budget.
        if let Some(with_usage) = ask_for_stream_usage(&body) {
            body = with_usage;
        }
    }
    let url = match parts.uri.query() {
        Some(query) => format!("{}{rest}?{query}", proxy.upstream),
        None => format!("{}{rest}", proxy.upstream),
    };
    let mut headers = filtered(&parts.headers, DROPPED_REQUEST_HEADERS);
    if let Some(auth) = &proxy.authorization {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let sent = proxy
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(response) => response,
        Err(e) => {
            let detail = error_chain(&e);
            tracing::warn!(session_id = %caller.session_id, path, "model service unreachable: {detail}");
            return error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_unreachable",
                &format!("clawbox model proxy: the model service could not be reached: {detail}"),
            );
        }
    };
    let status = upstream.status();
    tracing::debug!(session_id = %caller.session_id, agent_id = %caller.agent_id, path, %status, "model request forwarded");
    let is_sse = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let tap = match (status.is_success(), is_sse) {
        (false, _) => Tap::Ignore,
        (true, true) => Tap::Sse(SseUsage::default()),
        (true, false) => Tap::Json(Vec::new()),
    };
    let mut meter = Meter {
        proxy: Arc::clone(&proxy),
        session_id: caller.session_id,
        tap,
    };
    let mut response = Response::builder().status(status);
    if let Some(headers) = response.headers_mut() {
        *headers = filtered(upstream.headers(), DROPPED_RESPONSE_HEADERS);
    }
    // The meter lives in the stream: it records when the body is dropped (fully sent, or the
    // runner went away), without buffering anything the runner waits for.
    let stream = upstream.bytes_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            meter.tap.feed(bytes);
        }
        chunk
    });
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "bad_upstream_response",
                &format!("clawbox model proxy: {e}"),
            )
        })
}

impl Inner {
    fn today(&self) -> String {
        chrono::Utc::now()
            .with_timezone(&self.timezone)
            .format("%Y-%m-%d")
            .to_string()
    }

    /// `Some(429)` once the session has used its budget today, `Some(503)` when that cannot be
    /// told (a budget is only worth having if it fails closed).
    async fn check_budget(&self, caller: &Caller, budget: u64) -> Option<Response> {
        let day = self.today();
        let session = caller.session_id.clone();
        let looked_up = {
            let day = day.clone();
            self.db
                .call(move |conn| db::token_usage(conn, &session, &day))
                .await
        };
        match looked_up {
            Ok(usage) if usage.total() >= budget => {
                tracing::warn!(session_id = %caller.session_id, used = usage.total(), budget, "token budget used up; refusing model request");
                Some(error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "insufficient_quota",
                    "token_budget_exceeded",
                    &format!(
                        "clawbox token budget used up: this session used {} of its {budget} tokens for {day} \
                         (TOKEN_BUDGET_PER_SESSION_DAY); it renews at midnight ({})",
                        usage.total(),
                        self.timezone.name()
                    ),
                ))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!(session_id = %caller.session_id, "cannot check the token budget: {e}");
                Some(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "budget_unavailable",
                    "clawbox model proxy: cannot check the token budget right now",
                ))
            }
        }
    }
}

/// A streaming chat request that does not ask for usage, rewritten to ask for it
/// (`stream_options.include_usage`); `None` when nothing needs to change.
fn ask_for_stream_usage(body: &[u8]) -> Option<Bytes> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    if request.get("stream").and_then(Value::as_bool) != Some(true)
        || request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true))
    {
        return None;
    }
    let object = request.as_object_mut()?;
    let options = object.entry("stream_options").or_insert_with(|| json!({}));
    if !options.is_object() {
        *options = json!({});
    }
    options["include_usage"] = Value::Bool(true);
    serde_json::to_vec(&request).ok().map(Bytes::from)
}

/// Token counts of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// The `usage` object of a response or chunk, when it has one; missing or odd counters are 0.
fn usage_of(body: &Value) -> Option<Usage> {
    let usage = body.get("usage").filter(|u| u.is_object())?;
    let count = |name: &str| {
        usage
            .get(name)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            })
            .unwrap_or(0)
    };
    Some(Usage {
        prompt: count("prompt_tokens"),
        completion: count("completion_tokens"),
    })
}

/// Reads usage from a response body as it streams past.
enum Tap {
    /// An error status: nothing to count.
    Ignore,
    /// A JSON body, collected up to [`MAX_SCANNED_BYTES`] and parsed at the end.
    Json(Vec<u8>),
    Sse(SseUsage),
}

impl Tap {
    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Tap::Ignore => {}
            Tap::Json(buf) => {
                if buf.len() + chunk.len() > MAX_SCANNED_BYTES {
                    *self = Tap::Ignore;
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Tap::Sse(sse) => sse.feed(chunk),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Tap::Ignore => None,
            Tap::Json(buf) => serde_json::from_slice::<Value>(buf)
                .ok()
                .as_ref()
                .and_then(usage_of),
            Tap::Sse(sse) => sse.usage,
        }
    }
}

/// Scans `data:` lines of an event stream for the last `usage` (the final chunk carries it when
/// the request set `stream_options.include_usage`; servers that repeat running totals in every
/// chunk are counted once, by the last).
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    /// The current line outgrew [`MAX_SSE_LINE`]; skip to its end.
    skipping: bool,
    pub usage: Option<Usage>,
}

impl SseUsage {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let (part, end) = match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => (&chunk[..at], Some(at + 1)),
                None => (chunk, None),
            };
            if !self.skipping {
                if self.line.len() + part.len() > MAX_SSE_LINE {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            let Some(end) = end else { return };
            if !self.skipping {
                self.scan_line();
            }
            self.line.clear();
            self.skipping = false;
            chunk = &chunk[end..];
        }
    }

    fn scan_line(&mut self) {
        let Some(data) = self.line.strip_prefix(b"data:") else {
            return;
        };
        // Cheap pre-check: most chunks are content deltas without usage.
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Some(usage) = serde_json::from_slice::<Value>(data.trim_ascii())
            .ok()
            .as_ref()
            .and_then(usage_of)
        {
            self.usage = Some(usage);
        }
    }
}

/// Records one forwarded request when its response body is dropped.
struct Meter {
    proxy: Arc<Inner>,
    session_id: String,
    tap: Tap,
}

impl Drop for Meter {
    fn drop(&mut self) {
        let usage = self.tap.usage().unwrap_or_default();
        let session_id = std::mem::take(&mut self.session_id);
        let day = self.proxy.today();
        let db = self.proxy.db.clone();
        // Dropped by the server's connection task, so a runtime is there; the write runs on the
        // blocking pool.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%session_id, "token usage not recorded: no runtime");
            return;
        };
        runtime.spawn(async move {
            let recorded = db
                .call(move |conn| {
                    db::add_token_usage(conn, &session_id, &day, usage.prompt, usage.completion)
                })
                .await;
            if let Err(e) = recorded {
                tracing::warn!("cannot record token usage: {e}");
            }
        });
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message says only "error sending
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn routes_table() {
        let table = [
            (
                Method::POST,
                "/v1/chat/completions",
                Some("/chat/completions"),
            ),
            (Method::POST, "/v1/completions", Some("/completions")),
            (Method::POST, "/v1/embeddings", Some("/embeddings")),
            (Method::GET, "/v1/models", Some("/models")),
            (Method::GET, "/v1/models/gpt-4o", Some("/models/gpt-4o")),
            (Method::GET, "/v1/models/", None),
            (Method::GET, "/v1/models/../files", None),
            (Method::GET, "/v1/chat/completions", None),
            (Method::POST, "/v1/files", None),
            (Method::DELETE, "/v1/models/ft-1", None),
            (Method::POST, "/chat/completions", None),
            (Method::POST, "/v2/chat/completions", None),
        ];
        for (method, path, want) in table {
            assert_eq!(route(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn bearer_table() {
        let table = [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ];
        for (value, want) in table {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), want, "{value:?}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_are_long_random_and_redacted() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), "cbx-".len() + 64);
        assert_eq!(format!("{a:?}"), "Token(<redacted>)");
    }

    #[test]
    fn json_usage_tolerates_odd_counters() {
        let usage = |body: Value| usage_of(&body);
        assert_eq!(
            usage(json!({ "usage": { "prompt_tokens": 7, "completion_tokens": 3 } })),
            Some(Usage {
                prompt: 7,
                completion: 3
            })
        );
        assert_eq!(
            usage(json!({ "usage": { "prompt_tokens": 7.0, "completion_tokens": null } })),
            Some(Usage {
                prompt: 7,
                completion: 0
            })
        );
        assert_eq!(usage(json!({ "usage": null })), None);
        assert_eq!(usage(json!({ "choices": [] })), None);
    }

    #[test]
    fn sse_usage_survives_arbitrary_splits() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5}}\r\n\r\n",
            "data: [DONE]\n\n",
        )
        .as_bytes();
        for split in 1..stream.len() {
            let mut sse = SseUsage::default();
            for piece in stream.chunks(split) {
                sse.feed(piece);
            }
            assert_eq!(
                sse.usage,
                Some(Usage {
                    prompt: 12,
                    completion: 5
                }),
                "chunks of {split}"
            );
        }
        let mut none = SseUsage::default();
        none.feed(b"data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n");
        assert_eq!(none.usage, None);
    }

    #[test]
    fn streaming_requests_are_asked_for_usage() {
        let rewritten = |body: Value| {
            ask_for_stream_usage(body.to_string().as_bytes())
                .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        };
        assert_eq!(rewritten(json!({ "stream": false })), None);
        assert_eq!(
            rewritten(json!({ "stream": true, "stream_options": { "include_usage": true } })),
            None
        );
        assert_eq!(
            rewritten(json!({ "stream": true, "model": "m" })),
            Some(
                json!({ "stream": true, "model": "m", "stream_options": { "include_usage": true } })
            )
        );
        assert_eq!(
            rewritten(json!({ "stream": true, "stream_options": { "x": 1 } })),
            Some(json!({ "stream": true, "stream_options": { "x": 1, "include_usage": true } }))
        );
    }
}
