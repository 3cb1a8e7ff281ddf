//! The central database `data/clawbox.db` (host-only, WAL): agents, chats, wirings, users and
//! roles, sessions, destinations, dropped messages, scheduled tasks. Owns schema migrations and
//! the typed queries; routing decisions live in `router.rs`, the task queries in `tasks.rs`.
//!
//! One connection behind a mutex; every query runs on tokio's blocking pool through
//! [`Db::call`], never on an async worker thread.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused; callers log it and treat the operation as not done.
    #[error("central database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the query panicked or was cancelled.
    #[error("central database task failed: {0}")]
    Task(String),
    /// The database was written by a newer clawbox.
    #[error("central database has schema version {found}; this build supports up to {supported}")]
    TooNew { found: i64, supported: i64 },
    /// A stored value does not decode.
    #[error("central database row is malformed: {0}")]
    Malformed(String),
    /// A read-only open found no database: no host has run with this `DATA_DIR` yet.
    #[error("no central database at {}: no host has run with this DATA_DIR yet", .0.display())]
    Absent(std::path::PathBuf),
    /// A read-only open found an older schema; only a host migrates it.
    #[error(
        "central database has schema version {found}, older than this build's {supported}: start the host once (`clawbox run`) to upgrade it"
    )]
    TooOld { found: i64, supported: i64 },
}

pub type DbResult<T> = Result<T, DbError>;

/// Numbered migrations; each runs with its `user_version` bump in one transaction.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE agent_groups (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        folder     TEXT NOT NULL UNIQUE,
        model      TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE messaging_groups (
        id                    TEXT PRIMARY KEY,
        channel_type          TEXT NOT NULL,
        platform_id           TEXT NOT NULL,
        name                  TEXT,
        is_group              INTEGER NOT NULL DEFAULT 0,
        unknown_sender_policy TEXT NOT NULL DEFAULT 'strict'
                              CHECK (unknown_sender_policy IN ('strict', 'public')),
        created_at            TEXT NOT NULL,
        UNIQUE (channel_type, platform_id)
    );
    CREATE TABLE wirings (
        id                     TEXT PRIMARY KEY,
        messaging_group_id     TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        agent_group_id         TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        engage_mode            TEXT NOT NULL CHECK (engage_mode IN ('pattern', 'mention', 'mention-sticky')),
        engage_pattern         TEXT,
        sticky_window_s        INTEGER NOT NULL DEFAULT 600,
        sender_scope           TEXT NOT NULL DEFAULT 'all' CHECK (sender_scope IN ('all', 'known')),
        ignored_message_policy TEXT NOT NULL DEFAULT 'drop' CHECK (ignored_message_policy IN ('drop', 'accumulate')),
        session_mode           TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared', 'per-thread', 'agent-shared')),
        priority               INTEGER NOT NULL DEFAULT 0,
        created_at             TEXT NOT NULL,
        UNIQUE (messaging_group_id, agent_group_id)
    );
    CREATE TABLE users (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        display_name TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE TABLE user_roles (
        user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
        granted_by     TEXT,
        granted_at     TEXT NOT NULL,
        PRIMARY KEY (user_id, agent_group_id)
    );
    CREATE TABLE sessions (
        id                 TEXT PRIMARY KEY,
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        thread_id          TEXT,
        status             TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
        runner_state       TEXT NOT NULL DEFAULT 'stopped' CHECK (runner_state IN ('stopped', 'running', 'waiting')),
        last_activity      TEXT NOT NULL,
        created_at         TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sessions_key ON sessions(agent_group_id, messaging_group_id, COALESCE(thread_id, ''))
        WHERE status = 'active';
    CREATE INDEX sessions_busy ON sessions(runner_state) WHERE runner_state != 'stopped';
    CREATE TABLE destinations (
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        display_name   TEXT,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        thread_id      TEXT,
        created_at     TEXT NOT NULL,
        PRIMARY KEY (agent_group_id, name)
    );
    CREATE TABLE dropped_messages (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        sender_id      TEXT,
        sender_name    TEXT,
        agent_group_id TEXT,
        reason         TEXT NOT NULL,
        at             TEXT NOT NULL
    );",
    // 2: tokens the model proxy forwarded, per session and calendar day (proxy.rs).
    "CREATE TABLE token_usage (
        session_id        TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        day               TEXT NOT NULL,
        prompt_tokens     INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        requests          INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, day)
    );",
    // 3: the Telegram channel. Chats may ask the owner about unknown senders
    // (`request_approval`, a CHECK change, so the table is rebuilt); usernames are aliases of
    // numeric ids; mention-sticky engagement has its own scopes (agent, chat, topic); unknown
    // senders wait in `approvals` with their messages held; `telegram_updates` is the
    // journal that lets the poller confirm an update before it is routed.
    "CREATE TABLE messaging_groups_new (
        id                    TEXT PRIMARY KEY,
        channel_type          TEXT NOT NULL,
        platform_id           TEXT NOT NULL,
        name                  TEXT,
        is_group              INTEGER NOT NULL DEFAULT 0,
        unknown_sender_policy TEXT NOT NULL DEFAULT 'strict'
                              CHECK (unknown_sender_policy IN ('strict', 'public', 'request_approval')),
        created_at            TEXT NOT NULL,
        UNIQUE (channel_type, platform_id)
    );
    INSERT INTO messaging_groups_new
        SELECT id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at
        FROM messaging_groups;
    DROP TABLE messaging_groups;
    ALTER TABLE messaging_groups_new RENAME TO messaging_groups;
    CREATE TABLE user_aliases (
        alias    TEXT PRIMARY KEY,
        user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        bound_at TEXT NOT NULL
    );
    CREATE TABLE engagements (
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        thread_key         TEXT NOT NULL DEFAULT '',
        last_activity      TEXT NOT NULL,
        PRIMARY KEY (agent_group_id, messaging_group_id, thread_key)
    );
    CREATE TABLE approvals (
        id                 TEXT PRIMARY KEY,
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        sender_id          TEXT NOT NULL,
        sender_name        TEXT,
        status             TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'allowed', 'denied')),
        cards              TEXT NOT NULL DEFAULT '[]',
        created_at         TEXT NOT NULL,
        decided_by         TEXT,
        decided_at         TEXT,
        UNIQUE (agent_group_id, sender_id)
    );
    CREATE TABLE held_messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        approval_id TEXT NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
        event       TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE telegram_updates (
        bot_id      INTEGER NOT NULL,
        update_id   INTEGER NOT NULL,
        chat_key    TEXT NOT NULL,
        payload     TEXT NOT NULL,
        received_at TEXT NOT NULL,
        done_at     TEXT,
        PRIMARY KEY (bot_id, update_id)
    );
    CREATE INDEX telegram_updates_open ON telegram_updates(bot_id, update_id) WHERE done_at IS NULL;",
    // 4: scheduled tasks, their run history, and the journal of answered tool requests
    // (tasks.rs, scheduler.rs, requests.rs).
    "CREATE TABLE tasks (
        id             TEXT PRIMARY KEY,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        prompt         TEXT NOT NULL,
        script         TEXT,
        schedule_kind  TEXT NOT NULL CHECK (schedule_kind IN ('once', 'cron')),
        run_at         TEXT,
        cron           TEXT,
        timezone       TEXT NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('active', 'paused', 'cancelled', 'completed')),
        next_run       TEXT,
        last_run       TEXT,
        last_outcome   TEXT,
        run_count      INTEGER NOT NULL DEFAULT 0,
        created_by     TEXT NOT NULL,
        requested_by   TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        CHECK ((schedule_kind = 'once') = (run_at IS NOT NULL AND cron IS NULL))
    );
    CREATE INDEX tasks_due ON tasks(next_run) WHERE status = 'active';
    CREATE INDEX tasks_by_agent ON tasks(agent_group_id, status);
    CREATE TABLE task_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id       TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        scheduled_for TEXT NOT NULL,
        fired_at      TEXT NOT NULL,
        trigger       TEXT NOT NULL CHECK (trigger IN ('schedule', 'run-now')),
        session_id    TEXT NOT NULL,
        inbound_seq   INTEGER,
        outcome       TEXT NOT NULL CHECK (outcome IN ('fired', 'skipped-overlap', 'script-false',
                          'script-error', 'completed', 'failed')),
        detail        TEXT,
        UNIQUE (task_id, scheduled_for)
    );
    CREATE INDEX task_runs_open ON task_runs(session_id, inbound_seq) WHERE outcome = 'fired';
    CREATE TABLE tool_requests (
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        request_seq INTEGER NOT NULL,
        op          TEXT NOT NULL,
        ok          INTEGER NOT NULL,
        body        TEXT NOT NULL,
        at          TEXT NOT NULL,
        PRIMARY KEY (session_id, request_seq)
    );",
    // 5: questions agents ask people (questions.rs): shown as buttons or numbered options,
    // answered by the asker or an owner/admin, or expired; `delivered` once the outcome is in
    // the session's inbox.
    "CREATE TABLE questions (
        id             TEXT PRIMARY KEY,
        session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        request_seq    INTEGER NOT NULL,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        thread_id      TEXT,
        asked_by       TEXT,
        title          TEXT NOT NULL,
        question       TEXT NOT NULL,
        options        TEXT NOT NULL,
        timeout_s      INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'answered', 'expired')),
        card           TEXT,
        created_at     TEXT NOT NULL,
        expires_at     TEXT NOT NULL,
        outcome        TEXT,
        closed_at      TEXT,
        delivered      INTEGER NOT NULL DEFAULT 0,
        UNIQUE (session_id, request_seq)
    );
    CREATE INDEX questions_open ON questions(expires_at) WHERE status = 'pending';
    CREATE INDEX questions_undelivered ON questions(closed_at)
        WHERE status != 'pending' AND delivered = 0;",
];

#[derive(Clone)]
pub struct Db {
    // std Mutex, locked only inside blocking tasks and never across an `.await`.
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating and migrating) the central database.
    pub fn open(path: &Path) -> DbResult<Db> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // The central DB never crosses a container mount, so WAL is safe and lets status
        // readers run beside the writer.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> DbResult<R>
    where
        F: FnOnce(&mut Connection) -> DbResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| DbError::Task("connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// Opens the central database read-only, for operator commands while no host runs. Never
/// creates, migrates or writes anything (SQLite may create the WAL's `-shm`/`-wal` files next
/// to it, and removes them again on close).
pub fn open_read_only(path: &Path) -> DbResult<Connection> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Err(DbError::Absent(path.to_path_buf()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(DbError::TooNew { found, supported });
    }
    if found < supported {
        return Err(DbError::TooOld { found, supported });
    }
    Ok(conn)
}

/// Applies the missing migrations in one transaction. Foreign keys are off meanwhile, as
/// SQLite's procedure for rebuilding a table requires (a migration that replaces a parent table
/// must not cascade into its children); the transaction checks them before it commits.
fn migrate(conn: &mut Connection) -> DbResult<()> {
    let supported = MIGRATIONS.len() as i64;
    // Cannot change inside a transaction, hence here.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > supported {
            return Err(DbError::TooNew { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        let broken: Option<String> = tx
            .query_row(
                "SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(table) = broken {
            return Err(DbError::Malformed(format!(
                "migration left a dangling reference in {table}"
            )));
        }
        tx.commit()?;
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> DbResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Malformed(format!("timestamp {s:?}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Typed rows

#[derive(Debug, Clone, PartialEq)]
pub struct AgentGroup {
    pub id: String,
    pub name: String,
    pub folder: String,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessagingGroup {
    pub id: String,
    pub channel_type: String,
    pub platform_id: String,
    pub name: Option<String>,
    pub is_group: bool,
    pub unknown_sender_policy: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wiring {
    pub id: String,
    pub messaging_group_id: String,
    pub agent_group_id: String,
    pub engage_mode: String,
    pub engage_pattern: Option<String>,
    pub sticky_window_s: i64,
    pub sender_scope: String,
    pub ignored_message_policy: String,
    pub session_mode: String,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub agent_group_id: String,
    pub messaging_group_id: String,
    pub thread_id: Option<String>,
    pub status: String,
    pub runner_state: String,
    pub last_activity: DateTime<Utc>,
}

const SESSION_COLS: &str =
    "id, agent_group_id, messaging_group_id, thread_id, status, runner_state, last_activity";

fn session_row(r: &Row<'_>) -> rusqlite::Result<(Session, String)> {
    let last: String = r.get(6)?;
    Ok((
        Session {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            thread_id: r.get(3)?,
            status: r.get(4)?,
            runner_state: r.get(5)?,
            last_activity: DateTime::<Utc>::UNIX_EPOCH,
        },
        last,
    ))
}

fn decode_session((mut s, last): (Session, String)) -> DbResult<Session> {
    s.last_activity = parse_ts(&last)?;
    Ok(s)
}

fn query_sessions(
    conn: &Connection,
    filter: &str,
    p: impl rusqlite::Params,
) -> DbResult<Vec<Session>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {SESSION_COLS} FROM sessions {filter}"))?;
    let rows = stmt.query_map(p, session_row)?;
    rows.map(|r| decode_session(r?)).collect()
}

// ---------------------------------------------------------------------------------------------
// Queries (all synchronous; run them through `Db::call`)

pub fn meta(conn: &Connection, key: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn set_meta_if_absent(conn: &Connection, key: &str, value: &str) -> DbResult<String> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    meta(conn, key)?.ok_or_else(|| DbError::Malformed(format!("meta {key} vanished")))
}

pub fn agent_group(conn: &Connection, id: &str) -> DbResult<Option<AgentGroup>> {
    Ok(conn
        .query_row(
            "SELECT id, name, folder, model FROM agent_groups WHERE id = ?1",
            [id],
            |r| {
                Ok(AgentGroup {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    folder: r.get(2)?,
                    model: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// Every agent, by id.
pub fn agent_groups(conn: &Connection) -> DbResult<Vec<AgentGroup>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, folder, model FROM agent_groups ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(AgentGroup {
            id: r.get(0)?,
            name: r.get(1)?,
            folder: r.get(2)?,
            model: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn messaging_group_by_platform(
    conn: &Connection,
    channel_type: &str,
    platform_id: &str,
) -> DbResult<Option<MessagingGroup>> {
    Ok(conn
        .query_row(
            "SELECT id, channel_type, platform_id, name, is_group, unknown_sender_policy
             FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
            params![channel_type, platform_id],
            |r| {
                Ok(MessagingGroup {
                    id: r.get(0)?,
                    channel_type: r.get(1)?,
                    platform_id: r.get(2)?,
                    name: r.get(3)?,
                    is_group: r.get(4)?,
                    unknown_sender_policy: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// Wirings of a chat, highest priority first.
pub fn wirings_of(conn: &Connection, messaging_group_id: &str) -> DbResult<Vec<Wiring>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sticky_window_s,
                sender_scope, ignored_message_policy, session_mode, priority
         FROM wirings WHERE messaging_group_id = ?1 ORDER BY priority DESC, created_at",
    )?;
    let rows = stmt.query_map([messaging_group_id], |r| {
        Ok(Wiring {
            id: r.get(0)?,
            messaging_group_id: r.get(1)?,
            agent_group_id: r.get(2)?,
            engage_mode: r.get(3)?,
            engage_pattern: r.get(4)?,
            sticky_window_s: r.get(5)?,
            sender_scope: r.get(6)?,
            ignored_message_policy: r.get(7)?,
            session_mode: r.get(8)?,
            priority: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The user's role in an agent group (`owner` | `admin` | `member`), if any.
pub fn role_of(conn: &Connection, user_id: &str, agent_group_id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT role FROM user_roles WHERE user_id = ?1 AND agent_group_id = ?2",
            params![user_id, agent_group_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn find_active_session(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: Option<&str>,
    thread_id: Option<&str>,
) -> DbResult<Option<Session>> {
    let rows = match messaging_group_id {
        Some(mg) => query_sessions(
            conn,
            "WHERE status = 'active' AND agent_group_id = ?1 AND messaging_group_id = ?2
               AND COALESCE(thread_id, '') = COALESCE(?3, '')",
            params![agent_group_id, mg, thread_id],
        )?,
        None => query_sessions(
            conn,
            "WHERE status = 'active' AND agent_group_id = ?1 ORDER BY created_at DESC LIMIT 1",
            params![agent_group_id],
        )?,
    };
    Ok(rows.into_iter().next())
}

pub fn session(conn: &Connection, id: &str) -> DbResult<Option<Session>> {
    Ok(query_sessions(conn, "WHERE id = ?1", [id])?
        .into_iter()
        .next())
}

pub fn insert_session(
    conn: &Connection,
    id: &str,
    agent_group_id: &str,
    messaging_group_id: &str,
    thread_id: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, last_activity, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, agent_group_id, messaging_group_id, thread_id, ts(now)],
    )?;
    Ok(())
}

pub fn touch_session(conn: &Connection, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET last_activity = ?1 WHERE id = ?2",
        params![ts(now), id],
    )?;
    Ok(())
}

/// Records what the supervisor knows of a session's runner (`stopped` | `running` | `waiting`).
pub fn set_runner_state(conn: &Connection, id: &str, state: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET runner_state = ?1 WHERE id = ?2",
        params![state, id],
    )?;
    Ok(())
}

/// Sessions the supervisor left running or waiting: the only ones a restart must look at.
pub fn busy_sessions(conn: &Connection) -> DbResult<Vec<Session>> {
    query_sessions(conn, "WHERE runner_state != 'stopped' ORDER BY id", [])
}

pub fn sessions_of_chat(conn: &Connection, messaging_group_id: &str) -> DbResult<Vec<Session>> {
    query_sessions(
        conn,
        "WHERE status = 'active' AND messaging_group_id = ?1",
        [messaging_group_id],
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRow {
    pub name: String,
    pub display_name: Option<String>,
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

pub fn destinations_of(conn: &Connection, agent_group_id: &str) -> DbResult<Vec<DestinationRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, display_name, channel_type, platform_id, thread_id FROM destinations
         WHERE agent_group_id = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([agent_group_id], |r| {
        Ok(DestinationRow {
            name: r.get(0)?,
            display_name: r.get(1)?,
            channel_type: r.get(2)?,
            platform_id: r.get(3)?,
            thread_id: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub struct Dropped<'a> {
    pub channel_type: &'a str,
    pub platform_id: &'a str,
    pub sender_id: Option<&'a str>,
    pub sender_name: Option<&'a str>,
    pub agent_group_id: Option<&'a str>,
    pub reason: &'a str,
}

pub fn record_dropped(conn: &Connection, d: &Dropped<'_>, now: DateTime<Utc>) -> DbResult<()> {
    conn.execute(
        "INSERT INTO dropped_messages (channel_type, platform_id, sender_id, sender_name, agent_group_id, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            d.channel_type,
            d.platform_id,
            d.sender_id,
            d.sender_name,
            d.agent_group_id,
            d.reason,
            ts(now)
        ],
    )?;
    Ok(())
}

/// One refused message of the `dropped_messages` audit.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub channel_type: String,
    pub platform_id: String,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    pub agent_group_id: Option<String>,
    pub reason: String,
}

/// The newest `limit` refused messages, newest first, and how many there are in all.
pub fn dropped(conn: &Connection, limit: u32) -> DbResult<(Vec<DroppedRow>, u64)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, channel_type, platform_id, sender_id, sender_name, agent_group_id, reason
         FROM dropped_messages ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok((
            DroppedRow {
                id: r.get(0)?,
                at: DateTime::<Utc>::UNIX_EPOCH,
                channel_type: r.get(2)?,
                platform_id: r.get(3)?,
                sender_id: r.get(4)?,
                sender_name: r.get(5)?,
                agent_group_id: r.get(6)?,
                reason: r.get(7)?,
            },
            r.get::<_, String>(1)?,
        ))
    })?;
    let rows = rows
        .map(|r| {
            let (mut row, at) = r?;
            row.at = parse_ts(&at)?;
            Ok(row)
        })
        .collect::<DbResult<Vec<_>>>()?;
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM dropped_messages", [], |r| r.get(0))?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

/// A session with what operators see of it: its agent's name and its chat.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    pub session: Session,
    pub agent_name: String,
    pub channel_type: String,
    pub platform_id: String,
    pub created_at: DateTime<Utc>,
}

/// Every session (active and closed), most recently active first.
pub fn session_views(conn: &Connection) -> DbResult<Vec<SessionView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, s.status,
                s.runner_state, s.last_activity, a.name, m.channel_type, m.platform_id,
                s.created_at
         FROM sessions s
         JOIN agent_groups a ON a.id = s.agent_group_id
         JOIN messaging_groups m ON m.id = s.messaging_group_id
         ORDER BY s.last_activity DESC, s.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            session_row(r)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, String>(10)?,
        ))
    })?;
    rows.map(|r| {
        let (session, agent_name, channel_type, platform_id, created_at) = r?;
        Ok(SessionView {
            session: decode_session(session)?,
            agent_name,
            channel_type,
            platform_id,
            created_at: parse_ts(&created_at)?,
        })
    })
    .collect()
}

/// Tokens per session on `day` (`YYYY-MM-DD`).
pub fn token_usage_on(
    conn: &Connection,
    day: &str,
) -> DbResult<std::collections::HashMap<String, TokenUsage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, prompt_tokens, completion_tokens, requests FROM token_usage WHERE day = ?1",
    )?;
    let rows = stmt.query_map([day], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    rows.map(|r| {
        let (session, p, c, n) = r?;
        Ok((
            session,
            TokenUsage {
                prompt_tokens: count(p),
                completion_tokens: count(c),
                requests: count(n),
            },
        ))
    })
    .collect()
}

/// Tokens of one session on one day, as the model proxy counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Adds one forwarded request and its tokens to the session's count for `day` (`YYYY-MM-DD`).
pub fn add_token_usage(
    conn: &Connection,
    session_id: &str,
    day: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> DbResult<()> {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO token_usage (session_id, day, prompt_tokens, completion_tokens, requests)
         VALUES (?1, ?2, ?3, ?4, 1)
         ON CONFLICT (session_id, day) DO UPDATE SET
             prompt_tokens = prompt_tokens + excluded.prompt_tokens,
             completion_tokens = completion_tokens + excluded.completion_tokens,
             requests = requests + 1",
        params![
            session_id,
            day,
            clamp(prompt_tokens),
            clamp(completion_tokens)
        ],
    )?;
    Ok(())
}

/// The session's count for `day`; zero when it made no request that day.
pub fn token_usage(conn: &Connection, session_id: &str, day: &str) -> DbResult<TokenUsage> {
    let row = conn
        .query_row(
            "SELECT prompt_tokens, completion_tokens, requests FROM token_usage
             WHERE session_id = ?1 AND day = ?2",
            params![session_id, day],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(
        row.map_or_else(TokenUsage::default, |(p, c, n)| TokenUsage {
            prompt_tokens: count(p),
            completion_tokens: count(c),
            requests: count(n),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Users, aliases and roles

/// Records the sender (kind and display name) and binds its aliases: a role granted to
/// `telegram:@name` before the numeric id was known moves to the sender the first time a user
/// with that username writes, and the alias stays bound to that id for good (usernames can
/// change hands; identities cannot).
pub fn note_user(
    conn: &Connection,
    id: &str,
    display_name: Option<&str>,
    aliases: &[String],
    now: DateTime<Utc>,
) -> DbResult<()> {
    let kind = id.split(':').next().unwrap_or("unknown");
    conn.prepare_cached(
        "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name
         WHERE excluded.display_name IS NOT NULL AND display_name IS NOT excluded.display_name",
    )?
    .execute(params![id, kind, display_name, ts(now)])?;
    for alias in aliases {
        let alias = alias.to_lowercase();
        if alias == id {
            continue;
        }
        let placeholder = conn
            .prepare_cached(
                "SELECT 1 FROM users WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM user_aliases WHERE alias = ?1)",
            )?
            .exists([&alias])?;
        if !placeholder {
            continue;
        }
        tracing::info!(alias, user = id, "binding a username to its numeric id");
        // The stronger of two roles wins: owner over admin over member.
        conn.execute(
            "INSERT INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
             SELECT ?1, agent_group_id, role, granted_by, granted_at FROM user_roles WHERE user_id = ?2
             ON CONFLICT (user_id, agent_group_id) DO UPDATE SET role = excluded.role
             WHERE excluded.role = 'owner' OR (excluded.role = 'admin' AND role = 'member')",
            params![id, alias],
        )?;
        conn.execute("DELETE FROM users WHERE id = ?1", [&alias])?;
        conn.execute(
            "INSERT INTO user_aliases (alias, user_id, bound_at) VALUES (?1, ?2, ?3)",
            params![alias, id, ts(now)],
        )?;
    }
    Ok(())
}

/// The user an alias was bound to, if it was.
pub fn alias_target(conn: &Connection, alias: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM user_aliases WHERE alias = ?1",
            [alias.to_lowercase()],
            |r| r.get(0),
        )
        .optional()?)
}

/// Users with `role_in` roles on an agent, e.g. the owners and admins to ask for approval.
pub fn users_with_roles(
    conn: &Connection,
    agent_group_id: &str,
    roles: &[&str],
) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, role FROM user_roles WHERE agent_group_id = ?1 ORDER BY granted_at, user_id",
    )?;
    let rows = stmt.query_map([agent_group_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user, role) = row?;
        if roles.contains(&role.as_str()) {
            out.push(user);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Mention-sticky engagement scopes

/// When the agent was last engaged in a scope (`scope`: a topic, `""` for the whole chat).
pub fn engagement(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    scope: &str,
) -> DbResult<Option<DateTime<Utc>>> {
    let last: Option<String> = conn
        .prepare_cached(
            "SELECT last_activity FROM engagements
             WHERE agent_group_id = ?1 AND messaging_group_id = ?2 AND thread_key = ?3",
        )?
        .query_row(params![agent_group_id, messaging_group_id, scope], |r| {
            r.get(0)
        })
        .optional()?;
    last.as_deref().map(parse_ts).transpose()
}

pub fn touch_engagement(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    scope: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO engagements (agent_group_id, messaging_group_id, thread_key, last_activity)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (agent_group_id, messaging_group_id, thread_key)
         DO UPDATE SET last_activity = excluded.last_activity",
    )?
    .execute(params![agent_group_id, messaging_group_id, scope, ts(now)])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Approval of unknown senders

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub agent_group_id: String,
    pub messaging_group_id: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
    /// `pending` | `allowed` | `denied`.
    pub status: String,
    /// The cards asking for a decision: (chat id, message id) on the channel.
    pub cards: Vec<(String, String)>,
    pub decided_by: Option<String>,
}

/// What holding a message of an unknown sender did.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// An owner declined this sender before.
    Denied,
    /// Too many of the sender's messages wait already.
    Full,
    /// Held; `new_request`: nobody has been asked yet, so cards must go out.
    Queued {
        approval_id: String,
        new_request: bool,
    },
}

const APPROVAL_COLS: &str =
    "id, agent_group_id, messaging_group_id, sender_id, sender_name, status, cards, decided_by";

fn approval_row(r: &Row<'_>) -> rusqlite::Result<(Approval, String)> {
    Ok((
        Approval {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            sender_id: r.get(3)?,
            sender_name: r.get(4)?,
            status: r.get(5)?,
            cards: Vec::new(),
            decided_by: r.get(7)?,
        },
        r.get(6)?,
    ))
}

fn decode_approval((mut a, cards): (Approval, String)) -> DbResult<Approval> {
    a.cards = serde_json::from_str(&cards)
        .map_err(|e| DbError::Malformed(format!("approval {} cards: {e}", a.id)))?;
    Ok(a)
}

pub fn approval(conn: &Connection, id: &str) -> DbResult<Option<Approval>> {
    conn.query_row(
        &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1"),
        [id],
        approval_row,
    )
    .optional()?
    .map(decode_approval)
    .transpose()
}

/// Holds `event_json` (a message of `ev.sender_id`) until an owner decides.
pub fn hold_message(
    conn: &Connection,
    agent_group_id: &str,
    messaging_group_id: &str,
    ev: &crate::router::InboundEvent,
    event_json: &str,
    max_held: usize,
    now: DateTime<Utc>,
) -> DbResult<Held> {
    let existing = conn
        .query_row(
            &format!(
                "SELECT {APPROVAL_COLS} FROM approvals WHERE agent_group_id = ?1 AND sender_id = ?2"
            ),
            params![agent_group_id, ev.sender_id],
            approval_row,
        )
        .optional()?
        .map(decode_approval)
        .transpose()?;
    let (approval_id, new_request) = match existing {
        Some(a) if a.status == "denied" => return Ok(Held::Denied),
        Some(a) if a.status == "pending" => (a.id, a.cards.is_empty()),
        Some(a) => {
            // Allowed once, but the role is gone (revoked since): ask again.
            conn.execute(
                "UPDATE approvals SET status = 'pending', cards = '[]', decided_by = NULL,
                     decided_at = NULL, messaging_group_id = ?2 WHERE id = ?1",
                params![a.id, messaging_group_id],
            )?;
            (a.id, true)
        }
        None => {
            let id = crate::bootstrap::random_id(10);
            conn.execute(
                "INSERT INTO approvals (id, agent_group_id, messaging_group_id, sender_id, sender_name, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, agent_group_id, messaging_group_id, ev.sender_id, ev.sender_name, ts(now)],
            )?;
            (id, true)
        }
    };
    let held: i64 = conn.query_row(
        "SELECT COUNT(*) FROM held_messages WHERE approval_id = ?1",
        [&approval_id],
        |r| r.get(0),
    )?;
    if held as usize >= max_held {
        return Ok(Held::Full);
    }
    conn.execute(
        "INSERT INTO held_messages (approval_id, event, created_at) VALUES (?1, ?2, ?3)",
        params![approval_id, event_json, ts(now)],
    )?;
    Ok(Held::Queued {
        approval_id,
        new_request,
    })
}

/// The oldest message held for an approval (JSON), shown on the card.
pub fn first_held_message(conn: &Connection, approval_id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT event FROM held_messages WHERE approval_id = ?1 ORDER BY id LIMIT 1",
            [approval_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records a card sent to ask for a decision.
pub fn add_approval_card(conn: &Connection, id: &str, chat: &str, message: &str) -> DbResult<()> {
    let Some(mut a) = approval(conn, id)? else {
        return Ok(());
    };
    a.cards.push((chat.to_owned(), message.to_owned()));
    let cards = serde_json::to_string(&a.cards).map_err(|e| DbError::Malformed(e.to_string()))?;
    conn.execute(
        "UPDATE approvals SET cards = ?1 WHERE id = ?2",
        params![cards, id],
    )?;
    Ok(())
}

/// What deciding on an approval did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Unknown,
    /// Somebody decided before (the approval as it stands).
    AlreadyDecided(Approval),
    /// Decided now; `held` are the held events (JSON) to replay when allowed, oldest first.
    Decided {
        approval: Approval,
        held: Vec<String>,
    },
}

/// Allows (the sender becomes a `member` of the agent) or denies a pending approval, in one
/// transaction; the held messages are handed back (allowed) or discarded (denied).
pub fn decide_approval(
    conn: &mut Connection,
    id: &str,
    allow: bool,
    decided_by: &str,
    now: DateTime<Utc>,
) -> DbResult<Decision> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut a) = approval(&tx, id)? else {
        return Ok(Decision::Unknown);
    };
    if a.status != "pending" {
        return Ok(Decision::AlreadyDecided(a));
    }
    a.status = if allow { "allowed" } else { "denied" }.to_owned();
    a.decided_by = Some(decided_by.to_owned());
    tx.execute(
        "UPDATE approvals SET status = ?1, decided_by = ?2, decided_at = ?3 WHERE id = ?4",
        params![a.status, decided_by, ts(now), id],
    )?;
    let held = {
        let mut stmt =
            tx.prepare("SELECT event FROM held_messages WHERE approval_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.execute("DELETE FROM held_messages WHERE approval_id = ?1", [id])?;
    if allow {
        note_user(&tx, &a.sender_id, a.sender_name.as_deref(), &[], now)?;
        tx.execute(
            "INSERT OR IGNORE INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
             VALUES (?1, ?2, 'member', ?3, ?4)",
            params![a.sender_id, a.agent_group_id, decided_by, ts(now)],
        )?;
    }
    tx.commit()?;
    Ok(Decision::Decided {
        approval: a,
        held: if allow { held } else { Vec::new() },
    })
}

// ---------------------------------------------------------------------------------------------
// The Telegram update journal

/// An update received but not yet fully handled.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub update_id: i64,
    /// Updates with the same key are handled in order (the chat).
    pub chat_key: String,
    pub payload: String,
}

/// Records a batch of updates and moves the confirmed offset past them, in one transaction;
/// returns the entries that were new (an update seen before is not handled twice).
pub fn journal_updates(
    conn: &mut Connection,
    bot_id: i64,
    updates: &[JournalEntry],
    now: DateTime<Utc>,
) -> DbResult<Vec<JournalEntry>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut fresh = Vec::new();
    for u in updates {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO telegram_updates (bot_id, update_id, chat_key, payload, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![bot_id, u.update_id, u.chat_key, u.payload, ts(now)],
        )?;
        if inserted == 1 {
            fresh.push(u.clone());
        }
    }
    if let Some(max) = updates.iter().map(|u| u.update_id).max() {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value =
                 MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            params![format!("telegram_offset:{bot_id}"), max + 1],
        )?;
    }
    tx.commit()?;
    Ok(fresh)
}

/// The offset to poll from (0 before the first update).
pub fn telegram_offset(conn: &Connection, bot_id: i64) -> DbResult<i64> {
    Ok(meta(conn, &format!("telegram_offset:{bot_id}"))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Updates recorded but not handled (the host stopped in between), oldest first.
pub fn open_updates(conn: &Connection, bot_id: i64) -> DbResult<Vec<JournalEntry>> {
    let mut stmt = conn.prepare(
        "SELECT update_id, chat_key, payload FROM telegram_updates
         WHERE bot_id = ?1 AND done_at IS NULL ORDER BY update_id",
    )?;
    let rows = stmt.query_map([bot_id], |r| {
        Ok(JournalEntry {
            update_id: r.get(0)?,
            chat_key: r.get(1)?,
            payload: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks an update handled; its payload is not needed any more (the row stays, so a
/// redelivered update is recognised).
pub fn finish_update(
    conn: &Connection,
    bot_id: i64,
    update_id: i64,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE telegram_updates SET done_at = ?3, payload = '' WHERE bot_id = ?1 AND update_id = ?2",
    )?
    .execute(params![bot_id, update_id, ts(now)])?;
    Ok(())
}

/// Forgets handled updates older than `before` (Telegram redelivers only unconfirmed
/// updates, and only for a day).
pub fn prune_updates(conn: &Connection, before: DateTime<Utc>) -> DbResult<usize> {
    Ok(conn.execute(
        "DELETE FROM telegram_updates WHERE done_at IS NOT NULL AND done_at < ?1",
        [ts(before)],
    )?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_usage_accumulates_per_session_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        let conn = db.conn.lock().unwrap();
        conn.execute_batch(
            "INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('a', 'A', 'a', 'x');
             INSERT INTO messaging_groups (id, channel_type, platform_id, created_at) VALUES ('m', 'cli', 'local', 'x');
             INSERT INTO sessions (id, agent_group_id, messaging_group_id, last_activity, created_at)
                 VALUES ('s', 'a', 'm', 'x', 'x');",
        )
        .unwrap();
        assert_eq!(
            token_usage(&conn, "s", "2025-01-01").unwrap(),
            TokenUsage::default()
        );
        add_token_usage(&conn, "s", "2025-01-01", 10, 2).unwrap();
        add_token_usage(&conn, "s", "2025-01-01", 5, 1).unwrap();
        add_token_usage(&conn, "s", "2025-01-02", 1, 1).unwrap();
        let day1 = token_usage(&conn, "s", "2025-01-01").unwrap();
        assert_eq!(
            day1,
            TokenUsage {
                prompt_tokens: 15,
                completion_tokens: 3,
                requests: 2
            }
        );
        assert_eq!(day1.total(), 18);
        assert_eq!(token_usage(&conn, "s", "2025-01-02").unwrap().requests, 1);
    }
}
