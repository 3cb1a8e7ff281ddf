//! Channel adapters behind one registry: the terminal (`cli.rs`), Telegram (`telegram/`) and
//! the dashboard's web chat (`web.rs`: the browser reads the session's replies and their files
//! from its mailbox, like its story, so delivering one only records it; drafts and "a question
//! changed" are kept there for the chat page's live stream).
//! [`Channels`] is the message path's [`Outlet`]: the supervisor hands it every outbound row,
//! failure notice, verdict and "the agent is working" signal, and it dispatches on the route's
//! channel type. Inbound, the adapters hand messages to the router. Owns nothing about routing
//! decisions (`session::router`) or delivery bookkeeping (`session::delivery`).
//!
//! A reply longer than `MAX_REPLY_CHARS` is shown by every channel the same way (see
//! [`cap_reply`]): its beginning with a note, and the whole text as a file (`reply-<seq>.md`,
//! a document on Telegram, a saved file on the terminal). An edit longer than the cap is
//! refused: an edit cannot carry a file, and the message it would replace stays as it was.

pub mod cli;
pub mod telegram;
pub mod web;

use std::path::PathBuf;

use futures::future::BoxFuture;
use mailbox::{OutboundMessage, Route};

use crate::session::outbox::Attachment;
use crate::session::outlet::{
    Content, DeliveryError, Drafting, Outcome, Outlet, PlatformRefs, cap_reply,
};
use crate::session::questions::Question;
use cli::CliChannel;
use telegram::TelegramChannel;
use web::WebChannel;

#[derive(Clone)]
pub struct Channels {
    pub cli: CliChannel,
    /// Present when `TELEGRAM_BOT_TOKEN` is set.
    pub telegram: Option<TelegramChannel>,
    /// The dashboard's web chat.
    pub web: WebChannel,
    /// `MAX_REPLY_CHARS`.
    max_reply_chars: usize,
}

impl Channels {
    /// `files_dir`: where channels that hand files to the local user (the terminal) put them.
    pub fn new(
        files_dir: PathBuf,
        telegram: Option<TelegramChannel>,
        max_reply_chars: usize,
    ) -> Self {
        Channels {
            cli: CliChannel::new(files_dir),
            telegram,
            web: WebChannel::default(),
            max_reply_chars,
        }
    }
}

impl Outlet for Channels {
    fn is_available(&self, route: &Route) -> bool {
        match route.channel_type.as_str() {
            "cli" => self.cli.is_attached(),
            _ => true,
        }
    }

    fn shows_typing(&self, route: &Route) -> bool {
        route.channel_type == "telegram" && self.telegram.is_some()
    }

    fn typing(&self, route: &Route, on: bool) {
        if route.channel_type == "telegram"
            && let Some(tg) = &self.telegram
        {
            tg.typing(route, on);
        }
    }

    fn deliver<'a>(
        &'a self,
        session_id: &'a str,
        agent_name: &'a str,
        msg: &'a OutboundMessage,
        attachments: &'a [Attachment],
        refs: &'a PlatformRefs,
    ) -> BoxFuture<'a, Result<Option<String>, DeliveryError>> {
        Box::pin(async move {
            let mut content = Content::of(msg)?;
            if let Content::Text { text, .. } = &content
                && text.trim().is_empty()
                && attachments.is_empty()
            {
                return Err(DeliveryError::Permanent(
                    "message has no text to send".into(),
                ));
            }
            // The web chat shows the row from the mailbox itself: nothing is cut there.
            let capped = match &content {
                Content::Text { .. } if msg.route.channel_type == "web" => None,
                Content::Text {
                    text,
                    edit_of: Some(_),
                } => {
                    let chars = text.chars().count();
                    if chars > self.max_reply_chars {
                        return Err(DeliveryError::Permanent(format!(
                            "an edit may hold at most {} characters (MAX_REPLY_CHARS) and this \
                             one has {chars}; send the text as a new message instead",
                            self.max_reply_chars
                        )));
                    }
                    None
                }
                Content::Text {
                    text,
                    edit_of: None,
                } => cap_reply(text, msg.seq, self.max_reply_chars),
                Content::Reaction { .. } => None,
            };
            let with_file;
            let attachments = match &capped {
                Some(c) => {
                    tracing::info!(
                        out_seq = msg.seq,
                        chars = msg.text().unwrap_or_default().chars().count(),
                        max = self.max_reply_chars,
                        "reply longer than MAX_REPLY_CHARS: its beginning is shown, the whole text attached"
                    );
                    content = Content::Text {
                        text: &c.text,
                        edit_of: None,
                    };
                    let (name, whole) = (c.file_name.clone(), msg.text().unwrap_or_default());
                    let whole = whole.as_bytes().to_vec();
                    let file =
                        tokio::task::spawn_blocking(move || Attachment::from_bytes(name, &whole))
                            .await
                            .map_err(|e| DeliveryError::Transient(e.to_string()))?
                            .map_err(|e| {
                                DeliveryError::Transient(format!(
                                    "cannot keep the whole reply as a file: {e}"
                                ))
                            })?;
                    with_file = [attachments, std::slice::from_ref(&file)].concat();
                    &with_file[..]
                }
                None => attachments,
            };
            match (msg.route.channel_type.as_str(), &self.telegram) {
                ("cli", _) => self
                    .cli
                    .deliver(session_id, agent_name, msg, content, attachments),
                // The dashboard's chat page shows the reply from the mailbox, live.
                ("web", _) => Ok(None),
                ("telegram", Some(tg)) => {
                    tg.deliver(session_id, msg, content, attachments, refs)
                        .await
                }
                (other, _) => Err(no_adapter(other)),
            }
        })
    }

    /// The terminal shows a question to attached terminals now and to others when they attach.
    fn ask<'a>(&'a self, q: &'a Question) -> BoxFuture<'a, Result<Option<String>, DeliveryError>> {
        Box::pin(async move {
            match (q.route.channel_type.as_str(), &self.telegram) {
                ("cli", _) => {
                    self.cli.question(q);
                    Ok(None)
                }
                ("telegram", Some(tg)) => tg.ask(q).await.map(Some),
                // The chat page shows open questions from the database, as buttons.
                ("web", _) => {
                    self.web.changed();
                    Ok(None)
                }
                (other, _) => Err(no_adapter(other)),
            }
        })
    }

    fn close_question<'a>(&'a self, q: &'a Question) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            match (q.route.channel_type.as_str(), &self.telegram) {
                ("cli", _) => {
                    self.cli.question_closed(q);
                    Ok(())
                }
                ("telegram", Some(tg)) => tg.close_question(q).await,
                ("web", _) => {
                    self.web.changed();
                    Ok(())
                }
                (other, _) => Err(no_adapter(other)),
            }
        })
    }

    fn notify<'a>(
        &'a self,
        route: &'a Route,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            match (route.channel_type.as_str(), &self.telegram) {
                ("cli", _) => self.cli.notice(text),
                ("telegram", Some(tg)) => tg.notice(route, text, None).await,
                // The chat page shows the failure a notice is about from the session's log.
                ("web", _) => Ok(()),
                (other, _) => Err(no_adapter(other)),
            }
        })
    }

    fn outcome(&self, route: &Route, outcome: Outcome<'_>) {
        if route.channel_type == "cli" {
            self.cli.done(outcome);
        }
    }

    fn draft<'a>(
        &'a self,
        session_id: &'a str,
        agent_name: &'a str,
        route: &'a Route,
        draft: Option<&'a Drafting>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match (route.channel_type.as_str(), &self.telegram) {
                ("cli", _) => self.cli.draft(session_id, agent_name, draft),
                ("telegram", Some(tg)) => tg.draft(session_id, route, draft).await,
                ("web", _) => self.web.draft(session_id, agent_name, draft),
                _ => {}
            }
        })
    }
}

fn no_adapter(channel: &str) -> DeliveryError {
    if channel == "telegram" {
        DeliveryError::Permanent(
            "the Telegram channel is off (TELEGRAM_BOT_TOKEN is not set)".into(),
        )
    } else {
        DeliveryError::Permanent(format!("no channel adapter for {channel:?}"))
    }
}
