//! Crashes and bad answers: every message is answered exactly once or fails with a readable
//! reason — never lost, never answered twice, never retried forever.

use std::time::Duration;

use host::admin::protocol::Event;
use mailbox::InboundStatus;
use testkit::Reply;

use super::support::*;

fn tries(fixture: &testkit::HostFixture, session: &str, seq: i64) -> u32 {
    let db = session_dir(fixture, session).join("inbound/inbound.db");
    let reader = mailbox::InboundReader::open(&db).unwrap();
    reader.get(seq).unwrap().unwrap().tries
}

#[tokio::test]
async fn runner_killed_mid_turn_is_retried_and_answered_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("work hard").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let pid = runner_pid(&fixture, &session, None).await;
    signal(pid, libc::SIGKILL);

    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None)
    );
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: work hard".to_owned()]);
    assert_eq!(tries(&fixture, &session, seq), 1);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_that_kills_the_runner_every_time_fails_after_max_tries() {
    let (model, mut fixture) = setup().await;
    fixture.set("MAX_TRIES", "3");
    fixture.start().await.unwrap();
    model.set_default(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("poison").await.unwrap();
    let mut last = None;
    for attempt in 1..=3 {
        model.wait_for_requests(attempt, WAIT).await.unwrap();
        let pid = runner_pid(&fixture, &session, last).await;
        signal(pid, libc::SIGKILL);
        last = Some(pid);
    }
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    let notices = client.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("could not be processed"), "{notices:?}");
    assert_eq!(model.request_count(), 3, "no fourth attempt");

    // The session still works for the next message.
    model.set_default(Reply::Echo);
    let (_, next) = client.send("are you ok?").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(
        client.replies_to(next),
        vec!["echo: are you ok?".to_owned()]
    );
    assert!(client.replies_to(seq).is_empty());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn model_errors_are_retried_then_answered_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::Status(500, "upstream exploded".into()));
    model.push(Reply::Status(500, "upstream exploded again".into()));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("ping").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: ping".to_owned()]);
    assert_eq!(model.request_count(), 3);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_from_the_model_is_a_clear_error_and_loses_nothing() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.set_default(Reply::Garbage("<html>502 Bad Gateway</html>".into()));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("what is the capital of France?").await.unwrap();
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed);
    let error = error.unwrap();
    assert!(error.to_lowercase().contains("malformed"), "{error}");
    assert!(
        !client.notices().is_empty() || {
            client.settle(Duration::from_millis(300)).await;
            !client.notices().is_empty()
        }
    );

    // The question is still in the conversation when the model works again.
    model.set_default(Reply::Echo);
    let (_, next) = client.send("and of Spain?").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    let last = model.last_request().unwrap();
    assert!(
        last.body.to_string().contains("capital of France"),
        "earlier message lost from the history"
    );
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn host_killed_mid_turn_delivers_the_reply_exactly_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::text("the answer").after(Duration::from_millis(1500)));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("a slow question").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    fixture.kill().await.unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(2000)).await;

    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client
        .wait_for(|e| matches!(e, Event::Chat(host::channels::cli::ChatEvent::Reply { .. })))
        .await
        .unwrap();
    client.settle(Duration::from_millis(500)).await;
    let replies = client.replies_to(seq);
    assert_eq!(replies.len(), 1, "{replies:?}");

    // Another restart does not send it again.
    fixture.stop().await.unwrap();
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client.settle(Duration::from_millis(800)).await;
    assert!(client.replies_to(seq).is_empty(), "{:?}", client.seen);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_frozen_runner_is_detected_by_its_heartbeat() {
    let (model, mut fixture) = setup().await;
    fixture.set("CLAIM_STUCK_MS", "1500");
    fixture.start().await.unwrap();
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("freeze").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let pid = runner_pid(&fixture, &session, None).await;
    signal(pid, libc::SIGSTOP);

    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: freeze".to_owned()]);
    assert_eq!(tries(&fixture, &session, seq), 1);
    assert!(
        fixture.logs().contains("stopped responding"),
        "{}",
        fixture.logs()
    );
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_runner_that_cannot_start_fails_the_message_instead_of_looping() {
    let (model, mut fixture) = setup().await;
    let broken = fixture.root().join("broken-runner");
    std::fs::write(&broken, "#!/bin/sh\necho 'config error' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fixture
        .set("CLAWBOX_RUNNER_BIN", broken.display().to_string())
        .set("MAX_TRIES", "3");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("anyone there?").await.unwrap();
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("exit code 3"), "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert_eq!(model.request_count(), 0);
    assert!(
        fixture.logs().contains("config error"),
        "runner stderr reaches the host log"
    );
    fixture.stop().await.unwrap();
}

/// `clawbox run 2>&1 | tee log`, then Ctrl-C: the pipe's reader is gone before the host has
/// finished logging. The host must not panic on the closed stderr: it answers, and it stops
/// cleanly on SIGTERM with its runner stopped.
#[tokio::test]
async fn a_closed_stderr_pipe_does_not_crash_the_host() {
    let (_model, fixture) = setup().await;
    let mut child = fixture
        .command(&["run"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::UnixStream::connect(fixture.socket_path())
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the host did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The reader goes away; every log line from now on meets a closed pipe.
    drop(child.stderr.take());
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let runner = runner_pid(&fixture, &session, None).await;
    signal(child.id().unwrap(), libc::SIGTERM);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clawbox run exited with {status}");
    assert!(
        !std::path::Path::new(&format!("/proc/{runner}")).exists()
            || std::fs::read_to_string(format!("/proc/{runner}/stat")).is_ok_and(|s| s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
        "runner {runner} outlived the host"
    );
}

/// The process runtime's record of a live runner (`DATA_DIR/runners/<pid>`) is how a restarted
/// host finds what its predecessor left — not by reading every process's environment.
#[tokio::test]
async fn a_restarted_host_finds_the_orphan_by_its_record() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("take your time").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let pid = runner_pid(&fixture, &session, None).await;
    let records = fixture.data_dir().join("runners");
    let record = std::fs::read_to_string(records.join(pid.to_string())).unwrap();
    assert!(
        record.trim_end().ends_with(&format!(" {session}")),
        "{record}"
    );
    fixture.kill().await.unwrap();
    drop(client);
    assert!(alive(pid), "the runner outlives the killed host");

    fixture.start().await.unwrap();
    assert!(
        fixture
            .logs()
            .contains("stopping runner left by a previous host"),
        "{}",
        fixture.logs()
    );
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None)
    );
    assert!(!alive(pid), "the orphan was stopped");
    assert!(
        !records.join(pid.to_string()).exists(),
        "its record went with it"
    );
    fixture.stop().await.unwrap();
}

/// Whether `pid` is a running process (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}
