//! Assembling and running a host: data directory and lock, central DB and bootstrap, runtime,
//! supervisor, reconciliation of what a previous host left behind, the task scheduler, the
//! admin socket, the web dashboard. `clawbox
//! run` and the in-process host of `clawbox chat` both go through [`start`].

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::admin::HostCtx;
use crate::channels::Channels;
use crate::channels::telegram::TelegramChannel;
use crate::config::{Config, RuntimeKind};
use crate::db::bootstrap::{self, DEFAULT_AGENT};
use crate::db::{self, Db};
use crate::proxy::Proxy;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::{AgentRuntime, RunnerSettings};
use crate::scheduler::{Scheduler, SystemClock, TaskSignal};
use crate::session::Inlet;
use crate::session::questions::QuestionSignal;
use crate::session::requests::Requests;
use crate::session::retention::Retention;
use crate::session::router::Router;
use crate::session::supervisor::{Shared, Supervisor};

/// What the channel adapters hand messages to.
fn inlet(ctx: &HostCtx) -> Inlet {
    Inlet {
        db: ctx.db.clone(),
        router: ctx.router.clone(),
        supervisor: ctx.supervisor.clone(),
    }
}

/// A started host; dropping it without [`RunningHost::shutdown`] leaves runners to idle out.
pub struct RunningHost {
    pub ctx: HostCtx,
    cancel: CancellationToken,
    admin: tokio::task::JoinHandle<()>,
    /// The web dashboard, unless `DASHBOARD_ADDR=off`.
    dashboard: Option<tokio::task::JoinHandle<()>>,
    /// The Telegram poller, when the channel is on.
    telegram: Option<tokio::task::JoinHandle<()>>,
    scheduler: tokio::task::JoinHandle<()>,
    /// Expires questions and delivers their outcomes.
    questions: tokio::task::JoinHandle<()>,
    /// Deletes old settled rows (`RETENTION_DAYS`).
    retention: tokio::task::JoinHandle<()>,
    /// Stops the model proxy, after the runners are gone.
    proxy_cancel: CancellationToken,
    _lock: std::fs::File,
}

impl RunningHost {
    /// Stops accepting terminals, stops every runner (their claims are re-queued), and waits.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.admin.await;
        if let Some(dashboard) = self.dashboard {
            let _ = dashboard.await;
        }
        crate::dashboard::remove_addr_file(&self.ctx.config);
        if let Some(poller) = self.telegram {
            let _ = poller.await;
        }
        // Before the supervisor: no run is written into an inbox whose session is stopping.
        let _ = self.scheduler.await;
        let _ = self.questions.await;
        let _ = self.retention.await;
        self.ctx.supervisor.shutdown().await;
        self.proxy_cancel.cancel();
        self.ctx.proxy.remove_files(&self.ctx.config);
        let _ = std::fs::remove_file(self.ctx.config.socket_path());
        tracing::info!("host stopped");
    }
}

pub async fn start(config: Config) -> Result<RunningHost, HostError> {
    let config = Arc::new(config);
    let data = &config.data_dir;
    std::fs::create_dir_all(data).map_err(|e| HostError::io("create", data, e))?;
    // Everything under DATA_DIR is private: conversations, the admin socket.
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HostError::io("chmod", data, e))?;
    let lock = lock_data_dir(&config)?;

    let db_path = config.db_path();
    let assistant = config.assistant_name.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
        .await
        .map_err(|e| HostError::Task(e.to_string()))??;
    let install_id = db
        .call(move |conn| bootstrap::ensure_defaults(conn, &assistant))
        .await?;
    bootstrap::ensure_group_folder(&config.groups_dir, DEFAULT_AGENT)
        .map_err(|e| HostError::io("create agent folder", &config.groups_dir, e))?;
    // Agent folders made before they were created private (or loosened by hand) are closed
    // to other local users: they hold the agents' memory.
    let agents = db.call(|conn| db::agent_groups(conn)).await?;
    for agent in agents {
        bootstrap::tighten_group_folder(&config.groups_dir, &agent.folder)
            .map_err(|e| HostError::io("chmod", &config.groups_dir.join(&agent.folder), e))?;
    }
    // Before any runner can start: runners get the proxy's address and a token, never the key.
    let proxy_cancel = CancellationToken::new();
    let proxy = Proxy::start(&config, db.clone(), proxy_cancel.clone()).await?;

    let runtime: Arc<dyn AgentRuntime> = match config.runtime {
        RuntimeKind::Process => {
            if !config.runner_bin.is_file() {
                return Err(HostError::Config(format!(
                    "agent runner binary not found at {} (build it with `cargo build --workspace`, or set CLAWBOX_RUNNER_BIN)",
                    config.runner_bin.display()
                )));
            }
            tracing::warn!(
                "CONTAINER_RUNTIME=process: agents run as child processes of the host, NOT isolated"
            );
            Arc::new(ProcessRuntime::new(
                config.runner_bin.clone(),
                RunnerSettings::from_config(&config, &install_id),
                config.data_dir.join("runners"),
            ))
        }
        RuntimeKind::Docker => Arc::new(
            DockerRuntime::connect(&config, RunnerSettings::from_config(&config, &install_id))
                .await?,
        ),
    };
    let journal = config.mailbox_journal.resolve(runtime.shares_kernel());
    tracing::info!(journal = journal.as_str(), "session mailboxes");

    let telegram = match &config.telegram_bot_token {
        Some(token) => Some(TelegramChannel::new(&config, token)?),
        None => None,
    };
    let channels = Channels::new(
        config.data_dir.join("files"),
        telegram,
        config.max_reply_chars,
    );
    let watcher = match crate::session::watch::OutboundWatcher::new() {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::warn!("no file notifications ({e}); sessions fall back to polling");
            None
        }
    };
    let signal = TaskSignal::default();
    let questions = QuestionSignal::default();
    let supervisor = Supervisor::new(Shared {
        watcher,
        config: Arc::clone(&config),
        db: db.clone(),
        runtime: Arc::clone(&runtime),
        outlet: Arc::new(channels.clone()),
        proxy: proxy.clone(),
        requests: Requests::new(db.clone(), config.timezone, signal.clone()),
        questions: questions.clone(),
        journal,
    });
    let scheduler = Scheduler::new(
        db.clone(),
        Arc::new(supervisor.clone()),
        Arc::new(SystemClock),
        signal,
        config.sessions_dir(),
    );
    let retention = Retention::new(Arc::clone(&config), db.clone(), supervisor.clone());
    let ctx = HostCtx {
        router: Router::new(supervisor.clone()),
        config: Arc::clone(&config),
        db,
        supervisor,
        channels,
        runtime,
        install_id,
        proxy,
        started_at: Utc::now(),
        scheduler,
        retention,
    };
    reconcile(&ctx).await?;

    // Before the admin socket: whoever waits for the socket finds dashboard.addr written.
    let dashboard_access = crate::dashboard::access::Access::load_or_create(&config)?;
    let dashboard_listener = crate::dashboard::bind(&config).await?;
    let listener = crate::admin::bind(&config.socket_path())?;
    let cancel = CancellationToken::new();
    // After reconciliation: runs go into sessions whose leftovers are settled.
    let scheduler = tokio::spawn(ctx.scheduler.clone().run(cancel.clone()));
    let questions = tokio::spawn(crate::session::questions::run(
        ctx.supervisor.clone(),
        questions,
        cancel.clone(),
    ));
    let retention = tokio::spawn(ctx.retention.clone().run(cancel.clone()));
    let admin = tokio::spawn(crate::admin::serve(listener, ctx.clone(), cancel.clone()));
    let dashboard = dashboard_listener.map(|listener| {
        tokio::spawn(crate::dashboard::serve(
            listener,
            ctx.clone(),
            dashboard_access,
            cancel.clone(),
        ))
    });
    let telegram = ctx
        .channels
        .telegram
        .as_ref()
        .map(|tg| tg.start(inlet(&ctx), cancel.clone()));
    tracing::info!(
        data_dir = %config.data_dir.display(),
        runtime = ctx.runtime.name(),
        "host started"
    );
    Ok(RunningHost {
        ctx,
        cancel,
        admin,
        dashboard,
        telegram,
        scheduler,
        questions,
        retention,
        proxy_cancel,
        _lock: lock,
    })
}

/// Stops runners a previous host left behind, then lets every session that host left busy
/// re-queue dead claims and deliver undelivered replies. Sessions that were idle are not
/// touched: a restart costs nothing per idle session.
async fn reconcile(ctx: &HostCtx) -> Result<(), HostError> {
    let orphans = ctx.runtime.list().await?;
    for orphan in &orphans {
        tracing::warn!(runner = %orphan.id, session_id = ?orphan.session_id, "stopping runner left by a previous host");
        ctx.runtime.kill(&orphan.id).await?;
    }
    // Killing is asynchronous; give the orphans a moment so their last writes are complete
    // before their claims are judged.
    if !orphans.is_empty() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !ctx.runtime.list().await?.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let busy = ctx.db.call(|conn| db::busy_sessions(conn)).await?;
    for s in busy {
        tracing::info!(session_id = %s.id, state = %s.runner_state, "resuming session");
        ctx.supervisor.wake(&s.id).await?;
    }
    Ok(())
}

/// One host per data directory: two would both write every `inbound.db`. `clawbox tasks`
/// takes the same lock while it changes tasks without a host.
pub(crate) fn lock_data_dir(config: &Config) -> Result<std::fs::File, HostError> {
    use std::os::fd::AsRawFd;
    let path = config.data_dir.join("clawbox.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HostError::io("open", &path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(HostError::AlreadyRunning(config.socket_path()));
    }
    Ok(file)
}
