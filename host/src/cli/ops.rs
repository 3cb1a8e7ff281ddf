//! The operator commands of `clawbox`: `status`, `sessions`, `agents`, `logs`, `dropped`,
//! `doctor`. Each asks the running host over the admin socket; when no host runs, each reads
//! the files itself, read-only (the central database and the session mailboxes), and says so —
//! and `doctor` runs its checks with this process's configuration. `--json` prints the report
//! as the protocol carries it (`logs --json`: one entry per line).
//!
//! `logs -f` follows through the host (it pushes new entries as the session changes) or, with
//! no host, by reading the files every half second; if the host goes away while following, the
//! command carries on from the files without repeating an entry.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::HostError;
use crate::admin::protocol::{DEFAULT_DROPPED_LIMIT, Event, Request};
use crate::cli::render::{self, LogPrinter};
use crate::config::Config;
use crate::db;
use crate::report::doctor;
use crate::report::inspect;
use crate::report::logs::{self, LogEntry, LogReader};

/// How often `logs -f` reads the files when no host pushes changes.
const FILE_POLL: Duration = Duration::from_millis(500);

/// Writes to stdout; a reader that went away (`clawbox logs -f | head`) ends the program
/// quietly, as Unix tools do.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

fn out_json<T: Serialize>(value: &T, pretty: bool) -> Result<(), HostError> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| HostError::Task(format!("cannot encode JSON: {e}")))?;
    out(&format!("{text}\n"));
    Ok(())
}

/// A connection to the running host.
struct HostLink {
    write: OwnedWriteHalf,
    events: mpsc::UnboundedReceiver<Event>,
    socket: std::path::PathBuf,
}

impl HostLink {
    /// `None` when no host answers on the socket.
    async fn connect(config: &Config) -> Option<HostLink> {
        let socket = config.socket_path();
        let stream = UnixStream::connect(&socket).await.ok()?;
        let (read, write) = stream.into_split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // An answer this build cannot read (a host of another version) must end the
                // wait for it, not leave the command hanging.
                let event = serde_json::from_str::<Event>(&line).unwrap_or_else(|e| Event::Error {
                    message: format!(
                        "unreadable answer ({e}); is the running host another clawbox version?"
                    ),
                });
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Some(HostLink {
            write,
            events,
            socket,
        })
    }

    async fn send(&mut self, request: &Request) -> Result<(), HostError> {
        let mut line = serde_json::to_string(request)
            .map_err(|e| HostError::Task(format!("cannot encode request: {e}")))?;
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| HostError::io("talk to host at", &self.socket, e))
    }

    /// The next answer (chat events are not answers); `None` when the host hung up.
    async fn next(&mut self) -> Result<Option<Event>, HostError> {
        loop {
            match self.events.recv().await {
                None => return Ok(None),
                Some(Event::Error { message }) => return Err(HostError::Admin(message)),
                Some(Event::Chat(_)) => continue,
                Some(event) => return Ok(Some(event)),
            }
        }
    }

    async fn ask(&mut self, request: &Request) -> Result<Event, HostError> {
        self.send(request).await?;
        self.next()
            .await?
            .ok_or_else(|| HostError::Task("the host closed the connection".into()))
    }
}

fn unexpected(event: &Event) -> HostError {
    HostError::Task(format!("unexpected answer from the host: {event:?}"))
}

/// Runs `f` on the blocking pool with the central database opened read-only.
async fn from_files<R, F>(config: &Config, f: F) -> Result<R, HostError>
where
    F: FnOnce(&rusqlite::Connection, &Config) -> Result<R, inspect::InspectError> + Send + 'static,
    R: Send + 'static,
{
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let conn = db::open_read_only(&config.db_path())?;
        Ok(f(&conn, &config)?)
    })
    .await
    .map_err(|e| HostError::Task(e.to_string()))?
}

pub async fn status(config: Config, json: bool) -> Result<ExitCode, HostError> {
    let report = match HostLink::connect(&config).await {
        Some(mut host) => match host.ask(&Request::Status).await? {
            Event::Status { status } => status,
            other => return Err(unexpected(&other)),
        },
        None => {
            let now = Utc::now();
            from_files(&config, move |conn, config| {
                inspect::status(conn, config, None, now)
            })
            .await?
        }
    };
    if json {
        out_json(&report, true)?;
    } else {
        out(&render::status(&report));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sessions(config: Config, json: bool) -> Result<ExitCode, HostError> {
    let list = match HostLink::connect(&config).await {
        Some(mut host) => match host.ask(&Request::Sessions).await? {
            Event::Sessions { sessions } => sessions,
            other => return Err(unexpected(&other)),
        },
        None => {
            let now = Utc::now();
            from_files(&config, move |conn, config| {
                inspect::sessions(conn, config, None, now)
            })
            .await?
        }
    };
    if json {
        out_json(&list, true)?;
    } else {
        out(&render::sessions(&list));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(config: Config, json: bool) -> Result<ExitCode, HostError> {
    let list = match HostLink::connect(&config).await {
        Some(mut host) => match host.ask(&Request::Agents).await? {
            Event::Agents { agents } => agents,
            other => return Err(unexpected(&other)),
        },
        None => {
            from_files(&config, |conn, config| {
                inspect::agents(conn, &config.default_model, None)
            })
            .await?
        }
    };
    if json {
        out_json(&list, true)?;
    } else {
        out(&render::agents(&list));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dropped(
    config: Config,
    json: bool,
    limit: Option<u32>,
) -> Result<ExitCode, HostError> {
    let list = match HostLink::connect(&config).await {
        Some(mut host) => match host.ask(&Request::Dropped { limit }).await? {
            Event::Dropped { dropped } => dropped,
            other => return Err(unexpected(&other)),
        },
        None => {
            let limit = limit.unwrap_or(DEFAULT_DROPPED_LIMIT);
            from_files(&config, move |conn, _| inspect::dropped(conn, limit, false)).await?
        }
    };
    if json {
        out_json(&list, true)?;
    } else {
        out(&render::dropped(&list, config.timezone));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status 1 if any check failed.
pub async fn doctor(config: Config, json: bool) -> Result<ExitCode, HostError> {
    let report = match HostLink::connect(&config).await {
        Some(mut host) => match host.ask(&Request::Doctor).await? {
            Event::Doctor { doctor } => doctor,
            other => return Err(unexpected(&other)),
        },
        None => {
            let agents = doctor::agents_on_file(&config).await;
            doctor::run(&config, agents, false).await
        }
    };
    if json {
        out_json(&report, true)?;
    } else {
        out(&render::doctor(&report));
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `clawbox logs <session> [-f] [--json] [--tail N]`.
pub struct LogsArgs {
    pub session: String,
    pub follow: bool,
    pub json: bool,
    pub tail: Option<usize>,
}

/// Prints entries once each (a host that goes away mid-follow hands over to the files).
struct LogSink {
    json: bool,
    printer: LogPrinter,
    seen: HashSet<String>,
}

impl LogSink {
    fn print(&mut self, entries: &[LogEntry]) -> Result<(), HostError> {
        for entry in entries {
            if !self.seen.insert(entry.id.clone()) {
                continue;
            }
            if self.json {
                out_json(entry, false)?;
            } else {
                out(&self.printer.print(entry));
            }
        }
        Ok(())
    }
}

pub async fn logs(config: Config, args: LogsArgs) -> Result<ExitCode, HostError> {
    let mut sink = LogSink {
        json: args.json,
        printer: LogPrinter::new(config.timezone),
        seen: HashSet::new(),
    };
    // A retired session's files are gone: say so, when, and where its archive is, instead
    // of printing an empty log.
    let session = args.session.clone();
    let retired = from_files(&config, move |conn, config| {
        logs::retirement(conn, config, &session)
    })
    .await?;
    if let Some(retired) = retired {
        if args.json {
            out_json(&retired, false)?;
        } else {
            out(&retired.describe(config.timezone));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(mut host) = HostLink::connect(&config).await else {
        if !args.json {
            eprintln!("(no host is running: reading the session's files)");
        }
        let session = args.session.clone();
        let reader = from_files(&config, move |conn, config| {
            LogReader::open(conn, config, &session)
        })
        .await?;
        return follow_files(reader, &mut sink, args.tail, args.follow).await;
    };
    host.send(&Request::Logs {
        session: args.session.clone(),
        follow: args.follow,
        tail: args.tail,
    })
    .await?;
    let mut session_id = None;
    loop {
        let event = tokio::select! {
            event = host.next() => event?,
            _ = tokio::signal::ctrl_c(), if args.follow => return Ok(ExitCode::SUCCESS),
        };
        match event {
            Some(Event::Logs {
                session_id: id,
                entries,
            }) => {
                sink.print(&entries)?;
                if !args.follow {
                    return Ok(ExitCode::SUCCESS);
                }
                session_id = Some(id);
            }
            Some(other) => return Err(unexpected(&other)),
            None => break,
        }
    }
    // The host went away while following: carry on from the files.
    let Some(session_id) = session_id else {
        return Err(HostError::Task("the host closed the connection".into()));
    };
    if !args.json {
        eprintln!("(the host stopped: following the session's files)");
    }
    let reader = from_files(&config, move |conn, config| {
        LogReader::open(conn, config, &session_id)
    })
    .await?;
    follow_files(reader, &mut sink, None, true).await
}

/// Prints the log from the files, then (`follow`) what is new every [`FILE_POLL`] until
/// Ctrl-C.
async fn follow_files(
    reader: LogReader,
    sink: &mut LogSink,
    tail: Option<usize>,
    follow: bool,
) -> Result<ExitCode, HostError> {
    let (mut reader, first) = poll_files(reader).await?;
    sink.print(&logs::keep_tail(first, tail))?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(FILE_POLL) => {}
        }
        let (next, entries) = poll_files(reader).await?;
        reader = next;
        sink.print(&entries)?;
    }
}

async fn poll_files(mut reader: LogReader) -> Result<(LogReader, Vec<LogEntry>), HostError> {
    tokio::task::spawn_blocking(move || {
        let entries = reader.poll()?;
        Ok((reader, entries))
    })
    .await
    .map_err(|e| HostError::Task(e.to_string()))?
}
