//! Retention: deleting what is old and settled from the session mailbox, each side in its own
//! file (one writer per file). The runner prunes `outbound.db` ([`OutboundDb::prune_settled`]):
//! replies the host has taken for delivery and that are no longer in flight, and acks the host
//! has folded for messages no longer pending. The host prunes `inbound.db`
//! ([`InboundDb::prune_settled`]): messages that reached a verdict (a failure only once its sender
//! was told), finished deliveries, answers to requests. Conversation history is not touched:
//! compaction governs it.
//!
//! Rules that keep the protocol sound:
//! - Pending work is never deleted: a pending message, its acks, an open delivery, its reply.
//! - The newest row of each table stays, whatever its age: seqs are allocated above the max of
//!   both tables, and the host's cursors are maxima, so neither may go backwards.
//! - Deletion runs in batches of [`BATCH`] rows, one transaction each: a crash mid-prune leaves
//!   whole batches deleted and the rest for next time, never a half-deleted row set.
//!
//! What was reclaimed is measured as pages returned to SQLite's free list (reused by later
//! writes; the file itself does not shrink).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};

use crate::sql::ts;
use crate::{InboundDb, InboundReader, OutboundDb, OutboundReader, Result};

/// Rows deleted per transaction.
pub const BATCH: i64 = 500;

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
    /// The runner's prune: replies older than `cutoff` that the host recorded (seq up to its
    /// delivery cursor) and does not still deliver, and acks older than `cutoff` the host has
    /// folded whose message is not pending. Reads the host's state through `inbound`.
    pub fn prune_settled(
        &mut self,
        inbound: &InboundReader,
        cutoff: DateTime<Utc>,
    ) -> Result<Pruned> {
        let cutoff = ts(cutoff);
        let out_cursor = inbound.out_cursor()?;
        let open = inbound.open_delivery_seqs()?;
        let ack_cursor = inbound.ack_cursor()?;
        let pending = inbound.pending_seqs()?;
        let mut pruned = in_batches(
            &mut self.conn,
            "DELETE FROM messages_out WHERE seq IN (
                 SELECT seq FROM messages_out
                 WHERE created_at < ?1 AND seq <= ?2
                   AND seq < (SELECT MAX(seq) FROM messages_out)
                   AND seq NOT IN (SELECT value FROM json_each(?3))
                 LIMIT ?4)",
            &[&cutoff, &out_cursor, &open, &BATCH],
        )?;
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM acks WHERE id IN (
                 SELECT id FROM acks
                 WHERE at < ?1 AND id <= ?2
                   AND id < (SELECT MAX(id) FROM acks)
                   AND message_seq NOT IN (SELECT value FROM json_each(?3))
                 LIMIT ?4)",
            &[&cutoff, &ack_cursor, &pending, &BATCH],
        )?);
        Ok(pruned)
    }
}

impl InboundDb {
    /// The host's prune: messages older than `cutoff` with a verdict (a failure only once its
    /// sender was told), deliveries finished before `cutoff`, and answers to requests given
    /// before it.
    pub fn prune_settled(&mut self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        let cutoff = ts(cutoff);
        let mut pruned = in_batches(
            &mut self.conn,
            "DELETE FROM messages_in WHERE seq IN (
                 SELECT seq FROM messages_in
                 WHERE created_at < ?1
                   AND (status = 'completed' OR (status = 'failed' AND notified = 1))
                   AND seq < (SELECT MAX(seq) FROM messages_in)
                 LIMIT ?2)",
            &[&cutoff, &BATCH],
        )?;
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM delivery WHERE out_seq IN (
                 SELECT out_seq FROM delivery
                 WHERE updated_at < ?1 AND status IN ('delivered', 'failed')
                   AND out_seq < (SELECT MAX(out_seq) FROM delivery)
                 LIMIT ?2)",
            &[&cutoff, &BATCH],
        )?);
        pruned.add(in_batches(
            &mut self.conn,
            "DELETE FROM responses WHERE request_seq IN (
                 SELECT request_seq FROM responses WHERE at < ?1 LIMIT ?2)",
            &[&cutoff, &BATCH],
        )?);
        Ok(pruned)
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
