//! The MCP face of the tools: the server description and the handler that dispatches calls
//! through the router [`Tools`] joins from each tool module. The tools and their shared context
//! live in `tools/`.

use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool_handler};

use crate::tools::Tools;

const INSTRUCTIONS: &str = "\
Tools of the clawbox session you are running in.
Paths: relative paths are inside the session workspace (the working directory of run_bash); \
paths starting with agent/ are inside the agent folder, which is shared by all sessions of this \
agent and holds its memory and skills. Absolute paths are accepted only inside those two folders; \
`..` and symbolic links that lead outside them are refused.
Scheduled tasks (schedule_task and friends) are kept by the host: each call returns what the host \
stored, or why it refused.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-tools", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
