//! Scheduled tasks in the runner: the script gate decides before any model request, its
//! verdict reaches the host in the ack's detail, and a task's notes reach the model.

use mailbox::tasks::ScriptReport;
use mailbox::{AckStatus, InboundKind};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use testkit::FakeModel;

use super::harness::{Session, last_user};

fn task(s: &mut Session, prompt: &str, script: Option<&str>) -> i64 {
    s.insert(
        InboundKind::Task,
        json!({
            "prompt": prompt,
            "task_id": "task-ab12",
            "script": script,
            "scheduled_for": "2026-06-01T08:00:00.000Z",
            "fired_at": "2026-06-01T08:00:00.100Z",
            "timezone": "Europe/Berlin",
            "late": false,
            "run_now": false,
        }),
        true,
    )
}

/// The final verdict on `seq`, with its detail.
fn verdict(s: &Session, seq: i64) -> (AckStatus, Option<String>, Option<Value>) {
    let ack = s
        .acks()
        .into_iter()
        .rfind(|a| a.message_seq == seq)
        .unwrap();
    (ack.status, ack.error, ack.detail)
}

#[tokio::test]
async fn a_script_that_says_false_ends_the_run_without_the_model() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    let seq = task(
        &mut s,
        "tell me if the build broke",
        Some("echo checking >&2; echo '{\"wakeAgent\": false, \"data\": null}'"),
    );
    s.run(&model).await;
    assert_eq!(model.request_count(), 0, "no request reached the model");
    assert_eq!(
        verdict(&s, seq),
        (
            AckStatus::Completed,
            None,
            Some(ScriptReport::Skip.detail())
        )
    );
    assert!(s.replies().is_empty());
    assert!(s.history().is_empty(), "nothing for the conversation");
}

#[tokio::test]
async fn a_script_that_says_true_wakes_the_agent_with_its_data() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    std::fs::write(s.paths.workspace.join("builds.txt"), "build 42 failed\n").unwrap();
    let seq = task(
        &mut s,
        "tell me which build broke",
        Some(
            "line=$(cat builds.txt)\n\
             printf '{\"wakeAgent\": true, \"data\": {\"broken\": \"%s\"}}\\n' \"$line\"",
        ),
    );
    s.run(&model).await;
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let user = last_user(requests[0].messages());
    assert!(
        user.contains(
            "<script_output>{&quot;broken&quot;:&quot;build 42 failed&quot;}</script_output>"
        ),
        "{user}"
    );
    assert!(user.contains("tell me which build broke"), "{user}");
    assert!(
        user.split_once('\n')
            .unwrap()
            .1
            .starts_with(&format!("<task id=\"{seq}\" task=\"task-ab12\"")),
        "{user}"
    );
    assert_eq!(
        verdict(&s, seq),
        (
            AckStatus::Completed,
            None,
            Some(ScriptReport::Wake.detail())
        )
    );
    assert_eq!(s.replies().len(), 1, "the agent answered");
}

#[tokio::test]
async fn a_broken_script_is_reported_and_the_model_is_not_called() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    s.set_env("CLAWBOX_TASK_SCRIPT_TIMEOUT_MS", "500");
    let cases = [
        (
            "echo all good",
            "last line is not a JSON object; it must be JSON {\"wakeAgent\": true|false, \"data\": …}, got: all good",
        ),
        (
            "echo oops >&2; exit 3",
            "the script exited with status 3: oops",
        ),
        (
            "sleep 20",
            "the script timed out after 500 ms and was killed",
        ),
    ];
    let seqs: Vec<i64> = cases
        .iter()
        .map(|(script, _)| task(&mut s, "check", Some(script)))
        .collect();
    s.run(&model).await;
    assert_eq!(model.request_count(), 0);
    for (seq, (_, needle)) in seqs.into_iter().zip(cases) {
        let (status, error, detail) = verdict(&s, seq);
        assert_eq!((status, error), (AckStatus::Completed, None));
        let Some(ScriptReport::Error { reason }) =
            detail.as_ref().and_then(ScriptReport::from_detail)
        else {
            panic!("no script error in {detail:?}");
        };
        assert!(reason.contains(needle), "{reason}");
    }
}

#[tokio::test]
async fn a_task_with_a_script_runs_alone_and_the_chat_still_gets_answered() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    let before = s.send("hello");
    let gated = task(&mut s, "check", Some("echo '{\"wakeAgent\": false}'"));
    let after = s.send("still there?");
    s.run(&model).await;
    // One model turn for "hello", none for the task, one for the message after it.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert!(last_user(requests[0].messages()).contains("hello"));
    assert!(!last_user(requests[0].messages()).contains("<task"));
    assert!(last_user(requests[1].messages()).contains("still there?"));
    for seq in [before, gated, after] {
        assert_eq!(verdict(&s, seq).0, AckStatus::Completed, "{seq}");
    }
    assert_eq!(s.replies().len(), 2);
}

#[tokio::test]
async fn a_late_run_tells_the_agent_so() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    s.insert(
        InboundKind::Task,
        json!({
            "prompt": "daily overview",
            "task_id": "task-ab12",
            "scheduled_for": "2026-06-01T07:00:00.000Z",
            "fired_at": "2026-06-01T11:30:00.000Z",
            "timezone": "Europe/Berlin",
            "late": true,
        }),
        true,
    );
    s.run(&model).await;
    let user = last_user(model.requests()[0].messages());
    assert!(
        user.contains(
            "this run is late. It was due 2026-06-01 09:00 CEST (Europe/Berlin) and starts \
             4 h 30 min later"
        ),
        "{user}"
    );
}

#[tokio::test]
async fn a_script_runs_in_the_tasks_time_zone() {
    let model = FakeModel::start().await.unwrap();
    let mut s = Session::new();
    // The runner's zone is Europe/Berlin (the harness); this task's is Asia/Kolkata.
    s.insert(
        InboundKind::Task,
        json!({
            "prompt": "what offset?",
            "task_id": "task-cd34",
            "script": "printf '{\"wakeAgent\": true, \"data\": \"%s\"}\\n' \"$(date +%z)\"",
            "scheduled_for": "2026-06-01T08:00:00.000Z",
            "fired_at": "2026-06-01T08:00:00.100Z",
            "timezone": "Asia/Kolkata",
            "late": false,
            "run_now": false,
        }),
        true,
    );
    s.run(&model).await;
    let user = last_user(model.requests()[0].messages());
    assert!(user.contains("&quot;+0530&quot;"), "{user}");
}
