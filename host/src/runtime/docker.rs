//! The `docker` runtime: one hardened container per session, through the Docker engine API
//! (bollard). Owns the container's shape (mounts, user, limits, hardening, labels), its life
//! (create, start, logs, exit status, removal) and finding containers a previous host left.
//! The agent's own settings come from `container_json.rs`, file ownership from
//! `ownership.rs`, what the engine accepts from `probe.rs`, the image from `crate::runtime::image`.
//!
//! A container, for session `S` of agent `A` (folder `F`):
//!
//! | host | container | mode |
//! |---|---|---|
//! | `sessions/A/S/inbound/` | `/mailbox/inbound` | read-only |
//! | `sessions/A/S/outbound/` | `/mailbox/outbound` | read-write |
//! | `sessions/A/S/workspace/` | `/workspace` | read-write |
//! | `groups/F/` | `/workspace/agent` | read-write |
//! | `groups/F/container.json` | `/workspace/agent/container.json` | read-only |
//! | `groups/global/` (if it exists) | `/workspace/global` | read-only |
//! | `DATA_DIR/model.sock` | `/run/clawbox/model.sock` | the model proxy |
//! | `container.json` `additional_mounts` | `/workspace/extra/…` | as configured (ro default) |
//!
//! `container.json` is mounted read-only over the writable agent folder because it decides the
//! container's mounts and network: an agent able to edit it could widen its own sandbox at the
//! next start.
//!
//! Hardening: a non-root user (`ownership.rs`), `cap_drop: ALL`, `no-new-privileges`, a
//! read-only root filesystem with a tmpfs `/tmp`, `init` (reaps the runner's children), memory
//! with swap equal to it, CPUs, pids, a file-size limit (`fsize`, the room left under the
//! session's disk quota: `session::disk`), network `none` unless the agent asks for `bridge`.
//! Containers are named `clawbox-<agent>-<session>` and labelled `clawbox.session`,
//! `clawbox.agent`, `clawbox.install`; they are removed once their exit status is read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::container_json::{self, ContainerSettings, MountPolicy};
use super::ownership::RunnerUser;
use super::probe::{self, Accepted};
use super::*;
use crate::HostError;
use crate::config::{Config, ContainerLimits};
use crate::proxy;
use crate::runtime::image::{self, ImageChoice, ImageSources};

pub const LABEL_SESSION: &str = "clawbox.session";
pub const LABEL_AGENT: &str = "clawbox.agent";
pub const LABEL_INSTALL: &str = "clawbox.install";
/// The memory limit the container was created with, to word an OOM kill.
const LABEL_MEMORY_MB: &str = "clawbox.memory_mb";

/// Paths inside the container (the image's layout, `crate::runtime::image`).
pub const MAILBOX_DIR: &str = "/mailbox";
pub const WORKSPACE: &str = "/workspace";
pub const AGENT_DIR: &str = "/workspace/agent";
pub const GLOBAL_DIR: &str = "/workspace/global";
pub const SKILLS_DIR: &str = "/app/skills";
pub const MCP_TOOLS_BIN: &str = "/app/mcp-tools";

/// Connects to the engine (`DOCKER_HOST`, else the local socket) and agrees on an API version
/// both sides speak (bollard defaults to a newer one than e.g. Docker 20.10 accepts).
pub async fn connect_engine(docker_host: Option<&str>) -> Result<Docker, HostError> {
    let where_ = docker_host.unwrap_or("unix:///var/run/docker.sock");
    let unreachable = |e: DockerError| {
        HostError::Docker(format!(
            "cannot reach the Docker engine at {where_}: {e} (is dockerd running, and may this user use it? \
             CONTAINER_RUNTIME=process runs agents without Docker, unisolated)"
        ))
    };
    let docker = match docker_host {
        Some(host) => Docker::connect_with_host(host),
        None => Docker::connect_with_socket_defaults(),
    }
    .map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Whether the engine's containers run on the host's own kernel, from `docker info`: the same
/// kernel release as this machine's, and not Docker Desktop (which runs its engine in a VM,
/// also on Linux). Across such a boundary bind mounts are shared files, but not shared memory,
/// and the mailbox's WAL index is shared memory. An engine that does not say counts as a VM.
pub fn shares_kernel(
    engine_kernel: Option<&str>,
    engine_os: Option<&str>,
    local_kernel: Option<&str>,
) -> bool {
    let desktop = engine_os.is_some_and(|os| os.contains("Docker Desktop"));
    match (engine_kernel, local_kernel) {
        (Some(engine), Some(local)) => !desktop && engine.trim() == local.trim(),
        _ => false,
    }
}

/// This machine's kernel release (`uname -r`).
fn local_kernel() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()
}

pub struct DockerRuntime {
    docker: Docker,
    settings: RunnerSettings,
    image: String,
    defaults: ContainerLimits,
    policy: MountPolicy,
    user: RunnerUser,
    /// The model proxy's socket on the host.
    model_socket: PathBuf,
    /// What the engine accepted when probed at start.
    accepted: Accepted,
    /// CPUs of the engine's machine (a larger `cpus` is refused by the engine).
    ncpu: f64,
    /// Whether the engine's containers run on this machine's kernel (see [`shares_kernel`]).
    shares_kernel: bool,
    /// `RUST_LOG` for the runner, as the host got it.
    rust_log: Option<String>,
    /// Exit watches of the containers this host started, by container id (std Mutex: never
    /// held across an await).
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<RunnerExit>>>>>,
}

impl DockerRuntime {
    /// Connects, builds the image if it is missing or stale (progress on stderr), probes what
    /// the engine accepts, and removes stopped containers a previous host left.
    pub async fn connect(config: &Config, settings: RunnerSettings) -> Result<Self, HostError> {
        let docker = connect_engine(config.docker_host.as_deref()).await?;
        let sources = ImageSources::from_config(config);
        let image = image::ensure(
            &docker,
            &ImageChoice::from_config(config),
            &sources,
            &image::install_label(&config.data_dir),
            &mut image::stderr_progress,
        )
        .await?;
        let info = docker
            .info()
            .await
            .map_err(|e| HostError::Docker(format!("cannot read the engine's info: {e}")))?;
        let ncpu = info.ncpu.unwrap_or(1).max(1) as f64;
        if config.container_limits.cpus > ncpu {
            return Err(HostError::Config(format!(
                "CONTAINER_CPUS={} but the Docker engine has only {ncpu} CPUs",
                config.container_limits.cpus
            )));
        }
        let user = RunnerUser::for_data_dir(&config.data_dir)
            .map_err(|e| HostError::io("inspect", &config.data_dir, e))?;
        let accepted = probe::run_cached(
            &docker,
            &config.data_dir.join("docker-probe.json"),
            &image,
            &user,
            config.container_limits,
            &info,
        )
        .await?;
        let shares_kernel = shares_kernel(
            info.kernel_version.as_deref(),
            info.operating_system.as_deref(),
            local_kernel().as_deref(),
        );
        let runtime = DockerRuntime {
            shares_kernel,
            docker,
            image,
            defaults: config.container_limits,
            policy: MountPolicy::new(&[&config.data_dir, &config.groups_dir]),
            user,
            model_socket: config.model_socket_path(),
            accepted,
            ncpu,
            // Read once here, like the process runtime passes it through: the runner's log filter.
            rust_log: std::env::var("RUST_LOG").ok(),
            settings,
            running: Arc::default(),
        };
        runtime.remove_leftovers().await;
        tracing::info!(
            image = %runtime.image,
            user = %runtime.user.docker_user(),
            shares_kernel = runtime.shares_kernel,
            "docker runtime ready"
        );
        Ok(runtime)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<RunnerExit>>>> {
        // A poisoned map only means a panic elsewhere; its contents are still valid.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn install_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_INSTALL}={}", self.settings.install_id)],
        )])
    }

    /// Stopped containers of this install (a host that died between a container's exit and
    /// its removal) are removed, so nothing accumulates.
    async fn remove_leftovers(&self) {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.install_filter())
            .build();
        let Ok(list) = self.docker.list_containers(Some(options)).await else {
            return; // best effort; the next start tries again
        };
        for c in list {
            let running = matches!(
                c.state,
                Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
            );
            if let (false, Some(id)) = (running, c.id) {
                tracing::info!(container = %id, "removing a stopped container left by a previous host");
                remove(&self.docker, &id).await;
            }
        }
    }

    async fn start_container(&self, spec: RunnerSpec) -> Result<RunnerHandle, RuntimeError> {
        let agent_dir = spec.agent_dir.clone();
        let defaults = self.defaults;
        let policy = self.policy.clone();
        let settings = blocking(move || {
            container_json::load(&agent_dir, defaults, &policy).map_err(|e| e.to_string())
        })
        .await?;
        if settings.limits.cpus > self.ncpu {
            return Err(RuntimeError::Start(format!(
                "{}: `cpus` is {} but this machine has only {} CPUs",
                spec.agent_dir
                    .join(container_json::CONTAINER_JSON)
                    .display(),
                settings.limits.cpus,
                self.ncpu
            )));
        }
        let layout = Layout::of(&spec);
        let (user, socket) = (self.user, self.model_socket.clone());
        let prepared = layout.clone();
        let global_exists = blocking(move || {
            prepare(&prepared, &user, &socket).map_err(|e| format!("preparing the session: {e}"))
        })
        .await?;

        let name = container_name(&spec.agent_id, &spec.session_id);
        let body = self.container_body(&spec, &settings, &layout, global_exists);
        let id = self.create(&name, body).await?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            remove(&self.docker, &id).await;
            return Err(RuntimeError::Start(format!(
                "starting container {name}: {e}"
            )));
        }
        tracing::info!(container = %name, id = %short(&id), memory_mb = settings.limits.memory_mb,
            cpus = settings.limits.cpus, network = settings.network.docker_mode(), "container started");

        tokio::spawn(follow_logs(
            self.docker.clone(),
            id.clone(),
            spec.session_id.clone(),
        ));
        let (tx, rx) = watch::channel(None);
        self.lock().insert(id.clone(), rx.clone());
        tokio::spawn(monitor(
            self.docker.clone(),
            id.clone(),
            settings.limits.memory_mb,
            Arc::clone(&self.running),
            tx,
        ));
        Ok(RunnerHandle { id, exit: rx })
    }

    /// Creates the container; a same-named leftover of this install is removed first.
    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        for attempt in 0..2 {
            match self
                .docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(created) => {
                    for warning in created.warnings {
                        tracing::warn!(container = %name, "Docker: {warning}");
                    }
                    return Ok(created.id);
                }
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) if attempt == 0 && self.is_ours(name).await => {
                    tracing::warn!(container = %name, "removing a leftover container with the same name");
                    remove(&self.docker, name).await;
                }
                Err(e) => {
                    return Err(RuntimeError::Start(format!(
                        "creating container {name}: {e}"
                    )));
                }
            }
        }
        Err(RuntimeError::Start(format!(
            "creating container {name}: the name stays taken"
        )))
    }

    async fn is_ours(&self, name: &str) -> bool {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_INSTALL).cloned())
                .is_some_and(|i| i == self.settings.install_id),
            Err(_) => false,
        }
    }

    fn container_body(
        &self,
        spec: &RunnerSpec,
        settings: &ContainerSettings,
        layout: &Layout,
        global_exists: bool,
    ) -> ContainerCreateBody {
        let paths = RunnerPaths {
            mailbox_dir: MAILBOX_DIR.into(),
            workspace: WORKSPACE.into(),
            agent_dir: AGENT_DIR.into(),
            global_dir: GLOBAL_DIR.into(),
            skills_dir: Some(SKILLS_DIR.into()),
            model_socket: Some(proxy::CONTAINER_MODEL_SOCKET.into()),
        };
        let mut env: Vec<String> = self
            .settings
            .env(spec, &paths)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{}={MCP_TOOLS_BIN}", mailbox::env::MCP_TOOLS_BIN));
        if let Some(filter) = &self.rust_log {
            env.push(format!("RUST_LOG={filter}"));
        }

        let mut mounts = vec![
            bind(&layout.inbound, &format!("{MAILBOX_DIR}/inbound"), true),
            bind(&layout.outbound, &format!("{MAILBOX_DIR}/outbound"), false),
            bind(&layout.workspace, WORKSPACE, false),
            bind(&layout.agent_dir, AGENT_DIR, false),
            bind(
                &layout.agent_dir.join(container_json::CONTAINER_JSON),
                &format!("{AGENT_DIR}/{}", container_json::CONTAINER_JSON),
                true,
            ),
            bind(&self.model_socket, proxy::CONTAINER_MODEL_SOCKET, false),
        ];
        if global_exists {
            mounts.push(bind(&layout.global_dir, GLOBAL_DIR, true));
        }
        for extra in &settings.mounts {
            mounts.push(bind(
                &extra.host_path,
                &extra.container_path,
                extra.readonly,
            ));
        }

        let limits = settings.limits;
        let accepted = &self.accepted;
        let host_config = HostConfig {
            mounts: Some(mounts),
            memory: accepted.memory.then(|| limits.memory_bytes()),
            memory_swap: accepted.memory_swap.then(|| limits.memory_bytes()),
            nano_cpus: accepted.cpus.then(|| limits.nano_cpus()),
            pids_limit: accepted.pids.then_some(limits.pids),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), tmpfs_options(limits))])),
            init: accepted.init.then_some(true),
            network_mode: Some(settings.network.docker_mode().into()),
            auto_remove: Some(false),
            // The disk quota's per-file bound (session::disk): a file can never outgrow the
            // room the session had left when its container started.
            ulimits: spec.max_file_bytes.map(|max| {
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                vec![bollard::models::ResourcesUlimits {
                    name: Some("fsize".into()),
                    soft: Some(max),
                    hard: Some(max),
                }]
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(env),
            user: Some(self.user.docker_user()),
            working_dir: Some(WORKSPACE.into()),
            labels: Some(HashMap::from([
                (LABEL_SESSION.to_owned(), spec.session_id.clone()),
                (LABEL_AGENT.to_owned(), spec.agent_id.clone()),
                (LABEL_INSTALL.to_owned(), self.settings.install_id.clone()),
                (LABEL_MEMORY_MB.to_owned(), limits.memory_mb.to_string()),
            ])),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// `/tmp`: a quarter of the memory limit (tmpfs pages count against it).
pub fn tmpfs_options(limits: ContainerLimits) -> String {
    format!(
        "rw,nosuid,nodev,mode=1777,size={}m",
        (limits.memory_mb / 4).max(8)
    )
}

/// `clawbox-<agent>-<session>`, in the characters Docker allows in names.
pub fn container_name(agent_id: &str, session_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("clawbox-{}-{}", clean(agent_id), clean(session_id))
}

fn bind(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The session's host directories, as mounted.
#[derive(Debug, Clone)]
struct Layout {
    inbound: PathBuf,
    outbound: PathBuf,
    workspace: PathBuf,
    agent_dir: PathBuf,
    global_dir: PathBuf,
}

impl Layout {
    fn of(spec: &RunnerSpec) -> Self {
        Layout {
            inbound: spec.mailbox_dir.join("inbound"),
            outbound: spec.mailbox_dir.join("outbound"),
            workspace: spec.workspace.clone(),
            agent_dir: spec.agent_dir.clone(),
            global_dir: spec.global_dir.clone(),
        }
    }
}

/// Makes the session ready to mount: the agent's `container.json` exists (it is mounted
/// read-only, so an agent cannot create one), and the runner user owns what it writes and can
/// read what it reads. Returns whether `groups/global` exists.
fn prepare(layout: &Layout, user: &RunnerUser, model_socket: &Path) -> std::io::Result<bool> {
    let container_json = layout.agent_dir.join(container_json::CONTAINER_JSON);
    match mailbox::private::create_new(&container_json) {
        Ok(mut f) => std::io::Write::write_all(&mut f, b"{}\n")?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    user.hand_over_tree(&layout.outbound, &[])?;
    user.hand_over_tree(&layout.workspace, &[])?;
    user.hand_over_tree(&layout.agent_dir, &[container_json::CONTAINER_JSON])?;
    // The runner reads its container.json (MCP servers) but must not own it; the agent folder
    // around it is 0700 and the runner's, so reading it exposes nothing to other users.
    user.make_readable(&container_json)?;
    user.make_readable(&layout.inbound)?;
    user.share_socket(model_socket)?;
    Ok(layout.global_dir.is_dir())
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> Result<R, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Start(format!("internal task failed: {e}")))?
        .map_err(RuntimeError::Start)
}

/// Force-removes a container (and its anonymous volumes); a missing one is fine.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        // 409: removal already in progress (another path removes it).
        Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => tracing::warn!(container = %short(id), "cannot remove container: {e}"),
    }
}

/// Container output, line by line, into the host's log (tagged with the session).
async fn follow_logs(docker: Docker, id: String, session_id: String) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut partial = Vec::new();
    while let Some(item) = stream.next().await {
        let Ok(output) = item else { break };
        partial.extend_from_slice(&output.into_bytes());
        while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if !line.is_empty() {
                tracing::info!(target: "runner", session_id = %session_id, "{line}");
            }
        }
    }
    if !partial.is_empty() {
        let line = String::from_utf8_lossy(&partial);
        tracing::info!(target: "runner", session_id = %session_id, "{}", line.trim_end());
    }
}

/// Waits for the container to end, reads how it ended (exit code, OOM kill), removes it, and
/// publishes the exit.
async fn monitor(
    docker: Docker,
    id: String,
    memory_mb: u64,
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<RunnerExit>>>>>,
    tx: watch::Sender<Option<RunnerExit>>,
) {
    let mut waited_code = None;
    loop {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let first = docker.wait_container(&id, Some(options)).next().await;
        match first {
            Some(Ok(r)) => {
                waited_code = Some(r.status_code);
                break;
            }
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                waited_code = Some(code);
                break;
            }
            // The wait broke (engine restart, connection reset): look before waiting again.
            Some(Err(e)) => {
                match docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => {
                        tracing::debug!(container = %short(&id), "wait interrupted ({e}); waiting again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    _ => break,
                }
            }
            None => break,
        }
    }
    let exit = match docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => {
            let state = c.state.unwrap_or_default();
            let code = state.exit_code.or(waited_code).unwrap_or(-1);
            let oom = state.oom_killed.unwrap_or(false);
            if oom && code == 0 {
                tracing::warn!(container = %short(&id), "a process in the container ran out of memory (limit {memory_mb} MB)");
            }
            classify_exit(code, oom, memory_mb)
        }
        Err(e) => match waited_code {
            Some(code) => classify_exit(code, false, memory_mb),
            None => RunnerExit::Lost(format!("cannot inspect the container: {e}")),
        },
    };
    remove(&docker, &id).await;
    if let Ok(mut map) = running.lock() {
        map.remove(&id);
    }
    // Nobody listening is fine: the supervisor may have moved on.
    let _ = tx.send(Some(exit));
}

/// How a container's end reads as a runner exit. With `init`, a runner killed by signal `n`
/// makes the container exit with `128 + n`, as does a container killed by the engine.
pub fn classify_exit(code: i64, oom_killed: bool, memory_mb: u64) -> RunnerExit {
    if oom_killed && code != 0 {
        return RunnerExit::OutOfMemory {
            limit_mb: memory_mb,
        };
    }
    match code {
        129..=192 => RunnerExit::Signal((code - 128) as i32),
        c => RunnerExit::Code(i32::try_from(c).unwrap_or(-1)),
    }
}

impl AgentRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn isolated(&self) -> bool {
        true
    }

    fn image(&self) -> Option<&str> {
        Some(&self.image)
    }

    fn shares_kernel(&self) -> bool {
        self.shares_kernel
    }

    fn start(&self, spec: RunnerSpec) -> BoxFuture<'_, Result<RunnerHandle, RuntimeError>> {
        Box::pin(self.start_container(spec))
    }

    fn stop(&self, id: &str, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let watch = self.lock().get(&id).cloned();
            let secs = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(secs).build();
            match self.docker.stop_container(&id, Some(options)).await {
                Ok(()) => {}
                // 304: already stopped; 404: already gone.
                Err(DockerError::DockerResponseServerError {
                    status_code: 304 | 404,
                    ..
                }) => {}
                Err(e) => {
                    return Err(RuntimeError::Control(format!(
                        "stopping {}: {e}",
                        short(&id)
                    )));
                }
            }
            match watch {
                // Ours: the monitor reads the exit and removes the container.
                Some(mut rx) => {
                    let _ = tokio::time::timeout(
                        grace + Duration::from_secs(10),
                        rx.wait_for(Option::is_some),
                    )
                    .await;
                }
                None => remove(&self.docker, &id).await,
            }
            Ok(())
        })
    }

    fn kill(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let ours = self.lock().contains_key(&id);
            if !ours {
                // Not started by this host (an orphan): nobody else will remove it.
                remove(&self.docker, &id).await;
                return Ok(());
            }
            let options = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            match self.docker.kill_container(&id, Some(options)).await {
                Ok(()) => Ok(()),
                // 404: gone; 409: not running.
                Err(DockerError::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => Ok(()),
                Err(e) => Err(RuntimeError::Control(format!(
                    "killing {}: {e}",
                    short(&id)
                ))),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<FoundRunner>, RuntimeError>> {
        Box::pin(async move {
            let options = ListContainersOptionsBuilder::default()
                .filters(&self.install_filter())
                .build();
            let list = self
                .docker
                .list_containers(Some(options))
                .await
                .map_err(|e| RuntimeError::Control(format!("listing containers: {e}")))?;
            Ok(list
                .into_iter()
                .filter_map(|c| {
                    Some(FoundRunner {
                        id: c.id?,
                        session_id: c.labels.and_then(|l| l.get(LABEL_SESSION).cloned()),
                    })
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn a_vm_boundary_is_told_by_the_kernel_or_docker_desktop() {
        let linux = "6.8.0-49-generic";
        for (kernel, os, local, shared) in [
            (
                Some(linux),
                Some("Ubuntu 24.04.1 LTS"),
                Some("6.8.0-49-generic\n"),
                true,
            ),
            (
                Some(linux),
                Some("Ubuntu 24.04.1 LTS"),
                Some("6.1.0-13-amd64"),
                false,
            ),
            // Docker Desktop on Linux or macOS: the engine runs in a VM of its own.
            (
                Some("6.10.14-linuxkit"),
                Some("Docker Desktop"),
                Some(linux),
                false,
            ),
            (Some(linux), Some("Docker Desktop"), Some(linux), false),
            (None, Some("Ubuntu"), Some(linux), false),
            (Some(linux), None, None, false),
        ] {
            assert_eq!(
                shares_kernel(kernel, os, local),
                shared,
                "{kernel:?} {os:?}"
            );
        }
    }

    #[test]
    fn exits_are_classified() {
        let table = [
            ((0, false), RunnerExit::Code(0)),
            ((1, false), RunnerExit::Code(1)),
            ((137, false), RunnerExit::Signal(9)),
            ((143, false), RunnerExit::Signal(15)),
            ((137, true), RunnerExit::OutOfMemory { limit_mb: 64 }),
            // A child was OOM-killed but the runner carried on and exited normally.
            ((0, true), RunnerExit::Code(0)),
        ];
        for ((code, oom), want) in table {
            assert_eq!(classify_exit(code, oom, 64), want, "{code} {oom}");
        }
    }

    #[test]
    fn names_use_only_allowed_characters() {
        assert_eq!(
            container_name("default", "sess-20260101-abc"),
            "clawbox-default-sess-20260101-abc"
        );
        assert_eq!(container_name("a/b", "c d"), "clawbox-a-b-c-d");
    }

    #[test]
    fn tmp_is_a_quarter_of_memory() {
        let limits = ContainerLimits {
            memory_mb: 1024,
            cpus: 1.0,
            pids: 256,
        };
        assert_eq!(tmpfs_options(limits), "rw,nosuid,nodev,mode=1777,size=256m");
    }
}
