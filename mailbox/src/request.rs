//! Requests from the container to the host, and the host's answers: how a tool asks the host to
//! do something only the host may do (change the central database, later: ask a user) and waits
//! for the outcome, without breaking the mailbox invariants.
//!
//! - The container writes an [`OutboundKind::Request`] row (odd seq, like every outbound row)
//!   with content `{"op": …, "args": {…}}` ([`outbound`]). It is addressed to the host, not to a
//!   chat; the route is the placeholder [`HOST_ROUTE`].
//! - The host reads it in its delivery pass like any other outbound row, does what `op` says,
//!   and records the answer with [`crate::InboundDb::answer`]: the row in `inbound.responses`
//!   and the row's delivery record (`delivered`) in one transaction. The first answer wins, so a
//!   host that crashes and handles the request again after its restart never answers twice;
//!   one that crashed before answering answers after its restart. An op whose answer comes
//!   later (a question for a user) marks the row delivered when it takes it, and answers with
//!   the same call when the answer exists.
//! - The waiting side ([`wait_for_response`]) watches `inbound/` with inotify and reads the
//!   answer as soon as the host commits it; a slow poll covers missed events (a mount that does
//!   not pass them on), and a timeout ends the wait with [`WaitError::Timeout`].
//!
//! The host stays the only writer of `inbound.db`, the container of `outbound.db`.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};

use crate::inbound::InboundReader;
use crate::layout::{INBOUND_DB, is_commit_event};
pub use crate::types::{Answered, Response};
use crate::types::{NewOutbound, OutboundKind, OutboundMessage, Route};
use crate::{Error, Result};

/// The route of a request row: requests go to the host, never to a chat.
pub const HOST_ROUTE: (&str, &str) = ("host", "");

/// A request as the host reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The outbound seq of the row: the request's identity, and what its answer is keyed by.
    pub seq: i64,
    pub op: String,
    pub args: Value,
    pub created_at: DateTime<Utc>,
}

impl Request {
    /// Decodes a [`OutboundKind::Request`] row. A row of another kind, or content without a
    /// string `op`, is [`Error::Malformed`]; missing `args` read as `{}`.
    pub fn from_message(msg: &OutboundMessage) -> Result<Request> {
        let malformed = |detail: String| Error::Malformed {
            table: "messages_out",
            detail,
        };
        if msg.kind != OutboundKind::Request {
            return Err(malformed(format!(
                "row {} is a {} row, not a request",
                msg.seq, msg.kind
            )));
        }
        let Some(op) = msg.content.get("op").and_then(Value::as_str) else {
            return Err(malformed(format!("request {} has no op", msg.seq)));
        };
        Ok(Request {
            seq: msg.seq,
            op: op.to_owned(),
            args: msg
                .content
                .get("args")
                .cloned()
                .unwrap_or_else(|| json!({})),
            created_at: msg.created_at,
        })
    }
}

/// The row a container writes to ask the host for `op`; `id` must be unique like every
/// outbound message id.
pub fn outbound(id: String, op: &str, args: Value) -> NewOutbound {
    NewOutbound {
        id,
        kind: OutboundKind::Request,
        in_reply_to: None,
        route: Route::new(HOST_ROUTE.0, HOST_ROUTE.1),
        content: json!({ "op": op, "args": args }),
    }
}

/// How long to wait, and how often to look when no file event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// The safety-net poll while file notifications work.
    pub poll: Duration,
    /// The poll when they cannot be set up (inotify limits).
    pub poll_without_watcher: Duration,
}

impl WaitOptions {
    pub fn with_timeout(timeout: Duration) -> Self {
        WaitOptions {
            timeout,
            poll: Duration::from_secs(3),
            poll_without_watcher: Duration::from_millis(250),
        }
    }
}

/// Why [`wait_for_response`] returned without an answer.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The host did not answer in time. It may still act on the request later (it answers
    /// every request once); the caller says so rather than claiming nothing happened.
    #[error("the host did not answer request {request_seq} within {} s", waited.as_secs())]
    Timeout { request_seq: i64, waited: Duration },
    /// `inbound.db` could not be read.
    #[error(transparent)]
    Mailbox(#[from] Error),
}

/// Blocks until the host has answered request `request_seq` in `<inbound_dir>/inbound.db`, or
/// `options.timeout` has passed. Blocking (no async runtime in this crate): async callers run
/// it on a blocking thread.
pub fn wait_for_response(
    inbound_dir: &Path,
    request_seq: i64,
    options: WaitOptions,
) -> Result<Response, WaitError> {
    let started = Instant::now();
    // The watch starts before the first look, so an answer committed in between still wakes us.
    let (tx, rx) = mpsc::channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if is_commit_event(&event, INBOUND_DB) {
            // The receiver is gone once the wait is over; nothing to tell then.
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(inbound_dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    // Without notifications (inotify limits, an exotic mount) the faster poll still answers;
    // the wait is slower, not wrong.
    let poll = match &watcher {
        Ok(_) => options.poll,
        Err(_) => options.poll_without_watcher,
    };
    let reader = InboundReader::open(&inbound_dir.join(INBOUND_DB))?;
    loop {
        if let Some(response) = reader.response(request_seq)? {
            return Ok(response);
        }
        let waited = started.elapsed();
        let Some(left) = options.timeout.checked_sub(waited).filter(|d| !d.is_zero()) else {
            return Err(WaitError::Timeout {
                request_seq,
                waited,
            });
        };
        match rx.recv_timeout(left.min(poll)) {
            // A change, or the poll: look again. Events that piled up meanwhile are covered by
            // that one look.
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => while rx.try_recv().is_ok() {},
            // The watcher is gone (it never is while `watcher` lives); keep polling.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(poll)),
        }
    }
}
