//! `clawbox doctor`: checks what a host needs before it can answer anyone — the runtime (the
//! Docker engine and the agent image, or the process runtime, stated as unisolated), the model
//! endpoint and every model the agents use, the Telegram token, the data and groups
//! directories, the central database, and each agent's MCP servers — each with a level
//! ([`Level`]) and, when something is wrong, a hint that says what to do. A running host runs
//! them with its own configuration; without one, `clawbox doctor` runs them itself.
//!
//! Doctor only looks: it talks to the Docker engine read-only (version, image inspect), asks the
//! model endpoint for its model list and Telegram for `getMe`, writes and removes one probe
//! file per directory, and starts each MCP server once through `agent-runner check-mcp` (the
//! runner's own code) before stopping it again. Secrets never appear in its output: the
//! Telegram token is part of the Bot API URL, so errors are reported without their URL.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailbox::check::McpCheck;
use serde::{Deserialize, Serialize};

use crate::config::{Config, RuntimeKind};
use crate::db::DbError;
use crate::runtime::image::{self, Freshness, ImageSources};

/// One HTTP check (model list, `getMe`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// `agent-runner check-mcp` for one agent: its servers start concurrently, each within its own
/// startup timeout (30 s unless `container.json` says otherwise).
const MCP_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
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
        model_checks(config, &agents),
        telegram_check(config),
        mcp_checks(config, &agents),
    );
    let mut checks = runtime;
    checks.extend(model);
    checks.push(telegram);
    checks.push(dir_check("data dir", "DATA_DIR", &config.data_dir, true));
    checks.push(dir_check(
        "groups dir",
        "GROUPS_DIR",
        &config.groups_dir,
        false,
    ));
    checks.push(database);
    checks.extend(mcp);
    DoctorReport {
        ran_by_host,
        checks,
    }
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
        DbError::Sqlite(_) | DbError::Task(_) | DbError::Malformed(_) => Check::fail(
            "database",
            format!("{}: {err}", config.db_path().display()),
            "check the file's permissions; restore it from a backup if it is corrupt",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime

async fn runtime_checks(config: &Config) -> Vec<Check> {
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
fn runner_binaries(config: &Config) -> Vec<Check> {
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

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn docker_checks(config: &Config) -> Vec<Check> {
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
    let tag = &config.container_image;
    let sources = ImageSources::from_config(config);
    checks.push(match image::check(&docker, tag, &sources).await {
        Ok(Freshness::Current) => Check::ok("image", format!("{tag} matches the binaries")),
        Ok(Freshness::Unmanaged) => Check::ok(
            "image",
            format!(
                "{tag} is used as it is (built with container/Dockerfile, or no agent-runner \
                 next to clawbox to compare it with)"
            ),
        ),
        Ok(Freshness::Missing) if image::find_busybox().is_none() => Check::fail(
            "image",
            format!("{tag} is not built, and it cannot be: busybox-static is not installed"),
            "`apt-get install busybox-static`, then `make image` (or let `clawbox run` build it)",
        ),
        Ok(Freshness::Missing)
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
        Ok(Freshness::Missing) => Check::warn(
            "image",
            format!("{tag} is not built yet"),
            "`clawbox run` builds it at start (a few seconds, no registry), or run `make image`",
        ),
        Ok(Freshness::Stale) => Check::warn(
            "image",
            format!("{tag} was built from other binaries than the ones next to clawbox"),
            "`clawbox run` rebuilds it at start, or run `clawbox image build`",
        ),
        Err(e) => Check::fail(
            "image",
            format!("cannot inspect {tag}: {e}"),
            "check that the Docker engine answers (`docker image inspect`)",
        ),
    });
    checks
}

// ---------------------------------------------------------------------------------------------
// Model endpoint

async fn model_checks(config: &Config, agents: &[AgentInfo]) -> Vec<Check> {
    let url = format!("{}/models", config.openai_base_url);
    let http = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            return vec![Check::fail(
                "model endpoint",
                format!("cannot build an HTTP client: {e}"),
                "this is a bug or a broken TLS setup; please report it",
            )];
        }
    };
    let mut request = http.get(&url);
    if let Some(key) = &config.openai_api_key {
        request = request.bearer_auth(key);
    }
    let listing = match request.send().await {
        Err(e) => {
            return vec![Check::fail(
                "model endpoint",
                format!("cannot reach {url}: {}", error_chain(&e.without_url())),
                format!(
                    "is the model server running, and reachable from here? OPENAI_BASE_URL is \
                     {} (it includes /v1)",
                    config.openai_base_url
                ),
            )];
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            judge_model_list(
                &url,
                status.as_u16(),
                &body,
                config.openai_api_key.is_some(),
            )
        }
    };
    let mut checks = vec![listing.check];
    if let Some(models) = listing.models {
        checks.extend(model_usage_checks(config, agents, &models, &url));
    }
    checks
}

/// What the model list said.
struct Listing {
    check: Check,
    /// The served models, when there was a list.
    models: Option<Vec<String>>,
}

/// Judges `GET /models`. Pure, so the table of answers is a unit test.
fn judge_model_list(url: &str, status: u16, body: &str, has_key: bool) -> Listing {
    const NAME: &str = "model endpoint";
    let check = match status {
        200 => match model_ids(body) {
            Some(models) => {
                return Listing {
                    check: Check::ok(
                        NAME,
                        match models.len() {
                            1 => format!("{url} lists 1 model"),
                            n => format!("{url} lists {n} models"),
                        },
                    ),
                    models: Some(models),
                };
            }
            None => Check::warn(
                NAME,
                format!("{url} answered, but not with a model list"),
                "the models cannot be checked; OPENAI_BASE_URL should be the API base including \
                 /v1",
            ),
        },
        401 | 403 => Check::fail(
            NAME,
            format!(
                "{url} refused the request (HTTP {status}): {}",
                excerpt(body)
            ),
            if has_key {
                "check OPENAI_API_KEY"
            } else {
                "set OPENAI_API_KEY: this endpoint needs a key"
            },
        ),
        404 | 405 => Check::warn(
            NAME,
            format!("{url} has no model list (HTTP {status})"),
            "fine for servers without one, but the models cannot be checked; make sure \
             OPENAI_BASE_URL includes /v1",
        ),
        _ => Check::fail(
            NAME,
            format!("{url} answered HTTP {status}: {}", excerpt(body)),
            "the model service has a problem, or OPENAI_BASE_URL points at something else",
        ),
    };
    Listing {
        check,
        models: None,
    }
}

/// `data[].id` of an OpenAI model list.
fn model_ids(body: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let data = value.get("data")?.as_array()?;
    Some(
        data.iter()
            .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
            .collect(),
    )
}

/// One check per model in use: `DEFAULT_MODEL` and each agent's own.
fn model_usage_checks(
    config: &Config,
    agents: &[AgentInfo],
    served: &[String],
    url: &str,
) -> Vec<Check> {
    let mut used: Vec<(String, Vec<&str>)> = Vec::new();
    for agent in agents {
        let model = agent.model.as_deref().unwrap_or(&config.default_model);
        match used.iter_mut().find(|(m, _)| m == model) {
            Some((_, users)) => users.push(&agent.id),
            None => used.push((model.to_owned(), vec![&agent.id])),
        }
    }
    if !used.iter().any(|(m, _)| *m == config.default_model) {
        used.insert(0, (config.default_model.clone(), Vec::new()));
    }
    used.into_iter()
        .map(|(model, users)| {
            let name = format!("model {model}");
            let who = if users.is_empty() {
                "DEFAULT_MODEL".to_owned()
            } else {
                format!("used by {}", users.join(", "))
            };
            if is_listed(&model, served) {
                Check::ok(name, format!("served ({who})"))
            } else {
                let shown: Vec<&str> = served
                    .iter()
                    .take(HINT_MODELS)
                    .map(String::as_str)
                    .collect();
                let more = served.len().saturating_sub(HINT_MODELS);
                let available = match (shown.is_empty(), more) {
                    (true, _) => "it lists none".to_owned(),
                    (false, 0) => format!("it lists {}", shown.join(", ")),
                    (false, n) => format!("it lists {} and {n} more", shown.join(", ")),
                };
                Check::fail(
                    name,
                    format!("not listed by {url} ({who}); {available}"),
                    "set DEFAULT_MODEL, or the agent's model (`create-agent --agent-id <id> \
                     --model <name>`), to a listed one; an endpoint that accepts names it does \
                     not list (an alias) can ignore this",
                )
            }
        })
        .collect()
}

/// Listed as is, or as Ollama's `name:latest`.
fn is_listed(model: &str, served: &[String]) -> bool {
    served
        .iter()
        .any(|s| s == model || s.strip_suffix(":latest") == Some(model))
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

// ---------------------------------------------------------------------------------------------
// Telegram

async fn telegram_check(config: &Config) -> Check {
    const NAME: &str = "telegram";
    let Some(token) = &config.telegram_bot_token else {
        return Check::ok(NAME, "TELEGRAM_BOT_TOKEN is not set: no Telegram bot");
    };
    let api = &config.telegram_api_url;
    let http = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot build an HTTP client: {e}"),
                "this is a bug or a broken TLS setup; please report it",
            );
        }
    };
    // The token is part of the URL: never let it into a message.
    let response = match http.get(format!("{api}/bot{token}/getMe")).send().await {
        Ok(response) => response,
        Err(e) => {
            return Check::fail(
                NAME,
                format!(
                    "cannot reach the Bot API at {api}: {}",
                    redact(&error_chain(&e.without_url()), token)
                ),
                "check this machine's access to the Bot API (or TELEGRAM_API_URL)",
            );
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    judge_get_me(status, &body, token)
}

/// Judges Telegram's answer to `getMe`. Pure.
fn judge_get_me(status: u16, body: &str, token: &str) -> Check {
    const NAME: &str = "telegram";
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if status == 200 && value["ok"] == true {
        let bot = &value["result"];
        let username = bot["username"].as_str().unwrap_or("?");
        return Check::ok(
            NAME,
            format!("token valid: bot @{username} (id {})", bot["id"]),
        );
    }
    let description = value["description"]
        .as_str()
        .map_or_else(|| excerpt(body), str::to_owned);
    let description = redact(&description, token);
    match status {
        401 | 404 => Check::fail(
            NAME,
            format!("Telegram refused TELEGRAM_BOT_TOKEN (HTTP {status}: {description})"),
            "copy the token again from @BotFather (/mybots → API Token); it looks like \
             123456789:AA…",
        ),
        _ => Check::fail(
            NAME,
            format!("getMe failed (HTTP {status}: {description})"),
            "retry later; if it persists, check TELEGRAM_API_URL",
        ),
    }
}

fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "<TELEGRAM_BOT_TOKEN>")
    }
}

// ---------------------------------------------------------------------------------------------
// Directories

/// Whether the host can use `path` (`var` names its setting); `private`: it should be 0700.
fn dir_check(name: &str, var: &str, path: &Path, private: bool) -> Check {
    let fix = format!(
        "make {} a directory this user can write (owner and permissions), or point {var} \
         elsewhere",
        path.display()
    );
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => {
            Check::fail(name, format!("{} is not a directory", path.display()), fix)
        }
        Ok(meta) => {
            if let Err(e) = probe_write(path) {
                return Check::fail(
                    name,
                    format!("{} is not writable: {e}", path.display()),
                    fix,
                );
            }
            let mode = meta.permissions().mode() & 0o777;
            let free = free_bytes(path);
            let free_text = free.map_or_else(String::new, |b| format!(", {} free", bytes(b)));
            if private && mode & 0o077 != 0 {
                return Check::warn(
                    name,
                    format!(
                        "{} is writable{free_text}, but other users may read it (mode {mode:o})",
                        path.display()
                    ),
                    format!(
                        "it holds every conversation: `chmod 700 {}` (the host does this at start)",
                        path.display()
                    ),
                );
            }
            if let Some(b) = free.filter(|b| *b < LOW_DISK_BYTES) {
                return Check::warn(
                    name,
                    format!(
                        "{} is writable, but only {} are free",
                        path.display(),
                        bytes(b)
                    ),
                    "free some disk space: conversations and their workspaces live here",
                );
            }
            Check::ok(name, format!("{} is writable{free_text}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match creatable(path) {
            Ok(parent) => Check::ok(
                name,
                format!(
                    "{} does not exist yet; the host creates it (in {}, which is writable)",
                    path.display(),
                    parent.display()
                ),
            ),
            Err(detail) => Check::fail(
                name,
                format!(
                    "{} does not exist and cannot be created: {detail}",
                    path.display()
                ),
                fix,
            ),
        },
        Err(e) => Check::fail(name, format!("{}: {e}", path.display()), fix),
    }
}

/// Creates and removes a file in `dir`: the only sure test of writability (root ignores modes).
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".clawbox-doctor-{}", crate::db::random_id(8)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The nearest existing ancestor of a missing `path`, if it is a writable directory.
fn creatable(path: &Path) -> Result<PathBuf, String> {
    let mut current = path.parent();
    while let Some(dir) = current {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                return probe_write(dir)
                    .map(|()| dir.to_path_buf())
                    .map_err(|e| format!("{} is not writable: {e}", dir.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => current = dir.parent(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err("no existing parent directory".to_owned())
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we own; the path is a valid NUL-terminated string.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
}

fn bytes(n: u64) -> String {
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= GB {
        format!("{:.1} GB", n / GB)
    } else {
        format!("{:.0} MB", n / MB)
    }
}

// ---------------------------------------------------------------------------------------------
// MCP servers

async fn mcp_checks(config: &Config, agents: &[AgentInfo]) -> Vec<Check> {
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

async fn mcp_check_agent(config: &Config, agent: &AgentInfo) -> Vec<Check> {
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
                            config.container_image, server.command
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
async fn run_check_mcp(config: &Config, agent_dir: &Path) -> Result<McpCheck, String> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn model_list_answers() {
        let url = "http://m/v1/models";
        // (status, body, key set, level, models listed, detail contains)
        type Row<'a> = (u16, &'a str, bool, Level, Option<usize>, &'a str);
        let table: &[Row] = &[
            (
                200,
                r#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#,
                true,
                Level::Ok,
                Some(2),
                "lists 2 models",
            ),
            (
                200,
                "<html>hi</html>",
                true,
                Level::Warn,
                None,
                "not with a model list",
            ),
            (
                401,
                r#"{"error":"bad key"}"#,
                true,
                Level::Fail,
                None,
                "HTTP 401",
            ),
            (403, "", false, Level::Fail, None, "(empty body)"),
            (
                404,
                "not found",
                true,
                Level::Warn,
                None,
                "has no model list",
            ),
            (500, "boom", true, Level::Fail, None, "HTTP 500: boom"),
        ];
        for &(status, body, has_key, level, models, detail) in table {
            let listing = judge_model_list(url, status, body, has_key);
            assert_eq!(listing.check.level, level, "{status} {body}");
            assert_eq!(listing.models.map(|m| m.len()), models, "{status} {body}");
            assert!(
                listing.check.detail.contains(detail),
                "{status}: {}",
                listing.check.detail
            );
            assert_eq!(listing.check.hint.is_some(), level != Level::Ok);
        }
        let no_key = judge_model_list(url, 401, "", false);
        assert!(no_key.check.hint.unwrap().contains("set OPENAI_API_KEY"));
    }

    #[test]
    fn listed_models() {
        let served = vec!["gpt-4o".to_owned(), "llama3:latest".to_owned()];
        let table = [
            ("gpt-4o", true),
            ("llama3", true),
            ("llama3:latest", true),
            ("gpt-4", false),
            ("llama3:8b", false),
        ];
        for (model, want) in table {
            assert_eq!(is_listed(model, &served), want, "{model}");
        }
    }

    #[test]
    fn get_me_answers_never_show_the_token() {
        let token = "123:SECRET";
        let ok = judge_get_me(
            200,
            r#"{"ok":true,"result":{"id":42,"is_bot":true,"username":"clawbox_bot"}}"#,
            token,
        );
        assert_eq!(ok.level, Level::Ok);
        assert_eq!(ok.detail, "token valid: bot @clawbox_bot (id 42)");
        let table = [
            (
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
            ),
            (
                404,
                r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
            ),
            (500, "bad gateway for /bot123:SECRET/getMe"),
        ];
        for (status, body) in table {
            let check = judge_get_me(status, body, token);
            assert_eq!(check.level, Level::Fail, "{status}");
            assert!(!check.detail.contains("SECRET"), "{}", check.detail);
            assert!(check.hint.is_some());
        }
        assert!(
            judge_get_me(401, "", token)
                .hint
                .unwrap()
                .contains("@BotFather")
        );
    }

    #[test]
    fn directories() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            dir_check("data dir", "DATA_DIR", &data, true).level,
            Level::Ok
        );
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = dir_check("data dir", "DATA_DIR", &data, true);
        assert_eq!(open.level, Level::Warn, "{open:?}");
        assert!(open.hint.unwrap().contains("chmod 700"));
        // Groups are not private.
        assert_eq!(
            dir_check("groups dir", "GROUPS_DIR", &data, false).level,
            Level::Ok
        );
        // Missing, under a writable parent: created at start.
        let later = dir.path().join("later/data");
        let check = dir_check("data dir", "DATA_DIR", &later, true);
        assert_eq!(check.level, Level::Ok, "{check:?}");
        assert!(check.detail.contains("does not exist yet"));
        // A file where the directory should be, and a path below a file.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let check = dir_check("data dir", "DATA_DIR", &file, true);
        assert_eq!(check.level, Level::Fail);
        assert!(check.detail.contains("is not a directory"), "{check:?}");
        assert!(check.hint.unwrap().contains("DATA_DIR"));
        let below = file.join("data");
        let check = dir_check("data dir", "DATA_DIR", &below, true);
        assert_eq!(check.level, Level::Fail, "{check:?}");
    }
}
