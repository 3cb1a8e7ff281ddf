//! One task per *active* session: it owns the session's runner (start, liveness, stop), watches
//! the runner's `outbound/` directory, and pumps deliveries, requests and acks (delivery.rs)
//! after every change, recording the verdicts on scheduled tasks' runs. A session with nothing to do has no task, no watcher and no timer; the router or a
//! terminal attaching wakes it again through [`Supervisor::wake`].
//!
//! `/stop` ([`Supervisor::stop_turn`]) stops the runner of a session that is working on a turn
//! (SIGTERM, the grace period, SIGKILL — the runtime's ordinary stop) and fails the messages it
//! had claimed, instead of re-queuing them. That is the safe point by construction: a runner
//! writes a turn's reply, history and verdicts in one transaction, so a turn stopped anywhere
//! leaves nothing half-written; the runner's own shutdown stops its MCP servers with their
//! process groups (tool commands included), and a container takes everything in it along. It
//! needs no new channel between host and runner, and works just as well on a runner stuck in a
//! model request or a tool. The next message starts a fresh runner.
//!
//! The session's disk quota (`SESSION_DISK_MB`, disk.rs) is kept here too: the usage of its
//! `workspace/` and `outbound/` is measured before every start and, paced by its cost, while a
//! runner lives. Above the quota the runner is stopped the way `/stop` stops it and its claimed
//! messages fail with [`disk::over_quota_notice`]; while the session stays above it, no runner
//! starts and every message that comes due fails with the same notice (the message itself stays
//! in the mailbox, marked failed, and nothing else is touched). Deleting files (or raising the
//! quota) lets the next message start a runner again.
//!
//! For operators (`clawbox status`, `clawbox logs -f`) each live task publishes its
//! [`RunnerPhase`] and announces every pass over its mailbox on [`Supervisor::changes`]; the
//! runner's exits go into the session's host event log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailbox::{HostEvent, NewInbound, Requeue, heartbeat, inbound::Inserted};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::HostError;
use crate::config::Config;
use crate::db::{self, Db};
use crate::proxy::{Grant, Proxy};
use crate::runtime::{AgentRuntime, RunnerExit, RunnerHandle, RunnerSpec};
use crate::session::delivery::{
    Acl, Delivery, Pumped, SessionMailbox, SharedMailbox, with_mailbox,
};
use crate::session::disk::{self, Pacer};
use crate::session::liveness::{self, Liveness};
use crate::session::outlet::Outlet;
use crate::session::questions::QuestionSignal;
use crate::session::requests::Requests;
use crate::session::resolve::{self, SessionInfo};
use crate::session::watch::{OutboundWatcher, Registration};

/// Why the messages of a turn stopped with `/stop` failed (shown to the sender).
pub const STOPPED_REASON: &str = "the turn was stopped (/stop); nothing of it was kept";
/// How long a runner gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Pause after a runner could not be started, before looking at the session again.
const START_FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// Wait before delivering again a reply whose send failed in a way worth retrying.
const DELIVERY_RETRY: Duration = Duration::from_secs(2);
/// Announcements of mailbox passes kept for slow listeners (`clawbox logs -f` re-reads the
/// files anyway, so a listener that lags only re-reads once).
const CHANGES_CAPACITY: usize = 256;

/// Where a live session's runner is, as its task last published it (`clawbox status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerPhase {
    /// No runner, nothing due (the task is about to retire, or was just woken).
    Stopped,
    /// Work is due; every container slot is taken (`MAX_CONCURRENT_CONTAINERS`).
    WaitingForSlot,
    /// The next message is due at `until` (a re-queued message's backoff).
    Backoff { until: DateTime<Utc> },
    /// Replies wait for their channel (no terminal attached).
    WaitingForChannel,
    /// A runner runs: its runtime id and when this host started it.
    Running {
        runner: String,
        since: DateTime<Utc>,
    },
}

pub struct Shared {
    pub watcher: Option<Arc<OutboundWatcher>>,
    pub config: Arc<Config>,
    pub db: Db,
    pub runtime: Arc<dyn AgentRuntime>,
    pub outlet: Arc<dyn Outlet>,
    /// Issues each runner its model-proxy token.
    pub proxy: Proxy,
    /// Applies the requests runners send the host.
    pub requests: Requests,
    /// Wakes the loop that expires questions (questions.rs).
    pub questions: QuestionSignal,
    /// The journal of every session mailbox (`MAILBOX_JOURNAL`, resolved for the runtime).
    pub journal: mailbox::Journal,
}

#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    /// Live session tasks. std Mutex, never held across an await: senders send while holding
    /// it, and a retiring task removes itself while holding it, so no wake-up is ever lost.
    actors: Arc<Mutex<HashMap<String, Entry>>>,
    /// `MAX_CONCURRENT_CONTAINERS`: one permit per live container (or runner process, on the
    /// process runtime). tokio's semaphore is fair, so sessions waiting for a slot start in the
    /// order they asked.
    slots: Arc<Semaphore>,
    /// Sessions waiting for a slot; while there are any, idle runners give theirs up.
    waiting: Arc<AtomicUsize>,
    /// The id of a session whose task just passed over its mailbox (see [`Supervisor::changes`]).
    changes: broadcast::Sender<String>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Clone)]
struct Entry {
    wake: mpsc::UnboundedSender<()>,
    /// `/stop` requests; the task answers with how many claimed messages it failed.
    stop: mpsc::UnboundedSender<oneshot::Sender<usize>>,
    mailbox: SharedMailbox,
    /// Published by the task; std Mutex, never held across an await.
    phase: Arc<Mutex<RunnerPhase>>,
}

impl Supervisor {
    pub fn new(shared: Shared) -> Self {
        let slots = Arc::new(Semaphore::new(shared.config.max_concurrent_runners));
        Supervisor {
            slots,
            waiting: Arc::default(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            shared: Arc::new(shared),
            actors: Arc::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Writes one message into the session's `inbound.db` and wakes its task.
    pub async fn submit(&self, info: &SessionInfo, msg: NewInbound) -> Result<Inserted, HostError> {
        let entry = self.entry(&info.session.id).await?;
        let inserted = with_mailbox(&entry.mailbox, move |mb| {
            mb.inbound.insert(&msg, Utc::now())
        })
        .await?;
        if let Inserted::New(_) = inserted {
            self.wake(&info.session.id).await?;
        }
        Ok(inserted)
    }

    /// Runs `f` on a session's inbox, then wakes its task: for what reaches a session from
    /// outside its own pass (the answer to a question).
    pub async fn update_inbox<R, F>(&self, session_id: &str, f: F) -> Result<R, HostError>
    where
        F: FnOnce(&mut mailbox::InboundDb) -> mailbox::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let entry = self.entry(session_id).await?;
        let result = with_mailbox(&entry.mailbox, move |mb| f(&mut mb.inbound)).await?;
        self.wake(session_id).await?;
        Ok(result)
    }

    /// Makes sure the session has a task and tells it to look at its mailbox.
    pub async fn wake(&self, session_id: &str) -> Result<(), HostError> {
        loop {
            let entry = self.entry(session_id).await?;
            let mut actors = self.lock();
            if entry.wake.send(()).is_ok() {
                return Ok(());
            }
            // The task retired between lookup and send; start a new one.
            actors.remove(session_id);
        }
    }

    /// `/stop`: stops the session's runner if it is working on a turn and fails the messages
    /// it had claimed (see the module header). Returns how many it failed: 0 when nothing was
    /// running (an idle or retired session is left alone).
    pub async fn stop_turn(&self, session_id: &str) -> usize {
        let Some(entry) = self.lock().get(session_id).cloned() else {
            return 0;
        };
        let (tx, rx) = oneshot::channel();
        if entry.stop.send(tx).is_err() {
            return 0; // the task retired meanwhile: nothing was running
        }
        rx.await.unwrap_or(0)
    }

    /// Stops every session task (and its runner) and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Number of sessions with a live task, for status.
    pub fn active_count(&self) -> usize {
        self.lock().len()
    }

    /// Whether the session has a live task (its runner running or about to).
    pub fn is_live(&self, session_id: &str) -> bool {
        self.lock().contains_key(session_id)
    }

    /// The runner phase of every session with a live task.
    pub fn live(&self) -> HashMap<String, RunnerPhase> {
        self.lock()
            .iter()
            .map(|(id, entry)| {
                let phase = entry
                    .phase
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                (id.clone(), phase)
            })
            .collect()
    }

    /// Announces, by session id, every pass a live task makes over its mailbox: after the
    /// runner wrote something, a message arrived, a delivery or a timer. Nothing is sent while
    /// nobody listens.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// The configured cap of live containers (runner processes on the process runtime).
    pub fn slot_cap(&self) -> Option<usize> {
        Some(self.shared.config.max_concurrent_runners)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map only means a panic elsewhere; entries stay valid.
        self.actors.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn entry(&self, session_id: &str) -> Result<Entry, HostError> {
        if let Some(e) = self.lock().get(session_id) {
            return Ok(e.clone());
        }
        let sessions_dir = self.shared.config.sessions_dir();
        let id = session_id.to_owned();
        let info = self
            .shared
            .db
            .call(move |conn| resolve::load(conn, &sessions_dir, &id))
            .await?
            .ok_or_else(|| HostError::UnknownSession(session_id.to_owned()))?;
        let paths = info.paths.clone();
        let journal = self.shared.journal;
        let mailbox = tokio::task::spawn_blocking(move || SessionMailbox::open(paths, journal))
            .await
            .map_err(|e| HostError::Task(e.to_string()))??;
        let mailbox: SharedMailbox = Arc::new(Mutex::new(mailbox));

        let mut actors = self.lock();
        if let Some(e) = actors.get(session_id) {
            return Ok(e.clone()); // another caller won the race
        }
        let (wake, wake_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = mpsc::unbounded_channel();
        let phase = Arc::new(Mutex::new(RunnerPhase::Stopped));
        let entry = Entry {
            wake,
            stop,
            mailbox: Arc::clone(&mailbox),
            phase: Arc::clone(&phase),
        };
        actors.insert(session_id.to_owned(), entry.clone());
        let actor = Actor {
            state: info.session.runner_state.clone(),
            sup: self.clone(),
            acl: Acl {
                origin: info.route.clone(),
                destinations: info.destinations.clone(),
            },
            info,
            mailbox,
            wake: wake_rx,
            stops: stop_rx,
            runner: None,
            typing: false,
            show_tools: false,
            phase,
            disk: Pacer::new(self.shared.config.heartbeat),
        };
        self.tracker.spawn(actor.run());
        Ok(entry)
    }
}

/// Hands memory freed by finished sessions back to the OS. glibc keeps freed heap pages for
/// reuse, so after a burst of sessions a quiet host would otherwise hold that peak for good
/// (measured: 42 MB after 100 sessions, 14 MB after trimming).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Which pending messages a re-queue is charged to.
#[derive(Clone, Copy)]
enum Requeued {
    /// Those the runner had claimed for their current attempt.
    Claimed,
    /// Every due triggering message (the runner died before claiming any).
    Due,
}

struct Running {
    handle: RunnerHandle,
    started_at: DateTime<Utc>,
    /// Taken before the runtime was asked to start the runner: every row this runner writes
    /// is newer, every row older is from a runner that is gone.
    asked_at: DateTime<Utc>,
    /// Set when the host stops the runner on purpose, to explain the re-queue.
    stop_reason: Option<String>,
    /// The runner's model-proxy token; dropping the `Running` revokes it.
    _model_grant: Grant,
    /// Its container slot, given back when the `Running` is dropped.
    _slot: OwnedSemaphorePermit,
}

struct Actor {
    sup: Supervisor,
    info: SessionInfo,
    mailbox: SharedMailbox,
    acl: Acl,
    wake: mpsc::UnboundedReceiver<()>,
    stops: mpsc::UnboundedReceiver<oneshot::Sender<usize>>,
    runner: Option<Running>,
    /// The runner state last recorded in the central DB.
    state: String,
    /// Whether the chat is being shown that the agent works.
    typing: bool,
    /// The agent's `show_tools`, read when a runner starts; off until then (no draft a runner
    /// of this host wrote is shown before).
    show_tools: bool,
    /// What `clawbox status` sees of this task (shared with its [`Entry`]).
    phase: Arc<Mutex<RunnerPhase>>,
    /// When the session's disk use is measured next while a runner lives.
    disk: Pacer,
}

/// What the disk quota leaves a runner about to start.
enum Room {
    /// No quota (`SESSION_DISK_MB=0`).
    Unlimited,
    /// Under the quota: the runner's file-size limit ([`disk::file_size_limit`]).
    Left(u64),
    /// The session is over its quota: no runner may start.
    Over,
}

impl Actor {
    fn session_id(&self) -> &str {
        &self.info.session.id
    }

    fn config(&self) -> &Config {
        &self.sup.shared.config
    }

    fn publish(&self, phase: RunnerPhase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// Records the end of a runner in the session's host event log (`clawbox logs`).
    async fn log_exit(&self, runner: &str, exit: &RunnerExit, reason: Option<String>) {
        let unexpected = reason.is_none() && *exit != RunnerExit::Code(0);
        let event = HostEvent::RunnerExited {
            runner: runner.to_owned(),
            exit: exit.to_string(),
            reason,
            unexpected,
        };
        let logged = with_mailbox(&self.mailbox, move |mb| {
            mb.inbound.record_host_event(&event, Utc::now())
        })
        .await;
        if let Err(e) = logged {
            tracing::warn!("cannot log the runner's exit: {e}");
        }
    }

    #[tracing::instrument(name = "session", skip_all, fields(session_id = %self.info.session.id))]
    async fn run(mut self) {
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let _watcher = match self.watch_outbound(changed_tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("no file notifications for this session, polling instead: {e}");
                None
            }
        };
        // No runner of this host is alive for the session yet: any claim is a dead runner's.
        self.requeue_claims("the agent runner stopped before finishing")
            .await;
        loop {
            let pumped = self.pump().await;
            self.check_disk().await;
            self.show_typing().await;
            // Only a clone of the id when someone listens (`clawbox logs -f`).
            if self.sup.changes.receiver_count() > 0 {
                let _ = self.sup.changes.send(self.session_id().to_owned());
            }
            let mut deadline = None;
            if self.runner.is_none() {
                match self.next_due().await {
                    Some(due) if due <= Utc::now() => {
                        let max_file_bytes = match self.room_to_start().await {
                            Room::Unlimited => None,
                            Room::Left(max_file_bytes) => Some(max_file_bytes),
                            Room::Over => {
                                if !self.refuse_over_quota().await {
                                    // Not even failing the messages worked: do not spin.
                                    tokio::select! {
                                        () = self.sup.cancel.cancelled() => return,
                                        () = tokio::time::sleep(START_FAILURE_PAUSE) => {}
                                    }
                                }
                                continue;
                            }
                        };
                        let Some(slot) = self.wait_for_slot().await else {
                            return; // the host is shutting down
                        };
                        if !self.start_runner(slot, max_file_bytes).await {
                            // The due messages were failed and reported; if even that did not
                            // work, do not spin on a broken runtime or database.
                            tokio::select! {
                                () = self.sup.cancel.cancelled() => return,
                                () = tokio::time::sleep(START_FAILURE_PAUSE) => {}
                            }
                        }
                        continue;
                    }
                    Some(due) => {
                        deadline = Some(due);
                        self.publish(RunnerPhase::Backoff { until: due });
                        self.set_state("waiting").await;
                    }
                    None if pumped.retry_soon => {
                        deadline = Some(Utc::now() + DELIVERY_RETRY);
                        self.publish(RunnerPhase::WaitingForChannel);
                        self.set_state("waiting").await;
                    }
                    None => {
                        let (state, phase) = if pumped.waiting_for_channel {
                            ("waiting", RunnerPhase::WaitingForChannel)
                        } else {
                            ("stopped", RunnerPhase::Stopped)
                        };
                        self.publish(phase);
                        self.set_state(state).await;
                        if self.retire() {
                            return;
                        }
                        continue;
                    }
                }
            }
            let exit_of = self.runner.as_ref().map(|r| r.handle.clone());
            let sleep_for = deadline
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .unwrap_or(self.config().heartbeat);
            tokio::select! {
                () = self.sup.cancel.cancelled() => {
                    self.stop_runner("the host is shutting down").await;
                    return;
                }
                _ = self.wake.recv() => {}
                Some(reply) = self.stops.recv() => {
                    let failed = self.stop_turn().await;
                    // The asker may have gone away; the turn is stopped either way.
                    let _ = reply.send(failed);
                }
                Some(()) = changed.recv() => {}
                exit = async { match exit_of { Some(mut h) => h.exited().await, None => std::future::pending().await } } => {
                    self.on_exit(exit).await;
                }
                () = tokio::time::sleep(sleep_for) => {
                    if self.runner.is_some() {
                        self.check_liveness().await;
                        self.yield_slot_if_idle().await;
                    }
                }
            }
        }
    }

    /// Leaves the actor map unless a wake-up arrived meanwhile.
    fn retire(&mut self) -> bool {
        let mut actors = self.sup.lock();
        if self.wake.try_recv().is_ok() {
            return false;
        }
        // A `/stop` that reached a task with no runner: nothing was running.
        while let Ok(reply) = self.stops.try_recv() {
            let _ = reply.send(0);
        }
        actors.remove(self.session_id());
        if actors.is_empty() {
            release_free_memory();
        }
        true
    }

    fn watch_outbound(&self, tx: mpsc::Sender<()>) -> Result<Registration, String> {
        let Some(watcher) = &self.sup.shared.watcher else {
            return Err("file notifications are unavailable on this host".into());
        };
        watcher
            .register(&self.info.paths.outbound_dir, tx)
            .map_err(|e| e.to_string())
    }

    /// Delivers, answers and folds whatever the runner wrote; returns what is left to deliver.
    async fn pump(&self) -> Pumped {
        let delivery = Delivery {
            session_id: self.session_id(),
            agent_name: &self.info.agent.name,
            agent_id: &self.info.agent.id,
            mailbox: &self.mailbox,
            outlet: &self.sup.shared.outlet,
            acl: &self.acl,
            max_attempts: self.config().max_delivery_attempts,
            retention_days: self.config().retention_days,
            requests: &self.sup.shared.requests,
            db: &self.sup.shared.db,
            questions: &self.sup.shared.questions,
            runner_since: self.runner.as_ref().map(|r| r.asked_at),
            show_tools: self.show_tools,
        };
        match delivery.pump().await {
            Ok(mut pumped) => {
                if !pumped.finished_tasks.is_empty() {
                    let id = self.session_id().to_owned();
                    let finished = std::mem::take(&mut pumped.finished_tasks);
                    if let Err(e) = self
                        .sup
                        .shared
                        .db
                        .call(move |conn| crate::db::tasks::fold_messages(conn, &id, &finished))
                        .await
                    {
                        // The run stays open; the scheduler folds it from the inbox later.
                        tracing::warn!("cannot record the outcome of task runs: {e}");
                    }
                }
                pumped
            }
            Err(e) => {
                tracing::error!("cannot read the session mailbox: {e}");
                Pumped::default()
            }
        }
    }

    /// Shows the chat that the agent works (a runner is up and a message is due) on channels
    /// that can show it, and stops showing it when the work is done.
    async fn show_typing(&mut self) {
        let route = &self.info.route;
        let outlet = &self.sup.shared.outlet;
        if !outlet.shows_typing(route) {
            return;
        }
        let working =
            self.runner.is_some() && self.next_due().await.is_some_and(|t| t <= Utc::now());
        if working != self.typing {
            self.typing = working;
            outlet.typing(&self.info.route, working);
        }
    }

    async fn next_due(&self) -> Option<DateTime<Utc>> {
        match with_mailbox(&self.mailbox, |mb| mb.inbound.next_due()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!("cannot read pending messages: {e}");
                None
            }
        }
    }

    async fn set_state(&mut self, state: &'static str) {
        if self.state == state {
            return;
        }
        self.state = state.to_owned();
        let id = self.session_id().to_owned();
        if let Err(e) = self
            .sup
            .shared
            .db
            .call(move |conn| db::set_runner_state(conn, &id, state))
            .await
        {
            tracing::warn!("cannot record runner state {state}: {e}");
        }
    }

    /// A container slot; `None` if the host shuts down while waiting.
    async fn wait_for_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        let slots = Arc::clone(&self.sup.slots);
        if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            return Some(permit);
        }
        tracing::info!(
            max = self.config().max_concurrent_runners,
            "every container slot is taken; waiting for one (MAX_CONCURRENT_CONTAINERS)"
        );
        self.publish(RunnerPhase::WaitingForSlot);
        self.set_state("waiting").await;
        self.sup.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = tokio::select! {
            () = self.sup.cancel.cancelled() => None,
            // The semaphore is never closed.
            permit = slots.acquire_owned() => permit.ok(),
        };
        self.sup.waiting.fetch_sub(1, Ordering::SeqCst);
        permit
    }

    /// Stops a runner with nothing to do while other sessions wait for a container slot:
    /// otherwise an idle runner would hold its slot until `IDLE_TIMEOUT_MS`.
    async fn yield_slot_if_idle(&mut self) {
        if self.sup.waiting.load(Ordering::SeqCst) == 0 || self.runner.is_none() {
            return;
        }
        if self.next_due().await.is_none() {
            tracing::info!("stopping the idle runner to make room for a waiting session");
            self.stop_runner("the runner made room for another session")
                .await;
        }
    }

    /// Starts the runner; on failure fails the due messages with the reason and returns false.
    async fn start_runner(
        &mut self,
        slot: OwnedSemaphorePermit,
        max_file_bytes: Option<u64>,
    ) -> bool {
        let route = self.info.route.clone();
        let destinations = self.info.destinations.clone();
        let refreshed = with_mailbox(&self.mailbox, move |mb| {
            mb.inbound.set_routing(&route)?;
            mb.inbound.set_destinations(&destinations)
        })
        .await;
        // Whole milliseconds, rounded down: rows carry their time in that precision.
        let now = Utc::now();
        let asked_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        // Revoked when dropped: with the `Running` when the runner ends, here if it cannot start.
        let grant = self
            .sup
            .shared
            .proxy
            .issue(self.session_id(), &self.info.agent.id);
        let started = match refreshed {
            Ok(()) => {
                // Read as the runner reads its keys: once per start.
                let dir = self.config().groups_dir.join(&self.info.agent.folder);
                self.show_tools = match tokio::task::spawn_blocking(move || {
                    crate::runtime::container_json::show_tools(&dir)
                })
                .await
                {
                    Ok(Ok(show)) => show,
                    Ok(Err(e)) => {
                        // The docker runtime refuses to start with it; doctor names it.
                        tracing::warn!("{e}; progress lines stay off in chats");
                        false
                    }
                    Err(e) => {
                        tracing::warn!("cannot read show_tools: {e}");
                        false
                    }
                };
                let config = self.config();
                let agent_dir = config.groups_dir.join(&self.info.agent.folder);
                let spec = RunnerSpec {
                    session_id: self.session_id().to_owned(),
                    agent_id: self.info.agent.id.clone(),
                    mailbox_dir: self
                        .info
                        .paths
                        .inbound_dir
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default(),
                    workspace: self.info.paths.workspace.clone(),
                    agent_dir,
                    global_dir: config.groups_dir.join("global"),
                    model: self
                        .info
                        .agent
                        .model
                        .clone()
                        .unwrap_or_else(|| config.default_model.clone()),
                    assistant_name: self.info.agent.name.clone(),
                    model_access: grant.access().clone(),
                    max_file_bytes,
                };
                self.sup
                    .shared
                    .runtime
                    .start(spec)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(handle) => {
                tracing::info!(runner = %handle.id, "runner started");
                let started_at = Utc::now();
                self.publish(RunnerPhase::Running {
                    runner: handle.id.clone(),
                    since: started_at,
                });
                self.runner = Some(Running {
                    handle,
                    started_at,
                    asked_at,
                    stop_reason: None,
                    _model_grant: grant,
                    _slot: slot,
                });
                self.set_state("running").await;
                true
            }
            Err(e) => {
                tracing::error!("cannot start the agent runner: {e}");
                self.publish(RunnerPhase::Stopped);
                let error = format!("the agent could not be started: {e}");
                let failed = with_mailbox(&self.mailbox, move |mb| {
                    let now = Utc::now();
                    for m in mb.inbound.pending()? {
                        if m.trigger && m.process_after.is_none_or(|t| t <= now) {
                            mb.inbound.fail(m.seq, &error)?;
                        }
                    }
                    Ok(())
                })
                .await;
                if let Err(e) = failed {
                    tracing::error!("cannot fail pending messages: {e}");
                }
                false
            }
        }
    }

    async fn on_exit(&mut self, exit: RunnerExit) {
        let Some(running) = self.runner.take() else {
            return;
        };
        tracing::info!(runner = %running.handle.id, "runner ended: {exit}");
        self.publish(RunnerPhase::Stopped);
        self.log_exit(&running.handle.id, &exit, running.stop_reason.clone())
            .await;
        // Fold what it wrote last before judging what it left unfinished.
        self.pump().await;
        if let RunnerExit::OutOfMemory { limit_mb } = exit {
            // Not retried: the same work in the same limit would most likely run out again.
            // The sender is told why, and can raise `memory_mb` in the agent's container.json.
            let reason = format!("the agent ran out of memory (limit {limit_mb} MB)");
            self.fail_unfinished(&reason).await;
            return;
        }
        let reason = running
            .stop_reason
            .unwrap_or_else(|| format!("the agent runner ended unexpectedly ({exit})"));
        let crashed = exit != RunnerExit::Code(0);
        if self.requeue_claims(&reason).await == 0 && crashed {
            // It died without claiming anything (a broken configuration, a crash at start):
            // charge the attempt to the messages it should have taken, or a runner that cannot
            // start would be restarted forever.
            self.requeue(Requeued::Due, &reason).await;
        }
    }

    /// `/stop`: stops a runner that holds a claim and fails its claimed messages; returns how
    /// many. A runner with nothing claimed (idle, or still starting) is left running.
    async fn stop_turn(&mut self) -> usize {
        if self.runner.is_none() {
            return 0;
        }
        match with_mailbox(&self.mailbox, |mb| mb.claimed()).await {
            Ok(claimed) if claimed.is_empty() => return 0,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot read the runner's claims: {e}");
                return 0;
            }
        }
        tracing::info!("stopping the turn on request (/stop)");
        self.stop_and_fail(STOPPED_REASON).await
    }

    /// Stops the runner (SIGTERM, the grace period, SIGKILL) and fails the messages it had
    /// claimed with `reason`; returns how many. `/stop` and the disk quota end a turn this way.
    async fn stop_and_fail(&mut self, reason: &str) -> usize {
        let Some(mut running) = self.runner.take() else {
            return 0;
        };
        let id = running.handle.id.clone();
        if let Err(e) = self.sup.shared.runtime.stop(&id, STOP_GRACE).await {
            tracing::error!(runner = %id, "cannot stop the runner: {e}");
        }
        let exit = running.handle.exited().await;
        self.publish(RunnerPhase::Stopped);
        self.log_exit(&id, &exit, Some(reason.to_owned())).await;
        // A turn that finished just before the signal keeps its answer: fold it first.
        self.pump().await;
        let reason = reason.to_owned();
        let failed = with_mailbox(&self.mailbox, move |mb| {
            let seqs = mb.claimed()?;
            for &seq in &seqs {
                mb.inbound.fail(seq, &reason)?;
            }
            Ok(seqs.len())
        })
        .await;
        let failed = match failed {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot fail the stopped messages: {e}");
                0
            }
        };
        // Tell the sender now rather than at the next pass.
        self.pump().await;
        let waiting = self.next_due().await.is_some();
        self.set_state(if waiting { "waiting" } else { "stopped" })
            .await;
        failed
    }

    /// The session's disk use, measured on the blocking pool.
    async fn disk_usage(&self) -> u64 {
        let roots = disk::quota_roots(&self.info.paths.workspace, &self.info.paths.outbound_dir);
        match tokio::task::spawn_blocking(move || disk::usage(&roots)).await {
            Ok(used) => used,
            Err(e) => {
                // The walk only reads metadata; a failed task counts as nothing used this
                // time, and the next measure tries again.
                tracing::warn!("cannot measure the session's disk use: {e}");
                0
            }
        }
    }

    /// Measures the session before a runner starts (always, not paced).
    async fn room_to_start(&mut self) -> Room {
        let Some(quota) = self.config().session_disk_bytes else {
            return Room::Unlimited;
        };
        let started = Instant::now();
        let used = self.disk_usage().await;
        self.disk.measured(started, started.elapsed());
        if used > quota {
            tracing::warn!(
                used,
                quota,
                workspace = %self.info.paths.workspace.display(),
                "the session is over its disk quota (SESSION_DISK_MB); not starting its runner"
            );
            Room::Over
        } else {
            Room::Left(disk::file_size_limit(quota, used))
        }
    }

    /// Fails the due messages of a session over its disk quota with the notice, and tells the
    /// chat now; false if even that did not work.
    async fn refuse_over_quota(&mut self) -> bool {
        let Some(quota) = self.config().session_disk_bytes else {
            return true;
        };
        let notice = disk::over_quota_notice(quota);
        let failed = with_mailbox(&self.mailbox, move |mb| {
            let now = Utc::now();
            for m in mb.inbound.pending()? {
                if m.trigger && m.process_after.is_none_or(|t| t <= now) {
                    mb.inbound.fail(m.seq, &notice)?;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = failed {
            tracing::error!("cannot fail pending messages: {e}");
            return false;
        }
        self.pump().await;
        true
    }

    /// While a runner lives: measures the session's disk use when the pacer allows, and stops
    /// the runner above the quota (its claimed messages fail with the notice).
    async fn check_disk(&mut self) {
        let Some(quota) = self.config().session_disk_bytes else {
            return;
        };
        let now = Instant::now();
        if self.runner.is_none() || !self.disk.due(now) {
            return;
        }
        let used = self.disk_usage().await;
        self.disk.measured(now, now.elapsed());
        if used <= quota {
            return;
        }
        tracing::warn!(
            used,
            quota,
            workspace = %self.info.paths.workspace.display(),
            "the session went over its disk quota (SESSION_DISK_MB); stopping its runner"
        );
        self.stop_and_fail(&disk::over_quota_notice(quota)).await;
    }

    /// Fails, with `reason`, the messages the runner had claimed — or, if it claimed none, the
    /// due messages it should have taken.
    async fn fail_unfinished(&self, reason: &str) {
        let reason = reason.to_owned();
        let failed = with_mailbox(&self.mailbox, move |mb| {
            let mut seqs = mb.claimed()?;
            if seqs.is_empty() {
                let now = Utc::now();
                seqs = mb
                    .inbound
                    .pending()?
                    .into_iter()
                    .filter(|m| m.trigger && m.process_after.is_none_or(|t| t <= now))
                    .map(|m| m.seq)
                    .collect();
            }
            for &seq in &seqs {
                mb.inbound.fail(seq, &reason)?;
            }
            Ok(seqs)
        })
        .await;
        match failed {
            Ok(seqs) => {
                for seq in seqs {
                    tracing::error!(seq, "message failed: out of memory");
                }
            }
            Err(e) => tracing::error!("cannot fail pending messages: {e}"),
        }
    }

    /// Re-queues the claims a runner left behind; returns how many there were.
    async fn requeue_claims(&self, reason: &str) -> usize {
        self.requeue(Requeued::Claimed, reason).await
    }

    async fn requeue(&self, which: Requeued, reason: &str) -> usize {
        let config = self.config();
        let (max_tries, backoff) = (config.max_tries, config.backoff_base);
        let reason = reason.to_owned();
        let result = with_mailbox(&self.mailbox, move |mb| {
            let now = Utc::now();
            let seqs = match which {
                Requeued::Claimed => mb.claimed()?,
                Requeued::Due => mb
                    .inbound
                    .pending()?
                    .into_iter()
                    .filter(|m| m.trigger && m.process_after.is_none_or(|t| t <= now))
                    .map(|m| m.seq)
                    .collect(),
            };
            if seqs.is_empty() {
                return Ok(Vec::new());
            }
            mb.inbound.requeue(&seqs, max_tries, backoff, &reason, now)
        })
        .await;
        let count = result.as_ref().map_or(0, Vec::len);
        match result {
            Ok(requeued) => {
                for r in requeued {
                    match r {
                        Requeue::Retry { seq, tries, at } => {
                            tracing::warn!(seq, tries, retry_at = %at, "message re-queued");
                        }
                        Requeue::Failed { seq, tries } => {
                            tracing::error!(seq, tries, "message failed for good");
                        }
                    }
                }
            }
            Err(e) => tracing::error!("cannot re-queue claims: {e}"),
        }
        count
    }

    async fn check_liveness(&mut self) {
        let Some(running) = &self.runner else { return };
        let heartbeat_path = self.info.paths.heartbeat();
        let probe = with_mailbox(&self.mailbox, move |mb| {
            let holds_claim = !mb.claimed()?.is_empty();
            let tool_timeout = match mb.outbound()? {
                Some(out) => out.runner_state()?.and_then(|s| s.tool_timeout_ms),
                None => None,
            };
            Ok((holds_claim, tool_timeout))
        })
        .await;
        let (holds_claim, tool_timeout) = match probe {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot check the runner's claims: {e}");
                return;
            }
        };
        let verdict = liveness::judge(&liveness::Inputs {
            now: Utc::now(),
            started_at: running.started_at,
            last_beat: heartbeat::last_beat(&heartbeat_path).map(DateTime::<Utc>::from),
            holds_claim,
            tolerance: self.config().claim_stuck,
            tool_timeout: tool_timeout.map(Duration::from_millis),
        });
        if let Liveness::Stuck { silent_for } = verdict {
            let id = running.handle.id.clone();
            tracing::warn!(runner = %id, ?silent_for, "runner stopped responding; killing it");
            if let Some(r) = &mut self.runner {
                r.stop_reason = Some(format!(
                    "the agent stopped responding (silent for {} s)",
                    silent_for.as_secs()
                ));
            }
            if let Err(e) = self.sup.shared.runtime.kill(&id).await {
                tracing::error!(runner = %id, "cannot kill the runner: {e}");
            }
        }
    }

    async fn stop_runner(&mut self, reason: &str) {
        let Some(mut running) = self.runner.take() else {
            return;
        };
        let id = running.handle.id.clone();
        if let Err(e) = self.sup.shared.runtime.stop(&id, STOP_GRACE).await {
            tracing::error!(runner = %id, "cannot stop the runner: {e}");
        }
        let exit = running.handle.exited().await;
        tracing::info!(runner = %id, "runner stopped: {exit}");
        self.publish(RunnerPhase::Stopped);
        self.log_exit(&id, &exit, Some(reason.to_owned())).await;
        self.pump().await;
        self.requeue_claims(reason).await;
        let waiting = self.next_due().await.is_some();
        self.set_state(if waiting { "waiting" } else { "stopped" })
            .await;
    }
}
