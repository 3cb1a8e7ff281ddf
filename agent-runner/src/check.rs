//! `agent-runner check-mcp`: starts every MCP server of an agent's `container.json` exactly as
//! a runner would (same parsing, environment allow-list, startup timeout, handshake and
//! `tools/list`), stops each again, and reports. `clawbox doctor` runs it so that what it checks
//! is what a runner will do, not a second implementation of it.

use std::path::Path;
use std::time::Instant;

use futures::future::join_all;
use mailbox::check::{McpCheck, ServerCheck};

use crate::container_config;
use crate::mcp;

/// Checks the servers of the agent in `agent_dir`, concurrently, with `workspace` as their
/// working directory and `base_env` as the allow-listed environment they start from.
pub async fn check_mcp(
    agent_dir: &Path,
    workspace: &Path,
    base_env: Vec<(String, String)>,
) -> McpCheck {
    let user = container_config::read(agent_dir).await;
    let specs: Vec<mcp::ServerSpec> = user
        .servers
        .iter()
        .map(|server| mcp::user_server_in(base_env.clone(), workspace, server, user.call_timeout))
        .collect();
    let probes = specs
        .iter()
        .zip(&user.servers)
        .map(|(spec, server)| async move {
            let began = Instant::now();
            let result = mcp::probe(spec).await;
            let elapsed_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (tools, error) = match result {
                Ok(tools) => (tools, None),
                Err(err) => (Vec::new(), Some(err.to_string())),
            };
            ServerCheck {
                name: server.name.clone(),
                command: server.command.clone(),
                tools,
                error,
                elapsed_ms,
            }
        });
    McpCheck {
        problems: user.problems,
        servers: join_all(probes).await,
    }
}
