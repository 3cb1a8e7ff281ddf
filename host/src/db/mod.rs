//! The central database `data/clawbox.db` (host-only, WAL), split by entity: agents, wirings and
//! destinations (`agents.rs`), chats, users, roles, engagement scopes and approvals
//! (`chats.rs`), sessions (`sessions.rs`), dropped messages (`dropped.rs`), token usage
//! (`usage.rs`), the Telegram update journal (`journal.rs`), pairing codes (`pairing.rs`), numbered migrations
//! (`migrations.rs`) and first-start defaults (`bootstrap.rs`). Scheduled tasks keep their
//! rows in this database too, but their rules are `crate::db::tasks`'s.
//!
//! The bottom layer of the host: it uses nothing of the crate but `config`. One connection
//! behind a mutex; every query runs on tokio's blocking pool through [`Db::call`], never on an
//! async worker thread. The queries are synchronous functions of a `&Connection`, so callers
//! can group several into one transaction.

pub mod agents;
pub mod bootstrap;
pub mod chats;
pub mod dropped;
pub mod journal;
mod migrations;
pub mod pairing;
pub mod sessions;
pub mod tasks;
pub mod usage;

pub use agents::*;
pub use chats::*;
pub use dropped::*;
pub use journal::*;
pub use sessions::*;
pub use usage::*;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use migrations::{MIGRATIONS, migrate};

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
    /// The database file could not be created (its directory is missing or not writable).
    #[error("cannot create the central database {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type DbResult<T> = Result<T, DbError>;

#[derive(Clone)]
pub struct Db {
    // std Mutex, locked only inside blocking tasks and never across an `.await`.
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating and migrating) the central database.
    pub fn open(path: &Path) -> DbResult<Db> {
        // Private like everything in DATA_DIR, whatever the umask: SQLite gives its WAL and
        // shared-memory files the database file's mode.
        mailbox::private::ensure_file(path).map_err(|source| DbError::Io {
            path: path.to_path_buf(),
            source,
        })?;
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

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> DbResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Malformed(format!("timestamp {s:?}: {e}")))
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

/// A random id of `len` lowercase letters and digits (install ids, session ids, approval and
/// question ids).
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
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
