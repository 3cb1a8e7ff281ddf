//! `inbound.db`: written by the host only ([`InboundDb`]), read by the container
//! ([`InboundReader`], opened read-only and mounted read-only).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;

use crate::events::{self, HostEvent, Stored};
use crate::layout::SessionPaths;
use crate::seq::{MAX_SEQ, MAX_SEQ_FILTER, Parity, next_seq};
use crate::sql::{self, Journal, parse_json, parse_ts, ts};
use crate::types::*;
use crate::types::{Answered, Response};
use crate::{Result, schema};

const TABLE: &str = "messages_in";
const SELECT_IN: &str = "SELECT seq, id, kind, created_at, status, process_after, tries, trigger, \
     channel_type, platform_id, thread_id, sender_id, sender_name, content, error, detail FROM messages_in";

/// Result of [`InboundDb::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new row with this seq.
    New(i64),
    /// The idempotency key was already stored (a re-delivered update): nothing was written.
    Duplicate(i64),
}

impl Inserted {
    pub fn seq(self) -> i64 {
        match self {
            Inserted::New(seq) | Inserted::Duplicate(seq) => seq,
        }
    }
}

/// The host's read-write handle on one session's `inbound.db`.
pub struct InboundDb {
    pub(crate) conn: Connection,
    outbound: sql::OtherSide,
}

impl InboundDb {
    /// Opens (creating and migrating as needed) the inbound database of a session whose
    /// directories exist, keeping the journal mode it is in (a new file gets
    /// [`Journal::Delete`]). The host opens with [`InboundDb::open_with`] and its setting.
    pub fn open(paths: &SessionPaths) -> Result<Self> {
        let journal = Journal::of_file(&paths.inbound_db())?.unwrap_or(Journal::Delete);
        Self::open_with(paths, journal)
    }

    /// The same in `journal` mode, switching the file if it is in the other one.
    pub fn open_with(paths: &SessionPaths, journal: Journal) -> Result<Self> {
        let path = paths.inbound_db();
        let mut conn = sql::open_rw(&path, journal)?;
        schema::migrate(&mut conn, &path, schema::INBOUND)?;
        Ok(InboundDb {
            conn,
            outbound: sql::OtherSide::new(paths.outbound_db(), "messages_out"),
        })
    }

    /// Stores a message with the next even seq above both tables, unless its idempotency key is
    /// already present.
    pub fn insert(&mut self, msg: &NewInbound, now: DateTime<Utc>) -> Result<Inserted> {
        // Read the other side first: holding our write lock while waiting for theirs gains nothing.
        let max_out = self.outbound.max_seq()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = insert_in(&tx, msg, max_out, now)?;
        tx.commit()?;
        Ok(inserted)
    }

    /// Marks a request the host has taken but will answer later (a question for a user) as
    /// delivered, so it is not handled again; [`InboundDb::answer_later`] answers it.
    pub fn take_request(&mut self, request_seq: i64, now: DateTime<Utc>) -> Result<()> {
        mark_request_delivered(&self.conn, request_seq, now)
    }

    /// Answers a request taken earlier, together with `notice` — a message telling the agent
    /// the same, for when the tool that asked is no longer waiting — in one transaction. `body`
    /// gets the notice's seq (`None` without a notice, or when it was stored before), so a
    /// waiting tool can mark the notice handled. The first answer wins.
    pub fn answer_later(
        &mut self,
        request_seq: i64,
        body: impl FnOnce(Option<i64>) -> Value,
        notice: Option<&NewInbound>,
        now: DateTime<Utc>,
    ) -> Result<Answered> {
        let max_out = self.outbound.max_seq()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let notice_seq = match notice {
            Some(msg) => match insert_in(&tx, msg, max_out, now)? {
                Inserted::New(seq) => Some(seq),
                Inserted::Duplicate(_) => None,
            },
            None => None,
        };
        let body = body(notice_seq);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO responses (request_seq, ok, body, at) VALUES (?1, 1, ?2, ?3)",
            params![request_seq, body.to_string(), ts(now)],
        )?;
        mark_request_delivered(&tx, request_seq, now)?;
        tx.commit()?;
        Ok(if inserted == 1 {
            Answered::New
        } else {
            Answered::Already
        })
    }

    pub fn get(&self, seq: i64) -> Result<Option<InboundMessage>> {
        get(&self.conn, seq)
    }

    /// Every pending row, oldest first (due or not).
    pub fn pending(&self) -> Result<Vec<InboundMessage>> {
        query_in(
            &self.conn,
            &format!("{SELECT_IN} WHERE status = 'pending' ORDER BY seq"),
            [],
        )
    }

    /// When the earliest pending triggering row becomes due (`Some(t <= now)`: due already).
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let rows = query_in(
            &self.conn,
            &format!("{SELECT_IN} WHERE status = 'pending' AND trigger = 1 ORDER BY seq"),
            [],
        )?;
        Ok(rows
            .iter()
            .map(|m| m.process_after.unwrap_or(m.created_at))
            .min())
    }

    /// The id of the last ack already folded.
    pub fn ack_cursor(&self) -> Result<i64> {
        self.host_state("ack_cursor")
    }

    /// Marks `delivered` rows delivered (with their platform message ids) and folds `acks`, in
    /// one transaction: the common end of a delivery pass costs one commit.
    /// Folding advances the ack cursor, and only a verdict for the row's current attempt
    /// counts: an ack from an attempt the host already gave up on cannot complete or fail the
    /// retry.
    pub fn settle(
        &mut self,
        delivered: &[(i64, Option<String>)],
        acks: &[Ack],
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>> {
        // `processing` acks change nothing here; a pass with nothing else commits nothing (the
        // cursor then stays put and those acks are read again next time, which is cheap).
        let verdict_acks = acks.iter().any(|a| a.status != AckStatus::Processing);
        if delivered.is_empty() && !verdict_acks {
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (seq, platform_message_id) in delivered {
            mark_delivered(&tx, *seq, platform_message_id.as_deref(), now)?;
        }
        let mut verdicts = Vec::new();
        for ack in acks {
            let status = match ack.status {
                AckStatus::Processing => continue,
                AckStatus::Completed => InboundStatus::Completed,
                AckStatus::Failed => InboundStatus::Failed,
            };
            let changed = tx.execute(
                "UPDATE messages_in SET status = ?1, error = ?2, detail = ?3
                 WHERE seq = ?4 AND status = 'pending' AND tries + 1 = ?5",
                params![
                    status.as_str(),
                    ack.error,
                    ack.detail.as_ref().map(Value::to_string),
                    ack.message_seq,
                    ack.attempt
                ],
            )?;
            if changed == 1 {
                verdicts.push(Verdict {
                    seq: ack.message_seq,
                    status,
                    error: ack.error.clone(),
                    detail: ack.detail.clone(),
                });
            }
        }
        if let Some(last) = acks.iter().map(|a| a.id).max() {
            advance_host_cursor(&tx, "ack_cursor", last)?;
        }
        tx.commit()?;
        Ok(verdicts)
    }

    /// Re-queues claims whose runner died or went silent: each still-pending row gets another
    /// try after `backoff_base * 2^tries`, or fails once `max_tries` attempts are used up.
    pub fn requeue(
        &mut self,
        seqs: &[i64],
        max_tries: u32,
        backoff_base: Duration,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Requeue>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::new();
        let mut logged = Vec::new();
        for &seq in seqs {
            let tries: Option<u32> = tx
                .query_row(
                    "SELECT tries FROM messages_in WHERE seq = ?1 AND status = 'pending'",
                    [seq],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(tries) = tries else { continue };
            let used = tries + 1;
            if used >= max_tries {
                let error = format!("{reason}; gave up after {used} attempts");
                tx.execute(
                    "UPDATE messages_in SET status = 'failed', tries = ?1, error = ?2 WHERE seq = ?3",
                    params![used, error, seq],
                )?;
                logged.push(HostEvent::Failed { seq, error });
                out.push(Requeue::Failed { seq, tries: used });
            } else {
                let factor = 1u32.checked_shl(tries).unwrap_or(u32::MAX);
                let delay = backoff_base.saturating_mul(factor);
                // `now + delay` panics on overflow, and a year past 9999 no longer round-trips
                // through the text column: clamp absurd backoffs (huge `max_tries`) instead.
                let latest = sql::latest_storable();
                let at = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .map_or(latest, |at| at.min(latest));
                tx.execute(
                    "UPDATE messages_in SET tries = ?1, process_after = ?2, error = ?3 WHERE seq = ?4",
                    params![used, ts(at), reason, seq],
                )?;
                logged.push(HostEvent::Requeued {
                    seq,
                    tries: used,
                    retry_at: at,
                    reason: reason.to_owned(),
                });
                out.push(Requeue::Retry {
                    seq,
                    tries: used,
                    at,
                });
            }
        }
        // The host's event log rides along: a re-queue costs no extra commit.
        events::append(&tx, logged.iter().map(|e| (now, e)))?;
        tx.commit()?;
        Ok(out)
    }

    /// Marks a pending row failed without a runner verdict (e.g. the runner cannot start), and
    /// logs it (`clawbox logs`) in the same transaction.
    pub fn fail(&mut self, seq: i64, error: &str) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE messages_in SET status = 'failed', error = ?1 WHERE seq = ?2 AND status = 'pending'",
            params![error, seq],
        )?;
        if n == 1 {
            let event = HostEvent::Failed {
                seq,
                error: error.to_owned(),
            };
            events::append(&tx, [(Utc::now(), &event)])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Appends one event to the host's log in its own transaction, pruning the oldest beyond
    /// [`events::KEEP_EVENTS`]. For what no other write records (a runner's exit).
    pub fn record_host_event(&mut self, event: &HostEvent, now: DateTime<Utc>) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        events::append(&tx, [(now, event)])?;
        events::prune::<HostEvent>(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// The host's events with an id above `cursor`, oldest first; at most `limit`.
    pub fn host_events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Stored<HostEvent>>> {
        events::after(&self.conn, cursor, limit)
    }

    /// Failed rows whose sender has not been told yet (survives a host restart).
    pub fn unnotified_failures(&self) -> Result<Vec<InboundMessage>> {
        query_in(
            &self.conn,
            &format!("{SELECT_IN} WHERE status = 'failed' AND notified = 0 ORDER BY seq"),
            [],
        )
    }

    pub fn mark_notified(&mut self, seq: i64) -> Result<()> {
        self.conn
            .execute("UPDATE messages_in SET notified = 1 WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// The highest outbound seq within range ([`crate::seq::MAX_SEQ`]) the host has recorded a
    /// delivery for.
    pub fn out_cursor(&self) -> Result<i64> {
        out_cursor(&self.conn)
    }

    /// Where the host is in the container's rows: in range, and (forged) out of range.
    pub fn out_cursors(&self) -> Result<crate::outbound::OutCursors> {
        out_cursors(&self.conn)
    }

    /// Deliveries not yet finished, oldest first.
    pub fn open_deliveries(&self) -> Result<Vec<Delivery>> {
        query_delivery(
            &self.conn,
            "WHERE status IN ('pending', 'sending') ORDER BY out_seq",
            [],
        )
    }

    pub fn delivery(&self, out_seq: i64) -> Result<Option<Delivery>> {
        Ok(query_delivery(&self.conn, "WHERE out_seq = ?1", [out_seq])?
            .into_iter()
            .next())
    }

    /// Deliveries that failed for good, newest first (for `clawbox status`).
    pub fn failed_deliveries(&self, limit: u32) -> Result<Vec<Delivery>> {
        query_delivery(
            &self.conn,
            "WHERE status = 'failed' ORDER BY out_seq DESC LIMIT ?1",
            [limit],
        )
    }

    /// Records newly `seen` outbound rows as pending and starts an attempt for each of `start`,
    /// in one transaction; returns the attempt number of each started row.
    pub fn begin_deliveries(
        &mut self,
        seen: &[i64],
        start: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, u32)>> {
        if seen.is_empty() && start.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for seq in seen {
            record(&tx, *seq, now)?;
        }
        let mut attempts = Vec::with_capacity(start.len());
        for seq in start {
            attempts.push((*seq, begin(&tx, *seq, now)?));
        }
        tx.commit()?;
        Ok(attempts)
    }

    /// Records a failed attempt, and logs it (`clawbox logs`); `give_up` makes it final.
    pub fn delivery_failed(
        &mut self,
        out_seq: i64,
        error: &str,
        give_up: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let status = if give_up {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Sending
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE delivery SET status = ?1, last_error = ?2, updated_at = ?3 WHERE out_seq = ?4",
            params![status.as_str(), error, ts(now), out_seq],
        )?;
        let event = HostEvent::DeliveryFailed {
            out_seq,
            error: error.to_owned(),
            gave_up: give_up,
        };
        events::append(&tx, [(now, &event)])?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_routing(&mut self, route: &Route) -> Result<()> {
        self.conn.execute(
            "INSERT INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET channel_type = excluded.channel_type,
                 platform_id = excluded.platform_id, thread_id = excluded.thread_id",
            params![route.channel_type, route.platform_id, route.thread_id],
        )?;
        Ok(())
    }

    pub fn routing(&self) -> Result<Option<Route>> {
        routing(&self.conn)
    }

    /// Replaces the destination list (the container's copy of the outbound ACL).
    pub fn set_destinations(&mut self, destinations: &[Destination]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM destinations", [])?;
        for d in destinations {
            tx.execute(
                "INSERT INTO destinations (name, display_name, channel_type, platform_id, thread_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    d.name,
                    d.display_name,
                    d.route.channel_type,
                    d.route.platform_id,
                    d.route.thread_id
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn destinations(&self) -> Result<Vec<Destination>> {
        destinations(&self.conn)
    }

    /// Counts of rows per status, for `clawbox status`.
    pub fn status_counts(&self) -> Result<Vec<(InboundStatus, u64)>> {
        status_counts(&self.conn)
    }

    /// Records the host's answer to the request with outbound seq `request_seq` and marks that
    /// row delivered, in one transaction: a host that crashes after this never answers again,
    /// and one that crashes before it answers after its restart. The first answer wins; a
    /// second one is ignored and reported as [`Answered::Already`].
    pub fn answer(
        &mut self,
        request_seq: i64,
        ok: bool,
        body: &Value,
        now: DateTime<Utc>,
    ) -> Result<Answered> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO responses (request_seq, ok, body, at) VALUES (?1, ?2, ?3, ?4)",
            params![request_seq, ok, body.to_string(), ts(now)],
        )?;
        mark_request_delivered(&tx, request_seq, now)?;
        tx.commit()?;
        Ok(if inserted == 1 {
            Answered::New
        } else {
            Answered::Already
        })
    }

    /// The answer to a request, if the host gave one.
    pub fn response(&self, request_seq: i64) -> Result<Option<Response>> {
        response(&self.conn, request_seq)
    }

    fn host_state(&self, key: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT value FROM host_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }
}

/// Moves a cursor forward to `value`, never back: a pass that folded an older batch (read from a
/// stale cursor) must not make the next pass fold everything after it again.
fn record(conn: &Connection, out_seq: i64, now: DateTime<Utc>) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO delivery (out_seq, status, updated_at) VALUES (?1, 'pending', ?2)",
        params![out_seq, ts(now)],
    )?;
    Ok(())
}

fn begin(conn: &Connection, out_seq: i64, now: DateTime<Utc>) -> Result<u32> {
    Ok(conn.query_row(
        "UPDATE delivery SET status = 'sending', attempts = attempts + 1, updated_at = ?1
         WHERE out_seq = ?2 RETURNING attempts",
        params![ts(now), out_seq],
        |r| r.get(0),
    )?)
}

fn mark_delivered(
    conn: &Connection,
    out_seq: i64,
    platform_message_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.execute(
        "UPDATE delivery SET status = 'delivered', platform_message_id = ?1, last_error = NULL,
             updated_at = ?2 WHERE out_seq = ?3",
        params![platform_message_id, ts(now), out_seq],
    )?;
    Ok(())
}

fn advance_host_cursor(conn: &Connection, key: &str, value: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO host_state (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![key, value],
    )?;
    Ok(())
}

/// The container's read-only handle on `inbound.db`.
pub struct InboundReader {
    pub(crate) conn: Connection,
}

impl InboundReader {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(InboundReader {
            conn: sql::open_ro(path)?,
        })
    }

    /// Pending rows that are due at `now`, oldest first.
    pub fn due(&self, now: DateTime<Utc>) -> Result<Vec<InboundMessage>> {
        query_in(
            &self.conn,
            &format!(
                "{SELECT_IN} WHERE status = 'pending' AND (process_after IS NULL OR process_after <= ?1)
                 ORDER BY seq"
            ),
            [ts(now)],
        )
    }

    /// The earliest `process_after` of a pending row that is not yet due.
    pub fn next_due_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let next: Option<String> = self.conn.query_row(
            "SELECT MIN(process_after) FROM messages_in WHERE status = 'pending' AND process_after > ?1",
            [ts(now)],
            |r| r.get(0),
        )?;
        next.map(|s| parse_ts(TABLE, &s)).transpose()
    }

    pub fn get(&self, seq: i64) -> Result<Option<InboundMessage>> {
        get(&self.conn, seq)
    }

    pub fn routing(&self) -> Result<Option<Route>> {
        routing(&self.conn)
    }

    pub fn destinations(&self) -> Result<Vec<Destination>> {
        destinations(&self.conn)
    }

    // What operators read (`clawbox status`, `sessions`, `logs`), with the host running or
    // not. A file the host has not migrated yet reads as having no host events.

    /// Every row with a seq above `cursor` (any kind and status), in seq order.
    pub fn messages_after(&self, cursor: i64) -> Result<Vec<InboundMessage>> {
        query_in(
            &self.conn,
            &format!("{SELECT_IN} WHERE seq > ?1 ORDER BY seq"),
            [cursor],
        )
    }

    /// Counts of rows per status.
    pub fn status_counts(&self) -> Result<Vec<(InboundStatus, u64)>> {
        status_counts(&self.conn)
    }

    /// The highest outbound seq within range ([`crate::seq::MAX_SEQ`]) the host has recorded a
    /// delivery for.
    pub fn out_cursor(&self) -> Result<i64> {
        out_cursor(&self.conn)
    }

    /// Where the host is in the container's rows: in range, and (forged) out of range.
    pub fn out_cursors(&self) -> Result<crate::outbound::OutCursors> {
        out_cursors(&self.conn)
    }

    /// Deliveries in each state.
    pub fn delivery_counts(&self) -> Result<Vec<(DeliveryStatus, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (s, n) = r?;
            Ok((DeliveryStatus::parse("delivery", &s)?, n.max(0) as u64))
        })
        .collect()
    }

    /// Deliveries whose record changed at or after `since`, in seq order.
    pub fn deliveries_since(&self, since: DateTime<Utc>) -> Result<Vec<Delivery>> {
        query_delivery(
            &self.conn,
            "WHERE updated_at >= ?1 ORDER BY out_seq",
            [ts(since)],
        )
    }

    /// The host's events with an id above `cursor`, oldest first; at most `limit`.
    pub fn host_events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Stored<HostEvent>>> {
        if events::schema_version(&self.conn)? < events::INBOUND_EVENTS_VERSION {
            return Ok(Vec::new());
        }
        events::after(&self.conn, cursor, limit)
    }

    /// The host's newest `limit` events, newest first.
    pub fn latest_host_events(&self, limit: u32) -> Result<Vec<Stored<HostEvent>>> {
        if events::schema_version(&self.conn)? < events::INBOUND_EVENTS_VERSION {
            return Ok(Vec::new());
        }
        events::latest(&self.conn, limit)
    }

    /// The host's answer to the request with outbound seq `request_seq`, once it is there.
    pub fn response(&self, request_seq: i64) -> Result<Option<Response>> {
        response(&self.conn, request_seq)
    }
}

/// Stores `msg` in an open transaction (see [`InboundDb::insert`]).
fn insert_in(
    tx: &Connection,
    msg: &NewInbound,
    max_out: i64,
    now: DateTime<Utc>,
) -> Result<Inserted> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT seq FROM messages_in WHERE id = ?1",
            [&msg.id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(seq) = existing {
        return Ok(Inserted::Duplicate(seq));
    }
    // The host's own rows; bounded like the other side's max so that a seq near `i64::MAX`
    // (only possible in a file written by hand) cannot overflow the next one.
    let max_in: i64 = tx.query_row(
        &format!("SELECT COALESCE(MAX(seq), 0) FROM messages_in WHERE {MAX_SEQ_FILTER}"),
        [],
        |r| r.get(0),
    )?;
    let seq = next_seq(Parity::Inbound, max_in.max(max_out));
    tx.execute(
        "INSERT INTO messages_in (seq, id, kind, created_at, process_after, trigger,
             channel_type, platform_id, thread_id, sender_id, sender_name, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            seq,
            msg.id,
            msg.kind.as_str(),
            ts(now),
            msg.process_after.map(ts),
            msg.trigger,
            msg.route.channel_type,
            msg.route.platform_id,
            msg.route.thread_id,
            msg.sender_id,
            msg.sender_name,
            msg.content.to_string(),
        ],
    )?;
    Ok(Inserted::New(seq))
}

/// A request row's delivery record: `delivered` (it never goes to a chat).
fn mark_request_delivered(conn: &Connection, request_seq: i64, now: DateTime<Utc>) -> Result<()> {
    conn.execute(
        "INSERT INTO delivery (out_seq, status, attempts, updated_at) VALUES (?1, 'delivered', 1, ?2)
         ON CONFLICT(out_seq) DO UPDATE SET status = 'delivered', last_error = NULL,
             updated_at = excluded.updated_at",
        params![request_seq, ts(now)],
    )?;
    Ok(())
}

/// See [`InboundDb::out_cursor`]; the writer and the reader share it.
fn out_cursor(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(out_seq), 0) FROM delivery WHERE out_seq <= ?1",
        [MAX_SEQ],
        |r| r.get(0),
    )?)
}

/// See [`InboundDb::out_cursors`]; the writer and the reader share it.
fn out_cursors(conn: &Connection) -> Result<crate::outbound::OutCursors> {
    Ok(crate::outbound::OutCursors {
        in_range: out_cursor(conn)?,
        out_of_range: conn.query_row(
            "SELECT COALESCE(MAX(out_seq), ?1) FROM delivery WHERE out_seq > ?1",
            [MAX_SEQ],
            |r| r.get(0),
        )?,
    })
}

fn status_counts(conn: &Connection) -> Result<Vec<(InboundStatus, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM messages_in GROUP BY status ORDER BY status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    rows.map(|r| {
        let (s, n) = r?;
        Ok((InboundStatus::parse(TABLE, &s)?, n.max(0) as u64))
    })
    .collect()
}

fn response(conn: &Connection, request_seq: i64) -> Result<Option<Response>> {
    let row = conn
        .prepare_cached("SELECT ok, body, at FROM responses WHERE request_seq = ?1")?
        .query_row([request_seq], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    row.map(|(ok, body, at)| {
        Ok(Response {
            request_seq,
            ok,
            body: parse_json("responses", &body)?,
            at: parse_ts("responses", &at)?,
        })
    })
    .transpose()
}

fn get(conn: &Connection, seq: i64) -> Result<Option<InboundMessage>> {
    Ok(
        query_in(conn, &format!("{SELECT_IN} WHERE seq = ?1"), [seq])?
            .into_iter()
            .next(),
    )
}

fn query_in<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<InboundMessage>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raw = stmt.query_map(params, RawIn::from_row)?;
    raw.map(|r| r?.decode()).collect()
}

struct RawIn {
    seq: i64,
    id: String,
    kind: String,
    created_at: String,
    status: String,
    process_after: Option<String>,
    tries: u32,
    trigger: bool,
    route: Route,
    sender_id: Option<String>,
    sender_name: Option<String>,
    content: String,
    error: Option<String>,
    detail: Option<String>,
}

impl RawIn {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawIn {
            seq: r.get(0)?,
            id: r.get(1)?,
            kind: r.get(2)?,
            created_at: r.get(3)?,
            status: r.get(4)?,
            process_after: r.get(5)?,
            tries: r.get(6)?,
            trigger: r.get(7)?,
            route: Route {
                channel_type: r.get(8)?,
                platform_id: r.get(9)?,
                thread_id: r.get(10)?,
            },
            sender_id: r.get(11)?,
            sender_name: r.get(12)?,
            content: r.get(13)?,
            error: r.get(14)?,
            detail: r.get(15)?,
        })
    }

    fn decode(self) -> Result<InboundMessage> {
        Ok(InboundMessage {
            seq: self.seq,
            id: self.id,
            kind: InboundKind::parse(TABLE, &self.kind)?,
            created_at: parse_ts(TABLE, &self.created_at)?,
            status: InboundStatus::parse(TABLE, &self.status)?,
            process_after: self
                .process_after
                .map(|s| parse_ts(TABLE, &s))
                .transpose()?,
            tries: self.tries,
            trigger: self.trigger,
            route: self.route,
            sender_id: self.sender_id,
            sender_name: self.sender_name,
            content: parse_json(TABLE, &self.content)?,
            error: self.error,
            detail: self.detail.map(|d| parse_json(TABLE, &d)).transpose()?,
        })
    }
}

fn query_delivery<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT out_seq, status, attempts, platform_message_id, last_error, updated_at FROM delivery {filter}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    rows.map(|r| {
        let (out_seq, status, attempts, platform_message_id, last_error, updated_at) = r?;
        Ok(Delivery {
            out_seq,
            status: DeliveryStatus::parse("delivery", &status)?,
            attempts,
            platform_message_id,
            last_error,
            updated_at: parse_ts("delivery", &updated_at)?,
        })
    })
    .collect()
}

fn routing(conn: &Connection) -> Result<Option<Route>> {
    Ok(conn
        .query_row(
            "SELECT channel_type, platform_id, thread_id FROM session_routing WHERE id = 1",
            [],
            |r| {
                Ok(Route {
                    channel_type: r.get(0)?,
                    platform_id: r.get(1)?,
                    thread_id: r.get(2)?,
                })
            },
        )
        .optional()?)
}

fn destinations(conn: &Connection) -> Result<Vec<Destination>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, display_name, channel_type, platform_id, thread_id FROM destinations ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Destination {
            name: r.get(0)?,
            display_name: r.get(1)?,
            route: Route {
                channel_type: r.get(2)?,
                platform_id: r.get(3)?,
                thread_id: r.get(4)?,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
