//! The runner's configuration: every environment variable of `docs/architecture.md` ("The
//! runner's environment"), parsed once into a typed [`Config`]. Owns names, defaults and
//! validation; nothing else in the crate reads the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use mailbox::env;

/// Variables the runner passes on to the MCP servers it starts, when set (besides the ones it
/// derives from its own configuration).
pub const INHERITED: &[&str] = &["PATH", "HOME", "LANG"];

/// A variable was missing or had a value the runner cannot use. The runner exits with status 1;
/// the host sees a runner that died before claiming anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable without a default is unset or empty.
    #[error("{var} is not set")]
    Missing { var: &'static str },
    /// A variable is set to a value that does not parse or is out of range.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// The runner's settings. Each field names its variable and default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CLAWBOX_SESSION_ID` (default `unknown`): for logs.
    pub session_id: String,
    /// `CLAWBOX_AGENT_ID` (default `unknown`): for logs.
    pub agent_id: String,
    /// `CLAWBOX_INSTALL` (optional): the host's install id, for logs.
    pub install: Option<String>,
    /// `CLAWBOX_MAILBOX_DIR` (required): holds `inbound/` and `outbound/`. All paths are made
    /// absolute against the working directory.
    pub mailbox_dir: PathBuf,
    /// `CLAWBOX_WORKSPACE` (default `/workspace`): the session's working directory.
    pub workspace: PathBuf,
    /// `CLAWBOX_AGENT_DIR` (default `/workspace/agent`): `groups/<folder>`, with `CLAUDE.md`.
    pub agent_dir: PathBuf,
    /// `CLAWBOX_GLOBAL_DIR` (optional): `groups/global`, read-only, may not exist.
    pub global_dir: Option<PathBuf>,
    /// `CLAWBOX_SKILLS_DIR` (optional): the built-in skills (`/app/skills` in the image), one
    /// `<name>/SKILL.md` per skill; the agent's `skills/` override them by name.
    pub skills_dir: Option<PathBuf>,
    /// `CLAWBOX_MODEL` (required): model name for chat completions.
    pub model: String,
    /// `OPENAI_BASE_URL` (default `https://api.openai.com/v1`), without a trailing slash; it
    /// includes `/v1`.
    pub base_url: String,
    /// `CLAWBOX_MODEL_TOKEN` — the session token for the host's model proxy, which is what the
    /// host sets — else `OPENAI_API_KEY` (a runner used on its own); empty: no `Authorization`
    /// header.
    pub api_key: String,
    /// `CLAWBOX_MODEL_SOCKET` (optional): the host's model proxy as a Unix socket (containers
    /// without network). When set, model requests go over it; `OPENAI_BASE_URL` gives the path.
    pub model_socket: Option<PathBuf>,
    /// `TIMEZONE` (default `UTC`): IANA zone for dates shown to the model.
    pub timezone: Tz,
    /// `ASSISTANT_NAME` (default `Andy`).
    pub assistant_name: String,
    /// `CLAWBOX_IDLE_TIMEOUT_MS` (default 300000): exit after this long with nothing to do.
    pub idle_timeout: Duration,
    /// `CLAWBOX_HEARTBEAT_MS` (default 2000): heartbeat period.
    pub heartbeat: Duration,
    /// `CLAWBOX_MAX_STEPS` (default 20, at least 1): model requests per turn.
    pub max_steps: u32,
    /// `CLAWBOX_MODEL_TIMEOUT_MS` (default 120000): one model request, start to full body.
    pub model_timeout: Duration,
    /// `CLAWBOX_MODEL_RETRIES` (default 3): retries after the first failed model request.
    pub model_retries: u32,
    /// `CLAWBOX_MODEL_BACKOFF_MS` (default 500): first retry delay, doubled per retry.
    pub model_backoff: Duration,
    /// `CLAWBOX_TOOL_TIMEOUT_MS` (default 600000): one MCP tool call.
    pub tool_timeout: Duration,
    /// `CLAWBOX_TASK_SCRIPT_TIMEOUT_MS` (default 30000): one run of a scheduled task's script.
    pub task_script_timeout: Duration,
    /// `CLAWBOX_CONTEXT_TOKENS` (default 128000, at least 1000): the model's context in tokens,
    /// the budget of every request (see `budget.rs`); `context_tokens` in the agent's
    /// `container.json` overrides it.
    pub context_tokens: u64,
    /// `CLAWBOX_RETENTION_DAYS` (default 30, at least 1): replies and acks the host has settled
    /// are deleted from `outbound.db` after this many days, when a runner starts.
    pub retention_days: u32,
    /// `CLAWBOX_MCP_TOOLS_BIN` (default `mcp-tools` next to the running executable). Set to the
    /// empty string to run without the built-in tools (debugging, tests of the bare loop).
    pub mcp_tools_bin: Option<PathBuf>,
    /// `PATH`, `HOME`, `LANG` as the runner received them, passed on to MCP servers.
    pub inherited_env: Vec<(String, String)>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty value counts as unset: `FOO=` in an env file means "no value".
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |var: &'static str| get(var).ok_or(ConfigError::Missing { var });
        // Absolute, because the paths are handed to MCP servers that run in another directory.
        let absolute = |var: &'static str, value: String| {
            std::path::absolute(&value).map_err(|e| ConfigError::Invalid {
                var,
                value,
                reason: e.to_string(),
            })
        };
        let path_or = |var: &'static str, default: &str| {
            absolute(var, get(var).unwrap_or_else(|| default.to_owned()))
        };

        let timezone = match get(env::TIMEZONE) {
            None => Tz::UTC,
            Some(value) => value
                .trim()
                .parse::<Tz>()
                .map_err(|e| ConfigError::Invalid {
                    var: env::TIMEZONE,
                    value,
                    reason: format!("not an IANA time zone ({e})"),
                })?,
        };
        let mcp_tools_bin = match lookup(env::MCP_TOOLS_BIN) {
            Some(value) if value.trim().is_empty() => None,
            Some(value) => Some(PathBuf::from(value)),
            None => Some(default_mcp_tools_bin()),
        };
        let base_url = get(env::OPENAI_BASE_URL)
            .unwrap_or_else(|| "https://api.openai.com/v1".to_owned())
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                var: env::OPENAI_BASE_URL,
                value: base_url,
                reason: "must start with http:// or https://".to_owned(),
            });
        }

        Ok(Config {
            session_id: get(env::SESSION_ID).unwrap_or_else(|| "unknown".to_owned()),
            agent_id: get(env::AGENT_ID).unwrap_or_else(|| "unknown".to_owned()),
            install: get(env::INSTALL),
            mailbox_dir: absolute(env::MAILBOX_DIR, required(env::MAILBOX_DIR)?)?,
            workspace: path_or(env::WORKSPACE, "/workspace")?,
            agent_dir: path_or(env::AGENT_DIR, "/workspace/agent")?,
            global_dir: get(env::GLOBAL_DIR)
                .map(|dir| absolute(env::GLOBAL_DIR, dir))
                .transpose()?,
            skills_dir: get(env::SKILLS_DIR)
                .map(|dir| absolute(env::SKILLS_DIR, dir))
                .transpose()?,
            model: required(env::MODEL)?,
            base_url,
            api_key: get(env::MODEL_TOKEN)
                .or_else(|| get(env::OPENAI_API_KEY))
                .unwrap_or_default(),
            model_socket: get(env::MODEL_SOCKET)
                .map(|socket| absolute(env::MODEL_SOCKET, socket))
                .transpose()?,
            timezone,
            assistant_name: get(env::ASSISTANT_NAME).unwrap_or_else(|| "Andy".to_owned()),
            idle_timeout: millis(&get, env::IDLE_TIMEOUT_MS, 300_000)?,
            heartbeat: millis(&get, env::HEARTBEAT_MS, 2_000)?,
            max_steps: number(&get, env::MAX_STEPS, 20, /*min*/ 1)?,
            model_timeout: millis(&get, env::MODEL_TIMEOUT_MS, 120_000)?,
            model_retries: number(&get, env::MODEL_RETRIES, 3, /*min*/ 0)?,
            model_backoff: millis(&get, env::MODEL_BACKOFF_MS, 500)?,
            tool_timeout: millis(&get, env::TOOL_TIMEOUT_MS, 600_000)?,
            task_script_timeout: millis(&get, env::TASK_SCRIPT_TIMEOUT_MS, 30_000)?,
            context_tokens: number(
                &get,
                env::CONTEXT_TOKENS,
                crate::budget::DEFAULT_CONTEXT_TOKENS,
                /*min*/ crate::budget::MIN_CONTEXT_TOKENS,
            )?,
            retention_days: number(&get, env::RETENTION_DAYS, 30, /*min*/ 1)?,
            mcp_tools_bin,
            inherited_env: INHERITED
                .iter()
                .filter_map(|name| lookup(name).map(|v| ((*name).to_owned(), v)))
                .collect(),
        })
    }

    /// The session's mailbox paths as seen by this process.
    pub fn session_paths(&self) -> mailbox::SessionPaths {
        mailbox::SessionPaths::from_root(&self.mailbox_dir).with_workspace(self.workspace.clone())
    }
}

/// `mcp-tools` in the directory of the running executable; plain `mcp-tools` (looked up on
/// `PATH`) when that directory is unknown.
fn default_mcp_tools_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mcp-tools")))
        .unwrap_or_else(|| Path::new("mcp-tools").to_path_buf())
}

/// A positive number of milliseconds.
fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    number::<u64>(get, var, default, /*min*/ 1).map(Duration::from_millis)
}

fn number<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    min: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let Some(value) = get(var) else {
        return Ok(default);
    };
    let n = value
        .trim()
        .parse::<T>()
        .map_err(|e| ConfigError::Invalid {
            var,
            value: value.clone(),
            reason: e.to_string(),
        })?;
    if n < min {
        return Err(ConfigError::Invalid {
            var,
            value,
            reason: format!("must be at least {min}"),
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use pretty_assertions::assert_eq;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const MINIMAL: &[(&str, &str)] = &[(env::MAILBOX_DIR, "/mailbox"), (env::MODEL, "gpt-test")];

    #[test]
    fn defaults() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(300_000));
        assert_eq!(c.heartbeat, Duration::from_millis(2_000));
        assert_eq!(c.max_steps, 20);
        assert_eq!(c.model_timeout, Duration::from_millis(120_000));
        assert_eq!(c.model_retries, 3);
        assert_eq!(c.model_backoff, Duration::from_millis(500));
        assert_eq!(c.tool_timeout, Duration::from_millis(600_000));
        assert_eq!(c.task_script_timeout, Duration::from_secs(30));
        assert_eq!(c.context_tokens, 128_000);
        assert_eq!(c.retention_days, 30);
        assert_eq!(c.timezone, Tz::UTC);
        assert_eq!(c.assistant_name, "Andy");
        assert_eq!(c.base_url, "https://api.openai.com/v1");
        assert_eq!(c.workspace, PathBuf::from("/workspace"));
        assert_eq!(c.agent_dir, PathBuf::from("/workspace/agent"));
        assert_eq!(c.global_dir, None);
        assert_eq!(c.skills_dir, None);
        assert_eq!(c.model_socket, None);
        assert!(
            c.mcp_tools_bin
                .as_ref()
                .is_some_and(|p| p.ends_with("mcp-tools"))
        );
    }

    #[test]
    fn values_are_parsed() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            (env::TIMEZONE, "Europe/Berlin"),
            (env::OPENAI_BASE_URL, "http://127.0.0.1:9/v1/"),
            (env::MODEL_RETRIES, "0"),
            (env::MAX_STEPS, " 5 "),
            (env::MCP_TOOLS_BIN, ""),
            (env::SKILLS_DIR, "/app/skills"),
            (env::MODEL_SOCKET, "/run/clawbox/model.sock"),
            (env::TASK_SCRIPT_TIMEOUT_MS, "1500"),
            (env::CONTEXT_TOKENS, "8000"),
        ]);
        let c = config(&vars).unwrap();
        assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(c.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(c.model_retries, 0);
        assert_eq!(c.max_steps, 5);
        assert_eq!(c.task_script_timeout, Duration::from_millis(1500));
        assert_eq!(c.context_tokens, 8_000);
        assert_eq!(c.mcp_tools_bin, None);
        assert_eq!(c.skills_dir, Some(PathBuf::from("/app/skills")));
        assert_eq!(
            c.model_socket,
            Some(PathBuf::from("/run/clawbox/model.sock"))
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let table = [
            (env::TIMEZONE, "Mars/Olympus"),
            (env::IDLE_TIMEOUT_MS, "soon"),
            (env::HEARTBEAT_MS, "0"),
            (env::MAX_STEPS, "0"),
            (env::MODEL_RETRIES, "-1"),
            (env::OPENAI_BASE_URL, "api.openai.com"),
            (env::TASK_SCRIPT_TIMEOUT_MS, "0"),
            (env::CONTEXT_TOKENS, "999"),
            (env::CONTEXT_TOKENS, "lots"),
            (env::RETENTION_DAYS, "0"),
        ];
        for (var, value) in table {
            let mut vars = MINIMAL.to_vec();
            vars.push((var, value));
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}: {err}");
        }
        let err = config(&[(env::MODEL, "m")]).unwrap_err();
        assert_eq!(err.to_string(), "CLAWBOX_MAILBOX_DIR is not set");
    }
}
