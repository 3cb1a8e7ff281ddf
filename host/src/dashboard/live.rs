//! The live parts of the dashboard, as server-sent events: the overview's host and session
//! table (event `reset`, the whole fragment again after every change), a session's story
//! (`reset` with the whole timeline when the stream opens, then `append` with what is new),
//! and the web chat's draft and open questions (`reset`, woken by the web channel).
//! Both are woken by the supervisor's per-session change announcements — the same ones
//! `clawbox logs -f` follows — with a slow re-read as the safety net, and both end when the
//! host stops, so a shutdown never waits for an open browser tab.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Dash;
use super::pages;
use crate::report::logs::LogReader;

/// Re-read even without an announcement (a change the supervisor did not see).
const SAFETY_POLL: Duration = Duration::from_secs(2);
/// Announcements arriving this close together are rendered once.
const COALESCE: Duration = Duration::from_millis(250);

/// Waits for the next reason to re-read: an announcement (of `session`, or of any session when
/// `None`) or the safety tick. `false` when the stream should end.
async fn next_change(
    changes: &mut broadcast::Receiver<String>,
    safety: &mut tokio::time::Interval,
    session: Option<&str>,
    cancel: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            _ = safety.tick() => return true,
            change = changes.recv() => match change {
                Ok(id) if session.is_some_and(|s| s != id) => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    tokio::select! {
                        () = cancel.cancelled() => return false,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                    // Everything announced meanwhile is covered by the read that follows.
                    while changes.try_recv().is_ok() {}
                    return true;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
            },
        }
    }
}

fn interval() -> tokio::time::Interval {
    let mut safety =
        tokio::time::interval_at(tokio::time::Instant::now() + SAFETY_POLL, SAFETY_POLL);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    safety
}

pub async fn overview(State(dash): State<Dash>) -> Response {
    struct S {
        dash: Dash,
        changes: broadcast::Receiver<String>,
        safety: tokio::time::Interval,
        first: bool,
        last: String,
    }
    let state = S {
        changes: dash.ctx.supervisor.changes(),
        dash,
        safety: interval(),
        first: true,
        last: String::new(),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if !s.first {
                let cancel = s.dash.cancel.clone();
                if !next_change(&mut s.changes, &mut s.safety, None, &cancel).await {
                    return None;
                }
            }
            s.first = false;
            let html = match pages::status(&s.dash.ctx).await {
                Ok(report) => pages::overview_live(&report),
                Err(e) => format!(
                    "<p class=\"error\">{}</p>",
                    super::html::esc(&e.to_string())
                ),
            };
            // Ages change every second; the table only when something happened. Sending only
            // changed fragments keeps an idle tab quiet apart from the safety tick.
            if html == s.last {
                continue;
            }
            s.last.clone_from(&html);
            let event = Event::default().event("reset").data(html);
            return Some((Ok::<_, Infallible>(event), s));
        }
    });
    sse(stream)
}

pub async fn story(State(dash): State<Dash>, Path(session): Path<String>) -> Response {
    struct S {
        dash: Dash,
        changes: broadcast::Receiver<String>,
        safety: tokio::time::Interval,
        reader: Option<LogReader>,
        session: String,
        /// The web chat's session: its replies' files are links.
        web: bool,
    }
    // Subscribed before the first read, so nothing written meanwhile is missed.
    let changes = dash.ctx.supervisor.changes();
    let (reader, entries) = match pages::read_story(&dash.ctx, session).await {
        Ok(read) => read,
        Err(e) => {
            return (axum::http::StatusCode::NOT_FOUND, e.to_string()).into_response();
        }
    };
    let web = match super::chat::is_web_session(&dash, reader.session_id()).await {
        Ok(web) => web,
        Err(e) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let first = Event::default().event("reset").data(pages::story_entries(
        &entries,
        web.then_some(reader.session_id()),
    ));
    let state = S {
        web,
        session: reader.session_id().to_owned(),
        reader: Some(reader),
        changes,
        dash,
        safety: interval(),
    };
    let rest = futures::stream::unfold(state, |mut s| async move {
        loop {
            let cancel = s.dash.cancel.clone();
            if !next_change(&mut s.changes, &mut s.safety, Some(&s.session), &cancel).await {
                return None;
            }
            let reader = s.reader.take()?;
            let Ok((reader, entries)) = pages::poll(reader).await else {
                // The mailbox went away (or cannot be read): the story ends here; the browser
                // reconnects and is told why.
                return None;
            };
            s.reader = Some(reader);
            if entries.is_empty() {
                continue;
            }
            let web = s.web.then_some(s.session.as_str());
            let event = Event::default()
                .event("append")
                .data(pages::story_entries(&entries, web));
            return Some((Ok::<_, Infallible>(event), s));
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::once(async move { Ok(first) }), rest);
    sse(stream)
}

/// The web chat's live part (`chat::live_fragment`: open questions, the draft being written),
/// as `reset` events: at once, then after every change the web channel announces (a draft grew
/// or went, a question was asked or closed), with the slow re-read as the safety net.
pub async fn chat(State(dash): State<Dash>) -> Response {
    struct S {
        dash: Dash,
        changes: tokio::sync::watch::Receiver<u64>,
        safety: tokio::time::Interval,
        first: bool,
        last: Option<String>,
    }
    let state = S {
        changes: dash.ctx.channels.web.changes(),
        dash,
        safety: interval(),
        first: true,
        last: None,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if !s.first {
                tokio::select! {
                    () = s.dash.cancel.cancelled() => return None,
                    _ = s.safety.tick() => {}
                    changed = s.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
            s.first = false;
            let html = match super::chat::live_fragment(&s.dash).await {
                Ok(html) => html,
                Err(e) => format!(
                    "<p class=\"error\">{}</p>",
                    super::html::esc(&e.to_string())
                ),
            };
            if s.last.as_deref() == Some(html.as_str()) {
                continue;
            }
            s.last = Some(html.clone());
            let event = Event::default().event("reset").data(html);
            return Some((Ok::<_, Infallible>(event), s));
        }
    });
    sse(stream)
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
