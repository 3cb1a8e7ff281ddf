//! Each agent's MCP servers, started once through `agent-runner check-mcp`.

use super::*;

pub(super) async fn mcp_checks(config: &Config, agents: &[AgentInfo]) -> Vec<Check> {
    let runs = agents.iter().map(|agent| mcp_check_agent(config, agent));
    let per_agent = futures::future::join_all(runs).await;
    let checks: Vec<Check> = per_agent.into_iter().flatten().collect();
    if checks.is_empty() {
        return vec![Check::ok(
            "mcp servers",
            "no agent configures MCP servers of its own (the built-in tools need no check)",
        )];
    }
    checks
}

pub(super) async fn mcp_check_agent(config: &Config, agent: &AgentInfo) -> Vec<Check> {
    let agent_dir = config.groups_dir.join(&agent.folder);
    let file = agent_dir.join(crate::runtime::container_json::CONTAINER_JSON);
    let shown = file.display().to_string();
    if !file.exists() {
        return Vec::new();
    }
    let report = match run_check_mcp(config, &agent_dir).await {
        Ok(report) => report,
        Err(detail) => {
            return vec![Check::fail(
                format!("mcp {}", agent.id),
                format!("cannot check the MCP servers of {shown}: {detail}"),
                "build the binaries (`cargo build --workspace --bins`), or set CLAWBOX_RUNNER_BIN",
            )];
        }
    };
    let mut checks: Vec<Check> = report
        .problems
        .iter()
        .map(|problem| {
            Check::fail(
                format!("mcp {}", agent.id),
                problem.clone(),
                format!("fix {shown}"),
            )
        })
        .collect();
    for server in &report.servers {
        let name = format!("mcp {}/{}", agent.id, server.name);
        let check = match &server.error {
            Some(error) => Check::fail(
                name,
                error.clone(),
                format!(
                    "fix \"command\"/\"args\"/\"env\" of \"{}\" in {shown}, or remove the entry",
                    server.name
                ),
            ),
            None => {
                let listed = match server.tools.len() {
                    0 => "no tools".to_owned(),
                    n => format!("{n} tools ({})", server.tools.join(", ")),
                };
                let detail = format!(
                    "starts in {:.1} s with {listed}",
                    server.elapsed_ms as f64 / 1000.0
                );
                match config.runtime {
                    RuntimeKind::Process => Check::ok(name, detail),
                    // Checked on this machine; a container has only what its image holds.
                    RuntimeKind::Docker => Check::warn(
                        name,
                        format!("{detail} on this machine"),
                        format!(
                            "the docker runtime starts it inside {}, which has busybox, \
                             agent-runner and mcp-tools only: make sure `{}` exists there",
                            config
                                .container_image
                                .as_deref()
                                .unwrap_or("the agent image"),
                            server.command
                        ),
                    ),
                }
            }
        };
        checks.push(check);
    }
    checks
}

/// Runs `agent-runner check-mcp` for one agent folder, in a throw-away working directory, with
/// the environment a runner's servers get (PATH, HOME, LANG, TIMEZONE).
pub(super) async fn run_check_mcp(config: &Config, agent_dir: &Path) -> Result<McpCheck, String> {
    if !is_executable(&config.runner_bin) {
        return Err(format!(
            "agent-runner not found at {}",
            config.runner_bin.display()
        ));
    }
    let workspace = tempfile::Builder::new()
        .prefix("clawbox-doctor-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mut cmd = tokio::process::Command::new(&config.runner_bin);
    cmd.arg("check-mcp")
        .arg("--agent-dir")
        .arg(agent_dir)
        .arg("--workspace")
        .arg(workspace.path())
        .env_clear()
        .env(mailbox::env::TIMEZONE, config.timezone.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    let out = tokio::time::timeout(MCP_CHECK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "the check did not finish within {} s",
                MCP_CHECK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run {}: {e}", config.runner_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "agent-runner check-mcp failed ({}): {}",
            out.status,
            excerpt(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "agent-runner check-mcp printed something unexpected ({e}): {}",
            excerpt(&String::from_utf8_lossy(&out.stdout))
        )
    })
}
