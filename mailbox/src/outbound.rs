//! `outbound.db`: written by the container only ([`OutboundDb`], used by agent-runner and
//! mcp-tools), read by the host ([`OutboundReader`], opened read-only).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde_json::Value;

use crate::drafts::{self, Draft};
use crate::events::{self, RunnerEvent, Stored};
use crate::layout::SessionPaths;
use crate::seq::{MAX_SEQ, MAX_SEQ_FILTER, Parity, in_range, next_seq};
use crate::sql::{self, Journal, parse_json, parse_ts, ts};
use crate::types::*;
use crate::{Result, schema};

const TABLE: &str = "messages_out";
const SELECT_OUT: &str = "SELECT seq, id, kind, in_reply_to, created_at, channel_type, platform_id, \
     thread_id, content FROM messages_out";
/// Acks are the container's too: an error text or a detail beyond these sizes is not loaded
/// (the error is replaced by a note, the detail dropped), so a forged ack cannot grow the
/// host's memory.
const SELECT_ACK: &str = "SELECT id, message_seq, attempt, status, \
     CASE WHEN octet_length(error) <= 8192 THEN error \
          WHEN error IS NOT NULL THEN '[error text too long to show]' END, at, \
     CASE WHEN octet_length(detail) <= 65536 THEN detail END FROM acks";
/// The same for an `outbound.db` an older runner left without `acks.detail`.
const SELECT_ACK_V1: &str = "SELECT id, message_seq, attempt, status, \
     CASE WHEN octet_length(error) <= 8192 THEN error \
          WHEN error IS NOT NULL THEN '[error text too long to show]' END, at, \
     NULL AS detail FROM acks";

/// One stored conversation message (an OpenAI chat message as JSON) and the turn it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Seq of the first inbound message of the turn that wrote it.
    pub turn: i64,
    pub message: Value,
}

/// The largest row of `messages_out` the host reads, all its text columns together: a reply of
/// `MAX_REPLY_CHARS` (32 000 by default, 128 KB at worst in UTF-8) fits many times over, and a
/// forged 400 MB row is refused from its size alone, without being loaded.
pub const MAX_ROW_BYTES: i64 = 4 << 20;
/// What one page of [`OutboundReader::page_after`] holds at most: rows, and their bytes
/// together (a single row may be up to [`MAX_ROW_BYTES`]).
pub const PAGE_ROWS: u32 = 64;
pub const PAGE_BYTES: i64 = 8 << 20;

/// The size of a row as SQLite stores it. `octet_length` reads the length from the record
/// header without loading the value (SQLite ≥ 3.43), so measuring a huge row costs nothing.
const ROW_SIZE: &str = "(COALESCE(octet_length(id), 0) + COALESCE(octet_length(kind), 0) \
     + COALESCE(octet_length(in_reply_to), 0) + COALESCE(octet_length(created_at), 0) \
     + COALESCE(octet_length(channel_type), 0) + COALESCE(octet_length(platform_id), 0) \
     + COALESCE(octet_length(thread_id), 0) + COALESCE(octet_length(content), 0))";

/// Where the host is in `messages_out` ([`crate::InboundDb::out_cursors`]): the highest seq
/// within range it has recorded, and the highest out-of-range one (or [`MAX_SEQ`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutCursors {
    pub in_range: i64,
    pub out_of_range: i64,
}

/// An outbound row the host cannot use: too large, out of range, or not decodable. It fails
/// alone (the host records it failed and tells the chat); the rows after it flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub seq: i64,
    /// Why, in words for the chat ("the agent produced a reply clawbox could not deliver: …").
    pub reason: String,
}

/// One row as the host reads it.
pub type RowRead = std::result::Result<OutboundMessage, BadRow>;

/// The `turn` of a history entry that summarises compacted entries (turn keys are seqs of
/// inbound messages, which are even and positive, so 0 is never a real turn).
pub const SUMMARY_TURN: i64 = 0;

/// The container's read-write handle on `outbound.db`.
pub struct OutboundDb {
    pub(crate) conn: Connection,
    inbound: sql::OtherSide,
}

impl OutboundDb {
    /// Opens (creating and migrating as needed) `outbound.db`, in the journal mode the host
    /// chose for `inbound.db`: the host knows whether a VM boundary lies between it and the
    /// container, the container does not. Until `inbound.db` exists (only in tests: the host
    /// writes it before it starts a runner) the rollback journal is used.
    pub fn open(paths: &SessionPaths) -> Result<Self> {
        let path = paths.outbound_db();
        let journal = Journal::of_file(&paths.inbound_db())?.unwrap_or(Journal::Delete);
        let mut conn = sql::open_rw(&path, journal)?;
        schema::migrate(&mut conn, &path, schema::OUTBOUND)?;
        Ok(OutboundDb {
            conn,
            inbound: sql::OtherSide::new(paths.inbound_db(), "messages_in"),
        })
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`): everything done through it becomes
    /// visible to the host at once on [`OutboundTx::commit`], or not at all.
    pub fn transaction(&mut self) -> Result<OutboundTx<'_>> {
        // The inbound max is read before taking our lock; parity keeps seqs unique regardless.
        let max_in = self.inbound.max_seq()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(OutboundTx { tx, max_in })
    }

    /// Writes one message in its own transaction; returns its seq.
    pub fn insert_message(&mut self, msg: &NewOutbound, now: DateTime<Utc>) -> Result<i64> {
        let mut tx = self.transaction()?;
        let seq = tx.insert_message(msg, now)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Appends one ack in its own transaction.
    pub fn ack(
        &mut self,
        message_seq: i64,
        attempt: u32,
        status: AckStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.transaction()?;
        tx.ack(message_seq, attempt, status, error, now)?;
        tx.commit()
    }

    /// The latest ack of each of `seqs` (missing: never acked).
    pub fn latest_acks(&self, seqs: &[i64]) -> Result<HashMap<i64, Ack>> {
        latest_acks(&self.conn, SELECT_ACK, seqs)
    }

    pub fn message(&self, seq: i64) -> Result<Option<OutboundMessage>> {
        message(&self.conn, seq)
    }

    /// The conversation since the last clear, oldest first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .history_with_ids()?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect())
    }

    /// The same, each entry with its row id (what [`OutboundTx::compact_history`] cuts at).
    pub fn history_with_ids(&self) -> Result<Vec<(i64, HistoryEntry)>> {
        history_with_ids(&self.conn)
    }

    pub fn kv(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_runner_state(&mut self, state: &RunnerState) -> Result<()> {
        write_runner_state(&self.conn, state)
    }

    pub fn runner_state(&self) -> Result<Option<RunnerState>> {
        runner_state(&self.conn)
    }

    /// The runner's events with an id above `cursor`, oldest first; at most `limit`.
    pub fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Stored<RunnerEvent>>> {
        events::after(&self.conn, cursor, limit)
    }

    /// Writes the draft of a turn in progress (its text capped to
    /// [`drafts::MAX_DRAFT_BYTES`]) in a commit of its own.
    pub fn set_draft(&mut self, draft: &Draft) -> Result<()> {
        drafts::upsert(&self.conn, draft)
    }

    /// Deletes every draft (a runner starting: whatever an earlier one was writing is stale).
    pub fn clear_drafts(&mut self) -> Result<()> {
        drafts::delete_all(&self.conn)
    }

    /// The newest draft, as the host reads it.
    pub fn draft(&self) -> Result<Option<Draft>> {
        drafts::latest(&self.conn)
    }
}

/// A write transaction on `outbound.db`. Dropping it without [`commit`](Self::commit) rolls
/// everything back.
pub struct OutboundTx<'a> {
    tx: Transaction<'a>,
    max_in: i64,
}

impl OutboundTx<'_> {
    /// Inserts a message with the next odd seq above both tables and returns that seq.
    pub fn insert_message(&mut self, msg: &NewOutbound, now: DateTime<Utc>) -> Result<i64> {
        let max_out: i64 = self.tx.query_row(
            &format!("SELECT COALESCE(MAX(seq), 0) FROM messages_out WHERE {MAX_SEQ_FILTER}"),
            [],
            |r| r.get(0),
        )?;
        let seq = next_seq(Parity::Outbound, max_out.max(self.max_in));
        self.tx.execute(
            "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
                 platform_id, thread_id, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                seq,
                msg.id,
                msg.kind.as_str(),
                msg.in_reply_to,
                ts(now),
                msg.route.channel_type,
                msg.route.platform_id,
                msg.route.thread_id,
                msg.content.to_string()
            ],
        )?;
        Ok(seq)
    }

    pub fn ack(
        &mut self,
        message_seq: i64,
        attempt: u32,
        status: AckStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.ack_with_detail(message_seq, attempt, status, error, None, now)
    }

    /// An ack carrying structured facts for the host's records ([`Ack::detail`]).
    pub fn ack_with_detail(
        &mut self,
        message_seq: i64,
        attempt: u32,
        status: AckStatus,
        error: Option<&str>,
        detail: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO acks (message_seq, attempt, status, error, at, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                message_seq,
                attempt,
                status.as_str(),
                error,
                ts(now),
                detail.map(Value::to_string)
            ],
        )?;
        Ok(())
    }

    /// Appends messages to the current conversation under `turn`.
    pub fn append_history(&mut self, turn: i64, messages: &[Value]) -> Result<()> {
        let epoch = epoch(&self.tx)?;
        for m in messages {
            self.tx.execute(
                "INSERT INTO history (epoch, turn, message) VALUES (?1, ?2, ?3)",
                params![epoch, turn, m.to_string()],
            )?;
        }
        Ok(())
    }

    /// Drops everything `turn` wrote to the current conversation (a retried turn starts over).
    pub fn discard_turn(&mut self, turn: i64) -> Result<()> {
        let epoch = epoch(&self.tx)?;
        self.tx.execute(
            "DELETE FROM history WHERE epoch = ?1 AND turn = ?2",
            params![epoch, turn],
        )?;
        Ok(())
    }

    /// Compaction: replaces the current conversation's entries up to and including row
    /// `through_id` with one `summary` entry (turn [`SUMMARY_TURN`]). The summary takes the id of
    /// the last entry it replaces, so it sorts before every entry that was kept. Returns how
    /// many entries it replaced. Part of the caller's transaction: the summary, the removal and
    /// whatever the caller records about it commit together or not at all.
    pub fn compact_history(&mut self, through_id: i64, summary: &Value) -> Result<usize> {
        let epoch = epoch(&self.tx)?;
        let removed = self.tx.execute(
            "DELETE FROM history WHERE epoch = ?1 AND id <= ?2",
            params![epoch, through_id],
        )?;
        if removed > 0 {
            self.tx.execute(
                "INSERT INTO history (id, epoch, turn, message) VALUES (?1, ?2, ?3, ?4)",
                params![through_id, epoch, SUMMARY_TURN, summary.to_string()],
            )?;
        }
        Ok(removed)
    }

    /// Starts a new, empty conversation (`/clear`). Old entries are deleted, not archived.
    pub fn clear_history(&mut self) -> Result<()> {
        let next = epoch(&self.tx)? + 1;
        self.tx.execute("DELETE FROM history", [])?;
        self.tx.execute(
            "INSERT INTO kv (key, value) VALUES ('epoch', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [next.to_string()],
        )?;
        Ok(())
    }

    /// Stores a small runner-owned value (e.g. the seqs of the turn in progress). The key
    /// `epoch` is reserved for [`clear_history`](Self::clear_history).
    pub fn set_kv(&mut self, key: &str, value: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn delete_kv(&mut self, key: &str) -> Result<()> {
        self.tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Records the runner's activity as part of this transaction (no commit of its own: on the
    /// hot path every commit costs several fsyncs).
    pub fn set_runner_state(&mut self, state: &RunnerState) -> Result<()> {
        write_runner_state(&self.tx, state)
    }

    /// Appends to the runner's event log (`clawbox logs`) as part of this transaction, each
    /// event with the time it happened (a step's model answer comes before its tool calls,
    /// though both commit together).
    pub fn record_events(&mut self, events: &[(DateTime<Utc>, RunnerEvent)]) -> Result<()> {
        events::append(&self.tx, events.iter().map(|(at, e)| (*at, e)))
    }

    /// Writes (or replaces) a draft as part of this transaction (a step's calls, with the
    /// Tool activity).
    pub fn set_draft(&mut self, draft: &Draft) -> Result<()> {
        drafts::upsert(&self.tx, draft)
    }

    /// Deletes the draft of `turn`, as part of the verdict that replaces it with the reply.
    pub fn delete_draft(&mut self, turn: i64) -> Result<()> {
        drafts::delete(&self.tx, turn)
    }

    /// Drops all but the newest [`events::KEEP_EVENTS`] events (once per runner start).
    pub fn prune_events(&mut self) -> Result<()> {
        events::prune::<RunnerEvent>(&self.tx)
    }

    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}

/// The host's read-only handle on `outbound.db`.
pub struct OutboundReader {
    conn: Connection,
    /// Set once the file is known to have `acks.detail` (schemas only grow; until then ack
    /// queries leave out the column an older runner's file lacks).
    current: std::cell::Cell<bool>,
}

impl OutboundReader {
    /// Fails with [`crate::Error::Io`] (not found) until the container has created the file.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(OutboundReader {
            conn: sql::open_ro(path)?,
            current: std::cell::Cell::new(false),
        })
    }

    /// The ack query this file's schema supports. The column is looked up rather than the
    /// schema version compared, so the check stays right whatever migrations come later.
    fn select_ack(&self) -> Result<&'static str> {
        if !self.current.get() {
            let has_detail: bool = self.conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM pragma_table_info('acks') WHERE name = 'detail')",
                [],
                |r| r.get(0),
            )?;
            if !has_detail {
                return Ok(SELECT_ACK_V1);
            }
            self.current.set(true);
        }
        Ok(SELECT_ACK)
    }

    /// The conversation since the last clear, oldest first (for the archive of a retired
    /// session).
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        Ok(history_with_ids(&self.conn)?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect())
    }

    /// A value of the container's kv table.
    pub fn kv(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Whether the container has finished creating the schema (the file exists from the moment
    /// the runner opens it, a few milliseconds before its tables do).
    pub fn is_ready(&self) -> Result<bool> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok(version >= 1)
    }

    /// Acks written after the ack with id `cursor`, in order.
    pub fn acks_after(&self, cursor: i64) -> Result<Vec<Ack>> {
        let select = self.select_ack()?;
        query_acks(
            &self.conn,
            &format!("{select} WHERE id > ?1 ORDER BY id"),
            [cursor],
        )
    }

    /// The latest ack of each of `seqs`.
    pub fn latest_acks(&self, seqs: &[i64]) -> Result<HashMap<i64, Ack>> {
        latest_acks(&self.conn, self.select_ack()?, seqs)
    }

    /// Messages with a seq above `cursor`, in seq order.
    pub fn messages_after(&self, cursor: i64) -> Result<Vec<OutboundMessage>> {
        query_out(
            &self.conn,
            &format!("{SELECT_OUT} WHERE seq > ?1 ORDER BY seq"),
            [cursor],
        )
    }

    pub fn message(&self, seq: i64) -> Result<Option<OutboundMessage>> {
        message(&self.conn, seq)
    }

    /// The next rows after `cursors`, oldest first, bounded: at most [`PAGE_ROWS`] rows and
    /// [`PAGE_BYTES`] (at least one row), each row measured before it is loaded and decoded on
    /// its own. Rows in range come first; once they are exhausted, out-of-range rows (seq above
    /// [`MAX_SEQ`]) follow as [`BadRow`]s without being loaded. An empty page means nothing new.
    pub fn page_after(&self, cursors: OutCursors) -> Result<Vec<RowRead>> {
        // One read transaction: the sizes and the rows come from the same snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let sizes: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT seq, {ROW_SIZE} FROM messages_out WHERE seq > ?1 AND seq <= ?2
                 ORDER BY seq LIMIT ?3"
            ))?;
            stmt.query_map(params![cursors.in_range, MAX_SEQ, PAGE_ROWS], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut page = Vec::new();
        if let Some(last) = page_end(&sizes) {
            let mut stmt = tx.prepare_cached(&select_bounded("seq > ?1 AND seq <= ?2"))?;
            let rows = stmt.query_map(
                params![cursors.in_range, last, MAX_ROW_BYTES],
                RawOut::from_row,
            )?;
            for raw in rows {
                page.push(raw?.decode());
            }
        }
        let room = PAGE_ROWS as usize - page.len();
        if room > 0 {
            let mut stmt = tx.prepare_cached(
                "SELECT seq FROM messages_out WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let forged = stmt.query_map(
                params![cursors.out_of_range.max(MAX_SEQ), room as i64],
                |r| r.get::<_, i64>(0),
            )?;
            for seq in forged {
                let seq = seq?;
                page.push(Err(BadRow {
                    seq,
                    reason: format!("its message id {seq} is out of range"),
                }));
            }
        }
        tx.finish()?;
        Ok(page)
    }

    /// Row `seq` read like [`OutboundReader::page_after`] reads it (size checked first, decoded
    /// on its own); `None` if there is no such row.
    pub fn read_message(&self, seq: i64) -> Result<Option<RowRead>> {
        if !in_range(seq) {
            let exists: bool = self.conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM messages_out WHERE seq = ?1)",
                [seq],
                |r| r.get(0),
            )?;
            return Ok(exists.then(|| {
                Err(BadRow {
                    seq,
                    reason: format!("its message id {seq} is out of range"),
                })
            }));
        }
        let mut stmt = self
            .conn
            .prepare_cached(&select_bounded("seq >= ?1 AND seq <= ?2"))?;
        let row = stmt
            .query_row(params![seq, seq, MAX_ROW_BYTES], RawOut::from_row)
            .optional()?;
        Ok(row.map(RawOut::decode))
    }

    pub fn runner_state(&self) -> Result<Option<RunnerState>> {
        runner_state(&self.conn)
    }

    /// The runner's events with an id above `cursor`, oldest first; at most `limit`. Empty
    /// while the file predates the event log (a runner of this build migrates it on open).
    pub fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Stored<RunnerEvent>>> {
        if events::schema_version(&self.conn)? < events::OUTBOUND_EVENTS_VERSION {
            return Ok(Vec::new());
        }
        events::after(&self.conn, cursor, limit)
    }

    /// The draft of the turn in progress, read bounded ([`crate::drafts`]); `None` when there
    /// is none or it cannot be used.
    pub fn draft(&self) -> Result<Option<Draft>> {
        drafts::latest(&self.conn)
    }

    /// The newest `failed` ack, if any (the runner's last verdict that was a failure).
    pub fn last_failed_ack(&self) -> Result<Option<Ack>> {
        Ok(query_acks(
            &self.conn,
            &format!("{SELECT_ACK} WHERE status = 'failed' ORDER BY id DESC LIMIT 1"),
            [],
        )?
        .into_iter()
        .next())
    }

    /// Number of rows in `messages_out`.
    pub fn message_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM messages_out", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Number of rows in `messages_out` with a seq above `cursor` (not yet seen by the host).
    pub fn messages_after_count(&self, cursor: i64) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM messages_out WHERE seq > ?1",
            [cursor],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

/// Where a page of rows with these `(seq, size)` ends: before the row that would take the page
/// past [`PAGE_BYTES`], but never before its first row. Oversized rows count as nothing (they
/// are not loaded).
fn page_end(sizes: &[(i64, i64)]) -> Option<i64> {
    let mut total = 0i64;
    let mut last = None;
    for &(seq, size) in sizes {
        let size = if size > MAX_ROW_BYTES { 0 } else { size };
        if last.is_some() && total.saturating_add(size) > PAGE_BYTES {
            break;
        }
        total = total.saturating_add(size);
        last = Some(seq);
    }
    last
}

/// A `messages_out` query whose row values are only loaded when the row's size is at most `?3`;
/// `filter` uses `?1` and `?2`.
fn select_bounded(filter: &str) -> String {
    let col = |name: &str| format!("CASE WHEN {ROW_SIZE} <= ?3 THEN {name} END");
    format!(
        "SELECT seq, {ROW_SIZE}, {}, {}, {}, {}, {}, {}, {}, {} FROM messages_out
         WHERE {filter} ORDER BY seq",
        col("id"),
        col("kind"),
        col("in_reply_to"),
        col("created_at"),
        col("channel_type"),
        col("platform_id"),
        col("thread_id"),
        col("content"),
    )
}

/// A row of [`select_bounded`], its values as SQLite holds them: the container may have
/// stored any type in any column, so nothing is assumed until [`RawOut::decode`].
struct RawOut {
    seq: i64,
    size: i64,
    values: Vec<rusqlite::types::Value>,
}

impl RawOut {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawOut {
            seq: r.get(0)?,
            size: r.get(1)?,
            values: (2..10)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect::<rusqlite::Result<_>>()?,
        })
    }

    fn decode(self) -> RowRead {
        let seq = self.seq;
        let bad = |reason: String| BadRow { seq, reason };
        if self.size > MAX_ROW_BYTES {
            return Err(bad(format!(
                "it is {} bytes, more than the {} MiB a reply may be",
                self.size,
                MAX_ROW_BYTES >> 20
            )));
        }
        if !in_range(seq) || Parity::of(seq) != Parity::Outbound {
            return Err(bad(format!("its message id {seq} is out of range")));
        }
        use rusqlite::types::Value as V;
        let text = |i: usize, name: &str| -> std::result::Result<Option<String>, BadRow> {
            match &self.values[i] {
                V::Null => Ok(None),
                V::Text(s) => Ok(Some(s.clone())),
                _ => Err(bad(format!("its {name} is not text"))),
            }
        };
        let required = |i: usize, name: &str| -> std::result::Result<String, BadRow> {
            text(i, name)?.ok_or_else(|| bad(format!("its {name} is missing")))
        };
        let in_reply_to = match &self.values[2] {
            V::Null => None,
            V::Integer(n) => Some(*n),
            _ => return Err(bad("its in_reply_to is not a number".to_owned())),
        };
        let kind = required(1, "kind")?;
        let created_at = required(3, "created_at")?;
        let content = required(7, "content")?;
        Ok(OutboundMessage {
            seq,
            id: required(0, "id")?,
            kind: OutboundKind::parse(TABLE, &kind)
                .map_err(|_| bad(format!("its kind {kind:?} is unknown")))?,
            in_reply_to,
            created_at: parse_ts(TABLE, &created_at).map_err(|e| bad(e.to_string()))?,
            route: Route {
                channel_type: required(4, "channel_type")?,
                platform_id: required(5, "platform_id")?,
                thread_id: text(6, "thread_id")?,
            },
            content: parse_json(TABLE, &content).map_err(|e| bad(e.to_string()))?,
        })
    }
}

fn write_runner_state(conn: &Connection, state: &RunnerState) -> Result<()> {
    conn.execute(
            "INSERT INTO runner_state (id, pid, started_at, activity, step, tool, tool_timeout_ms, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                 activity = excluded.activity, step = excluded.step, tool = excluded.tool,
                 tool_timeout_ms = excluded.tool_timeout_ms, updated_at = excluded.updated_at",
            params![
                state.pid,
                ts(state.started_at),
                state.activity.as_str(),
                state.step,
                state.tool,
                state.tool_timeout_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
                ts(state.updated_at)
            ],
        )?;
    Ok(())
}

/// The current conversation epoch (`kv['epoch']`, 0 before the first clear). A value that does
/// not parse is reported rather than read as 0, which would silently revive or mix conversations.
/// The conversation since the last clear, oldest first, each entry with its row id.
fn history_with_ids(conn: &Connection) -> Result<Vec<(i64, HistoryEntry)>> {
    let epoch = epoch(conn)?;
    let mut stmt =
        conn.prepare_cached("SELECT id, turn, message FROM history WHERE epoch = ?1 ORDER BY id")?;
    let rows = stmt.query_map([epoch], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|r| {
        let (id, turn, message) = r?;
        Ok((
            id,
            HistoryEntry {
                turn,
                message: parse_json("history", &message)?,
            },
        ))
    })
    .collect()
}

fn epoch(conn: &Connection) -> Result<i64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM kv WHERE key = 'epoch'", [], |r| r.get(0))
        .optional()?;
    let Some(v) = v else { return Ok(0) };
    v.parse().map_err(|e| crate::Error::Malformed {
        table: "kv",
        detail: format!("epoch {v:?}: {e}"),
    })
}

fn message(conn: &Connection, seq: i64) -> Result<Option<OutboundMessage>> {
    Ok(
        query_out(conn, &format!("{SELECT_OUT} WHERE seq = ?1"), [seq])?
            .into_iter()
            .next(),
    )
}

fn latest_acks(conn: &Connection, select: &str, seqs: &[i64]) -> Result<HashMap<i64, Ack>> {
    let mut out = HashMap::new();
    let sql = format!("{select} WHERE message_seq = ?1 ORDER BY id DESC LIMIT 1");
    for &seq in seqs {
        if let Some(ack) = query_acks(conn, &sql, [seq])?.into_iter().next() {
            out.insert(seq, ack);
        }
    }
    Ok(out)
}

fn query_out<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<OutboundMessage>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r: &Row<'_>| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, String>(4)?,
            Route {
                channel_type: r.get(5)?,
                platform_id: r.get(6)?,
                thread_id: r.get(7)?,
            },
            r.get::<_, String>(8)?,
        ))
    })?;
    rows.map(|r| {
        let (seq, id, kind, in_reply_to, created_at, route, content) = r?;
        Ok(OutboundMessage {
            seq,
            id,
            kind: OutboundKind::parse(TABLE, &kind)?,
            in_reply_to,
            created_at: parse_ts(TABLE, &created_at)?,
            route,
            content: parse_json(TABLE, &content)?,
        })
    })
    .collect()
}

fn query_acks<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> Result<Vec<Ack>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut acks = Vec::new();
    for r in rows {
        // An ack the container wrote with values of the wrong type, or values that do not
        // parse, is skipped: it counts as no ack (a claim without a verdict ends in a retry and,
        // after MAX_TRIES, a failure the sender is told about), and never blocks the acks after
        // it. Errors of SQLite itself still fail the read.
        let (id, message_seq, attempt, status, error, at, detail) = match r {
            Ok(row) => row,
            Err(
                rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..),
            ) => continue,
            Err(e) => return Err(e.into()),
        };
        let decoded = (|| -> Result<Ack> {
            Ok(Ack {
                id,
                message_seq,
                attempt,
                status: AckStatus::parse("acks", &status)?,
                error,
                detail: detail.map(|d| parse_json("acks", &d)).transpose()?,
                at: parse_ts("acks", &at)?,
            })
        })();
        if let Ok(ack) = decoded {
            acks.push(ack);
        }
    }
    Ok(acks)
}

fn runner_state(conn: &Connection) -> Result<Option<RunnerState>> {
    let raw = conn
        .query_row(
            "SELECT pid, started_at, activity, step, tool, tool_timeout_ms, updated_at
             FROM runner_state WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()?;
    raw.map(
        |(pid, started_at, activity, step, tool, tool_timeout_ms, updated_at)| {
            Ok(RunnerState {
                pid,
                started_at: parse_ts("runner_state", &started_at)?,
                activity: Activity::parse("runner_state", &activity)?,
                step,
                tool,
                tool_timeout_ms: tool_timeout_ms.map(|ms| ms.max(0) as u64),
                updated_at: parse_ts("runner_state", &updated_at)?,
            })
        },
    )
    .transpose()
}

/// Whether the runner should claim an inbound row, given the latest ack it wrote for it.
///
/// Any ack for the row's current attempt means this attempt was already taken (finished, or
/// claimed by a runner that died — which the host re-queues, bumping the attempt). An ack from an
/// older attempt is stale.
pub fn is_claimable(msg: &InboundMessage, latest_ack: Option<&Ack>) -> bool {
    latest_ack.is_none_or(|ack| ack.attempt < msg.attempt())
}
