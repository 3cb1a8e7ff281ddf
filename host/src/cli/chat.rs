//! `clawbox chat`: a terminal client of the admin socket. It attaches to the running host, or
//! starts one in this process when none is running (its logs then go to
//! `DATA_DIR/logs/clawbox.log` so they do not mix with the conversation). Replies are shown
//! under the name of the agent that wrote them. The operator commands (`status`, `logs`, …)
//! are `ops.rs`'s.
//!
//! Piped input (`printf 'hi\nbye\n' | clawbox chat`) is a scripted conversation: each line is
//! sent once the previous one has its verdict (so each line is its own turn), replies go to
//! stdout and notices to stderr, and the client exits once the last message has its verdict —
//! with status 1 if any message failed or was refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use mailbox::InboundStatus;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::HostError;
use crate::admin::protocol::{Event, Request};
use crate::app::{self, RunningHost};
use crate::channels::cli::ChatEvent;
use crate::config::Config;

/// `println!` that ends the program quietly when stdout's reader has gone away
/// (`clawbox chat | head`), as Unix tools do, instead of panicking.
/// A line for stderr, made safe like [`say!`]'s.
macro_rules! tell {
    ($($arg:tt)*) => {{
        eprintln!("{}", crate::cli::render::terminal_safe(&format!($($arg)*)));
    }};
}

macro_rules! say {
    ($($arg:tt)*) => {{
        // Agents' text must not drive the terminal (escape sequences, bidi overrides).
        let line = crate::cli::render::terminal_safe(&format!($($arg)*));
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush())
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }};
}

/// Logs to stderr, or to `file` (appending) when given. `RUST_LOG` filters (default `info`).
pub fn init_logging(file: Option<&Path>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (stderr is a pipe whose reader is gone, as with
    // `clawbox run 2>&1 | tee log` after Ctrl-C) is dropped: reporting it would write to
    // stderr again, and Rust's `eprintln!` panics on a closed pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    let opened = file.and_then(|path| {
        std::fs::create_dir_all(path.parent()?).ok()?;
        super::logfile::RotatingLog::open(path, super::logfile::LOG_CAP_BYTES).ok()
    });
    // A second init (tests, embedding) keeps the first subscriber; that is fine.
    let _ = match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Connects to the running host, starting one in-process if there is none.
async fn connect_or_start(config: &Config) -> Result<(UnixStream, Option<RunningHost>), HostError> {
    let socket = config.socket_path();
    if let Ok(stream) = UnixStream::connect(&socket).await {
        return Ok((stream, None));
    }
    match app::start(config.clone()).await {
        Ok(host) => {
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| HostError::io("connect", &socket, e))?;
            Ok((stream, Some(host)))
        }
        // Another terminal started a host meanwhile: use it.
        Err(HostError::AlreadyRunning(_)) => {
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| HostError::io("connect", &socket, e))?;
            Ok((stream, None))
        }
        Err(e) => Err(e),
    }
}

async fn send(write: &mut OwnedWriteHalf, request: &Request) -> std::io::Result<()> {
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

/// Reads events from the host until it hangs up.
fn spawn_reader(read: tokio::net::unix::OwnedReadHalf) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(ev) => {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!("unreadable event from host: {e}"),
            }
        }
    });
    rx
}

pub async fn run(config: Config) -> Result<ExitCode, HostError> {
    init_logging(Some(&config.log_dir().join("clawbox.log")));
    let (stream, in_process) = connect_or_start(&config).await?;
    let (read, mut write) = stream.into_split();
    let mut events = spawn_reader(read);
    let socket = config.socket_path();
    let io = |e| HostError::io("talk to host at", &socket, e);
    send(&mut write, &Request::Attach).await.map_err(io)?;
    let (agent, runtime, isolated) = loop {
        match events.recv().await {
            Some(Event::Attached {
                agent,
                runtime,
                isolated,
            }) => break (agent, runtime, isolated),
            Some(_) => continue,
            None => return Err(HostError::Task("the host closed the connection".into())),
        }
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive {
        let where_ = if in_process.is_some() {
            "in this process"
        } else {
            "via the running host"
        };
        let warning = if isolated { "" } else { ", NOT isolated" };
        eprintln!(
            "clawbox — chatting with {agent} ({runtime} runtime{warning}, {where_}). Ctrl-D to quit."
        );
    }
    let mut session = Session::new(agent, interactive);
    let code = session.drive(&mut write, &mut events).await.map_err(io)?;
    drop(write);
    if let Some(host) = in_process {
        host.shutdown().await;
    }
    Ok(code)
}

/// The conversation state of one terminal.
struct Session {
    agent: String,
    interactive: bool,
    /// Sent but not yet accepted or refused by the host.
    unanswered: usize,
    /// Accepted messages still waiting for their verdict.
    outstanding: HashSet<(String, i64)>,
    /// Verdicts that arrived before the acceptance they belong to.
    early: HashMap<(String, i64), InboundStatus>,
    /// Agents' questions waiting for an answer, oldest first; typed numbers answer the first.
    questions: VecDeque<OpenQuestion>,
    failed: bool,
}

/// A question shown on this terminal.
struct OpenQuestion {
    id: String,
    title: String,
    question: String,
    options: Vec<String>,
    /// Local `HH:MM` (or the raw timestamp if it does not parse).
    until: String,
}

impl OpenQuestion {
    fn show(&self) {
        say!("❓ {}\n{}", self.title, self.question);
        for (i, label) in self.options.iter().enumerate() {
            say!("  {}. {label}", i + 1);
        }
        say!(
            "(type a number from 1 to {}; open until {})",
            self.options.len(),
            self.until
        );
    }
}

impl Session {
    fn new(agent: String, interactive: bool) -> Self {
        Session {
            agent,
            interactive,
            unanswered: 0,
            outstanding: HashSet::new(),
            early: HashMap::new(),
            questions: VecDeque::new(),
            failed: false,
        }
    }

    fn busy(&self) -> bool {
        self.unanswered > 0 || !self.outstanding.is_empty()
    }

    fn prompt(&self) {
        if self.interactive && !self.busy() {
            print!("you › ");
            let _ = std::io::stdout().flush();
        }
    }

    async fn drive(
        &mut self,
        write: &mut OwnedWriteHalf,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> std::io::Result<ExitCode> {
        let mut input = BufReader::new(tokio::io::stdin()).lines();
        let mut eof = false;
        self.prompt();
        loop {
            if eof && !self.busy() {
                break;
            }
            // Interactive users may type ahead; a script waits for each answer — or for the
            // line that answers a question the agent is waiting on.
            let ready = self.interactive || !self.busy() || !self.questions.is_empty();
            tokio::select! {
                line = input.next_line(), if !eof && ready => match line? {
                    None => eof = true,
                    Some(line) => {
                        let text = line.trim_end_matches('\r');
                        if text.trim().is_empty() {
                            self.prompt();
                            continue;
                        }
                        if let Some(q) = self.questions.front() {
                            match text.trim().parse::<usize>() {
                                Ok(n) if (1..=q.options.len()).contains(&n) => {
                                    let answer = Request::Answer {
                                        question_id: q.id.clone(),
                                        choice: n,
                                    };
                                    send(write, &answer).await?;
                                }
                                _ => say!(
                                    "To answer “{}”, type a number from 1 to {} (open until {}).",
                                    q.title,
                                    q.options.len(),
                                    q.until
                                ),
                            }
                            continue;
                        }
                        send(write, &Request::Send { text: text.to_owned() }).await?;
                        self.unanswered += 1;
                        if self.interactive {
                            eprint!("\x1b[2m  {} is working…\x1b[0m", self.agent);
                        }
                    }
                },
                event = events.recv() => match event {
                    Some(ev) => self.on_event(ev),
                    None => {
                        eprintln!("clawbox: the host went away");
                        return Ok(ExitCode::from(1));
                    }
                },
            }
        }
        if self.interactive {
            eprintln!();
        }
        Ok(if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn clear_status_line(&self) {
        if self.interactive {
            eprint!("\r\x1b[2K");
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Accepted { session_id, seq } => {
                let key = (session_id, seq);
                let early = self.early.remove(&key);
                self.answered();
                match early {
                    Some(status) => self.verdict(status),
                    None => {
                        self.outstanding.insert(key);
                    }
                }
            }
            Event::Answered { text } => {
                self.answered();
                self.clear_status_line();
                if self.interactive {
                    say!("{} › {text}", self.agent);
                } else {
                    say!("{text}");
                }
                self.prompt();
            }
            Event::Rejected { reason } => {
                self.answered();
                self.failed = true;
                self.clear_status_line();
                tell!("⚠ {reason}");
                self.prompt();
            }
            Event::Chat(ChatEvent::Reply {
                agent,
                text,
                edit_of,
                files,
                ..
            }) => {
                self.clear_status_line();
                let edit = edit_of
                    .map(|n| format!("(edit of #{n}) "))
                    .unwrap_or_default();
                if !text.is_empty() || files.is_empty() {
                    match reply_label(&self.agent, &agent, self.interactive) {
                        Some(label) => say!("{label} › {edit}{text}"),
                        None => say!("{edit}{text}"),
                    }
                }
                for f in files {
                    say!("📎 {} ({} bytes): {}", f.name, f.bytes, f.path);
                }
            }
            Event::Chat(ChatEvent::Reaction {
                agent,
                reaction_to,
                emoji,
                ..
            }) => {
                self.clear_status_line();
                let who = if agent.is_empty() {
                    &self.agent
                } else {
                    &agent
                };
                tell!("({who} reacted {emoji} to #{reaction_to})");
            }
            Event::Chat(ChatEvent::Done {
                session_id,
                seq,
                status,
                ..
            }) => {
                let key = (session_id, seq);
                if self.outstanding.remove(&key) {
                    self.verdict(status);
                } else if self.unanswered > 0 {
                    self.early.insert(key, status);
                }
            }
            Event::Chat(ChatEvent::Question {
                question_id,
                title,
                question,
                options,
                expires_at,
                ..
            }) => {
                if self.questions.iter().any(|q| q.id == question_id) {
                    return;
                }
                let until = chrono::DateTime::parse_from_rfc3339(&expires_at)
                    .map_or(expires_at, |t| {
                        t.with_timezone(&chrono::Local).format("%H:%M").to_string()
                    });
                self.questions.push_back(OpenQuestion {
                    id: question_id,
                    title,
                    question,
                    options,
                    until,
                });
                if self.questions.len() == 1 {
                    self.clear_status_line();
                    if let Some(q) = self.questions.front() {
                        q.show();
                    }
                }
            }
            Event::Chat(ChatEvent::QuestionClosed {
                question_id,
                outcome,
            }) => {
                let was_first = self.questions.front().is_some_and(|q| q.id == question_id);
                self.questions.retain(|q| q.id != question_id);
                self.clear_status_line();
                tell!("{outcome}");
                match self.questions.front() {
                    Some(next) if was_first => next.show(),
                    _ => self.prompt(),
                }
            }
            Event::Chat(ChatEvent::Notice { text }) => {
                self.clear_status_line();
                tell!("{text}");
            }
            Event::Error { message } => {
                self.clear_status_line();
                tell!("clawbox: {message}");
            }
            Event::Attached { .. }
            | Event::Status { .. }
            | Event::Sessions { .. }
            | Event::Agents { .. }
            | Event::Logs { .. }
            | Event::Dropped { .. }
            | Event::Doctor { .. }
            | Event::Tasks { .. }
            | Event::Task { .. }
            | Event::TaskRun { .. } => {}
        }
    }

    /// The host answered one sent message (accepted or refused).
    fn answered(&mut self) {
        self.unanswered = self.unanswered.saturating_sub(1);
        if self.unanswered == 0 {
            // Verdicts parked for an acceptance that will not come (other agents on the same
            // chat) are of no further use.
            self.early.clear();
        }
    }

    fn verdict(&mut self, status: InboundStatus) {
        match status {
            InboundStatus::Failed => self.failed = true,
            InboundStatus::Completed | InboundStatus::Pending => {}
        }
        self.prompt();
    }
}

/// The name a reply is shown under: always in a conversation at a terminal; in a scripted
/// (piped) one only for agents other than the default, whose replies stay plain lines.
fn reply_label<'a>(default_agent: &'a str, agent: &'a str, interactive: bool) -> Option<&'a str> {
    let agent = if agent.is_empty() {
        default_agent
    } else {
        agent
    };
    (interactive || agent != default_agent).then_some(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_labels() {
        let table = [
            // (default agent, reply's agent, interactive, label)
            ("Andy", "Andy", true, Some("Andy")),
            ("Andy", "Helper", true, Some("Helper")),
            ("Andy", "", true, Some("Andy")),
            ("Andy", "Andy", false, None),
            ("Andy", "", false, None),
            ("Andy", "Helper", false, Some("Helper")),
        ];
        for (default_agent, agent, interactive, want) in table {
            assert_eq!(
                reply_label(default_agent, agent, interactive),
                want,
                "{default_agent} {agent} {interactive}"
            );
        }
    }
}
