//! Provisioning agents from the command line (`create-agent`): create or update an agent, wire
//! it to a Telegram chat and/or the terminal, grant its owner, list agents, remove one. Owns
//! flag parsing and validation and the rows it writes; routing decisions stay in `session::router`,
//! first-start defaults in `db::bootstrap`.
//!
//! Unlike clawside's `create_telegram_agent.py` (reference §12): every value is checked before
//! anything is written, a re-run changes only what its flags name, the agent folder's files are
//! never overwritten, and each chat gets its own destination (`telegram-<chat id>`), so wiring a
//! second chat never re-points the first one's.
//!
//! The host reads wirings from the central DB on every message, so changes apply live; SQLite's
//! WAL lets this run beside a running host. Destinations are copied into a session's mailbox
//! when its runner starts, so a running session sees a new destination after its next start.

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Parser, ValueEnum};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::config::Config;
use crate::db::bootstrap::{self, CLI_CHAT, CLI_USER, DEFAULT_AGENT};
use crate::db::{self, Db, DbError, ts};

/// mention-sticky: how long a chat (or topic) may be quiet before a new mention is needed.
pub const DEFAULT_STICKY_WINDOW_S: i64 = 30 * 60;

/// Create or update an agent and wire it to chats; list or remove agents.
#[derive(Debug, Parser)]
#[command(name = "create-agent", version)]
pub struct Args {
    /// Agent id (`[A-Za-z0-9_.-]`, not starting with `.`); names the session directories.
    #[arg(long, value_parser = parse_agent_id, required_unless_present = "list")]
    pub agent_id: Option<String>,
    /// Display name (default on creation: the agent id).
    #[arg(long, conflicts_with_all = ["list", "remove"])]
    pub agent_name: Option<String>,
    /// Folder under GROUPS_DIR (default on creation: the agent id). Fixed once the agent exists.
    #[arg(long, value_parser = parse_folder, conflicts_with_all = ["list", "remove"])]
    pub agent_folder: Option<String>,
    /// Model of this agent (`""` goes back to DEFAULT_MODEL).
    #[arg(long, conflicts_with_all = ["list", "remove"])]
    pub model: Option<String>,
    /// Telegram chat to wire: an integer, negative for groups.
    #[arg(long, value_parser = parse_chat_id, allow_hyphen_values = true, conflicts_with_all = ["list", "remove"])]
    pub telegram_chat_id: Option<i64>,
    /// User who gets the `owner` role: `telegram:<numeric user id>`, `telegram:@username`
    /// (bound to the numeric id when that user first writes), or `cli:local`.
    #[arg(long, value_parser = parse_user_id, conflicts_with_all = ["list", "remove"])]
    pub owner_user_id: Option<String>,
    /// When the agent answers in the Telegram chat (new wirings: mention-sticky).
    #[arg(long, value_enum, requires = "telegram_chat_id")]
    pub engage_mode: Option<EngageMode>,
    /// Regex for `--engage-mode pattern` (`.` = every message).
    #[arg(long, value_parser = parse_pattern, requires = "telegram_chat_id")]
    pub engage_pattern: Option<String>,
    /// How long the agent keeps answering without a mention (mention-sticky): `600`, `90s`,
    /// `30m`, `2h`, `1d` (new wirings: 30 minutes).
    #[arg(long, value_parser = parse_duration_s, allow_hyphen_values = true, requires = "telegram_chat_id")]
    pub sticky_window: Option<i64>,
    /// Which messages share a session (new wirings: shared).
    #[arg(long, value_enum, requires = "telegram_chat_id")]
    pub session_mode: Option<SessionMode>,
    /// Messages from senders without a role on the agent (new chats: strict).
    #[arg(long, value_parser = parse_policy, requires = "telegram_chat_id")]
    pub unknown_sender_policy: Option<SenderPolicy>,
    /// Messages that do not engage the agent: dropped, or kept as context for its next turn
    /// (new wirings: drop).
    #[arg(long, value_enum, requires = "telegram_chat_id")]
    pub ignored_messages: Option<IgnoredMessages>,
    /// Also answer in the terminal chat (`clawbox chat`), next to the agents already there.
    #[arg(long, conflicts_with_all = ["list", "remove"])]
    pub cli: bool,
    /// Print every agent with its wirings, destinations and roles.
    #[arg(long, conflicts_with = "remove")]
    pub list: bool,
    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Remove the agent's rows (wirings, roles, destinations, sessions); its folder and its
    /// session data on disk are kept.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngageMode {
    /// Messages matching `--engage-pattern`.
    Pattern,
    /// Messages that mention the bot.
    Mention,
    /// A mention, then every message for `--sticky-window`.
    MentionSticky,
}

impl EngageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EngageMode::Pattern => "pattern",
            EngageMode::Mention => "mention",
            EngageMode::MentionSticky => "mention-sticky",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionMode {
    /// One session per chat.
    Shared,
    /// One session per thread (forum topic) of the chat.
    PerThread,
    /// One session for the agent across all its chats.
    AgentShared,
}

impl SessionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::Shared => "shared",
            SessionMode::PerThread => "per-thread",
            SessionMode::AgentShared => "agent-shared",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderPolicy {
    /// Only users with a role on the agent are answered.
    Strict,
    /// Everyone in the chat is answered.
    Public,
    /// The agent's owners are asked (Allow / Deny) the first time an unknown sender writes.
    RequestApproval,
}

impl SenderPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderPolicy::Strict => "strict",
            SenderPolicy::Public => "public",
            SenderPolicy::RequestApproval => "request_approval",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IgnoredMessages {
    /// Not kept.
    Drop,
    /// Kept as context: the agent sees them with the next message that engages it.
    Accumulate,
}

impl IgnoredMessages {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredMessages::Drop => "drop",
            IgnoredMessages::Accumulate => "accumulate",
        }
    }
}

/// Errors of `create-agent`; [`ProvisionError::exit_code`] maps them to the process status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A flag is wrong given the others or the DB; nothing was written. Exit status 2.
    #[error("{flag}: {problem}")]
    Usage { flag: &'static str, problem: String },
    /// The DB holds something this run would have to overwrite; nothing was written. Exit 1.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ProvisionError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ProvisionError::Usage { .. } => 2,
            ProvisionError::Conflict(_) | ProvisionError::Db(_) | ProvisionError::Io { .. } => 1,
        }
    }

    fn usage(flag: &'static str, problem: impl Into<String>) -> Self {
        ProvisionError::Usage {
            flag,
            problem: problem.into(),
        }
    }
}

impl From<rusqlite::Error> for ProvisionError {
    fn from(e: rusqlite::Error) -> Self {
        ProvisionError::Db(DbError::Sqlite(e))
    }
}

// ---------------------------------------------------------------------------------------------
// Flag parsers: clap reports their errors naming the flag, with exit status 2.

fn parse_agent_id(s: &str) -> Result<String, String> {
    mailbox::layout::validate_id("agent id", s)
        .map(|()| s.to_owned())
        .map_err(|_| "use 1-128 of [A-Za-z0-9_.-], not starting with `.`".into())
}

fn parse_folder(s: &str) -> Result<String, String> {
    if mailbox::layout::validate_id("agent folder", s).is_err() {
        return Err(
            "must be one folder name directly under GROUPS_DIR: 1-128 of \
                    [A-Za-z0-9_.-], not starting with `.` (no `/`, `..` or absolute paths)"
                .into(),
        );
    }
    if s == "global" {
        return Err(
            "`global` is reserved: groups/global/CLAUDE.md is part of every agent's prompt".into(),
        );
    }
    Ok(s.to_owned())
}

fn parse_chat_id(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    match s.parse::<i64>() {
        Ok(id) if id != 0 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(id)
        }
        _ => Err(
            "expected Telegram's numeric chat id, e.g. 123456789 or -1001234567890 for a group"
                .into(),
        ),
    }
}

fn parse_user_id(s: &str) -> Result<String, String> {
    if s == CLI_USER {
        return Ok(s.to_owned());
    }
    let Some(rest) = s.strip_prefix("telegram:") else {
        return Err("expected `telegram:<numeric user id>` (or `cli:local`)".into());
    };
    if let Some(name) = rest.strip_prefix('@') {
        // Telegram usernames: 5-32 of [A-Za-z0-9_], case-insensitive.
        let valid = (5..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        return if valid {
            Ok(format!("telegram:@{}", name.to_lowercase()))
        } else {
            Err(format!(
                "a Telegram username has 5-32 letters, digits or `_` (got {s:?})"
            ))
        };
    }
    match rest.parse::<u64>() {
        Ok(n) if n > 0 && rest.bytes().all(|b| b.is_ascii_digit()) => Ok(format!("telegram:{n}")),
        _ => Err("expected `telegram:<numeric user id>`, e.g. telegram:123456789".into()),
    }
}

fn parse_pattern(s: &str) -> Result<String, String> {
    regex::Regex::new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

fn parse_duration_s(s: &str) -> Result<i64, String> {
    const MAX_S: i64 = 30 * 86_400;
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err("unit must be s, m, h or d (e.g. 30m)".into()),
    };
    match num.parse::<i64>() {
        Ok(n) if (0..=MAX_S).contains(&n) && num.bytes().all(|b| b.is_ascii_digit()) => {
            let secs = n * scale;
            if secs <= MAX_S {
                Ok(secs)
            } else {
                Err("at most 30 days".into())
            }
        }
        _ => Err("expected seconds or a number with s, m, h or d (e.g. 600 or 30m)".into()),
    }
}

fn parse_policy(s: &str) -> Result<SenderPolicy, String> {
    match s {
        "strict" => Ok(SenderPolicy::Strict),
        "public" => Ok(SenderPolicy::Public),
        "request_approval" | "request-approval" => Ok(SenderPolicy::RequestApproval),
        _ => Err("expected strict, public or request_approval".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// Opens the central DB (creating it and the defaults if the host never ran) and does what
/// `args` asks; returns what to print on stdout.
pub async fn run(config: &Config, args: Args) -> Result<String, ProvisionError> {
    check_flags(&args)?;
    let db = open_db(config).await?;
    let groups_dir = config.groups_dir.clone();
    let sessions_dir = config.sessions_dir();
    // The outer DbResult is the blocking task; the inner result is ours.
    db.call(move |conn| Ok(execute(conn, &groups_dir, &sessions_dir, &args)))
        .await?
}

/// Opens the central DB for writing beside a running host (WAL), creating `DATA_DIR` (mode
/// 0700), the database and the first-start defaults if no host ran yet.
pub async fn open_db(config: &Config) -> Result<Db, ProvisionError> {
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|source| ProvisionError::Io {
        action: "create",
        path: data.clone(),
        source,
    })?;
    // Same as the host: everything under DATA_DIR is private.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(
        |source| ProvisionError::Io {
            action: "chmod",
            path: data.clone(),
            source,
        },
    )?;
    let db_path = config.db_path();
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
        .await
        .map_err(|e| DbError::Task(e.to_string()))??;
    let assistant = config.assistant_name.clone();
    db.call(move |conn| bootstrap::ensure_defaults(conn, &assistant))
        .await?;
    Ok(db)
}

/// Checks between flags that clap's attributes cannot express (the Telegram-only flags need
/// `--telegram-chat-id`, which conflicts with `--remove`, so clap refuses those already).
fn check_flags(args: &Args) -> Result<(), ProvisionError> {
    if args.remove && args.agent_id.as_deref() == Some(DEFAULT_AGENT) {
        return Err(ProvisionError::usage(
            "--remove",
            "the `default` agent cannot be removed: the host recreates it at every start and \
             the terminal talks to it",
        ));
    }
    Ok(())
}

fn execute(
    conn: &mut Connection,
    groups_dir: &Path,
    sessions_dir: &Path,
    args: &Args,
) -> Result<String, ProvisionError> {
    if args.list {
        let agents = db::list_agents(conn)?;
        return Ok(if args.json {
            serde_json::to_string_pretty(&db::Listing { agents })
                .map_err(|e| DbError::Malformed(e.to_string()))?
                + "\n"
        } else {
            agents.iter().map(render).collect()
        });
    }
    let Some(agent_id) = args.agent_id.as_deref() else {
        return Err(ProvisionError::usage("--agent-id", "required"));
    };
    if args.remove {
        return remove(conn, groups_dir, sessions_dir, agent_id);
    }
    provision(conn, groups_dir, agent_id, args)
}

fn provision(
    conn: &mut Connection,
    groups_dir: &Path,
    agent_id: &str,
    args: &Args,
) -> Result<String, ProvisionError> {
    let now = ts(Utc::now());
    // IMMEDIATE: checks and writes see one state even with the host writing beside us.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    // Checks first; the transaction only commits after the folder exists.
    let existing = db::agent_group(&tx, agent_id)?;
    let folder = match (&existing, &args.agent_folder) {
        (Some(a), Some(f)) if *f != a.folder => {
            return Err(ProvisionError::usage(
                "--agent-folder",
                format!(
                    "agent {agent_id} already uses folder {:?}; moving an agent's folder is not supported",
                    a.folder
                ),
            ));
        }
        (Some(a), _) => a.folder.clone(),
        (None, f) => f.clone().unwrap_or_else(|| agent_id.to_owned()),
    };
    if existing.is_none() {
        let taken: Option<String> = tx
            .query_row(
                "SELECT id FROM agent_groups WHERE folder = ?1",
                [&folder],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = taken {
            return Err(ProvisionError::usage(
                "--agent-folder",
                format!("folder {folder:?} belongs to agent {other}"),
            ));
        }
    }
    let telegram = match args.telegram_chat_id {
        Some(chat) => Some(plan_telegram(&tx, agent_id, chat, args)?),
        None => None,
    };
    let mut destinations = Vec::new();
    if let Some(t) = &telegram {
        destinations.push((
            t.destination.clone(),
            format!("Telegram {}", t.chat),
            "telegram",
            t.chat.to_string(),
        ));
    }
    if args.cli {
        destinations.push((
            "cli".to_owned(),
            "CLI".to_owned(),
            "cli",
            "local".to_owned(),
        ));
    }
    for (name, _, channel, platform) in &destinations {
        let current: Option<(String, String)> = tx
            .query_row(
                "SELECT channel_type, platform_id FROM destinations WHERE agent_group_id = ?1 AND name = ?2",
                params![agent_id, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((c, p)) = current
            && (c.as_str(), p.as_str()) != (*channel, platform.as_str())
        {
            return Err(ProvisionError::Conflict(format!(
                "destination {name:?} of agent {agent_id} points to {c}:{p}; refusing to re-point \
                 it (rename or delete that row first)"
            )));
        }
    }

    // Writes.
    match &existing {
        None => {
            tx.execute(
                "INSERT INTO agent_groups (id, name, folder, model, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    agent_id,
                    args.agent_name.as_deref().unwrap_or(agent_id),
                    folder,
                    args.model.as_deref().filter(|m| !m.is_empty()),
                    now
                ],
            )?;
            // As in clawside, the terminal's user owns every agent: it is the host's operator.
            tx.execute(
                "INSERT OR IGNORE INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
                 VALUES (?1, ?2, 'owner', ?1, ?3)",
                params![CLI_USER, agent_id, now],
            )?;
        }
        Some(_) => {
            if let Some(name) = &args.agent_name {
                tx.execute(
                    "UPDATE agent_groups SET name = ?1 WHERE id = ?2",
                    params![name, agent_id],
                )?;
            }
            if let Some(model) = &args.model {
                tx.execute(
                    "UPDATE agent_groups SET model = ?1 WHERE id = ?2",
                    params![Some(model.as_str()).filter(|m| !m.is_empty()), agent_id],
                )?;
            }
        }
    }
    if let Some(owner) = &args.owner_user_id {
        // A username already seen is its numeric id; otherwise the grant waits under the
        // username until that user first writes (db::note_user binds it then).
        let owner = match owner.strip_prefix("telegram:@") {
            Some(_) => db::alias_target(&tx, owner)?.unwrap_or_else(|| owner.clone()),
            None => owner.clone(),
        };
        let kind = owner.split(':').next().unwrap_or("telegram");
        tx.execute(
            "INSERT OR IGNORE INTO users (id, kind, created_at) VALUES (?1, ?2, ?3)",
            params![owner, kind, now],
        )?;
        tx.execute(
            "INSERT INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
             VALUES (?1, ?2, 'owner', ?3, ?4)
             ON CONFLICT (user_id, agent_group_id) DO UPDATE SET role = 'owner'",
            params![owner, agent_id, CLI_USER, now],
        )?;
    }
    if let Some(t) = &telegram {
        write_telegram(&tx, agent_id, t, &now)?;
    }
    if args.cli {
        tx.execute(
            "INSERT OR IGNORE INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
             VALUES (?1, ?2, ?3, 'pattern', '.', ?4)",
            params![format!("wire:{CLI_CHAT}:{agent_id}"), CLI_CHAT, agent_id, now],
        )?;
    }
    for (name, display, channel, platform) in &destinations {
        tx.execute(
            "INSERT OR IGNORE INTO destinations (agent_group_id, name, display_name, channel_type, platform_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![agent_id, name, display, channel, platform, now],
        )?;
    }
    bootstrap::ensure_group_folder(groups_dir, &folder).map_err(|source| ProvisionError::Io {
        action: "create agent folder",
        path: groups_dir.join(&folder),
        source,
    })?;
    tx.commit()?;

    let verb = if existing.is_some() {
        "updated"
    } else {
        "created"
    };
    let agent = db::list_agents(conn)?
        .into_iter()
        .find(|a| a.id == agent_id)
        .ok_or_else(|| DbError::Malformed(format!("agent {agent_id} vanished")))?;
    Ok(format!(
        "{verb} agent {agent_id} (folder {})\n{}",
        groups_dir.join(&folder).display(),
        render(&agent)
    ))
}

/// The Telegram wiring this run ends up with, computed from the flags and the current row.
struct TelegramPlan {
    chat: i64,
    /// The chat's existing row id, or the one to create.
    chat_row: Option<String>,
    wiring_exists: bool,
    engage_mode: &'static str,
    engage_pattern: Option<String>,
    sticky_window_s: i64,
    ignored: &'static str,
    session_mode: &'static str,
    policy: Option<SenderPolicy>,
    destination: String,
}

fn plan_telegram(
    conn: &Connection,
    agent_id: &str,
    chat: i64,
    args: &Args,
) -> Result<TelegramPlan, ProvisionError> {
    let row = db::messaging_group_by_platform(conn, "telegram", &chat.to_string())?;
    let wiring = match &row {
        Some(mg) => db::wirings_of(conn, &mg.id)?
            .into_iter()
            .find(|w| w.agent_group_id == agent_id),
        None => None,
    };
    let old_mode = wiring.as_ref().map(|w| w.engage_mode.clone());
    let engage_mode = match (args.engage_mode, old_mode.as_deref()) {
        (Some(m), _) => m.as_str(),
        (None, Some("pattern")) => "pattern",
        (None, Some("mention")) => "mention",
        (None, Some(_) | None) => "mention-sticky",
    };
    // A stored pattern survives a re-run that keeps pattern mode.
    let engage_pattern = match &args.engage_pattern {
        Some(p) => Some(p.clone()),
        None if old_mode.as_deref() == Some(engage_mode) => {
            wiring.as_ref().and_then(|w| w.engage_pattern.clone())
        }
        None => None,
    };
    match (engage_mode, &engage_pattern) {
        ("pattern", None) => {
            return Err(ProvisionError::usage(
                "--engage-pattern",
                "required with --engage-mode pattern (`.` answers every message)",
            ));
        }
        ("mention" | "mention-sticky", Some(_)) if args.engage_pattern.is_some() => {
            return Err(ProvisionError::usage(
                "--engage-pattern",
                format!("only used with --engage-mode pattern (the mode is {engage_mode})"),
            ));
        }
        _ => {}
    }
    Ok(TelegramPlan {
        chat,
        chat_row: row.map(|mg| mg.id),
        wiring_exists: wiring.is_some(),
        engage_mode,
        engage_pattern: if engage_mode == "pattern" {
            engage_pattern
        } else {
            None
        },
        sticky_window_s: args
            .sticky_window
            .or(wiring.as_ref().map(|w| w.sticky_window_s))
            .unwrap_or(DEFAULT_STICKY_WINDOW_S),
        ignored: args
            .ignored_messages
            .map(IgnoredMessages::as_str)
            .or(wiring.as_ref().map(|w| {
                if w.ignored_message_policy == "accumulate" {
                    "accumulate"
                } else {
                    "drop"
                }
            }))
            .unwrap_or("drop"),
        session_mode: match (
            args.session_mode,
            wiring.as_ref().map(|w| w.session_mode.as_str()),
        ) {
            (Some(m), _) => m.as_str(),
            (None, Some("per-thread")) => "per-thread",
            (None, Some("agent-shared")) => "agent-shared",
            (None, _) => "shared",
        },
        policy: args.unknown_sender_policy,
        destination: format!("telegram-{chat}"),
    })
}

fn write_telegram(
    tx: &Connection,
    agent_id: &str,
    t: &TelegramPlan,
    now: &str,
) -> Result<(), ProvisionError> {
    let chat_row = match &t.chat_row {
        Some(id) => id.clone(),
        None => {
            let id = format!("mg:telegram:{}", t.chat);
            tx.execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group,
                                               unknown_sender_policy, created_at)
                 VALUES (?1, 'telegram', ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    t.chat.to_string(),
                    format!("Telegram {}", t.chat),
                    t.chat < 0,
                    t.policy.unwrap_or(SenderPolicy::Strict).as_str(),
                    now
                ],
            )?;
            id
        }
    };
    if t.chat_row.is_some()
        && let Some(policy) = t.policy
    {
        // The policy belongs to the chat, so it applies to every agent wired there.
        tx.execute(
            "UPDATE messaging_groups SET unknown_sender_policy = ?1 WHERE id = ?2",
            params![policy.as_str(), chat_row],
        )?;
    }
    if t.wiring_exists {
        tx.execute(
            "UPDATE wirings SET engage_mode = ?1, engage_pattern = ?2, sticky_window_s = ?3, session_mode = ?4,
                 ignored_message_policy = ?5
             WHERE messaging_group_id = ?6 AND agent_group_id = ?7",
            params![
                t.engage_mode,
                t.engage_pattern,
                t.sticky_window_s,
                t.session_mode,
                t.ignored,
                chat_row,
                agent_id
            ],
        )?;
    } else {
        tx.execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern,
                                  sticky_window_s, session_mode, ignored_message_policy, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                format!("wire:{chat_row}:{agent_id}"),
                chat_row,
                agent_id,
                t.engage_mode,
                t.engage_pattern,
                t.sticky_window_s,
                t.session_mode,
                t.ignored,
                now
            ],
        )?;
    }
    Ok(())
}

fn remove(
    conn: &mut Connection,
    groups_dir: &Path,
    sessions_dir: &Path,
    agent_id: &str,
) -> Result<String, ProvisionError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(agent) = db::agent_group(&tx, agent_id)? else {
        return Err(ProvisionError::usage(
            "--agent-id",
            format!("no agent {agent_id:?} (see --list)"),
        ));
    };
    let busy: i64 = tx.query_row(
        "SELECT COUNT(*) FROM sessions WHERE agent_group_id = ?1 AND runner_state != 'stopped'",
        [agent_id],
        |r| r.get(0),
    )?;
    if busy > 0 {
        return Err(ProvisionError::Conflict(format!(
            "agent {agent_id} has {busy} session(s) with a runner; wait until they are idle \
             (IDLE_TIMEOUT_MS) or stop the host, then retry"
        )));
    }
    // Wirings, roles, destinations, sessions and their token counts go by ON DELETE CASCADE.
    tx.execute("DELETE FROM agent_groups WHERE id = ?1", [agent_id])?;
    // Chats nothing uses any more; the terminal chat belongs to the host.
    tx.execute(
        "DELETE FROM messaging_groups WHERE id != ?1
           AND id NOT IN (SELECT messaging_group_id FROM wirings)
           AND id NOT IN (SELECT messaging_group_id FROM sessions)",
        [CLI_CHAT],
    )?;
    tx.commit()?;
    Ok(format!(
        "removed agent {agent_id}; kept its folder {} and its session data {}\n",
        groups_dir.join(&agent.folder).display(),
        sessions_dir.join(agent_id).display()
    ))
}

fn render(a: &db::AgentListing) -> String {
    let mut out = format!(
        "{}  {:?}  folder={}  model={}\n",
        a.id,
        a.name,
        a.folder,
        a.model.as_deref().unwrap_or("(DEFAULT_MODEL)")
    );
    for w in &a.wirings {
        let engage = match &w.engage_pattern {
            Some(p) => format!("{} {p:?}", w.engage_mode),
            None => w.engage_mode.clone(),
        };
        out += &format!(
            "  chat {}:{}  engage={engage}  sticky={}s  session={}  unknown-senders={}  ignored={}\n",
            w.channel_type,
            w.platform_id,
            w.sticky_window_s,
            w.session_mode,
            w.unknown_sender_policy,
            w.ignored_messages
        );
    }
    for d in &a.destinations {
        out += &format!(
            "  destination {} -> {}:{}\n",
            d.name, d.channel_type, d.platform_id
        );
    }
    for r in &a.roles {
        out += &format!("  {} {}\n", r.role, r.user_id);
    }
    out
}
