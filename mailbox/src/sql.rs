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

/// How the session databases keep their journal. The host chooses (`MAILBOX_JOURNAL`) for the
/// `inbound.db` it writes; the container's writers follow the mode they find in `inbound.db`
/// (see [`crate::OutboundDb::open`]), so both files of a session always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// Write-ahead log with `synchronous=NORMAL`: a commit is an append to `-wal` and no fsync;
    /// the log is synced and folded into the database at checkpoints. Survives any crash of a
    /// process (kill -9 included); a power cut or kernel crash can roll back the last commits
    /// before a checkpoint, never corrupt the file. Readers and the writer share the `-shm`
    /// index through memory maps, so both sides must run on one kernel (the process runtime,
    /// Docker on Linux).
    Wal,
    /// Rollback journal with `synchronous=FULL`: every commit is synced (about four fsyncs), so
    /// an acknowledged write survives a power cut. The mode for a mailbox shared across a VM
    /// boundary (Docker Desktop), where WAL's shared memory is not coherent.
    Delete,
}

impl Journal {
    /// The mode a database file is in, from its header (bytes 18 and 19 are 2 for WAL);
    /// `None` while the file does not exist or is still empty.
    pub fn of_file(path: &Path) -> Result<Option<Journal>> {
        use std::io::Read;
        let mut header = [0u8; 20];
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        match file.read_exact(&mut header) {
            Ok(()) if header[18] == 2 && header[19] == 2 => Ok(Some(Journal::Wal)),
            Ok(()) => Ok(Some(Journal::Delete)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(source) => Err(Error::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Journal::Wal => "wal",
            Journal::Delete => "delete",
        }
    }
}

/// Largest `-wal` file kept after a checkpoint resets the log (SQLite truncates it back to
/// this); without a limit the file keeps its largest size for ever.
const WAL_SIZE_LIMIT: i64 = 1 << 20;

/// WAL frames after which a commit checkpoints (SQLite's default auto-checkpoint).
const CHECKPOINT_FRAMES: i32 = 1000;

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Tells the other side's file watch that a WAL commit is complete, by setting the `-wal`
/// file's modification time (an attribute event).
///
/// The file events of the commit itself do not do that: SQLite appends the frames to `-wal`
/// and only then publishes the commit in the `-shm` index, through a memory map, which raises
/// no event. A reader woken by the last frame's write could look before the commit was
/// visible, find nothing, and wait for its fallback poll. This call comes from the WAL hook,
/// which SQLite runs after the commit is published and the write lock released.
fn announce_commit(wal: &Path) {
    // A failure (the file replaced meanwhile, a filesystem without times) costs the other
    // side at most its fallback poll; the commit itself is not affected, so it is not an error.
    if let Ok(file) = std::fs::File::open(wal) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Opens a session database for writing, in `journal` mode (switching a file that is in the
/// other mode; that needs no other connection on the file, which holds when the setting
/// changes between two runs of the host).
///
/// In WAL mode the `-wal` and `-shm` files are kept when the last connection closes
/// (`SQLITE_FCNTL_PERSIST_WAL`): the other side reads this file through a read-only mount,
/// where SQLite cannot create them, and a reader that found them missing could not open the
/// database at all. Keeping them also means they are always created by this writer, so they
/// belong to its user.
pub(crate) fn open_rw(path: &Path, journal: Journal) -> Result<Connection> {
    // Created 0600 before SQLite opens it: its journal and WAL files take the database's mode.
    crate::private::ensure_file(path).map_err(|source| Error::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mut conn)?;
    let mut persist = i32::from(journal == Journal::Wal);
    conn.file_control(
        rusqlite::DEFAULT_NAME,
        rusqlite::FileControl::PersistWal(&mut persist),
    )?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", journal.as_str(), |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case(journal.as_str()) {
        return Err(Error::JournalMode {
            path: path.to_path_buf(),
            wanted: journal.as_str(),
            found: mode,
        });
    }
    match journal {
        Journal::Wal => {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
            let wal = wal_path(path);
            conn.wal_hook(Some(move |log: &mut rusqlite::hooks::Wal, frames| {
                announce_commit(&wal);
                if frames >= CHECKPOINT_FRAMES {
                    // What SQLite's own auto-checkpoint does (this hook replaces it). A
                    // checkpoint that a reader holds up (busy) is retried at the next commit;
                    // the commit itself is done either way, so nothing is reported.
                    let _ = log.checkpoint();
                }
                Ok(())
            }))?;
        }
        Journal::Delete => conn.pragma_update(None, "synchronous", "FULL")?,
    }
    Ok(conn)
}

/// How long a checkpoint waits for the other side's readers to leave the WAL before it settles
/// for what it could do. Their reads last about a millisecond; a checkpoint never holds up the
/// message path for longer than this.
pub(crate) const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// `PRAGMA wal_checkpoint(TRUNCATE)`: copies every WAL frame into the database, then truncates
/// the `-wal` file to zero bytes. A reader still using the log (or a writer of another
/// connection) makes it stop short — SQLite reports that as "busy" in the result row, not as an
/// error — and `false` is returned; the file is consistent either way. Our busy handler is
/// replaced by a [`CHECKPOINT_WAIT`] timeout for the call and restored after it.
pub(crate) fn checkpoint_truncate(conn: &mut Connection) -> Result<bool> {
    conn.busy_timeout(CHECKPOINT_WAIT)?;
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    conn.busy_handler(Some(wait_for_lock))?;
    Ok(busy? == 0)
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
