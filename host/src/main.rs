//! `clawbox`: run the host, chat with the default agent, or look at the host and its sessions
//! (through the running host's admin socket, or from the files when none runs).

use std::process::ExitCode;

/// `eprintln!` without its panic: when stderr is a closed pipe (`clawbox run 2>&1 | tee log`
/// after Ctrl-C) the line is lost, and there is nowhere left to report that.
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use clap::{Parser, Subcommand};
use host::config::{Config, Home, LoadError, load_env_file};

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
    /// Is it working? The host and one row per live session: container, what the agent is
    /// doing, pending and undelivered messages, tokens today, last error.
    Status {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every session, live or idle, with its last activity and message counts.
    Sessions {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every agent with its chats (engage mode, pattern, sticky window, session mode, unknown
    /// senders), destinations and roles.
    Agents {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What happened in one session: messages in, model steps with tokens, tool calls with
    /// duration and outcome, replies, deliveries, errors.
    Logs {
        /// The session: its id, a unique part of it, or an agent id (its latest session).
        session: String,
        /// Keep printing new events until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Print one JSON object per event and line.
        #[arg(long)]
        json: bool,
        /// Start with only the last N events.
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Messages the router refused (unknown chat, sender without a role, no agent engaged),
    /// newest first.
    Dropped {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        /// How many to show (default 50).
        #[arg(short = 'n', long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Check the runtime, model endpoint, Telegram token, directories and MCP servers; exit
    /// status 1 if a check fails.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Scheduled tasks: list, show, pause, resume, cancel, run-now. Through the running host,
    /// or on the database directly when none runs.
    Tasks {
        #[command(subcommand)]
        command: host::cli::tasks::TasksCommand,
    },
    /// Print a one-time login link for the web dashboard (`DASHBOARD_ADDR`); it works once,
    /// within ten minutes, and signs the browser in.
    Dashboard,
    /// The agent image of the docker runtime.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// First-run setup: asks for the model endpoint, key and model and the Telegram bot token,
    /// checks each live, writes them into the config home's `.env` (edited in place), and
    /// prints a pairing code that makes you the agent's owner from a private Telegram chat.
    Setup(host::cli::setup::SetupArgs),
    /// Print a new one-time pairing code: sent to the bot in a private Telegram chat
    /// (`/start <code>`) within ten minutes, it makes the sender the agent's owner and wires
    /// that chat to the agent.
    Pair(host::cli::setup::PairArgs),
    /// Create or update an agent and wire it to chats; `--list`, `--remove` (the same flags as
    /// the `create-agent` command).
    CreateAgent(host::cli::provision::Args),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the image (no registry needed) from the `agent-runner` and `mcp-tools` next to
    /// this binary, or `CLAWBOX_RUNNER_BIN`; `make image` runs it with the release builds.
    Build {
        /// Image tag, always rebuilt (default: `CONTAINER_IMAGE`, else `clawbox-agent:<hash>`,
        /// built only when that tag is not built yet; this install's older ones are removed).
        #[arg(long)]
        tag: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::find() {
        Ok(home) => home,
        Err(e) => {
            stderr_line!("clawbox: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Setup writes `.env`, so it must run when the current one is missing or invalid.
    let command = match cli.command {
        Command::Setup(args) => {
            return match small_runtime() {
                Ok(rt) => host::cli::setup::run(&rt, &home, args),
                Err(code) => code,
            };
        }
        command => command,
    };
    // `.env` fills in what the environment does not set; a missing file is fine.
    let loaded = load_env_file(&home.env_file())
        .and_then(|()| Config::from_env(&home.dir).map_err(LoadError::from));
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            stderr_line!("clawbox: {e}");
            return ExitCode::from(2);
        }
    };
    let command = match command {
        Command::CreateAgent(args) => {
            let rt = match small_runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            return match rt.block_on(host::cli::provision::run(&config, args)) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    stderr_line!("clawbox create-agent: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        }
        command => command,
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
            stderr_line!("clawbox: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Run => {
                host::cli::chat::init_logging(None, config.log_format);
                run(config).await
            }
            Command::Chat => Ok(host::cli::chat::run(config).await?),
            Command::Status { json } => Ok(host::cli::ops::status(config, json).await?),
            Command::Sessions { json } => Ok(host::cli::ops::sessions(config, json).await?),
            Command::Agents { json } => Ok(host::cli::ops::agents(config, json).await?),
            Command::Logs {
                session,
                follow,
                json,
                tail,
            } => {
                let args = host::cli::ops::LogsArgs {
                    session,
                    follow,
                    json,
                    tail,
                };
                Ok(host::cli::ops::logs(config, args).await?)
            }
            Command::Dropped { json, limit } => {
                Ok(host::cli::ops::dropped(config, json, limit).await?)
            }
            Command::Doctor { json } => Ok(host::cli::ops::doctor(config, json).await?),
            Command::Tasks { command } => Ok(host::cli::tasks::run(config, command).await?),
            Command::Dashboard => {
                println!("{}", host::dashboard::login_link(&config)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Image {
                command: ImageCommand::Build { tag },
            } => {
                let built = host::runtime::image::build_command(&config, tag.as_deref()).await?;
                println!("{} ({:.1} MB)", built.tag, built.size_bytes as f64 / 1e6);
                Ok(ExitCode::SUCCESS)
            }
            Command::Pair(args) => {
                print!("{}", host::cli::setup::pair(&config, &args).await?);
                Ok(ExitCode::SUCCESS)
            }
            // Handled above, before the multi-threaded runtime.
            Command::Setup(_) | Command::CreateAgent(_) => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            stderr_line!("clawbox: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A single-threaded runtime for the short commands (setup, create-agent).
fn small_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            stderr_line!("clawbox: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
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
    // Listening before the host starts: a SIGTERM or Ctrl-C that arrives while it starts (a
    // service manager stopping it, a test's fixture as soon as the socket answers) is kept and
    // ends the host once it is up, so the runners it started are stopped too; without the
    // handlers in place the default action would kill the process and leave them behind.
    let shutdown = shutdown_signal();
    let checked = config.clone();
    let host = host::app::start(config).await?;
    // The host starts whatever the model endpoint says (a model server can come up later);
    // what is wrong with it is said once, on one line, instead of at the first message.
    tokio::spawn(async move {
        if let Some(problem) = host::report::doctor::startup_model_problem(&checked).await {
            tracing::warn!("{problem}");
        }
    });
    shutdown.await;
    tracing::info!("shutting down");
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Registers the SIGTERM and SIGINT handlers now; the future completes at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            // Without the handlers, Ctrl-C through tokio's own listener still works.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
