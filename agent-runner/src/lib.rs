//! clawbox's agent-runner: runs inside a session container (or as a child process of the host),
//! claims inbound messages from the session mailbox, runs the ReAct loop against an
//! OpenAI-compatible model with MCP tools, and writes replies, history and acks to
//! `outbound.db`. See `docs/architecture.md` for the contract with the host.
//!
//! Modules, one responsibility each:
//! - [`config`]: the environment, parsed once;
//! - [`runner`]: the main loop (wake-ups, heartbeat, idle exit, shutdown);
//! - [`budget`]: the context budget and token counting;
//! - [`compact`] (part of [`turn`]): summarising the oldest history, the memory flush, archives;
//! - [`overflow`]: recognising "too long for the context" refusals;
//! - [`claim`]: what to work on next (batching, `/clear`, resume) and the claim;
//! - [`turn`]: the ReAct loop of one batch and its verdict;
//! - [`model`]: the chat-completions client with retries and a tolerant parser;
//! - [`draft`]: the growing text of a streamed step, published as the turn's draft;
//! - [`mcp`]: MCP servers (process lifetime, tool routing, call timeouts);
//! - [`container_config`]: the user's MCP servers from the agent's `container.json`;
//! - [`tool_names`]: the names the model sees for tools (`mcp__<server>__<tool>`);
//! - [`hygiene`]: cleaning and capping tool output;
//! - [`prompt`]: system prompt and message rendering;
//! - [`script`]: the script gate of scheduled tasks;
//! - [`skills`]: `SKILL.md` files, their triggers and the prompt's skills section;
//! - [`store`]: the SQLite handles on their own thread;
//! - [`activity`]: the runner-state row;
//! - [`check`]: `agent-runner check-mcp`, the MCP servers of `container.json` for `clawbox doctor`.

pub mod activity;
pub mod budget;
pub mod check;
pub mod claim;
pub mod config;
pub mod container_config;
pub mod draft;
pub mod hygiene;
pub mod mcp;
pub mod model;
pub mod overflow;
pub mod prompt;
pub mod resume;
pub mod runner;
pub mod script;
pub mod skills;
pub mod store;
pub mod tool_names;
pub mod turn;

pub use config::Config;
pub use runner::{RunError, run};
pub use turn::compact;
