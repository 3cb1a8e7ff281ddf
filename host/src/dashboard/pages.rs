//! The dashboard's pages, rendered on the server from the same reports the admin socket
//! answers with (`report::inspect`, `report::logs`, the task operations of `admin::tasks`):
//! the overview and a session's story also have a live part that `live.rs` streams. Every
//! value an agent or a user could have written goes through [`esc`].

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};

use super::Dash;
use super::html::{Tab, esc, page, url_segment};
use crate::HostError;
use crate::admin::HostCtx;
use crate::admin::protocol::{Event, Request};
use crate::report::inspect::{self, ContainerState, Doing, StatusReport};
use crate::report::logs::{LogEntry, LogEvent, LogReader};

/// Refused messages the dropped page lists.
const DROPPED_SHOWN: u32 = 200;
/// Days the token chart covers, today included.
const CHART_DAYS: i64 = 14;

/// A page, or the error page that says why it could not be built.
fn respond(tab: Tab, title: &str, body: Result<String, HostError>) -> Response {
    match body {
        Ok(body) => Html(page(tab, title, &body)).into_response(),
        Err(e) => {
            let status = match e {
                HostError::Inspect(inspect::InspectError::UnknownSession(_))
                | HostError::Inspect(inspect::InspectError::AmbiguousSession { .. })
                | HostError::UnknownSession(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = format!("<p class=\"error\">{}</p>", esc(&e.to_string()));
            (status, Html(page(tab, title, &body))).into_response()
        }
    }
}

fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h {}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn session_link(id: &str, label: &str) -> String {
    format!(
        "<a href=\"/sessions/{}\">{}</a>",
        url_segment(id),
        esc(label)
    )
}

// ---------------------------------------------------------------------------------------------
// Overview

pub async fn status(ctx: &HostCtx) -> Result<StatusReport, HostError> {
    let facts = ctx.facts();
    let now = Utc::now();
    ctx.read_only(move |conn, config| inspect::status(conn, config, Some(&facts), now))
        .await
}

pub async fn overview(State(dash): State<Dash>) -> Response {
    let body = status(&dash.ctx).await.map(|report| {
        format!(
            "<section id=\"live\" data-sse=\"/events/overview\" aria-live=\"polite\">{}</section>",
            overview_live(&report)
        )
    });
    respond(Tab::Overview, "Overview", body)
}

fn container(state: &ContainerState) -> String {
    match state {
        ContainerState::Running { uptime_s, .. } => format!("running {}", duration(*uptime_s)),
        ContainerState::WaitingForSlot => "waiting for a slot".into(),
        ContainerState::Retrying { at } => format!("retry at {}", at.format("%H:%M:%S")),
        ContainerState::WaitingForChannel => "waiting for its chat".into(),
        ContainerState::Stopped => "stopped".into(),
        ContainerState::Recorded { recorded } => format!("recorded {recorded}"),
    }
}

fn doing(doing: Option<&Doing>) -> String {
    let Some(d) = doing else {
        return "—".into();
    };
    let what = match d.activity {
        mailbox::Activity::Starting => "starting".to_owned(),
        mailbox::Activity::Idle => "idle".to_owned(),
        mailbox::Activity::Model => format!("model step {}", d.step),
        mailbox::Activity::Tool => format!("tool {}", d.tool.as_deref().unwrap_or("?")),
    };
    let stale = if d.heartbeat_stale {
        " <span class=\"bad\">heartbeat stale</span>"
    } else {
        ""
    };
    format!("{}{stale}", esc(&what))
}

/// The live part of the overview: host health and one row per live session.
pub fn overview_live(report: &StatusReport) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    let host = match &report.host {
        Some(h) => format!("up {}", duration(h.uptime_s)),
        None => "not running".into(),
    };
    let isolation = if report.isolated {
        "isolated"
    } else {
        "<span class=\"bad\">NOT isolated</span>"
    };
    let cap = report
        .containers
        .cap
        .map_or_else(|| "no cap".to_owned(), |c| c.to_string());
    let _ = write!(
        out,
        "<div><dt>Host</dt><dd>{host}</dd></div>\
<div><dt>Runtime</dt><dd>{} ({isolation})</dd></div>\
<div><dt>Runners</dt><dd>{} running / {cap}</dd></div>\
<div><dt>Tokens today</dt><dd>{}</dd></div>",
        esc(&report.runtime),
        report.containers.running,
        report.tokens_today
    );
    if let Some(h) = &report.host {
        let _ = write!(
            out,
            "<div><dt>Model proxy</dt><dd>{} live tokens</dd></div>",
            h.model_proxy.live_tokens
        );
    }
    out.push_str("</dl>");
    if report.sessions.is_empty() {
        out.push_str("<p class=\"empty\">No live sessions.</p>");
        return out;
    }
    out.push_str(
        "<table class=\"sessions\"><thead><tr><th>Agent</th><th>Chat</th><th>Runner</th>\
<th>Doing</th><th>Waiting in</th><th>Waiting out</th><th>Tokens today</th><th>Last error</th>\
</tr></thead><tbody>",
    );
    for s in &report.sessions {
        let chat = match &s.thread {
            Some(t) => format!("{} / {t}", s.chat),
            None => s.chat.clone(),
        };
        let error = s.last_error.as_ref().map_or_else(String::new, |e| {
            format!("<span class=\"bad\">{}</span>", esc(&e.text))
        });
        let failed = if s.failed_deliveries > 0 {
            format!(" <span class=\"bad\">{} failed</span>", s.failed_deliveries)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr data-session=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}{failed}</td><td>{}</td><td>{error}</td></tr>",
            esc(&s.id),
            session_link(&s.id, &s.agent_name),
            esc(&chat),
            esc(&container(&s.container)),
            doing(s.doing.as_ref()),
            s.pending_in,
            s.undelivered_out,
            s.tokens_today.total(),
        );
    }
    out.push_str("</tbody></table>");
    out
}

// ---------------------------------------------------------------------------------------------
// Sessions and a session's story

pub async fn sessions(State(dash): State<Dash>) -> Response {
    let facts = dash.ctx.facts();
    let now = Utc::now();
    let body = dash
        .ctx
        .read_only(move |conn, config| inspect::sessions(conn, config, Some(&facts), now))
        .await
        .map(|list| {
            if list.sessions.is_empty() {
                return "<p class=\"empty\">No sessions yet.</p>".to_owned();
            }
            let mut out = String::from(
                "<table><thead><tr><th>Agent</th><th>Chat</th><th>Status</th><th>Runner</th>\
<th>Last activity</th><th>In</th><th>Out</th><th>Waiting in</th><th>Failed in</th>\
<th>Waiting out</th><th>Tokens today</th></tr></thead><tbody>",
            );
            for s in &list.sessions {
                let runner = s
                    .container
                    .as_ref()
                    .map_or_else(|| "idle".into(), container);
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    session_link(&s.id, &s.agent_name),
                    esc(&s.chat),
                    esc(&s.status),
                    esc(&runner),
                    ago(now, s.last_activity),
                    s.messages_in,
                    s.messages_out,
                    s.pending_in,
                    s.failed_in,
                    s.undelivered_out,
                    s.tokens_today
                );
            }
            out.push_str("</tbody></table>");
            out
        });
    respond(Tab::Sessions, "Sessions", body)
}

/// Opens a session's log and reads it whole, on the blocking pool.
pub async fn read_story(
    ctx: &HostCtx,
    session: String,
) -> Result<(LogReader, Vec<LogEntry>), HostError> {
    let reader = ctx
        .read_only(move |conn, config| LogReader::open(conn, config, &session))
        .await?;
    poll(reader).await
}

/// Reads what is new in a log, on the blocking pool.
pub async fn poll(mut reader: LogReader) -> Result<(LogReader, Vec<LogEntry>), HostError> {
    tokio::task::spawn_blocking(move || {
        let entries = reader.poll()?;
        Ok((reader, entries))
    })
    .await
    .map_err(|e| HostError::Task(e.to_string()))?
}

/// What a tool call was asked and answered, for its line in the story (older runners' events
/// carry only the error of a failed call).
fn tool_call_detail(arguments: Option<&str>, result: Option<&str>, error: Option<&str>) -> String {
    let mut lines = Vec::new();
    if let Some(arguments) = arguments.filter(|a| !a.is_empty()) {
        lines.push(format!("arguments: {arguments}"));
    }
    match (result, error) {
        (Some(result), _) => lines.push(format!("result: {result}")),
        (None, Some(error)) => lines.push(error.to_owned()),
        (None, None) => {}
    }
    lines.join("\n")
}

pub async fn story(State(dash): State<Dash>, Path(session): Path<String>) -> Response {
    let body = async {
        let (reader, entries) = read_story(&dash.ctx, session).await?;
        let id = reader.session_id();
        let web = super::chat::is_web_session(&dash, id).await?;
        Ok(format!(
            "<p class=\"muted\">Session <code>{}</code> · following live</p>\
<ol class=\"story\" data-sse=\"/events/sessions/{}\" data-follow>{}</ol>",
            esc(id),
            url_segment(id),
            story_entries(&entries, web.then_some(id))
        ))
    }
    .await;
    respond(Tab::Sessions, "Session story", body)
}

/// Timeline items, one per log entry. `web_session`: the session is the web chat's, whose
/// replies' files are downloads there (`/chat/files/…`); other sessions' files are only named.
pub fn story_entries(entries: &[LogEntry], web_session: Option<&str>) -> String {
    let mut out = String::new();
    for entry in entries {
        let (kind, summary, detail) = describe(&entry.event);
        let mut links = String::new();
        if let (
            Some(session),
            LogEvent::Reply {
                seq,
                files,
                to: None,
                ..
            },
        ) = (web_session, &entry.event)
            && !files.is_empty()
        {
            links.push_str("<ul class=\"files\">");
            for (i, name) in files.iter().enumerate() {
                let _ = write!(
                    links,
                    "<li><a href=\"/chat/files/{}/{seq}/{i}\" download>{}</a></li>",
                    url_segment(session),
                    esc(name)
                );
            }
            links.push_str("</ul>");
        }
        let detail = if detail.is_empty() {
            String::new()
        } else if detail.len() > 240 || detail.contains('\n') {
            format!(
                "<details><summary>show</summary><div class=\"text\">{}</div></details>",
                esc(&detail)
            )
        } else {
            format!("<div class=\"text\">{}</div>", esc(&detail))
        };
        let _ = write!(
            out,
            "<li class=\"{kind}\" id=\"{}\"><time datetime=\"{}\">{}</time> \
<span class=\"what\">{}</span>{detail}{links}</li>",
            esc(&entry.id),
            entry.at.to_rfc3339(),
            entry.at.format("%Y-%m-%d %H:%M:%S"),
            esc(&summary),
        );
    }
    out
}

/// CSS class, one-line summary and the text (possibly long) of one event. Plain text: the
/// caller escapes.
fn describe(event: &LogEvent) -> (&'static str, String, String) {
    match event {
        LogEvent::MessageIn {
            seq,
            kind,
            sender,
            text,
            trigger,
        } => {
            let from = sender.as_deref().unwrap_or("?");
            let context = if *trigger { "" } else { " (context only)" };
            (
                "in",
                format!("#{seq} {kind} from {from}{context}"),
                text.clone(),
            )
        }
        LogEvent::Claimed { seq, attempt } => (
            "step",
            format!("#{seq} taken into a turn (attempt {attempt})"),
            String::new(),
        ),
        LogEvent::RunnerStarted { pid, model } => (
            "runner",
            format!("runner started (pid {pid}, model {model})"),
            String::new(),
        ),
        LogEvent::RunnerReady { tools, problems } => (
            "runner",
            format!("runner ready with {tools} tools"),
            problems.join("\n"),
        ),
        LogEvent::ModelStep {
            turn,
            step,
            latency_ms,
            attempts,
            prompt_tokens,
            completion_tokens,
            tool_calls,
            finish_reason,
        } => {
            let tokens = match (prompt_tokens, completion_tokens) {
                (Some(p), Some(c)) => format!(", {p}+{c} tokens"),
                _ => String::new(),
            };
            let retries = if *attempts > 1 {
                format!(", {attempts} attempts")
            } else {
                String::new()
            };
            (
                "step",
                format!(
                    "model step {turn}.{step}: {latency_ms} ms{tokens}{retries}, {tool_calls} tool calls, {}",
                    finish_reason.as_deref().unwrap_or("no finish reason")
                ),
                String::new(),
            )
        }
        LogEvent::ModelFailed {
            turn,
            step,
            latency_ms,
            error,
        } => (
            "fail",
            format!("model step {turn}.{step} failed after {latency_ms} ms"),
            error.clone(),
        ),
        LogEvent::Compacted {
            turn,
            replaced,
            kept,
            tokens_before,
            tokens_after,
            archive,
        } => (
            "step",
            format!(
                "compacted{}: {replaced} entries summarised, {kept} kept, {tokens_before} → \
                 {tokens_after} tokens",
                turn.map_or_else(|| " (/compact)".to_owned(), |t| format!(" in turn {t}")),
            ),
            format!("archive: {archive}"),
        ),
        LogEvent::ToolCall {
            tool,
            duration_ms,
            ok,
            error,
            call_id,
            arguments,
            result,
            ..
        } => (
            if *ok { "tool" } else { "fail" },
            format!(
                "tool {tool} ({call_id}) {} in {duration_ms} ms",
                if *ok { "ok" } else { "failed" }
            ),
            tool_call_detail(arguments.as_deref(), result.as_deref(), error.as_deref()),
        ),
        LogEvent::Reply {
            seq,
            in_reply_to,
            text,
            files,
            to,
        } => {
            let mut summary = format!("#{seq} reply");
            if let Some(r) = in_reply_to {
                let _ = write!(summary, " to #{r}");
            }
            if let Some(to) = to {
                let _ = write!(summary, " → {to}");
            }
            if !files.is_empty() {
                let _ = write!(summary, " with {}", files.join(", "));
            }
            ("out", summary, text.clone())
        }
        LogEvent::Edit { seq, edit_of, text } => (
            "out",
            format!(
                "#{seq} edit of #{}",
                edit_of.map_or_else(|| "?".into(), |s| s.to_string())
            ),
            text.clone(),
        ),
        LogEvent::Reaction {
            seq,
            reaction_to,
            emoji,
        } => (
            "out",
            format!(
                "#{seq} reaction {emoji} to #{}",
                reaction_to.map_or_else(|| "?".into(), |s| s.to_string())
            ),
            String::new(),
        ),
        LogEvent::Request { seq, op } => (
            "tool",
            format!("#{seq} request to the host: {op}"),
            String::new(),
        ),
        LogEvent::Completed { seq } => ("ok", format!("#{seq} completed"), String::new()),
        LogEvent::Failed { seq, error } => (
            "fail",
            format!("#{seq} failed"),
            error.clone().unwrap_or_default(),
        ),
        LogEvent::Requeued {
            seq,
            tries,
            retry_at,
            reason,
        } => (
            "fail",
            format!(
                "#{seq} re-queued (try {tries}), next attempt {}",
                retry_at.format("%H:%M:%S")
            ),
            reason.clone(),
        ),
        LogEvent::Delivered { seq, attempts } => (
            "ok",
            format!("#{seq} delivered ({attempts} attempts)"),
            String::new(),
        ),
        LogEvent::DeliveryFailed {
            seq,
            error,
            gave_up,
        } => (
            "fail",
            format!(
                "#{seq} delivery failed{}",
                if *gave_up { ", given up" } else { "" }
            ),
            error.clone(),
        ),
        LogEvent::RunnerExited {
            runner,
            exit,
            reason,
            unexpected,
        } => (
            if *unexpected { "fail" } else { "runner" },
            format!("runner {runner} exited: {exit}"),
            reason.clone().unwrap_or_default(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Agents

pub async fn agents(State(dash): State<Dash>) -> Response {
    let facts = dash.ctx.facts();
    let body = dash
        .ctx
        .read_only(move |conn, config| inspect::agents(conn, &config.default_model, Some(&facts)))
        .await
        .map(|list| {
            let mut out = String::new();
            for row in &list.agents {
                let a = &row.agent;
                let model = a.model.as_deref().unwrap_or(&list.default_model);
                let _ = write!(
                    out,
                    "<section class=\"agent\"><h2>{} <code>{}</code></h2>\
<p>model {} · folder <code>groups/{}</code> · {} sessions, {} live</p>",
                    esc(&a.name),
                    esc(&a.id),
                    esc(model),
                    esc(&a.folder),
                    row.sessions,
                    row.live_sessions
                );
                if a.wirings.is_empty() {
                    out.push_str("<p class=\"empty\">Not wired to any chat.</p>");
                } else {
                    out.push_str(
                        "<table><thead><tr><th>Chat</th><th>Engage</th><th>Sticky</th>\
<th>Sessions</th><th>Unknown senders</th><th>Ignored messages</th></tr></thead><tbody>",
                    );
                    for w in &a.wirings {
                        let engage = match &w.engage_pattern {
                            Some(p) => format!("{} {p}", w.engage_mode),
                            None => w.engage_mode.clone(),
                        };
                        let _ = write!(
                            out,
                            "<tr><td>{}:{}{}</td><td>{}</td><td>{}s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            esc(&w.channel_type),
                            esc(&w.platform_id),
                            if w.is_group { " (group)" } else { "" },
                            esc(&engage),
                            w.sticky_window_s,
                            esc(&w.session_mode),
                            esc(&w.unknown_sender_policy),
                            esc(&w.ignored_messages)
                        );
                    }
                    out.push_str("</tbody></table>");
                }
                if !a.destinations.is_empty() {
                    out.push_str("<p>Destinations: ");
                    let names: Vec<String> = a
                        .destinations
                        .iter()
                        .map(|d| {
                            format!(
                                "<code>{}</code> → {}:{}",
                                esc(&d.name),
                                esc(&d.channel_type),
                                esc(&d.platform_id)
                            )
                        })
                        .collect();
                    out.push_str(&names.join(", "));
                    out.push_str("</p>");
                }
                if !a.roles.is_empty() {
                    let roles: Vec<String> = a
                        .roles
                        .iter()
                        .map(|r| format!("{} ({})", esc(&r.user_id), esc(&r.role)))
                        .collect();
                    let _ = write!(out, "<p>Roles: {}</p>", roles.join(", "));
                }
                out.push_str("</section>");
            }
            out
        });
    respond(Tab::Agents, "Agents", body)
}

// ---------------------------------------------------------------------------------------------
// Tasks

async fn task_request(dash: &Dash, request: Request) -> Result<Event, HostError> {
    match crate::admin::tasks::execute(&dash.ctx.db, &dash.ctx.scheduler, request).await {
        Some(result) => result,
        None => Err(HostError::Admin("not a task request".into())),
    }
}

fn task_buttons(id: &str, status: mailbox::tasks::TaskStatus) -> String {
    use mailbox::tasks::TaskStatus;
    let ops: &[(&str, &str)] = match status {
        TaskStatus::Active => &[
            ("pause", "Pause"),
            ("run-now", "Run now"),
            ("cancel", "Cancel"),
        ],
        TaskStatus::Paused => &[
            ("resume", "Resume"),
            ("run-now", "Run now"),
            ("cancel", "Cancel"),
        ],
        TaskStatus::Cancelled | TaskStatus::Completed => &[],
    };
    let mut out = String::new();
    for (op, label) in ops {
        let confirm = if *op == "cancel" {
            " data-confirm=\"Cancel this task for good?\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/tasks/{}/{op}\"{confirm}><button>{label}</button></form>",
            url_segment(id)
        );
    }
    out
}

pub async fn tasks(State(dash): State<Dash>) -> Response {
    let body = task_request(&dash, Request::TaskList { all: true })
        .await
        .and_then(|event| match event {
            Event::Tasks { tasks } => Ok(tasks),
            other => Err(HostError::Admin(format!("unexpected answer {other:?}"))),
        })
        .map(|tasks| {
            if tasks.is_empty() {
                return "<p class=\"empty\">No scheduled tasks.</p>".to_owned();
            }
            let mut out = String::from(
                "<table><thead><tr><th>Task</th><th>Agent</th><th>Status</th><th>Schedule</th>\
<th>Next run</th><th>Last run</th><th>Runs</th><th>Prompt</th><th></th></tr></thead><tbody>",
            );
            for t in &tasks {
                let schedule = match (&t.cron, &t.run_at) {
                    (Some(cron), _) => format!("{cron} ({})", t.timezone),
                    (None, Some(at)) => format!("once at {}", at.local),
                    (None, None) => "—".into(),
                };
                let last = match (&t.last_run, t.last_outcome) {
                    (Some(at), Some(outcome)) => format!("{} ({outcome})", at.local),
                    (Some(at), None) => at.local.clone(),
                    (None, _) => "—".into(),
                };
                let _ = write!(
                    out,
                    "<tr><td><a href=\"/tasks/{}\"><code>{}</code></a></td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td><td class=\"ops\">{}</td></tr>",
                    url_segment(&t.id),
                    esc(&t.id),
                    esc(&t.agent),
                    t.status,
                    esc(&schedule),
                    esc(&t.next_run.as_ref().map_or_else(|| "—".into(), |n| n.local.clone())),
                    esc(&last),
                    t.run_count,
                    esc(&t.prompt),
                    task_buttons(&t.id, t.status)
                );
            }
            out.push_str("</tbody></table>");
            out
        });
    respond(Tab::Tasks, "Scheduled tasks", body)
}

pub async fn task(State(dash): State<Dash>, Path(id): Path<String>) -> Response {
    let body = task_request(&dash, Request::TaskShow { id })
        .await
        .and_then(|event| match event {
            Event::Task { task, runs } => Ok((task, runs)),
            other => Err(HostError::Admin(format!("unexpected answer {other:?}"))),
        })
        .map(|(t, runs)| {
            let mut out = format!(
                "<dl class=\"facts\"><div><dt>Task</dt><dd><code>{}</code></dd></div>\
<div><dt>Agent</dt><dd>{}</dd></div><div><dt>Status</dt><dd>{}</dd></div>\
<div><dt>Session</dt><dd>{}</dd></div><div><dt>Created by</dt><dd>{}</dd></div></dl>\
<div class=\"ops\">{}</div><h2>Prompt</h2><div class=\"text\">{}</div>",
                esc(&t.id),
                esc(&t.agent),
                t.status,
                session_link(&t.session, &t.session),
                esc(&t.created_by),
                task_buttons(&t.id, t.status),
                esc(&t.prompt)
            );
            if let Some(script) = &t.script {
                let _ = write!(out, "<h2>Script</h2><pre>{}</pre>", esc(script));
            }
            out.push_str("<h2>Runs</h2>");
            if runs.is_empty() {
                out.push_str("<p class=\"empty\">No runs yet.</p>");
            } else {
                out.push_str(
                    "<table><thead><tr><th>Scheduled for</th><th>Fired</th><th>Trigger</th>\
<th>Outcome</th><th>Message</th><th>Detail</th></tr></thead><tbody>",
                );
                for r in &runs {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
                        esc(&r.scheduled_for.local),
                        esc(&r.fired_at),
                        r.trigger.as_str(),
                        r.outcome,
                        r.message.map_or_else(|| "—".into(), |m| format!("#{m}")),
                        esc(r.detail.as_deref().unwrap_or(""))
                    );
                }
                out.push_str("</tbody></table>");
            }
            out
        });
    respond(Tab::Tasks, "Task", body)
}

/// `POST /tasks/{id}/{op}`: pause, resume, cancel or run-now, then back to the list (or the
/// error page).
pub async fn task_op(State(dash): State<Dash>, Path((id, op)): Path<(String, String)>) -> Response {
    let request = match op.as_str() {
        "pause" => Request::TaskPause { id },
        "resume" => Request::TaskResume { id },
        "cancel" => Request::TaskCancel { id },
        "run-now" => Request::TaskRunNow { id },
        _ => return (StatusCode::NOT_FOUND, "no such task operation").into_response(),
    };
    match task_request(&dash, request).await {
        Ok(Event::Error { message }) => {
            let body = format!("<p class=\"error\">{}</p>", esc(&message));
            (StatusCode::CONFLICT, Html(page(Tab::Tasks, "Task", &body))).into_response()
        }
        Ok(_) => Redirect::to("/tasks").into_response(),
        Err(e) => {
            let status = match e {
                HostError::Tasks(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = format!("<p class=\"error\">{}</p>", esc(&e.to_string()));
            (status, Html(page(Tab::Tasks, "Task", &body))).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dropped messages

pub async fn dropped(State(dash): State<Dash>) -> Response {
    let body = dash
        .ctx
        .read_only(|conn, _| inspect::dropped(conn, DROPPED_SHOWN, true))
        .await
        .map(|list| {
            if list.dropped.is_empty() {
                return "<p class=\"empty\">No refused messages.</p>".to_owned();
            }
            let mut out = format!(
                "<p class=\"muted\">{} refused messages on record, newest first.</p>\
<table><thead><tr><th>Time</th><th>Chat</th><th>Sender</th><th>Agent</th><th>Reason</th>\
<th>To wire the chat</th></tr></thead><tbody>",
                list.total
            );
            for d in &list.dropped {
                let sender = match (&d.sender_name, &d.sender_id) {
                    (Some(n), Some(id)) => format!("{n} ({id})"),
                    (None, Some(id)) => id.clone(),
                    (Some(n), None) => n.clone(),
                    (None, None) => "—".into(),
                };
                let command = d
                    .wire_command
                    .as_deref()
                    .map_or_else(String::new, |c| format!("<code class=\"copy\">{}</code>", esc(c)));
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{command}</td></tr>",
                    d.at.format("%Y-%m-%d %H:%M:%S"),
                    esc(&d.chat),
                    esc(&sender),
                    esc(d.agent.as_deref().unwrap_or("—")),
                    esc(&d.reason)
                );
            }
            out.push_str("</tbody></table>");
            out
        });
    respond(Tab::Dropped, "Dropped messages", body)
}

// ---------------------------------------------------------------------------------------------
// Token usage

pub async fn usage(State(dash): State<Dash>) -> Response {
    let body = dash
        .ctx
        .read_only(|conn, config| {
            let today = Utc::now().with_timezone(&config.timezone).date_naive();
            let first = today - chrono::Duration::days(CHART_DAYS - 1);
            let rows =
                crate::db::token_usage_by_agent_day(conn, &first.format("%Y-%m-%d").to_string())?;
            let days: Vec<String> = (0..CHART_DAYS)
                .map(|i| {
                    (first + chrono::Duration::days(i))
                        .format("%Y-%m-%d")
                        .to_string()
                })
                .collect();
            Ok(usage_chart(&days, &rows))
        })
        .await;
    respond(Tab::Usage, "Tokens per agent and day", body)
}

/// Colours of the chart's agents, in order (the palette repeats beyond it).
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

/// A stacked bar chart (inline SVG) of tokens per day, one colour per agent, with the table
/// of the same figures under it.
pub fn usage_chart(days: &[String], rows: &[(String, String, u64)]) -> String {
    let mut agents: Vec<&str> = rows.iter().map(|(a, _, _)| a.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    if agents.is_empty() {
        return "<p class=\"empty\">No tokens used in the last 14 days.</p>".into();
    }
    let tokens = |agent: &str, day: &str| {
        rows.iter()
            .find(|(a, d, _)| a == agent && d == day)
            .map_or(0, |(_, _, n)| *n)
    };
    let totals: Vec<u64> = days
        .iter()
        .map(|d| agents.iter().map(|a| tokens(a, d)).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let (width, height, bar, gap, top) = (720u64, 240u64, 40u64, 10u64, 20u64);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"Tokens per agent and day\">",
        height + 40
    );
    for (i, day) in days.iter().enumerate() {
        let x = 10 + i as u64 * (bar + gap);
        let mut y = top + height;
        for (j, agent) in agents.iter().enumerate() {
            let n = tokens(agent, day);
            if n == 0 {
                continue;
            }
            let h = (n * height / max).max(1);
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"{}\"><title>{} {}: {n}</title></rect>",
                PALETTE[j % PALETTE.len()],
                esc(agent),
                esc(day)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            x + bar / 2,
            top + height + 16,
            esc(day.get(5..).unwrap_or(day))
        );
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (j, agent) in agents.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}</li>",
            PALETTE[j % PALETTE.len()],
            esc(agent)
        );
    }
    svg.push_str("</ul><table><thead><tr><th>Day</th>");
    for agent in &agents {
        let _ = write!(svg, "<th>{}</th>", esc(agent));
    }
    svg.push_str("<th>Total</th></tr></thead><tbody>");
    for (day, total) in days.iter().zip(&totals) {
        let _ = write!(svg, "<tr><td>{}</td>", esc(day));
        for agent in &agents {
            let _ = write!(svg, "<td>{}</td>", tokens(agent, day));
        }
        let _ = write!(svg, "<td>{total}</td></tr>");
    }
    svg.push_str("</tbody></table>");
    svg
}

// ---------------------------------------------------------------------------------------------
// Login and assets

#[derive(serde::Deserialize)]
pub struct Login {
    code: Option<String>,
}

/// `GET /login?code=…`: spends a one-time code from `clawbox dashboard` and signs the browser
/// in with the cookie; the redirect drops the code from the address bar.
pub async fn login(
    State(dash): State<Dash>,
    axum::extract::Query(login): axum::extract::Query<Login>,
) -> Response {
    let config = std::sync::Arc::clone(&dash.ctx.config);
    let code = login.code.unwrap_or_default();
    let redeemed =
        tokio::task::spawn_blocking(move || super::access::redeem_login_code(&config, &code))
            .await
            .unwrap_or(false);
    if !redeemed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link is unknown, used or expired. Run `clawbox dashboard` for a new one.",
        )
            .into_response();
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&dash.access.cookie_header()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

pub const STYLE: &str = include_str!("assets/style.css");
pub const SCRIPT: &str = include_str!("assets/app.js");

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_stacks_agents_per_day() {
        let days = vec!["2026-03-01".to_owned(), "2026-03-02".to_owned()];
        let rows = vec![
            ("a".to_owned(), "2026-03-01".to_owned(), 100),
            ("b".to_owned(), "2026-03-01".to_owned(), 300),
            ("<b>".to_owned(), "2026-03-02".to_owned(), 50),
        ];
        let chart = usage_chart(&days, &rows);
        assert_eq!(chart.matches("<rect x=").count(), 3, "{chart}");
        assert!(chart.contains("<td>400</td>"), "{chart}");
        assert!(
            chart.contains("&lt;b&gt;") && !chart.contains("<b>"),
            "{chart}"
        );
        assert!(usage_chart(&days, &[]).contains("No tokens"));
    }
}
