//! The task tools against real session databases, with a stand-in for the host that answers
//! their requests through the real mailbox API (the host's own rules are tested in the host
//! crate and end to end there).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailbox::request::Request;
use mailbox::{InboundDb, OutboundKind, OutboundReader, SessionPaths};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::harness::Session;

type Reply = Box<dyn Fn(&str, &Value) -> (bool, Value) + Send>;

/// Answers every request of a session the way `reply` says, and remembers what it was asked.
struct FakeHost {
    stop: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<(i64, String, Value)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHost {
    fn start(paths: SessionPaths, reply: Reply) -> FakeHost {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (stop2, asked2) = (Arc::clone(&stop), Arc::clone(&asked));
        let thread = std::thread::spawn(move || {
            let mut cursor = 0;
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                let Ok(reader) = OutboundReader::open(&paths.outbound_db()) else {
                    continue;
                };
                let Ok(rows) = reader.messages_after(cursor) else {
                    continue;
                };
                for row in rows {
                    cursor = row.seq;
                    if row.kind != OutboundKind::Request {
                        continue;
                    }
                    let request = Request::from_message(&row).unwrap();
                    let (ok, body) = reply(&request.op, &request.args);
                    asked2
                        .lock()
                        .unwrap()
                        .push((request.seq, request.op, request.args));
                    InboundDb::open(&paths)
                        .unwrap()
                        .answer(row.seq, ok, &body, chrono::Utc::now())
                        .unwrap();
                }
            }
        });
        FakeHost {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<(i64, String, Value)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn task_view(id: &str) -> Value {
    json!({
        "id": id,
        "agent": "default",
        "session": "sess-1",
        "status": "active",
        "prompt": "water the plants",
        "script": null,
        "cron": null,
        "run_at": { "local": "2026-12-24 09:00 CET (Europe/Berlin)", "utc": "2026-12-24T08:00:00Z" },
        "timezone": "Europe/Berlin",
        "next_run": { "local": "2026-12-24 09:00 CET (Europe/Berlin)", "utc": "2026-12-24T08:00:00Z" },
        "last_run": null,
        "last_outcome": null,
        "run_count": 0,
        "created_by": "agent:default",
        "requested_by": "telegram:1",
        "created_at": "2026-12-01T10:00:00.000Z",
    })
}

#[tokio::test]
async fn schedule_task_asks_the_host_and_returns_what_it_stored() {
    let s = Session::start().await;
    let host = FakeHost::start(
        s.paths.clone(),
        Box::new(|_, _| (true, task_view("task-k3j9x2ab"))),
    );
    let text = s
        .call(
            "schedule_task",
            json!({ "prompt": "water the plants", "process_after": "2026-12-24 09:00" }),
        )
        .await
        .ok();
    assert_eq!(
        text,
        "scheduled task-k3j9x2ab\n\
         status: active\n\
         schedule: once at 2026-12-24 09:00 CET (Europe/Berlin) = 2026-12-24T08:00:00Z\n\
         next run: 2026-12-24 09:00 CET (Europe/Berlin) = 2026-12-24T08:00:00Z\n\
         prompt: water the plants"
    );
    let asked = host.asked();
    assert_eq!(asked.len(), 1);
    let (seq, op, args) = &asked[0];
    assert_eq!(seq % 2, 1, "a request is an outbound row");
    assert_eq!(op, "schedule_task");
    assert_eq!(
        args,
        &json!({ "prompt": "water the plants", "process_after": "2026-12-24 09:00" })
    );
    // The answer is in the inbox, recorded once, and the row is marked as handled.
    let inbound = InboundDb::open(&s.paths).unwrap();
    assert!(inbound.response(*seq).unwrap().unwrap().ok);
}

#[tokio::test]
async fn a_refusal_is_a_tool_error_with_the_hosts_reason() {
    let s = Session::start().await;
    let _host = FakeHost::start(
        s.paths.clone(),
        Box::new(|_, args| {
            let cron = args["cron"].as_str().unwrap_or_default().to_owned();
            (
                false,
                json!({
                    "error": format!("invalid cron expression {cron:?}: the hour field \"25\" is invalid"),
                    "code": "invalid_cron"
                }),
            )
        }),
    );
    let err = s
        .call(
            "schedule_task",
            json!({ "prompt": "x", "cron": "0 25 * * *" }),
        )
        .await
        .err();
    assert_eq!(
        err,
        "invalid cron expression \"0 25 * * *\": the hour field \"25\" is invalid"
    );
}

#[tokio::test]
async fn every_task_tool_is_a_request_with_its_arguments() {
    let s = Session::start().await;
    let host = FakeHost::start(
        s.paths.clone(),
        Box::new(|op, _| match op {
            "list_tasks" => (
                true,
                json!({ "tasks": [task_view("task-a"), task_view("task-b")] }),
            ),
            _ => (true, task_view("task-a")),
        }),
    );
    let calls = [
        (
            "update_task",
            json!({ "task_id": "task-a", "cron": "" }),
            "updated task-a",
        ),
        (
            "pause_task",
            json!({ "task_id": "task-a" }),
            "paused task-a",
        ),
        (
            "resume_task",
            json!({ "task_id": "task-a" }),
            "resumed task-a",
        ),
        (
            "cancel_task",
            json!({ "task_id": "task-a" }),
            "cancelled task-a",
        ),
        (
            "list_tasks",
            json!({}),
            "2 tasks:\n\ntask-a\nstatus: active",
        ),
    ];
    for (tool, args, starts) in &calls {
        let text = s.call(tool, args.clone()).await.ok();
        assert!(text.starts_with(starts), "{tool}: {text}");
    }
    let asked: Vec<(String, Value)> = host
        .asked()
        .into_iter()
        .map(|(_, op, args)| (op, args))
        .collect();
    let want: Vec<(String, Value)> = calls
        .iter()
        .map(|(tool, args, _)| ((*tool).to_owned(), args.clone()))
        .collect();
    assert_eq!(asked, want);
}

#[tokio::test]
async fn unknown_arguments_are_refused_before_anything_is_asked() {
    let s = Session::start().await;
    let host = FakeHost::start(
        s.paths.clone(),
        Box::new(|_, _| (true, task_view("task-a"))),
    );
    let err = s
        .call(
            "schedule_task",
            json!({ "prompt": "x", "process_after": "+1h", "recurrence": "0 9 * * *" }),
        )
        .await
        .err();
    assert!(err.contains("unknown field `recurrence`"), "{err}");
    assert!(host.asked().is_empty());
}

#[tokio::test]
async fn an_empty_list_says_so() {
    let s = Session::start().await;
    let _host = FakeHost::start(
        s.paths.clone(),
        Box::new(|_, _| (true, json!({ "tasks": [] }))),
    );
    assert_eq!(
        s.call("list_tasks", json!({ "status": "all" })).await.ok(),
        "no tasks"
    );
}
