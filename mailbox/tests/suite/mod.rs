//! One module per invariant of DESIGN §4 (plus liveness helpers of §5).

mod acks;
mod common;
mod delivery;
mod drafts;
mod events;
mod files;
mod heartbeat;
mod history;
mod idempotent;
mod order;
mod requests;
mod requeue;
mod retention;
mod schema;
mod seq;
mod state;
mod untrusted;
mod wal;
mod writers;
