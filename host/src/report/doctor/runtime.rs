//! The runtime: the Docker engine and the agent image, or the process runtime (stated as
//! unisolated), and the runner binaries.

use super::*;

pub(super) async fn runtime_checks(config: &Config) -> Vec<Check> {
    match config.runtime {
        RuntimeKind::Process => {
            let mut checks = vec![Check::warn(
                "runtime",
                "process: agents run as child processes of the host, NOT isolated (their shell \
                 commands run as your user)",
                "fine for development; set CONTAINER_RUNTIME=docker for one hardened container \
                 per conversation",
            )];
            checks.extend(runner_binaries(config));
            checks
        }
        RuntimeKind::Docker => docker_checks(config).await,
    }
}

/// The process runtime starts these binaries directly.
pub(super) fn runner_binaries(config: &Config) -> Vec<Check> {
    let mcp_tools = config.runner_bin.with_file_name("mcp-tools");
    [
        ("agent-runner", config.runner_bin.clone()),
        ("mcp-tools", mcp_tools),
    ]
    .into_iter()
    .map(|(what, path)| {
        if is_executable(&path) {
            Check::ok(what, format!("{}", path.display()))
        } else {
            Check::fail(
                what,
                format!("{} is missing or not executable", path.display()),
                "build it (`cargo build --workspace --bins`), or set CLAWBOX_RUNNER_BIN to the \
                 agent-runner next to mcp-tools",
            )
        }
    })
    .collect()
}

pub(super) async fn docker_checks(config: &Config) -> Vec<Check> {
    let where_ = config
        .docker_host
        .as_deref()
        .unwrap_or("unix:///var/run/docker.sock");
    let docker = match crate::runtime::docker::connect_engine(config.docker_host.as_deref()).await {
        Ok(docker) => docker,
        Err(e) => {
            return vec![Check::fail(
                "runtime",
                format!("docker: {e}"),
                "start dockerd (and let this user use it: the `docker` group), set DOCKER_HOST, \
                 or set CONTAINER_RUNTIME=process to run agents without isolation",
            )];
        }
    };
    let version = docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "(version unknown)".to_owned());
    let mut checks = vec![Check::ok(
        "runtime",
        format!("docker: engine {version} at {where_}"),
    )];
    let sources = ImageSources::from_config(config);
    let choice = ImageChoice::from_config(config);
    // The same decision as the host's start and `clawbox image build`: the same tag.
    let resolved = match image::resolve(&docker, &choice, &sources).await {
        Ok(resolved) => resolved,
        Err(e @ ImageError::Missing { .. }) => {
            checks.push(Check::fail(
                "image",
                format!("the agent image cannot be built: {e}"),
                "build the binaries (`cargo build --release --workspace --bins`) and run `make \
                 image`, or set CLAWBOX_RUNNER_BIN",
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "image",
                format!("cannot check the agent image: {e}"),
                "check that the Docker engine answers (`docker image ls`)",
            ));
            return checks;
        }
    };
    let tag = &resolved.tag;
    checks.push(match resolved.freshness {
        Freshness::Current => Check::ok("image", format!("{tag} matches the binaries")),
        Freshness::Unmanaged => Check::ok(
            "image",
            format!(
                "{tag} is used as it is (built with container/Dockerfile, or no agent-runner \
                 next to clawbox to compare it with)"
            ),
        ),
        Freshness::Missing if image::find_busybox().is_none() => Check::fail(
            "image",
            format!("{tag} is not built, and it cannot be: busybox-static is not installed"),
            "`apt-get install busybox-static`, then `make image` (or let `clawbox run` build it)",
        ),
        Freshness::Missing
            if !is_executable(&sources.runner_bin) || !is_executable(&sources.mcp_tools_bin) =>
        {
            Check::fail(
                "image",
                format!(
                    "{tag} is not built, and it cannot be: {} or {} is missing",
                    sources.runner_bin.display(),
                    sources.mcp_tools_bin.display()
                ),
                "build the binaries (`cargo build --release --workspace --bins`) and run `make \
                 image`, or set CLAWBOX_RUNNER_BIN",
            )
        }
        Freshness::Missing => Check::warn(
            "image",
            format!("{tag} is not built yet"),
            "`clawbox run` builds it at start (a few seconds, no registry), or run `make image`",
        ),
        Freshness::Stale => Check::warn(
            "image",
            format!("{tag} was built from other binaries than the ones next to clawbox"),
            "`clawbox run` rebuilds it at start, or run `clawbox image build`",
        ),
    });
    checks
}
