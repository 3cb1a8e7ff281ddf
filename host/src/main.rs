//! `clawbox`: run the host, chat with the default agent, or look at a running host.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::config::Config;

#[derive(Parser)]
#[command(name = "clawbox", version, about = "A self-hosted agent host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host in the foreground (logs to stderr) until SIGINT or SIGTERM.
    Run,
    /// Chat with the default agent: through the running host if there is one, otherwise with a
    /// host started in this process. Piped input sends one message per line.
    Chat,
    /// Show the running host's sessions and runners.
    Status {
        /// Print the raw JSON snapshot.
        #[arg(long)]
        json: bool,
    },
    /// Scheduled tasks: list, show, pause, resume, cancel, run-now. Through the running host,
    /// or on the database directly when none runs.
    Tasks {
        #[command(subcommand)]
        command: host::task_cmd::TasksCommand,
    },
    /// The agent image of the docker runtime.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the image (no registry needed) from the `agent-runner` and `mcp-tools` next to
    /// this binary, or `CLAWBOX_RUNNER_BIN`; `make image` runs it with the release builds.
    Build {
        /// Image tag (default: `CONTAINER_IMAGE`, else `clawbox-agent:latest`).
        #[arg(long)]
        tag: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` fills in what the environment does not set; a missing file is fine.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("clawbox: cannot read .env: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clawbox: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is short SQLite transactions; a burst of sessions should queue for a
        // few threads rather than grow hundreds that each keep a malloc arena afterwards.
        .max_blocking_threads(/*threads*/ 16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clawbox: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run => {
                host::chat::init_logging(None);
                run(config).await
            }
            Command::Chat => Ok(host::chat::run(config).await?),
            Command::Status { json } => Ok(host::chat::status(config, json).await?),
            Command::Tasks { command } => Ok(host::task_cmd::run(config, command).await?),
            Command::Image {
                command: ImageCommand::Build { tag },
            } => {
                let built = host::image::build_command(&config, tag.as_deref()).await?;
                println!("{} ({:.1} MB)", built.tag, built.size_bytes as f64 / 1e6);
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clawbox: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives every thread that allocates its own arena (up to 8 per core) and rarely returns
/// their memory; a host that served a burst of sessions would keep that RSS for good. Two
/// arenas are plenty for a host whose hot paths are I/O-bound.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let host = host::app::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C still works.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
