//! Integration tests of mcp-tools, in one binary (one link step): each starts the real
//! `mcp-tools` binary in a temporary session and talks to it with rmcp's client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
