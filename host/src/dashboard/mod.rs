//! The web dashboard: the operator's surface in a browser, served by the host itself at
//! `DASHBOARD_ADDR` (default `127.0.0.1:7878`, `off` to disable). It shows what the admin
//! socket shows — built from the same reports (`report::inspect`, `report::logs`), the same
//! task operations (`admin::tasks`) and the same [`HostCtx`] — so there is no second source of
//! truth. Pages are rendered on the server (`pages.rs`); a few lines of plain JavaScript
//! (`assets/app.js`, embedded in the binary like the stylesheet) keep the live parts current
//! over server-sent events (`live.rs`). The web chat (`chat.rs`) talks to the default agent,
//! with streamed drafts, files both ways and questions as buttons. Who may look is
//! `access.rs`'s; escaping is `html.rs`'s.
//! docs/dashboard.md records the design.

pub mod access;
mod chat;
pub mod html;
mod live;
pub mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::admin::HostCtx;
use crate::config::Config;
use access::Access;

/// What every handler gets.
#[derive(Clone)]
pub struct Dash {
    pub ctx: HostCtx,
    pub access: Access,
    /// The host's shutdown: ends the live streams.
    pub cancel: CancellationToken,
}

/// Binds `DASHBOARD_ADDR` (`None` when the dashboard is off) and records the address it got in
/// `DATA_DIR/dashboard.addr`, for `clawbox dashboard`.
pub async fn bind(config: &Config) -> Result<Option<TcpListener>, HostError> {
    let Some(addr) = config.dashboard_addr else {
        remove_addr_file(config);
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        HostError::Config(format!(
            "DASHBOARD_ADDR={addr}: cannot listen there ({e}); choose another address or set DASHBOARD_ADDR=off"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| HostError::Config(format!("DASHBOARD_ADDR={addr}: {e}")))?;
    let path = config.dashboard_addr_path();
    std::fs::write(&path, format!("{bound}\n")).map_err(|e| HostError::io("write", &path, e))?;
    Ok(Some(listener))
}

/// Forgets the recorded address (the host stopped, or runs without a dashboard).
pub fn remove_addr_file(config: &Config) {
    // Absent already is fine: nothing to forget.
    let _ = std::fs::remove_file(config.dashboard_addr_path());
}

/// The dashboard's routes: everything but `/login` and the embedded assets needs the cookie.
pub fn router(dash: Dash) -> Router {
    let gated = Router::new()
        .route("/", get(pages::overview))
        .route(
            "/chat",
            get(chat::show)
                .post(chat::send)
                .layer(DefaultBodyLimit::max(chat::max_body_bytes(
                    dash.ctx.config.telegram_max_file_bytes,
                ))),
        )
        .route("/chat/questions/{id}/{option}", post(chat::answer))
        .route("/chat/files/{session}/{seq}/{index}", get(chat::file))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{id}", get(pages::story))
        .route("/agents", get(pages::agents))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{id}", get(pages::task))
        .route("/tasks/{id}/{op}", post(pages::task_op))
        .route("/dropped", get(pages::dropped))
        .route("/usage", get(pages::usage))
        .route("/events/overview", get(live::overview))
        .route("/events/sessions/{id}", get(live::story))
        .route("/events/chat", get(live::chat))
        .route_layer(middleware::from_fn_with_state(
            dash.access.clone(),
            access::require,
        ));
    Router::new()
        .route("/login", get(pages::login))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/app.js", get(pages::script))
        .merge(gated)
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(access::headers))
        .with_state(dash)
}

/// Serves the dashboard until `cancel` fires.
pub async fn serve(listener: TcpListener, ctx: HostCtx, access: Access, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    let app = router(Dash {
        ctx,
        access,
        cancel: cancel.clone(),
    });
    tracing::info!(addr = ?addr, "dashboard listening (`clawbox dashboard` prints a login link)");
    let shutdown = cancel.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("dashboard stopped: {e}");
    }
}

/// `clawbox dashboard`: a one-time login link for the running host's dashboard (or, when no
/// host runs, for the one the next start will serve).
pub fn login_link(config: &Config) -> Result<String, HostError> {
    let Some(configured) = config.dashboard_addr else {
        return Err(HostError::Config(
            "the dashboard is off (DASHBOARD_ADDR=off)".into(),
        ));
    };
    let recorded = std::fs::read_to_string(config.dashboard_addr_path())
        .ok()
        .and_then(|text| text.trim().parse::<SocketAddr>().ok());
    let mut addr = recorded.unwrap_or(configured);
    // A wildcard address is not one a browser can open; on this machine, loopback reaches it.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| HostError::io("create", &config.data_dir, e))?;
    let code = access::new_login_code(config)?;
    Ok(format!("http://{addr}/login?code={code}"))
}
