//! `agent-runner`: reads its configuration from the environment and runs until idle or told to
//! stop (SIGTERM, SIGINT). Exit status 0 on idle/stop, 1 on a startup or mailbox error.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; the host stores our stderr as a log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = agent_runner::Config::from_env().context("invalid configuration")?;
    let shutdown = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
        on_signal.cancel();
    });

    agent_runner::run(config, shutdown).await?;
    Ok(())
}
