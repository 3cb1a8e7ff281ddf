//! The operator's terminal over a real host: `clawbox status`, `sessions`, `agents`, `logs`,
//! `dropped` through the admin socket, the same commands from the files once no host runs,
//! `logs -f` following what happens after it started, and the admin protocol's answer to
//! requests it cannot read. The fake model reports fixed token counts, so only times, ids and
//! durations need blanking in the snapshots.

use std::process::{Output, Stdio};
use std::time::Duration;

use host::admin::protocol::{Event, Request};
use host::report::inspect::{AgentList, DroppedList, SessionList, StatusReport};
use host::report::logs::{LogEntry, LogEvent};
use mailbox::{Activity, InboundDb, InboundKind, NewInbound, Route, SessionPaths};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{HostFixture, Reply, ToolCall};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::support::*;

/// Runs `clawbox <args>` and returns its output; asserts the exit status.
async fn clawbox(fixture: &HostFixture, args: &[&str], success: bool) -> Output {
    let out = fixture.command(args).output().await.unwrap();
    assert_eq!(
        out.status.success(),
        success,
        "clawbox {args:?}: {out:?}\n{}",
        fixture.logs()
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `logs --json`: one entry per line.
fn entries_of(out: &Output) -> Vec<LogEntry> {
    text(out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Blanks what changes from run to run: times, ids, pids, durations, ages, uptimes. For tables
/// (`table`), whose column widths follow those values, runs of spaces become two: their
/// alignment is asserted by [`assert_aligned`] instead.
fn settings(table: bool) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    for (pattern, replacement) in [
        (r"sess-\d{14}-[a-z0-9]{6}", "[session]"),
        (r"── \d{4}-\d{2}-\d{2} \(UTC\)", "── [date]"),
        (r"\d{2}:\d{2}:\d{2}\.\d{3}", "[time]"),
        (r"pid \d+", "pid [pid]"),
        (r"\d+(\.\d)? (ms|s)\b", "[duration]"),
        (r"\b(\d+[smhd] )?\d+[smhd] ago\b", "[age] ago"),
        (r"host up (\d+[smhd] )?\d+[smhd]", "host up [uptime]"),
        (r"running (\d+[smhd] )?\d+[smhd]", "running [uptime]"),
        (
            r"(tool \S+|model step \d+) \((\d+[smhd] )?\d+[smhd]\)",
            "$1 ([elapsed])",
        ),
    ] {
        s.add_filter(pattern, replacement);
    }
    if table {
        s.add_filter(r" {2,}", "  ");
    }
    s
}

/// Every left-aligned column of the table (its lines up to the first empty one) starts where
/// its header starts, on every row.
fn assert_aligned(table: &str, columns: &[&str]) {
    let lines: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
    let header = lines[0];
    for column in columns {
        let start = header
            .find(column)
            .unwrap_or_else(|| panic!("{column} not in {header}"));
        let col = header[..start].chars().count();
        for line in &lines[1..] {
            let chars: Vec<char> = line.chars().collect();
            assert!(
                chars.get(col).is_some_and(|c| !c.is_whitespace())
                    && (col == 0 || chars.get(col - 1) == Some(&' ')),
                "column {column} is not aligned:\n{table}"
            );
        }
    }
}

/// Waits until the session's runner records `activity`.
async fn wait_activity(fixture: &HostFixture, session: &str, activity: Activity) {
    let db = session_dir(fixture, session).join("outbound/outbound.db");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(reader) = mailbox::OutboundReader::open(&db)
            && let Ok(Some(state)) = reader.runner_state()
            && state.activity == activity
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {activity:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn status_and_logs_tell_the_story_of_a_session() {
    let (model, mut fixture) = setup().await;
    model.set_usage(/*prompt*/ 1200, /*completion*/ 30);
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();

    // A turn with a tool call that takes a while: status shows it in flight.
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({ "command": "sleep 2; echo done" }),
    )]));
    model.push(Reply::text("The notes say: done."));
    let (session, seq) = client.send("what do the notes say?").await.unwrap();
    wait_activity(&fixture, &session, Activity::Tool).await;
    let busy = clawbox(&fixture, &["status"], true).await;
    let report: StatusReport = json_of(&clawbox(&fixture, &["status", "--json"], true).await);
    assert_eq!(
        client.done(seq).await.unwrap().0,
        mailbox::InboundStatus::Completed
    );

    assert!(report.host.is_some());
    assert_eq!(report.runtime, "process");
    assert!(!report.isolated);
    assert_eq!(
        (report.containers.running, report.containers.cap),
        (1, Some(8))
    );
    let row = &report.sessions[0];
    assert_eq!(
        (row.id.as_str(), row.agent.as_str()),
        (session.as_str(), "default")
    );
    assert_eq!(row.chat, "cli:local");
    let doing = row.doing.as_ref().unwrap();
    assert_eq!(
        (doing.activity, doing.step, doing.tool.as_deref()),
        (Activity::Tool, 1, Some("run_bash"))
    );
    assert!(!doing.heartbeat_stale);
    assert_eq!(row.pending_in, 1);
    assert_eq!(row.tokens_today.total(), 1230);
    assert!(matches!(
        row.container,
        host::report::inspect::ContainerState::Running { .. }
    ));
    let busy = text(&busy);
    assert_aligned(
        busy.lines().skip(2).collect::<Vec<_>>().join("\n").as_str(),
        &[
            "SESSION",
            "AGENT",
            "CHAT",
            "CONTAINER",
            "DOING",
            "LAST ERROR",
        ],
    );
    settings(true).bind(|| insta::assert_snapshot!("status_busy", busy));

    // A turn whose model request fails: status shows the last error.
    model.push(Reply::Status(400, "model not found".to_owned()));
    let (_, failed) = client.send("and now?").await.unwrap();
    assert_eq!(
        client.done(failed).await.unwrap().0,
        mailbox::InboundStatus::Failed
    );
    let idle = text(&clawbox(&fixture, &["status"], true).await);
    settings(true).bind(|| insta::assert_snapshot!("status_after_error", idle));
    let report: StatusReport = json_of(&clawbox(&fixture, &["status", "--json"], true).await);
    let error = report.sessions[0].last_error.as_ref().unwrap();
    assert!(error.text.contains("model not found"), "{error:?}");
    assert_eq!(report.sessions[0].tokens_today.total(), 2460);

    // The whole story, by session id and by a part of it; as text and as JSON lines.
    let logs = text(&clawbox(&fixture, &["logs", &session], true).await);
    settings(false).bind(|| insta::assert_snapshot!("logs", logs));
    let suffix = &session[session.len() - 6..];
    let entries = entries_of(&clawbox(&fixture, &["logs", suffix, "--json"], true).await);
    let kinds: Vec<&str> = entries.iter().map(|e| kind(&e.event)).collect();
    assert_eq!(
        kinds,
        [
            "message_in",
            "runner_started",
            "runner_ready",
            "claimed",
            "model_step",
            "tool_call",
            "model_step",
            "reply",
            "completed",
            "delivered",
            "message_in",
            "claimed",
            "model_failed",
            "failed",
        ]
    );
    assert!(entries.iter().all(|e| e.session_id == session));
    assert!(entries.windows(2).all(|w| w[0].at <= w[1].at));
    let LogEvent::ToolCall { tool, ok, .. } = &entries[5].event else {
        unreachable!()
    };
    assert_eq!((tool.as_str(), *ok), ("run_bash", true));
    let LogEvent::ModelStep {
        prompt_tokens,
        completion_tokens,
        ..
    } = &entries[4].event
    else {
        unreachable!()
    };
    assert_eq!((*prompt_tokens, *completion_tokens), (Some(1200), Some(30)));
    // `--tail` and the agent id as the session.
    let tail =
        entries_of(&clawbox(&fixture, &["logs", "default", "--json", "-n", "2"], true).await);
    assert_eq!(tail, entries[entries.len() - 2..]);

    let sessions: SessionList = json_of(&clawbox(&fixture, &["sessions", "--json"], true).await);
    assert!(sessions.host_running);
    let row = &sessions.sessions[0];
    assert_eq!(
        (
            row.messages_in,
            row.messages_out,
            row.pending_in,
            row.failed_in
        ),
        (2, 1, 0, 1)
    );
    let listed = text(&clawbox(&fixture, &["sessions"], true).await);
    assert_aligned(
        &listed,
        &["SESSION", "AGENT", "CHAT", "STATE", "LAST ACTIVE"],
    );
    assert!(listed.contains(&session), "{listed}");

    let agents: AgentList = json_of(&clawbox(&fixture, &["agents", "--json"], true).await);
    let default = &agents.agents[0];
    assert_eq!(
        (
            default.agent.id.as_str(),
            default.sessions,
            default.live_sessions
        ),
        ("default", 1, 1)
    );
    assert_eq!(default.agent.wirings[0].engage_mode, "pattern");
    let shown = text(&clawbox(&fixture, &["agents"], true).await);
    settings(false).bind(|| insta::assert_snapshot!("agents", shown));

    // Without a host, the same commands read the files and say so.
    drop(client);
    fixture.stop().await.unwrap();
    let status = text(&clawbox(&fixture, &["status"], true).await);
    assert!(status.starts_with("no host is running"), "{status}");
    assert!(status.contains("nothing was left busy"), "{status}");
    let report: StatusReport = json_of(&clawbox(&fixture, &["status", "--json"], true).await);
    assert_eq!((report.host, report.sessions.len()), (None, 0));
    let offline: SessionList = json_of(&clawbox(&fixture, &["sessions", "--json"], true).await);
    assert!(!offline.host_running);
    assert_eq!(offline.sessions[0].messages_in, 2);
    assert!(text(&clawbox(&fixture, &["sessions"], true).await).starts_with("no host is running"));
    let agents: AgentList = json_of(&clawbox(&fixture, &["agents", "--json"], true).await);
    assert_eq!((agents.host_running, agents.agents.len()), (false, 1));
    assert!(text(&clawbox(&fixture, &["agents"], true).await).starts_with("no host is running"));
    // The same story, and how it ended: the host stopped the runner on its way out.
    let offline = entries_of(&clawbox(&fixture, &["logs", &session, "--json"], true).await);
    assert_eq!(offline[..entries.len()], entries[..]);
    let [
        LogEntry {
            event: LogEvent::RunnerExited {
                reason, unexpected, ..
            },
            ..
        },
    ] = &offline[entries.len()..]
    else {
        panic!("{offline:#?}");
    };
    assert_eq!(
        (reason.as_deref(), *unexpected),
        (Some("the host is shutting down"), false)
    );
    let out = clawbox(&fixture, &["logs", &session], true).await;
    assert!(text(&out).starts_with(&logs), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host is running"));
    let dropped: DroppedList = json_of(&clawbox(&fixture, &["dropped", "--json"], true).await);
    assert_eq!((dropped.host_running, dropped.total), (false, 0));
    // An unknown session is an error with a hint, from the files as from a host.
    let out = clawbox(&fixture, &["logs", "no-such-session"], false).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no session matches \"no-such-session\""),
        "{out:?}"
    );
}

fn kind(event: &LogEvent) -> &'static str {
    match event {
        LogEvent::MessageIn { .. } => "message_in",
        LogEvent::Claimed { .. } => "claimed",
        LogEvent::RunnerStarted { .. } => "runner_started",
        LogEvent::RunnerReady { .. } => "runner_ready",
        LogEvent::ModelStep { .. } => "model_step",
        LogEvent::ModelFailed { .. } => "model_failed",
        LogEvent::Compacted { .. } => "compacted",
        LogEvent::ToolCall { .. } => "tool_call",
        LogEvent::Reply { .. } => "reply",
        LogEvent::Edit { .. } => "edit",
        LogEvent::Reaction { .. } => "reaction",
        LogEvent::Request { .. } => "request",
        LogEvent::Completed { .. } => "completed",
        LogEvent::Failed { .. } => "failed",
        LogEvent::Requeued { .. } => "requeued",
        LogEvent::Delivered { .. } => "delivered",
        LogEvent::DeliveryFailed { .. } => "delivery_failed",
        LogEvent::RunnerExited { .. } => "runner_exited",
    }
}

/// A host killed mid-turn leaves its session busy: status from the files shows the runner it
/// left, still beating, and what it is doing.
#[tokio::test]
async fn without_a_host_status_shows_what_the_dead_host_left_busy() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::Hang);
    let (session, _) = client.send("think hard").await.unwrap();
    wait_activity(&fixture, &session, Activity::Model).await;
    fixture.kill().await.unwrap();

    let out = clawbox(&fixture, &["status"], true).await;
    let shown = text(&out);
    assert!(shown.starts_with("no host is running"), "{shown}");
    assert!(shown.contains("running (last host)"), "{shown}");
    assert!(shown.contains("model step 1"), "{shown}");
    let report: StatusReport = json_of(&clawbox(&fixture, &["status", "--json"], true).await);
    assert_eq!(report.sessions.len(), 1);
    let row = &report.sessions[0];
    assert_eq!(row.id, session);
    assert_eq!(
        row.container,
        host::report::inspect::ContainerState::Recorded {
            recorded: "running".into()
        }
    );
    assert_eq!(row.doing.as_ref().unwrap().activity, Activity::Model);
    assert_eq!(row.pending_in, 1);
    assert_eq!(report.containers.running, 1);
}

/// A child `clawbox logs -f --json` and its stdout, line by line.
struct Follower {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Follower {
    fn start(fixture: &HostFixture, session: &str) -> Follower {
        let mut child = fixture
            .command(&["logs", session, "-f", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        Follower {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Reads entries until one matches.
    async fn until(&mut self, pred: impl Fn(&LogEntry) -> bool) -> LogEntry {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .expect("timed out following the log")
                .unwrap()
                .expect("the follower ended");
            let entry: LogEntry = serde_json::from_str(&line).unwrap();
            if pred(&entry) {
                return entry;
            }
        }
    }
}

#[tokio::test]
async fn logs_follow_sees_what_happens_after_it_started() {
    let (_model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, first) = client.send("first").await.unwrap();
    client.done(first).await.unwrap();

    let mut follower = Follower::start(&fixture, &session);
    // What was there before it started comes first…
    follower
        .until(|e| matches!(e.event, LogEvent::Completed { seq } if seq == first))
        .await;
    // …then what happens afterwards, pushed by the host.
    let (_, second) = client.send("second").await.unwrap();
    let seen = follower
        .until(|e| matches!(&e.event, LogEvent::MessageIn { seq, text, .. } if *seq == second && text == "second"))
        .await;
    assert_eq!(seen.id, format!("in:{second}"));
    follower
        .until(|e| matches!(e.event, LogEvent::Completed { seq } if seq == second))
        .await;

    // The host stops: the follower carries on from the files, without repeating anything.
    drop(client);
    fixture.stop().await.unwrap();
    follower
        .until(|e| matches!(e.event, LogEvent::RunnerExited { .. }))
        .await;
    let paths =
        SessionPaths::for_session(&fixture.data_dir().join("sessions"), "default", &session)
            .unwrap();
    let seq = write_inbound(&paths, "written without a host");
    let seen = follower
        .until(|e| matches!(e.event, LogEvent::MessageIn { .. }))
        .await;
    assert_eq!(seen.id, format!("in:{seq}"));
    follower.child.start_kill().unwrap();

    // Without a host from the start, `-f` polls the files.
    let mut follower = Follower::start(&fixture, &session);
    follower.until(|e| e.id == format!("in:{seq}")).await;
    let next = write_inbound(&paths, "and another");
    let seen = follower
        .until(|e| matches!(e.event, LogEvent::MessageIn { .. }))
        .await;
    assert_eq!(seen.id, format!("in:{next}"));
    follower.child.start_kill().unwrap();
}

/// Writes a message into a session's inbound.db as a host would (no host runs).
fn write_inbound(paths: &SessionPaths, text: &str) -> i64 {
    let mut db = InboundDb::open(paths).unwrap();
    db.insert(
        &NewInbound {
            id: format!("test:{text}"),
            kind: InboundKind::Chat,
            trigger: true,
            route: Route::new("cli", "local"),
            sender_id: Some("cli:local".into()),
            sender_name: Some("you".into()),
            content: json!({ "text": text }),
            process_after: None,
        },
        chrono::Utc::now(),
    )
    .unwrap()
    .seq()
}

#[tokio::test]
async fn dropped_lists_refused_messages_newest_first() {
    let (_model, mut fixture) = setup().await;
    // The rows below carry fixed dates (the snapshot shows them); retention must not take them.
    fixture.set("RETENTION_DAYS", "36500");
    fixture.start().await.unwrap();
    // The terminal's messages are never refused; the router records refusals of other
    // channels in this table, which the command only reads.
    let db = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    for (i, (sender, reason)) in [
        ("telegram:111", "unknown_sender"),
        ("telegram:222", "not_authorized"),
        ("telegram:333", "no_agent_engaged"),
    ]
    .iter()
    .enumerate()
    {
        db.execute(
            "INSERT INTO dropped_messages (channel_type, platform_id, sender_id, sender_name,
                 agent_group_id, reason, at)
             VALUES ('telegram', '-100123', ?1, 'Mallory', 'default', ?2, ?3)",
            rusqlite::params![sender, reason, format!("2026-01-02T03:04:0{i}.000Z")],
        )
        .unwrap();
    }
    let list: DroppedList =
        json_of(&clawbox(&fixture, &["dropped", "--json", "-n", "2"], true).await);
    assert!(list.host_running);
    assert_eq!(list.total, 3);
    let reasons: Vec<&str> = list.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["no_agent_engaged", "not_authorized"]);
    assert_eq!(list.dropped[0].chat, "telegram:-100123");
    assert_eq!(list.dropped[0].sender_id.as_deref(), Some("telegram:333"));
    let shown = text(&clawbox(&fixture, &["dropped", "--limit", "2"], true).await);
    settings(false).bind(|| insta::assert_snapshot!("dropped", shown));
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_an_error_and_the_connection_stays_usable() {
    let (_model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let error = |e: &Event| matches!(e, Event::Error { .. });
    for (line, want) in [
        ("this is not json\n", "not JSON"),
        (
            "{\"op\":\"reboot\"}\n",
            "unknown variant `reboot`, expected one of",
        ),
        ("{\"op\":\"logs\"}\n", "missing field `session`"),
        (
            "{\"op\":\"logs\",\"session\":\"nope\"}\n",
            "no session matches \"nope\"",
        ),
    ] {
        client.raw(line).await.unwrap();
        let Event::Error { message } = client.wait_for(error).await.unwrap() else {
            unreachable!()
        };
        assert!(message.contains(want), "{line}: {message}");
    }
    // The same connection still answers, and still chats.
    client.request(&Request::Status).await.unwrap();
    let Event::Status { status } = client
        .wait_for(|e| matches!(e, Event::Status { .. }))
        .await
        .unwrap()
    else {
        unreachable!()
    };
    assert!(status.host.is_some());
    let (_, seq) = client.send("still here?").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap().0,
        mailbox::InboundStatus::Completed
    );
    fixture.stop().await.unwrap();
}

/// A reply of a second agent on the terminal carries its own name, and a scripted chat shows
/// it (the default agent's replies stay plain lines).
#[tokio::test]
async fn replies_carry_the_name_of_the_agent_that_wrote_them() {
    let (model, mut fixture) = setup().await;
    let create = std::process::Command::new(env!("CARGO_BIN_EXE_create-agent"))
        .args([
            "--agent-id",
            "helper",
            "--agent-name",
            "Helper",
            "--cli",
            "--model",
            "helper-model",
        ])
        .env_clear()
        .env("DATA_DIR", fixture.data_dir())
        .env("GROUPS_DIR", fixture.groups_dir())
        .current_dir(fixture.root())
        .output()
        .unwrap();
    assert!(create.status.success(), "{create:?}");
    model.push_for("helper-model", Reply::text("helper here"));
    // The default agent answers after the helper, so the scripted chat (which ends with the
    // default agent's verdict) has seen both.
    model.push_for(
        "fake-model",
        Reply::text("default here").after(Duration::from_millis(800)),
    );
    fixture.start().await.unwrap();

    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push_for("helper-model", Reply::text("helper again"));
    model.push_for(
        "fake-model",
        Reply::text("default again").after(Duration::from_millis(800)),
    );
    let (_, seq) = client.send("hello both").await.unwrap();
    client.done(seq).await.unwrap();
    client.settle(Duration::from_millis(300)).await;
    let mut names: Vec<(String, String)> = client
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Chat(host::channels::cli::ChatEvent::Reply { agent, text, .. }) => {
                Some((agent.clone(), text.clone()))
            }
            _ => None,
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("Andy".to_owned(), "default here".to_owned()),
            ("Helper".to_owned(), "helper here".to_owned())
        ]
    );
    drop(client);

    let out = fixture.chat("and again\n").await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out), "Helper › helper again\ndefault again\n");
    fixture.stop().await.unwrap();
}

/// A host of another version answers in a shape this build cannot read: the command says so
/// and ends, rather than waiting for an answer it will never understand.
#[tokio::test]
async fn an_unreadable_answer_ends_the_command_with_an_error() {
    let (_model, fixture) = setup().await;
    std::fs::create_dir_all(fixture.data_dir()).unwrap();
    let listener = tokio::net::UnixListener::bind(fixture.socket_path()).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    let old = r#"{"event":"status","status":{"runtime":"process","sessions":[]}}"#;
                    let _ = write.write_all(format!("{old}\n").as_bytes()).await;
                }
            });
        }
    });
    let out = tokio::time::timeout(WAIT, fixture.command(&["status"]).output())
        .await
        .expect("clawbox status hung on an answer it cannot read")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreadable answer"), "{stderr}");
    assert!(stderr.contains("another clawbox version"), "{stderr}");
}

#[tokio::test]
async fn retention_deletes_what_is_old_and_settled_and_status_says_so() {
    let (_model, mut fixture) = setup().await;
    fixture.set("RETENTION_DAYS", "1");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, old) = client.send("an old question").await.unwrap();
    client.done(old).await.unwrap();
    let (_, new) = client.send("a new question").await.unwrap();
    client.done(new).await.unwrap();
    client.settle(Duration::from_millis(300)).await;
    drop(client);
    fixture.stop().await.unwrap();

    // Three days pass for the first exchange, and for a refusal and a day of tokens.
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let inbound =
        rusqlite::Connection::open(session_dir(&fixture, &session).join("inbound/inbound.db"))
            .unwrap();
    inbound
        .execute(
            "UPDATE messages_in SET created_at = ?1 WHERE seq = ?2",
            (&long_ago, old),
        )
        .unwrap();
    let central = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    central
        .execute_batch(&format!(
            "INSERT INTO dropped_messages (channel_type, platform_id, reason, at)
                 VALUES ('cli', 'local', 'old refusal', '{long_ago}'), ('cli', 'local', 'new refusal', '2999-01-01T00:00:00.000Z');
             INSERT INTO token_usage (session_id, day, prompt_tokens) VALUES ('{session}', '2000-01-01', 7);"
        ))
        .unwrap();

    // The first pass runs when the host starts; status tells when it has.
    fixture.start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = text(&clawbox(&fixture, &["status"], true).await);
        if status.contains("retention:") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pass; {}",
            fixture.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.contains("retention: 3 old rows deleted"), "{status}");
    let gone: i64 = inbound
        .query_row(
            "SELECT COUNT(*) FROM messages_in WHERE seq = ?1",
            [old],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gone, 0, "the old answered message is deleted");
    let kept: i64 = inbound
        .query_row(
            "SELECT COUNT(*) FROM messages_in WHERE seq = ?1",
            [new],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "today's message stays");
    let reasons: Vec<String> = central
        .prepare("SELECT reason FROM dropped_messages")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!reasons.contains(&"old refusal".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"new refusal".to_owned()), "{reasons:?}");
    let old_days: i64 = central
        .query_row(
            "SELECT COUNT(*) FROM token_usage WHERE day = '2000-01-01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_days, 0);

    fixture.stop().await.unwrap();
}

/// The host's log, written to a file (as journald or a redirect would take it): no terminal
/// escape bytes, and with `LOG_FORMAT=json` one JSON object per line.
#[tokio::test]
async fn piped_logs_are_plain_and_json_logs_parse() {
    for format in ["text", "json"] {
        let (_model, mut fixture) = setup().await;
        fixture.set("LOG_FORMAT", format).unset("RUST_LOG");
        fixture.start().await.unwrap();
        let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
        let (_, seq) = client.send("hello").await.unwrap();
        client.done(seq).await.unwrap();
        fixture.stop().await.unwrap();
        let log = std::fs::read_to_string(fixture.root().join("host-1.log")).unwrap();
        assert!(log.contains("runner started"), "{format}: {log}");
        assert!(!log.contains('\x1b'), "{format}: escape bytes in {log}");
        // Library chatter stays below WARN by default.
        assert!(
            !log.lines()
                .any(|l| l.contains("rmcp") && l.contains("INFO")),
            "{format}: {log}"
        );
        if format == "json" {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let event: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(event["timestamp"].is_string(), "{line}");
                assert!(event["level"].is_string(), "{line}");
            }
        }
    }
}
