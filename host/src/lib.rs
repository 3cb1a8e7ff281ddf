//! The clawbox host: routes chat messages into per-session mailboxes, runs one agent runner per
//! active session, and delivers the replies. `main.rs` is a thin CLI over [`app::start`],
//! [`chat::run`] and the operator commands of [`ops`].

pub mod activity;
pub mod admin;
pub mod app;
pub mod channels;
pub mod chat;
pub mod config;
pub mod db;
pub mod delivery;
pub mod doctor;
pub mod image;
pub mod inbound_files;
pub mod inspect;
pub mod liveness;
pub mod logs;
pub mod ops;
pub mod outbox;
pub mod protocol;
pub mod provision;
pub mod proxy;
pub mod questions;
pub mod render;
pub mod requests;
pub mod router;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod sessions;
pub mod supervisor;
pub mod task_cmd;
pub mod tasks;
pub mod watch;

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
    Image(#[from] image::ImageError),
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
    Inspect(#[from] inspect::InspectError),
    /// The running host answered a request with an error event.
    #[error("the host answered: {0}")]
    Admin(String),
    /// A task operation was refused (unknown task, wrong state) or could not be applied.
    #[error(transparent)]
    Tasks(#[from] tasks::TaskError),
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
