//! The agent's `container.json` as the runner reads it: the user's MCP servers, in clawside's
//! format. Owns parsing and validation; a problem (a malformed file, a bad entry) becomes a
//! readable line in [`UserServers::problems`] — logged, and shown to the agent so it can tell the
//! user — while every valid entry is still used. Starting the servers is `mcp.rs`'s business.
//!
//! Accepted (all keys optional; other top-level keys, such as clawside's `model` or `packages`,
//! belong to the host and are ignored here):
//! ```json
//! { "mcp_call_timeout_s": 120, "context_tokens": 32000,
//!   "mcp_servers": [ { "name": "time", "command": "uvx", "args": ["mcp-server-time"],
//!                      "env": { "KEY": "value" }, "startup_timeout_ms": 30000,
//!                      "call_timeout_ms": 60000 } ],
//!   "model_params": { "temperature": 0.2, "max_tokens": 1024 }, "stream": true,
//!   "tool_call_content": "null",
//!   "tools": { "tasks": false, "questions": false } }
//! ```
//! or `mcp_servers` as a map from name to the same object without `name`.
//!
//! `model_params` are extra fields of every chat-completions request (`model.rs` merges them
//! in; the fields clawbox owns, [`crate::model::RESERVED_PARAMS`], are refused with a problem
//! line). `stream: false` turns streamed replies off (the answer is then requested whole and
//! shown when the turn ends); `model_params.stream` is the same setting under its older name.
//! `tools` switches groups of built-in tools off ([`TOOL_GROUPS`]): a small-context model
//! then reads fewer tool schemas. A group left out stays on.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The file, in the agent folder.
pub const CONTAINER_JSON: &str = "container.json";
/// A bigger file is refused; a real one is a few hundred bytes.
const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Names a user server cannot have: they mean the built-in server.
pub const RESERVED_NAMES: &[&str] = &["clawbox", "mcp-tools", "builtin", "built-in", "built_in"];

/// What the runner takes from `container.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserServers {
    /// The valid server entries, in file order.
    pub servers: Vec<UserServer>,
    /// `mcp_call_timeout_s`: the call timeout of servers without their own `call_timeout_ms`
    /// (`None`: the runner's `CLAWBOX_TOOL_TIMEOUT_MS`).
    pub call_timeout: Option<Duration>,
    /// `context_tokens`: this agent's context budget, overriding `CLAWBOX_CONTEXT_TOKENS`
    /// (a model with a smaller or larger context than the host's default).
    pub context_tokens: Option<u64>,
    /// `model_params`: extra request fields, reserved ones (and `stream`) removed.
    pub model_params: serde_json::Map<String, Value>,
    /// `stream` (or the older spelling `model_params.stream`): whether replies are streamed
    /// and shown while they are written. `None`: not set (on).
    pub stream: Option<bool>,
    /// Built-in tool groups switched off with `"tools": { "<group>": false }`.
    pub disabled_groups: Vec<&'static str>,
    /// `tool_call_content`: `"empty"` (default) or `"null"`, what an assistant message with
    /// tool calls and no text carries as `content` (`model.rs`).
    pub tool_call_content: crate::model::ToolCallContent,
    /// One readable line per problem, each naming the file and the entry.
    pub problems: Vec<String>,
}

/// The groups of built-in tools an agent can switch off, and their tools.
pub const TOOL_GROUPS: &[(&str, &[&str])] = &[
    (
        "files",
        &["read_file", "write_file", "edit_file", "list_files", "grep"],
    ),
    ("bash", &["run_bash"]),
    (
        "messages",
        &["send_message", "edit_message", "add_reaction", "send_file"],
    ),
    ("questions", &["ask_user_question"]),
    (
        "tasks",
        &[
            "schedule_task",
            "list_tasks",
            "update_task",
            "pause_task",
            "resume_task",
            "cancel_task",
        ],
    ),
    ("skills", &["load_skill"]),
];

impl UserServers {
    /// Whether the built-in tool `name` is offered (its group is not switched off).
    pub fn builtin_enabled(&self, name: &str) -> bool {
        !TOOL_GROUPS
            .iter()
            .any(|(group, tools)| tools.contains(&name) && self.disabled_groups.contains(group))
    }

    /// Whether the group is on.
    pub fn group_enabled(&self, group: &str) -> bool {
        !self.disabled_groups.contains(&group)
    }
}

/// One MCP stdio server the user configured.
#[derive(Debug, Clone, PartialEq)]
pub struct UserServer {
    pub name: String,
    /// Program to run; a bare name is looked up on the server's `PATH`, a relative path is
    /// relative to the session's workspace (the server's working directory).
    pub command: String,
    pub args: Vec<String>,
    /// Variables set for the server on top of the runner's allow-list.
    pub env: BTreeMap<String, String>,
    /// `startup_timeout_ms` (`None`: the runner's default).
    pub startup_timeout: Option<Duration>,
    /// `call_timeout_ms` (`None`: `mcp_call_timeout_s`, else the runner's default).
    pub call_timeout: Option<Duration>,
}

/// The top level, as far as the runner is concerned.
#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    mcp_servers: Option<RawServers>,
    #[serde(default)]
    mcp_call_timeout_s: Option<Value>,
    #[serde(default)]
    context_tokens: Option<Value>,
    model_params: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_call_content: Option<Value>,
}

/// Entries stay untyped until each is parsed on its own, so one bad entry spoils only itself.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawServers {
    List(Vec<Value>),
    Map(OrderedEntries),
    Other(Value),
}

/// A JSON object's entries in file order (serde_json's own map sorts them by key, and which of
/// two colliding tool names wins depends on the order).
struct OrderedEntries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of MCP servers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// One entry as written.
#[derive(Deserialize)]
struct RawServer {
    #[serde(default)]
    name: Option<String>,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, EnvValue>,
    /// Other MCP configuration formats write `"type": "stdio"`; that is the only kind we run.
    #[serde(default, rename = "type")]
    transport: Option<String>,
    #[serde(default)]
    startup_timeout_ms: Option<u64>,
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    /// Anything else: reported, so a misspelt `call_timeout_ms` does not go unnoticed.
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// Environment values: strings, and numbers or booleans that people write without quotes.
#[derive(Deserialize)]
#[serde(untagged)]
enum EnvValue {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl EnvValue {
    fn into_string(self) -> String {
        match self {
            EnvValue::Text(text) => text,
            EnvValue::Number(n) => n.to_string(),
            EnvValue::Bool(b) => b.to_string(),
        }
    }
}

/// Reads `<agent_dir>/container.json`. A missing file means no user servers; an unreadable or
/// malformed one means none either, with the reason in `problems`.
pub async fn read(agent_dir: &Path) -> UserServers {
    let path = agent_dir.join(CONTAINER_JSON);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return UserServers::default(),
        Err(err) => {
            return UserServers {
                problems: vec![format!(
                    "{CONTAINER_JSON} cannot be read ({err}); no MCP servers were started from it"
                )],
                ..UserServers::default()
            };
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        return UserServers {
            problems: vec![format!(
                "{CONTAINER_JSON} is larger than {MAX_FILE_BYTES} bytes; no MCP servers were \
                 started from it"
            )],
            ..UserServers::default()
        };
    }
    parse(&bytes)
}

/// Parses the file's contents. Pure.
pub fn parse(bytes: &[u8]) -> UserServers {
    let mut out = UserServers::default();
    // serde would also accept a list as the struct's fields in order.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        out.problems.push(format!(
            "{CONTAINER_JSON} is not valid: it must hold a JSON object; no MCP servers were \
             started from it"
        ));
        return out;
    }
    let raw: RawFile = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        Err(err) => {
            out.problems.push(format!(
                "{CONTAINER_JSON} is not valid: {err}; no MCP servers were started from it"
            ));
            return out;
        }
    };
    out.call_timeout = match raw.mcp_call_timeout_s {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_f64().filter(|s| s.is_finite() && *s > 0.0) {
            // `Duration::try_from_secs_f64` refuses what does not fit (1e300 s).
            Some(secs) => Duration::try_from_secs_f64(secs).ok().or_else(|| {
                out.problems.push(format!(
                    "{CONTAINER_JSON}: mcp_call_timeout_s={value} is too large; using the default"
                ));
                None
            }),
            None => {
                out.problems.push(format!(
                    "{CONTAINER_JSON}: mcp_call_timeout_s={value} is not a positive number of \
                     seconds; using the default"
                ));
                None
            }
        },
    };
    out.context_tokens = match raw.context_tokens {
        None | Some(Value::Null) => None,
        Some(value) => match value
            .as_u64()
            .filter(|n| *n >= crate::budget::MIN_CONTEXT_TOKENS)
        {
            Some(n) => Some(n),
            None => {
                out.problems.push(format!(
                    "{CONTAINER_JSON}: context_tokens={value} is not a whole number of at least \
                     {}; using the default",
                    crate::budget::MIN_CONTEXT_TOKENS
                ));
                None
            }
        },
    };
    out.stream = match raw.stream {
        None | Some(Value::Null) => None,
        Some(Value::Bool(on)) => Some(on),
        Some(other) => {
            out.problems.push(format!(
                "{CONTAINER_JSON}: stream must be true or false, not {}; streaming stays on",
                kind(&other)
            ));
            None
        }
    };
    match raw.model_params {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            for (key, value) in params {
                if key == crate::model::STREAM_PARAM {
                    // One setting, two spellings: the request field always follows `stream`.
                    match (&value, out.stream) {
                        (Value::Bool(on), None) => out.stream = Some(*on),
                        (Value::Bool(on), Some(top)) if *on == top => {}
                        (Value::Bool(_), Some(top)) => out.problems.push(format!(
                            "{CONTAINER_JSON}: model_params.stream contradicts stream; \
                             using stream: {top}"
                        )),
                        (other, _) => out.problems.push(format!(
                            "{CONTAINER_JSON}: model_params.stream must be true or false, \
                             not {}; ignored",
                            kind(other)
                        )),
                    }
                } else if crate::model::RESERVED_PARAMS.contains(&key.as_str()) {
                    out.problems.push(format!(
                        "{CONTAINER_JSON}: model_params.{key} is set by clawbox itself; ignored"
                    ));
                } else {
                    out.model_params.insert(key, value);
                }
            }
        }
        Some(other) => out.problems.push(format!(
            "{CONTAINER_JSON}: model_params must be an object of request fields, not {}; ignored",
            kind(&other)
        )),
    }
    match raw.tool_call_content {
        None | Some(Value::Null) => {}
        Some(value) => match value
            .as_str()
            .and_then(crate::model::ToolCallContent::parse)
        {
            Some(content) => out.tool_call_content = content,
            None => out.problems.push(format!(
                "{CONTAINER_JSON}: tool_call_content={value} is neither \"empty\" nor \"null\"; \
                 using \"empty\""
            )),
        },
    }
    match raw.tools {
        None | Some(Value::Null) => {}
        Some(Value::Object(groups)) => {
            for (key, value) in groups {
                let Some((group, _)) = TOOL_GROUPS.iter().find(|(g, _)| *g == key) else {
                    let known: Vec<&str> = TOOL_GROUPS.iter().map(|(g, _)| *g).collect();
                    out.problems.push(format!(
                        "{CONTAINER_JSON}: tools.{key} is not a tool group (known: {}); ignored",
                        known.join(", ")
                    ));
                    continue;
                };
                match value {
                    Value::Bool(true) => {}
                    Value::Bool(false) => out.disabled_groups.push(group),
                    other => out.problems.push(format!(
                        "{CONTAINER_JSON}: tools.{key} must be true or false, not {}; the group \
                         stays on",
                        kind(&other)
                    )),
                }
            }
        }
        Some(other) => out.problems.push(format!(
            "{CONTAINER_JSON}: tools must be an object like {{\"tasks\": false}}, not {}; ignored",
            kind(&other)
        )),
    }
    let entries: Vec<(String, Option<String>, Value)> = match raw.mcp_servers {
        None => Vec::new(),
        Some(RawServers::List(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, value)| (format!("mcp_servers[{i}]"), None, value))
            .collect(),
        Some(RawServers::Map(OrderedEntries(map))) => map
            .into_iter()
            .map(|(name, value)| (format!("mcp_servers.{name}"), Some(name), value))
            .collect(),
        Some(RawServers::Other(Value::Null)) => Vec::new(),
        Some(RawServers::Other(other)) => {
            out.problems.push(format!(
                "{CONTAINER_JSON}: mcp_servers must be a list or a map of servers, not {}",
                kind(&other)
            ));
            Vec::new()
        }
    };

    let mut names = HashSet::new();
    for (at, key, value) in entries {
        match server(key, value) {
            Ok((server, notes)) => {
                let label = format!("{CONTAINER_JSON}: MCP server \"{}\"", server.name);
                out.problems
                    .extend(notes.into_iter().map(|note| format!("{label}: {note}")));
                if !names.insert(server.name.to_lowercase()) {
                    out.problems.push(format!(
                        "{label} is configured twice; only the first one was started"
                    ));
                    continue;
                }
                out.servers.push(server);
            }
            Err(reason) => out
                .problems
                .push(format!("{CONTAINER_JSON}: {at} was not started: {reason}")),
        }
    }
    out
}

/// One entry: the server and notes about what was ignored, or why it cannot be used.
fn server(key: Option<String>, value: Value) -> Result<(UserServer, Vec<String>), String> {
    if !value.is_object() {
        return Err(format!("expected an object, found {}", kind(&value)));
    }
    let raw = RawServer::deserialize(value).map_err(|e| e.to_string())?;
    let mut notes = Vec::new();
    let name = match (key, raw.name) {
        (Some(key), Some(inner)) if inner != key => {
            notes.push(format!(
                "its \"name\": \"{inner}\" differs from its key; the key is used"
            ));
            key
        }
        (Some(key), _) => key,
        (None, Some(name)) => name,
        (None, None) => return Err("missing field `name`".to_owned()),
    };
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if RESERVED_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(&name))
    {
        return Err(format!(
            "the name \"{name}\" is reserved for the built-in tools"
        ));
    }
    if let Some(transport) = raw.transport.as_deref()
        && transport != "stdio"
    {
        return Err(format!(
            "\"type\": \"{transport}\" is not supported; only stdio servers (a command) are"
        ));
    }
    if raw.command.trim().is_empty() {
        return Err("the command is empty".to_owned());
    }
    if raw.command.contains('\0') || raw.args.iter().any(|a| a.contains('\0')) {
        return Err("the command or an argument contains a NUL character".to_owned());
    }
    let mut env = BTreeMap::new();
    for (key, value) in raw.env {
        let value = value.into_string();
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!("env: {key:?} is not a valid variable"));
        }
        env.insert(key, value);
    }
    let millis = |field: &str, ms: Option<u64>| match ms {
        Some(0) => Err(format!("{field} must be at least 1")),
        other => Ok(other.map(Duration::from_millis)),
    };
    if !raw.unknown.is_empty() {
        let keys: Vec<&str> = raw.unknown.keys().map(String::as_str).collect();
        notes.push(format!("unknown keys ignored: {}", keys.join(", ")));
    }
    Ok((
        UserServer {
            name,
            command: raw.command,
            args: raw.args,
            env,
            startup_timeout: millis("startup_timeout_ms", raw.startup_timeout_ms)?,
            call_timeout: millis("call_timeout_ms", raw.call_timeout_ms)?,
        },
        notes,
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn parse_json(value: Value) -> UserServers {
        parse(value.to_string().as_bytes())
    }

    fn time_server() -> UserServer {
        UserServer {
            name: "time".to_owned(),
            command: "uvx".to_owned(),
            args: vec!["mcp-server-time".to_owned()],
            env: BTreeMap::from([("LOCAL".to_owned(), "1".to_owned())]),
            startup_timeout: None,
            call_timeout: None,
        }
    }

    #[test]
    fn list_and_map_forms() {
        let list = parse_json(json!({
            "model": "gpt-4o",
            "packages": [],
            "mcp_servers": [
                { "name": "time", "command": "uvx", "args": ["mcp-server-time"], "env": { "LOCAL": "1" } },
            ],
        }));
        assert_eq!(
            list,
            UserServers {
                servers: vec![time_server()],
                call_timeout: None,
                context_tokens: None,
                problems: vec![],
                ..UserServers::default()
            }
        );
        let map = parse_json(json!({
            "mcp_servers": { "time": { "command": "uvx", "args": ["mcp-server-time"], "env": { "LOCAL": 1 } } },
        }));
        assert_eq!(map, list);
    }

    #[test]
    fn map_entries_keep_file_order() {
        let text = r#"{"mcp_servers": {"zeta": {"command": "z"}, "alpha": {"command": "a"}}}"#;
        let names: Vec<String> = parse(text.as_bytes())
            .servers
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["zeta", "alpha"]);
    }

    #[test]
    fn context_tokens() {
        let parsed = parse_json(json!({ "context_tokens": 32000 }));
        assert_eq!(
            (parsed.context_tokens, parsed.problems),
            (Some(32_000), Vec::<String>::new())
        );
        assert_eq!(parse_json(json!({})).context_tokens, None);
        for bad in [json!(10), json!(-1), json!("big"), json!(1.5)] {
            let parsed = parse_json(json!({ "context_tokens": bad }));
            assert_eq!(parsed.context_tokens, None, "{bad}");
            assert_eq!(parsed.problems.len(), 1, "{bad}");
            assert!(parsed.problems[0].contains("context_tokens"), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        let parsed = parse_json(json!({
            "mcp_call_timeout_s": 1.5,
            "mcp_servers": [
                { "name": "a", "command": "a", "startup_timeout_ms": 500, "call_timeout_ms": 2000, "type": "stdio" },
            ],
        }));
        assert_eq!(parsed.problems, Vec::<String>::new());
        assert_eq!(parsed.call_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            parsed.servers[0].startup_timeout,
            Some(Duration::from_millis(500))
        );
        assert_eq!(parsed.servers[0].call_timeout, Some(Duration::from_secs(2)));
        for bad in [json!(0), json!(-1), json!("soon"), json!(1e300)] {
            let parsed = parse_json(json!({ "mcp_call_timeout_s": bad }));
            assert_eq!(parsed.call_timeout, None);
            assert_eq!(parsed.problems.len(), 1, "{bad}");
            assert!(
                parsed.problems[0].contains("mcp_call_timeout_s"),
                "{:?}",
                parsed.problems
            );
        }
    }

    #[test]
    fn bad_entries_are_reported_and_the_others_kept() {
        let parsed = parse_json(json!({
            "mcp_servers": [
                { "name": "time", "command": "uvx", "args": ["mcp-server-time"], "env": { "LOCAL": "1" } },
                { "name": "nocommand" },
                "just a string",
                { "command": "anonymous" },
                { "name": "clawbox", "command": "x" },
                { "name": "Time", "command": "again" },
                { "name": "web", "type": "http", "command": "x" },
                { "name": "slow", "command": "x", "call_timeout_ms": 0 },
                { "name": "args", "command": "x", "args": "not-a-list" },
                { "name": "typo", "command": "x", "call_timout_ms": 5 },
            ],
        }));
        let names: Vec<&str> = parsed.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["time", "typo"]);
        assert_eq!(
            parsed.problems,
            [
                "container.json: mcp_servers[1] was not started: missing field `command`",
                "container.json: mcp_servers[2] was not started: expected an object, found a string",
                "container.json: mcp_servers[3] was not started: missing field `name`",
                "container.json: mcp_servers[4] was not started: the name \"clawbox\" is reserved for the built-in tools",
                "container.json: MCP server \"Time\" is configured twice; only the first one was started",
                "container.json: mcp_servers[6] was not started: \"type\": \"http\" is not supported; only stdio servers (a command) are",
                "container.json: mcp_servers[7] was not started: call_timeout_ms must be at least 1",
                "container.json: mcp_servers[8] was not started: invalid type: string \"not-a-list\", expected a sequence",
                "container.json: MCP server \"typo\": unknown keys ignored: call_timout_ms",
            ]
        );
    }

    #[test]
    fn a_malformed_file_is_one_problem() {
        let table: [(&[u8], &str); 4] = [
            (b"{ not json", "container.json is not valid: "),
            (b"[1, 2]", "container.json is not valid: "),
            (
                br#"{"mcp_servers": "time"}"#,
                "container.json: mcp_servers must be a list or a map of servers, not a string",
            ),
            (
                br#"{"mcp_servers": {"a": {"command": "a", "name": "b"}}}"#,
                "container.json: MCP server \"a\": its \"name\": \"b\" differs from its key; the key is used",
            ),
        ];
        for (text, want) in table {
            let parsed = parse(text);
            assert_eq!(parsed.problems.len(), 1, "{parsed:?}");
            assert!(
                parsed.problems[0].starts_with(want),
                "{:?}",
                parsed.problems
            );
        }
        assert_eq!(parse(b"{}"), UserServers::default());
        assert_eq!(parse(br#"{"mcp_servers": null}"#), UserServers::default());
    }

    #[tokio::test]
    async fn a_missing_file_is_no_servers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).await, UserServers::default());
        std::fs::write(dir.path().join(CONTAINER_JSON), b"{oops").unwrap();
        assert_eq!(read(dir.path()).await.problems.len(), 1);
    }

    #[test]
    fn model_params_and_tool_groups() {
        let parsed = parse_json(json!({
            "model_params": { "temperature": 0.2, "max_tokens": 64, "model": "x", "stream": false },
            "tools": { "tasks": false, "questions": false, "files": true, "bash": "no", "mail": false },
        }));
        assert_eq!(
            Value::Object(parsed.model_params.clone()),
            json!({ "temperature": 0.2, "max_tokens": 64 })
        );
        assert_eq!(parsed.stream, Some(false));
        assert_eq!(parsed.disabled_groups, ["questions", "tasks"]);
        assert_eq!(
            parsed.problems,
            [
                "container.json: model_params.model is set by clawbox itself; ignored",
                "container.json: tools.bash must be true or false, not a string; the group stays on",
                "container.json: tools.mail is not a tool group (known: files, bash, messages, \
                 questions, tasks, skills); ignored",
            ]
        );
        assert!(!parsed.builtin_enabled("schedule_task"));
        assert!(!parsed.builtin_enabled("ask_user_question"));
        assert!(parsed.builtin_enabled("run_bash"));
        assert!(parsed.builtin_enabled("read_file"));
        assert!(!parsed.group_enabled("tasks"));

        let wrong = parse_json(json!({ "model_params": [1], "tools": false }));
        assert_eq!(
            wrong.problems,
            [
                "container.json: model_params must be an object of request fields, not a list; \
                 ignored",
                "container.json: tools must be an object like {\"tasks\": false}, not a \
                 boolean; ignored",
            ]
        );
        assert!(wrong.model_params.is_empty() && wrong.disabled_groups.is_empty());
    }

    #[test]
    fn tool_call_content() {
        use crate::model::ToolCallContent;
        assert_eq!(
            parse_json(json!({})).tool_call_content,
            ToolCallContent::Empty
        );
        let null = parse_json(json!({ "tool_call_content": "null" }));
        assert_eq!(null.tool_call_content, ToolCallContent::Null);
        assert!(null.problems.is_empty(), "{:?}", null.problems);
        let empty = parse_json(json!({ "tool_call_content": "empty" }));
        assert_eq!(empty.tool_call_content, ToolCallContent::Empty);
        let wrong = parse_json(json!({ "tool_call_content": null, "x": 1 }));
        assert_eq!(wrong.tool_call_content, ToolCallContent::Empty);
        let wrong = parse_json(json!({ "tool_call_content": "none" }));
        assert_eq!(wrong.tool_call_content, ToolCallContent::Empty);
        assert_eq!(
            wrong.problems,
            [
                "container.json: tool_call_content=\"none\" is neither \"empty\" nor \"null\"; \
              using \"empty\""
            ]
        );
    }

    #[test]
    fn stream_is_one_setting_under_two_names() {
        let table = [
            // (container.json, stream, problems)
            (json!({}), None, 0),
            (json!({ "stream": false }), Some(false), 0),
            (json!({ "stream": true }), Some(true), 0),
            (
                json!({ "model_params": { "stream": false } }),
                Some(false),
                0,
            ),
            (
                json!({ "stream": true, "model_params": { "stream": true } }),
                Some(true),
                0,
            ),
            (
                json!({ "stream": false, "model_params": { "stream": true } }),
                Some(false),
                1,
            ),
            (json!({ "stream": "no" }), None, 1),
            (json!({ "model_params": { "stream": 1 } }), None, 1),
        ];
        for (file, stream, problems) in table {
            let parsed = parse_json(file.clone());
            assert_eq!(parsed.stream, stream, "{file}");
            assert_eq!(
                parsed.problems.len(),
                problems,
                "{file}: {:?}",
                parsed.problems
            );
            assert!(parsed.model_params.get("stream").is_none(), "{file}");
        }
    }
}
