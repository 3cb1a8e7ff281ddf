//! One module per group of tools. Each adds its routes to [`Tools`] with
//! `#[tool_router(router = <group>_router)]`, and keeps its behaviour in plain functions over
//! [`Context`] that return `Result<String, ToolError>`. `Tools::new` joins the routes; the MCP
//! handler around them is `crate::server`'s.

mod bash;
mod files;
mod message;
mod question;
mod search;
mod send_file;
mod skills;
mod tasks;

#[cfg(test)]
mod races;

use std::sync::Arc;

use mailbox::SessionPaths;
use rmcp::handler::server::router::tool::ToolRouter;

use crate::config::Config;
use crate::paths::Confinement;
use crate::reaper::Registry;

/// What every tool call may use; built once at startup.
pub(crate) struct Context {
    pub config: Arc<Config>,
    pub session: SessionPaths,
    pub confinement: Confinement,
    /// `run_bash` commands in flight; what they leave behind is swept when they end.
    pub reaper: Registry,
}

#[derive(Clone)]
pub struct Tools {
    pub(crate) ctx: Arc<Context>,
    pub(crate) tool_router: ToolRouter<Self>,
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
            reaper: Registry::default(),
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
