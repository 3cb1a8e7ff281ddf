//! clawbox's built-in MCP server, run by agent-runner as a stdio child: messaging
//! (`send_message`, `send_file`, `edit_message`, `add_reaction`), workspace tools (`read_file`,
//! `write_file`, `edit_file`, `list_files`, `grep`, `run_bash`), `load_skill`, and the
//! scheduled-task tools (`schedule_task`, `list_tasks`, `update_task`, `pause_task`,
//! `resume_task`, `cancel_task`), which are requests to the host.
//! Owns the tools and their path confinement; the MCP client, tool naming and per-call timeouts
//! live in agent-runner.
//!
//! stdout is the JSON-RPC channel: nothing else may write to it (logs go to stderr).

mod beneath;
pub mod config;
pub mod error;
pub mod paths;
mod reaper;
mod server;
mod tools;

use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;

pub use config::{Config, ConfigError};
pub use tools::Tools;

/// Why the server stopped abnormally; `main` logs it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client did not complete the MCP handshake (it exited, or spoke something else).
    #[error("MCP handshake failed: {0}")]
    Initialize(#[from] Box<ServerInitializeError>),
    /// The server task panicked or was aborted.
    #[error("MCP server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Serves the tools on stdin/stdout until the client closes the channel or the process gets
/// SIGTERM / SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    reaper::become_subreaper();
    serve(config, rmcp::transport::stdio(), terminated()).await
}

/// Serves the tools on any rmcp transport until it closes or `shutdown` completes. Commands
/// still running are killed, with everything below the server, before it returns.
pub async fn serve<T, E, A>(
    config: Config,
    transport: T,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    T: rmcp::transport::IntoTransport<rmcp::RoleServer, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let tools = Tools::new(Arc::new(config));
    let ctx = tools.ctx.clone();
    let running = tools.serve(transport).await.map_err(Box::new)?;
    tokio::select! {
        reason = running.waiting() => tracing::info!(reason = ?reason?, "MCP client disconnected"),
        () = shutdown => tracing::info!("shutting down on signal"),
    }
    let killed = ctx.reaper.kill_all();
    if killed > 0 {
        tracing::info!(killed, "killed the processes of commands still running");
    }
    Ok(())
}

/// Completes on SIGTERM (the runner's graceful stop) or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            // Without handlers the default action (exit) still applies; we only lose the
            // cleanup of background process groups.
            tracing::warn!(error = %e, "cannot install signal handlers");
            std::future::pending::<()>().await;
        }
    }
}
