//! `clawbox chat`: a terminal client of the admin socket. It attaches to the running host, or
//! starts one in this process when none is running (its logs then go to
//! `DATA_DIR/logs/clawbox.log` so they do not mix with the conversation). Replies are shown
//! under the name of the agent that wrote them. The operator commands (`status`, `logs`, …)
//! are `ops.rs`'s.
//!
//! At a terminal the input line is rustyline's: line editing, history in
//! `DATA_DIR/chat_history` (Up/Down, Ctrl-R), bracketed paste (a pasted block with newlines is
//! one message). Replies, notices and the status line are printed above the line being typed
//! (rustyline's external printer), so typing ahead while the agent works never mixes with its
//! output. While a message waits for its verdict the client asks the host every second what the
//! agent does (`activity`, the `/status` sentence) and prints it when it changes; a tool call
//! shows at once as its progress line (`  ⋯ Andy is running `npm test`…`, from the draft
//! events), whatever the agent's `show_tools`. Piped output has no status lines. `/help` is
//! answered here; `/stop` (or Ctrl-C) stops the running turn (supervisor.rs); a second Ctrl-C
//! in a row, or Ctrl-D, quits with status 0 — a failed message was already shown, it is not the
//! session's outcome.
//!
//! Piped input (`printf 'hi\nbye\n' | clawbox chat`) is a scripted conversation: each line is
//! sent once the previous one has its verdict (so each line is its own turn), replies go to
//! stdout and notices to stderr, and the client exits once the last message has its verdict —
//! with status 1 if any message failed or was refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mailbox::InboundStatus;
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::HostError;
use crate::admin::protocol::{Event, Request};
use crate::app::{self, RunningHost};
use crate::channels::cli::ChatEvent;
use crate::cli::draft::{Drafts, Emit};
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

/// The log filter without `RUST_LOG`: clawbox at INFO, the libraries' chatter (MCP sessions,
/// HTTP connections, the Docker client, Telegram polling) only from WARN.
pub const DEFAULT_LOG_FILTER: &str = "info,rmcp=warn,hyper=warn,hyper_util=warn,h2=warn,\
                                      reqwest=warn,bollard=warn,teloxide=warn,axum=warn";

/// Logs to stderr, or to `file` (appending) when given, in `format`. `RUST_LOG` filters
/// (default [`DEFAULT_LOG_FILTER`]). Colours only when the lines go to a terminal: journald
/// and log files get plain text.
pub fn init_logging(file: Option<&Path>, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    // A log line that cannot be written (stderr is a pipe whose reader is gone, as with
    // `clawbox run 2>&1 | tee log` after Ctrl-C) is dropped: reporting it would write to
    // stderr again, and Rust's `eprintln!` panics on a closed pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let opened = file.and_then(|path| {
        std::fs::create_dir_all(path.parent()?).ok()?;
        super::logfile::RotatingLog::open(path, super::logfile::LOG_CAP_BYTES).ok()
    });
    // A second init (tests, embedding) keeps the first subscriber; that is fine.
    let _ = match (opened, format) {
        (Some(f), crate::config::LogFormat::Text) => {
            builder.with_writer(std::sync::Mutex::new(f)).try_init()
        }
        (Some(f), crate::config::LogFormat::Json) => builder
            .json()
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        (None, crate::config::LogFormat::Text) => builder.with_writer(std::io::stderr).try_init(),
        (None, crate::config::LogFormat::Json) => {
            builder.json().with_writer(std::io::stderr).try_init()
        }
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
    init_logging(
        Some(&config.log_dir().join("clawbox.log")),
        config.log_format,
    );
    // Checked beside the start, so a slow endpoint does not hold up the chat by more than the
    // check's short timeout; the chat opens either way (a model server can come up later).
    let (model_problem, connected) = tokio::join!(
        crate::report::doctor::startup_model_problem(&config),
        connect_or_start(&config)
    );
    let (stream, in_process) = connected?;
    if let Some(problem) = model_problem {
        eprintln!("clawbox: {problem}");
    }
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
    // The banner comes first and the terminal's mode is saved before the line editor's thread
    // starts: that thread draws the prompt (and switches to raw mode) at once, and a banner
    // printed after it would land behind the prompt.
    if interactive {
        let where_ = if in_process.is_some() {
            "in this process"
        } else {
            "via the running host"
        };
        let warning = if isolated { "" } else { ", NOT isolated" };
        eprintln!(
            "clawbox — chatting with {agent} ({runtime} runtime{warning}, {where_}). /help for commands, Ctrl-D to quit."
        );
    }
    let (input, out, saved_tty) = if interactive {
        let saved_tty = TtyMode::save();
        let (input, printer) = spawn_editor(config.data_dir.join(HISTORY_FILE))?;
        (input, Out::Editor(printer), saved_tty)
    } else {
        (spawn_piped(), Out::Plain, None)
    };
    let mut session = Session::new(agent, interactive, out);
    let code = session.drive(&mut write, &mut events, input).await;
    // The editor thread may still be inside readline (the host went away): give the terminal
    // back as it was.
    if let Some(tty) = saved_tty {
        tty.restore();
    }
    let code = code.map_err(io)?;
    drop(write);
    if let Some(host) = in_process {
        host.shutdown().await;
    }
    Ok(code)
}

/// The history file of the terminal chat, under `DATA_DIR`.
pub const HISTORY_FILE: &str = "chat_history";
/// Lines of history kept.
const HISTORY_LINES: usize = 1000;
/// How often the status line asks the host what the agent does while a message waits.
const ACTIVITY_POLL: Duration = Duration::from_secs(1);

/// `/help`, answered by the client itself.
pub const HELP: &str = "\
Commands:
  /help     this list (answered here, the agent is not asked)
  /status   what the agent is doing
  /stop     stop the running turn (tool commands are ended, nothing of the turn is kept)
  /clear    start a fresh conversation
Keys: Up/Down and Ctrl-R recall earlier lines; Ctrl-C stops the running turn, twice in a row \
quits; Ctrl-D quits. A pasted block is sent as one message.";

/// What the input side of the terminal delivers.
#[derive(Debug)]
enum Input {
    Line(String),
    /// Ctrl-C (the first of a pair: the second one quits).
    Interrupt,
    /// Ctrl-D, end of the piped input, a second Ctrl-C in a row, or the terminal went away.
    Eof,
}

/// Runs rustyline on a thread of its own (it blocks on the terminal) and hands each line over.
/// Lines go to the history file as they are entered.
fn spawn_editor(
    history: PathBuf,
) -> Result<
    (
        mpsc::UnboundedReceiver<Input>,
        Box<dyn ExternalPrinter + Send>,
    ),
    HostError,
> {
    let editor_error = |e: ReadlineError| HostError::Task(format!("terminal line editor: {e}"));
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES)
        .map_err(editor_error)?
        .history_ignore_dups(true)
        .map_err(editor_error)?
        .history_ignore_space(true)
        .bracketed_paste(true)
        .auto_add_history(true)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config).map_err(editor_error)?;
    // A missing history file is the first run; an unreadable one is said once and replaced.
    if let Err(e) = editor.load_history(&history)
        && !matches!(&e, ReadlineError::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
    {
        eprintln!(
            "clawbox: cannot read the chat history {}: {e}",
            history.display()
        );
    }
    let printer = Box::new(editor.create_external_printer().map_err(editor_error)?);
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut interrupted = false;
        loop {
            let input = match editor.readline("you › ") {
                Ok(line) => {
                    interrupted = false;
                    if let Err(e) = editor.append_history(&history) {
                        eprintln!("clawbox: cannot save the chat history: {e}");
                    }
                    Input::Line(line)
                }
                Err(ReadlineError::Interrupted) if !interrupted => {
                    interrupted = true;
                    Input::Interrupt
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => Input::Eof,
                Err(e) => {
                    eprintln!("clawbox: cannot read the terminal: {e}");
                    Input::Eof
                }
            };
            let last = matches!(input, Input::Eof);
            if tx.send(input).is_err() || last {
                return;
            }
        }
    });
    Ok((rx, printer))
}

/// Reads piped standard input line by line.
fn spawn_piped() -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            let input = match lines.next_line().await {
                Ok(Some(line)) => Input::Line(line.trim_end_matches('\r').to_owned()),
                Ok(None) => Input::Eof,
                Err(e) => {
                    eprintln!("clawbox: cannot read standard input: {e}");
                    Input::Eof
                }
            };
            let last = matches!(input, Input::Eof);
            if tx.send(input).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The terminal's mode at start, put back on the way out.
struct TtyMode(libc::termios);

impl TtyMode {
    fn save() -> Option<Self> {
        // SAFETY: tcgetattr writes a termios into the zeroed value we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            (libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0).then_some(TtyMode(t))
        }
    }

    fn restore(&self) {
        // SAFETY: tcsetattr reads the termios we saved; a failure leaves the mode as it is.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

/// Where the conversation is written: plain stdout/stderr (piped), or above the line being
/// edited (a terminal).
enum Out {
    Plain,
    Editor(Box<dyn ExternalPrinter + Send>),
}

impl Out {
    /// A line of the conversation (a reply): stdout when plain.
    fn reply(&mut self, text: &str) {
        match self {
            Out::Plain => say!("{text}"),
            Out::Editor(p) => print_above(p.as_mut(), text),
        }
    }

    /// Part of a reply being written (`draft.rs` decides what).
    fn emit(&mut self, pieces: Vec<Emit>) {
        for piece in pieces {
            match (&mut *self, piece) {
                (Out::Plain, Emit::Text(text)) => {
                    // Agents' text must not drive the terminal (escape sequences, bidi overrides).
                    let text = crate::cli::render::terminal_safe(&text);
                    let mut out = std::io::stdout().lock();
                    if let Err(e) = write!(out, "{text}").and_then(|()| out.flush())
                        && e.kind() == std::io::ErrorKind::BrokenPipe
                    {
                        std::process::exit(0);
                    }
                }
                (Out::Plain, Emit::Line(line)) => say!("{line}"),
                (Out::Editor(p), Emit::Text(text) | Emit::Line(text)) => {
                    print_above(p.as_mut(), &text);
                }
            }
        }
    }

    /// Everything else (notices, errors, the status line): stderr when plain.
    fn note(&mut self, text: &str) {
        match self {
            Out::Plain => tell!("{text}"),
            Out::Editor(p) => print_above(p.as_mut(), text),
        }
    }
}

fn print_above(printer: &mut dyn ExternalPrinter, text: &str) {
    // Agents' text must not drive the terminal (escape sequences, bidi overrides).
    let mut line = crate::cli::render::terminal_safe(text);
    line.push('\n');
    if let Err(e) = printer.print(line) {
        eprintln!("clawbox: cannot write to the terminal: {e}");
    }
}

/// The conversation state of one terminal.
struct Session {
    agent: String,
    interactive: bool,
    out: Out,
    /// The last status line shown, so that it is printed only when it changes.
    activity: Option<String>,
    /// Sent but not yet accepted or refused by the host.
    unanswered: usize,
    /// Accepted messages still waiting for their verdict.
    outstanding: HashSet<(String, i64)>,
    /// Verdicts that arrived before the acceptance they belong to.
    early: HashMap<(String, i64), InboundStatus>,
    /// Agents' questions waiting for an answer, oldest first; typed numbers answer the first.
    questions: VecDeque<OpenQuestion>,
    failed: bool,
    /// The reply being written, as far as it is shown.
    drafts: Drafts,
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
    fn show(&self, out: &mut Out) {
        let mut text = format!("❓ {}\n{}", self.title, self.question);
        for (i, label) in self.options.iter().enumerate() {
            text.push_str(&format!("\n  {}. {label}", i + 1));
        }
        text.push_str(&format!(
            "\n(type a number from 1 to {}; open until {})",
            self.options.len(),
            self.until
        ));
        out.reply(&text);
    }
}

impl Session {
    fn new(agent: String, interactive: bool, out: Out) -> Self {
        let lines = matches!(out, Out::Editor(_)).then(terminal_width);
        Session {
            drafts: Drafts::new(lines),
            agent,
            interactive,
            out,
            activity: None,
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

    async fn drive(
        &mut self,
        write: &mut OwnedWriteHalf,
        events: &mut mpsc::UnboundedReceiver<Event>,
        mut input: mpsc::UnboundedReceiver<Input>,
    ) -> std::io::Result<ExitCode> {
        let mut eof = false;
        let mut poll = tokio::time::interval(ACTIVITY_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // A script's end waits for its last verdict; a person quitting does not.
            if eof && (self.interactive || !self.busy()) {
                break;
            }
            // Interactive users may type ahead; a script waits for each answer — or for the
            // line that answers a question the agent is waiting on.
            let ready = self.interactive || !self.busy() || !self.questions.is_empty();
            tokio::select! {
                got = input.recv(), if !eof && ready => match got {
                    None | Some(Input::Eof) => eof = true,
                    Some(Input::Interrupt) => {
                        if self.busy() {
                            self.out.note("Stopping… (Ctrl-C again to quit)");
                            self.submit(write, "/stop").await?;
                        } else {
                            self.out.note("(Ctrl-C again, or Ctrl-D, to quit)");
                        }
                    }
                    Some(Input::Line(line)) => self.on_line(write, &line).await?,
                },
                event = events.recv() => match event {
                    Some(ev) => self.on_event(ev),
                    None => {
                        self.out.note("clawbox: the host went away");
                        return Ok(ExitCode::from(1));
                    }
                },
                _ = poll.tick(), if self.interactive && self.busy() => {
                    send(write, &Request::Activity).await?;
                }
            }
        }
        Ok(if self.failed && !self.interactive {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    async fn on_line(&mut self, write: &mut OwnedWriteHalf, line: &str) -> std::io::Result<()> {
        let text = line.trim_end_matches('\r');
        if text.trim().is_empty() {
            return Ok(());
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
                _ => {
                    let hint = format!(
                        "To answer “{}”, type a number from 1 to {} (open until {}).",
                        q.title,
                        q.options.len(),
                        q.until
                    );
                    self.out.reply(&hint);
                }
            }
            return Ok(());
        }
        if text.trim() == "/help" {
            self.out.note(HELP);
            return Ok(());
        }
        self.submit(write, text).await
    }

    async fn submit(&mut self, write: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
        send(
            write,
            &Request::Send {
                text: text.to_owned(),
            },
        )
        .await?;
        self.unanswered += 1;
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        if matches!(
            event,
            Event::Answered { .. } | Event::Chat(ChatEvent::Question { .. })
        ) {
            // Printed on stdout too: a draft's open line ends first.
            let pieces = self.drafts.interrupt();
            self.out.emit(pieces);
        }
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
                // The host's own answer (`/status`, `/stop`), not the agent's.
                if self.interactive {
                    self.out.reply(&format!("clawbox › {text}"));
                } else {
                    self.out.reply(&text);
                }
            }
            Event::Activity { text } => {
                if self.busy() && self.activity.as_deref() != Some(text.as_str()) {
                    self.out.note(&format!("  ⋯ {text}"));
                    self.activity = Some(text);
                }
            }
            Event::Rejected { reason } => {
                self.answered();
                self.failed = true;
                self.out.note(&format!("⚠ {reason}"));
            }
            Event::Chat(ChatEvent::Draft {
                session_id,
                agent,
                reply_to,
                step,
                text,
                progress,
            }) => {
                let label = reply_label(&self.agent, &agent, self.interactive);
                if !text.is_empty() {
                    let pieces = self.drafts.draft(&session_id, reply_to, step, &text, label);
                    self.out.emit(pieces);
                }
                // On the status line, below what the agent wrote before calling. Piped output
                // keeps only the conversation: no status lines there.
                if let Some(line) = progress.filter(|_| self.interactive) {
                    let line = match label {
                        Some(label) => format!("{label} is {line}"),
                        None => line,
                    };
                    if self.activity.as_deref() != Some(line.as_str()) {
                        self.out.note(&format!("  ⋯ {line}"));
                        self.activity = Some(line);
                    }
                }
            }
            Event::Chat(ChatEvent::Reply {
                session_id,
                agent,
                in_reply_to,
                text,
                edit_of,
                files,
                ..
            }) => {
                let edit = edit_of
                    .map(|n| format!("(edit of #{n}) "))
                    .unwrap_or_default();
                let label = reply_label(&self.agent, &agent, self.interactive);
                let mut before = Vec::new();
                let completed = match edit_of {
                    None => self
                        .drafts
                        .reply(&session_id, in_reply_to, &text, label, &mut before),
                    Some(_) => {
                        before.extend(self.drafts.interrupt());
                        None
                    }
                };
                self.out.emit(before);
                if let Some(rest) = completed {
                    self.out.emit(rest);
                } else if !text.is_empty() || files.is_empty() {
                    let line = match reply_label(&self.agent, &agent, self.interactive) {
                        Some(label) => format!("{label} › {edit}{text}"),
                        None => format!("{edit}{text}"),
                    };
                    self.out.reply(&line);
                }
                for f in files {
                    self.out
                        .reply(&format!("📎 {} ({} bytes): {}", f.name, f.bytes, f.path));
                }
            }
            Event::Chat(ChatEvent::Reaction {
                agent,
                reaction_to,
                emoji,
                ..
            }) => {
                let pieces = self.drafts.interrupt();
                self.out.emit(pieces);
                let who = if agent.is_empty() {
                    self.agent.clone()
                } else {
                    agent
                };
                self.out
                    .note(&format!("({who} reacted {emoji} to #{reaction_to})"));
            }
            Event::Chat(ChatEvent::Done {
                session_id,
                seq,
                status,
                ..
            }) => {
                let pieces = self.drafts.done(&session_id, seq);
                self.out.emit(pieces);
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
                if self.questions.len() == 1
                    && let Some(q) = self.questions.front()
                {
                    q.show(&mut self.out);
                }
            }
            Event::Chat(ChatEvent::QuestionClosed {
                question_id,
                outcome,
            }) => {
                let was_first = self.questions.front().is_some_and(|q| q.id == question_id);
                self.questions.retain(|q| q.id != question_id);
                self.out.note(&outcome);
                if was_first && let Some(next) = self.questions.front() {
                    next.show(&mut self.out);
                }
            }
            Event::Chat(ChatEvent::Notice { text }) => self.out.note(&text),
            Event::Error { message } => self.out.note(&format!("clawbox: {message}")),
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
        if !self.busy() {
            self.activity = None;
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
    }
}

/// The terminal's width in columns (80 when it cannot be told).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed value we own.
    let cols = unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        (libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0).then_some(size.ws_col)
    };
    // One column spare: a line that fills the width exactly wraps on some terminals.
    cols.filter(|c| *c > 0).map_or(80, |c| usize::from(c) - 1)
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
