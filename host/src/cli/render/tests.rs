//! Snapshots of every report, and tables of the building blocks.

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn terminal_safe_keeps_lines_and_drops_what_drives_a_terminal() {
    assert_eq!(
        terminal_safe("a\u{1b}[31mb\tc\nd\u{202e}e\u{7}"),
        "a[31mb c\nde"
    );
    assert_eq!(clean("a\nb"), "a↵b");
}

#[test]
fn durations() {
    let table = [
        (0, "0s"),
        (59, "59s"),
        (60, "1m 00s"),
        (185, "3m 05s"),
        (3600, "1h 00m"),
        (7380, "2h 03m"),
        (90000, "1d 1h"),
    ];
    for (secs, want) in table {
        assert_eq!(duration(secs), want);
    }
    assert_eq!(millis(250), "250 ms");
    assert_eq!(millis(1500), "1.5 s");
    assert_eq!(millis(125_000), "2m 05s");
}

#[test]
fn numbers_and_text() {
    let table = [
        (0, "0"),
        (999, "999"),
        (1000, "1,000"),
        (1234567, "1,234,567"),
    ];
    for (n, want) in table {
        assert_eq!(thousands(n), want);
    }
    assert_eq!(one_line("a\nb\r\n", 10), "a↵b");
    assert_eq!(one_line("abcdef", 4), "abc…");
    assert_eq!(one_line("  ok  ", 4), "ok");
    let table = [
        ("\u{1b}[2J\u{1b}]0;pwned\u{7}hi", "[2J]0;pwnedhi"),
        ("a\tb", "a b"),
        ("evil\u{202E}txt.exe", "eviltxt.exe"),
        ("\u{2066}x\u{2069}\u{200B}", "x"),
        ("\u{85}nel\u{9b}csi", "nelcsi"),
        ("👨\u{200D}👩\u{200D}👧 ok", "👨\u{200D}👩\u{200D}👧 ok"),
    ];
    for (text, want) in table {
        assert_eq!(clean(text), want, "{text:?}");
    }
}

use crate::db::TokenUsage;
use crate::db::{AgentListing, DestinationListing, RoleListing, WiringListing};
use crate::report::doctor::Check;
use crate::report::inspect::{
    AgentRow, ContainerCount, DroppedMessage, HostSummary, LastError, ProxySummary, SessionRow,
};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(secs)
}

fn tokens(total: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: total - total / 10,
        completion_tokens: total / 10,
        requests: 3,
    }
}

fn session(id: &str, agent: &str, chat: &str, container: ContainerState) -> SessionStatus {
    SessionStatus {
        id: id.into(),
        agent: agent.into(),
        agent_name: agent.into(),
        chat: chat.into(),
        thread: None,
        container,
        doing: None,
        pending_in: 0,
        undelivered_out: 0,
        failed_deliveries: 0,
        tokens_today: TokenUsage::default(),
        last_error: None,
        last_activity: t(-5),
    }
}

fn doing(activity: Activity, step: u32, tool: Option<&str>, since: i64) -> Option<Doing> {
    Some(Doing {
        activity,
        step,
        tool: tool.map(str::to_owned),
        tool_timeout_ms: tool.map(|_| 600_000),
        since: t(since),
        heartbeat_age_ms: Some(800),
        heartbeat_stale: false,
        pid: 4242,
    })
}

/// Four sessions in different states on a docker host.
fn busy_report() -> StatusReport {
    let mut working = session(
        "sess-20260301115000-a1b2c3",
        "default",
        "cli:local",
        ContainerState::Running {
            runner: "c0ffee".into(),
            started_at: t(-7380),
            uptime_s: 7380,
        },
    );
    working.doing = doing(Activity::Tool, 2, Some("run_bash"), -12);
    working.pending_in = 1;
    working.tokens_today = tokens(48_210);
    let mut stuck = session(
        "sess-20260301100000-d4e5f6",
        "sales",
        "telegram:-1001234567890",
        ContainerState::Running {
            runner: "beef".into(),
            started_at: t(-600),
            uptime_s: 600,
        },
    );
    stuck.doing = doing(Activity::Model, 3, None, -95);
    if let Some(d) = &mut stuck.doing {
        d.heartbeat_stale = true;
        d.heartbeat_age_ms = Some(95_000);
    }
    stuck.pending_in = 2;
    stuck.tokens_today = tokens(910);
    let mut retrying = session(
        "sess-20260301090000-g7h8i9",
        "sales",
        "telegram:987654321",
        ContainerState::Retrying { at: t(8) },
    );
    retrying.pending_in = 1;
    retrying.undelivered_out = 1;
    retrying.failed_deliveries = 1;
    retrying.last_error = Some(LastError {
        at: Some(t(-185)),
        text: "message 6 re-queued: the agent stopped responding (silent for 61 s)".into(),
    });
    let mut waiting = session(
        "sess-20260301080000-j1k2l3",
        "助手",
        "cli:local",
        ContainerState::WaitingForSlot,
    );
    waiting.pending_in = 3;
    StatusReport {
        generated_at: t(0),
        host: Some(HostSummary {
            install_id: "inst".into(),
            started_at: t(-90_000),
            uptime_s: 90_000,
            data_dir: "/srv/clawbox/data".into(),
            model_proxy: ProxySummary {
                loopback: "127.0.0.1:4100".into(),
                socket: "/srv/clawbox/data/model.sock".into(),
                live_tokens: 2,
                token_budget_per_session_day: None,
            },
            retention: Default::default(),
            image: Some("clawbox-agent:3f9c2a71d04b8e65".into()),
        }),
        runtime: "docker".into(),
        isolated: true,
        containers: ContainerCount {
            running: 2,
            cap: Some(8),
        },
        tokens_today: 49_120,
        sessions: vec![working, stuck, retrying, waiting],
    }
}

#[test]
fn status_says_what_retention_reclaimed() {
    let mut report = busy_report();
    assert!(
        !status(&report).contains("retention"),
        "nothing said while nothing was pruned"
    );
    if let Some(host) = report.host.as_mut() {
        host.retention.rows = 12_345;
        host.retention.bytes = 3 * 1024 * 1024;
    }
    assert!(
        status(&report).contains(
            "retention: 12,345 old rows deleted, 3.0 MB reclaimed since the host started\n"
        ),
        "{}",
        status(&report)
    );
    if let Some(host) = report.host.as_mut() {
        host.retention.sessions = 2;
    }
    assert!(
        status(&report).contains(
            "retention: 12,345 old rows deleted, 2 idle sessions retired, 3.0 MB reclaimed since \
             the host started\n"
        ),
        "{}",
        status(&report)
    );
    assert_eq!(
        (bytes(512), bytes(2048)),
        ("512 B".to_owned(), "2.0 KB".to_owned())
    );
}

#[test]
fn status_tables() {
    insta::assert_snapshot!("status_docker", status(&busy_report()));
    let mut quiet = busy_report();
    quiet.sessions.clear();
    quiet.containers.running = 0;
    insta::assert_snapshot!("status_quiet", status(&quiet));
    // No host: what the files say, with the runner a dead host left behind.
    let mut left = busy_report();
    left.host = None;
    left.sessions.truncate(1);
    left.sessions[0].container = ContainerState::Recorded {
        recorded: "running".into(),
    };
    let mut process = left.clone();
    insta::assert_snapshot!("status_no_host", status(&left));
    process.runtime = "process".into();
    process.isolated = false;
    process.containers.cap = Some(4);
    process.host = busy_report().host.map(|h| HostSummary { image: None, ..h });
    process.sessions[0].container = ContainerState::WaitingForChannel;
    process.sessions[0].doing = None;
    insta::assert_snapshot!("status_process", status(&process));
}

#[test]
fn session_list() {
    let row =
        |id: &str, status: &str, container: Option<ContainerState>, recorded: &str| SessionRow {
            id: id.into(),
            agent: "default".into(),
            agent_name: "Andy".into(),
            chat: "cli:local".into(),
            thread: None,
            status: status.into(),
            container,
            recorded: recorded.into(),
            created_at: t(-86_400),
            last_activity: t(-3_700),
            messages_in: 1_204,
            messages_out: 1_187,
            pending_in: 0,
            failed_in: 3,
            undelivered_out: 0,
            tokens_today: 12_000,
        };
    let list = SessionList {
        generated_at: t(0),
        host_running: true,
        sessions: vec![
            row(
                "sess-20260301115000-a1b2c3",
                "active",
                Some(ContainerState::Running {
                    runner: "c".into(),
                    started_at: t(-60),
                    uptime_s: 60,
                }),
                "running",
            ),
            row("sess-20260228090000-d4e5f6", "active", None, "stopped"),
            row("sess-20260101090000-g7h8i9", "closed", None, "stopped"),
        ],
    };
    insta::assert_snapshot!("sessions", sessions(&list));
    let offline = SessionList {
        host_running: false,
        sessions: vec![row("sess-20260301115000-a1b2c3", "active", None, "running")],
        ..list
    };
    insta::assert_snapshot!("sessions_no_host", sessions(&offline));
}

#[test]
fn agent_list() {
    let list = AgentList {
        host_running: true,
        default_model: "gpt-4o".into(),
        agents: vec![
            AgentRow {
                agent: AgentListing {
                    id: "default".into(),
                    name: "Andy".into(),
                    folder: "default".into(),
                    model: None,
                    wirings: vec![WiringListing {
                        channel_type: "cli".into(),
                        platform_id: "local".into(),
                        is_group: false,
                        unknown_sender_policy: "strict".into(),
                        engage_mode: "pattern".into(),
                        engage_pattern: Some(".".into()),
                        sticky_window_s: 600,
                        session_mode: "shared".into(),
                        ignored_messages: "drop".into(),
                    }],
                    destinations: vec![DestinationListing {
                        name: "cli".into(),
                        channel_type: "cli".into(),
                        platform_id: "local".into(),
                        thread_id: None,
                    }],
                    roles: vec![RoleListing {
                        user_id: "cli:local".into(),
                        role: "owner".into(),
                    }],
                },
                sessions: 1,
                live_sessions: 1,
            },
            AgentRow {
                agent: AgentListing {
                    id: "sales".into(),
                    name: "Sales".into(),
                    folder: "sales".into(),
                    model: Some("gpt-4o-mini".into()),
                    wirings: vec![
                        WiringListing {
                            channel_type: "telegram".into(),
                            platform_id: "-1001234567890".into(),
                            is_group: true,
                            unknown_sender_policy: "strict".into(),
                            engage_mode: "mention-sticky".into(),
                            engage_pattern: None,
                            sticky_window_s: 1800,
                            session_mode: "per-thread".into(),
                            ignored_messages: "accumulate".into(),
                        },
                        WiringListing {
                            channel_type: "telegram".into(),
                            platform_id: "987654321".into(),
                            is_group: false,
                            unknown_sender_policy: "public".into(),
                            engage_mode: "pattern".into(),
                            engage_pattern: Some("(?i)price".into()),
                            sticky_window_s: 600,
                            session_mode: "shared".into(),
                            ignored_messages: "drop".into(),
                        },
                    ],
                    destinations: vec![
                        DestinationListing {
                            name: "telegram--1001234567890".into(),
                            channel_type: "telegram".into(),
                            platform_id: "-1001234567890".into(),
                            thread_id: None,
                        },
                        DestinationListing {
                            name: "telegram-987654321".into(),
                            channel_type: "telegram".into(),
                            platform_id: "987654321".into(),
                            thread_id: None,
                        },
                    ],
                    roles: vec![
                        RoleListing {
                            user_id: "cli:local".into(),
                            role: "owner".into(),
                        },
                        RoleListing {
                            user_id: "telegram:123456789".into(),
                            role: "owner".into(),
                        },
                    ],
                },
                sessions: 4,
                live_sessions: 0,
            },
            AgentRow {
                agent: AgentListing {
                    id: "idle".into(),
                    name: "Idle".into(),
                    folder: "idle".into(),
                    model: None,
                    wirings: vec![],
                    destinations: vec![],
                    roles: vec![],
                },
                sessions: 0,
                live_sessions: 0,
            },
        ],
    };
    insta::assert_snapshot!("agents", agents(&list));
}

#[test]
fn dropped_and_doctor() {
    let list = DroppedList {
        host_running: false,
        total: 120,
        dropped: vec![
            DroppedMessage {
                id: 120,
                at: t(-30),
                chat: "telegram:-1001234567890".into(),
                sender_id: Some("telegram:555".into()),
                sender_name: Some("Mallory".into()),
                agent: Some("sales".into()),
                reason: "not_authorized".into(),
                wire_command: None,
            },
            DroppedMessage {
                id: 119,
                at: t(-4000),
                chat: "telegram:42".into(),
                sender_id: None,
                sender_name: None,
                agent: None,
                reason: "no agent wired".into(),
                wire_command: Some(
                    "clawbox create-agent --agent-id default --telegram-chat-id 42".into(),
                ),
            },
        ],
    };
    insta::assert_snapshot!("dropped", dropped(&list, Tz::Europe__Berlin));
    let check = |name: &str, level, detail: &str, hint: Option<&str>| Check {
        name: name.into(),
        level,
        detail: detail.into(),
        hint: hint.map(str::to_owned),
    };
    let report = DoctorReport {
        ran_by_host: true,
        checks: vec![
            check(
                "runtime",
                Level::Ok,
                "docker: engine 27.1 at unix:///var/run/docker.sock",
                None,
            ),
            check(
                "image",
                Level::Warn,
                "clawbox-agent:latest is not built yet",
                Some("`clawbox run` builds it at start"),
            ),
            check(
                "model endpoint",
                Level::Fail,
                "cannot reach http://127.0.0.1:1/v1/models: connection refused",
                Some("is the model server running?"),
            ),
            check(
                "mcp default/time",
                Level::Ok,
                "starts in 0.7 s with 2 tools (get_current_time, convert_time)",
                None,
            ),
        ],
    };
    insta::assert_snapshot!("doctor", doctor(&report));
}

#[test]
fn every_log_event_has_a_line() {
    let e = |secs: i64, event: LogEvent| LogEntry {
        id: "x:1".into(),
        session_id: "s".into(),
        at: t(secs),
        event,
    };
    let entries = vec![
        e(
            0,
            LogEvent::MessageIn {
                seq: 2,
                kind: InboundKind::Chat,
                sender: Some("Ada".into()),
                text: "first line\nsecond line".into(),
                trigger: true,
            },
        ),
        e(
            0,
            LogEvent::MessageIn {
                seq: 4,
                kind: InboundKind::Chat,
                sender: None,
                text: "just context".into(),
                trigger: false,
            },
        ),
        e(
            0,
            LogEvent::MessageIn {
                seq: 6,
                kind: InboundKind::Task,
                sender: None,
                text: "daily report".into(),
                trigger: true,
            },
        ),
        e(
            0,
            LogEvent::MessageIn {
                seq: 8,
                kind: InboundKind::System,
                sender: Some("clawbox".into()),
                text: "Your message 7 could not be delivered".into(),
                trigger: false,
            },
        ),
        e(
            1,
            LogEvent::RunnerStarted {
                pid: 4242,
                model: "gpt-4o".into(),
            },
        ),
        e(
            1,
            LogEvent::RunnerReady {
                tools: 11,
                problems: vec![
                    "MCP server \"time\" from container.json is not available: timed out".into(),
                ],
            },
        ),
        e(1, LogEvent::Claimed { seq: 2, attempt: 1 }),
        e(
            2,
            LogEvent::ModelStep {
                turn: 2,
                step: 1,
                latency_ms: 812,
                attempts: 2,
                prompt_tokens: Some(12_034),
                completion_tokens: Some(56),
                tool_calls: 2,
                finish_reason: Some("tool_calls".into()),
            },
        ),
        e(
            3,
            LogEvent::ToolCall {
                turn: 2,
                step: 1,
                call_id: "c1".into(),
                tool: "run_bash".into(),
                duration_ms: 1530,
                ok: true,
                error: None,
                arguments: Some(r#"{"command":"cargo test --workspace -- --nocapture --test-threads 1 2>&1 | tail -n 40"}"#.into()),
                result: Some("test result: ok. 12 passed".into()),
            },
        ),
        e(
            3,
            LogEvent::ToolCall {
                turn: 2,
                step: 1,
                call_id: "c2".into(),
                tool: "lookup".into(),
                duration_ms: 0,
                ok: false,
                error: Some("Error: unknown tool 'lookup'".into()),
                arguments: None,
                result: None,
            },
        ),
        e(
            4,
            LogEvent::ModelStep {
                turn: 2,
                step: 2,
                latency_ms: 95,
                attempts: 1,
                prompt_tokens: None,
                completion_tokens: None,
                tool_calls: 0,
                finish_reason: None,
            },
        ),
        e(
            4,
            LogEvent::Reply {
                seq: 9,
                in_reply_to: Some(2),
                text: "Here you go.".into(),
                files: vec!["report.pdf".into()],
                to: None,
            },
        ),
        e(
            4,
            LogEvent::Reply {
                seq: 11,
                in_reply_to: None,
                text: "FYI".into(),
                files: vec![],
                to: Some("telegram:-100123".into()),
            },
        ),
        e(
            4,
            LogEvent::Edit {
                seq: 13,
                edit_of: Some(9),
                text: "Here you go (fixed).".into(),
            },
        ),
        e(
            4,
            LogEvent::Reaction {
                seq: 15,
                reaction_to: Some(2),
                emoji: "👍".into(),
            },
        ),
        e(4, LogEvent::Completed { seq: 2 }),
        e(
            5,
            LogEvent::Delivered {
                seq: 9,
                attempts: 1,
            },
        ),
        e(
            5,
            LogEvent::Delivered {
                seq: 11,
                attempts: 2,
            },
        ),
        e(
            5,
            LogEvent::DeliveryFailed {
                seq: 13,
                error: "Bad Request: message to edit not found".into(),
                gave_up: false,
            },
        ),
        e(
            6,
            LogEvent::DeliveryFailed {
                seq: 13,
                error: "Bad Request: message to edit not found".into(),
                gave_up: true,
            },
        ),
        e(
            6,
            LogEvent::Compacted {
                turn: Some(20),
                replaced: 41,
                kept: 6,
                tokens_before: 97_012,
                tokens_after: 30_240,
                archive: "conversations/2026-03-01-2.md".into(),
            },
        ),
        e(
            6,
            LogEvent::Compacted {
                turn: None,
                replaced: 1,
                kept: 0,
                tokens_before: 812,
                tokens_after: 240,
                archive: "conversations/2026-03-01-3.md".into(),
            },
        ),
        e(7, LogEvent::Claimed { seq: 4, attempt: 2 }),
        e(
            8,
            LogEvent::ModelFailed {
                turn: 4,
                step: 1,
                latency_ms: 120_000,
                error: "the model service did not answer within 120s (4 attempt(s))".into(),
            },
        ),
        e(
            8,
            LogEvent::Failed {
                seq: 4,
                error: Some("The model service did not answer".into()),
            },
        ),
        e(
            9,
            LogEvent::Requeued {
                seq: 6,
                tries: 1,
                retry_at: t(14),
                reason: "the agent stopped responding (silent for 61 s)".into(),
            },
        ),
        e(
            9,
            LogEvent::Failed {
                seq: 6,
                error: None,
            },
        ),
        e(
            10,
            LogEvent::RunnerExited {
                runner: "c0ffee".into(),
                exit: "killed by signal 9".into(),
                reason: Some("the agent stopped responding (silent for 61 s)".into()),
                unexpected: false,
            },
        ),
        e(
            11,
            LogEvent::RunnerExited {
                runner: "c0ffee".into(),
                exit: "exit code 101".into(),
                reason: None,
                unexpected: true,
            },
        ),
        e(
            12,
            LogEvent::RunnerExited {
                runner: "c0ffee".into(),
                exit: "exit code 0".into(),
                reason: None,
                unexpected: false,
            },
        ),
        // A new day in Berlin.
        e(43_200, LogEvent::Completed { seq: 20 }),
    ];
    let mut printer = LogPrinter::new(Tz::Europe__Berlin);
    let text: String = entries.iter().map(|entry| printer.print(entry)).collect();
    insta::assert_snapshot!("log_lines", text);
}

#[test]
fn nothing_written_by_others_reaches_the_terminal_raw() {
    let entry = LogEntry {
        id: "run:1".into(),
        session_id: "s".into(),
        at: t(0),
        event: LogEvent::ToolCall {
            turn: 2,
            step: 1,
            call_id: "c".into(),
            tool: "\u{1b}[31mred\u{1b}[0m".into(),
            duration_ms: 1,
            ok: false,
            error: Some("line\u{1b}[2Kerased".into()),
            arguments: Some("{\"a\":\"\u{1b}[2J\"}".into()),
            result: None,
        },
    };
    let line = LogPrinter::new(Tz::UTC).print(&entry);
    assert!(
        !line.chars().any(|c| c.is_control() && c != '\n'),
        "{line:?}"
    );
    let mut report = busy_report();
    report.sessions[0].last_error = Some(LastError {
        at: None,
        text: "\u{1b}]8;;http://evil\u{7}click\u{202E}".into(),
    });
    let shown = status(&report);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{202E}'),
        "{shown}"
    );
}

#[test]
fn tables_align_by_display_width() {
    let mut t = Table::new(&[("NAME", false), ("N", true), ("NOTE", false)]);
    t.row(vec!["助手".into(), "5".into(), "wide".into()]);
    t.row(vec!["a".into(), "123".into(), String::new()]);
    insta::assert_snapshot!(t.render(""), @r"
    NAME    N  NOTE
    助手    5  wide
    a     123
    ");
}
