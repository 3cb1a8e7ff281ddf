//! Scheduled tasks through the whole stack: the fake model has the agent call the task tools,
//! mcp-tools asks the host, the host's scheduler fires runs into the session's inbox, the runner
//! answers them, and the terminal sees the result; `clawbox tasks` manages them from outside.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Value, json};
use testkit::{FakeModel, HostFixture, Reply, ToolCall};

use super::support::*;

/// The agent (scripted) calls `tool` with `args` when told `text`, then says "done"; returns
/// the tool's result as the model read it.
pub(super) async fn agent_calls(
    client: &mut Client,
    model: &FakeModel,
    text: &str,
    tool: &str,
    args: Value,
) -> String {
    let call = ToolCall::new(tool, args);
    let id = call.id.clone();
    model.push(Reply::ToolCalls(vec![call]));
    model.push(Reply::text("done"));
    let (_, seq) = client.send(text).await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    model
        .requests()
        .iter()
        .flat_map(|r| r.messages().to_vec())
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == id.as_str())
        .and_then(|m| m["content"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no result for {tool}"))
}

/// The task id in a tool result (`scheduled task-… `).
pub(super) fn task_id(result: &str) -> String {
    result
        .split_whitespace()
        .find(|w| w.starts_with("task-"))
        .unwrap_or_else(|| panic!("no task id in {result:?}"))
        .to_owned()
}

/// `clawbox tasks <args…> --json`, parsed; panics on failure.
pub(super) async fn tasks_json(fixture: &HostFixture, args: &[&str]) -> Value {
    let mut all = vec!["tasks"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = fixture.command(&all).output().await.unwrap();
    assert!(
        out.status.success(),
        "clawbox {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `clawbox tasks <args…>`: exit success and stderr.
async fn tasks_cli(fixture: &HostFixture, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["tasks"];
    all.extend_from_slice(args);
    let out = fixture.command(&all).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn central(fixture: &HostFixture) -> Connection {
    let conn = Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn inbound(fixture: &HostFixture, session: &str) -> Connection {
    let conn = Connection::open(session_dir(fixture, session).join("inbound/inbound.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Waits for the reply the agent gave to a task run whose prompt contains `needle` (the fake
/// model echoes the task's text); returns the reply and the task message's seq.
pub(super) async fn task_reply(client: &mut Client, needle: &str) -> (String, i64) {
    match client
        .wait_for(|e| {
            matches!(e, Event::Chat(ChatEvent::Reply { text, in_reply_to: Some(_), .. })
                if text.starts_with("echo: ") && text.contains(needle))
        })
        .await
        .unwrap()
    {
        Event::Chat(ChatEvent::Reply {
            text,
            in_reply_to: Some(seq),
            ..
        }) => (text, seq),
        _ => unreachable!(),
    }
}

/// The task message as the model read it: the last user message of the request for `seq`.
pub(super) fn task_as_read(model: &FakeModel, seq: i64) -> String {
    let open = format!("<task id=\"{seq}\"");
    model
        .requests()
        .iter()
        .filter_map(|r| r.messages().last()?["content"].as_str().map(str::to_owned))
        .find(|m| m.contains(&open))
        .unwrap_or_else(|| panic!("no request for task message {seq}"))
}

/// Waits until `check` holds for the task's view from `clawbox tasks show`.
pub(super) async fn wait_task(
    fixture: &HostFixture,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let shown = tasks_json(fixture, &["show", id]).await;
        if check(&shown) {
            return shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never got there: {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_one_shot_task_fires_on_time_and_its_answer_reaches_the_chat() {
    let (model, mut fixture) = setup().await;
    fixture.set("TIMEZONE", "Europe/Berlin");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    // Whole seconds, with an offset, as a model writes it; far enough ahead for a busy machine
    // to get the request to the host before that time.
    let due = DateTime::from_timestamp(Utc::now().timestamp() + 8, 0).unwrap();
    let result = agent_calls(
        &mut client,
        &model,
        "remind me to stretch in a few seconds",
        "schedule_task",
        json!({
            "prompt": "Remind the user to stretch.",
            "process_after": due.to_rfc3339_opts(SecondsFormat::Secs, true),
        }),
    )
    .await;
    // What the host stored, in local time and in UTC.
    let id = task_id(&result);
    let local = due
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert!(result.starts_with(&format!("scheduled {id}\n")), "{result}");
    assert!(
        result.contains(&format!(
            "next run: {local}{}",
            if due.timestamp() % 60 == 0 { " " } else { ":" }
        )),
        "{result}"
    );
    assert!(
        result.contains(&format!(
            "(Europe/Berlin) = {}",
            due.to_rfc3339_opts(SecondsFormat::Secs, true)
        )),
        "{result}"
    );

    let (text, seq) = task_reply(&mut client, "Remind the user to stretch.").await;
    assert_eq!(text, "echo: Remind the user to stretch.");
    let read = task_as_read(&model, seq);
    assert!(read.contains(&format!("task=\"{id}\"")), "{read}");
    // Fired within a second of its time.
    let (session, _) = client.send("thanks").await.unwrap();
    let created: String = inbound(&fixture, &session)
        .query_row(
            "SELECT created_at FROM messages_in WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap();
    let fired = DateTime::parse_from_rfc3339(&created)
        .unwrap()
        .with_timezone(&Utc);
    let late = fired - due;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "fired {late:?} after its time"
    );
    let shown = wait_task(&fixture, &id, |t| t["task"]["last_outcome"] == "completed").await;
    assert_eq!(shown["task"]["status"], "completed");
    assert_eq!(shown["runs"][0]["outcome"], "completed");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn bad_task_requests_are_refused_precisely_and_store_nothing() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    // Another agent's task, to be left alone.
    central(&fixture)
        .execute_batch(
            "INSERT INTO agent_groups (id, name, folder, created_at)
                 VALUES ('other', 'Other', 'other', '2026-01-01T00:00:00.000Z');
             INSERT INTO sessions (id, agent_group_id, messaging_group_id, last_activity, created_at)
                 VALUES ('sess-other', 'other', 'cli:local', '2026-01-01T00:00:00.000Z',
                         '2026-01-01T00:00:00.000Z');
             INSERT INTO tasks (id, agent_group_id, session_id, prompt, schedule_kind, cron,
                     timezone, status, next_run, created_by, created_at, updated_at)
                 VALUES ('task-theirs', 'other', 'sess-other', 'x', 'cron', '0 9 * * *', 'UTC',
                         'active', '2099-01-01T09:00:00.000Z', 'agent:other',
                         '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let cases = [
        (
            "schedule_task",
            json!({ "prompt": "x", "cron": "0 25 * * *" }),
            "Error: invalid cron expression \"0 25 * * *\": the hour field \"25\" is invalid",
        ),
        (
            "schedule_task",
            json!({ "prompt": "x", "process_after": "2020-01-01 09:00" }),
            "Error: 2020-01-01 09:00 UTC is in the past (it is now ",
        ),
        (
            "schedule_task",
            json!({ "prompt": "x", "process_after": "+1h", "cron": "0 9 * * *" }),
            "Error: give either process_after (run once) or cron (repeat), not both",
        ),
        (
            "schedule_task",
            json!({ "prompt": 42, "process_after": "+1h" }),
            "Error: failed to deserialize parameters: invalid type: integer `42`, expected a string",
        ),
        (
            "cancel_task",
            json!({ "task_id": "task-nope" }),
            "Error: there is no task \"task-nope\"",
        ),
        (
            "pause_task",
            json!({ "task_id": "task-theirs" }),
            "Error: task task-theirs belongs to another agent",
        ),
        (
            "update_task",
            json!({ "task_id": "task-theirs", "prompt": "mine now" }),
            "Error: task task-theirs belongs to another agent",
        ),
    ];
    for (tool, args, want) in cases {
        let result = agent_calls(&mut client, &model, "do it", tool, args.clone()).await;
        assert!(result.contains(want), "{tool} {args}: {result}");
    }
    // Nothing was stored or changed.
    let all = tasks_json(&fixture, &["list", "--all"]).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(all[0]["id"], "task-theirs");
    assert_eq!(all[0]["status"], "active");
    assert_eq!(all[0]["prompt"], "x");
    // And the agent's own list does not show the other agent's task.
    let list = agent_calls(&mut client, &model, "list", "list_tasks", json!({})).await;
    assert_eq!(list, "no tasks");
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn the_terminal_and_the_agent_manage_a_series_and_cancelled_stays_cancelled() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let result = agent_calls(
        &mut client,
        &model,
        "every morning please",
        "schedule_task",
        json!({ "prompt": "Morning overview", "cron": "0 7 * * *", "timezone": "America/New_York" }),
    )
    .await;
    let id = task_id(&result);
    assert!(
        result.contains("schedule: cron \"0 7 * * *\" in America/New_York"),
        "{result}"
    );

    // Its first run, now, from the terminal; the answer reaches the chat.
    let fired = tasks_json(&fixture, &["run-now", &id]).await;
    assert_eq!(fired["run"]["trigger"], "run-now");
    assert_eq!(fired["run"]["outcome"], "fired");
    let (_, seq) = task_reply(&mut client, "Morning overview").await;
    let read = task_as_read(&model, seq);
    assert!(read.contains("started by hand"), "{read}");
    wait_task(&fixture, &id, |t| t["task"]["last_outcome"] == "completed").await;

    // After the first run, the agent pauses, updates and resumes the same series.
    let paused = agent_calls(
        &mut client,
        &model,
        "pause it",
        "pause_task",
        json!({ "task_id": id }),
    )
    .await;
    assert!(
        paused.starts_with(&format!("paused {id}\nstatus: paused")),
        "{paused}"
    );
    assert_eq!(
        tasks_json(&fixture, &["show", &id]).await["task"]["next_run"],
        Value::Null
    );
    let updated = agent_calls(
        &mut client,
        &model,
        "make it 8:30 on weekdays",
        "update_task",
        json!({ "task_id": id, "cron": "30 8 * * 1-5", "prompt": "Weekday overview" }),
    )
    .await;
    assert!(updated.contains("status: paused"), "{updated}");
    assert!(updated.contains("cron \"30 8 * * 1-5\""), "{updated}");
    let (ok, stdout, _) = tasks_cli(&fixture, &["resume", &id]).await;
    assert!(ok && stdout.contains("(active)"), "{stdout}");
    let shown = tasks_json(&fixture, &["show", &id]).await;
    assert!(
        shown["task"]["next_run"]["local"]
            .as_str()
            .unwrap()
            .contains("08:30"),
        "{shown:#}"
    );
    assert_eq!(shown["task"]["prompt"], "Weekday overview");
    assert_eq!(shown["task"]["run_count"], 1);

    // The agent cancels it; nothing brings it back.
    let cancelled = agent_calls(
        &mut client,
        &model,
        "stop it",
        "cancel_task",
        json!({ "task_id": id }),
    )
    .await;
    assert!(cancelled.contains("status: cancelled"), "{cancelled}");
    let (ok, _, stderr) = tasks_cli(&fixture, &["resume", &id]).await;
    assert!(!ok && stderr.contains("is cancelled"), "{stderr}");
    drop(client);
    fixture.stop().await.unwrap();
    // Without a host the terminal reads the database itself.
    let (ok, _, stderr) = tasks_cli(&fixture, &["run-now", &id]).await;
    assert!(!ok && stderr.contains("is cancelled"), "{stderr}");
    let listed = tasks_json(&fixture, &["list"]).await;
    assert_eq!(listed, json!([]), "a cancelled task is not listed as open");
    fixture.start().await.unwrap();
    let shown = tasks_json(&fixture, &["show", &id]).await;
    assert_eq!(shown["task"]["status"], "cancelled");
    assert_eq!(shown["task"]["next_run"], Value::Null);
    assert_eq!(shown["runs"].as_array().unwrap().len(), 1);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn the_script_gate_decides_before_the_model_and_the_history_shows_why() {
    let (model, mut fixture) = setup().await;
    fixture.set("TASK_SCRIPT_TIMEOUT_MS", "2000");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let mut schedule = async |script: &str| {
        task_id(
            &agent_calls(
                &mut client,
                &model,
                "watch the build",
                "schedule_task",
                json!({ "prompt": "Tell me what broke.", "cron": "0 0 1 1 *", "script": script }),
            )
            .await,
        )
    };
    let quiet = schedule("echo '{\"wakeAgent\": false}'").await;
    let loud = schedule("echo '{\"wakeAgent\": true, \"data\": {\"broken\": \"build 42\"}}'").await;
    let broken = schedule("echo 'not json'").await;
    let slow = schedule("sleep 30").await;

    let before = model.request_count();
    for id in [&quiet, &broken, &slow] {
        tasks_json(&fixture, &["run-now", id]).await;
    }
    let quiet_run = wait_task(&fixture, &quiet, |t| t["runs"][0]["outcome"] != "fired").await;
    let broken_run = wait_task(&fixture, &broken, |t| t["runs"][0]["outcome"] != "fired").await;
    let slow_run = wait_task(&fixture, &slow, |t| t["runs"][0]["outcome"] != "fired").await;
    assert_eq!(
        model.request_count(),
        before,
        "no request reached the model"
    );
    assert_eq!(quiet_run["runs"][0]["outcome"], "script-false");
    assert_eq!(broken_run["runs"][0]["outcome"], "script-error");
    assert!(
        broken_run["runs"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("got: not json"),
        "{broken_run:#}"
    );
    assert_eq!(slow_run["runs"][0]["outcome"], "script-error");
    assert!(
        slow_run["runs"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 s"),
        "{slow_run:#}"
    );

    tasks_json(&fixture, &["run-now", &loud]).await;
    let (_, seq) = task_reply(&mut client, "Tell me what broke.").await;
    let read = task_as_read(&model, seq);
    assert!(
        read.contains("<script_output>{&quot;broken&quot;:&quot;build 42&quot;}</script_output>"),
        "{read}"
    );
    let loud_run = wait_task(&fixture, &loud, |t| t["runs"][0]["outcome"] != "fired").await;
    assert_eq!(loud_run["runs"][0]["outcome"], "completed");
    assert_eq!(loud_run["runs"][0]["detail"], "the script woke the agent");
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_run_missed_while_the_host_was_down_fires_once_and_says_it_is_late() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let id = task_id(
        &agent_calls(
            &mut client,
            &model,
            "hourly",
            "schedule_task",
            // Yearly: only the run the test plants below can come due while it runs.
            json!({ "prompt": "Hourly check", "cron": "0 0 1 1 *" }),
        )
        .await,
    );
    drop(client);
    fixture.kill().await.unwrap();
    // The host was down for the last three slots.
    let missed = DateTime::from_timestamp(Utc::now().timestamp() / 3600 * 3600 - 2 * 3600, 0)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    central(&fixture)
        .execute(
            "UPDATE tasks SET next_run = ?1 WHERE id = ?2",
            [&missed, &id],
        )
        .unwrap();

    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = task_reply(&mut client, "Hourly check").await;
    let read = task_as_read(&model, seq);
    assert!(read.contains("this run is late"), "{read}");
    assert!(
        read.contains("Runs missed meanwhile are not repeated"),
        "{read}"
    );
    client.settle(Duration::from_millis(1500)).await;
    let shown = wait_task(&fixture, &id, |t| t["runs"][0]["outcome"] == "completed").await;
    assert_eq!(
        shown["runs"].as_array().unwrap().len(),
        1,
        "one run, not three: {shown:#}"
    );
    assert!(
        shown["runs"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("late"),
        "{shown:#}"
    );
    let next =
        DateTime::parse_from_rfc3339(shown["task"]["next_run"]["utc"].as_str().unwrap()).unwrap();
    assert!(next > Utc::now(), "back on schedule: {next}");
    let late_requests = model
        .requests()
        .iter()
        .filter(|r| r.body.to_string().contains("this run is late"))
        .count();
    assert_eq!(late_requests, 1);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn tasks_survive_a_host_restart() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let id = task_id(
        &agent_calls(
            &mut client,
            &model,
            "in a moment",
            "schedule_task",
            json!({ "prompt": "After the restart", "process_after": "+4s" }),
        )
        .await,
    );
    drop(client);
    fixture.kill().await.unwrap();
    let listed = tasks_json(&fixture, &["list"]).await;
    assert_eq!(listed[0]["id"], id.as_str(), "{listed:#}");
    assert_eq!(listed[0]["status"], "active");

    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    task_reply(&mut client, "After the restart").await;
    wait_task(&fixture, &id, |t| t["task"]["status"] == "completed").await;
    fixture.stop().await.unwrap();
}

/// The request row of `op` in the session's outbound.db, and its answer in inbound.db.
fn request_and_answer(fixture: &HostFixture, session: &str, op: &str) -> (i64, Option<Value>) {
    let outbound =
        Connection::open(session_dir(fixture, session).join("outbound/outbound.db")).unwrap();
    let seq: i64 = outbound
        .query_row(
            "SELECT seq FROM messages_out WHERE kind = 'request' AND json_extract(content, '$.op') = ?1
             ORDER BY seq DESC LIMIT 1",
            [op],
            |r| r.get(0),
        )
        .unwrap();
    let body: Option<String> = inbound(fixture, session)
        .query_row(
            "SELECT body FROM responses WHERE request_seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .optional()
        .unwrap();
    (seq, body.map(|b| serde_json::from_str(&b).unwrap()))
}

fn tasks_stored(fixture: &HostFixture) -> i64 {
    central(fixture)
        .query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_host_crash_between_request_and_answer_answers_exactly_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let result = agent_calls(
        &mut client,
        &model,
        "tomorrow",
        "schedule_task",
        json!({ "prompt": "Once", "process_after": "+1d" }),
    )
    .await;
    let id = task_id(&result);
    let (session, _) = client.send("and now?").await.unwrap();
    drop(client);
    fixture.kill().await.unwrap();

    // The state a crash after applying the request but before answering it leaves: the task
    // and the journal in the central database, the request open and unanswered in the inbox.
    let (seq, answer) = request_and_answer(&fixture, &session, "schedule_task");
    assert_eq!(answer.unwrap()["id"], id.as_str());
    inbound(&fixture, &session)
        .execute_batch(&format!(
            "DELETE FROM responses WHERE request_seq = {seq};
             UPDATE delivery SET status = 'sending' WHERE out_seq = {seq};"
        ))
        .unwrap();
    assert_eq!(tasks_stored(&fixture), 1);

    fixture.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        if let (_, Some(answer)) = request_and_answer(&fixture, &session, "schedule_task") {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The same answer, the task applied once.
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(tasks_stored(&fixture), 1);
    let delivery: String = inbound(&fixture, &session)
        .query_row(
            "SELECT status FROM delivery WHERE out_seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(delivery, "delivered");

    // A request its runner wrote just before the host died, never applied: answered once after
    // the restart — refused, since the runner that asked is gone — and nothing is stored.
    fixture.kill().await.unwrap();
    {
        let mut runner = mailbox::OutboundDb::open(&mailbox::SessionPaths::from_root(
            &session_dir(&fixture, &session),
        ))
        .unwrap();
        runner
            .insert_message(
                &mailbox::request::outbound(
                    "out-orphan".into(),
                    "schedule_task",
                    json!({ "prompt": "Orphan", "process_after": "+1d" }),
                ),
                Utc::now(),
            )
            .unwrap();
    }
    // Marked busy, as a crash mid-turn leaves the session, so the restart looks at it.
    central(&fixture)
        .execute(
            "UPDATE sessions SET runner_state = 'running' WHERE id = ?1",
            [&session],
        )
        .unwrap();
    fixture.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let outbound =
            Connection::open(session_dir(&fixture, &session).join("outbound/outbound.db")).unwrap();
        let seq: i64 = outbound
            .query_row(
                "SELECT seq FROM messages_out WHERE id = 'out-orphan'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let body: Option<String> = inbound(&fixture, &session)
            .query_row(
                "SELECT body FROM responses WHERE request_seq = ?1",
                [seq],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        if let Some(body) = body {
            break serde_json::from_str::<Value>(&body).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused["code"], "asker_gone", "{refused}");
    assert_eq!(tasks_stored(&fixture), 1);
    let answers: i64 = inbound(&fixture, &session)
        .query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(answers, 2, "one answer per request");
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_run_is_reported_to_the_chat_and_the_series_goes_on() {
    let (model, mut fixture) = setup().await;
    fixture.set("MODEL_RETRIES", "1");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let id = task_id(
        &agent_calls(
            &mut client,
            &model,
            "yearly",
            "schedule_task",
            json!({ "prompt": "New year's wishes", "cron": "0 0 1 1 *" }),
        )
        .await,
    );
    // The model is down for the first run.
    model.push(Reply::Status(500, "upstream exploded".into()));
    model.push(Reply::Status(500, "upstream exploded again".into()));
    tasks_json(&fixture, &["run-now", &id]).await;
    let notice = client
        .wait_for(|e| matches!(e, Event::Chat(ChatEvent::Notice { .. })))
        .await
        .unwrap();
    let Event::Chat(ChatEvent::Notice { text }) = notice else {
        unreachable!()
    };
    assert!(
        text.starts_with(&format!("⚠ Scheduled task {id} could not be run:")),
        "{text}"
    );
    let shown = wait_task(&fixture, &id, |t| t["runs"][0]["outcome"] == "failed").await;
    assert_eq!(shown["task"]["status"], "active", "{shown:#}");
    assert!(shown["task"]["next_run"]["utc"].is_string());

    // The next run works again.
    tasks_json(&fixture, &["run-now", &id]).await;
    task_reply(&mut client, "New year's wishes").await;
    let shown = wait_task(&fixture, &id, |t| t["runs"][0]["outcome"] == "completed").await;
    assert_eq!(shown["runs"][1]["outcome"], "failed");
    assert_eq!(shown["task"]["run_count"], 2);
    fixture.stop().await.unwrap();
}
