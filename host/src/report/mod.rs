//! What operators are shown, gathered read-only from the central database and the session
//! mailboxes: `inspect.rs` (status, sessions, agents, dropped), `logs.rs` (one session's story)
//! and `doctor.rs` (checks with hints). The same functions serve a running host's admin socket
//! and the commands' fallback when no host runs; printing them for people is `cli::render`'s.
//!
//! Uses the layers below it (`config`, `db`, `runtime`, `session`), never the admin socket or
//! the clients.

pub mod doctor;
pub mod inspect;
pub mod logs;
