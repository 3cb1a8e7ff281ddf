//! `agent-runner`: reads its configuration from the environment and runs until idle or told to
//! stop (SIGTERM, SIGINT). Exit status 0 on idle/stop, 1 on a startup or mailbox error.
//!
//! `agent-runner check-mcp --agent-dir <dir> --workspace <dir>` instead starts each MCP server
//! of the agent's `container.json` once and prints a `mailbox::check::McpCheck` as JSON (for
//! `clawbox doctor`); it reads only `PATH`, `HOME`, `LANG` and `TIMEZONE`.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().map(String::as_str) == Some("check-mcp");
    // A check prints its report on stdout; only problems go to stderr.
    let default_filter = if check { "warn" } else { "info,rmcp=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; the host stores our stderr as a log.
        .with_ansi(std::io::stderr().is_terminal())
        // Our stderr is a pipe the host reads; a host that died leaves it closed. A line that
        // cannot be written is dropped: reporting the failure would write to stderr again,
        // and `eprintln!` panics on a closed pipe, which would end the runner mid-turn.
        .log_internal_errors(false)
        .init();
    if check {
        return check_mcp(&args[1..]).await;
    }

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

/// `check-mcp --agent-dir <dir> --workspace <dir>`.
async fn check_mcp(args: &[String]) -> anyhow::Result<()> {
    let mut agent_dir = None;
    let mut workspace = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--agent-dir" => &mut agent_dir,
            "--workspace" => &mut workspace,
            other => anyhow::bail!("check-mcp: unknown argument {other:?}"),
        };
        let value = args
            .next()
            .with_context(|| format!("check-mcp: {flag} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    let agent_dir = agent_dir.context("check-mcp: --agent-dir is required")?;
    let workspace = workspace.context("check-mcp: --workspace is required")?;
    let timezone = match std::env::var(mailbox::env::TIMEZONE) {
        Ok(tz) if !tz.trim().is_empty() => tz
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("TIMEZONE={tz:?}: {e}"))?,
        _ => chrono_tz::Tz::UTC,
    };
    let inherited: Vec<(String, String)> = agent_runner::config::INHERITED
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect();
    let base_env = agent_runner::mcp::server_base_env(&inherited, timezone);
    let report = agent_runner::check::check_mcp(&agent_dir, &workspace, base_env).await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
