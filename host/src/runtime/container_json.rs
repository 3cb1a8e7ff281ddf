//! The host's part of an agent's `groups/<folder>/container.json`: container limits, network,
//! extra mounts, and whether chats show what the agent's tool calls do (`show_tools`). Owns parsing and validation, including the security checks on extra
//! mounts; applying them to a container is `docker.rs`'s business, and the runner reads its own
//! keys ([`RUNNER_KEYS`]: MCP servers, model settings, tool groups) from the same file.
//!
//! ```json
//! { "memory_mb": 2048, "cpus": 1.5, "pids_limit": 512, "network": "bridge",
//!   "additional_mounts": [
//!     { "host_path": "/srv/photos", "container_path": "photos", "readonly": true } ],
//!   "show_tools": false }
//! ```
//! `show_tools` (default `true`): whether Telegram shows a progress line ("running
//! `npm test`…") under the draft of a reply while the agent's tools run; the terminal shows it
//! either way. The supervisor reads it with [`show_tools`] when it starts a runner (both
//! runtimes), the docker runtime and `clawbox doctor` check it with the rest.
//! Every key is optional. The runner's keys ([`RUNNER_KEYS`]) and clawside's ([`CLAWSIDE_KEYS`])
//! are left to their readers; any other key is an error naming it, with the key it most likely
//! meant (`memroy_mb` → `memory_mb`). A key of ours with a bad value is an error naming it too,
//! and the runner does not start: a typo must not silently give an agent the default network or
//! no limit.
//!
//! Extra mounts land under [`EXTRA_ROOT`]: `container_path` is a name (`photos` →
//! `/workspace/extra/photos`), or an absolute path below `/workspace/extra/`; without it the
//! host directory's own name is used. `readonly` defaults to **true**. The host path must be
//! absolute, exist, and pass [`check_host_path`].

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::ContainerLimits;

/// The file, in the agent folder.
pub const CONTAINER_JSON: &str = "container.json";
/// Where extra mounts appear inside a container.
pub const EXTRA_ROOT: &str = "/workspace/extra";
/// The keys this module reads.
pub const HOST_KEYS: &[&str] = &[
    "memory_mb",
    "cpus",
    "pids_limit",
    "network",
    "additional_mounts",
    "show_tools",
];
/// The keys the agent-runner reads (`agent-runner/src/container_config.rs`).
pub const RUNNER_KEYS: &[&str] = &[
    "mcp_servers",
    "mcp_call_timeout_s",
    "context_tokens",
    "model_params",
    "tools",
    "tool_call_content",
    "stream",
];
/// Keys of clawside's container.json that clawbox does not use (a copied file still loads).
pub const CLAWSIDE_KEYS: &[&str] = &[
    "provider",
    "model",
    "assistant_name",
    "agent_group_id",
    "max_messages_per_prompt",
    "skills",
    "packages",
    "cli_scope",
    "image",
];
/// A bigger file is refused; a real one is a few hundred bytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Names that hold credentials: a mount of such a path, of anything inside one, or of a
/// directory that directly contains one is refused.
const SECRET_NAMES: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".env",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    "docker.sock",
];
/// System directories that are never mounted, nor anything inside them.
const SYSTEM_DIRS: &[&str] = &["/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run"];

/// The network of an agent's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// No network at all (the default); the model is reached through the proxy's socket.
    None,
    /// Docker's default bridge: outbound internet access.
    Bridge,
}

impl Network {
    pub fn docker_mode(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

/// One validated extra mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    /// Canonical host path (symlinks resolved).
    pub host_path: PathBuf,
    /// Absolute path below [`EXTRA_ROOT`].
    pub container_path: String,
    pub readonly: bool,
}

/// What the docker runtime applies to one agent's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSettings {
    pub limits: ContainerLimits,
    pub network: Network,
    pub mounts: Vec<ExtraMount>,
    /// `show_tools`: see the module's header.
    pub show_tools: bool,
}

/// Why an agent's container settings cannot be used; the runner is not started and the
/// pending messages fail with this text.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON: {reason}", path.display())]
    Json { path: PathBuf, reason: String },
    /// A field of ours has a bad value; the message names the field.
    #[error("{}: `{field}` {problem}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

/// What the host needs to judge extra mounts.
#[derive(Debug, Clone)]
pub struct MountPolicy {
    /// `DATA_DIR` and `GROUPS_DIR` (canonical): never mounted, nor their parents or children.
    pub protected: Vec<PathBuf>,
}

impl MountPolicy {
    pub fn new(protected: &[&Path]) -> Self {
        MountPolicy {
            protected: protected
                .iter()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
                .collect(),
        }
    }
}

/// Our keys, as written. Values stay untyped so a wrong type is reported with the field name.
#[derive(Deserialize, Default)]
struct RawFile {
    memory_mb: Option<Value>,
    cpus: Option<Value>,
    pids_limit: Option<Value>,
    network: Option<Value>,
    additional_mounts: Option<Value>,
    show_tools: Option<Value>,
    /// Everything else: the runner's and clawside's keys, or a mistake.
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host_path: String,
    #[serde(default)]
    container_path: Option<String>,
    #[serde(default)]
    readonly: Option<bool>,
}

/// Reads and validates `<agent_dir>/container.json`. A missing file means the defaults.
pub fn load(
    agent_dir: &Path,
    defaults: ContainerLimits,
    policy: &MountPolicy,
) -> Result<ContainerSettings, SettingsError> {
    let path = agent_dir.join(CONTAINER_JSON);
    let text = match read_limited(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(SettingsError::Read { path, source }),
    };
    parse(&path, &text, defaults, policy)
}

/// Reads `show_tools` from `<agent_dir>/container.json` (a missing file or key: `true`),
/// checking only that key: the docker runtime and doctor check the others.
pub fn show_tools(agent_dir: &Path) -> Result<bool, SettingsError> {
    let path = agent_dir.join(CONTAINER_JSON);
    let text = match read_limited(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => return Err(SettingsError::Read { path, source }),
    };
    if text.trim().is_empty() {
        return Ok(true);
    }
    let raw: RawFile = serde_json::from_str(&text).map_err(|e| SettingsError::Json {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_show_tools(&path, raw.show_tools.as_ref())
}

fn parse_show_tools(path: &Path, value: Option<&Value>) -> Result<bool, SettingsError> {
    match value {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SettingsError::Field {
            path: path.to_path_buf(),
            field: "show_tools".into(),
            problem: format!("must be true or false, not {other}"),
        }),
    }
}

/// Reads a regular file (not through a symlink: the agent can write its folder) of bounded size.
fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other("larger than 1 MB"));
    }
    Ok(text)
}

/// Parses the file's text (empty: defaults).
pub fn parse(
    path: &Path,
    text: &str,
    defaults: ContainerLimits,
    policy: &MountPolicy,
) -> Result<ContainerSettings, SettingsError> {
    let field = |field: &str, problem: String| SettingsError::Field {
        path: path.to_path_buf(),
        field: field.to_owned(),
        problem,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        serde_json::from_str(text).map_err(|e| SettingsError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
    };

    let known = || {
        HOST_KEYS
            .iter()
            .chain(RUNNER_KEYS)
            .chain(CLAWSIDE_KEYS)
            .copied()
    };
    if let Some(key) = raw.other.keys().find(|k| !known().any(|c| c == k.as_str())) {
        let problem = match crate::config::did_you_mean(key, known()) {
            Some(meant) => format!("is not a container.json key; did you mean `{meant}`?"),
            None => format!(
                "is not a container.json key (known: {})",
                HOST_KEYS
                    .iter()
                    .chain(RUNNER_KEYS)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(field(key, problem));
    }
    let mut limits = defaults;
    if let Some(v) = raw.memory_mb.filter(|v| !v.is_null()) {
        let mb = v.as_u64().ok_or_else(|| {
            field(
                "memory_mb",
                format!("must be a whole number of MB, not {v}"),
            )
        })?;
        limits.memory_mb =
            ContainerLimits::check_memory_mb(mb).map_err(|p| field("memory_mb", p))?;
    }
    if let Some(v) = raw.cpus.filter(|v| !v.is_null()) {
        let cpus = v
            .as_f64()
            .ok_or_else(|| field("cpus", format!("must be a number of CPUs, not {v}")))?;
        limits.cpus = ContainerLimits::check_cpus(cpus).map_err(|p| field("cpus", p))?;
    }
    if let Some(v) = raw.pids_limit.filter(|v| !v.is_null()) {
        let pids = v
            .as_i64()
            .ok_or_else(|| field("pids_limit", format!("must be a whole number, not {v}")))?;
        limits.pids = ContainerLimits::check_pids(pids).map_err(|p| field("pids_limit", p))?;
    }
    let network = match raw.network.as_ref().filter(|v| !v.is_null()) {
        None => Network::None,
        Some(Value::String(s)) if s == "none" => Network::None,
        Some(Value::String(s)) if s == "bridge" => Network::Bridge,
        Some(other) => {
            return Err(field(
                "network",
                format!("must be \"none\" or \"bridge\", not {other}"),
            ));
        }
    };
    let mounts = match raw.additional_mounts.filter(|v| !v.is_null()) {
        None => Vec::new(),
        Some(Value::Array(entries)) => {
            let mut mounts = Vec::with_capacity(entries.len());
            let mut targets = BTreeSet::new();
            for (i, entry) in entries.into_iter().enumerate() {
                let name = format!("additional_mounts[{i}]");
                let raw: RawMount =
                    serde_json::from_value(entry).map_err(|e| field(&name, e.to_string()))?;
                let mount = validate_mount(&raw, policy).map_err(|p| field(&name, p))?;
                if !targets.insert(mount.container_path.clone()) {
                    return Err(field(
                        &name,
                        format!("mounts a second directory at {}", mount.container_path),
                    ));
                }
                mounts.push(mount);
            }
            mounts
        }
        Some(other) => {
            return Err(field(
                "additional_mounts",
                format!("must be a list of mounts, not {other}"),
            ));
        }
    };
    let show_tools = parse_show_tools(path, raw.show_tools.as_ref())?;
    Ok(ContainerSettings {
        limits,
        network,
        mounts,
        show_tools,
    })
}

fn validate_mount(raw: &RawMount, policy: &MountPolicy) -> Result<ExtraMount, String> {
    let given = Path::new(&raw.host_path);
    check_odd_characters(&raw.host_path).map_err(|p| format!("host_path {p}"))?;
    if !given.is_absolute() {
        return Err(format!(
            "host_path must be absolute, not {:?}",
            raw.host_path
        ));
    }
    let host_path = std::fs::canonicalize(given)
        .map_err(|e| format!("host_path {:?} cannot be used: {e}", raw.host_path))?;
    check_host_path(&host_path, policy)
        .map_err(|p| format!("host_path {:?} {p}", raw.host_path))?;
    let container_path = match &raw.container_path {
        Some(p) => container_path(p)?,
        None => {
            let name = host_path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| "needs a container_path".to_owned())?;
            container_path(name)?
        }
    };
    Ok(ExtraMount {
        host_path,
        container_path,
        readonly: raw.readonly.unwrap_or(true),
    })
}

/// Refuses characters that have a meaning in `-v` specs or break logs and labels; mounts are
/// passed as structured `Mount`s, so this is a second fence, not the first.
fn check_odd_characters(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = s.chars().find(|c| matches!(c, ':' | ',') || c.is_control()) {
        return Err(format!(
            "contains {c:?}, which is not allowed in mount paths"
        ));
    }
    Ok(())
}

/// The deny-list, on a canonical host path: not `/`, not a system directory or anything inside
/// one, not a secret location, anything inside one or a directory directly holding one, and not
/// the data or groups directory, anything inside them, or a parent of them (which would hand the
/// agent every conversation and every agent's settings).
pub fn check_host_path(path: &Path, policy: &MountPolicy) -> Result<(), String> {
    if path == Path::new("/") {
        return Err("is the root directory".into());
    }
    for dir in SYSTEM_DIRS {
        if path.starts_with(dir) {
            return Err(format!("is a system location ({dir})"));
        }
    }
    for component in path.components() {
        if let Component::Normal(name) = component
            && let Some(secret) = SECRET_NAMES.iter().find(|s| name == **s)
        {
            return Err(format!("is or is inside a secret location ({secret})"));
        }
    }
    if path.is_dir()
        && let Some(secret) = SECRET_NAMES.iter().find(|s| path.join(s).exists())
    {
        return Err(format!(
            "contains {secret}, a secret location; mount a subdirectory without it"
        ));
    }
    for protected in &policy.protected {
        if path.starts_with(protected) || protected.starts_with(path) {
            return Err(format!(
                "overlaps clawbox's own directory {}",
                protected.display()
            ));
        }
    }
    Ok(())
}

/// `photos` → `/workspace/extra/photos`; `/workspace/extra/a/b` stays; anything that would
/// leave `/workspace/extra` or shadow it is refused.
fn container_path(p: &str) -> Result<String, String> {
    check_odd_characters(p).map_err(|e| format!("container_path {e}"))?;
    let path = Path::new(p);
    let relative = if path.is_absolute() {
        path.strip_prefix(EXTRA_ROOT).map_err(|_| {
            format!("container_path must be below {EXTRA_ROOT}/ (or a plain name), not {p:?}")
        })?
    } else {
        path
    };
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(name) => parts.push(
                name.to_str()
                    .ok_or_else(|| format!("container_path {p:?} is not UTF-8"))?,
            ),
            Component::CurDir => {}
            _ => return Err(format!("container_path {p:?} must not contain `..`")),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "container_path {p:?} names no directory below {EXTRA_ROOT}"
        ));
    }
    Ok(format!("{EXTRA_ROOT}/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    const DEFAULTS: ContainerLimits = ContainerLimits {
        memory_mb: 1024,
        cpus: 1.0,
        pids: 256,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        policy: MountPolicy,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("groups")).unwrap();
        std::fs::create_dir_all(root.join("photos")).unwrap();
        let policy = MountPolicy::new(&[&root.join("data"), &root.join("groups")]);
        Fixture { dir, policy }
    }

    impl Fixture {
        fn root(&self) -> PathBuf {
            std::fs::canonicalize(self.dir.path()).unwrap()
        }

        fn parse(&self, text: &str) -> Result<ContainerSettings, SettingsError> {
            parse(Path::new("container.json"), text, DEFAULTS, &self.policy)
        }

        fn mount_error(&self, entry: Value) -> String {
            let text = serde_json::json!({ "additional_mounts": [entry] }).to_string();
            match self.parse(&text) {
                Err(SettingsError::Field { field, problem, .. }) => {
                    assert_eq!(field, "additional_mounts[0]");
                    problem
                }
                other => panic!("expected a field error, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_or_foreign_keys_mean_defaults() {
        let f = fixture();
        for text in [
            "",
            "{}",
            r#"{"mcp_servers": [], "model": "x", "packages": []}"#,
            // The runner's settings (agent-runner/src/container_config.rs).
            r#"{"context_tokens": 8000, "model_params": {"temperature": 0.2},
                "tools": {"tasks": false}, "tool_call_content": "null", "stream": false}"#,
        ] {
            assert_eq!(
                f.parse(text).unwrap(),
                ContainerSettings {
                    limits: DEFAULTS,
                    network: Network::None,
                    mounts: vec![],
                    show_tools: true,
                }
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_likely_key() {
        let f = fixture();
        let table = [
            // (file, field named, problem contains)
            (
                r#"{"memroy_mb": 512}"#,
                "memroy_mb",
                "did you mean `memory_mb`?",
            ),
            (
                r#"{"netwrok": "bridge"}"#,
                "netwrok",
                "did you mean `network`?",
            ),
            (
                r#"{"mcp_server": []}"#,
                "mcp_server",
                "did you mean `mcp_servers`?",
            ),
            (r#"{"colour": "blue"}"#, "colour", "known: memory_mb, cpus"),
        ];
        for (text, want_field, want_problem) in table {
            match f.parse(text) {
                Err(SettingsError::Field { field, problem, .. }) => {
                    assert_eq!(field, want_field, "{text}");
                    assert!(problem.contains(want_problem), "{text}: {problem}");
                }
                other => panic!("{text}: expected a field error, got {other:?}"),
            }
        }
    }

    #[test]
    fn did_you_mean_takes_the_closest_within_two_edits() {
        let vars = [
            "TELEGRAM_BOT_TOKEN",
            "TELEGRAM_API_URL",
            "DATA_DIR",
            "MAX_TRIES",
        ];
        let table = [
            ("TELEGRAM_BOT_TOKE", Some("TELEGRAM_BOT_TOKEN")),
            ("TELEGRAM_BOT_TOKEN_", Some("TELEGRAM_BOT_TOKEN")),
            ("DATA_DIRS", Some("DATA_DIR")),
            ("MAX_TRIE", Some("MAX_TRIES")),
            ("EDITOR", None),
            ("PATH", None),
        ];
        for (word, want) in table {
            assert_eq!(crate::config::did_you_mean(word, vars), want, "{word}");
        }
        // Short words match nothing far away.
        assert_eq!(crate::config::did_you_mean("ab", ["cd"]), None);
    }

    #[test]
    fn overrides_are_applied() {
        let f = fixture();
        let s = f
            .parse(r#"{"memory_mb": 2048, "cpus": 0.5, "pids_limit": 64, "network": "bridge"}"#)
            .unwrap();
        assert_eq!(
            s.limits,
            ContainerLimits {
                memory_mb: 2048,
                cpus: 0.5,
                pids: 64
            }
        );
        assert_eq!(s.network, Network::Bridge);
        assert!(s.show_tools);
        assert!(!f.parse(r#"{"show_tools": false}"#).unwrap().show_tools);
    }

    #[test]
    fn show_tools_is_read_alone_and_checked() {
        let f = fixture();
        let dir = f.root().join("agent");
        std::fs::create_dir_all(&dir).unwrap();
        // No file: shown.
        assert!(show_tools(&dir).unwrap());
        let table = [
            ("", Some(true)),
            ("{}", Some(true)),
            (r#"{"show_tools": null}"#, Some(true)),
            (r#"{"show_tools": true, "memory_mb": 512}"#, Some(true)),
            (r#"{"show_tools": false, "stream": true}"#, Some(false)),
            (r#"{"show_tools": "no"}"#, None),
            (r#"{"show_tools": 0}"#, None),
        ];
        for (text, want) in table {
            std::fs::write(dir.join(CONTAINER_JSON), text).unwrap();
            match (show_tools(&dir), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{text}"),
                (Err(SettingsError::Field { field, .. }), None) => {
                    assert_eq!(field, "show_tools", "{text}");
                }
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
        std::fs::write(dir.join(CONTAINER_JSON), "{not json").unwrap();
        assert!(matches!(show_tools(&dir), Err(SettingsError::Json { .. })));
    }

    #[test]
    fn bad_values_name_the_field() {
        let f = fixture();
        let table = [
            (r#"{"memory_mb": "1g"}"#, "memory_mb"),
            (r#"{"memory_mb": 4}"#, "memory_mb"),
            (r#"{"memory_mb": -5}"#, "memory_mb"),
            (r#"{"cpus": 0}"#, "cpus"),
            (r#"{"cpus": "two"}"#, "cpus"),
            (r#"{"pids_limit": 2}"#, "pids_limit"),
            (r#"{"network": "host"}"#, "network"),
            (r#"{"network": true}"#, "network"),
            (r#"{"additional_mounts": {"a": 1}}"#, "additional_mounts"),
            (r#"{"show_tools": "yes"}"#, "show_tools"),
        ];
        for (text, want) in table {
            match f.parse(text) {
                Err(SettingsError::Field { field, .. }) => assert_eq!(field, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            f.parse("{not json"),
            Err(SettingsError::Json { .. })
        ));
    }

    #[test]
    fn a_mount_lands_under_extra_and_is_readonly_by_default() {
        let f = fixture();
        let photos = f.root().join("photos");
        let text = serde_json::json!({ "additional_mounts": [
            { "host_path": photos },
            { "host_path": photos, "container_path": "/workspace/extra/rw/pics", "readonly": false },
        ]})
        .to_string();
        let s = f.parse(&text).unwrap();
        assert_eq!(
            s.mounts,
            vec![
                ExtraMount {
                    host_path: photos.clone(),
                    container_path: "/workspace/extra/photos".into(),
                    readonly: true
                },
                ExtraMount {
                    host_path: photos,
                    container_path: "/workspace/extra/rw/pics".into(),
                    readonly: false
                },
            ]
        );
    }

    #[test]
    fn dangerous_mounts_are_refused() {
        let f = fixture();
        let root = f.root();
        std::fs::create_dir_all(root.join("home/.ssh")).unwrap();
        std::fs::create_dir_all(root.join("project")).unwrap();
        std::fs::write(root.join("project/.env"), "KEY=1").unwrap();
        std::os::unix::fs::symlink(root.join("home/.ssh"), root.join("innocent")).unwrap();
        let table: Vec<(Value, &str)> = vec![
            (serde_json::json!({"host_path": "/"}), "root directory"),
            (serde_json::json!({"host_path": "/etc"}), "system location"),
            (
                serde_json::json!({"host_path": "/proc/self"}),
                "system location",
            ),
            (
                serde_json::json!({"host_path": "/var/run"}),
                "system location",
            ),
            (serde_json::json!({"host_path": "relative/dir"}), "absolute"),
            (
                serde_json::json!({"host_path": "/no/such/dir"}),
                "cannot be used",
            ),
            (
                serde_json::json!({"host_path": root.join("home/.ssh")}),
                ".ssh",
            ),
            (
                serde_json::json!({"host_path": root.join("innocent")}),
                ".ssh",
            ),
            (
                serde_json::json!({"host_path": root.join("home")}),
                "contains .ssh",
            ),
            (
                serde_json::json!({"host_path": root.join("project")}),
                "contains .env",
            ),
            (
                serde_json::json!({"host_path": root.join("data")}),
                "clawbox's own",
            ),
            (
                serde_json::json!({"host_path": root.join("groups")}),
                "clawbox's own",
            ),
            (serde_json::json!({"host_path": root}), "clawbox's own"),
            (
                serde_json::json!({"host_path": format!("{}:/etc", root.join("photos").display())}),
                "not allowed",
            ),
            (
                serde_json::json!({"host_path": root.join("photos"), "container_path": "/etc"}),
                "below /workspace/extra",
            ),
            (
                serde_json::json!({"host_path": root.join("photos"), "container_path": "../../etc"}),
                "..",
            ),
            (
                serde_json::json!({"host_path": root.join("photos"), "container_path": "/workspace/extra"}),
                "names no directory",
            ),
            (
                serde_json::json!({"host_path": root.join("photos"), "mode": "rw"}),
                "unknown field",
            ),
        ];
        for (entry, want) in table {
            let problem = f.mount_error(entry.clone());
            assert!(problem.contains(want), "{entry}: {problem}");
        }
    }

    #[test]
    fn two_mounts_at_one_place_are_refused() {
        let f = fixture();
        let photos = f.root().join("photos");
        let text = serde_json::json!({ "additional_mounts": [
            { "host_path": photos }, { "host_path": photos, "container_path": "photos" }
        ]})
        .to_string();
        match f.parse(&text) {
            Err(SettingsError::Field { field, problem, .. }) => {
                assert_eq!(field, "additional_mounts[1]");
                assert!(problem.contains("second directory"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_symlinked_file_is_not_read() {
        let f = fixture();
        let agent = f.root().join("agent");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(f.root().join("elsewhere.json"), "{}").unwrap();
        std::os::unix::fs::symlink(f.root().join("elsewhere.json"), agent.join(CONTAINER_JSON))
            .unwrap();
        assert!(matches!(
            load(&agent, DEFAULTS, &f.policy),
            Err(SettingsError::Read { .. })
        ));
    }
}
