//! The server's configuration: read from the environment once at startup, validated, then passed
//! down as `Arc<Context>`. Nothing else in the crate reads environment variables.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use mailbox::SessionPaths;

/// `PATH` for `run_bash` when the runner did not pass one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `LANG` for `run_bash` when the runner did not pass one: UTF-8 output without a locale install.
const DEFAULT_LANG: &str = "C.UTF-8";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CLAWBOX_MAILBOX_DIR` (required, absolute): holds `inbound/` and `outbound/`.
    pub mailbox_dir: PathBuf,
    /// `CLAWBOX_WORKSPACE` (required, absolute, an existing directory): the session's working
    /// directory; relative tool paths and `run_bash` start here.
    pub workspace: PathBuf,
    /// `CLAWBOX_AGENT_DIR` (required, absolute): the agent folder, reached as `agent/…`.
    pub agent_dir: PathBuf,
    /// `CLAWBOX_SKILLS_DIR` (optional, absolute): the built-in skills (`<name>/SKILL.md`) that
    /// `load_skill` falls back to when the agent folder has no skill of that name. Unset: none.
    /// A directory that does not exist holds no skills (the image may ship none).
    pub skills_dir: Option<PathBuf>,
    /// `TIMEZONE` (optional, an IANA zone such as `Europe/Berlin`): `TZ` of `run_bash`.
    pub timezone: Option<String>,
    /// `PATH` (default `/usr/local/bin:/usr/bin:/bin`): `PATH` of `run_bash`.
    pub bash_path: OsString,
    /// `LANG` (default `C.UTF-8`): `LANG` of `run_bash`.
    pub bash_lang: OsString,
}

/// Returned by [`Config::from_env`]; `main` prints it and exits, since nothing can work without it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set")]
    Missing { var: &'static str },
    #[error("{var} must be an absolute path, got {value:?}")]
    NotAbsolute { var: &'static str, value: PathBuf },
    #[error("{var} must name an existing directory, got {}", value.display())]
    NotADirectory { var: &'static str, value: PathBuf },
    #[error("{var} is not valid UTF-8")]
    NotUnicode { var: &'static str },
    #[error("{var} is not a known IANA time zone: {value:?} (e.g. Europe/Berlin, UTC)")]
    UnknownTimezone { var: &'static str, value: String },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Builds the config from any variable lookup (tests pass a table).
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let mailbox_dir = absolute_path(&get, mailbox::env::MAILBOX_DIR)?;
        let workspace = absolute_path(&get, mailbox::env::WORKSPACE)?;
        if !workspace.is_dir() {
            return Err(ConfigError::NotADirectory {
                var: mailbox::env::WORKSPACE,
                value: workspace,
            });
        }
        let agent_dir = absolute_path(&get, mailbox::env::AGENT_DIR)?;
        let skills_dir = match get(mailbox::env::SKILLS_DIR).filter(|v| !v.is_empty()) {
            None => None,
            Some(_) => Some(absolute_path(&get, mailbox::env::SKILLS_DIR)?),
        };
        let timezone = match get(mailbox::env::TIMEZONE).filter(|v| !v.is_empty()) {
            None => None,
            Some(raw) => {
                let value = raw.into_string().map_err(|_| ConfigError::NotUnicode {
                    var: mailbox::env::TIMEZONE,
                })?;
                if chrono_tz::Tz::from_str(&value).is_err() {
                    return Err(ConfigError::UnknownTimezone {
                        var: mailbox::env::TIMEZONE,
                        value,
                    });
                }
                Some(value)
            }
        };
        Ok(Config {
            mailbox_dir,
            workspace,
            agent_dir,
            skills_dir,
            timezone,
            bash_path: get("PATH")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| DEFAULT_PATH.into()),
            bash_lang: get("LANG")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| DEFAULT_LANG.into()),
        })
    }

    /// The session's mailbox files, with the workspace as configured.
    pub fn session_paths(&self) -> SessionPaths {
        SessionPaths::from_root(&self.mailbox_dir).with_workspace(self.workspace.clone())
    }
}

fn absolute_path(
    get: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
) -> Result<PathBuf, ConfigError> {
    let value = PathBuf::from(
        get(var)
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing { var })?,
    );
    if !Path::new(&value).is_absolute() {
        return Err(ConfigError::NotAbsolute { var, value });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn valid_environment() {
        let ws = tempfile::tempdir().unwrap();
        let ws_str = ws.path().to_str().unwrap();
        let c = config(&[
            ("CLAWBOX_MAILBOX_DIR", "/mailbox"),
            ("CLAWBOX_WORKSPACE", ws_str),
            ("CLAWBOX_AGENT_DIR", "/workspace/agent"),
            ("TIMEZONE", "Europe/Berlin"),
            ("PATH", "/bin"),
            ("CLAWBOX_SKILLS_DIR", "/app/skills"),
        ])
        .unwrap();
        pretty_assertions::assert_eq!(
            c,
            Config {
                mailbox_dir: "/mailbox".into(),
                workspace: ws.path().to_path_buf(),
                agent_dir: "/workspace/agent".into(),
                skills_dir: Some("/app/skills".into()),
                timezone: Some("Europe/Berlin".into()),
                bash_path: "/bin".into(),
                bash_lang: DEFAULT_LANG.into(),
            }
        );
        let paths = c.session_paths();
        assert_eq!(paths.inbound_db(), Path::new("/mailbox/inbound/inbound.db"));
        assert_eq!(paths.workspace, ws.path());
    }

    #[test]
    fn errors_name_the_variable() {
        let ws = tempfile::tempdir().unwrap();
        let ws_str = ws.path().to_str().unwrap();
        let base = [
            ("CLAWBOX_MAILBOX_DIR", "/mailbox"),
            ("CLAWBOX_WORKSPACE", ws_str),
            ("CLAWBOX_AGENT_DIR", "/agent"),
        ];
        let table: [(&str, Option<&str>, &str); 7] = [
            (
                "CLAWBOX_MAILBOX_DIR",
                None,
                "CLAWBOX_MAILBOX_DIR is not set",
            ),
            (
                "CLAWBOX_WORKSPACE",
                Some(""),
                "CLAWBOX_WORKSPACE is not set",
            ),
            (
                "CLAWBOX_AGENT_DIR",
                Some("agent"),
                "CLAWBOX_AGENT_DIR must be an absolute path",
            ),
            (
                "CLAWBOX_WORKSPACE",
                Some("/definitely/not/here"),
                "CLAWBOX_WORKSPACE must name an existing directory",
            ),
            (
                "TIMEZONE",
                Some("Mars/Olympus"),
                "TIMEZONE is not a known IANA time zone",
            ),
            ("CLAWBOX_AGENT_DIR", None, "CLAWBOX_AGENT_DIR is not set"),
            (
                "CLAWBOX_SKILLS_DIR",
                Some("skills"),
                "CLAWBOX_SKILLS_DIR must be an absolute path",
            ),
        ];
        for (var, value, want) in table {
            let mut vars: Vec<(&str, &str)> =
                base.iter().copied().filter(|(k, _)| *k != var).collect();
            if let Some(v) = value {
                vars.push((var, v));
            }
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.starts_with(want), "{var}={value:?}: {err}");
        }
    }
}
