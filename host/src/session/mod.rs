//! The message path: from an inbound message to a session's mailbox, the runner that serves it,
//! and the delivery of what it writes back. `router.rs` decides which agents take a message and
//! writes it into their sessions (`resolve.rs` finds or creates them, `inbound_files.rs` stores
//! their files); `supervisor.rs` runs one task per active session (the runner's life,
//! `liveness.rs`, `watch.rs`, the disk quota in `disk.rs`); `delivery.rs` reads the runner's outbox (`outbox.rs` for its
//! files), delivers replies through the [`outlet::Outlet`] the channels implement, and hands
//! requests to `requests.rs` and questions to `questions.rs`; `activity.rs` says in a sentence
//! what the agent is doing, `progress.rs` in a short line what its tool calls do;
//! `first_contact.rs` logs a stranger's first refused message with the command that wires it.
//!
//! Uses the layers below it (`config`, `db`, `proxy`, `runtime`); channels, the scheduler and
//! the operator's surface sit above it and call in.

pub mod activity;
pub mod delivery;
pub mod disk;
pub mod first_contact;
pub mod inbound_files;
pub mod liveness;
pub mod outbox;
pub mod outlet;
pub mod progress;
pub mod questions;
pub mod requests;
pub mod resolve;
pub mod retention;
pub mod router;
pub mod supervisor;
pub mod watch;

use crate::db::Db;
use router::Router;
use supervisor::Supervisor;

/// What the sources of messages above this layer (the channel adapters) hand their messages,
/// button presses and answers to. Cheap to clone.
#[derive(Clone)]
pub struct Inlet {
    pub db: Db,
    pub router: Router,
    pub supervisor: Supervisor,
}
