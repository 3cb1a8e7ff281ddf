//! `clawbox chat` at a terminal, driven under a pseudo-terminal: line editing, history,
//! `/help` answered locally, `/stop` (and Ctrl-C) stopping a running turn.

use std::time::Duration;

use rexpect::session::PtySession;
use serde_json::json;
use testkit::{HostFixture, Reply, ToolCall};

use super::support::*;

/// The prompt as drawn (rexpect matches bytes, so the ASCII part of `you › `).
const PROMPT: &str = "\x1b[Kyou ";
const LEFT: &str = "\x1b[D";
const UP: &str = "\x1b[A";
const BACKSPACE: &str = "\x7f";

/// `clawbox chat` of this fixture under a pseudo-terminal (a host starts in-process).
fn spawn_chat(fixture: &HostFixture) -> PtySession {
    let tokio_cmd = fixture.command(&["chat"]);
    let cmd = tokio_cmd.as_std();
    let mut std_cmd = std::process::Command::new(cmd.get_program());
    std_cmd
        .args(cmd.get_args())
        .env_clear()
        .current_dir(fixture.root());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            std_cmd.env(key, value);
        }
    }
    std_cmd.env("TERM", "xterm");
    rexpect::session::spawn_command(std_cmd, Some(60_000)).unwrap()
}

/// Types `text` key by key (an escape sequence is one key), as a person would: the line editor
/// reads a key, then redraws.
fn keys(p: &mut PtySession, text: &str) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = if c == '\x1b' { 3 } else { c.len_utf8() };
        let (key, tail) = rest.split_at(len.min(rest.len()));
        p.send(key).unwrap();
        p.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        rest = tail;
    }
}

/// The terminal tests run one at a time, so each line editor has the machine's attention within
/// rexpect's limit. (Their stalls when run together were the chat's banner printed after the
/// first prompt, which a test waiting for the banner then never saw; the chat prints it first now.)
static ONE_TERMINAL_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the next prompt: the line editor only reads keys once it has drawn it.
fn prompt(p: &mut PtySession) {
    p.exp_string(PROMPT).unwrap();
}

fn model_saw(model: &testkit::FakeModel, text: &str) -> bool {
    model
        .last_request()
        .and_then(|r| r.messages().last().cloned())
        .and_then(|m| m["content"].as_str().map(|c| c.contains(text)))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn editing_history_and_help_at_a_terminal() {
    let _one = ONE_TERMINAL_AT_A_TIME.lock().await;
    let (model, fixture) = setup().await;
    let data = fixture.data_dir();
    let mut p = spawn_chat(&fixture);
    p.exp_string("/help for commands").unwrap();
    prompt(&mut p);

    // abcd, Left, Left, Backspace, X: the agent gets the edited line, not the keys.
    keys(&mut p, &format!("abcd{LEFT}{LEFT}{BACKSPACE}X\r"));
    p.exp_string("echo: aXcd").unwrap();
    assert!(model_saw(&model, "aXcd"), "{:?}", model.last_request());
    assert_eq!(model.request_count(), 1);

    // /help is answered by the client: no message reaches the model.
    prompt(&mut p);
    keys(&mut p, "/help\r");
    p.exp_string("/stop").unwrap();
    p.exp_string("Ctrl-D quits").unwrap();

    // Up, Up recalls the edited line (the newest entry is /help).
    prompt(&mut p);
    keys(&mut p, &format!("{UP}{UP}\r"));
    p.exp_string("echo: aXcd").unwrap();
    assert_eq!(model.request_count(), 2, "/help must not reach the model");

    // A pasted block (bracketed paste) is one message, newlines included.
    prompt(&mut p);
    p.send("\x1b[200~first line\nsecond line\x1b[201~").unwrap();
    p.flush().unwrap();
    p.exp_string("second line").unwrap();
    keys(&mut p, "\r");
    p.exp_string("echo: first line").unwrap();
    assert!(
        model_saw(&model, "first line\nsecond line"),
        "{:?}",
        model.last_request()
    );
    assert_eq!(model.request_count(), 3);

    // Ctrl-D quits normally.
    prompt(&mut p);
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    let status = p.process.wait().unwrap();
    assert!(
        matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)),
        "{status:?}\n{}",
        fixture.logs()
    );
    let history = std::fs::read_to_string(data.join(host::cli::chat::HISTORY_FILE)).unwrap();
    assert!(history.contains("aXcd"), "{history}");
    assert!(history.contains("/help"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_ends_a_long_command_and_the_next_message_works() {
    let _one = ONE_TERMINAL_AT_A_TIME.lock().await;
    let (model, fixture) = setup().await;
    let pid_file = fixture.root().join("sleep.pid");
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({ "command": format!("echo $$ > {}; exec sleep 300", pid_file.display()) }),
    )]));
    let mut p = spawn_chat(&fixture);
    prompt(&mut p);
    keys(&mut p, "take your time\r");
    let pid = read_pid(&pid_file).await;
    // The status line says what the agent does.
    p.exp_string("running run_bash").unwrap();

    // Ctrl-C once is /stop.
    p.send_control('c').unwrap();
    // The sender is told (the failure notice), then the host answers the /stop.
    p.exp_string("the turn was stopped (/stop)").unwrap();
    p.exp_string("Stopped").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !gone(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep {pid} survived /stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next message is a new turn with a fresh runner, and it is answered.
    prompt(&mut p);
    keys(&mut p, "still there?\r");
    p.exp_string("echo: still there?").unwrap();

    // /stop typed with nothing running says so.
    prompt(&mut p);
    keys(&mut p, "/stop\r");
    p.exp_string("nothing to stop").unwrap();

    // Ctrl-C twice in a row quits, with status 0.
    prompt(&mut p);
    p.send_control('c').unwrap();
    p.exp_string("Ctrl-C again").unwrap();
    p.send_control('c').unwrap();
    p.exp_eof().unwrap();
    let status = p.process.wait().unwrap();
    assert!(
        matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)),
        "{status:?}\n{}",
        fixture.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_shows_while_it_is_written() {
    let _one = ONE_TERMINAL_AT_A_TIME.lock().await;
    let (model, fixture) = setup().await;
    let gate = testkit::fake_model::Gate::new();
    // Two pieces of twenty characters: the first holds a whole line.
    model.push(Reply::held(
        "Partial line one.\nThe rest arrives later.",
        /*pieces*/ 2,
        /*before*/ 1,
        &gate,
    ));
    let mut p = spawn_chat(&fixture);
    prompt(&mut p);
    keys(&mut p, "tell me slowly\r");
    // On the screen while the model is still held mid-answer.
    p.exp_string("Partial line one.").unwrap();
    assert_eq!(model.request_count(), 1);
    gate.open();
    // The reply completes the draft: the rest, and the first line not again.
    let between = p.exp_string("The rest arrives later.").unwrap();
    assert!(!between.contains("Partial line one."), "{between:?}");
    prompt(&mut p);
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_tool_shows_on_the_status_line() {
    let _one = ONE_TERMINAL_AT_A_TIME.lock().await;
    let (model, fixture) = setup().await;
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({ "command": "sleep 2" }),
    )]));
    model.push(Reply::text("Slept."));
    let mut p = spawn_chat(&fixture);
    prompt(&mut p);
    keys(&mut p, "sleep a bit\r");
    // At once, while the command runs, and before the reply.
    // rexpect matches bytes: the ASCII part of the line.
    let before = p.exp_string("Andy is running `sleep 2`").unwrap();
    assert!(!before.contains("Slept."), "{before:?}");
    p.exp_string("Slept.").unwrap();
    prompt(&mut p);
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}
