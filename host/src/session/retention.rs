//! Retention in the host's background: deletes what is older than `RETENTION_DAYS` and settled.
//! Owns the pass and its schedule; what may be deleted from a mailbox is `mailbox::retention`'s
//! rule (the runner prunes its own `outbound.db` when it starts, see `CLAWBOX_RETENTION_DAYS`).
//!
//! One pass, at start and then every [`PASS_INTERVAL`]:
//! - the central database: `dropped_messages` and `token_usage` older than the retention;
//! - the `inbound.db` of each session whose runner is stopped and that may hold rows that aged
//!   past the retention since the last pass: sessions active since `last pass − retention − a
//!   day`. Sessions idle for longer were pruned for the last time by an earlier pass, so a pass
//!   costs nothing for them: the work follows recent activity, not every session ever created.
//!   The first pass after a start covers every stopped session once. Sessions are taken one at
//!   a time with a pause between them, so a pass never competes with the message path.
//!
//! Live sessions (a runner alive, or waiting for one) are left alone; conversation history is
//! compaction's business. Each deletion is a batch transaction (`mailbox::retention::BATCH`
//! rows), so a host killed mid-pass leaves whole batches done and the rest for the next pass.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::retention::Pruned;
use mailbox::{InboundDb, SessionPaths};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::config::Config;
use crate::db::{Db, ts};

/// Time between passes.
pub const PASS_INTERVAL: Duration = Duration::from_secs(6 * 3600);
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
    /// Bytes of database pages freed for reuse.
    pub bytes: u64,
}

/// The background pruner; cheap to clone (the summary is shared).
#[derive(Clone)]
pub struct Retention {
    config: Arc<Config>,
    db: Db,
    summary: Arc<Mutex<RetentionSummary>>,
}

impl Retention {
    pub fn new(config: Arc<Config>, db: Db) -> Retention {
        Retention {
            config,
            db,
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
                Ok(pruned) => {
                    if pruned.rows > 0 {
                        tracing::info!(rows = pruned.rows, bytes = pruned.bytes, "retention pass");
                    }
                    let mut summary = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
                    summary.passes += 1;
                    summary.last_pass = Some(started);
                    summary.rows += pruned.rows;
                    summary.bytes += pruned.bytes;
                    since = Some(started);
                }
                // The next pass tries again, from the same point.
                Err(err) => tracing::warn!(error = %err, "retention pass failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(PASS_INTERVAL) => {}
            }
        }
    }

    /// One pass at `now`; `since` is when the previous one started (`None`: none yet).
    pub async fn pass(
        &self,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<Pruned, HostError> {
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
                     WHERE runner_state = 'stopped' AND (?1 IS NULL OR last_activity >= ?1)",
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
                InboundDb::open(&paths)?.prune_settled(cutoff)
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
        Ok(pruned)
    }
}

/// `dropped_messages` and `token_usage` older than `cutoff`, in batches.
fn prune_central(
    conn: &mut rusqlite::Connection,
    cutoff: DateTime<Utc>,
) -> Result<Pruned, crate::db::DbError> {
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
