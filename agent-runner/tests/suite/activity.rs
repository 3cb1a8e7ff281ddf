//! The `runner_state` row through a turn, and what a turn costs in `outbound.db` commits.

use std::cell::Cell;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;
use mailbox::{AckStatus, Activity, RunnerEvent, RunnerState};
use notify::{EventKind, RecursiveMode, Watcher};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session};

/// `(activity, step, tool, tool_timeout_ms)` of the row.
fn summary(state: &RunnerState) -> (Activity, u32, Option<&str>, Option<u64>) {
    (
        state.activity,
        state.step,
        state.tool.as_deref(),
        state.tool_timeout_ms,
    )
}

/// Waits until the runner's row shows `activity`.
async fn wait_activity(session: &Session, activity: Activity) -> RunnerState {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    loop {
        // The file exists a moment before the runner's migration has committed its tables.
        if session.paths.outbound_db().exists()
            && session.outbound().is_ready().unwrap()
            && let Some(state) = session.outbound().runner_state().unwrap()
            && state.activity == activity
        {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {activity:?}; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_row_names_the_model_step_in_flight_and_is_idle_after_the_turn() {
    let fake = FakeModel::start().await.unwrap();
    // Without tools the call is unknown; it is still answered, and step 2 follows.
    fake.push(Reply::ToolCalls(vec![ToolCall::new("lookup", json!({}))]));
    fake.push(Reply::Hang);
    let mut session = Session::new();
    let seq = session.send("look it up");

    let mut child = session.start(&fake);
    fake.wait_for_requests(2, RUN_LIMIT).await.unwrap();
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(summary(&state), (Activity::Model, 2, None, None));
    session.stop(&mut child).await;

    // A resumed attempt continues after the persisted step: its claim says so.
    session
        .inbound
        .requeue(
            &[seq],
            /*max_tries*/ 3,
            Duration::from_millis(20),
            "runner stopped",
            Utc::now(),
        )
        .unwrap();
    fake.push(Reply::Hang);
    let mut child = session.start(&fake);
    fake.wait_for_requests(3, RUN_LIMIT).await.unwrap();
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(summary(&state), (Activity::Model, 2, None, None));
    session.stop(&mut child).await;

    session
        .inbound
        .requeue(
            &[seq],
            /*max_tries*/ 3,
            Duration::from_millis(20),
            "runner stopped",
            Utc::now(),
        )
        .unwrap();
    fake.push(Reply::text("found it"));
    session.run(&fake).await;
    assert_eq!(session.replies().len(), 1);
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(summary(&state), (Activity::Idle, 0, None, None));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Counts creations of `outbound.db-journal`. In rollback-journal mode (`DELETE`) every write
/// transaction creates the journal and its commit deletes it, so this is the number of commits
/// that cost fsyncs (a transaction that changes nothing creates no journal).
struct CommitCounter {
    events: mpsc::Receiver<notify::Event>,
    _watcher: notify::RecommendedWatcher,
    dir: std::path::PathBuf,
    markers: Cell<usize>,
    journals: Cell<usize>,
}

impl CommitCounter {
    fn watch(dir: &Path) -> CommitCounter {
        let (tx, events) = mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    // The receiver lives as long as the watcher.
                    let _ = tx.send(event);
                }
            })
            .unwrap();
        watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
        CommitCounter {
            events,
            _watcher: watcher,
            dir: dir.to_path_buf(),
            markers: Cell::new(0),
            journals: Cell::new(0),
        }
    }

    /// The journals created since the watch began. A marker file created now is seen after
    /// every earlier event (one inotify queue, in order), so nothing that already happened is
    /// missed.
    fn count(&self) -> usize {
        let n = self.markers.get() + 1;
        self.markers.set(n);
        let marker = format!("commit-counter-marker-{n}");
        std::fs::write(self.dir.join(&marker), b"").unwrap();
        let named = |event: &notify::Event, name: &str| {
            event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == name))
        };
        loop {
            let event = self.events.recv_timeout(RUN_LIMIT).unwrap();
            if !matches!(event.kind, EventKind::Create(_)) {
                continue;
            }
            if named(&event, &marker) {
                return self.journals.get();
            }
            if named(&event, "outbound.db-journal") {
                self.journals.set(self.journals.get() + 1);
            }
        }
    }
}

/// Waits until the latest ack is `status` for `seq`.
async fn wait_verdict(session: &Session, seq: i64, status: AckStatus) {
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    while session.acks().last().map(|a| (a.message_seq, a.status)) != Some((seq, status)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status:?} ack for {seq}; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_plain_turn_commits_twice_and_every_verdict_leaves_the_row_idle() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    // A streamed step adds the commits of its drafts (drafts.rs tests those): counted here is
    // the message path itself.
    session.container_json(&json!({ "stream": false }));
    let mut child = session.start(&fake);
    // Starting and the first Idle are once per runner, not per message.
    wait_activity(&session, Activity::Idle).await;
    let counter = CommitCounter::watch(&session.paths.outbound_dir);

    // The claim (processing ack, turn record, Model 1) and the verdict (reply, history,
    // completed ack, record deleted, Idle).
    fake.push(Reply::text("hi"));
    let seq = session.send("hello");
    wait_verdict(&session, seq, AckStatus::Completed).await;
    assert_eq!(counter.count(), 2, "plain turn; log:\n{}", session.log());

    // A failure is a verdict too: the claim and the failure (user message, failed ack, Idle).
    fake.push(Reply::Status(400, "bad request".to_owned()));
    let seq = session.send("this fails");
    wait_verdict(&session, seq, AckStatus::Failed).await;
    assert_eq!(counter.count(), 4, "failed turn; log:\n{}", session.log());
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(summary(&state), (Activity::Idle, 0, None, None));

    // `/clear` is one transaction, Idle included.
    let seq = session.send("/clear");
    wait_verdict(&session, seq, AckStatus::Completed).await;
    assert_eq!(counter.count(), 5, "clear; log:\n{}", session.log());

    session.stop(&mut child).await;
    assert_eq!(counter.count(), 5, "nothing after; log:\n{}", session.log());
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(summary(&state), (Activity::Idle, 0, None, None));
    let cleared = session.replies().pop().unwrap();
    assert_eq!(cleared.in_reply_to, Some(seq));
    assert!(
        state.updated_at >= cleared.created_at,
        "the clear's transaction wrote the row: {state:?}"
    );
    // The event log rode along with those commits.
    let log: Vec<RunnerEvent> = session
        .outbound()
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(
        matches!(
            log.as_slice(),
            [
                RunnerEvent::Started { .. },
                RunnerEvent::Ready { .. },
                RunnerEvent::ModelStep { step: 1, .. },
                RunnerEvent::ModelFailed { step: 1, .. },
            ]
        ),
        "{log:#?}"
    );
}
