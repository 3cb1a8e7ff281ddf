//! The scheduler against a real central database and real session inboxes, with a clock the
//! tests move by hand: no test sleeps to make time pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::tasks::{RunOutcome, ScheduleTask, TaskStatus};
use mailbox::{AckStatus, InboundDb, InboundKind, InboundMessage, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;
use tokio::sync::watch;

use super::*;
use crate::db::bootstrap::{self, CLI_CHAT, DEFAULT_AGENT};
use crate::db::tasks::Requester;

/// A clock that only moves when the test says so.
struct ManualClock(watch::Sender<DateTime<Utc>>);

impl ManualClock {
    fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock(watch::Sender::new(start)))
    }

    fn set(&self, t: DateTime<Utc>) {
        self.0.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as the test's clock.
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    clock: Arc<ManualClock>,
    scheduler: Scheduler,
    sessions_dir: PathBuf,
    session: SessionInfo,
}

impl Fixture {
    /// The default agent with one session on the terminal chat, a scheduler writing its inbox
    /// directly, and the clock at `start`.
    async fn new(start: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("clawbox.db")).unwrap();
        let sessions_dir = dir.path().join("sessions");
        let dir2 = sessions_dir.clone();
        let session = db
            .call(move |conn| {
                bootstrap::ensure_defaults(conn, "Andy")?;
                db::insert_session(conn, "sess-1", DEFAULT_AGENT, CLI_CHAT, None, Utc::now())?;
                Ok(resolve::load(conn, &dir2, "sess-1")?.expect("session"))
            })
            .await
            .unwrap();
        let clock = ManualClock::new(at(start));
        let scheduler = Self::scheduler(&db, &clock, &sessions_dir);
        Fixture {
            _dir: dir,
            db,
            clock,
            scheduler,
            sessions_dir,
            session,
        }
    }

    fn scheduler(db: &Db, clock: &Arc<ManualClock>, sessions_dir: &std::path::Path) -> Scheduler {
        Scheduler::new(
            db.clone(),
            Arc::new(DirectInbox { db: db.clone() }),
            clock.clone(),
            TaskSignal::default(),
            sessions_dir.to_path_buf(),
        )
    }

    /// A host restart: a new scheduler over the same database and inboxes.
    fn restart(&mut self) {
        self.scheduler = Self::scheduler(&self.db, &self.clock, &self.sessions_dir);
    }

    async fn schedule(&self, args: ScheduleTask, tz: Tz) -> Task {
        let now = self.clock.now();
        self.db
            .call(move |conn| {
                let who = Requester {
                    agent_id: DEFAULT_AGENT.into(),
                    session_id: "sess-1".into(),
                    requested_by: Some("cli:local".into()),
                };
                Ok(tasks::schedule(conn, &who, &args, tz, now))
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn task(&self, id: &str) -> Task {
        let id = id.to_owned();
        self.db
            .call(move |conn| Ok(tasks::get(conn, Scope::Operator, &id)))
            .await
            .unwrap()
            .unwrap()
    }

    async fn runs(&self, id: &str) -> Vec<TaskRun> {
        let id = id.to_owned();
        let mut runs = self
            .db
            .call(move |conn| tasks::runs(conn, &id, 100))
            .await
            .unwrap();
        runs.reverse();
        runs
    }

    /// Moves the clock to `t` and fires what is due.
    async fn tick_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.clock.set(t);
        self.scheduler.tick().await.unwrap()
    }

    /// The task messages in the session's inbox, oldest first.
    fn inbox(&self) -> Vec<InboundMessage> {
        let path = self.session.paths.inbound_db();
        if !path.exists() {
            return Vec::new();
        }
        let db = InboundDb::open(&self.session.paths).unwrap();
        let mut all = db.pending().unwrap();
        for seq in (2..=200).step_by(2) {
            if let Some(m) = db.get(seq).unwrap()
                && !all.iter().any(|p| p.seq == seq)
            {
                all.push(m);
            }
        }
        all.sort_by_key(|m| m.seq);
        all.into_iter()
            .filter(|m| m.kind == InboundKind::Task)
            .collect()
    }

    /// The runner's verdict on `seq`, folded by the host's side of the mailbox.
    fn verdict(&self, seq: i64, status: AckStatus, error: Option<&str>) {
        let mut runner = OutboundDb::open(&self.session.paths).unwrap();
        runner.ack(seq, 1, status, error, Utc::now()).unwrap();
        let acks = OutboundReader::open(&self.session.paths.outbound_db())
            .unwrap()
            .acks_after(0)
            .unwrap();
        let mut host = InboundDb::open(&self.session.paths).unwrap();
        let cursor = host.ack_cursor().unwrap();
        let new: Vec<_> = acks.into_iter().filter(|a| a.id > cursor).collect();
        host.settle(&[], &new, Utc::now()).unwrap();
    }
}

fn cron(expr: &str) -> ScheduleTask {
    ScheduleTask {
        prompt: "check".into(),
        cron: Some(expr.into()),
        ..ScheduleTask::default()
    }
}

#[tokio::test]
async fn a_cron_task_fires_at_its_local_times_across_daylight_saving() {
    let fx = Fixture::new("2026-03-27T12:00:00Z").await;
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let task = fx.schedule(cron("30 2 * * *"), berlin).await;
    // Each tick fires what is due and says when to come back; the test goes exactly there.
    let mut wake = fx.scheduler.tick().await.unwrap();
    let mut fired = Vec::new();
    for _ in 0..4 {
        let t = wake.expect("an active task always has a next run");
        wake = fx.tick_at(t).await;
        let last = fx.inbox().pop().unwrap();
        fired.push(schedule::local(t, berlin));
        assert_eq!(last.id, format!("task:{}:{}", task.id, ts(t)));
        assert_eq!(last.content["late"], false);
        fx.verdict(last.seq, AckStatus::Completed, None);
    }
    assert_eq!(
        fired,
        [
            "2026-03-28 02:30 CET (Europe/Berlin)",
            // 02:30 does not exist on the night clocks go forward: 03:00, once.
            "2026-03-29 03:00 CEST (Europe/Berlin)",
            "2026-03-30 02:30 CEST (Europe/Berlin)",
            "2026-03-31 02:30 CEST (Europe/Berlin)",
        ]
    );
    let runs = fx.runs(&task.id).await;
    assert_eq!(runs.len(), 4);
    // Each run's verdict was folded when the next slot checked for overlap.
    assert!(runs[..3].iter().all(|r| r.outcome == RunOutcome::Completed));
    assert_eq!(fx.task(&task.id).await.run_count, 4);
}

#[tokio::test]
async fn the_loop_sleeps_until_the_next_run_and_wakes_when_tasks_change() {
    let fx = Fixture::new("2026-06-01T08:00:00Z").await;
    let cancel = CancellationToken::new();
    let signal = fx.scheduler.signal().clone();
    let running = tokio::spawn(fx.scheduler.clone().run(cancel.clone()));
    let wait_for_fires = |n: usize| {
        let fx = &fx;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while fx.inbox().len() < n {
                assert!(tokio::time::Instant::now() < deadline, "no run {n}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // No task: the loop waits for a change, with no timer.
    let task = fx
        .schedule(
            ScheduleTask {
                prompt: "stretch".into(),
                process_after: Some("2026-06-01 08:10".into()),
                ..ScheduleTask::default()
            },
            Tz::UTC,
        )
        .await;
    signal.notify();
    fx.clock.set(at("2026-06-01T08:09:59Z"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fx.inbox().is_empty(), "fired early");
    fx.clock.set(at("2026-06-01T08:10:00Z"));
    wait_for_fires(1).await;
    let fired = fx.inbox();
    assert_eq!(fired[0].content["prompt"], "stretch");
    // A one-shot completes when it fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fx.task(&task.id).await.status != TaskStatus::Completed {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A task created while the loop sleeps is picked up when the loop is told.
    fx.schedule(
        ScheduleTask {
            prompt: "drink water".into(),
            process_after: Some("+5m".into()),
            ..ScheduleTask::default()
        },
        Tz::UTC,
    )
    .await;
    signal.notify();
    fx.clock.set(at("2026-06-01T08:15:00Z"));
    wait_for_fires(2).await;
    assert_eq!(fx.inbox()[1].content["prompt"], "drink water");

    cancel.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_run_is_skipped_while_the_previous_one_is_pending() {
    let fx = Fixture::new("2026-06-01T08:00:30Z").await;
    let task = fx.schedule(cron("*/5 * * * *"), Tz::UTC).await;
    fx.tick_at(at("2026-06-01T08:05:00Z")).await;
    let first = fx.inbox()[0].seq;
    // The agent is still busy with the first run when the second slot comes.
    let wake = fx.tick_at(at("2026-06-01T08:10:00Z")).await;
    assert_eq!(wake, Some(at("2026-06-01T08:15:00Z")));
    assert_eq!(fx.inbox().len(), 1, "no second message");
    let runs = fx.runs(&task.id).await;
    assert_eq!(runs[1].outcome, RunOutcome::SkippedOverlap);
    assert_eq!(
        runs[1].detail.as_deref(),
        Some(
            format!("the run due 2026-06-01 08:05 UTC (message {first}) was still pending")
                .as_str()
        )
    );
    // Once it is answered, the next slot fires again.
    fx.verdict(first, AckStatus::Completed, None);
    fx.tick_at(at("2026-06-01T08:15:00Z")).await;
    let outcomes: Vec<_> = fx.runs(&task.id).await.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            RunOutcome::Completed,
            RunOutcome::SkippedOverlap,
            RunOutcome::Fired
        ]
    );
    assert_eq!(fx.inbox().len(), 2);
    assert_eq!(fx.task(&task.id).await.run_count, 2);
}

#[tokio::test]
async fn runs_missed_during_downtime_fire_once_and_say_they_are_late() {
    let mut fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 * * * *"), Tz::UTC).await;
    assert_eq!(task.next_run, Some(at("2026-06-01T08:00:00Z")));
    // The host was down from 07:30 to 12:20: five hourly slots passed.
    fx.restart();
    let wake = fx.tick_at(at("2026-06-01T12:20:00Z")).await;
    let inbox = fx.inbox();
    assert_eq!(inbox.len(), 1, "one run for all the missed slots");
    assert_eq!(inbox[0].content["late"], true);
    assert_eq!(
        inbox[0].content["scheduled_for"],
        "2026-06-01T08:00:00.000Z"
    );
    assert_eq!(inbox[0].content["fired_at"], "2026-06-01T12:20:00.000Z");
    let runs = fx.runs(&task.id).await;
    assert_eq!(
        runs[0].detail.as_deref(),
        Some("4 h 20 min late (the host was not running at the scheduled time)")
    );
    // Back on schedule: the next slot after now.
    assert_eq!(wake, Some(at("2026-06-01T13:00:00Z")));
    // The verdict keeps what the firing noted.
    fx.verdict(
        inbox[0].seq,
        AckStatus::Failed,
        Some("the model is unreachable"),
    );
    fx.scheduler.reconcile().await.unwrap();
    assert_eq!(
        fx.runs(&task.id).await[0].detail.as_deref(),
        Some(
            "4 h 20 min late (the host was not running at the scheduled time); \
             the model is unreachable"
        )
    );
    assert_eq!(
        fx.task(&task.id).await.next_run,
        Some(at("2026-06-01T13:00:00Z"))
    );
}

#[tokio::test]
async fn a_failed_run_keeps_the_series_going() {
    let fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 8 * * *"), Tz::UTC).await;
    fx.tick_at(at("2026-06-01T08:00:00Z")).await;
    let seq = fx.inbox()[0].seq;
    fx.verdict(seq, AckStatus::Failed, Some("the model is unreachable"));
    fx.tick_at(at("2026-06-02T08:00:00Z")).await;
    let runs = fx.runs(&task.id).await;
    assert_eq!(
        runs.iter()
            .map(|r| (r.outcome, r.detail.clone()))
            .collect::<Vec<_>>(),
        [
            (
                RunOutcome::Failed,
                Some("the model is unreachable".to_owned())
            ),
            (RunOutcome::Fired, None),
        ]
    );
    let task = fx.task(&task.id).await;
    assert_eq!(task.status, TaskStatus::Active);
    assert_eq!(task.next_run, Some(at("2026-06-03T08:00:00Z")));
}

#[tokio::test]
async fn a_crash_between_the_inbox_and_the_bookkeeping_fires_once() {
    let mut fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 8 * * *"), Tz::UTC).await;
    let slot = at("2026-06-01T08:00:00Z");
    // The previous host wrote the run into the inbox and died before recording it.
    let msg = task_message(&task, slot, slot, RunTrigger::Schedule, &fx.session.route);
    fx.session.paths.create_dirs().unwrap();
    let seq = InboundDb::open(&fx.session.paths)
        .unwrap()
        .insert(&msg, Utc::now())
        .unwrap()
        .seq();
    fx.restart();
    fx.tick_at(slot + chrono::Duration::seconds(3)).await;
    assert_eq!(fx.inbox().len(), 1, "the same run, not a second one");
    let runs = fx.runs(&task.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].inbound_seq, Some(seq));
    assert_eq!(
        fx.task(&task.id).await.next_run,
        Some(at("2026-06-02T08:00:00Z"))
    );
}

#[tokio::test]
async fn pause_resume_update_and_cancel_after_the_first_run() {
    let mut fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 8 * * *"), Tz::UTC).await;
    fx.tick_at(at("2026-06-01T08:00:00Z")).await;
    fx.verdict(fx.inbox()[0].seq, AckStatus::Completed, None);
    let op = |f: fn(&rusqlite::Connection, &str, DateTime<Utc>) -> Result<Task, TaskError>| {
        let id = task.id.clone();
        let now = fx.clock.now();
        let db = fx.db.clone();
        async move {
            db.call(move |conn| Ok(f(conn, &id, now)))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let paused = op(|c, id, now| tasks::pause(c, Scope::Agent(DEFAULT_AGENT), id, now)).await;
    assert_eq!(paused.status, TaskStatus::Paused);
    assert_eq!(fx.tick_at(at("2026-06-03T09:00:00Z")).await, None);
    assert_eq!(fx.inbox().len(), 1, "a paused task does not run");

    let resumed = op(|c, id, now| tasks::resume(c, Scope::Agent(DEFAULT_AGENT), id, now)).await;
    assert_eq!(resumed.next_run, Some(at("2026-06-04T08:00:00Z")));
    fx.tick_at(at("2026-06-04T08:00:00Z")).await;
    assert_eq!(fx.inbox().len(), 2);
    fx.verdict(fx.inbox()[1].seq, AckStatus::Completed, None);

    let now = fx.clock.now();
    let id = task.id.clone();
    let updated = fx
        .db
        .call(move |conn| {
            Ok(tasks::update(
                conn,
                Scope::Agent(DEFAULT_AGENT),
                &mailbox::tasks::UpdateTask {
                    task_id: id,
                    cron: Some("30 9 * * *".into()),
                    prompt: Some("check again".into()),
                    ..Default::default()
                },
                now,
            ))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.next_run, Some(at("2026-06-04T09:30:00Z")));
    fx.tick_at(at("2026-06-04T09:30:00Z")).await;
    let third = fx.inbox().pop().unwrap();
    assert_eq!(third.content["prompt"], "check again");
    fx.verdict(third.seq, AckStatus::Completed, None);

    let cancelled = op(|c, id, now| tasks::cancel(c, Scope::Agent(DEFAULT_AGENT), id, now)).await;
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(fx.tick_at(at("2026-06-10T12:00:00Z")).await, None);
    // Nothing brings a cancelled series back: not a restart, not a later tick.
    fx.restart();
    fx.scheduler.reconcile().await.unwrap();
    assert_eq!(fx.tick_at(at("2026-07-01T12:00:00Z")).await, None);
    assert_eq!(fx.inbox().len(), 3);
    assert_eq!(fx.task(&task.id).await.status, TaskStatus::Cancelled);
    let err = fx.scheduler.run_now(&task.id).await.unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
}

#[tokio::test]
async fn run_now_fires_once_without_moving_the_schedule() {
    let fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 8 * * *"), Tz::UTC).await;
    let (after, run) = fx.scheduler.run_now(&task.id).await.unwrap();
    assert_eq!(run.trigger, RunTrigger::RunNow);
    assert_eq!(run.outcome, RunOutcome::Fired);
    assert_eq!(after.next_run, task.next_run, "the schedule is not moved");
    let inbox = fx.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].content["run_now"], true);
    // The same rules as a scheduled run: the previous run is still pending.
    fx.clock.set(at("2026-06-01T07:31:00Z"));
    let (_, again) = fx.scheduler.run_now(&task.id).await.unwrap();
    assert_eq!(again.outcome, RunOutcome::SkippedOverlap);
    assert_eq!(fx.inbox().len(), 1);
    let err = fx.scheduler.run_now("task-nope").await.unwrap_err();
    assert_eq!(err.to_string(), "there is no task \"task-nope\"");
}

#[tokio::test]
async fn verdicts_that_arrived_without_a_host_are_folded_at_start() {
    let mut fx = Fixture::new("2026-06-01T07:30:00Z").await;
    let task = fx.schedule(cron("0 8 * * *"), Tz::UTC).await;
    fx.tick_at(at("2026-06-01T08:00:00Z")).await;
    fx.verdict(fx.inbox()[0].seq, AckStatus::Completed, None);
    assert_eq!(fx.runs(&task.id).await[0].outcome, RunOutcome::Fired);
    fx.restart();
    fx.scheduler.reconcile().await.unwrap();
    assert_eq!(fx.runs(&task.id).await[0].outcome, RunOutcome::Completed);
    assert_eq!(
        fx.task(&task.id).await.last_outcome,
        Some(RunOutcome::Completed)
    );
}

/// An inbox that fails its first `failures` writes (a full disk, a broken session directory).
struct FlakyInbox {
    inner: DirectInbox,
    failures: std::sync::atomic::AtomicU32,
}

impl Inbox for FlakyInbox {
    fn submit(
        &self,
        session: SessionInfo,
        msg: NewInbound,
    ) -> BoxFuture<'_, Result<Inserted, HostError>> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Box::pin(async { Err(HostError::Task("disk full".into())) });
        }
        self.inner.submit(session, msg)
    }
}

#[tokio::test]
async fn a_run_that_cannot_be_written_is_retried_with_backoff_and_never_spins() {
    let mut fx = Fixture::new("2026-06-01T07:30:00Z").await;
    fx.scheduler = Scheduler::new(
        fx.db.clone(),
        Arc::new(FlakyInbox {
            inner: DirectInbox { db: fx.db.clone() },
            failures: std::sync::atomic::AtomicU32::new(2),
        }),
        fx.clock.clone(),
        TaskSignal::default(),
        fx.sessions_dir.clone(),
    );
    let shot = fx
        .schedule(
            ScheduleTask {
                prompt: "once".into(),
                process_after: Some("2026-06-01 08:00".into()),
                ..ScheduleTask::default()
            },
            Tz::UTC,
        )
        .await;
    // Fails: try again in 5 s, then 10 s.
    assert_eq!(
        fx.tick_at(at("2026-06-01T08:00:00Z")).await,
        Some(at("2026-06-01T08:00:05Z"))
    );
    assert_eq!(
        fx.tick_at(at("2026-06-01T08:00:02Z")).await,
        Some(at("2026-06-01T08:00:05Z")),
        "backing off, not retrying early"
    );
    assert_eq!(
        fx.tick_at(at("2026-06-01T08:00:05Z")).await,
        Some(at("2026-06-01T08:00:15Z"))
    );
    assert!(fx.inbox().is_empty());
    // The third attempt works: the run is written once, for its original slot.
    assert_eq!(fx.tick_at(at("2026-06-01T08:00:15Z")).await, None);
    let inbox = fx.inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].content["scheduled_for"],
        "2026-06-01T08:00:00.000Z"
    );
    assert_eq!(fx.task(&shot.id).await.status, TaskStatus::Completed);

    // A task cancelled while it backs off is forgotten: the loop has nothing to wake for.
    fx.scheduler = Scheduler::new(
        fx.db.clone(),
        Arc::new(FlakyInbox {
            inner: DirectInbox { db: fx.db.clone() },
            failures: std::sync::atomic::AtomicU32::new(1),
        }),
        fx.clock.clone(),
        TaskSignal::default(),
        fx.sessions_dir.clone(),
    );
    let task = fx.schedule(cron("0 9 * * *"), Tz::UTC).await;
    assert_eq!(
        fx.tick_at(at("2026-06-01T09:00:00Z")).await,
        Some(at("2026-06-01T09:00:05Z"))
    );
    let id = task.id.clone();
    let now = fx.clock.now();
    fx.db
        .call(move |conn| Ok(tasks::cancel(conn, Scope::Operator, &id, now)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fx.tick_at(at("2026-06-01T09:00:06Z")).await, None);
}
