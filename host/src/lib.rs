//! The clawbox host: routes chat messages into per-session mailboxes, runs one agent runner per
//! active session, and delivers the replies. `main.rs` is a thin CLI over [`app::start`],
//! [`cli::chat::run`] and the operator commands of [`cli::ops`].
//!
//! The modules are layers, listed here from the bottom up; a module uses its own layer and
//! those below it, never one above (`make lint` checks that no import cycle between them
//! comes back; docs/architecture.md draws the map):
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | settings | [`config`], [`schedule`] | the typed configuration; the pure time rules of tasks |
//! | store | [`db`] | the central database by entity, migrations, first-start defaults, task rows |
//! | model access | [`proxy`] | the OpenAI-compatible proxy that holds the key |
//! | execution | [`runtime`] | where runners run (process, docker), the agent image |
//! | message path | [`session`] | router, session resolution, supervisor, delivery, requests, questions, and the [`session::outlet::Outlet`] port channels implement |
//! | inbound sources | [`channels`], [`scheduler`] | the terminal and Telegram adapters; scheduled tasks firing into inboxes |
//! | facts | [`report`] | what operators are shown: status, sessions, agents, logs, doctor |
//! | operator server | [`admin`] | the admin socket, its protocol, the context handlers share |
//! | operator web | [`dashboard`] | the web dashboard: the same reports and task operations in a browser |
//! | assembly | [`app`] | starting and stopping a host |
//! | clients | [`cli`] | `clawbox chat`, the operator commands, `clawbox tasks`, `create-agent` |
//!
//! [`HostError`] is the crate's error: the root holds it so that every layer can return it.

pub mod admin;
pub mod app;
pub mod channels;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod session;

use std::path::{Path, PathBuf};

/// Errors of the host library. Startup errors end the process with this message; errors while
/// serving a request are reported to that request and the host carries on.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting is unusable; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// A session's mailbox could not be read or written.
    #[error(transparent)]
    Mailbox(#[from] mailbox::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The Docker engine is unreachable or refuses what agent containers need; the message
    /// says what and how to fix it. The host does not start.
    #[error("docker: {0}")]
    Docker(String),
    /// The agent image could not be checked or built; the host does not start.
    #[error("agent image: {0}")]
    Image(#[from] runtime::image::ImageError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another host owns this data directory.
    #[error("another clawbox host is running (socket {})", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("no such session: {0}")]
    UnknownSession(String),
    /// An operator query (`clawbox status`, `logs`, …) could not be answered.
    #[error(transparent)]
    Inspect(#[from] report::inspect::InspectError),
    /// The running host answered a request with an error event.
    #[error("the host answered: {0}")]
    Admin(String),
    /// A task operation was refused (unknown task, wrong state) or could not be applied.
    #[error(transparent)]
    Tasks(#[from] db::tasks::TaskError),
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl HostError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        HostError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
