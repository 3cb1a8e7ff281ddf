//! What `agent-runner check-mcp` prints (one JSON object on stdout) and `clawbox doctor` reads:
//! whether each MCP server of an agent's `container.json` starts the way a runner would start
//! it. The contract between the two binaries, like the runner's environment in `env.rs`.

use serde::{Deserialize, Serialize};

/// The servers of one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpCheck {
    /// Problems with `container.json` itself or with entries that were not started (one
    /// readable line each, naming the file and the entry).
    pub problems: Vec<String>,
    /// Every valid entry, in file order.
    pub servers: Vec<ServerCheck>,
}

/// One server: started, listed its tools, stopped — or the error that prevented it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCheck {
    pub name: String,
    /// The command as configured.
    pub command: String,
    /// Its tools' names on the server (empty on error).
    pub tools: Vec<String>,
    /// Why it did not start; `None`: it did.
    pub error: Option<String>,
    /// Spawn, handshake and `tools/list`.
    pub elapsed_ms: u64,
}
