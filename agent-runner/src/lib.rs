//! clawbox's agent-runner: runs inside a session container (or as a child process of the host),
//! claims inbound messages from the session mailbox, runs the ReAct loop against an
//! OpenAI-compatible model with MCP tools, and writes replies, history and acks to
//! `outbound.db`. See `docs/architecture.md` for the contract with the host.
//!
//! Modules, one responsibility each:
//! - [`config`]: the environment, parsed once;
//! - [`runner`]: the main loop (wake-ups, heartbeat, idle exit, shutdown);
//! - [`claim`]: what to work on next (batching, `/clear`, resume) and the claim;
//! - [`turn`]: the ReAct loop of one batch and its verdict;
//! - [`model`]: the chat-completions client with retries and a tolerant parser;
//! - [`mcp`]: MCP servers (process lifetime, tool routing, call timeouts);
//! - [`prompt`]: system prompt and message rendering;
//! - [`store`]: the SQLite handles on their own thread;
//! - [`activity`]: the runner-state row.

pub mod activity;
pub mod claim;
pub mod config;
pub mod mcp;
pub mod model;
pub mod prompt;
pub mod runner;
pub mod store;
pub mod turn;

pub use config::Config;
pub use runner::{RunError, run};
