//! Integration tests: the real `agent-runner` binary against a tempdir session, the fake model
//! server and (where tools are needed) the real `mcp-tools` binary. One test binary, one link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
