//! The operator's files, read the way the host will read them: each agent's `container.json`
//! (values, unknown keys, mounts the docker runtime would refuse — through
//! `runtime::container_json`, the code that applies it) and `.env` (a variable clawbox does not
//! read but that is a few edits away from one it does: a typo that would silently fall back to
//! the default).

use super::*;
use crate::runtime::container_json::{self, MountPolicy};

/// Variables read outside [`Config`] (the log filter).
const OTHER_VARS: &[&str] = &["RUST_LOG"];

pub(super) fn container_checks(config: &Config, agents: &[AgentInfo]) -> Vec<Check> {
    let policy = MountPolicy::new(&[&config.data_dir, &config.groups_dir]);
    agents
        .iter()
        .filter_map(|agent| {
            let dir = config.groups_dir.join(&agent.folder);
            let file = dir.join(container_json::CONTAINER_JSON);
            if !file.exists() {
                return None;
            }
            let name = format!("container.json {}", agent.id);
            Some(
                match container_json::load(&dir, config.container_limits, &policy) {
                    Ok(settings) => Check::ok(
                        name,
                        format!(
                            "{}: {} MB, {} CPUs, network {}, {} extra mounts",
                            file.display(),
                            settings.limits.memory_mb,
                            settings.limits.cpus,
                            settings.network.docker_mode(),
                            settings.mounts.len()
                        ),
                    ),
                    Err(e) => Check::fail(
                        name,
                        e.to_string(),
                        format!(
                            "fix {}: the agent's runner is not started while it is wrong \
                             (keys: docs/containers.md)",
                            file.display()
                        ),
                    ),
                },
            )
        })
        .collect()
}

/// Every variable clawbox reads: what [`Config::from_lookup`] asks for, and [`OTHER_VARS`].
pub fn known_variables() -> Vec<String> {
    let asked = std::sync::Mutex::new(Vec::new());
    // With nothing set every variable has its default, so every lookup happens.
    let _ = Config::from_lookup(
        |k| {
            asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(k.to_owned());
            None
        },
        Path::new("/"),
    );
    let mut vars = asked.into_inner().unwrap_or_else(|e| e.into_inner());
    vars.extend(OTHER_VARS.iter().map(|v| (*v).to_owned()));
    vars.sort();
    vars.dedup();
    vars
}

/// Names in `.env` that clawbox does not read but that look like a variable it does.
pub fn env_checks(env_file: Option<&Path>) -> Vec<Check> {
    let Some(path) = env_file else {
        return Vec::new();
    };
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) => {
            return vec![Check::fail(
                ".env",
                format!("cannot read {}: {e}", path.display()),
                "fix the file's permissions",
            )];
        }
    };
    let known = known_variables();
    let mut checks = Vec::new();
    for item in iter {
        let key = match item {
            Ok((key, _)) => key,
            Err(e) => {
                checks.push(Check::fail(
                    ".env",
                    format!("{}: {e}", path.display()),
                    "each line is NAME=value (quote values with spaces or #)",
                ));
                break;
            }
        };
        if known.contains(&key) {
            continue;
        }
        if let Some(meant) = crate::config::did_you_mean(&key, known.iter().map(String::as_str)) {
            checks.push(Check::fail(
                ".env",
                format!(
                    "{} sets {key}, which clawbox does not read; it looks like {meant}",
                    path.display()
                ),
                format!("rename {key} to {meant}"),
            ));
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            ".env",
            format!("{}: no misspelt variable", path.display()),
        ));
    }
    checks
}
