//! The clients: `clawbox chat` (`chat.rs`, with `draft.rs` for replies shown while written), the operator commands (`ops.rs`, printed by
//! `render.rs`), `clawbox tasks` (`tasks.rs`), `create-agent` (`provision.rs`) and `clawbox
//! setup` / `clawbox pair` (`setup.rs`, editing `.env` through `envfile.rs`). They talk to a
//! running host through the admin protocol (`admin::protocol`) and, when none runs, read the
//! files themselves through `report` (or start a host in-process, for `chat`).
//!
//! The top layer: nothing in the library imports from here.

pub mod chat;
pub mod draft;
pub mod envfile;
pub mod logfile;
pub mod ops;
pub mod provision;
pub mod render;
pub mod setup;
pub mod tasks;
