//! End-to-end tests: the real `clawbox` binary, real `agent-runner` and `mcp-tools` processes,
//! real SQLite files, and testkit's fake model server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
