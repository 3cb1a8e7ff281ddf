//! The web chat: the dashboard's owner talks to the default agent from the browser, as the
//! terminal does. It is a chat of its own (`web` / `owner`, created at its first use by
//! `db::bootstrap::ensure_web_chat`) with its own identity (`web:owner`, owner of the default
//! agent) and destination (`web`), so its conversation is a session apart from the terminal's.
//! Messages go through the router like every channel's. Replies are shown from the session's
//! mailbox through the same timeline and live stream as the session's story; the channel
//! registry only records them as delivered (`channels/mod.rs`).

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Dash;
use super::html::{Tab, esc, page, url_segment};
use super::pages;
use crate::HostError;
use crate::db::bootstrap::{DEFAULT_AGENT, WEB_CHAT, WEB_USER};
use crate::db::{self, random_id};
use crate::session::router::{InboundEvent, Routed};

/// Longest message the chat form takes (bytes); the terminal's lines are bounded alike by
/// what a person types.
pub const MAX_CHAT_BYTES: usize = 32 * 1024;

#[derive(serde::Deserialize)]
pub struct ChatForm {
    text: String,
}

/// The web chat's current session with the default agent, if it has one.
async fn current_session(dash: &Dash) -> Result<Option<String>, HostError> {
    let sessions = dash
        .ctx
        .db
        .call(|conn| db::sessions_of_chat(conn, WEB_CHAT))
        .await?;
    Ok(sessions
        .into_iter()
        .filter(|s| s.agent_group_id == DEFAULT_AGENT)
        .max_by_key(|s| s.last_activity)
        .map(|s| s.id))
}

const FORM: &str = "<form method=\"post\" action=\"/chat\" class=\"chat\">\
<textarea name=\"text\" rows=\"3\" required maxlength=\"32768\" \
placeholder=\"Write to the agent…\" autofocus></textarea><button>Send</button></form>";

async fn render(dash: &Dash, notice: Option<(StatusCode, String)>) -> Response {
    let body = async {
        let mut out = String::new();
        let (status, text) = notice.unwrap_or((StatusCode::OK, String::new()));
        if !text.is_empty() {
            let class = if status.is_success() { "notice" } else { "error" };
            out.push_str(&format!("<p class=\"{class} text\">{}</p>", esc(&text)));
        }
        match current_session(dash).await? {
            Some(session) => {
                let (reader, entries) = pages::read_story(&dash.ctx, session).await?;
                out.push_str(&format!(
                    "<ol class=\"story\" data-sse=\"/events/sessions/{}\" data-follow>{}</ol>",
                    url_segment(reader.session_id()),
                    pages::story_entries(&entries)
                ));
            }
            None => out.push_str(
                "<p class=\"empty\">No conversation yet: what you send starts one with the default agent.</p>",
            ),
        }
        out.push_str(FORM);
        Ok::<_, HostError>((status, out))
    }
    .await;
    match body {
        Ok((status, body)) => (status, Html(page(Tab::Chat, "Chat", &body))).into_response(),
        Err(e) => {
            let body = format!("<p class=\"error\">{}</p>", esc(&e.to_string()));
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(page(Tab::Chat, "Chat", &body)),
            )
                .into_response()
        }
    }
}

pub async fn show(State(dash): State<Dash>) -> Response {
    render(&dash, None).await
}

/// `POST /chat`: routes the message like any channel's, then shows the conversation again.
pub async fn send(State(dash): State<Dash>, Form(form): Form<ChatForm>) -> Response {
    if form.text.trim().is_empty() {
        let refusal = (StatusCode::BAD_REQUEST, "Write something first.".to_owned());
        return render(&dash, Some(refusal)).await;
    }
    if form.text.len() > MAX_CHAT_BYTES {
        let refusal = (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("A message may have at most {MAX_CHAT_BYTES} bytes; nothing was sent."),
        );
        return render(&dash, Some(refusal)).await;
    }
    if let Err(e) = dash.ctx.db.call(db::bootstrap::ensure_web_chat).await {
        let refusal = (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        return render(&dash, Some(refusal)).await;
    }
    let event = InboundEvent {
        channel_type: "web".into(),
        platform_id: "owner".into(),
        message_id: format!("web-{}", random_id(16)),
        sender_id: WEB_USER.into(),
        sender_name: Some("you".into()),
        text: form.text,
        ..InboundEvent::default()
    };
    let routed = match dash.ctx.router.route(event).await {
        Ok(routed) => routed,
        Err(e) => {
            return render(
                &dash,
                Some((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            )
            .await;
        }
    };
    let mut refusal = None;
    for r in routed {
        match r {
            Routed::Accepted { agent_id, .. } if agent_id == DEFAULT_AGENT => {
                // After a POST, a GET: reloading the page does not send the message again.
                return Redirect::to("/chat").into_response();
            }
            // A command the host answers itself (`/status`): nothing of it is in the mailbox.
            Routed::Answered { agent_id, text } if agent_id == DEFAULT_AGENT => {
                return render(&dash, Some((StatusCode::OK, text))).await;
            }
            Routed::Accepted { .. } | Routed::Answered { .. } => {}
            // The web chat's user owns the agent: nothing waits for an approval there.
            Routed::AwaitingApproval { .. } => {}
            Routed::Refused { reason, notice, .. } => refusal = Some(notice.unwrap_or(reason)),
        }
    }
    let reason = refusal.unwrap_or_else(|| "no agent accepted the message".into());
    render(&dash, Some((StatusCode::CONFLICT, reason))).await
}
