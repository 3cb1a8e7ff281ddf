//! The session-mailbox protocol: the contract between the clawbox host and the agent container.
//!
//! A session is a directory with two SQLite files (see [`layout`]): `inbound/inbound.db`, written
//! only by the host, and `outbound/outbound.db`, written only by the container (agent-runner and
//! mcp-tools). This crate owns their schemas and migrations, seq allocation (even inbound, odd
//! outbound), acks, the host's delivery-state table, the two event logs, the drafts of turns
//! in progress ([`drafts`]), the heartbeat file,
//! and requests from the container to the host with their answers ([`request`], with the task
//! operations in [`tasks`]). It has no async runtime and no network: every call is a short
//! blocking SQLite transaction (or, for [`request::wait_for_response`], a blocking wait), and callers in async
//! code run it off the runtime.

pub mod archive;
pub mod check;
pub mod drafts;
pub mod env;
pub mod events;
pub mod heartbeat;
pub mod inbound;
pub mod layout;
pub mod outbound;
pub mod private;
pub mod questions;
pub mod request;
pub mod retention;
mod schema;
pub mod seq;
mod sql;
pub mod tasks;
pub mod types;

pub use drafts::{Draft, DraftCall};
pub use events::{HostEvent, RunnerEvent, Stored};
pub use inbound::{InboundDb, InboundReader};
pub use layout::SessionPaths;
pub use outbound::{BadRow, OutCursors, OutboundDb, OutboundReader, OutboundTx, RowRead};
pub use sql::Journal;
pub use types::*;

use std::path::PathBuf;

/// Errors of the mailbox. Every caller treats them as "this session's files are unusable right
/// now": the host logs and retries on the next wake-up, the runner fails the turn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused an operation (locked past the busy timeout, disk full, corrupt file).
    #[error("session database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file or directory of the session could not be read or created.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database could not be put in the journal mode asked for (SQLite keeps a WAL file in
    /// WAL mode while another connection has it open): the caller retries later, when the
    /// other side has closed it.
    #[error("{} stays in journal mode {found}, not {wanted}: is another process using it?", path.display())]
    JournalMode {
        path: PathBuf,
        wanted: &'static str,
        found: String,
    },
    /// The database was written by a newer clawbox; refuse rather than corrupt it.
    #[error("{} has schema version {found}, newer than the {supported} this build supports", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A stored row does not decode (bad JSON content or an unknown enum value).
    #[error("malformed row in {table}: {detail}")]
    Malformed { table: &'static str, detail: String },
    /// An id used in a path (agent or session) contains characters that could escape the
    /// sessions directory.
    #[error("invalid {what} {value:?}: use letters, digits, '-', '_' and '.' (not leading)")]
    InvalidId { what: &'static str, value: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
