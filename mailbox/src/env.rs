//! The names of the environment variables through which the host configures a runner (and
//! the runner its built-in MCP server). Both sides use these constants, so the contract cannot
//! drift; docs/architecture.md lists their meanings.

pub const SESSION_ID: &str = "CLAWBOX_SESSION_ID";
pub const AGENT_ID: &str = "CLAWBOX_AGENT_ID";
/// The host's install id: how a restarted host recognises runners it started.
pub const INSTALL: &str = "CLAWBOX_INSTALL";
/// Directory holding `inbound/` and `outbound/`.
pub const MAILBOX_DIR: &str = "CLAWBOX_MAILBOX_DIR";
pub const WORKSPACE: &str = "CLAWBOX_WORKSPACE";
pub const AGENT_DIR: &str = "CLAWBOX_AGENT_DIR";
pub const GLOBAL_DIR: &str = "CLAWBOX_GLOBAL_DIR";
pub const MODEL: &str = "CLAWBOX_MODEL";
pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
/// The runner's credential for the host's model proxy (a per-session token). The runner never
/// gets `OPENAI_API_KEY`: nothing named like the real key exists in its environment.
pub const MODEL_TOKEN: &str = "CLAWBOX_MODEL_TOKEN";
/// The model proxy's Unix socket inside a container: when set, the runner sends its model
/// requests over it, whatever host `OPENAI_BASE_URL` names.
pub const MODEL_SOCKET: &str = "CLAWBOX_MODEL_SOCKET";
pub const TIMEZONE: &str = "TIMEZONE";
pub const ASSISTANT_NAME: &str = "ASSISTANT_NAME";
pub const IDLE_TIMEOUT_MS: &str = "CLAWBOX_IDLE_TIMEOUT_MS";
pub const HEARTBEAT_MS: &str = "CLAWBOX_HEARTBEAT_MS";
pub const MAX_STEPS: &str = "CLAWBOX_MAX_STEPS";
pub const MODEL_TIMEOUT_MS: &str = "CLAWBOX_MODEL_TIMEOUT_MS";
pub const MODEL_RETRIES: &str = "CLAWBOX_MODEL_RETRIES";
pub const MODEL_BACKOFF_MS: &str = "CLAWBOX_MODEL_BACKOFF_MS";
pub const TOOL_TIMEOUT_MS: &str = "CLAWBOX_TOOL_TIMEOUT_MS";
/// How long a scheduled task's script may run before it is killed.
pub const TASK_SCRIPT_TIMEOUT_MS: &str = "CLAWBOX_TASK_SCRIPT_TIMEOUT_MS";
pub const MCP_TOOLS_BIN: &str = "CLAWBOX_MCP_TOOLS_BIN";
pub const SKILLS_DIR: &str = "CLAWBOX_SKILLS_DIR";
/// The model's context in tokens (prompt plus answer), the runner's budget for one request; an
/// agent's `container.json` `context_tokens` overrides it.
pub const CONTEXT_TOKENS: &str = "CLAWBOX_CONTEXT_TOKENS";
/// Days after which settled mailbox rows are deleted (the runner prunes `outbound.db` when it
/// starts; see `retention.rs`).
pub const RETENTION_DAYS: &str = "CLAWBOX_RETENTION_DAYS";
