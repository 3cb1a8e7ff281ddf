//! The port through which the message path shows things in chats: [`Outlet`], implemented by
//! the channel adapters' registry (`crate::channels::Channels`), which sits above this layer.
//! The supervisor, delivery and questions hand it outbound rows, notices, questions, verdicts and
//! "the agent is working", and drafts of replies being written; what an outbound row asks a
//! channel to show ([`Content`]) is decoded here once for every adapter, and so is the cap on a
//! reply's length ([`cap_reply`]): an agent that answers with megabytes of text would otherwise
//! flood the chat with hundreds of messages.

use futures::future::BoxFuture;
use mailbox::{InboundStatus, OutboundKind, OutboundMessage, Route};

use crate::session::outbox::Attachment;
use crate::session::questions::Question;

/// Where the message path's output goes: one implementation dispatches to every channel.
pub trait Outlet: Send + Sync {
    /// Whether someone can receive on `route` now (a terminal is attached); replies to an
    /// unavailable route stay pending.
    fn is_available(&self, route: &Route) -> bool;
    /// Whether the channel of `route` shows that the agent is working (Telegram's "typing…");
    /// the supervisor only tracks work for those.
    fn shows_typing(&self, route: &Route) -> bool;
    /// Starts or stops the "working" indicator in the chat of `route`.
    fn typing(&self, route: &Route, on: bool);
    /// Sends one outbound row of the agent `agent_name` with its (already validated)
    /// attachments; returns the platform's message id when it has one.
    fn deliver<'a>(
        &'a self,
        session_id: &'a str,
        agent_name: &'a str,
        msg: &'a OutboundMessage,
        attachments: &'a [Attachment],
        refs: &'a PlatformRefs,
    ) -> BoxFuture<'a, Result<Option<String>, DeliveryError>>;
    /// Shows a question from an agent; returns the platform's id of the message showing it.
    fn ask<'a>(&'a self, q: &'a Question) -> BoxFuture<'a, Result<Option<String>, DeliveryError>>;
    /// Shows how a question ended (answered, expired) where it was asked.
    fn close_question<'a>(&'a self, q: &'a Question) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// A host-originated notice to a chat (e.g. a message that failed for good).
    fn notify<'a>(
        &'a self,
        route: &'a Route,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// Tells channels that show progress that an inbound message reached a final state.
    fn outcome(&self, route: &Route, outcome: Outcome<'_>);
    /// Shows the draft of the reply the agent `agent_name` is writing in the session's own
    /// chat `route`, or (`None`) that there is no draft now: its reply was delivered, or the
    /// turn ended without one. Called on every pass of delivery; a channel shows what changed.
    /// Best effort: a draft that cannot be shown is skipped (the reply is what counts).
    /// Channels that do not show drafts keep this default.
    fn draft<'a>(
        &'a self,
        session_id: &'a str,
        agent_name: &'a str,
        route: &'a Route,
        draft: Option<&'a Drafting>,
    ) -> BoxFuture<'a, ()> {
        let _ = (session_id, agent_name, route, draft);
        Box::pin(async {})
    }
}

/// A reply being written, as delivery hands it to the channels (from `mailbox::Draft`).
#[derive(Debug, Clone, PartialEq)]
pub struct Drafting {
    /// The inbound message the reply will answer (the reply row's `in_reply_to`).
    pub reply_to: i64,
    /// The platform's id of that message, for channels that quote it.
    pub reply_to_platform: Option<String>,
    /// The model step writing it: a new step starts a new text.
    pub step: u32,
    /// What the agent has written so far (may be empty while a tool runs).
    pub text: String,
    /// What the step's tool calls do, in one cleaned line (`progress.rs`), while they run.
    pub progress: Option<String>,
    /// The agent's `show_tools` (`container.json`): whether chats show `progress`. The
    /// terminal shows it either way.
    pub show_tools: bool,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Nobody can receive on this route right now (no terminal attached); not an attempt: the
    /// row stays pending until the channel becomes available.
    #[error("channel unavailable")]
    Unavailable,
    /// Worth another attempt (network error, rate limit).
    #[error("{0}")]
    Transient(String),
    /// Will never work (unknown chat, forbidden destination, malformed content).
    #[error("{0}")]
    Permanent(String),
}

/// What an outbound row asks a channel to show, decoded once for every adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Content<'a> {
    Text {
        text: &'a str,
        /// Set when this replaces the text of the earlier message with this seq.
        edit_of: Option<i64>,
    },
    Reaction {
        reaction_to: i64,
        emoji: &'a str,
    },
}

impl<'a> Content<'a> {
    pub fn of(msg: &'a OutboundMessage) -> Result<Self, DeliveryError> {
        let malformed = |what: &str| DeliveryError::Permanent(format!("{what} ({} row)", msg.kind));
        let text = msg.text().unwrap_or_default();
        let seq_field = |field: &str| msg.content.get(field).and_then(serde_json::Value::as_i64);
        match msg.kind {
            OutboundKind::Chat => Ok(Content::Text {
                text,
                edit_of: None,
            }),
            OutboundKind::Edit => Ok(Content::Text {
                text,
                edit_of: Some(seq_field("edit_of").ok_or_else(|| malformed("no edit_of"))?),
            }),
            OutboundKind::Reaction => Ok(Content::Reaction {
                reaction_to: seq_field("reaction_to").ok_or_else(|| malformed("no reaction_to"))?,
                emoji: msg
                    .content
                    .get("emoji")
                    .and_then(serde_json::Value::as_str)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| malformed("no emoji"))?,
            }),
            // The delivery pass answers requests itself; one reaching a channel is a bug there.
            OutboundKind::Request => Err(malformed("a request for the host, not for a chat")),
        }
    }
}

/// A reply longer than `MAX_REPLY_CHARS`, as it is shown: its beginning with a note, and the
/// name of the file the whole text goes along in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedReply {
    /// The beginning (cut at a line break, else a space, else any character), then the note;
    /// at most the cap in characters.
    pub text: String,
    /// The name of the file the whole text goes in: `reply-<seq>.md`.
    pub file_name: String,
}

/// The reply `text` of row `seq` as shown under a cap of `max_chars` characters; `None` when it
/// fits. The note says how long the reply was and that the whole text is attached.
pub fn cap_reply(text: &str, seq: i64, max_chars: usize) -> Option<CappedReply> {
    let chars = text.chars().count();
    if chars <= max_chars {
        return None;
    }
    let name = format!("reply-{seq}.md");
    let note = format!("✂ The reply was {chars} characters; the whole text is attached ({name}).");
    // Room for the note, the blank line before it, and a fence closing a cut code block.
    let budget = max_chars.saturating_sub(note.chars().count() + 6);
    let end = text
        .char_indices()
        .nth(budget)
        .map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    // A cut in the first half would throw away too much: fall back to a finer boundary.
    let cut = [head.rfind('\n'), head.rfind(char::is_whitespace)]
        .into_iter()
        .flatten()
        .find(|&i| i >= end / 2)
        .unwrap_or(end);
    let mut shown = head[..cut].trim_end().to_owned();
    if shown
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count()
        % 2
        == 1
    {
        shown.push_str("\n```");
    }
    shown.push_str("\n\n");
    shown.push_str(&note);
    Some(CappedReply {
        text: shown,
        file_name: name,
    })
}

/// The names of the files attached to an outbound row (`content.files`).
pub fn attachment_names(msg: &OutboundMessage) -> Vec<String> {
    msg.content
        .get("files")
        .and_then(serde_json::Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The platform's ids of the messages an outbound row refers to, looked up by delivery.rs
/// (channels that address messages by their own ids need them; the terminal does not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformRefs {
    /// The message this row answers (`in_reply_to`).
    pub reply_to: Option<String>,
    /// The message an edit replaces or a reaction is for (as delivered, comma-separated when
    /// it went out in parts).
    pub target: Option<String>,
}

/// A verdict on an inbound message, for channels that show progress (the terminal chat).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub session_id: &'a str,
    pub seq: i64,
    pub status: InboundStatus,
    pub error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reply_within_the_cap_is_left_alone() {
        assert_eq!(cap_reply(&"é".repeat(1000), 3, 1000), None);
        assert_eq!(cap_reply("", 3, 1000), None);
    }

    #[test]
    fn a_long_reply_is_cut_at_a_line_under_the_cap_and_attached_whole() {
        let line = "word ".repeat(19) + "end\n";
        let text = line.repeat(100);
        let capped = cap_reply(&text, 13, 1000).unwrap();
        assert!(capped.text.chars().count() <= 1000, "{}", capped.text.len());
        let (head, note) = capped.text.rsplit_once("\n\n").unwrap();
        assert!(head.ends_with("end"), "{head:?}");
        assert!(text.starts_with(head));
        assert_eq!(
            note,
            format!(
                "✂ The reply was {} characters; the whole text is attached (reply-13.md).",
                text.chars().count()
            )
        );
        assert_eq!(capped.file_name, "reply-13.md");
    }

    #[test]
    fn without_line_breaks_the_cut_is_at_a_space_or_a_character() {
        let words = "ünïcode ".repeat(500);
        let capped = cap_reply(&words, 1, 600).unwrap();
        let head = capped.text.split("\n\n").next().unwrap();
        assert!(head.ends_with("ünïcode"), "{head:?}");
        assert!(capped.text.chars().count() <= 600);
        let solid = "😀".repeat(5000);
        let capped = cap_reply(&solid, 1, 600).unwrap();
        let head = capped.text.split("\n\n").next().unwrap();
        assert!(head.chars().all(|c| c == '😀') && head.chars().count() > 400);
        assert!(capped.text.chars().count() <= 600);
    }

    #[test]
    fn a_code_block_cut_open_is_closed_before_the_note() {
        let text = format!("intro\n```rust\n{}```\n", "let x = 1;\n".repeat(500));
        let capped = cap_reply(&text, 1, 1000).unwrap();
        let head = capped.text.split("\n\n✂").next().unwrap();
        assert!(head.ends_with("\n```"), "{head:?}");
        assert!(capped.text.chars().count() <= 1000);
    }
}
