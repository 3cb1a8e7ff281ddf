//! The runner's main loop: opens the mailbox, starts the MCP servers, keeps the heartbeat, waits
//! for work (inotify on `inbound/`, a slow fallback poll, a timer for the next scheduled row),
//! runs turns one at a time, and exits after `CLAWBOX_IDLE_TIMEOUT_MS` without work or on
//! shutdown. Keeps `outbound.db` flat: prunes settled rows when it starts, every
//! [`mailbox::retention::PRUNE_EVERY`] turns and when it exits, each time followed by a WAL
//! checkpoint. Decisions about what to claim are `claim.rs`'s; a turn is `turn.rs`'s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mailbox::layout::{INBOUND_DB, is_commit_event};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::activity::ActivityLog;
use crate::budget::{Budget, Sizer};
use crate::claim::{self, Plan};
use crate::config::Config;
use crate::container_config;
use crate::mcp::{self, McpError, McpManager};
use crate::model::{ModelClient, ModelSettings};
use crate::store::{Store, StoreError};
use crate::turn::compact::compact_command;
use crate::turn::{TurnEnv, TurnError, clear_conversation, run_turn};

/// The safety-net poll for missed file notifications.
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// The poll when file notifications are unavailable (inotify limits).
const POLL_WITHOUT_WATCHER: Duration = Duration::from_secs(1);
/// Slack after a row's `process_after`, so the row is due when we look.
const DUE_SLACK: Duration = Duration::from_millis(5);

/// Why the runner stopped early. `main` logs it and exits with status 1; the host re-queues
/// any claim and starts a new runner on the next message.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The mailbox could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The built-in MCP server did not start.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the model client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs until idle for `config.idle_timeout`, or until `shutdown` is cancelled (SIGTERM/SIGINT):
/// then the current step's writes finish, the MCP servers are stopped and it returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let config = Arc::new(config);
    let span = tracing::info_span!(
        "runner",
        session_id = %config.session_id,
        agent_id = %config.agent_id
    );
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), RunError> {
    let paths = config.session_paths();
    tracing::info!(
        pid = std::process::id(),
        install = config.install.as_deref().unwrap_or(""),
        mailbox = %config.mailbox_dir.display(),
        model = %config.model,
        "agent-runner starting"
    );

    // The heartbeat runs from the first moment to the last, also while MCP servers start.
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(beat(
        paths.heartbeat(),
        config.heartbeat,
        heartbeat_stop.clone(),
    ));

    let result = serve(&config, &paths, &shutdown).await;

    heartbeat_stop.cancel();
    if let Err(err) = heartbeat.await {
        tracing::warn!(error = %err, "heartbeat task failed");
    }
    match &result {
        Ok(()) => tracing::info!("agent-runner stopped"),
        Err(err) => tracing::error!(error = %err, "agent-runner failed"),
    }
    result
}

async fn serve(
    config: &Arc<Config>,
    paths: &mailbox::SessionPaths,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let store = Store::open(paths.clone()).await?;
    // A draft left by a runner that died mid-stream is stale: its turn starts over.
    store.run(|dbs| dbs.outbound.clear_drafts()).await?;
    let activity = ActivityLog::new(store.clone());
    activity.starting(&config.model).await?;
    // Before any work: settled rows past the retention, by age or by count (batches of a few
    // hundred rows; nothing to do costs a few indexed queries per table). A file that cannot be
    // pruned cannot be worked on either, so a failure here stops the runner.
    prune(&store, config.retention_days).await?;

    // The user's servers are read once per runner: a changed container.json applies when the
    // next runner starts (after the idle timeout, or `clawbox` restarting the session).
    let user = container_config::read(&config.agent_dir).await;
    let model = ModelClient::new(ModelSettings {
        base_url: config.base_url.clone(),
        api_key: config.api_key.clone(),
        socket: config.model_socket.clone(),
        model: config.model.clone(),
        timeout: config.model_timeout,
        retries: config.model_retries,
        backoff: config.model_backoff,
        params: user.model_params.clone(),
        tool_call_content: user.tool_call_content,
        stream: user.stream.unwrap_or(true),
    })?;
    for problem in &user.problems {
        tracing::warn!(problem = %problem, "container.json");
    }
    let mut specs: Vec<mcp::ServerSpec> = mcp::builtin_server(config).into_iter().collect();
    specs.extend(
        user.servers
            .iter()
            .map(|server| mcp::user_server(config, server, user.call_timeout)),
    );
    let mut mcp = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        started = McpManager::start(specs, config.tool_timeout) => started?,
    };
    let context_tokens = user.context_tokens;
    mcp.retain_builtin(|name| user.builtin_enabled(name));
    let mut setup_problems = user.problems;
    setup_problems.extend(mcp.problems().iter().cloned());
    tracing::info!(tools = mcp.tools().len(), "tools ready");

    let wake = Arc::new(Notify::new());
    let watcher = watch_inbound(&paths.inbound_dir, Arc::clone(&wake));
    let poll = if watcher.is_some() {
        FALLBACK_POLL
    } else {
        POLL_WITHOUT_WATCHER
    };

    // Once per runner; after this, each verdict records Idle in its own transaction.
    activity
        .ready(mcp.tools().len(), setup_problems.clone())
        .await?;
    let budget = Budget::new(context_tokens.unwrap_or(config.context_tokens));
    let sizer = Sizer::for_model(&config.model);
    tracing::info!(
        context_tokens = budget.context,
        tokenizer = sizer.tokenizer(),
        "context budget"
    );
    let env = TurnEnv {
        config,
        store: &store,
        model: &model,
        mcp: &mcp,
        activity: &activity,
        setup_problems: &setup_problems,
        budget,
        sizer: &sizer,
    };
    let result = work_loop(&env, &wake, poll, shutdown).await;
    drop(watcher);
    mcp.shutdown().await;
    // What the last turns settled, and the WAL folded back, so an idle session's files are
    // as small as they get.
    if result.is_ok()
        && let Err(err) = prune(&store, config.retention_days).await
    {
        tracing::warn!(error = %err, "settled rows could not be pruned at exit");
    }
    result
}

/// Deletes settled rows of `outbound.db` older than the retention or beyond the newest
/// [`mailbox::retention::KEEP_SETTLED`] of their table (see `mailbox::retention`), then
/// checkpoints the WAL with TRUNCATE. A checkpoint the host's reads hold up does less and
/// is finished by the next one; it is not an error.
async fn prune(store: &Store, retention_days: u32) -> Result<(), StoreError> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
    let (pruned, complete) = store
        .run(move |dbs| {
            let pruned = dbs
                .outbound
                .prune_settled(&dbs.inbound, mailbox::retention::Keep::new(cutoff))?;
            Ok((pruned, dbs.outbound.checkpoint()?))
        })
        .await?;
    if pruned.rows > 0 {
        tracing::info!(
            rows = pruned.rows,
            bytes = pruned.bytes,
            wal_truncated = complete,
            "old settled rows pruned"
        );
    }
    Ok(())
}

/// Claims and runs work until idle or shutdown.
async fn work_loop(
    env: &TurnEnv<'_>,
    wake: &Notify,
    poll: Duration,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let mut last_work = Instant::now();
    // Verdicts since the last prune: a live runner prunes every PRUNE_EVERY of them, a handful
    // of rows at a time, instead of letting a long conversation pile up until its next start.
    let mut unpruned: u64 = 0;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if unpruned >= mailbox::retention::PRUNE_EVERY {
            unpruned = 0;
            // A failed prune loses nothing (the rows stay for the next one); the work goes on.
            if let Err(err) = prune(env.store, env.config.retention_days).await {
                tracing::warn!(error = %err, "settled rows could not be pruned");
            }
        }
        let rows = env.activity.rows();
        let (plan, next_due) = env
            .store
            .run(move |dbs| claim::next(dbs, rows, Utc::now()))
            .await?;
        match plan {
            Plan::Turn(batch) => {
                let span = tracing::info_span!(
                    "turn",
                    turn = batch.turn,
                    messages = batch.messages.len(),
                    resume = batch.resume
                );
                // Cancelled with the runner; a child token so a turn-level cancel never stops
                // the runner.
                let cancel = shutdown.child_token();
                match run_turn(env, &batch, &cancel).instrument(span).await {
                    Ok(_) => {}
                    Err(TurnError::Cancelled) => {
                        tracing::info!(turn = batch.turn, "turn interrupted by shutdown");
                        return Ok(());
                    }
                    Err(TurnError::Store(err)) => return Err(err.into()),
                }
                // The verdict's transaction recorded Idle.
                last_work = Instant::now();
                unpruned += 1;
                continue;
            }
            Plan::Clear(messages) => {
                clear_conversation(env.store, env.activity.rows(), messages).await?;
                last_work = Instant::now();
                unpruned += 1;
                continue;
            }
            Plan::Compact(messages) => {
                let cancel = shutdown.child_token();
                match compact_command(env, messages, &cancel).await {
                    Ok(_) => {}
                    Err(TurnError::Cancelled) => return Ok(()),
                    Err(TurnError::Store(err)) => return Err(err.into()),
                }
                last_work = Instant::now();
                unpruned += 1;
                continue;
            }
            Plan::Idle | Plan::WaitForResume => {}
        }

        let idle_deadline = last_work + env.config.idle_timeout;
        if Instant::now() >= idle_deadline {
            tracing::info!(
                idle_ms = env.config.idle_timeout.as_millis() as u64,
                "nothing to do; exiting"
            );
            return Ok(());
        }
        let due_in = next_due.map(|at| (at - Utc::now()).to_std().unwrap_or_default() + DUE_SLACK);
        let woken_by = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = wake.notified() => "inbound changed",
            () = tokio::time::sleep(poll) => "poll",
            () = tokio::time::sleep(due_in.unwrap_or(poll)), if due_in.is_some() => "row due",
            () = tokio::time::sleep_until(idle_deadline) => "idle check",
        };
        tracing::trace!(woken_by, "wake-up");
    }
}

/// Touches the heartbeat file every `period` until `stop`.
async fn beat(path: std::path::PathBuf, period: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let file = path.clone();
        match tokio::task::spawn_blocking(move || mailbox::heartbeat::touch(&file)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "heartbeat failed"),
            Err(err) => tracing::warn!(error = %err, "heartbeat task failed"),
        }
    }
}

/// Wakes the loop on commits to `inbound.db` (the file, its rollback journal or its WAL).
/// `None` when inotify is unavailable; the loop then polls faster.
fn watch_inbound(dir: &Path, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            if is_commit_event(&event, INBOUND_DB) {
                wake.notify_one();
            }
        }
        Err(err) => tracing::warn!(error = %err, "file watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the inbound directory; polling");
            return None;
        }
    };
    if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the inbound directory; polling");
        return None;
    }
    Some(watcher)
}
