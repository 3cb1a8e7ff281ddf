//! Retention: deleting what is settled from the session mailbox, each side in its own file (one
//! writer per file). The runner prunes `outbound.db` ([`OutboundDb::prune_settled`]): replies
//! the host has taken for delivery and that are no longer in flight, acks the host has folded
//! for messages no longer pending, and its event log beyond [`KEEP_EVENTS`]. The host prunes
//! `inbound.db` ([`InboundDb::prune_settled`]): messages that reached a verdict (a failure only
//! once its sender was told), finished deliveries, answers to requests, and its event log.
//! Conversation history is not touched: compaction governs it.
//!
//! A settled row goes when it is older than the retention ([`Keep::cutoff`]) **or** when it is
//! not among the newest [`Keep::rows`] rows of its table ([`KEEP_SETTLED`] by default): a
//! conversation of thousands of turns a day keeps a bounded file, not a month of rows. Both
//! sides prune every [`PRUNE_EVERY`] verdicts while the session is live, so one prune deletes a
//! handful of rows, and then fold their WAL back into the database ([`OutboundDb::checkpoint`]),
//! so that the `-wal` file does not keep its high-water mark.
//!
//! Rules that keep the protocol sound:
//! - Pending work is never deleted: a pending message, its acks, an open delivery, its reply,
//!   a reply or an ack the host has not read yet.
//! - The newest row of each table stays, whatever its age: seqs are allocated above the max of
//!   both tables, and the host's cursors are maxima, so neither may go backwards.
//! - Deletion runs in batches of [`BATCH`] rows, one transaction each: a crash mid-prune leaves
//!   whole batches deleted and the rest for next time, never a half-deleted row set.
//!
//! What was reclaimed is measured as pages returned to SQLite's free list (reused by later
//! writes; the file itself does not shrink, it stops growing).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};

pub use crate::events::KEEP_EVENTS;
use crate::sql::ts;
use crate::{InboundDb, InboundReader, OutboundDb, OutboundReader, Result};

/// Rows deleted per transaction.
pub const BATCH: i64 = 500;

/// Settled rows kept per table, whatever their age (replies, acks, inbound messages,
/// deliveries, answers): what `clawbox logs` can still show of a long conversation, what an
/// agent can still edit or react to, and what stays for the host to quote in a reply. About
/// the last hundred turns of acks (a claim and a verdict each) and two hundred of the rest.
pub const KEEP_SETTLED: i64 = 200;

/// Verdicts between two prunes of a live session (the runner counts its turns, the host the
/// verdicts it folds): a prune deletes about this many rows per table, in one small
/// transaction each, and is followed by a WAL checkpoint.
pub const PRUNE_EVERY: u64 = 10;

/// What a prune keeps of the settled rows: those at or after `cutoff`, and the newest `rows` of
/// each table whatever their age. Everything else that is settled goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub cutoff: DateTime<Utc>,
    /// At least 1 (the newest row of each table always stays).
    pub rows: i64,
}

impl Keep {
    /// Rows newer than `cutoff` and the newest [`KEEP_SETTLED`].
    pub fn new(cutoff: DateTime<Utc>) -> Keep {
        Keep {
            cutoff,
            rows: KEEP_SETTLED,
        }
    }

    /// The `OFFSET` of the oldest row kept by count, newest first.
    fn offset(&self) -> i64 {
        self.rows.max(1) - 1
    }
}

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows: u64,
    /// Bytes of pages freed for reuse.
    pub bytes: u64,
}

impl Pruned {
    pub fn add(&mut self, other: Pruned) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// Runs `sql` (a `DELETE` that takes `params` and deletes at most [`BATCH`] rows) until it
/// deletes fewer than a batch, one transaction per batch.
fn in_batches(conn: &mut Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Pruned> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let mut pruned = Pruned::default();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let free_before: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let rows = tx.execute(sql, params)?;
        let free_after: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        tx.commit()?;
        pruned.rows += rows as u64;
        pruned.bytes += u64::try_from((free_after - free_before).max(0) * page_size).unwrap_or(0);
        if (rows as i64) < BATCH {
            return Ok(pruned);
        }
    }
}

/// An event log's rows beyond its newest [`KEEP_EVENTS`], in batches (`table` is one of the
/// two logs, a constant).
fn events_beyond_keep(conn: &mut Connection, table: &str) -> Result<Pruned> {
    in_batches(
        conn,
        &format!(
            "DELETE FROM {table} WHERE id IN (
                 SELECT id FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?1
                 ORDER BY id LIMIT ?2)"
        ),
        &[&KEEP_EVENTS, &BATCH],
    )
}

impl InboundReader {
    /// Ids of the acks the host has folded (`host_state.ack_cursor`).
    pub fn ack_cursor(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE((SELECT value FROM host_state WHERE key = 'ack_cursor'), 0)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Seqs of outbound rows whose delivery is still open, as a JSON array.
    fn open_delivery_seqs(&self) -> Result<String> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(json_group_array(out_seq), '[]') FROM delivery
             WHERE status IN ('pending', 'sending')",
            [],
            |r| r.get(0),
        )?)
    }

    /// Seqs of pending inbound messages, as a JSON array.
    fn pending_seqs(&self) -> Result<String> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(json_group_array(seq), '[]') FROM messages_in WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}

impl OutboundDb {
    /// The runner's prune: replies the host recorded (seq up to its delivery cursor) and does
    /// not still deliver, and acks the host has folded whose message is not pending, when they
    /// are older than `keep.cutoff` or not among the newest `keep.rows` of their table; then
    /// the event log beyond [`KEEP_EVENTS`]. Reads the host's state through `inbound`.
    pub fn prune_settled(&mut self, inbound: &InboundReader, keep: Keep) -> Result<Pruned> {
        let cutoff = ts(keep.cutoff);
        let offset = keep.offset();
        let out_cursor = inbound.out_cursor()?;
        let open = inbound.open_delivery_seqs()?;
        let ack_cursor = inbound.ack_cursor()?;
        let pending = inbound.pending_seqs()?;
        let mut pruned = in_batches(
            &mut self.conn,
            "DELETE FROM messages_out WHERE seq IN (
                 SELECT seq FROM messages_out
                 WHERE (created_at < ?1 OR seq < (SELECT seq FROM messages_out
                                                  ORDER BY seq DESC LIMIT 1 OFFSET ?5))
                   AND seq <= ?2
                   AND seq < (SELECT MAX(seq) FROM messages_out)
                   AND seq NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY seq LIMIT ?4)",
            &[&cutoff, &out_cursor, &open, &BATCH, &offset],
        )?;
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM acks WHERE id IN (
                 SELECT id FROM acks
                 WHERE (at < ?1 OR id < (SELECT id FROM acks ORDER BY id DESC LIMIT 1 OFFSET ?5))
                   AND id <= ?2
                   AND id < (SELECT MAX(id) FROM acks)
                   AND message_seq NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY id LIMIT ?4)",
            &[&cutoff, &ack_cursor, &pending, &BATCH, &offset],
        )?);
        pruned.add(events_beyond_keep(&mut self.conn, "events")?);
        Ok(pruned)
    }

    /// Folds the WAL back into `outbound.db` and truncates it to nothing, so that the `-wal`
    /// file does not keep the size of its busiest moment. Safe while the host reads: a reader
    /// in the middle of a read holds the log, and the checkpoint then does what it can and
    /// returns `false` (the next one finishes the job); it waits for readers only
    /// [`crate::sql::CHECKPOINT_WAIT`]. A no-op (`true`) in rollback-journal mode.
    pub fn checkpoint(&mut self) -> Result<bool> {
        crate::sql::checkpoint_truncate(&mut self.conn)
    }
}

impl InboundDb {
    /// The host's prune: messages with a verdict (a failure only once its sender was told),
    /// finished deliveries and answers to requests, when they are older than `keep.cutoff` or
    /// not among the newest `keep.rows` of their table; then the host's event log beyond
    /// [`KEEP_EVENTS`].
    pub fn prune_settled(&mut self, keep: Keep) -> Result<Pruned> {
        let cutoff = ts(keep.cutoff);
        let offset = keep.offset();
        let mut pruned = in_batches(
            &mut self.conn,
            "DELETE FROM messages_in WHERE seq IN (
                 SELECT seq FROM messages_in
                 WHERE (created_at < ?1 OR seq < (SELECT seq FROM messages_in
                                                  ORDER BY seq DESC LIMIT 1 OFFSET ?3))
                   AND (status = 'completed' OR (status = 'failed' AND notified = 1))
                   AND seq < (SELECT MAX(seq) FROM messages_in)
                 ORDER BY seq LIMIT ?2)",
            &[&cutoff, &BATCH, &offset],
        )?;
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM delivery WHERE out_seq IN (
                 SELECT out_seq FROM delivery
                 WHERE (updated_at < ?1 OR out_seq < (SELECT out_seq FROM delivery
                                                      ORDER BY out_seq DESC LIMIT 1 OFFSET ?3))
                   AND status IN ('delivered', 'failed')
                   AND out_seq < (SELECT MAX(out_seq) FROM delivery)
                 ORDER BY out_seq LIMIT ?2)",
            &[&cutoff, &BATCH, &offset],
        )?);
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM responses WHERE request_seq IN (
                 SELECT request_seq FROM responses
                 WHERE at < ?1 OR request_seq < (SELECT request_seq FROM responses
                                                 ORDER BY request_seq DESC LIMIT 1 OFFSET ?3)
                 ORDER BY request_seq LIMIT ?2)",
            &[&cutoff, &BATCH, &offset],
        )?);
        pruned.add(events_beyond_keep(&mut self.conn, "host_events")?);
        Ok(pruned)
    }

    /// [`OutboundDb::checkpoint`] for `inbound.db`, which the runner reads.
    pub fn checkpoint(&mut self) -> Result<bool> {
        crate::sql::checkpoint_truncate(&mut self.conn)
    }
}

/// What a session's mailbox still has to do, if anything: the reason it may not be retired
/// yet. The host's view: `inbound` is its own file, `outbound` the container's (`None` when the
/// runner never created it). Pending work is a message without a verdict, a failure its sender
/// was not told of, an open delivery, a reply or an ack the host has not read yet.
pub fn pending_work(
    inbound: &InboundDb,
    outbound: Option<&OutboundReader>,
) -> Result<Option<&'static str>> {
    if !inbound.pending()?.is_empty() {
        return Ok(Some("a message waits for an answer"));
    }
    if !inbound.unnotified_failures()?.is_empty() {
        return Ok(Some("a failure was not reported yet"));
    }
    if !inbound.open_deliveries()?.is_empty() {
        return Ok(Some("a reply is being delivered"));
    }
    if let Some(outbound) = outbound {
        if outbound.messages_after_count(inbound.out_cursor()?)? > 0 {
            return Ok(Some("a reply was not read yet"));
        }
        if !outbound.acks_after(inbound.ack_cursor()?)?.is_empty() {
            return Ok(Some("a verdict was not read yet"));
        }
    }
    Ok(None)
}
