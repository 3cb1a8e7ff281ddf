//! Connection setup shared by both databases, and time encoding.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::{Error, Result};

/// How long a connection waits for the other side's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Short waits first: the other side's transactions last about a millisecond.
const BUSY_SPIN: Duration = Duration::from_micros(100);
const BUSY_SPINS: i32 = 100;
const BUSY_STEP: Duration = Duration::from_millis(1);

/// Waits for a lock held by the other side of the mailbox.
///
/// SQLite's own busy timeout sleeps 1, 2, 5, 10, … ms between tries. The host and the runner
/// react to each other's commits within microseconds, so they meet on a lock often, and those
/// sleeps were most of a message's latency. Waiting in 100 µs steps for the first 10 ms, then
/// 1 ms steps up to [`BUSY_TIMEOUT`], keeps contention cheap without busy-spinning.
fn wait_for_lock(tries: i32) -> bool {
    let (step, elapsed) = if tries < BUSY_SPINS {
        (BUSY_SPIN, BUSY_SPIN * tries as u32)
    } else {
        (
            BUSY_STEP,
            BUSY_SPIN * BUSY_SPINS as u32 + BUSY_STEP * (tries - BUSY_SPINS) as u32,
        )
    };
    if elapsed >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(step);
    true
}

fn configure(conn: &mut Connection) -> Result<()> {
    conn.busy_handler(Some(wait_for_lock))?;
    Ok(())
}

/// Opens a session database for writing.
///
/// Rollback journal (`DELETE`), not WAL: WAL's shared-memory index is not coherent across a
/// VM-backed bind mount (Docker Desktop, some CI runners), and the two writers of a session live
/// on opposite sides of such a mount. `synchronous=FULL` so an acknowledged write survives a
/// power cut: acks and delivery states are what make retries exactly-once.
pub(crate) fn open_rw(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mut conn)?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens the other side's database read-only. `mmap_size=0`: memory maps of a file another
/// process rewrites across a mount are not worth the risk for databases this small.
pub(crate) fn open_ro(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::Io {
            action: "open",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mut conn)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    Ok(conn)
}

/// The other side's database, read only for its max seq. The connection is opened once the
/// file exists and its schema is in place, then kept: reopening it for every write cost a file
/// open and a schema parse each time.
pub(crate) struct OtherSide {
    path: PathBuf,
    table: &'static str,
    conn: Option<Connection>,
}

impl OtherSide {
    pub(crate) fn new(path: PathBuf, table: &'static str) -> Self {
        OtherSide {
            path,
            table,
            conn: None,
        }
    }

    /// Max seq (within [`crate::seq::MAX_SEQ`]) of the other side's table, 0 while that
    /// database does not exist yet.
    pub(crate) fn max_seq(&mut self) -> Result<i64> {
        if self.conn.is_none() {
            if !self.path.exists() {
                return Ok(0);
            }
            let conn = open_ro(&self.path)?;
            let exists: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [self.table],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(0);
            }
            self.conn = Some(conn);
        }
        let Some(conn) = &self.conn else { return Ok(0) };
        Ok(conn.query_row(
            &format!(
                "SELECT COALESCE(MAX(seq), 0) FROM {} WHERE {}",
                self.table,
                crate::seq::MAX_SEQ_FILTER
            ),
            [],
            |r| r.get(0),
        )?)
    }
}

/// Timestamps are stored as RFC 3339 UTC with milliseconds, which sort as text.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The last instant [`ts`] can store: 9999-12-31T23:59:59.999Z. Later years print with a sign
/// and five digits, which neither sorts as text nor parses back as RFC 3339.
pub(crate) fn latest_storable() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(253_402_300_799_999).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn parse_ts(table: &'static str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Malformed {
            table,
            detail: format!("timestamp {s:?}: {e}"),
        })
}

pub(crate) fn parse_json(table: &'static str, s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| Error::Malformed {
        table,
        detail: format!("content is not JSON: {e}"),
    })
}
