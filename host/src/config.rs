//! The host's configuration: every setting read once from the environment (after `.env` is
//! loaded) into one typed [`Config`], with its default here and nowhere else. An invalid value is
//! a startup error naming the variable — never a silent fallback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

/// How the host writes its log lines (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `text` (the default): one readable line per event; coloured only on a terminal.
    Text,
    /// `json`: one JSON object per event (`timestamp`, `level`, `target`, `fields`, `span`).
    Json,
}

/// Which runtime runs the agent of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// `agent-runner` as a child process of the host: no isolation (development, no Docker).
    Process,
    /// One container per session (bollard).
    Docker,
}

impl RuntimeKind {
    /// The `CONTAINER_RUNTIME` value.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
        }
    }

    /// Whether agents are sandboxed from the host.
    pub fn isolated(self) -> bool {
        match self {
            RuntimeKind::Process => false,
            RuntimeKind::Docker => true,
        }
    }
}

/// `MAILBOX_JOURNAL`: how session mailboxes keep their journal (docs/architecture.md,
/// "Journal mode and fsyncs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSetting {
    /// WAL where host and runner share a kernel, the rollback journal across a VM boundary.
    Auto,
    /// Always WAL (`synchronous=NORMAL`): no fsync per commit.
    Wal,
    /// Always the rollback journal (`synchronous=FULL`): every commit survives a power cut.
    Delete,
}

impl JournalSetting {
    /// The mode to use, given whether the runtime's runners share the host's kernel.
    pub fn resolve(self, shares_kernel: bool) -> mailbox::Journal {
        match (self, shares_kernel) {
            (JournalSetting::Wal, _) | (JournalSetting::Auto, true) => mailbox::Journal::Wal,
            (JournalSetting::Delete, _) | (JournalSetting::Auto, false) => mailbox::Journal::Delete,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The config home ([`Home`]): where `.env` lives and what relative paths (`DATA_DIR`,
    /// `GROUPS_DIR`, `CLAWBOX_SKILLS_DIR`) resolve against, whatever the working directory.
    pub home: PathBuf,
    /// `DATA_DIR` (default `./data`): central DB, sessions, admin socket, logs.
    pub data_dir: PathBuf,
    /// `GROUPS_DIR` (default `./groups`): one folder per agent.
    pub groups_dir: PathBuf,
    /// `ASSISTANT_NAME` (default `Andy`): display name of the default agent.
    pub assistant_name: String,
    /// `DEFAULT_MODEL` (default `gpt-4o`).
    pub default_model: String,
    /// `OPENAI_BASE_URL` (default `https://api.openai.com/v1`), including `/v1`.
    pub openai_base_url: String,
    /// `OPENAI_API_KEY` (no default; local servers often need none).
    pub openai_api_key: Option<String>,
    /// `TIMEZONE` (default `UTC`): IANA zone the agent sees dates in.
    pub timezone: Tz,
    /// `CONTAINER_RUNTIME` (`docker` | `process`, default `docker`).
    pub runtime: RuntimeKind,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `CONTAINER_IMAGE`: the docker runtime's image, rebuilt in place when the binaries
    /// change. Unset (the default): `clawbox-agent:<hash of what goes into it>`, one tag per
    /// version (`runtime::image`).
    pub container_image: Option<String>,
    /// `CONTAINER_MEMORY_MB` (default 1024), `CONTAINER_CPUS` (default 1.0), `CONTAINER_PIDS`
    /// (default 256): the limits of every agent container; an agent's `container.json` may
    /// override them (`memory_mb`, `cpus`, `pids_limit`).
    pub container_limits: ContainerLimits,
    /// `MAX_CONCURRENT_CONTAINERS` (default 8): containers (runner processes, on the process
    /// runtime) alive at once; further sessions wait for a slot in the order they asked for one.
    pub max_concurrent_runners: usize,
    /// `DOCKER_HOST` (default: the local engine's socket, `/var/run/docker.sock`).
    pub docker_host: Option<String>,
    /// `MAILBOX_JOURNAL` (`auto` | `wal` | `delete`, default `auto`).
    pub mailbox_journal: JournalSetting,
    /// `TELEGRAM_BOT_TOKEN`: enables the Telegram channel.
    pub telegram_bot_token: Option<String>,
    /// `TELEGRAM_API_URL` (default `https://api.telegram.org`): the Bot API server; tests point it at a fake.
    pub telegram_api_url: String,
    /// `TELEGRAM_POLL_TIMEOUT_S` (default 30): how long one `getUpdates` long poll waits.
    pub telegram_poll_timeout: Duration,
    /// `TELEGRAM_MAX_FILE_MB` (default 20, the Bot API's download limit): photos, documents and
    /// voice notes larger than this are not downloaded; the agent is told they were skipped.
    pub telegram_max_file_bytes: u64,
    /// `TELEGRAM_ANNOUNCE_UNKNOWN` (default `false`): when the bot is added to a group no agent
    /// is wired to, say so there once, with the command that wires it. Off by default: the hint
    /// is public, and the log and `clawbox dropped` carry the same command.
    pub telegram_announce_unknown: bool,
    /// `MAX_TRIES` (default 5): attempts per message before it is failed.
    pub max_tries: u32,
    /// `BACKOFF_BASE_MS` (default 5000): wait before retry n is `base * 2^(n-1)`.
    pub backoff_base: Duration,
    /// `MAX_DELIVERY_ATTEMPTS` (default 3): sends of one reply before it is reported failed.
    pub max_delivery_attempts: u32,
    /// `MAX_REPLY_CHARS` (default 32000, at least 500): a longer reply is shown as its beginning
    /// with a note, and the whole text goes along as a file (`session::outlet::cap_reply`).
    pub max_reply_chars: usize,
    /// `IDLE_TIMEOUT_MS` (default 300000): a runner with nothing to do exits after this long.
    pub idle_timeout: Duration,
    /// `CLAIM_STUCK_MS` (default 60000): a runner holding a claim whose heartbeat is older than
    /// this (or than its running tool's declared timeout) is stopped and the claim re-queued.
    pub claim_stuck: Duration,
    /// `HEARTBEAT_MS` (default 2000): how often the runner marks itself alive.
    pub heartbeat: Duration,
    /// `MAX_STEPS` (default 20): model requests per turn.
    pub max_steps: u32,
    /// `MODEL_TIMEOUT_MS` (default 120000): one model request.
    pub model_timeout: Duration,
    /// `MODEL_RETRIES` (default 3): retries of a failed model request.
    pub model_retries: u32,
    /// `MODEL_BACKOFF_MS` (default 500): first wait between model retries, doubling each time.
    pub model_backoff: Duration,
    /// `TOOL_TIMEOUT_MS` (default 600000): one tool call.
    pub tool_timeout: Duration,
    /// `TASK_SCRIPT_TIMEOUT_MS` (default 30000): one run of a scheduled task's script; longer
    /// ones are killed and the run is recorded as a script error.
    pub task_script_timeout: Duration,
    /// `CLAWBOX_RUNNER_BIN` (default: `agent-runner` next to the `clawbox` binary).
    pub runner_bin: PathBuf,
    /// `CLAWBOX_SKILLS_DIR` (default `./container/skills` when it exists): built-in skills for
    /// runners on the host; agents' own `skills/` override them by name.
    pub skills_dir: Option<PathBuf>,
    /// `CONTEXT_TOKENS` (default 128000, at least 1000): the model's context in tokens, which
    /// every runner budgets its requests against and compacts conversations to fit (an agent's
    /// `context_tokens` in `container.json` overrides it).
    pub context_tokens: u64,
    /// `RETENTION_DAYS` (default 30, at least 1): delivered and acknowledged mailbox rows older
    /// than this are deleted (conversation history is governed by compaction, not by this).
    pub retention_days: u32,
    /// `SESSION_RETENTION_DAYS` (default 90, at least 1): a session idle for longer, with no
    /// pending work and no live runner, is retired: its history is archived in the agent's
    /// folder, its session folder removed, and the chat's next message starts a new session.
    pub session_retention_days: u32,
    /// `RETENTION_INTERVAL_MS` (default 21600000 = 6 h, at least 1): time between two retention
    /// passes (the first runs when the host starts).
    pub retention_interval: Duration,
    /// `TOKEN_BUDGET_PER_SESSION_DAY` (default 0 = unlimited): prompt plus completion tokens one
    /// session may use per calendar day in `TIMEZONE`; the model proxy answers 429 beyond it.
    pub token_budget: Option<u64>,
    /// `PROXY_REQUESTS_PER_MINUTE` (default 120): model requests one runner's token may make per
    /// minute (bursts up to the same number); beyond it the proxy answers 429.
    pub proxy_requests_per_minute: u32,
    /// `PROXY_MAX_REQUEST_MB` (default 32): largest model request body the proxy reads, in
    /// bytes; a larger one gets 413.
    pub proxy_max_request_bytes: usize,
    /// `DASHBOARD_ADDR` (default `127.0.0.1:7878`; `off` disables it): where the web dashboard
    /// listens. Port 0 picks a free port (written to `DATA_DIR/dashboard.addr`).
    pub dashboard_addr: Option<std::net::SocketAddr>,
    /// `DASHBOARD_ALLOW_REMOTE` (default `false`): must be `true` for a `DASHBOARD_ADDR` that is
    /// not a loopback address — the dashboard speaks plain HTTP, so it belongs behind a TLS
    /// reverse proxy when it leaves the machine.
    pub dashboard_allow_remote: bool,
    /// `SESSION_DISK_MB` (default 2048; 0 = no quota): what one session's `workspace/` and
    /// `outbound/` may take on disk, in bytes. Kept by the host (session/disk.rs): above it the
    /// runner is stopped and the session's messages fail with a notice until files are deleted.
    pub session_disk_bytes: Option<u64>,
}

/// Resource limits of one agent container. Defaults live in [`Config`]; [`ContainerLimits`]
/// checks are shared with the per-agent overrides in `container.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerLimits {
    /// Memory limit; swap is limited to the same value (no swap on top of it).
    pub memory_mb: u64,
    /// CPU share, in CPUs (0.5 = half a core).
    pub cpus: f64,
    /// Maximum number of processes and threads.
    pub pids: i64,
}

impl ContainerLimits {
    /// Below this the runner and one tool do not fit.
    pub const MIN_MEMORY_MB: u64 = 32;
    /// A few MCP servers and a shell need this many tasks at least.
    pub const MIN_PIDS: i64 = 16;

    pub fn check_memory_mb(mb: u64) -> Result<u64, String> {
        if mb < Self::MIN_MEMORY_MB {
            return Err(format!("must be at least {} (MB)", Self::MIN_MEMORY_MB));
        }
        if mb > 1 << 30 {
            return Err("is larger than any machine (the unit is MB)".into());
        }
        Ok(mb)
    }

    pub fn check_cpus(cpus: f64) -> Result<f64, String> {
        if !cpus.is_finite() || !(0.01..=1024.0).contains(&cpus) {
            return Err("must be a number of CPUs between 0.01 and 1024 (e.g. 1.5)".into());
        }
        Ok(cpus)
    }

    pub fn check_pids(pids: i64) -> Result<i64, String> {
        if pids < Self::MIN_PIDS {
            return Err(format!("must be at least {}", Self::MIN_PIDS));
        }
        Ok(pids)
    }

    pub fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
    }

    pub fn nano_cpus(&self) -> i64 {
        // Within 0.01..=1024 CPUs, so the product fits easily.
        (self.cpus * 1e9).round() as i64
    }
}

/// A setting that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub problem: String,
}

/// Where a command was told, or found, its config home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `CLAWBOX_HOME`.
    Variable,
    /// The directory of the `.env` found in the working directory or above it.
    DotEnv,
    /// `$XDG_CONFIG_HOME/clawbox`, else `~/.config/clawbox`.
    UserConfig,
    /// No `HOME` either (a bare service environment): the working directory, as before there
    /// was a config home.
    WorkingDir,
}

/// The config home: the directory holding `.env`, against which relative paths resolve, so that
/// every command finds the same data whatever directory it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub dir: PathBuf,
    pub source: HomeSource,
}

impl Home {
    /// Finds the home from the process: `CLAWBOX_HOME`, the working directory, `HOME`.
    pub fn find() -> Result<Home, ConfigError> {
        let cwd = std::env::current_dir().map_err(|e| ConfigError {
            var: "CLAWBOX_HOME",
            value: String::new(),
            problem: format!("cannot read the working directory: {e}"),
        })?;
        let var = |k: &str| std::env::var(k).ok();
        Ok(Self::resolve(
            var("CLAWBOX_HOME").as_deref(),
            &cwd,
            var("XDG_CONFIG_HOME").as_deref(),
            var("HOME").as_deref(),
        ))
    }

    /// `CLAWBOX_HOME` if set (relative to `cwd`), else the directory of the first `.env` in
    /// `cwd` or above it (the search dotenvy does), else `$XDG_CONFIG_HOME/clawbox`, else
    /// `$HOME/.config/clawbox`, else (no `HOME`) `cwd`. Pure apart from looking for `.env`
    /// files.
    pub fn resolve(
        clawbox_home: Option<&str>,
        cwd: &Path,
        xdg_config_home: Option<&str>,
        user_home: Option<&str>,
    ) -> Home {
        let set = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = set(clawbox_home) {
            return Home {
                dir: cwd.join(dir),
                source: HomeSource::Variable,
            };
        }
        if let Some(dir) = cwd.ancestors().find(|dir| dir.join(ENV_FILE).is_file()) {
            return Home {
                dir: dir.to_path_buf(),
                source: HomeSource::DotEnv,
            };
        }
        // The XDG base directory rules ignore a relative XDG_CONFIG_HOME.
        if let Some(dir) = set(xdg_config_home).filter(|d| d.is_absolute()) {
            return Home {
                dir: dir.join("clawbox"),
                source: HomeSource::UserConfig,
            };
        }
        match set(user_home).filter(|d| d.is_absolute()) {
            Some(dir) => Home {
                dir: dir.join(".config/clawbox"),
                source: HomeSource::UserConfig,
            },
            None => Home {
                dir: cwd.to_path_buf(),
                source: HomeSource::WorkingDir,
            },
        }
    }

    /// The home's `.env`.
    pub fn env_file(&self) -> PathBuf {
        self.dir.join(ENV_FILE)
    }
}

/// The name of the settings file in the config home.
pub const ENV_FILE: &str = ".env";

/// Why a command could not get its configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No home could be found, or a setting is invalid; names the variable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The home's `.env` exists but cannot be read or parsed.
    #[error("cannot read {}: {source}", path.display())]
    EnvFile {
        path: PathBuf,
        #[source]
        source: dotenvy::Error,
    },
}

impl Config {
    /// What every command does first: finds the config home, loads its `.env` (variables set
    /// in the environment win), and reads the configuration with relative paths resolved
    /// against the home.
    pub fn load() -> Result<Config, LoadError> {
        let home = Home::find()?;
        load_env_file(&home.env_file())?;
        Ok(Self::from_env(&home.dir)?)
    }

    /// Reads the process environment; relative paths resolve against `home`.
    pub fn from_env(home: &Path) -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok(), home)
    }

    /// Builds the config from any variable source; relative paths resolve against `home`.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        home: &Path,
    ) -> Result<Config, ConfigError> {
        let cwd = home;
        // An empty value counts as unset, as in `.env` files that list every variable.
        let var = |k: &'static str| get(k).filter(|v| !v.trim().is_empty());
        let path = |k: &'static str, default: &str| {
            let p = PathBuf::from(var(k).unwrap_or_else(|| default.to_owned()));
            if p.is_absolute() { p } else { cwd.join(p) }
        };
        let ms = |k: &'static str, default: u64| -> Result<Duration, ConfigError> {
            parse_num(k, var(k), default).map(Duration::from_millis)
        };
        let runtime = match var("CONTAINER_RUNTIME").as_deref() {
            Some("process") => RuntimeKind::Process,
            None | Some("docker") => RuntimeKind::Docker,
            Some(other) => {
                return Err(ConfigError {
                    var: "CONTAINER_RUNTIME",
                    value: other.to_owned(),
                    problem: "expected `docker` or `process`".into(),
                });
            }
        };
        let mailbox_journal = match var("MAILBOX_JOURNAL").as_deref() {
            None | Some("auto") => JournalSetting::Auto,
            Some("wal") => JournalSetting::Wal,
            Some("delete") => JournalSetting::Delete,
            Some(other) => {
                return Err(ConfigError {
                    var: "MAILBOX_JOURNAL",
                    value: other.to_owned(),
                    problem: "expected `auto`, `wal` or `delete`".into(),
                });
            }
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    value: other.to_owned(),
                    problem: "expected `text` or `json`".into(),
                });
            }
        };
        let timezone = match var("TIMEZONE") {
            None => Tz::UTC,
            Some(tz) => tz.parse().map_err(|_| ConfigError {
                var: "TIMEZONE",
                value: tz.clone(),
                problem: "not an IANA time zone name (e.g. Europe/Berlin)".into(),
            })?,
        };
        let openai_base_url = var("OPENAI_BASE_URL")
            .unwrap_or_else(|| "https://api.openai.com/v1".into())
            .trim_end_matches('/')
            .to_owned();
        if !(openai_base_url.starts_with("http://") || openai_base_url.starts_with("https://")) {
            return Err(ConfigError {
                var: "OPENAI_BASE_URL",
                value: openai_base_url,
                problem: "expected an http:// or https:// URL".into(),
            });
        }
        let telegram_api_url = var("TELEGRAM_API_URL")
            .unwrap_or_else(|| "https://api.telegram.org".into())
            .trim_end_matches('/')
            .to_owned();
        if url::Url::parse(&telegram_api_url).map_or(true, |u| {
            !matches!(u.scheme(), "http" | "https") || u.cannot_be_a_base()
        }) {
            return Err(ConfigError {
                var: "TELEGRAM_API_URL",
                value: telegram_api_url,
                problem: "expected an http:// or https:// URL".into(),
            });
        }
        let telegram_poll_timeout = Duration::from_secs(parse_num(
            "TELEGRAM_POLL_TIMEOUT_S",
            var("TELEGRAM_POLL_TIMEOUT_S"),
            30u64,
        )?);
        if telegram_poll_timeout > Duration::from_secs(300) {
            return Err(ConfigError {
                var: "TELEGRAM_POLL_TIMEOUT_S",
                value: telegram_poll_timeout.as_secs().to_string(),
                problem: "must be at most 300 (seconds)".into(),
            });
        }
        let telegram_max_file_mb =
            parse_num("TELEGRAM_MAX_FILE_MB", var("TELEGRAM_MAX_FILE_MB"), 20u64)?;
        if !(1..=2000).contains(&telegram_max_file_mb) {
            return Err(ConfigError {
                var: "TELEGRAM_MAX_FILE_MB",
                value: telegram_max_file_mb.to_string(),
                problem: "must be between 1 and 2000 (MB)".into(),
            });
        }
        let runner_bin = match var("CLAWBOX_RUNNER_BIN") {
            Some(p) => PathBuf::from(p),
            None => sibling_binary("agent-runner"),
        };
        let container_limits = ContainerLimits {
            memory_mb: limit(
                "CONTAINER_MEMORY_MB",
                var("CONTAINER_MEMORY_MB"),
                1024,
                "expected a whole number of MB",
                ContainerLimits::check_memory_mb,
            )?,
            cpus: limit(
                "CONTAINER_CPUS",
                var("CONTAINER_CPUS"),
                1.0,
                "expected a number of CPUs (e.g. 1.5)",
                ContainerLimits::check_cpus,
            )?,
            pids: limit(
                "CONTAINER_PIDS",
                var("CONTAINER_PIDS"),
                256,
                "expected a whole number",
                ContainerLimits::check_pids,
            )?,
        };
        let config = Config {
            home: home.to_path_buf(),
            data_dir: path("DATA_DIR", "data"),
            groups_dir: path("GROUPS_DIR", "groups"),
            assistant_name: var("ASSISTANT_NAME").unwrap_or_else(|| "Andy".into()),
            default_model: var("DEFAULT_MODEL").unwrap_or_else(|| "gpt-4o".into()),
            openai_base_url,
            openai_api_key: var("OPENAI_API_KEY"),
            timezone,
            runtime,
            log_format,
            container_image: var("CONTAINER_IMAGE"),
            container_limits,
            max_concurrent_runners: positive(
                "MAX_CONCURRENT_CONTAINERS",
                parse_num(
                    "MAX_CONCURRENT_CONTAINERS",
                    var("MAX_CONCURRENT_CONTAINERS"),
                    8,
                )?,
            )? as usize,
            docker_host: var("DOCKER_HOST"),
            mailbox_journal,
            telegram_bot_token: var("TELEGRAM_BOT_TOKEN"),
            telegram_api_url,
            telegram_poll_timeout,
            telegram_max_file_bytes: telegram_max_file_mb * 1024 * 1024,
            telegram_announce_unknown: parse_bool(
                "TELEGRAM_ANNOUNCE_UNKNOWN",
                var("TELEGRAM_ANNOUNCE_UNKNOWN"),
            )?,
            max_tries: positive("MAX_TRIES", parse_num("MAX_TRIES", var("MAX_TRIES"), 5)?)?,
            backoff_base: ms("BACKOFF_BASE_MS", 5000)?,
            max_delivery_attempts: positive(
                "MAX_DELIVERY_ATTEMPTS",
                parse_num("MAX_DELIVERY_ATTEMPTS", var("MAX_DELIVERY_ATTEMPTS"), 3)?,
            )?,
            max_reply_chars: {
                let n = parse_num("MAX_REPLY_CHARS", var("MAX_REPLY_CHARS"), 32_000usize)?;
                if n < 500 {
                    return Err(ConfigError {
                        var: "MAX_REPLY_CHARS",
                        value: n.to_string(),
                        problem: "must be at least 500 (characters)".into(),
                    });
                }
                n
            },
            idle_timeout: ms("IDLE_TIMEOUT_MS", 300_000)?,
            claim_stuck: ms("CLAIM_STUCK_MS", 60_000)?,
            heartbeat: ms("HEARTBEAT_MS", 2000)?,
            max_steps: positive("MAX_STEPS", parse_num("MAX_STEPS", var("MAX_STEPS"), 20)?)?,
            model_timeout: ms("MODEL_TIMEOUT_MS", 120_000)?,
            model_retries: parse_num("MODEL_RETRIES", var("MODEL_RETRIES"), 3)?,
            model_backoff: ms("MODEL_BACKOFF_MS", 500)?,
            tool_timeout: ms("TOOL_TIMEOUT_MS", 600_000)?,
            task_script_timeout: positive_ms(
                "TASK_SCRIPT_TIMEOUT_MS",
                ms("TASK_SCRIPT_TIMEOUT_MS", 30_000)?,
            )?,
            runner_bin,
            skills_dir: match var("CLAWBOX_SKILLS_DIR") {
                Some(p) => Some(cwd.join(p)),
                // A checkout's own skills, else those `make install` put beside the binaries.
                None => [
                    cwd.join("container/skills"),
                    sibling_binary("../share/clawbox/skills"),
                ]
                .into_iter()
                .find(|p| p.is_dir()),
            },
            context_tokens: {
                let n = parse_num("CONTEXT_TOKENS", var("CONTEXT_TOKENS"), 128_000u64)?;
                if n < 1_000 {
                    return Err(ConfigError {
                        var: "CONTEXT_TOKENS",
                        value: n.to_string(),
                        problem: "must be at least 1000 (tokens)".into(),
                    });
                }
                n
            },
            retention_days: positive(
                "RETENTION_DAYS",
                parse_num("RETENTION_DAYS", var("RETENTION_DAYS"), 30)?,
            )?,
            session_retention_days: positive(
                "SESSION_RETENTION_DAYS",
                parse_num("SESSION_RETENTION_DAYS", var("SESSION_RETENTION_DAYS"), 90)?,
            )?,
            retention_interval: positive_ms(
                "RETENTION_INTERVAL_MS",
                ms("RETENTION_INTERVAL_MS", 6 * 3600 * 1000)?,
            )?,
            token_budget: Some(parse_num(
                "TOKEN_BUDGET_PER_SESSION_DAY",
                var("TOKEN_BUDGET_PER_SESSION_DAY"),
                0u64,
            )?)
            .filter(|n| *n > 0),
            proxy_requests_per_minute: positive(
                "PROXY_REQUESTS_PER_MINUTE",
                parse_num(
                    "PROXY_REQUESTS_PER_MINUTE",
                    var("PROXY_REQUESTS_PER_MINUTE"),
                    120,
                )?,
            )?,
            proxy_max_request_bytes: positive(
                "PROXY_MAX_REQUEST_MB",
                parse_num("PROXY_MAX_REQUEST_MB", var("PROXY_MAX_REQUEST_MB"), 32u32)?,
            )
            .and_then(|mb| {
                if mb > 1024 {
                    Err(ConfigError {
                        var: "PROXY_MAX_REQUEST_MB",
                        value: mb.to_string(),
                        problem: "must be at most 1024".into(),
                    })
                } else {
                    Ok(mb as usize * 1024 * 1024)
                }
            })?,
            dashboard_addr: match var("DASHBOARD_ADDR").as_deref().map(str::trim) {
                None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 7878))),
                Some("off") => None,
                Some(addr) => Some(addr.parse().map_err(|_| ConfigError {
                    var: "DASHBOARD_ADDR",
                    value: addr.to_owned(),
                    problem: "expected `off` or an address with a port, e.g. 127.0.0.1:7878".into(),
                })?),
            },
            dashboard_allow_remote: parse_bool(
                "DASHBOARD_ALLOW_REMOTE",
                var("DASHBOARD_ALLOW_REMOTE"),
            )?,
            session_disk_bytes: {
                let mb = parse_num("SESSION_DISK_MB", var("SESSION_DISK_MB"), 2048u64)?;
                if mb > 1 << 30 {
                    return Err(ConfigError {
                        var: "SESSION_DISK_MB",
                        value: mb.to_string(),
                        problem: "is larger than any disk (the unit is MB)".into(),
                    });
                }
                Some(mb * 1024 * 1024).filter(|b| *b > 0)
            },
        };
        if let Some(addr) = config.dashboard_addr
            && !addr.ip().is_loopback()
            && !config.dashboard_allow_remote
        {
            return Err(ConfigError {
                var: "DASHBOARD_ADDR",
                value: addr.to_string(),
                problem: "not a loopback address; set DASHBOARD_ALLOW_REMOTE=true to serve the dashboard beyond this machine (put it behind a TLS reverse proxy)".into(),
            });
        }
        if config.claim_stuck <= config.heartbeat * 2 {
            return Err(ConfigError {
                var: "CLAIM_STUCK_MS",
                value: config.claim_stuck.as_millis().to_string(),
                problem: format!(
                    "must exceed twice HEARTBEAT_MS ({} ms), or healthy runners look stuck",
                    config.heartbeat.as_millis()
                ),
            });
        }
        Ok(config)
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("clawbox.db")
    }

    /// The admin socket. It lives in `DATA_DIR`, which the host keeps at mode 0700, so the
    /// socket is never reachable by other users, not even between bind and chmod.
    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join("clawbox.sock")
    }

    /// The model proxy's Unix socket (proxy.rs). The docker runtime mounts it into every
    /// container at `proxy::CONTAINER_MODEL_SOCKET`.
    pub fn model_socket_path(&self) -> PathBuf {
        self.data_dir.join("model.sock")
    }

    /// Where the host writes the model proxy's loopback address (`127.0.0.1:<port>`).
    pub fn proxy_addr_path(&self) -> PathBuf {
        self.data_dir.join("proxy.addr")
    }

    /// The dashboard's access token (mode 0600), created at the first start.
    pub fn dashboard_token_path(&self) -> PathBuf {
        self.data_dir.join("dashboard.token")
    }

    /// Where the host writes the dashboard's address once it listens.
    pub fn dashboard_addr_path(&self) -> PathBuf {
        self.data_dir.join("dashboard.addr")
    }

    /// One-time login codes handed out by `clawbox dashboard` (hashes only).
    pub fn dashboard_logins_dir(&self) -> PathBuf {
        self.data_dir.join("dashboard-logins")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
}

/// A switch: `true`/`1`/`yes` or `false`/`0`/`no` (unset: `false`); anything else is an error
/// naming the variable.
fn parse_bool(var: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(ConfigError {
            var,
            value: other.to_owned(),
            problem: "expected `true` or `false`".into(),
        }),
    }
}

fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError {
            var,
            value: v.clone(),
            problem: "expected a non-negative whole number".into(),
        }),
    }
}

/// A container limit: parsed, then checked with the rule shared with `container.json`.
fn limit<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
    expected: &str,
    check: fn(T) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let problem = |problem: String| ConfigError {
        var,
        value: v.clone(),
        problem,
    };
    let parsed = v.trim().parse().map_err(|_| problem(expected.to_owned()))?;
    check(parsed).map_err(problem)
}

fn positive_ms(var: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError {
            var,
            value: "0".into(),
            problem: "must be at least 1 (ms)".into(),
        })
    } else {
        Ok(d)
    }
}

fn positive(var: &'static str, n: u32) -> Result<u32, ConfigError> {
    if n == 0 {
        Err(ConfigError {
            var,
            value: "0".into(),
            problem: "must be at least 1".into(),
        })
    } else {
        Ok(n)
    }
}

/// Loads a `.env` file into the process environment without overriding what is set already;
/// a missing file is fine. Call it before any thread starts (it sets variables).
pub fn load_env_file(path: &Path) -> Result<(), LoadError> {
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(source) => Err(LoadError::EnvFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A binary installed next to the running one (cargo puts all workspace binaries together).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The candidate `word` most likely is a typo of: the closest by edit distance, if it is at
/// most 2 edits away (and closer than the word's own length, so short words do not match
/// anything). Used for "did you mean" hints on keys and variables.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = 2.min(word.chars().count().saturating_sub(1));
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned(), Path::new("/srv/clawbox"))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/clawbox/data"));
        assert_eq!(c.groups_dir, Path::new("/srv/clawbox/groups"));
        assert_eq!(c.assistant_name, "Andy");
        assert_eq!(c.runtime, RuntimeKind::Docker);
        assert_eq!(c.max_tries, 5);
        assert_eq!(c.backoff_base, Duration::from_secs(5));
        assert_eq!(c.timezone, Tz::UTC);
        assert_eq!(c.openai_base_url, "https://api.openai.com/v1");
        assert_eq!(c.telegram_api_url, "https://api.telegram.org");
        assert_eq!(c.token_budget, None);
        assert_eq!((c.context_tokens, c.retention_days), (128_000, 30));
        assert_eq!(c.session_retention_days, 90);
        assert_eq!(c.retention_interval, Duration::from_secs(6 * 3600));
        assert_eq!(c.telegram_poll_timeout, Duration::from_secs(30));
        assert_eq!(c.telegram_max_file_bytes, 20 * 1024 * 1024);
        assert_eq!(c.task_script_timeout, Duration::from_secs(30));
        let c = config(&[("TOKEN_BUDGET_PER_SESSION_DAY", "0")]).unwrap();
        assert_eq!(c.token_budget, None);
        let c = config(&[("TOKEN_BUDGET_PER_SESSION_DAY", "5000")]).unwrap();
        assert_eq!(c.token_budget, Some(5000));
        let c = config(&[]).unwrap();
        assert_eq!(c.proxy_requests_per_minute, 120);
        assert_eq!(c.proxy_max_request_bytes, 32 << 20);
        let c = config(&[
            ("PROXY_REQUESTS_PER_MINUTE", "5"),
            ("PROXY_MAX_REQUEST_MB", "1"),
        ])
        .unwrap();
        assert_eq!(c.proxy_requests_per_minute, 5);
        assert_eq!(c.proxy_max_request_bytes, 1 << 20);
        assert_eq!(config(&[]).unwrap().session_disk_bytes, Some(2048 << 20));
        let c = config(&[("SESSION_DISK_MB", "0")]).unwrap();
        assert_eq!(c.session_disk_bytes, None);
        let c = config(&[("SESSION_DISK_MB", "50")]).unwrap();
        assert_eq!(c.session_disk_bytes, Some(50 << 20));
    }

    #[test]
    fn container_limits_default_and_are_read() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.container_limits,
            ContainerLimits {
                memory_mb: 1024,
                cpus: 1.0,
                pids: 256
            }
        );
        assert_eq!(c.max_concurrent_runners, 8);
        assert_eq!(c.max_reply_chars, 32_000);
        assert_eq!(
            config(&[("MAX_REPLY_CHARS", "4096")])
                .unwrap()
                .max_reply_chars,
            4096
        );
        let c = config(&[
            ("CONTAINER_MEMORY_MB", "512"),
            ("CONTAINER_CPUS", " 1.5 "),
            ("CONTAINER_PIDS", "100"),
            ("MAX_CONCURRENT_CONTAINERS", "2"),
        ])
        .unwrap();
        assert_eq!(c.container_limits.memory_bytes(), 512 * 1024 * 1024);
        assert_eq!(c.container_limits.nano_cpus(), 1_500_000_000);
        assert_eq!(c.container_limits.pids, 100);
        assert_eq!(c.max_concurrent_runners, 2);
    }

    #[test]
    fn the_mailbox_journal_follows_the_kernel_unless_set() {
        use mailbox::Journal;
        assert_eq!(config(&[]).unwrap().mailbox_journal, JournalSetting::Auto);
        for (value, shares_kernel, want) in [
            ("auto", true, Journal::Wal),
            ("auto", false, Journal::Delete),
            ("wal", true, Journal::Wal),
            ("wal", false, Journal::Wal),
            ("delete", true, Journal::Delete),
            ("delete", false, Journal::Delete),
        ] {
            let c = config(&[("MAILBOX_JOURNAL", value)]).unwrap();
            assert_eq!(
                c.mailbox_journal.resolve(shares_kernel),
                want,
                "{value} {shares_kernel}"
            );
        }
        let err = config(&[("MAILBOX_JOURNAL", "WAL2")]).unwrap_err();
        assert_eq!(err.var, "MAILBOX_JOURNAL");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = config(&[("MAX_TRIES", ""), ("OPENAI_API_KEY", " ")]).unwrap();
        assert_eq!(c.max_tries, 5);
        assert_eq!(c.openai_api_key, None);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let table = [
            ("CONTAINER_RUNTIME", "dokcer"),
            ("TIMEZONE", "Mars/Olympus"),
            ("MAX_TRIES", "five"),
            ("MAX_TRIES", "0"),
            ("BACKOFF_BASE_MS", "-1"),
            ("OPENAI_BASE_URL", "localhost:8080"),
            ("TELEGRAM_API_URL", "api.telegram.org"),
            ("CLAIM_STUCK_MS", "1000"),
            ("TOKEN_BUDGET_PER_SESSION_DAY", "lots"),
            ("PROXY_REQUESTS_PER_MINUTE", "0"),
            ("PROXY_MAX_REQUEST_MB", "0"),
            ("PROXY_MAX_REQUEST_MB", "4096"),
            ("SESSION_DISK_MB", "2g"),
            ("SESSION_DISK_MB", "-1"),
            ("CONTAINER_MEMORY_MB", "1g"),
            ("CONTAINER_MEMORY_MB", "8"),
            ("CONTAINER_CPUS", "0"),
            ("CONTAINER_CPUS", "NaN"),
            ("CONTAINER_PIDS", "4"),
            ("MAX_CONCURRENT_CONTAINERS", "0"),
            ("TELEGRAM_API_URL", "api.telegram.org"),
            ("TELEGRAM_API_URL", "ftp://x"),
            ("TELEGRAM_POLL_TIMEOUT_S", "1000"),
            ("TELEGRAM_MAX_FILE_MB", "0"),
            ("TASK_SCRIPT_TIMEOUT_MS", "0"),
            ("TASK_SCRIPT_TIMEOUT_MS", "half a minute"),
            ("CONTEXT_TOKENS", "999"),
            ("CONTEXT_TOKENS", "128k"),
            ("RETENTION_DAYS", "0"),
            ("SESSION_RETENTION_DAYS", "0"),
            ("RETENTION_INTERVAL_MS", "0"),
            ("MAX_REPLY_CHARS", "499"),
            ("MAX_REPLY_CHARS", "32k"),
            ("TELEGRAM_ANNOUNCE_UNKNOWN", "on"),
        ];
        for (var, value) in table {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn dashboard_address_is_loopback_unless_allowed() {
        let c = config(&[]).unwrap();
        assert_eq!(c.dashboard_addr, Some("127.0.0.1:7878".parse().unwrap()));
        assert_eq!(
            config(&[("DASHBOARD_ADDR", "off")]).unwrap().dashboard_addr,
            None
        );
        let e = config(&[("DASHBOARD_ADDR", "0.0.0.0:7878")]).unwrap_err();
        assert_eq!(e.var, "DASHBOARD_ADDR");
        assert!(e.problem.contains("DASHBOARD_ALLOW_REMOTE"), "{e}");
        let c = config(&[
            ("DASHBOARD_ADDR", "0.0.0.0:7878"),
            ("DASHBOARD_ALLOW_REMOTE", "true"),
        ])
        .unwrap();
        assert_eq!(c.dashboard_addr, Some("0.0.0.0:7878".parse().unwrap()));
        assert_eq!(
            config(&[("DASHBOARD_ADDR", "localhost")]).unwrap_err().var,
            "DASHBOARD_ADDR"
        );
        assert_eq!(
            config(&[("DASHBOARD_ALLOW_REMOTE", "maybe")])
                .unwrap_err()
                .var,
            "DASHBOARD_ALLOW_REMOTE"
        );
    }

    #[test]
    fn the_home_is_the_variable_then_the_env_file_then_the_user_config() {
        let root = tempfile::tempdir().unwrap();
        let checkout = root.path().join("checkout");
        let deep = checkout.join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(checkout.join(".env"), "DATA_DIR=./data\n").unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let home = |var: Option<&str>, cwd: &Path, xdg: Option<&str>, user: Option<&str>| {
            let h = Home::resolve(var, cwd, xdg, user);
            (h.dir, h.source)
        };
        // CLAWBOX_HOME wins over a .env in the working directory; relative to it when relative.
        assert_eq!(
            home(Some("/srv/cb"), &deep, None, Some("/home/u")),
            (PathBuf::from("/srv/cb"), HomeSource::Variable)
        );
        assert_eq!(
            home(Some("conf"), &elsewhere, None, None),
            (elsewhere.join("conf"), HomeSource::Variable)
        );
        // An empty CLAWBOX_HOME counts as unset; a .env above the working directory is found.
        assert_eq!(
            home(Some(" "), &deep, None, Some("/home/u")),
            (checkout.clone(), HomeSource::DotEnv)
        );
        assert_eq!(
            home(None, &checkout, None, None),
            (checkout.clone(), HomeSource::DotEnv)
        );
        // No .env anywhere up: the user's config directory (XDG first, relative XDG ignored).
        assert_eq!(
            home(None, &elsewhere, Some("/x/cfg"), Some("/home/u")),
            (PathBuf::from("/x/cfg/clawbox"), HomeSource::UserConfig)
        );
        assert_eq!(
            home(None, &elsewhere, Some("rel"), Some("/home/u")),
            (
                PathBuf::from("/home/u/.config/clawbox"),
                HomeSource::UserConfig
            )
        );
        assert_eq!(
            home(None, &elsewhere, None, None),
            (elsewhere.clone(), HomeSource::WorkingDir)
        );
        // A directory named .env is not a settings file.
        std::fs::create_dir_all(elsewhere.join("sub/.env")).unwrap();
        assert_eq!(
            home(None, &elsewhere.join("sub"), None, Some("/home/u")).1,
            HomeSource::UserConfig
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_home() {
        let c = config(&[("DATA_DIR", "state"), ("GROUPS_DIR", "/abs/groups")]).unwrap();
        assert_eq!(c.home, Path::new("/srv/clawbox"));
        assert_eq!(c.data_dir, Path::new("/srv/clawbox/state"));
        assert_eq!(c.groups_dir, Path::new("/abs/groups"));
        let c = config(&[("CLAWBOX_SKILLS_DIR", "my-skills")]).unwrap();
        assert_eq!(
            c.skills_dir.as_deref(),
            Some(Path::new("/srv/clawbox/my-skills"))
        );
    }

    #[test]
    fn base_url_loses_trailing_slash() {
        let c = config(&[("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")]).unwrap();
        assert_eq!(c.openai_base_url, "http://127.0.0.1:8080/v1");
        let c = config(&[("TELEGRAM_API_URL", "http://127.0.0.1:8081/")]).unwrap();
        assert_eq!(c.telegram_api_url, "http://127.0.0.1:8081");
    }
}
