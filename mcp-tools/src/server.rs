//! The MCP face of the tools: the shared [`Context`], the router that joins each tool module's
//! routes, and the server description. Tool behaviour lives in `tools/`.

use std::sync::Arc;

use mailbox::SessionPaths;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool_handler};

use crate::config::Config;
use crate::paths::Confinement;
use crate::tools::Lingering;

/// What every tool call may use; built once at startup.
pub(crate) struct Context {
    pub config: Arc<Config>,
    pub session: SessionPaths,
    pub confinement: Confinement,
    /// Process groups left running by `run_bash`; killed when the server stops.
    pub lingering: Lingering,
}

#[derive(Clone)]
pub struct Tools {
    pub(crate) ctx: Arc<Context>,
    tool_router: ToolRouter<Self>,
}

impl Tools {
    pub fn new(config: Arc<Config>) -> Self {
        let ctx = Context {
            session: config.session_paths(),
            confinement: Confinement::new(
                &config.workspace,
                &config.agent_dir,
                &config.session_paths().inbound_files(),
            ),
            config,
            lingering: Lingering::default(),
        };
        // One router per tool module; a new module adds its router here.
        let tool_router = Self::message_router()
            + Self::send_file_router()
            + Self::file_router()
            + Self::search_router()
            + Self::bash_router()
            + Self::skill_router()
            + Self::task_router()
            + Self::question_router();
        Tools {
            ctx: Arc::new(ctx),
            tool_router,
        }
    }
}

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
