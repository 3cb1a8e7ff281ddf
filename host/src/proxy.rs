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
//! the account behind the key (files, fine-tunes, batches). The route is checked as whole path
//! segments, each made of plain characters only — no `%` escape, no `.` or `..`, no empty
//! segment — and the upstream URL is built by pushing those segments onto `OPENAI_BASE_URL` and
//! checked to lie under it, so nothing a URL library normalises later can move the request
//! elsewhere (`/v1/models/%2e%2e/files` once reached `/v1/files` with the real key). Only an
//! allow-list of request headers is forwarded ([`FORWARDED_REQUEST_HEADERS`]): an agent cannot
//! pick the organisation or project the key bills, or override the method. Each token gets a
//! request rate ([`RateLimit`], `PROXY_REQUESTS_PER_MINUTE`) and a body size cap
//! (`PROXY_MAX_REQUEST_MB`). Response bodies are streamed through unchanged, SSE included,
//! while a tap on the stream reads the `usage` the server reports.

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

/// Who a token was issued to, and its request allowance.
#[derive(Debug, Clone)]
struct Caller {
    session_id: String,
    agent_id: String,
    rate: Arc<Mutex<RateLimit>>,
}

/// A token bucket: `per_minute` requests a minute on average, bursts up to `per_minute`.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    available: f64,
    updated: std::time::Instant,
}

impl RateLimit {
    pub fn new(per_minute: u32, now: std::time::Instant) -> Self {
        RateLimit {
            per_minute,
            available: f64::from(per_minute),
            updated: now,
        }
    }

    /// Takes one request's worth if there is one; otherwise says how long until there is.
    pub fn take(&mut self, now: std::time::Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.available = (self.available + elapsed * rate).min(f64::from(self.per_minute));
        self.updated = now;
        if self.available >= 1.0 {
            self.available -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.available) / rate))
        }
    }
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
    /// `OPENAI_BASE_URL` parsed: the URL every forwarded request must stay under.
    base: url::Url,
    http: reqwest::Client,
    db: Db,
    budget: Option<u64>,
    /// `PROXY_REQUESTS_PER_MINUTE` per token.
    requests_per_minute: u32,
    /// `PROXY_MAX_REQUEST_MB`, in bytes.
    max_request_bytes: usize,
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

        let mut base = url::Url::parse(&config.openai_base_url)
            .map_err(|e| HostError::Config(format!("OPENAI_BASE_URL is not a URL: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(HostError::Config(
                "OPENAI_BASE_URL must be an http(s) URL such as https://api.openai.com/v1".into(),
            ));
        }
        base.set_query(None);
        base.set_fragment(None);

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
            base,
            authorization,
            http,
            db,
            budget: config.token_budget,
            requests_per_minute: config.proxy_requests_per_minute,
            max_request_bytes: config.proxy_max_request_bytes,
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
                rate: Arc::new(Mutex::new(RateLimit::new(
                    self.inner.requests_per_minute,
                    std::time::Instant::now(),
                ))),
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

/// Characters a route segment (a model id included) may hold. Anything else — `%` above all —
/// is refused rather than decoded: a check on the raw path followed by a URL library that
/// decodes and normalises `%2e%2e` is how `..` once slipped through.
fn segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
}

/// The upstream route (the segments after `/v1`) of a request the proxy forwards, or `None`:
/// inference and model listing only (`models/<id>` may be `models/<org>/<id>`, as some
/// servers name models).
pub fn route(method: &Method, path: &str) -> Option<Vec<String>> {
    let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    if !segments.iter().all(|s| segment_ok(s)) {
        return None;
    }
    let allowed = matches!(
        (method, segments.as_slice()),
        (
            &Method::POST,
            ["chat", "completions"] | ["completions"] | ["embeddings"] | ["responses"],
        ) | (&Method::GET, ["models"] | ["models", _] | ["models", _, _])
    );
    allowed.then(|| segments.into_iter().map(str::to_owned).collect())
}

/// `base` with `segments` pushed as path segments and `query` set, or `None` if the result does
/// not lie under `base` — which [`route`]'s rules already rule out; this is the second fence.
pub fn upstream_url(base: &url::Url, segments: &[String], query: Option<&str>) -> Option<url::Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    url.set_query(query);
    let base_path = base.path().trim_end_matches('/');
    let under = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url
            .path()
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'));
    under.then_some(url)
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

/// The only request headers passed upstream (the real `Authorization` is added). Everything
/// else stays behind: the runner's token, hop-by-hop headers, and headers that would let an
/// agent choose what the key is used for (`OpenAI-Organization`, `OpenAI-Project`,
/// `X-HTTP-Method-Override`, a gateway's own headers). `accept-encoding` is not forwarded either:
/// the tap reads the body, so it stays identity.
const FORWARDED_REQUEST_HEADERS: &[&str] = &["content-type", "accept", "user-agent"];

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

fn filtered(headers: &HeaderMap, keep: impl Fn(&str) -> bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if keep(name.as_str()) {
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

/// The 404 for a route the proxy does not forward.
fn not_forwarded(method: &Method, path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_url",
        &format!(
            "clawbox model proxy: {method} {path} is not forwarded (inference and model listing only)"
        ),
    )
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
    let Some(segments) = route(&parts.method, path) else {
        tracing::warn!(session_id = %caller.session_id, method = %parts.method, path, "model proxy refused a route it does not forward");
        return not_forwarded(&parts.method, path);
    };
    let Some(url) = upstream_url(&proxy.base, &segments, parts.uri.query()) else {
        tracing::warn!(session_id = %caller.session_id, method = %parts.method, path, "model proxy refused a path that leaves OPENAI_BASE_URL");
        return not_forwarded(&parts.method, path);
    };
    let limited = {
        let mut rate = caller.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.take(std::time::Instant::now())
    };
    if let Err(wait) = limited {
        tracing::warn!(session_id = %caller.session_id, per_minute = proxy.requests_per_minute, "model proxy refused a request over the token's rate (PROXY_REQUESTS_PER_MINUTE)");
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            &format!(
                "clawbox model proxy: more than {} requests a minute from this session (PROXY_REQUESTS_PER_MINUTE)",
                proxy.requests_per_minute
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let mut body = match axum::body::to_bytes(body, proxy.max_request_bytes).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(session_id = %caller.session_id, limit = proxy.max_request_bytes, "model proxy refused a request body over PROXY_MAX_REQUEST_MB");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                &format!(
                    "clawbox model proxy: the request body is larger than {} MB (PROXY_MAX_REQUEST_MB): {e}",
                    proxy.max_request_bytes >> 20
                ),
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
    let mut headers = filtered(&parts.headers, |name| {
        FORWARDED_REQUEST_HEADERS.contains(&name)
    });
    if let Some(auth) = &proxy.authorization {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let sent = proxy
        .http
        .request(parts.method.clone(), url)
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
        *headers = filtered(upstream.headers(), |name| {
            !DROPPED_RESPONSE_HEADERS.contains(&name)
        });
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
        let seg = |path: &str| -> Option<Vec<String>> {
            Some(path.split('/').map(str::to_owned).collect())
        };
        let table = [
            (
                Method::POST,
                "/v1/chat/completions",
                seg("chat/completions"),
            ),
            (Method::POST, "/v1/completions", seg("completions")),
            (Method::POST, "/v1/embeddings", seg("embeddings")),
            (Method::POST, "/v1/responses", seg("responses")),
            (Method::GET, "/v1/models", seg("models")),
            (Method::GET, "/v1/models/gpt-4o", seg("models/gpt-4o")),
            (
                Method::GET,
                "/v1/models/llama3.1:8b",
                seg("models/llama3.1:8b"),
            ),
            (
                Method::GET,
                "/v1/models/meta-llama/Llama-3-8B",
                seg("models/meta-llama/Llama-3-8B"),
            ),
            (Method::GET, "/v1/models/", None),
            (Method::GET, "/v1/models/../files", None),
            (Method::GET, "/v1/models/%2e%2e/files", None),
            (Method::GET, "/v1/models/%2E%2E", None),
            (Method::GET, "/v1/models/..%2ffiles", None),
            (Method::GET, "/v1/models/./x", None),
            (Method::GET, "/v1/models//x", None),
            (Method::GET, "/v1//models", None),
            (Method::GET, "/v1/models/a/b/c", None),
            (Method::GET, "/v1/models/a b", None),
            (Method::GET, "/v1/models/a\\b", None),
            (Method::GET, "/v1/chat/completions", None),
            (Method::POST, "/v1/chat/completions/", None),
            (Method::POST, "/v1/files", None),
            (Method::DELETE, "/v1/models/ft-1", None),
            (Method::POST, "/chat/completions", None),
            (Method::POST, "/v2/chat/completions", None),
            (Method::POST, "/v1", None),
        ];
        for (method, path, want) in table {
            assert_eq!(route(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn upstream_urls_stay_under_the_base() {
        let base = url::Url::parse("https://gw.example/tenant/v1").unwrap();
        let segs = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            upstream_url(&base, &segs(&["chat", "completions"]), None)
                .unwrap()
                .as_str(),
            "https://gw.example/tenant/v1/chat/completions"
        );
        assert_eq!(
            upstream_url(&base, &segs(&["models"]), Some("api-version=1"))
                .unwrap()
                .as_str(),
            "https://gw.example/tenant/v1/models?api-version=1"
        );
        let slash = url::Url::parse("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!(
            upstream_url(&slash, &segs(&["models", "x"]), None)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1/models/x"
        );
        // Pushed segments are escaped, never interpreted: even a segment that slipped past
        // `route` cannot climb out.
        for bad in [&["..", "files"][..], &["%2e%2e", "files"], &["a/../../b"]] {
            let url = upstream_url(&base, &segs(bad), None);
            assert!(
                url.as_ref()
                    .is_none_or(|u| u.path().starts_with("/tenant/v1/")),
                "{bad:?} → {url:?}"
            );
        }
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let t0 = std::time::Instant::now();
        let mut rate = RateLimit::new(/*per_minute*/ 2, t0);
        assert_eq!(rate.take(t0), Ok(()));
        assert_eq!(rate.take(t0), Ok(()));
        let wait = rate.take(t0).unwrap_err();
        assert!((29..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(rate.take(t0 + Duration::from_secs(30)), Ok(()));
        assert!(rate.take(t0 + Duration::from_secs(30)).is_err());
        // The bucket never holds more than a minute's worth.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(rate.take(later), Ok(()));
        assert_eq!(rate.take(later), Ok(()));
        assert!(rate.take(later).is_err());
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
