//! The dashboard's web chat, as a channel: what the browser shows besides the session's own
//! mailbox. Replies need nothing here (the chat page reads them from the mailbox, like a story);
//! what lives here is what is not in a mailbox the page could read: the draft of the reply the
//! agent is writing now, per session, and a change counter the chat page's live stream waits on
//! (a draft changed, a question was asked or closed). The questions themselves are in the
//! central database (`session::questions`); the page reads them there.
//!
//! Held in memory only: a draft is gone when the host stops, and the reply it announced is in
//! the mailbox either way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::session::outlet::Drafting;

/// A reply being written in the web chat, as the chat page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebDraft {
    pub agent_name: String,
    /// The inbound message the reply will answer.
    pub reply_to: i64,
    pub text: String,
}

#[derive(Clone)]
pub struct WebChannel {
    // Never held across an `.await`: every use is a short insert, remove or clone.
    drafts: Arc<Mutex<HashMap<String, WebDraft>>>,
    /// Bumped on every change the chat page shows live.
    changes: watch::Sender<u64>,
}

impl Default for WebChannel {
    fn default() -> Self {
        WebChannel {
            drafts: Arc::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl WebChannel {
    /// Records the draft of `session_id` (`None`: there is none now); announces a change only
    /// when there is one (delivery calls this on every pass).
    pub fn draft(&self, session_id: &str, agent_name: &str, draft: Option<&Drafting>) {
        let changed = {
            let mut drafts = self.drafts.lock().unwrap_or_else(|e| e.into_inner());
            match draft {
                Some(d) => {
                    let next = WebDraft {
                        agent_name: agent_name.to_owned(),
                        reply_to: d.reply_to,
                        text: d.text.clone(),
                    };
                    drafts.insert(session_id.to_owned(), next.clone()) != Some(next)
                }
                None => drafts.remove(session_id).is_some(),
            }
        };
        if changed {
            self.changed();
        }
    }

    /// The draft being written in `session_id`, if any.
    pub fn draft_of(&self, session_id: &str) -> Option<WebDraft> {
        let drafts = self.drafts.lock().unwrap_or_else(|e| e.into_inner());
        drafts.get(session_id).cloned()
    }

    /// Announces a change the chat page shows (a question asked or closed).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Follows the announcements.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn drafting(text: &str) -> Drafting {
        Drafting {
            reply_to: 2,
            reply_to_platform: None,
            step: 1,
            text: text.to_owned(),
            progress: None,
            show_tools: true,
        }
    }

    #[test]
    fn only_a_changed_draft_is_announced() {
        let web = WebChannel::default();
        let mut changes = web.changes();
        web.draft("s", "Andy", None);
        assert!(!changes.has_changed().unwrap(), "nothing to remove");
        web.draft("s", "Andy", Some(&drafting("Hel")));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        web.draft("s", "Andy", Some(&drafting("Hel")));
        assert!(!changes.has_changed().unwrap(), "the same text again");
        web.draft("s", "Andy", Some(&drafting("Hello")));
        assert!(changes.has_changed().unwrap());
        assert_eq!(web.draft_of("s").unwrap().text, "Hello");
        assert_eq!(web.draft_of("other"), None);
        changes.mark_unchanged();
        web.draft("s", "Andy", None);
        assert!(changes.has_changed().unwrap());
        assert_eq!(web.draft_of("s"), None);
    }
}
