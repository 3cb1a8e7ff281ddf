//! Publishes the growing text of a model step as the turn's draft (`mailbox::drafts`), so the
//! host can show a reply while it is being written. Owns the throttle: the first text is
//! written at once (the time to first visible text is what a user feels), then at most every
//! [`EVERY`] unless [`CHARS`] more characters have arrived. Each write is a small commit of its
//! own; the verdict deletes the draft in the transaction that writes the reply (`turn.rs`).
//!
//! A draft is only a preview: a failed write is logged and ends the drafts of this step, never
//! the turn.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use mailbox::Draft;
use mailbox::drafts::capped;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::DraftSink;
use crate::store::Store;

/// The longest a draft lags behind the model while text keeps arriving.
pub const EVERY: Duration = Duration::from_millis(500);
/// New characters that are written without waiting for [`EVERY`].
pub const CHARS: usize = 200;

/// Which draft a step writes.
#[derive(Debug, Clone, Copy)]
pub struct DraftKey {
    pub turn: i64,
    /// The inbound message the turn's reply will answer.
    pub reply_to: i64,
    pub step: u32,
}

/// Runs `call` (a model request streaming into the sink it is given) while publishing what it
/// reports. Returns once both the call and the last draft write are done, so a verdict
/// written after it always comes after every draft of the step.
pub async fn with_draft<T, F, Fut>(store: &Store, key: DraftKey, call: F) -> T
where
    F: FnOnce(DraftSink) -> Fut,
    Fut: Future<Output = T>,
{
    let (sink, texts) = watch::channel(String::new());
    // The call owns the sink: when it ends, the sink is dropped and the publisher stops.
    let (out, ()) = tokio::join!(call(sink), publish(store, key, texts));
    out
}

/// Writes the sink's text as the draft of `key`, throttled, until the sink is dropped.
async fn publish(store: &Store, key: DraftKey, mut texts: watch::Receiver<String>) {
    let mut last_write: Option<Instant> = None;
    // Bytes of the text when it was last written.
    let mut written = 0usize;
    loop {
        if texts.changed().await.is_err() {
            return;
        }
        if let Some(last) = last_write {
            let due = last + EVERY;
            // Wait for the next slot unless enough new text arrives first.
            loop {
                if texts.borrow().len().saturating_sub(written) >= CHARS {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    changed = texts.changed() => if changed.is_err() {
                        // The step ended: its reply (or its next step) follows at once.
                        return;
                    },
                }
            }
        }
        let text = {
            let text = texts.borrow_and_update();
            // An attempt starting over empties the text: keep showing the old draft until
            // the new attempt has something to say.
            if text.trim().is_empty() || (capped(&text).len() == written && written > 0) {
                continue;
            }
            capped(&text).to_owned()
        };
        written = text.len();
        last_write = Some(Instant::now());
        let draft = Draft {
            turn: key.turn,
            reply_to: key.reply_to,
            step: key.step,
            text,
            calls: Vec::new(),
            updated_at: Utc::now(),
        };
        if let Err(err) = store.run(move |dbs| dbs.outbound.set_draft(&draft)).await {
            tracing::warn!(turn = key.turn, step = key.step, error = %err,
                "cannot write the draft; the reply comes when the turn ends");
            return;
        }
    }
}
