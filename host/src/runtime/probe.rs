//! What this Docker engine accepts of the hardening and limits `docker.rs` applies, found out
//! once at start with a throw-away container, so that a refusal is a clear message at start
//! instead of every agent failing later. Owns the probe and the verdict; applying the verdict
//! is `docker.rs`'s business.
//!
//! Limits the engine cannot enforce (a missing cgroup controller: memory, swap, CPU quota,
//! pids) are dropped with a warning naming them — the agent still runs confined, only less
//! bounded. Confinement the engine refuses (dropping capabilities, `no-new-privileges`, a
//! read-only root, no network, a non-root user, the tmpfs `/tmp`) stops the host with a hint:
//! running agents without it would break the promise of a sandbox.
//!
//! The probe costs about half a second (a container start), so its verdict is kept in
//! `DATA_DIR/docker-probe.json`, keyed by everything it depends on: the engine (id, version,
//! kernel, cgroup version, security options), the image and the user and limits probed. Any
//! change probes again.

use std::collections::HashMap;
use std::time::Instant;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, SystemInfo};
use bollard::query_parameters::{RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder};
use futures::StreamExt;

use super::ownership::RunnerUser;
use crate::HostError;
use crate::config::ContainerLimits;

/// The optional limits the engine accepted (confinement is not optional: see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub memory: bool,
    pub memory_swap: bool,
    pub cpus: bool,
    pub pids: bool,
    pub init: bool,
}

impl Accepted {
    const ALL: Accepted = Accepted {
        memory: true,
        memory_swap: true,
        cpus: true,
        pids: true,
        init: true,
    };
}

/// One thing a container may be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Memory,
    MemorySwap,
    Cpus,
    Pids,
    Init,
    CapDropAll,
    NoNewPrivileges,
    ReadOnlyRoot,
    TmpfsTmp,
    NetworkNone,
    NonRootUser,
}

impl Feature {
    const ALL: [Feature; 11] = [
        Feature::Memory,
        Feature::MemorySwap,
        Feature::Cpus,
        Feature::Pids,
        Feature::Init,
        Feature::CapDropAll,
        Feature::NoNewPrivileges,
        Feature::ReadOnlyRoot,
        Feature::TmpfsTmp,
        Feature::NetworkNone,
        Feature::NonRootUser,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Feature::Memory => "memory limit (cgroup memory controller)",
            Feature::MemorySwap => "swap limit (cgroup memory.memsw; kernel swapaccount=1)",
            Feature::Cpus => "CPU limit (cgroup CPU quota)",
            Feature::Pids => "pids limit (cgroup pids controller)",
            Feature::Init => "init process (docker-init)",
            Feature::CapDropAll => "dropping all capabilities (cap-drop ALL)",
            Feature::NoNewPrivileges => "security option no-new-privileges",
            Feature::ReadOnlyRoot => "read-only root filesystem",
            Feature::TmpfsTmp => "tmpfs /tmp",
            Feature::NetworkNone => "network mode none",
            Feature::NonRootUser => "non-root user",
        }
    }

    /// Whether the host may run agents without it (a limit, not confinement).
    pub fn optional(self) -> bool {
        match self {
            Feature::Memory
            | Feature::MemorySwap
            | Feature::Cpus
            | Feature::Pids
            | Feature::Init => true,
            Feature::CapDropAll
            | Feature::NoNewPrivileges
            | Feature::ReadOnlyRoot
            | Feature::TmpfsTmp
            | Feature::NetworkNone
            | Feature::NonRootUser => false,
        }
    }

    fn apply(
        self,
        host: &mut HostConfig,
        body: &mut ContainerCreateBody,
        user: &RunnerUser,
        limits: ContainerLimits,
    ) {
        match self {
            Feature::Memory => host.memory = Some(limits.memory_bytes()),
            Feature::MemorySwap => {
                // Docker only takes a swap limit together with a memory limit.
                host.memory = Some(limits.memory_bytes());
                host.memory_swap = Some(limits.memory_bytes());
            }
            Feature::Cpus => host.nano_cpus = Some(limits.nano_cpus()),
            Feature::Pids => host.pids_limit = Some(limits.pids),
            Feature::Init => host.init = Some(true),
            Feature::CapDropAll => host.cap_drop = Some(vec!["ALL".into()]),
            Feature::NoNewPrivileges => host.security_opt = Some(vec!["no-new-privileges".into()]),
            Feature::ReadOnlyRoot => host.readonly_rootfs = Some(true),
            Feature::TmpfsTmp => {
                host.tmpfs = Some(HashMap::from([(
                    "/tmp".to_owned(),
                    super::docker::tmpfs_options(limits),
                )]));
            }
            Feature::NetworkNone => host.network_mode = Some("none".into()),
            Feature::NonRootUser => body.user = Some(user.docker_user()),
        }
    }
}

/// Which limits the engine says (in `docker info`) it cannot enforce. Docker would accept them
/// and silently drop them with a warning, so they are found here rather than by the probe.
pub fn unsupported_by_info(info: &SystemInfo) -> Vec<Feature> {
    let mut out = Vec::new();
    for (supported, feature) in [
        (info.memory_limit, Feature::Memory),
        (info.swap_limit, Feature::MemorySwap),
        (info.cpu_cfs_quota, Feature::Cpus),
        (info.pids_limit, Feature::Pids),
    ] {
        if supported == Some(false) {
            out.push(feature);
        }
    }
    out
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    key: String,
    accepted: Accepted,
}

/// [`run`], unless `cache` holds a verdict for the same engine, image, user and limits.
pub async fn run_cached(
    docker: &Docker,
    cache: &std::path::Path,
    image: &str,
    user: &RunnerUser,
    limits: ContainerLimits,
    info: &SystemInfo,
) -> Result<Accepted, HostError> {
    let image_id = docker
        .inspect_image(image)
        .await
        .map_err(|e| HostError::Docker(format!("cannot inspect image {image}: {e}")))?
        .id
        .unwrap_or_default();
    let key = format!(
        "{}|{}|{}|{:?}|{:?}|{image_id}|{}|{limits:?}",
        info.id.as_deref().unwrap_or(""),
        info.server_version.as_deref().unwrap_or(""),
        info.kernel_version.as_deref().unwrap_or(""),
        info.cgroup_version,
        info.security_options,
        user.docker_user(),
    );
    if let Ok(text) = std::fs::read_to_string(cache)
        && let Ok(cached) = serde_json::from_str::<Cached>(&text)
        && cached.key == key
    {
        tracing::debug!(
            "Docker engine probe: using the verdict in {}",
            cache.display()
        );
        warn_cached(cached.accepted);
        return Ok(cached.accepted);
    }
    let accepted = run(docker, image, user, limits, info).await?;
    let cached = Cached { key, accepted };
    match serde_json::to_string(&cached) {
        Ok(text) => {
            if let Err(e) = std::fs::write(cache, text) {
                tracing::warn!("cannot keep the probe verdict in {}: {e}", cache.display());
            }
        }
        Err(e) => tracing::warn!("cannot encode the probe verdict: {e}"),
    }
    Ok(accepted)
}

/// Repeats the warnings of a cached verdict, so every start names what is missing.
fn warn_cached(accepted: Accepted) {
    for (ok, feature) in [
        (accepted.memory, Feature::Memory),
        (
            accepted.memory_swap || !accepted.memory,
            Feature::MemorySwap,
        ),
        (accepted.cpus, Feature::Cpus),
        (accepted.pids, Feature::Pids),
        (accepted.init, Feature::Init),
    ] {
        if !ok {
            tracing::warn!(
                "this Docker engine refuses the {} (probed earlier); agent containers run without it",
                feature.describe()
            );
        }
    }
}

/// Runs the probe; `Ok` says which optional limits to use, `Err` names refused confinement.
pub async fn run(
    docker: &Docker,
    image: &str,
    user: &RunnerUser,
    limits: ContainerLimits,
    info: &SystemInfo,
) -> Result<Accepted, HostError> {
    let started = Instant::now();
    let mut refused: Vec<(Feature, String)> = unsupported_by_info(info)
        .into_iter()
        .map(|f| (f, "the engine reports no support for it".to_owned()))
        .collect();
    let wanted: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| !refused.iter().any(|(r, _)| r == f))
        .collect();
    match try_container(docker, image, user, limits, &wanted).await {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("Docker engine: {w}");
            }
        }
        Err(all_err) => {
            // Something was refused: find out what, one feature at a time.
            try_container(docker, image, user, limits, &[])
                .await
                .map_err(|e| {
                    HostError::Docker(format!(
                        "cannot run even a plain container from image {image}: {e} (the probe for: {all_err})"
                    ))
                })?;
            for f in wanted {
                if let Err(e) = try_container(docker, image, user, limits, &[f]).await {
                    refused.push((f, e));
                }
            }
            if refused.is_empty() {
                return Err(HostError::Docker(format!(
                    "the Docker engine refuses the hardening clawbox applies, though no single option alone: {all_err}"
                )));
            }
        }
    }
    let verdict = verdict(&refused)?;
    if refused.is_empty() {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Docker engine accepts every limit and hardening option"
        );
    }
    Ok(verdict)
}

/// Turns refusals into the limits to use, or the error that stops the host.
pub fn verdict(refused: &[(Feature, String)]) -> Result<Accepted, HostError> {
    let fatal: Vec<String> = refused
        .iter()
        .filter(|(f, _)| !f.optional())
        .map(|(f, why)| format!("{} ({why})", f.describe()))
        .collect();
    if !fatal.is_empty() {
        return Err(HostError::Docker(format!(
            "this Docker engine refuses confinement clawbox will not run agents without: {}. \
             Use a Docker engine with these features (a recent dockerd on Linux), or \
             CONTAINER_RUNTIME=process to run agents unisolated",
            fatal.join("; ")
        )));
    }
    let mut accepted = Accepted::ALL;
    for (f, why) in refused {
        tracing::warn!(
            "this Docker engine refuses the {}: {why}; agent containers run without it",
            f.describe()
        );
        match f {
            Feature::Memory => {
                accepted.memory = false;
                accepted.memory_swap = false;
            }
            Feature::MemorySwap => accepted.memory_swap = false,
            Feature::Cpus => accepted.cpus = false,
            Feature::Pids => accepted.pids = false,
            Feature::Init => accepted.init = false,
            Feature::CapDropAll
            | Feature::NoNewPrivileges
            | Feature::ReadOnlyRoot
            | Feature::TmpfsTmp
            | Feature::NetworkNone
            | Feature::NonRootUser => {}
        }
    }
    Ok(accepted)
}

/// Creates, runs (`/bin/true`) and removes a container with `features`; returns the engine's
/// warnings, or why it failed.
async fn try_container(
    docker: &Docker,
    image: &str,
    user: &RunnerUser,
    limits: ContainerLimits,
    features: &[Feature],
) -> Result<Vec<String>, String> {
    let mut host = HostConfig {
        auto_remove: Some(false),
        ..Default::default()
    };
    let mut body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec!["/bin/true".into()]),
        // The image's default user is already unprivileged; the baseline runs as root to tell
        // "non-root refused" apart.
        user: Some("0:0".into()),
        labels: Some(HashMap::from([(
            "clawbox.probe".to_owned(),
            "1".to_owned(),
        )])),
        ..Default::default()
    };
    for f in features {
        f.apply(&mut host, &mut body, user, limits);
    }
    body.host_config = Some(host);
    let created = docker
        .create_container(None, body)
        .await
        .map_err(|e| e.to_string())?;
    let id = created.id;
    let outcome = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| e.to_string())?;
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match docker.wait_container(&id, Some(options)).next().await {
            Some(Ok(_)) | None => Ok(()),
            Some(Err(DockerError::DockerContainerWaitError { code, error })) => {
                Err(format!("the probe container exited with {code} {error}"))
            }
            Some(Err(e)) => Err(e.to_string()),
        }
    }
    .await;
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_container(&id, Some(options)).await {
        tracing::warn!("cannot remove the probe container: {e}");
    }
    outcome.map(|()| created.warnings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn missing_controllers_are_read_from_info() {
        let info = SystemInfo {
            memory_limit: Some(true),
            swap_limit: Some(false),
            cpu_cfs_quota: Some(true),
            pids_limit: Some(false),
            ..Default::default()
        };
        assert_eq!(
            unsupported_by_info(&info),
            vec![Feature::MemorySwap, Feature::Pids]
        );
    }

    #[test]
    fn refused_limits_are_dropped_and_refused_confinement_stops_the_host() {
        assert_eq!(verdict(&[]).unwrap(), Accepted::ALL);
        let limits_only = [
            (Feature::MemorySwap, "no swap accounting".to_owned()),
            (Feature::Cpus, "no quota".to_owned()),
        ];
        assert_eq!(
            verdict(&limits_only).unwrap(),
            Accepted {
                memory_swap: false,
                cpus: false,
                ..Accepted::ALL
            }
        );
        let memory = [(Feature::Memory, "no memory cgroup".to_owned())];
        assert_eq!(
            verdict(&memory).unwrap(),
            Accepted {
                memory: false,
                memory_swap: false,
                ..Accepted::ALL
            }
        );
        let fatal = [
            (Feature::Pids, "no pids cgroup".to_owned()),
            (Feature::NoNewPrivileges, "unknown option".to_owned()),
        ];
        let err = verdict(&fatal).unwrap_err().to_string();
        assert!(err.contains("no-new-privileges (unknown option)"), "{err}");
        assert!(
            !err.contains("pids"),
            "only the fatal ones are named: {err}"
        );
        assert!(err.contains("CONTAINER_RUNTIME=process"), "{err}");
    }
}
