//! The admin socket server: a Unix socket in `DATA_DIR` (mode 0600 inside a 0700 directory)
//! speaking the line protocol of protocol.rs. Terminals attach to the CLI chat here; the
//! operator commands (`clawbox status`, `sessions`, `agents`, `logs`, `dropped`, `doctor`) ask
//! here, and `clawbox tasks` (handled by `tasks.rs`). The wire format is `protocol.rs`, shared with
//! the clients; what handlers need of the running host is [`HostCtx`] (`ctx.rs`). One task per connection; a reader loop
//! handles requests in order and a writer task serialises everything the connection is sent. A
//! followed log runs in a task of its own, woken by the supervisor's change announcements,
//! until the connection closes.

mod ctx;
pub mod protocol;
pub mod tasks;

pub use ctx::HostCtx;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::admin::protocol::{DEFAULT_DROPPED_LIMIT, Event, Request, parse_request};
use crate::channels::cli::CliChannel;
use crate::db;
use crate::db::bootstrap::{CLI_USER, DEFAULT_AGENT};
use crate::report::doctor::{self, AgentInfo, Agents};
use crate::report::inspect;
use crate::report::logs::{self, LogEntry, LogReader};
use crate::session::router::{InboundEvent, Routed};

/// A followed log re-reads the files this often even when no change was announced (a write
/// the supervisor did not see, e.g. by a runner of an idle session's predecessor).
const FOLLOW_SAFETY_POLL: Duration = Duration::from_secs(2);

/// Binds the socket, replacing a stale file left by a host that died.
pub fn bind(path: &Path) -> Result<UnixListener, HostError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(HostError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| HostError::io("remove stale socket", path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| HostError::io("bind", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| HostError::io("chmod", path, e))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, ctx: HostCtx, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, ctx, cancel).await {
                            tracing::debug!("admin connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!("admin socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn connection(
    stream: UnixStream,
    ctx: HostCtx,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let Ok(mut line) = serde_json::to_string(&event) else {
                continue;
            };
            line.push('\n');
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(read).lines();
    let mut attachment = None;
    let mut followers: Vec<JoinHandle<()>> = Vec::new();
    let mut counter = 0u64;
    // Message ids must be unique across connections and host restarts.
    let nonce = crate::db::random_id(10);
    loop {
        let line = tokio::select! {
            () = cancel.cancelled() => break,
            line = lines.next_line() => line?,
        };
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request = match parse_request(&line) {
            Ok(r) => r,
            Err(message) => {
                let _ = tx.send(Event::Error { message });
                continue;
            }
        };
        match request {
            Request::Attach => {
                if attachment.is_none() {
                    let mut att = ctx.channels.cli.attach();
                    let events_tx = tx.clone();
                    // Forward chat events until the connection goes away.
                    let forward = tokio::spawn(async move {
                        loop {
                            match att.events.recv().await {
                                Ok(ev) => {
                                    if events_tx.send(Event::Chat(ev)).is_err() {
                                        break;
                                    }
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                    tracing::warn!("terminal fell behind; {n} events skipped");
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                            }
                        }
                        drop(att);
                    });
                    attachment = Some(forward);
                    let _ = tx.send(Event::Attached {
                        agent: ctx.default_agent_name().await,
                        runtime: ctx.runtime_name().to_owned(),
                        isolated: ctx.runtime_isolated(),
                    });
                    // Replies that waited for a terminal go out now, and open questions.
                    ctx.wake_cli_sessions().await;
                    let cli = mailbox::Route::new("cli", "local");
                    match ctx
                        .db
                        .call(move |conn| crate::session::questions::open_in_chat(conn, &cli))
                        .await
                    {
                        Ok(open) => {
                            for q in &open {
                                let _ = tx.send(Event::Chat(CliChannel::question_event(q)));
                            }
                        }
                        Err(e) => tracing::warn!("cannot list open questions: {e}"),
                    }
                }
            }
            Request::Answer {
                question_id,
                choice,
            } => {
                let pressed = crate::session::questions::answer(
                    &ctx.supervisor,
                    &question_id,
                    choice.saturating_sub(1),
                    CLI_USER,
                    Some("you"),
                )
                .await;
                use crate::session::questions::Pressed;
                let refusal = match pressed {
                    Ok(Pressed::Answered(_)) => None,
                    Ok(Pressed::Unknown) => Some("no such question".to_owned()),
                    Ok(Pressed::Closed(q)) => {
                        Some(format!("that question is {} already", q.status))
                    }
                    Ok(Pressed::NotAllowed { asker }) => Some(format!(
                        "only {asker} or an owner or admin of the agent can answer"
                    )),
                    Ok(Pressed::NoSuchOption { count }) => {
                        Some(format!("choose a number from 1 to {count}"))
                    }
                    Err(e) => Some(e.to_string()),
                };
                if let Some(message) = refusal {
                    let _ = tx.send(Event::Error { message });
                }
            }
            Request::Send { text } => {
                counter += 1;
                let event = InboundEvent {
                    channel_type: "cli".into(),
                    platform_id: "local".into(),
                    message_id: format!("{nonce}-{counter}"),
                    sender_id: CLI_USER.into(),
                    sender_name: Some("you".into()),
                    text,
                    ..InboundEvent::default()
                };
                let reply = match ctx.router.route(event).await {
                    Ok(routed) => accepted_for_default(routed),
                    Err(e) => Event::Rejected {
                        reason: e.to_string(),
                    },
                };
                let _ = tx.send(reply);
            }
            Request::Activity => {
                counter += 1;
                let event = InboundEvent {
                    channel_type: "cli".into(),
                    platform_id: "local".into(),
                    message_id: format!("{nonce}-{counter}"),
                    sender_id: CLI_USER.into(),
                    sender_name: Some("you".into()),
                    text: "/status".into(),
                    ..InboundEvent::default()
                };
                // The same facts as `/status`, by the same path.
                let reply = match ctx.router.route(event).await.map(accepted_for_default) {
                    Ok(Event::Answered { text }) => Event::Activity { text },
                    Ok(Event::Rejected { reason }) => Event::Error { message: reason },
                    Ok(other) => Event::Error {
                        message: format!("unexpected answer to /status: {other:?}"),
                    },
                    Err(e) => Event::Error {
                        message: e.to_string(),
                    },
                };
                let _ = tx.send(reply);
            }
            Request::Status => {
                let facts = ctx.facts();
                let now = chrono::Utc::now();
                let event = ctx
                    .read_only(move |conn, config| inspect::status(conn, config, Some(&facts), now))
                    .await
                    .map(|status| Event::Status { status });
                let _ = tx.send(event.unwrap_or_else(error_event));
            }
            Request::Sessions => {
                let facts = ctx.facts();
                let now = chrono::Utc::now();
                let event = ctx
                    .read_only(move |conn, config| {
                        inspect::sessions(conn, config, Some(&facts), now)
                    })
                    .await
                    .map(|sessions| Event::Sessions { sessions });
                let _ = tx.send(event.unwrap_or_else(error_event));
            }
            Request::Agents => {
                let facts = ctx.facts();
                let event = ctx
                    .read_only(move |conn, config| {
                        inspect::agents(conn, &config.default_model, Some(&facts))
                    })
                    .await
                    .map(|agents| Event::Agents { agents });
                let _ = tx.send(event.unwrap_or_else(error_event));
            }
            Request::Dropped { limit } => {
                let limit = limit.unwrap_or(DEFAULT_DROPPED_LIMIT);
                let event = ctx
                    .read_only(move |conn, _| inspect::dropped(conn, limit, true))
                    .await
                    .map(|dropped| Event::Dropped { dropped });
                let _ = tx.send(event.unwrap_or_else(error_event));
            }
            Request::Doctor => {
                let agents = match ctx.db.call(|conn| db::agent_groups(conn)).await {
                    Ok(agents) => Agents::Known(agents.into_iter().map(AgentInfo::from).collect()),
                    Err(e) => Agents::Unavailable(e),
                };
                let report = doctor::run(&ctx.config, agents, true).await;
                let _ = tx.send(Event::Doctor { doctor: report });
            }
            Request::Logs {
                session,
                follow,
                tail,
            } => {
                let opened = ctx
                    .read_only(move |conn, config| LogReader::open(conn, config, &session))
                    .await;
                let reader = match opened {
                    Ok(reader) => reader,
                    Err(e) => {
                        let _ = tx.send(error_event(e));
                        continue;
                    }
                };
                // Subscribed before the first read, so nothing written meanwhile is missed.
                let changes = follow.then(|| ctx.supervisor.changes());
                let Some((reader, entries)) = poll_log(reader, tx.clone()).await else {
                    continue;
                };
                let session_id = reader.session_id().to_owned();
                let _ = tx.send(Event::Logs {
                    session_id: session_id.clone(),
                    entries: logs::keep_tail(entries, tail),
                });
                if let Some(changes) = changes {
                    followers.push(tokio::spawn(follow_log(
                        reader,
                        session_id,
                        changes,
                        tx.clone(),
                        cancel.clone(),
                    )));
                }
            }
            request @ (Request::TaskList { .. }
            | Request::TaskShow { .. }
            | Request::TaskPause { .. }
            | Request::TaskResume { .. }
            | Request::TaskCancel { .. }
            | Request::TaskRunNow { .. }) => {
                let _ = tx.send(tasks::handle(&ctx, request).await);
            }
        }
    }
    for follower in followers {
        follower.abort();
    }
    if let Some(forward) = attachment {
        forward.abort();
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

fn error_event(e: HostError) -> Event {
    Event::Error {
        message: e.to_string(),
    }
}

/// Reads what is new on the blocking pool; on failure tells the client and returns `None`.
async fn poll_log(
    mut reader: LogReader,
    tx: mpsc::UnboundedSender<Event>,
) -> Option<(LogReader, Vec<LogEntry>)> {
    let polled = tokio::task::spawn_blocking(move || {
        let entries = reader.poll();
        (reader, entries)
    })
    .await;
    let message = match polled {
        Ok((reader, Ok(entries))) => return Some((reader, entries)),
        Ok((_, Err(e))) => format!("cannot read the session's log: {e}"),
        Err(e) => format!("reading the session's log failed: {e}"),
    };
    let _ = tx.send(Event::Error { message });
    None
}

/// Sends every new entry of a session's log until the connection (or the host) goes away.
async fn follow_log(
    mut reader: LogReader,
    session_id: String,
    mut changes: broadcast::Receiver<String>,
    tx: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    // An interval, not a sleep per pass: other sessions' announcements must not keep pushing
    // the safety read away.
    let mut safety = tokio::time::interval(FOLLOW_SAFETY_POLL);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    safety.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tx.closed() => return,
            change = changes.recv() => match change {
                Ok(id) if id != session_id => continue,
                // Missed announcements only mean one read covers several changes.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = safety.tick() => {}
        }
        let Some((next, entries)) = poll_log(reader, tx.clone()).await else {
            return;
        };
        reader = next;
        if entries.is_empty() {
            continue;
        }
        let batch = Event::Logs {
            session_id: session_id.clone(),
            entries,
        };
        if tx.send(batch).is_err() {
            return;
        }
    }
}

/// The terminal talks to the default agent; report its outcome.
fn accepted_for_default(routed: Vec<Routed>) -> Event {
    let mut refusal = None;
    for r in routed {
        match r {
            Routed::Accepted {
                agent_id,
                session_id,
                seq,
                ..
            } if agent_id == DEFAULT_AGENT => return Event::Accepted { session_id, seq },
            Routed::Answered { agent_id, text } if agent_id == DEFAULT_AGENT => {
                return Event::Answered { text };
            }
            Routed::Accepted { .. } | Routed::Answered { .. } => {}
            // The terminal's user owns every agent: nothing waits for an approval there.
            Routed::AwaitingApproval { .. } => {}
            Routed::Refused { reason, notice, .. } => refusal = Some(notice.unwrap_or(reason)),
        }
    }
    Event::Rejected {
        reason: refusal.unwrap_or_else(|| "no agent accepted the message".into()),
    }
}
