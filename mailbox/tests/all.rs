//! Integration tests of the session mailbox: real SQLite files in temporary directories, real
//! child processes for cross-process seq allocation. One binary, one link step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
