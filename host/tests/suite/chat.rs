//! A message in, one reply out: through the admin socket and through piped `clawbox chat`.

use std::time::Duration;

use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use testkit::Reply;

use super::support::*;

#[tokio::test]
async fn hello_gets_exactly_one_reply() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(seq % 2, 0, "inbound seqs are even");
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None)
    );
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: hello".to_owned()]);

    // The model saw the message with its seq id, the system prompt, and the bearer key.
    let request = model.last_request().unwrap();
    assert_eq!(request.header("authorization"), Some("Bearer test-key"));
    let messages = request.messages();
    assert_eq!(messages[0]["role"], "system");
    let user = messages.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.contains(&format!("id=\"{seq}\"")), "{user}");
    assert!(model.violations().is_empty(), "{:?}", model.violations());

    // The session's files are where the design says.
    let dir = session_dir(&fixture, &session);
    assert!(dir.join("inbound/inbound.db").is_file());
    assert!(dir.join("outbound/outbound.db").is_file());
    assert!(dir.join("workspace").is_dir());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn piped_chat_without_a_running_host() {
    let (_model, fixture) = setup().await;
    let out = fixture.chat("hi\n\nbye\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {stderr}\n{}",
        fixture.logs()
    );
    assert_eq!(stdout, "echo: hi\necho: bye\n", "stderr: {stderr}");
    // The in-process host is gone and released its socket.
    assert!(!fixture.socket_path().exists());
}

#[tokio::test]
async fn piped_chat_through_a_running_host_reports_failures() {
    let (model, mut fixture) = setup().await;
    fixture.set("MODEL_RETRIES", "0");
    fixture.start().await.unwrap();
    model.push(Reply::Status(400, "bad request: context too long".into()));
    let out = fixture.chat("first\nsecond\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("could not be processed"), "{stderr}");
    assert!(stderr.contains("context too long"), "{stderr}");
    // The failure did not stop the script: the next line was its own turn and was answered.
    assert_eq!(stdout, "echo: second\n", "{stderr}");
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_a_clear_error_and_the_connection_survives() {
    let (_model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client
        .raw("{\"op\":\"launch_rockets\"}\nnot json\n")
        .await
        .unwrap();
    for _ in 0..2 {
        let ev = client
            .wait_for(|e| matches!(e, Event::Error { .. }))
            .await
            .unwrap();
        let Event::Error { message } = ev else {
            unreachable!()
        };
        assert!(message.starts_with("malformed request"), "{message}");
    }
    let (_, seq) = client.send("still there?").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn replies_wait_for_a_terminal() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::text("late answer").after(Duration::from_millis(500)));
    let (_, seq) = client.send("question").await.unwrap();
    drop(client); // the terminal goes away before the answer exists
    model.wait_for_requests(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client
        .wait_for(|e| matches!(e, Event::Chat(host::channels::cli::ChatEvent::Reply { .. })))
        .await
        .unwrap();
    assert_eq!(client.replies_to(seq), vec!["late answer".to_owned()]);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_runner_exits_and_the_next_message_starts_a_new_one() {
    let (_model, mut fixture) = setup().await;
    fixture.set("IDLE_TIMEOUT_MS", "300");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("first").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let first = runner_pid(&fixture, &session, None).await;

    // The runner leaves by itself; the host records the session as stopped.
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runner never exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its session's task retires too: nothing is live, nothing runs.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = fixture
            .command(&["status", "--json"])
            .output()
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["sessions"] == serde_json::json!([]) {
            assert_eq!(status["containers"]["running"], 0, "{status:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = fixture
        .command(&["sessions", "--json"])
        .output()
        .await
        .unwrap();
    let sessions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sessions["sessions"][0]["id"],
        session.as_str(),
        "{sessions:#}"
    );
    assert_eq!(
        sessions["sessions"][0]["recorded"], "stopped",
        "{sessions:#}"
    );
    assert_eq!(
        sessions["sessions"][0]["container"],
        serde_json::Value::Null
    );

    // The conversation goes on with a new runner, history intact.
    let (_, next) = client.send("second").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(client.replies_to(next), vec!["echo: second".to_owned()]);
    assert_ne!(runner_pid(&fixture, &session, Some(first)).await, first);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn status_is_answered_by_the_host_without_waking_the_agent() {
    let (model, fixture) = setup().await;
    let out = fixture.chat("hi\n/status\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", fixture.logs());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "echo: hi");
    assert!(lines[1].starts_with("Andy is idle"), "{stdout}");
    assert_eq!(model.request_count(), 1, "/status never reaches the model");
}

#[tokio::test]
async fn replies_cannot_drive_the_terminal() {
    let (model, fixture) = setup().await;
    model.push(Reply::text(
        "\u{1b}[2J\u{1b}]0;pwned\u{7}red\nline two\u{202e}reversed",
    ));
    let out = fixture.chat("hi\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}') && !stdout.contains('\u{202e}'),
        "{stdout:?}"
    );
    assert!(stdout.contains("red\nline two"), "{stdout:?}");
}

#[tokio::test]
async fn context_tokens_reaches_the_runner_and_long_chats_are_compacted() {
    let (model, mut fixture) = setup().await;
    model.summarise_when(agent_runner::compact::SUMMARY_PROMPT);
    model.set_context_limit(8_000);
    fixture.set("CONTEXT_TOKENS", "8000");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    for i in 0..16 {
        let (_session, seq) = client
            .send(&format!("message {i}: {filler}"))
            .await
            .unwrap();
        assert_eq!(
            client.done(seq).await.unwrap(),
            (InboundStatus::Completed, None),
            "message {i}"
        );
    }
    let summaries = model
        .requests()
        .iter()
        .filter(|r| {
            r.messages().first().and_then(|m| m["content"].as_str())
                == Some(agent_runner::compact::SUMMARY_PROMPT)
        })
        .count();
    assert!(summaries >= 1, "no compaction under an 8000-token budget");
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn piped_chat_prints_a_reply_while_it_is_written_and_once() {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (model, fixture) = setup().await;
    let gate = testkit::fake_model::Gate::new();
    let answer = "Half of it now, the other half later.";
    model.push(Reply::held(
        answer, /*pieces*/ 2, /*before*/ 1, &gate,
    ));
    let mut child = fixture
        .command(&["chat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let half = &answer[..answer.len().div_ceil(2)];
    // The first half is printed (without a newline yet) while the model is held.
    while !String::from_utf8_lossy(&seen).contains(half) {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, stdout.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no draft on stdout: {seen:?}\n{}", fixture.logs()))
            .unwrap();
        assert!(n > 0, "stdout ended early: {seen:?}\n{}", fixture.logs());
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&seen), half);
    gate.open();
    stdout.read_to_end(&mut seen).await.unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{}", fixture.logs());
    // The reply completed the line: stdout holds it exactly once.
    assert_eq!(String::from_utf8_lossy(&seen), format!("{answer}\n"));
}

#[tokio::test]
async fn a_running_tool_call_reaches_terminals_as_a_progress_line() {
    let (model, mut fixture) = setup().await;
    // Hostile arguments: a newline and a bidi override in the command.
    model.push(Reply::ToolCalls(vec![testkit::ToolCall::new(
        "run_bash",
        serde_json::json!({ "command": "sleep 1\n\u{202e}echo done" }),
    )]));
    model.push(Reply::text("slept"));
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("sleep").await.unwrap();
    let event = client
        .wait_for(|e| {
            matches!(
                e,
                Event::Chat(ChatEvent::Draft {
                    progress: Some(_),
                    ..
                })
            )
        })
        .await
        .unwrap();
    let Event::Chat(ChatEvent::Draft {
        progress, reply_to, ..
    }) = event
    else {
        unreachable!()
    };
    assert_eq!(progress.as_deref(), Some("running `sleep 1 echo done`…"));
    assert_eq!(reply_to, seq);
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None)
    );
    assert_eq!(client.replies_to(seq), vec!["slept".to_owned()]);
}

#[tokio::test]
async fn piped_chat_keeps_progress_lines_out_of_its_output() {
    let (model, fixture) = setup().await;
    model.push(Reply::ToolCalls(vec![testkit::ToolCall::new(
        "run_bash",
        serde_json::json!({ "command": "sleep 1" }),
    )]));
    model.push(Reply::text("slept"));
    let out = fixture.chat("sleep\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        fixture.logs()
    );
    assert_eq!(stdout, "slept\n", "stderr: {stderr}");
    assert!(!stderr.contains("running"), "{stderr}");
}
