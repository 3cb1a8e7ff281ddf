//! The web chat: the dashboard's owner talks to the default agent from the browser, as the
//! terminal does. It is a chat of its own (`web` / `owner`, created at its first use by
//! `db::bootstrap::ensure_web_chat`) with its own identity (`web:owner`, owner of the default
//! agent) and destination (`web`), so its conversation is a session apart from the terminal's.
//! Messages go through the router like every channel's. Replies are shown from the session's
//! mailbox through the same timeline and live stream as the session's story; the channel
//! registry only records them as delivered (`channels/mod.rs`).
//!
//! Besides the timeline the page has a live part (`/events/chat`, [`live_fragment`]): the draft
//! of the reply being written (`channels::web`), and the agent's open questions as buttons. A
//! button answers through `session::questions::answer`, exactly as a Telegram button does, and
//! only questions asked in this chat can be answered here. Files go both ways: the user's
//! uploads (multipart, at most [`MAX_UPLOAD_FILES`] of `TELEGRAM_MAX_FILE_MB` each) reach the
//! agent's inbox as attachments the way Telegram's do, and the files the agent attached to a
//! reply in this chat are downloads ([`file`]), never pages.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, RequestExt};
use futures::future::BoxFuture;
use mailbox::{OutboundReader, SessionPaths};

use super::Dash;
use super::html::{Tab, esc, hidden, page, url_segment};
use super::pages;
use crate::HostError;
use crate::db::bootstrap::{DEFAULT_AGENT, WEB_CHAT, WEB_USER, WEB_USER_NAME};
use crate::db::{self, random_id};
use crate::session::inbound_files::{self, FetchError, FileSource, IncomingFile};
use crate::session::outbox::{self, Attachment};
use crate::session::outlet::attachment_names;
use crate::session::questions::{self, Pressed, Question};
use crate::session::router::{InboundEvent, Routed};

/// Longest message the chat form takes (bytes); the terminal's lines are bounded alike by
/// what a person types.
pub const MAX_CHAT_BYTES: usize = 32 * 1024;
/// Files one message from the browser may carry.
pub const MAX_UPLOAD_FILES: usize = 10;

/// The largest body `POST /chat` reads: the files at their cap, the text and the form's
/// framing. Anything longer is cut off by the server before it is stored.
pub fn max_body_bytes(max_file_bytes: u64) -> usize {
    let files = max_file_bytes.saturating_mul(MAX_UPLOAD_FILES as u64);
    usize::try_from(files)
        .unwrap_or(usize::MAX)
        .saturating_add(MAX_CHAT_BYTES + 64 * 1024)
}

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

/// Whether `session` is one of the web chat's: only those link and serve their files here.
pub async fn is_web_session(dash: &Dash, session: &str) -> Result<bool, HostError> {
    let id = session.to_owned();
    let found = dash.ctx.db.call(move |conn| db::session(conn, &id)).await?;
    Ok(found.is_some_and(|s| s.messaging_group_id == WEB_CHAT))
}

const FORM: &str = "<form method=\"post\" action=\"/chat\" class=\"chat\" \
enctype=\"multipart/form-data\">\
<textarea name=\"text\" rows=\"3\" maxlength=\"32768\" \
placeholder=\"Write to the agent…\" autofocus></textarea>\
<input type=\"file\" name=\"file\" multiple aria-label=\"Attach files\"><button>Send</button></form>";

/// The chat's live part: open questions as buttons, then the draft being written.
pub async fn live_fragment(dash: &Dash) -> Result<String, HostError> {
    let route = web_route();
    let open = dash
        .ctx
        .db
        .call(move |conn| questions::open_in_chat(conn, &route))
        .await?;
    let mut out = String::new();
    for q in &open {
        out.push_str(&question_card(q));
    }
    if let Some(session) = current_session(dash).await?
        && let Some(draft) = dash.ctx.channels.web.draft_of(&session)
    {
        out.push_str(&format!(
            "<div class=\"draft\"><p class=\"muted\">{} is writing…</p><div class=\"text\">{}</div></div>",
            esc(&draft.agent_name),
            esc(&draft.text)
        ));
    }
    Ok(out)
}

fn web_route() -> mailbox::Route {
    mailbox::Route {
        channel_type: "web".into(),
        platform_id: "owner".into(),
        thread_id: None,
    }
}

/// A pending question: its text and one button per option, each its own form.
fn question_card(q: &Question) -> String {
    let mut buttons = String::new();
    for (i, choice) in q.options.iter().enumerate() {
        buttons.push_str(&format!(
            "<form method=\"post\" action=\"/chat/questions/{}/{i}\" data-once>\
<button>{}</button></form>",
            url_segment(&q.id),
            esc(&choice.label)
        ));
    }
    format!(
        "<section class=\"question\"><p><strong>{}</strong></p><p class=\"text\">{}</p>\
<div class=\"options\">{buttons}</div><p class=\"muted\">Open until \
<time datetime=\"{}\">{}</time></p></section>",
        esc(&q.title),
        esc(&q.question),
        q.expires_at.to_rfc3339(),
        q.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

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
                    pages::story_entries(&entries, Some(reader.session_id()))
                ));
            }
            None => out.push_str(
                "<p class=\"empty\">No conversation yet: what you send starts one with the default agent.</p>",
            ),
        }
        out.push_str(&format!(
            "<div class=\"live\" data-sse=\"/events/chat\" data-follow>{}</div>",
            live_fragment(dash).await?
        ));
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

/// Files uploaded with one message, kept under `DATA_DIR/web-uploads/<random>/` until the
/// router has copied them into the inboxes of the agents that take the message (then the
/// folder is removed).
struct Spool {
    dir: PathBuf,
}

impl Spool {
    fn path(&self, source: &str) -> Option<PathBuf> {
        // Sources are the spool's own numbers; anything else names no file of it.
        (!source.is_empty() && source.bytes().all(|b| b.is_ascii_digit()))
            .then(|| self.dir.join(source))
    }

    async fn remove(self) {
        let dir = self.dir;
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        if let Ok(Err(e)) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("web chat: cannot remove uploaded files: {e}");
        }
    }
}

impl FileSource for Spool {
    fn fetch<'a>(
        &'a self,
        file: &'a IncomingFile,
        dest: &'a FsPath,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<u64, FetchError>> {
        Box::pin(async move {
            let Some(from) = self.path(&file.source) else {
                return Err(FetchError::Failed("no such upload".into()));
            };
            let dest = dest.to_path_buf();
            let limit_mb = max_bytes / (1024 * 1024);
            tokio::task::spawn_blocking(move || {
                let failed = |e: std::io::Error| FetchError::Failed(e.to_string());
                let mut src = std::fs::File::open(&from).map_err(failed)?;
                if src.metadata().map_err(failed)?.len() > max_bytes {
                    return Err(FetchError::TooLarge { limit_mb });
                }
                let mut out = inbound_files::create_download(&dest).map_err(failed)?;
                let n = std::io::copy(&mut src, &mut out).map_err(failed)?;
                out.sync_all().map_err(failed)?;
                Ok(n)
            })
            .await
            .map_err(|e| FetchError::Failed(e.to_string()))?
        })
    }
}

/// What the browser sent: the text and the uploaded files, or why it is refused.
struct Message {
    text: String,
    files: Vec<IncomingFile>,
}

/// Reads a multipart message into `spool`; `Err` is the refusal the page shows (nothing is
/// sent then).
async fn read_multipart(
    mut form: Multipart,
    spool: &Spool,
    max_file_bytes: u64,
) -> Result<Message, (StatusCode, String)> {
    use tokio::io::AsyncWriteExt;
    let bad = |e: &dyn std::fmt::Display| {
        (
            StatusCode::BAD_REQUEST,
            format!("The form could not be read ({e}); nothing was sent."),
        )
    };
    let too_large = |what: &str, limit: String| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is larger than {limit}; nothing was sent."),
        )
    };
    let io = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("The upload could not be stored ({e}); nothing was sent."),
        )
    };
    let mut message = Message {
        text: String::new(),
        files: Vec::new(),
    };
    while let Some(mut field) = form.next_field().await.map_err(|e| bad(&e))? {
        match field.name() {
            Some("text") => {
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| bad(&e))? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_CHAT_BYTES {
                        return Err(too_large("The message", format!("{MAX_CHAT_BYTES} bytes")));
                    }
                }
                message.text = String::from_utf8(text).map_err(|e| bad(&e))?;
            }
            Some("file") => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let mime = field.content_type().map(str::to_owned);
                let source = message.files.len().to_string();
                let path = spool.dir.join(&source);
                let mut out = tokio::fs::File::create(&path).await.map_err(io)?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(|e| bad(&e))? {
                    size += chunk.len() as u64;
                    if size > max_file_bytes {
                        return Err(too_large(
                            &format!("The file {name:?}"),
                            format!("the {} MB limit", max_file_bytes / (1024 * 1024)),
                        ));
                    }
                    out.write_all(&chunk).await.map_err(io)?;
                }
                out.flush().await.map_err(io)?;
                // A file input left empty still sends a part: no name, no bytes.
                if name.is_empty() && size == 0 {
                    continue;
                }
                if message.files.len() >= MAX_UPLOAD_FILES {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "A message may carry at most {MAX_UPLOAD_FILES} files; nothing was sent."
                        ),
                    ));
                }
                message.files.push(IncomingFile {
                    kind: "document".into(),
                    name,
                    mime,
                    size: Some(size),
                    source,
                });
            }
            // Fields the form does not have are ignored, like a browser extension's additions.
            _ => {}
        }
    }
    Ok(message)
}

/// `POST /chat`: routes the message (an urlencoded form, or multipart with files) like any
/// channel's, then shows the conversation again.
pub async fn send(State(dash): State<Dash>, request: Request) -> Response {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let max_file_bytes = dash.ctx.config.telegram_max_file_bytes;
    let spool = Spool {
        dir: dash
            .ctx
            .config
            .data_dir
            .join("web-uploads")
            .join(random_id(16)),
    };
    let read = if multipart {
        match request.extract::<Multipart, _>().await {
            Ok(form) => match tokio::fs::create_dir_all(&spool.dir).await {
                Ok(()) => read_multipart(form, &spool, max_file_bytes).await,
                Err(e) => Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("The upload could not be stored ({e}); nothing was sent."),
                )),
            },
            Err(e) => Err((e.status(), e.body_text())),
        }
    } else {
        // Read with the text's own bound (URL-encoding triples a byte at most), not the
        // route's, which leaves room for files: a form is held in memory whole.
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, MAX_CHAT_BYTES * 3 + 1024).await {
            Ok(bytes) => {
                let request = Request::from_parts(parts, Body::from(bytes));
                match Form::<ChatForm>::from_request(request, &dash).await {
                    Ok(Form(form)) => Ok(Message {
                        text: form.text,
                        files: Vec::new(),
                    }),
                    Err(e) => Err((e.status(), e.body_text())),
                }
            }
            Err(_) => Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("A message may have at most {MAX_CHAT_BYTES} bytes; nothing was sent."),
            )),
        }
    };
    let response = match read {
        Ok(message) => route(&dash, message, &spool, max_file_bytes).await,
        Err(refusal) => render(&dash, Some(refusal)).await,
    };
    spool.remove().await;
    response
}

async fn route(dash: &Dash, message: Message, spool: &Spool, max_file_bytes: u64) -> Response {
    if message.text.trim().is_empty() && message.files.is_empty() {
        let refusal = (StatusCode::BAD_REQUEST, "Write something first.".to_owned());
        return render(dash, Some(refusal)).await;
    }
    if message.text.len() > MAX_CHAT_BYTES {
        let refusal = (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("A message may have at most {MAX_CHAT_BYTES} bytes; nothing was sent."),
        );
        return render(dash, Some(refusal)).await;
    }
    if let Err(e) = dash.ctx.db.call(db::bootstrap::ensure_web_chat).await {
        let refusal = (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        return render(dash, Some(refusal)).await;
    }
    let event = InboundEvent {
        channel_type: "web".into(),
        platform_id: "owner".into(),
        message_id: format!("web-{}", random_id(16)),
        sender_id: WEB_USER.into(),
        sender_name: Some("you".into()),
        text: message.text,
        files: message.files,
        ..InboundEvent::default()
    };
    let routed = match dash
        .ctx
        .router
        .route_with(event, spool, max_file_bytes)
        .await
    {
        Ok(routed) => routed,
        Err(e) => {
            return render(
                dash,
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
                return render(dash, Some((StatusCode::OK, text))).await;
            }
            Routed::Accepted { .. } | Routed::Answered { .. } => {}
            // The web chat's user owns the agent: nothing waits for an approval there.
            Routed::AwaitingApproval { .. } => {}
            Routed::Refused { reason, notice, .. } => refusal = Some(notice.unwrap_or(reason)),
        }
    }
    let reason = refusal.unwrap_or_else(|| "no agent accepted the message".into());
    render(dash, Some((StatusCode::CONFLICT, reason))).await
}

/// `POST /chat/questions/{id}/{option}`: a click on an option, answered as a Telegram button
/// press is; a second click, or one on a question that closed meanwhile, changes nothing and
/// says why.
pub async fn answer(
    State(dash): State<Dash>,
    Path((id, option)): Path<(String, String)>,
) -> Response {
    let unknown = (
        StatusCode::NOT_FOUND,
        "This question is not known here; nothing was answered.".to_owned(),
    );
    let Ok(index) = option.parse::<usize>() else {
        return render(&dash, Some(unknown)).await;
    };
    // Only questions shown in this chat: the dashboard's owner owns the default agent, and
    // must not answer from here what the agent asked someone on Telegram.
    let qid = id.clone();
    let asked_here = dash
        .ctx
        .db
        .call(move |conn| questions::get(conn, &qid))
        .await
        .map(|q| q.is_some_and(|q| q.route == web_route()));
    match asked_here {
        Ok(true) => {}
        Ok(false) => return render(&dash, Some(unknown)).await,
        Err(e) => {
            let failure = (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            return render(&dash, Some(failure)).await;
        }
    }
    let pressed = questions::answer(
        &dash.ctx.supervisor,
        &id,
        index,
        WEB_USER,
        Some(WEB_USER_NAME),
    )
    .await;
    let refusal = match pressed {
        Ok(Pressed::Answered(_)) => return Redirect::to("/chat").into_response(),
        Ok(Pressed::Unknown | Pressed::NoSuchOption { .. }) => unknown,
        Ok(Pressed::Closed(q)) if q.status == "expired" => (
            StatusCode::CONFLICT,
            "This question has expired; nothing was answered.".to_owned(),
        ),
        Ok(Pressed::Closed(q)) => (
            StatusCode::CONFLICT,
            format!(
                "This question was answered already ({}); nothing changed.",
                q.outcome_text().unwrap_or_default()
            ),
        ),
        Ok(Pressed::NotAllowed { asker }) => (
            StatusCode::FORBIDDEN,
            format!("Only {asker} or an owner or admin of the agent can answer this."),
        ),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    render(&dash, Some(refusal)).await
}

/// Streams an opened attachment into a response body, a chunk at a time.
struct ToBody(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ToBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download closed"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Content-Disposition` for `name`: always a download, the name made one safe component,
/// given plainly (ASCII) and exactly (RFC 8187).
pub fn disposition(name: &str) -> String {
    // Characters that reorder or hide text go too: `invoice\u{202E}fdp.exe` would be saved
    // looking like `invoiceexe.pdf`.
    let visible: String = name
        .chars()
        .map(|c| if hidden(c) { '_' } else { c })
        .collect();
    let safe = inbound_files::safe_name(&visible, "file");
    let plain: String = safe
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{plain}\"; filename*=UTF-8''{}",
        url_segment(&safe)
    )
}

/// The `index`-th file of reply `seq` in `session`, opened — if the session is the web chat's
/// and the reply was addressed to it.
async fn open_file(
    dash: &Dash,
    session: String,
    seq: i64,
    index: usize,
) -> Result<Option<Attachment>, HostError> {
    let found = dash
        .ctx
        .db
        .call(move |conn| db::session(conn, &session))
        .await?;
    let Some(session) = found.filter(|s| s.messaging_group_id == WEB_CHAT) else {
        return Ok(None);
    };
    let sessions_dir = dash.ctx.config.sessions_dir();
    tokio::task::spawn_blocking(move || {
        let Ok(paths) =
            SessionPaths::for_session(&sessions_dir, &session.agent_group_id, &session.id)
        else {
            return Ok(None);
        };
        let Ok(reader) = OutboundReader::open(&paths.outbound_db()) else {
            return Ok(None);
        };
        let Some(Ok(msg)) = reader.read_message(seq).map_err(HostError::from)? else {
            return Ok(None);
        };
        if msg.route.channel_type != "web" || msg.route.platform_id != "owner" {
            return Ok(None);
        }
        let Some(name) = attachment_names(&msg).into_iter().nth(index) else {
            return Ok(None);
        };
        match outbox::open_attachment(&paths.outbound_dir, &msg.id, &name) {
            Ok(file) => Ok(Some(file)),
            Err(e) => {
                tracing::warn!(out_seq = seq, "web chat: a file is not served: {e}");
                Ok(None)
            }
        }
    })
    .await
    .map_err(|e| HostError::Task(e.to_string()))?
}

/// `GET /chat/files/{session}/{seq}/{index}`: a file the agent attached to a reply in the web
/// chat, as a download (`application/octet-stream`, `attachment`), never shown inline.
pub async fn file(
    State(dash): State<Dash>,
    Path((session, seq, index)): Path<(String, String, String)>,
) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "No such file in the web chat.",
        )
            .into_response()
    };
    let (Ok(seq), Ok(index)) = (seq.parse::<i64>(), index.parse::<usize>()) else {
        return not_found();
    };
    let file = match open_file(&dash, session, seq, index).await {
        Ok(Some(file)) => file,
        Ok(None) => return not_found(),
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(/*chunks in flight*/ 4);
    let (size, name) = (file.size, file.name.clone());
    tokio::task::spawn_blocking(move || {
        let failed = tx.clone();
        if let Err(e) = file.copy_to(&mut ToBody(tx)) {
            // The body ends with an error, so the browser does not keep a cut file as whole.
            let _ = failed.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&disposition(&name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_carry_a_safe_name() {
        for (name, shown) in [
            (
                "report.pdf",
                "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf",
            ),
            (
                "../../etc/passwd",
                "attachment; filename=\"_.._etc_passwd\"; filename*=UTF-8''_.._etc_passwd",
            ),
            (
                "a\";b\r\nSet-Cookie: x.html",
                "attachment; filename=\"a__b__Set-Cookie_ x.html\"; \
                 filename*=UTF-8''a_%3Bb__Set-Cookie_%20x.html",
            ),
            (
                "résumé\u{202E}fdp.exe",
                "attachment; filename=\"r_sum__fdp.exe\"; \
                 filename*=UTF-8''r%C3%A9sum%C3%A9_fdp.exe",
            ),
            ("", "attachment; filename=\"file\"; filename*=UTF-8''file"),
        ] {
            assert_eq!(disposition(name), shown, "{name:?}");
        }
    }
}
