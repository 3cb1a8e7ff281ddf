//! The admin socket server: a Unix socket in `DATA_DIR` (mode 0600 inside a 0700 directory)
//! speaking the line protocol of protocol.rs. Terminals attach to the CLI chat here; `clawbox
//! status` reads its snapshot here; `clawbox tasks` is handled by task_cmd.rs. One task per connection; a reader loop handles requests and
//! a writer task serialises everything the connection is sent.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::app::HostCtx;
use crate::bootstrap::{CLI_USER, DEFAULT_AGENT};
use crate::protocol::{Event, Request};
use crate::router::{InboundEvent, Routed};

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
    let mut counter = 0u64;
    // Message ids must be unique across connections and host restarts.
    let nonce = crate::bootstrap::random_id(10);
    loop {
        let line = tokio::select! {
            () = cancel.cancelled() => break,
            line = lines.next_line() => line?,
        };
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Event::Error {
                    message: format!("malformed request: {e}"),
                });
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
                    // Replies that waited for a terminal go out now.
                    ctx.wake_cli_sessions().await;
                }
            }
            Request::Send { text } => {
                counter += 1;
                let event = InboundEvent {
                    channel_type: "cli".into(),
                    platform_id: "local".into(),
                    thread_id: None,
                    message_id: format!("{nonce}-{counter}"),
                    sender_id: CLI_USER.into(),
                    sender_name: Some("you".into()),
                    text,
                    is_mention: false,
                };
                let reply = match ctx.router.route(event).await {
                    Ok(routed) => accepted_for_default(routed),
                    Err(e) => Event::Rejected {
                        reason: e.to_string(),
                    },
                };
                let _ = tx.send(reply);
            }
            Request::Status => {
                let event = match ctx.status().await {
                    Ok(status) => Event::Status { status },
                    Err(e) => Event::Error {
                        message: e.to_string(),
                    },
                };
                let _ = tx.send(event);
            }
            request @ (Request::TaskList { .. }
            | Request::TaskShow { .. }
            | Request::TaskPause { .. }
            | Request::TaskResume { .. }
            | Request::TaskCancel { .. }
            | Request::TaskRunNow { .. }) => {
                let _ = tx.send(crate::task_cmd::handle(&ctx, request).await);
            }
        }
    }
    if let Some(forward) = attachment {
        forward.abort();
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
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
            Routed::Accepted { .. } => {}
            Routed::Refused { reason, notice, .. } => refusal = Some(notice.unwrap_or(reason)),
        }
    }
    Event::Rejected {
        reason: refusal.unwrap_or_else(|| "no agent accepted the message".into()),
    }
}
