//! Retention in the host's background: deletes what is older than `RETENTION_DAYS` and settled,
//! and retires sessions idle for longer than `SESSION_RETENTION_DAYS`. Owns the pass and its
//! schedule; what may be deleted from a mailbox is `mailbox::retention`'s rule. Live sessions are
//! pruned on the message path instead: the runner prunes its own `outbound.db` when it starts,
//! every few turns and when it exits (see `CLAWBOX_RETENTION_DAYS`), delivery prunes
//! `inbound.db` every few verdicts (`delivery.rs`).
//!
//! One pass, at start and then every `RETENTION_INTERVAL_MS`:
//! - the central database: `dropped_messages` and `token_usage` older than the retention;
//! - the `inbound.db` of each session whose runner is stopped and that may hold rows that aged
//!   past the retention since the last pass: sessions active since `last pass − retention − a
//!   day`. Sessions idle for longer were pruned for the last time by an earlier pass, so a pass
//!   costs nothing for them: the work follows recent activity, not every session ever created.
//!   The first pass after a start covers every stopped session once. Sessions are taken one at
//!   a time with a pause between them, so a pass never competes with the message path;
//! - retirement: sessions whose last activity is older than `SESSION_RETENTION_DAYS` (found
//!   through the index on last activity, oldest first, [`RETIRE_PER_PASS`] at most per pass;
//!   sessions that may not go yet do not hide those behind them), whose
//!   runner is stopped, with no live task in the supervisor, no scheduled task, no open
//!   question and no pending work in their mailbox ([`mailbox::retention::pending_work`]).
//!
//! Live sessions (a runner alive, or waiting for one) are left alone; conversation history is
//! compaction's business. Each deletion is a batch transaction (`mailbox::retention::BATCH`
//! rows), so a host killed mid-pass leaves whole batches done and the rest for the next pass.
//!
//! Retiring a session, in an order that survives a crash at any point:
//! 1. **Archive**: the session's compaction archives (`workspace/conversations/*.md`) are
//!    copied, and its remaining history written as one more archive in the same format
//!    (`mailbox::archive`), to `<agent folder>/conversations/<session id>/`, each file fsynced.
//!    The session is untouched; a crash here leaves it intact, and the next attempt writes
//!    the same files again.
//! 2. **Close**: one update closes the row and marks it `retired = 'removing'` (with
//!    `retired_at`, which `clawbox logs` reports for it), only if the
//!    session is still idle as it was read (a message that arrived meanwhile touched it, so the
//!    update does nothing and the session lives on). From here on the chat's next message
//!    starts a new session.
//! 3. **Remove** the session folder, then mark the row `retired = 'done'`. A crash between the
//!    two steps leaves a row in `removing`: every pass first finishes those (indexed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::retention::{Pruned, pending_work};
use mailbox::{InboundDb, OutboundReader, SessionPaths};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::config::Config;
use crate::db::{Db, DbError, ts};
use crate::session::supervisor::Supervisor;

/// Sessions retired per pass at most (and read per query); more wait for the next pass.
pub const RETIRE_PER_PASS: i64 = 100;
/// Pause between two sessions of a pass.
const BETWEEN_SESSIONS: Duration = Duration::from_millis(20);
/// Rows of the central database deleted per transaction.
const BATCH: i64 = 500;

/// What retention has done since the host started (for `clawbox status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionSummary {
    pub passes: u64,
    pub last_pass: Option<DateTime<Utc>>,
    /// Rows deleted, all databases.
    pub rows: u64,
    /// Bytes of database pages freed for reuse, and of retired session folders removed.
    pub bytes: u64,
    /// Idle sessions retired.
    #[serde(default)]
    pub sessions: u64,
}

/// The background pruner; cheap to clone (the summary is shared).
#[derive(Clone)]
pub struct Retention {
    config: Arc<Config>,
    db: Db,
    /// Which sessions have a live task (never retired).
    supervisor: Supervisor,
    summary: Arc<Mutex<RetentionSummary>>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassResult {
    pub pruned: Pruned,
    /// Sessions retired.
    pub retired: u64,
}

impl Retention {
    pub fn new(config: Arc<Config>, db: Db, supervisor: Supervisor) -> Retention {
        Retention {
            config,
            db,
            supervisor,
            summary: Arc::default(),
        }
    }

    pub fn summary(&self) -> RetentionSummary {
        *self.summary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut since: Option<DateTime<Utc>> = None;
        loop {
            let started = Utc::now();
            match self.pass(since, started, &cancel).await {
                Ok(PassResult { pruned, retired }) => {
                    if pruned.rows > 0 || retired > 0 {
                        tracing::info!(
                            rows = pruned.rows,
                            bytes = pruned.bytes,
                            sessions_retired = retired,
                            "retention pass"
                        );
                    }
                    let mut summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
                    summary.passes += 1;
                    summary.last_pass = Some(started);
                    summary.rows += pruned.rows;
                    summary.bytes += pruned.bytes;
                    summary.sessions += retired;
                    since = Some(started);
                }
                // The next pass tries again, from the same point.
                Err(err) => tracing::warn!(error = %err, "retention pass failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.retention_interval) => {}
            }
        }
    }

    /// One pass at `now`; `since` is when the previous one started (`None`: none yet).
    pub async fn pass(
        &self,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<PassResult, HostError> {
        let retention = chrono::Duration::days(i64::from(self.config.retention_days));
        let cutoff = now - retention;
        let mut pruned = self
            .db
            .call(move |conn| prune_central(conn, cutoff))
            .await?;
        let active_since = since.map(|s| ts(s - retention - chrono::Duration::days(1)));
        let sessions: Vec<(String, String)> = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, agent_group_id FROM sessions
                     WHERE status = 'active' AND runner_state = 'stopped'
                       AND (?1 IS NULL OR last_activity >= ?1)",
                )?;
                let rows = stmt.query_map([active_since], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let sessions_dir = self.config.sessions_dir();
        for (session, agent) in sessions {
            if cancel.is_cancelled() {
                break;
            }
            let dir = sessions_dir.clone();
            let result = tokio::task::spawn_blocking(move || -> Result<Pruned, mailbox::Error> {
                let paths = SessionPaths::for_session(&dir, &agent, &session)?;
                // A session whose mailbox is gone has nothing to prune (and must not get a new,
                // empty one).
                if !paths.inbound_db().exists() {
                    return Ok(Pruned::default());
                }
                let mut inbound = InboundDb::open(&paths)?;
                let pruned = inbound.prune_settled(mailbox::retention::Keep::new(cutoff))?;
                // The runner is stopped: nothing holds the log, so it goes back to nothing.
                inbound.checkpoint()?;
                Ok(pruned)
            })
            .await
            .map_err(|e| HostError::Task(e.to_string()))?;
            match result {
                Ok(p) => pruned.add(p),
                // One session's problem (a corrupt file) does not stop the pass.
                Err(err) => {
                    tracing::warn!(error = %err, "retention: a mailbox could not be pruned")
                }
            }
            tokio::time::sleep(BETWEEN_SESSIONS).await;
        }
        let (freed, retired) = self.retire(now, cancel).await?;
        pruned.bytes += freed;
        Ok(PassResult { pruned, retired })
    }

    /// Finishes the removals a crash interrupted, then retires the sessions that are due.
    /// Returns the bytes of session folders removed and the sessions retired.
    async fn retire(
        &self,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<(u64, u64), HostError> {
        let sessions_dir = self.config.sessions_dir();
        let mut freed = 0u64;
        let unfinished: Vec<(String, String)> = self
            .db
            .call(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, agent_group_id FROM sessions WHERE retired = 'removing'",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        for (session, agent) in unfinished {
            tracing::info!(session_id = %session, "retention: finishing an interrupted retirement");
            freed += self.remove(&sessions_dir, &agent, &session).await?;
        }

        let cutoff =
            ts(now - chrono::Duration::days(i64::from(self.config.session_retention_days)));
        // Pages in the order of last activity: sessions that may not go yet (pending work)
        // do not hide the ones behind them.
        let mut retired = 0u64;
        let mut after: Option<(String, String)> = None;
        'pages: loop {
            let (cutoff, cursor) = (cutoff.clone(), after.clone());
            let due: Vec<Due> = self
                .db
                .call(move |conn| {
                    let (at, id) = cursor.unzip();
                    let mut stmt = conn.prepare(
                        "SELECT s.id, s.agent_group_id, a.folder, s.last_activity FROM sessions s
                     JOIN agent_groups a ON a.id = s.agent_group_id
                     WHERE s.status = 'active' AND s.last_activity < ?1
                       AND s.runner_state = 'stopped'
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.session_id = s.id
                                         AND t.status IN ('active', 'paused'))
                       AND NOT EXISTS (SELECT 1 FROM questions q WHERE q.session_id = s.id
                                         AND (q.status = 'pending' OR q.delivered = 0))
                       AND (?3 IS NULL OR (s.last_activity, s.id) > (?3, ?4))
                     ORDER BY s.last_activity, s.id LIMIT ?2",
                    )?;
                    let rows =
                        stmt.query_map(rusqlite::params![cutoff, RETIRE_PER_PASS, at, id], |r| {
                            Ok(Due {
                                session: r.get(0)?,
                                agent: r.get(1)?,
                                folder: r.get(2)?,
                                last_activity: r.get(3)?,
                            })
                        })?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
                })
                .await?;
            let Some(last) = due.last() else {
                break;
            };
            after = Some((last.last_activity.clone(), last.session.clone()));
            let full = due.len() as i64 == RETIRE_PER_PASS;
            for due in due {
                if cancel.is_cancelled() || retired >= RETIRE_PER_PASS as u64 {
                    break 'pages;
                }
                if self.supervisor.is_live(&due.session) {
                    continue;
                }
                let dir = sessions_dir.clone();
                let archive_dir = self
                    .config
                    .groups_dir
                    .join(&due.folder)
                    .join(mailbox::archive::ARCHIVE_DIR)
                    .join(&due.session);
                let (agent, session, last) = (
                    due.agent.clone(),
                    due.session.clone(),
                    due.last_activity.clone(),
                );
                let tz = self.config.timezone;
                let days = self.config.session_retention_days;
                let archived = tokio::task::spawn_blocking(move || {
                    archive(&dir, &agent, &session, &last, &archive_dir, tz, days, now)
                })
                .await
                .map_err(|e| HostError::Task(e.to_string()))?;
                match archived {
                    Ok(Archived::Ready) => {}
                    Ok(Archived::Busy(reason)) => {
                        tracing::debug!(session_id = %due.session, reason, "retention: not retired");
                        continue;
                    }
                    // One session's problem (a corrupt file, a full disk) does not stop the pass;
                    // the session stays as it is and is tried again next pass.
                    Err(err) => {
                        tracing::warn!(
                            session_id = %due.session,
                            error = %err,
                            "retention: a session could not be archived, so it is not retired"
                        );
                        continue;
                    }
                }
                let (id, last) = (due.session.clone(), due.last_activity.clone());
                let closed = self
                    .db
                    .call(move |conn| {
                        Ok(conn.execute(
                            "UPDATE sessions SET status = 'closed', retired = 'removing',
                                                 retired_at = ?3
                         WHERE id = ?1 AND status = 'active' AND runner_state = 'stopped'
                           AND last_activity = ?2",
                            rusqlite::params![id, last, ts(now)],
                        )? == 1)
                    })
                    .await?;
                if !closed {
                    // Activity since it was read: the session lives on.
                    continue;
                }
                freed += self.remove(&sessions_dir, &due.agent, &due.session).await?;
                retired += 1;
                tracing::info!(
                    session_id = %due.session,
                    last_activity = %due.last_activity,
                    "retention: idle session retired"
                );
                tokio::time::sleep(BETWEEN_SESSIONS).await;
            }
            if !full {
                break;
            }
        }
        Ok((freed, retired))
    }

    /// Removes a closed session's folder and marks its retirement done; returns the bytes
    /// removed.
    async fn remove(
        &self,
        sessions_dir: &Path,
        agent: &str,
        session: &str,
    ) -> Result<u64, HostError> {
        let paths = SessionPaths::for_session(sessions_dir, agent, session)
            .map_err(|e| HostError::Task(e.to_string()))?;
        let root = session_root(&paths);
        let target = root.clone();
        let freed = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let size = dir_size(&target);
            match std::fs::remove_dir_all(&target) {
                Ok(()) => Ok(size),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| HostError::Task(e.to_string()))?
        .map_err(|e| HostError::io("remove a retired session's folder", &root, e))?;
        let id = session.to_owned();
        self.db
            .call(move |conn| {
                conn.execute("UPDATE sessions SET retired = 'done' WHERE id = ?1", [&id])?;
                Ok(())
            })
            .await?;
        Ok(freed)
    }
}

/// A session the pass may retire, as read.
struct Due {
    session: String,
    agent: String,
    /// The agent's folder under `GROUPS_DIR`.
    folder: String,
    /// As stored: the close only happens if it is still this.
    last_activity: String,
}

enum Archived {
    /// Archived; the session may be closed.
    Ready,
    /// The mailbox still has work (the reason); not retired.
    Busy(&'static str),
}

/// `<sessions>/<agent>/<session>`: the parent of the session's three folders.
fn session_root(paths: &SessionPaths) -> PathBuf {
    paths
        .workspace
        .parent()
        .map_or_else(|| paths.workspace.clone(), Path::to_path_buf)
}

/// Step 1 of a retirement (blocking): checks the mailbox has no pending work, then copies the
/// session's compaction archives and writes its remaining history as one more archive into
/// `archive_dir`. Writes nothing into the session.
#[allow(clippy::too_many_arguments)]
fn archive(
    sessions_dir: &Path,
    agent: &str,
    session: &str,
    last_activity: &str,
    archive_dir: &Path,
    tz: chrono_tz::Tz,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Archived, ArchiveError> {
    let paths = SessionPaths::for_session(sessions_dir, agent, session)?;
    let outbound = if paths.outbound_db().exists() {
        Some(OutboundReader::open(&paths.outbound_db())?)
    } else {
        None
    };
    if paths.inbound_db().exists() {
        let inbound = InboundDb::open(&paths)?;
        if let Some(reason) = pending_work(&inbound, outbound.as_ref())? {
            return Ok(Archived::Busy(reason));
        }
    }
    // The workspace and the agent's folder are the agent's to change: nothing there is read or
    // written through a link (see `nofollow`).
    let dest = nofollow::dest_dir(archive_dir).map_err(|e| ArchiveError::io(archive_dir, e))?;
    // The session's own archives first, under their names.
    let own = paths.workspace.join(mailbox::archive::ARCHIVE_DIR);
    let mut copied = 0u32;
    match nofollow::open_dir(None, own.as_os_str(), false) {
        Ok(from) => {
            let mut names: Vec<String> = std::fs::read_dir(&own)
                .map_err(|e| ArchiveError::io(&own, e))?
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| nofollow::is_archive_name(name))
                .collect();
            names.sort();
            for name in names {
                let Some(text) =
                    nofollow::read_file(&from, &name).map_err(|e| ArchiveError::io(&own, e))?
                else {
                    tracing::warn!(session_id = %session, name, "retention: an archive that is not a plain file is not kept");
                    continue;
                };
                nofollow::write_file(&dest, &name, &text)
                    .map_err(|e| ArchiveError::io(&archive_dir.join(&name), e))?;
                copied += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ArchiveError::io(&own, e)),
    }
    let history: Vec<serde_json::Value> = match &outbound {
        Some(outbound) => outbound.history()?.into_iter().map(|e| e.message).collect(),
        None => Vec::new(),
    };
    if !history.is_empty() {
        let count = outbound
            .as_ref()
            .map(|o| o.kv(mailbox::archive::COMPACTION_KEY))
            .transpose()?
            .flatten()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|record| record["count"].as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
            .max(copied);
        let n = count + 1;
        // Named after the last activity, so that a retirement tried again writes the same file.
        let last = crate::db::parse_ts(last_activity).unwrap_or(now);
        let date = last.with_timezone(&tz).format("%Y-%m-%d").to_string();
        let text = mailbox::archive::archive_text(
            n,
            &format!(
                "Retired {} after {days} days without activity (last activity {}; {} \
                 messages); the chat's next message started a new conversation.",
                now.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                last.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                history.len(),
            ),
            &history,
        );
        let name = mailbox::archive::archive_file(&date, n);
        nofollow::write_file(&dest, &name, &text)
            .map_err(|e| ArchiveError::io(&archive_dir.join(&name), e))?;
    }
    Ok(Archived::Ready)
}

/// Why a session could not be archived (it stays as it is).
#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    #[error(transparent)]
    Mailbox(#[from] mailbox::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ArchiveError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ArchiveError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Archive files read and written without following links. The agent can change its workspace
/// and its folder (and, with other sessions of the agent running, at any moment), so every
/// component below a directory the host owns is opened relative to its opened parent with
/// `O_NOFOLLOW`, as `outbox.rs` reads attachments: a planted link makes the retirement fail for
/// that session (it is tried again next pass), never read or write anywhere else.
mod nofollow {
    use std::ffi::{CString, OsStr};
    use std::fs::File;
    use std::io::{Read as _, Write as _};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Path;

    /// Largest session archive copied; a bigger file is left out (the agent wrote it).
    const MAX_ARCHIVE_BYTES: u64 = 64 * 1024 * 1024;

    fn c_name(name: &OsStr) -> std::io::Result<CString> {
        CString::new(name.as_encoded_bytes().to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    }

    fn open_at(
        dir: Option<&OwnedFd>,
        name: &OsStr,
        flags: i32,
        mode: u32,
    ) -> std::io::Result<OwnedFd> {
        let c = c_name(name)?;
        let base = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
        // SAFETY: openat with a NUL-terminated name and a live directory descriptor (or
        // AT_FDCWD); the returned descriptor is ours from here on.
        let fd = unsafe {
            libc::openat(
                base,
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Opens directory `name` in `parent` (or the path `name`), creating it first if asked.
    pub(super) fn open_dir(
        parent: Option<&OwnedFd>,
        name: &OsStr,
        create: bool,
    ) -> std::io::Result<OwnedFd> {
        if create {
            let c = c_name(name)?;
            let base = parent.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
            // SAFETY: mkdirat with a NUL-terminated name and a live descriptor (or AT_FDCWD).
            if unsafe { libc::mkdirat(base, c.as_ptr(), 0o755) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(err);
                }
            }
        }
        open_at(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
    }

    /// `<agent folder>/conversations/<session>`, created as needed: the agent folder by path
    /// (the host made it, under `GROUPS_DIR`), the two levels below without following links.
    pub(super) fn dest_dir(archive_dir: &Path) -> std::io::Result<OwnedFd> {
        let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
        let session = archive_dir.file_name().ok_or_else(invalid)?;
        let conversations = archive_dir.parent().ok_or_else(invalid)?;
        let folder = conversations.parent().ok_or_else(invalid)?;
        let folder = open_dir(None, folder.as_os_str(), false)?;
        let conversations = open_dir(
            Some(&folder),
            conversations.file_name().ok_or_else(invalid)?,
            true,
        )?;
        open_dir(Some(&conversations), session, true)
    }

    /// Whether a name in a session's `conversations/` is one of its archives.
    pub(super) fn is_archive_name(name: &str) -> bool {
        name.len() <= 64
            && !name.starts_with('.')
            && name.ends_with(".md")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    }

    /// The text of `name` in `dir`, or `None` if it is not one regular file of at most
    /// `MAX_ARCHIVE_BYTES` with one name.
    pub(super) fn read_file(dir: &OwnedFd, name: &str) -> std::io::Result<Option<String>> {
        let fd = match open_at(
            Some(dir),
            OsStr::new(name),
            libc::O_RDONLY | libc::O_NONBLOCK,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() || meta.nlink() != 1 || meta.len() > MAX_ARCHIVE_BYTES {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.take(MAX_ARCHIVE_BYTES).read_to_end(&mut bytes)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Writes and fsyncs `name` in `dir` (replacing a file of that name, never a link), then
    /// fsyncs `dir`.
    pub(super) fn write_file(dir: &OwnedFd, name: &str, text: &str) -> std::io::Result<()> {
        let fd = open_at(
            Some(dir),
            OsStr::new(name),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        )?;
        let mut file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        // SAFETY: fsync on a live descriptor we own.
        if unsafe { libc::fsync(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Bytes of the files under `dir` (what removing it frees); unreadable entries count as 0.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// `dropped_messages` and `token_usage` older than `cutoff`, in batches.
fn prune_central(
    conn: &mut rusqlite::Connection,
    cutoff: DateTime<Utc>,
) -> Result<Pruned, DbError> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let at = ts(cutoff);
    let day = cutoff.format("%Y-%m-%d").to_string();
    let mut pruned = Pruned::default();
    for (sql, param) in [
        (
            "DELETE FROM dropped_messages WHERE id IN (
                 SELECT id FROM dropped_messages WHERE at < ?1 LIMIT ?2)",
            &at,
        ),
        (
            "DELETE FROM token_usage WHERE rowid IN (
                 SELECT rowid FROM token_usage WHERE day < ?1 LIMIT ?2)",
            &day,
        ),
    ] {
        loop {
            let tx = conn.transaction()?;
            let before: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let rows = tx.execute(sql, rusqlite::params![param, BATCH])?;
            let after: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            tx.commit()?;
            pruned.rows += rows as u64;
            pruned.bytes += u64::try_from((after - before).max(0) * page_size).unwrap_or(0);
            if (rows as i64) < BATCH {
                break;
            }
        }
    }
    Ok(pruned)
}
