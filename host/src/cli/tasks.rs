//! `clawbox tasks`: the operator's view of scheduled tasks — list, show (with the run
//! history), pause, resume, cancel, run-now — each with `--json`. The command-line client: it
//! asks the running host, or applies the command to the central database itself through
//! [`crate::admin::tasks::execute`] when no host runs (holding the data directory's lock, so no
//! host starts meanwhile; a host reads the changes when it starts). Task rules are
//! `db::tasks`'s and `scheduler`'s.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use mailbox::tasks::TaskView;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::HostError;
use crate::admin::protocol::{Event, Request};
use crate::config::Config;
use crate::db::Db;
use crate::db::tasks::{self, TaskRunView};
use crate::scheduler::{DirectInbox, Scheduler, SystemClock, TaskSignal};

/// The `clawbox tasks` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum TasksCommand {
    /// Every agent's active and paused tasks.
    List {
        /// Also cancelled and completed tasks.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One task and its recent runs.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a task from running until it is resumed.
    Pause {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Let a paused task run again (from its next scheduled time).
    Resume {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// End a task for good.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a task once now, whatever its schedule (skipped while its previous run is pending).
    RunNow {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

impl TasksCommand {
    fn json(&self) -> bool {
        match self {
            TasksCommand::List { json, .. }
            | TasksCommand::Show { json, .. }
            | TasksCommand::Pause { json, .. }
            | TasksCommand::Resume { json, .. }
            | TasksCommand::Cancel { json, .. }
            | TasksCommand::RunNow { json, .. } => *json,
        }
    }

    /// The admin-socket request for this command.
    fn request(&self) -> Request {
        match self.clone() {
            TasksCommand::List { all, .. } => Request::TaskList { all },
            TasksCommand::Show { id, .. } => Request::TaskShow { id },
            TasksCommand::Pause { id, .. } => Request::TaskPause { id },
            TasksCommand::Resume { id, .. } => Request::TaskResume { id },
            TasksCommand::Cancel { id, .. } => Request::TaskCancel { id },
            TasksCommand::RunNow { id, .. } => Request::TaskRunNow { id },
        }
    }
}

/// `clawbox tasks …`: exit status 0, or 1 with the reason on stderr.
pub async fn run(config: Config, command: TasksCommand) -> Result<ExitCode, HostError> {
    let json = command.json();
    let event = match ask_host(&config, &command).await {
        Some(event) => event?,
        None => match offline(&config, &command).await {
            Ok(event) => event,
            Err(e) => Event::Error {
                message: e.to_string(),
            },
        },
    };
    Ok(print(&event, json))
}

/// Asks the running host; `None` when there is none.
async fn ask_host(config: &Config, command: &TasksCommand) -> Option<Result<Event, HostError>> {
    let socket = config.socket_path();
    let stream = UnixStream::connect(&socket).await.ok()?;
    let io = |e| HostError::io("talk to host at", &socket, e);
    Some(
        async {
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(&command.request())
                .map_err(|e| HostError::Task(e.to_string()))?;
            line.push('\n');
            write.write_all(line.as_bytes()).await.map_err(io)?;
            let mut lines = BufReader::new(read).lines();
            while let Some(line) = lines.next_line().await.map_err(io)? {
                match serde_json::from_str::<Event>(&line) {
                    Ok(
                        event @ (Event::Tasks { .. }
                        | Event::Task { .. }
                        | Event::TaskRun { .. }
                        | Event::Error { .. }),
                    ) => return Ok(event),
                    Ok(_) => continue,
                    Err(e) => return Err(HostError::Task(format!("unreadable answer: {e}"))),
                }
            }
            Err(HostError::Task("the host closed the connection".into()))
        }
        .await,
    )
}

/// Applies the command to the database directly (no host runs).
async fn offline(config: &Config, command: &TasksCommand) -> Result<Event, HostError> {
    if !config.db_path().exists() {
        return match command {
            TasksCommand::List { .. } => Ok(Event::Tasks { tasks: Vec::new() }),
            TasksCommand::Show { id, .. }
            | TasksCommand::Pause { id, .. }
            | TasksCommand::Resume { id, .. }
            | TasksCommand::Cancel { id, .. }
            | TasksCommand::RunNow { id, .. } => {
                Err(tasks::TaskError::UnknownTask { id: id.clone() }.into())
            }
        };
    }
    // Held until we are done: a host starting meanwhile waits for nothing, it refuses to start
    // (and says another host is running), which beats two writers of one inbox.
    let _lock = crate::app::lock_data_dir(config)?;
    let path = config.db_path();
    let db = tokio::task::spawn_blocking(move || Db::open(&path))
        .await
        .map_err(|e| HostError::Task(e.to_string()))??;
    let scheduler = Scheduler::new(
        db.clone(),
        Arc::new(DirectInbox { db: db.clone() }),
        Arc::new(SystemClock),
        TaskSignal::default(),
        config.sessions_dir(),
    );
    let event = crate::admin::tasks::execute(&db, &scheduler, command.request())
        .await
        .unwrap_or_else(|| Err(HostError::Task("not a task request".into())))?;
    match command {
        TasksCommand::List { .. } | TasksCommand::Show { .. } => {}
        TasksCommand::Pause { .. } | TasksCommand::Resume { .. } | TasksCommand::Cancel { .. } => {
            eprintln!("(no host is running: the change is stored and applies when it starts)");
        }
        TasksCommand::RunNow { .. } => {
            eprintln!("(no host is running: the run waits in the session's inbox until it starts)");
        }
    }
    Ok(event)
}

/// Writes a line to stdout; a reader that went away (`| head`) ends the program quietly.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

fn print(event: &Event, json: bool) -> ExitCode {
    if let Event::Error { message } = event {
        eprintln!("clawbox: {message}");
        return ExitCode::from(1);
    }
    if json {
        let value = match event {
            Event::Tasks { tasks } => serde_json::to_value(tasks),
            Event::Task { task, runs } => serde_json::to_value(serde_json::json!({
                "task": task, "runs": runs
            })),
            Event::TaskRun { task, run } => serde_json::to_value(serde_json::json!({
                "task": task, "run": run
            })),
            other => serde_json::to_value(other),
        };
        match value {
            Ok(v) => out(&format!("{v:#}")),
            Err(e) => {
                eprintln!("clawbox: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    match event {
        Event::Tasks { tasks } => print_list(tasks),
        Event::Task { task, runs } => {
            print_task(task);
            if !runs.is_empty() {
                out("");
                print_runs(runs);
            }
        }
        Event::TaskRun { task, run } => match run.message {
            Some(seq) => out(&format!(
                "{}: run started (message {seq} in session {})",
                task.id, task.session
            )),
            None => out(&format!(
                "{}: run {} — {}",
                task.id,
                run.outcome,
                run.detail.as_deref().unwrap_or("")
            )),
        },
        other => out(&format!("{other:?}")),
    }
    ExitCode::SUCCESS
}

fn schedule_text(task: &TaskView) -> String {
    match (&task.cron, &task.run_at) {
        (Some(cron), _) => format!("cron {cron}"),
        (None, Some(at)) => format!("once {}", at.local),
        (None, None) => "-".into(),
    }
}

/// At most `n` characters of one line of `text`.
fn clip(text: &str, n: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > n || text.contains('\n') {
        format!("{}…", line.chars().take(n).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn print_list(tasks: &[TaskView]) {
    if tasks.is_empty() {
        out("no tasks");
        return;
    }
    out(&format!(
        "{:<14} {:<10} {:<9} {:<26} {:<38} {:<16} PROMPT",
        "ID", "AGENT", "STATUS", "SCHEDULE", "NEXT RUN", "LAST OUTCOME"
    ));
    for t in tasks {
        out(&format!(
            "{:<14} {:<10} {:<9} {:<26} {:<38} {:<16} {}",
            t.id,
            t.agent,
            t.status,
            clip(&schedule_text(t), 26),
            t.next_run.as_ref().map_or("-", |n| n.local.as_str()),
            t.last_outcome.map_or("-", |o| o.as_str()),
            clip(&t.prompt, 40)
        ));
    }
}

fn print_task(t: &TaskView) {
    let field = |name: &str, value: &str| out(&format!("{name:<13}{value}"));
    out(&format!("{}  ({})", t.id, t.status));
    field("agent", &format!("{} (session {})", t.agent, t.session));
    field("prompt", &t.prompt);
    match &t.script {
        Some(script) => field(
            "script",
            &format!("{} line(s): {}", script.lines().count(), clip(script, 60)),
        ),
        None => field("script", "none"),
    }
    match (&t.cron, &t.run_at) {
        (Some(cron), _) => field("schedule", &format!("cron \"{cron}\" in {}", t.timezone)),
        (None, Some(at)) => field("schedule", &format!("once at {} = {}", at.local, at.utc)),
        (None, None) => field("schedule", "-"),
    }
    field(
        "next run",
        &t.next_run
            .as_ref()
            .map_or_else(|| "-".to_owned(), |n| format!("{} = {}", n.local, n.utc)),
    );
    field(
        "last run",
        &t.last_run.as_ref().map_or_else(
            || "-".to_owned(),
            |l| {
                format!(
                    "{} — {}",
                    l.local,
                    t.last_outcome.map_or("-", |o| o.as_str())
                )
            },
        ),
    );
    field("runs", &t.run_count.to_string());
    field(
        "created",
        &format!(
            "{} by {}{}",
            t.created_at,
            t.created_by,
            t.requested_by
                .as_deref()
                .map(|r| format!(" for {r}"))
                .unwrap_or_default()
        ),
    );
}

fn print_runs(runs: &[TaskRunView]) {
    out(&format!(
        "{:<38} {:<9} {:<16} DETAIL",
        "SCHEDULED FOR", "TRIGGER", "OUTCOME"
    ));
    for r in runs {
        out(&format!(
            "{:<38} {:<9} {:<16} {}",
            r.scheduled_for.local,
            match r.trigger {
                tasks::RunTrigger::Schedule => "schedule",
                tasks::RunTrigger::RunNow => "run-now",
            },
            r.outcome,
            r.detail.as_deref().unwrap_or("")
        ));
    }
}
