//! `clawbox doctor`: checks what a host needs before it can answer anyone — the runtime (the
//! Docker engine and the agent image, or the process runtime, stated as unisolated), the model
//! endpoint and every model the agents use, the Telegram token, the data and groups
//! directories, the central database, `.env` (misspelt variables) and each agent's
//! `container.json` and MCP servers — each with a level
//! ([`Level`]) and, when something is wrong, a hint that says what to do. A running host runs
//! them with its own configuration; without one, `clawbox doctor` runs them itself.
//!
//! Doctor only looks: it talks to the Docker engine read-only (version, image inspect), asks the
//! model endpoint for its model list and Telegram for `getMe`, writes and removes one probe
//! file per directory, and starts each MCP server once through `agent-runner check-mcp` (the
//! runner's own code) before stopping it again. Secrets never appear in its output: the
//! Telegram token is part of the Bot API URL, so errors are reported without their URL.

mod dirs;
pub mod files;
mod mcp;
mod model;
mod runtime;
mod telegram;
#[cfg(test)]
mod tests;

use dirs::{agent_folders_check, dir_check, disk_use_check};
use files::{container_checks, env_checks};
use mcp::mcp_checks;
use model::model_checks;
pub use model::{is_listed, model_ids};
use runtime::runtime_checks;
use telegram::telegram_check;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailbox::check::McpCheck;
use serde::{Deserialize, Serialize};

use crate::config::{Config, RuntimeKind};
use crate::db::DbError;
use crate::runtime::image::{self, Freshness, ImageChoice, ImageError, ImageSources};

/// One HTTP check (model list, `getMe`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// `agent-runner check-mcp` for one agent: its servers start concurrently, each within its own
/// startup timeout (30 s unless `container.json` says otherwise).
const MCP_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// The model check at the start of `clawbox run` and `clawbox chat`: short, as the start does
/// not wait for a model that may come up later.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Less free space than this in `DATA_DIR` is worth a warning.
const LOW_DISK_BYTES: u64 = 512 * 1024 * 1024;
/// Models named in a hint, at most.
const HINT_MODELS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, but not as well as it could, or not verifiably.
    Warn,
    /// The host cannot work as configured; `clawbox doctor` exits with status 1.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked: `runtime`, `image`, `model endpoint`, `model gpt-4o`, `telegram`,
    /// `data dir`, `groups dir`, `database`, `mcp <agent>/<server>`, …
    pub name: String,
    pub level: Level,
    pub detail: String,
    /// What to do about a warning or failure.
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            level: Level::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            level: Level::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            level: Level::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// Whether a running host ran the checks (with its configuration) or the command itself.
    pub ran_by_host: bool,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Fail)
    }
}

/// An agent as doctor needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentInfo {
    pub id: String,
    pub folder: String,
    /// `None`: `DEFAULT_MODEL`.
    pub model: Option<String>,
}

impl From<crate::db::AgentGroup> for AgentInfo {
    fn from(agent: crate::db::AgentGroup) -> Self {
        AgentInfo {
            id: agent.id,
            folder: agent.folder,
            model: agent.model,
        }
    }
}

/// What the central database gave for the checks.
#[derive(Debug)]
pub enum Agents {
    /// Read from the database.
    Known(Vec<AgentInfo>),
    /// No database or an unusable one: the checks use the `default` agent (its folder is
    /// `default`) and report the database's problem.
    Unavailable(DbError),
}

/// Runs every check; independent ones at the same time.
pub async fn run(config: &Config, agents: Agents, ran_by_host: bool) -> DoctorReport {
    let (database, agents) = match agents {
        Agents::Known(agents) => (
            Check::ok(
                "database",
                format!("{} readable", config.db_path().display()),
            ),
            agents,
        ),
        Agents::Unavailable(err) => (database_problem(config, &err), vec![default_agent()]),
    };
    let (runtime, model, telegram, mcp) = tokio::join!(
        runtime_checks(config),
        model_checks(config, &agents, HTTP_TIMEOUT),
        telegram_check(config),
        mcp_checks(config, &agents),
    );
    let mut checks = runtime;
    checks.extend(model);
    checks.push(telegram);
    checks.push(dir_check("data dir", "DATA_DIR", &config.data_dir, true));
    let data_dir = config.data_dir.clone();
    let retention = config.retention_days;
    if let Ok(Some(check)) =
        tokio::task::spawn_blocking(move || disk_use_check(&data_dir, retention)).await
    {
        checks.push(check);
    }
    checks.push(dir_check(
        "groups dir",
        "GROUPS_DIR",
        &config.groups_dir,
        false,
    ));
    checks.extend(agent_folders_check(&config.groups_dir, &agents));
    checks.push(database);
    let env_file = config.home.join(crate::config::ENV_FILE);
    checks.extend(env_checks(Some(env_file.as_path()).filter(|p| p.is_file())));
    checks.extend(container_checks(config, &agents));
    checks.extend(mcp);
    DoctorReport {
        ran_by_host,
        checks,
    }
}

/// The agents the central database lists, read without a host; [`Agents::Unavailable`] when
/// it cannot be read (or does not exist yet).
pub async fn agents_on_file(config: &Config) -> Agents {
    let db_path = config.db_path();
    let read = tokio::task::spawn_blocking(move || {
        let conn = crate::db::open_read_only(&db_path)?;
        crate::db::agent_groups(&conn)
    })
    .await;
    match read {
        Ok(Ok(agents)) => Agents::Known(agents.into_iter().map(AgentInfo::from).collect()),
        Ok(Err(e)) => Agents::Unavailable(e),
        Err(e) => Agents::Unavailable(DbError::Task(e.to_string())),
    }
}

/// The start-up check of `clawbox run` and `clawbox chat`: doctor's model checks (the
/// endpoint answers, every model in use is listed), reduced to ONE line that says what is wrong
/// and which variable fixes it; `None` when nothing is. Warnings (an endpoint without a model
/// list) are left to `clawbox doctor`: the start should not nag about what may be fine.
pub async fn startup_model_problem(config: &Config) -> Option<String> {
    let agents = match agents_on_file(config).await {
        Agents::Known(agents) => agents,
        Agents::Unavailable(_) => vec![default_agent()],
    };
    startup_line(&model_checks(config, &agents, STARTUP_TIMEOUT).await)
}

/// The failed checks on one line: `model gpt-4o: not listed by … — set DEFAULT_MODEL …`.
fn startup_line(checks: &[Check]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .map(|c| match &c.hint {
            Some(hint) => format!("{}: {} — {hint}", c.name, c.detail),
            None => format!("{}: {}", c.name, c.detail),
        })
        .collect();
    if failed.is_empty() {
        return None;
    }
    Some(format!(
        "the model will not answer: {} (`clawbox doctor` checks everything)",
        failed.join("; ")
    ))
}

fn default_agent() -> AgentInfo {
    AgentInfo {
        id: crate::db::bootstrap::DEFAULT_AGENT.to_owned(),
        folder: crate::db::bootstrap::DEFAULT_AGENT.to_owned(),
        model: None,
    }
}

fn database_problem(config: &Config, err: &DbError) -> Check {
    match err {
        DbError::Absent(_) => Check::ok(
            "database",
            format!(
                "{} does not exist yet; the first start creates it",
                config.db_path().display()
            ),
        ),
        DbError::TooOld { .. } => Check::warn(
            "database",
            err.to_string(),
            "start the host once (`clawbox run`); it upgrades the schema",
        ),
        DbError::TooNew { .. } => Check::fail(
            "database",
            err.to_string(),
            "run the clawbox version that wrote it, or a newer one",
        ),
        DbError::Sqlite(_) | DbError::Task(_) | DbError::Malformed(_) | DbError::Io { .. } => {
            Check::fail(
                "database",
                format!("{}: {err}", config.db_path().display()),
                "check the file's permissions; restore it from a backup if it is corrupt",
            )
        }
    }
}

/// The start of an error body, on one line.
fn excerpt(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        let mut short: String = line.chars().take(199).collect();
        short.push('…');
        short
    } else if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// An error with its sources (`error sending request: connection refused`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
