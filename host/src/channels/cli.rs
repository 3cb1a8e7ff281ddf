//! The terminal channel (`cli` / `local`). Terminals attach over the admin socket
//! (`clawbox chat`); replies go to every attached terminal. With none attached the channel is
//! unavailable and replies wait in the mailbox until one attaches — nothing is lost because the
//! user closed the terminal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mailbox::{InboundStatus, OutboundMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::session::outbox::{Attachment, AttachmentError};
use crate::session::outlet::{Content, DeliveryError, Drafting, Outcome};

/// A file the agent sent, saved where the terminal's user can open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    pub name: String,
    pub bytes: u64,
    pub path: String,
}

/// What the host tells attached terminals (also the admin protocol's chat events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChatEvent {
    Reply {
        session_id: String,
        /// Display name of the agent that wrote it (several agents can answer on the terminal).
        #[serde(default)]
        agent: String,
        seq: i64,
        in_reply_to: Option<i64>,
        text: String,
        /// Set when this replaces the text of an earlier reply.
        edit_of: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<SavedFile>,
    },
    /// The reply to `reply_to` as written so far (a streamed model step); the `Reply` that
    /// answers `reply_to` replaces it. A new `step` starts a new text. `progress`: what the
    /// step's tool calls do, in one cleaned line, while they run (the terminal shows it
    /// whatever the agent's `show_tools`).
    Draft {
        session_id: String,
        #[serde(default)]
        agent: String,
        reply_to: i64,
        step: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<String>,
    },
    Reaction {
        session_id: String,
        #[serde(default)]
        agent: String,
        seq: i64,
        reaction_to: i64,
        emoji: String,
    },
    Done {
        session_id: String,
        seq: i64,
        status: InboundStatus,
        error: Option<String>,
    },
    Notice {
        text: String,
    },
    /// An agent asks; the terminal answers with `answer` (1-based `choice`).
    Question {
        question_id: String,
        session_id: String,
        title: String,
        question: String,
        /// The option labels, in order.
        options: Vec<String>,
        /// RFC 3339.
        expires_at: String,
    },
    /// A question was answered (here or elsewhere) or expired: `outcome` says how.
    QuestionClosed {
        question_id: String,
        outcome: String,
    },
}

#[derive(Clone)]
pub struct CliChannel {
    events: broadcast::Sender<ChatEvent>,
    /// The draft last sent per session, so each pass sends only a change. std Mutex: never
    /// held across an await.
    drafts: Arc<Mutex<HashMap<String, Drafting>>>,
    attached: Arc<AtomicUsize>,
    /// `DATA_DIR/files`: attachments are written to `<session>/<seq>/<name>` below it.
    files_dir: PathBuf,
}

/// Keeps the terminal counted as attached while alive.
pub struct Terminal {
    pub events: broadcast::Receiver<ChatEvent>,
    attached: Arc<AtomicUsize>,
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CliChannel {
    pub fn new(files_dir: PathBuf) -> Self {
        CliChannel {
            events: broadcast::channel(/*capacity*/ 1024).0,
            drafts: Arc::default(),
            attached: Arc::default(),
            files_dir,
        }
    }

    pub fn attach(&self) -> Terminal {
        let events = self.events.subscribe();
        self.attached.fetch_add(1, Ordering::SeqCst);
        Terminal {
            events,
            attached: Arc::clone(&self.attached),
        }
    }

    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst) > 0
    }

    pub(super) fn deliver(
        &self,
        session_id: &str,
        agent_name: &str,
        msg: &OutboundMessage,
        content: Content<'_>,
        attachments: &[Attachment],
    ) -> Result<Option<String>, DeliveryError> {
        let event = match content {
            Content::Text { text, edit_of } => ChatEvent::Reply {
                session_id: session_id.to_owned(),
                agent: agent_name.to_owned(),
                seq: msg.seq,
                in_reply_to: msg.in_reply_to,
                text: text.to_owned(),
                edit_of,
                files: self.save(session_id, msg.seq, attachments)?,
            },
            Content::Reaction { reaction_to, emoji } => ChatEvent::Reaction {
                session_id: session_id.to_owned(),
                agent: agent_name.to_owned(),
                seq: msg.seq,
                reaction_to,
                emoji: emoji.to_owned(),
            },
        };
        self.send(event)?;
        Ok(None)
    }

    /// Writes attachments under `files_dir/<session>/<seq>/` (host-owned, mode 0600), so the
    /// user opens a copy the agent can no longer change.
    fn save(
        &self,
        session_id: &str,
        seq: i64,
        attachments: &[Attachment],
    ) -> Result<Vec<SavedFile>, DeliveryError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if attachments.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.files_dir.join(session_id).join(seq.to_string());
        let transient =
            |e: std::io::Error| DeliveryError::Transient(format!("cannot save file: {e}"));
        mailbox::private::create_dir_all(&dir).map_err(transient)?;
        let mut saved = Vec::new();
        for a in attachments {
            let path = dir.join(&a.name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(transient)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(transient)?;
            // Streamed, a chunk at a time; a file the agent changes meanwhile is refused, and
            // a partial copy is not left behind.
            let bytes = match a.copy_to(&mut file) {
                Ok(n) => n,
                Err(e) => {
                    drop(file);
                    // Best effort: the copy is unusable either way, and the error says why.
                    let _ = std::fs::remove_file(&path);
                    return Err(match e {
                        AttachmentError::Changed { .. } => DeliveryError::Permanent(e.to_string()),
                        _ => DeliveryError::Transient(format!("cannot save file: {e}")),
                    });
                }
            };
            saved.push(SavedFile {
                name: a.name.clone(),
                bytes,
                path: path.display().to_string(),
            });
        }
        Ok(saved)
    }

    /// The event showing a question.
    pub fn question_event(q: &crate::session::questions::Question) -> ChatEvent {
        ChatEvent::Question {
            question_id: q.id.clone(),
            session_id: q.session_id.clone(),
            title: q.title.clone(),
            question: q.question.clone(),
            options: q.options.iter().map(|c| c.label.clone()).collect(),
            expires_at: crate::db::ts(q.expires_at),
        }
    }

    pub(super) fn question(&self, q: &crate::session::questions::Question) {
        // No terminal attached: it is shown when one attaches.
        let _ = self.events.send(Self::question_event(q));
    }

    pub(super) fn question_closed(&self, q: &crate::session::questions::Question) {
        // A terminal attaching later does not show closed questions, so none is missed.
        let _ = self.events.send(ChatEvent::QuestionClosed {
            question_id: q.id.clone(),
            outcome: q.outcome_text().unwrap_or_default(),
        });
    }

    pub(super) fn notice(&self, text: &str) -> Result<(), DeliveryError> {
        self.send(ChatEvent::Notice {
            text: text.to_owned(),
        })
    }

    /// Sends a draft that differs from the last one sent for the session; `None` forgets it.
    pub(super) fn draft(&self, session_id: &str, agent_name: &str, draft: Option<&Drafting>) {
        let mut drafts = self.drafts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(draft) = draft else {
            drafts.remove(session_id);
            return;
        };
        if drafts.get(session_id) == Some(draft) || !self.is_attached() {
            return;
        }
        drafts.insert(session_id.to_owned(), draft.clone());
        // Terminals that are gone do not need it; one attaching later gets the reply.
        let _ = self.events.send(ChatEvent::Draft {
            session_id: session_id.to_owned(),
            agent: agent_name.to_owned(),
            reply_to: draft.reply_to,
            step: draft.step,
            text: draft.text.clone(),
            progress: draft.progress.clone(),
        });
    }

    pub(super) fn done(&self, o: Outcome<'_>) {
        // Progress only: a terminal that is gone does not need it.
        let _ = self.events.send(ChatEvent::Done {
            session_id: o.session_id.to_owned(),
            seq: o.seq,
            status: o.status,
            error: o.error.map(str::to_owned),
        });
    }

    fn send(&self, event: ChatEvent) -> Result<(), DeliveryError> {
        self.events
            .send(event)
            .map(drop)
            .map_err(|_| DeliveryError::Unavailable)
    }
}
