//! Schemas of the two session databases, as numbered migrations applied on open.
//!
//! The version lives in `PRAGMA user_version`; each migration runs in one `BEGIN IMMEDIATE`
//! transaction together with the version bump, so a crash leaves either the old or the new
//! schema, never half of one. A database newer than this build is refused.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::{Error, Result};

pub(crate) const INBOUND: &[&str] = &[
    // 1: messages, the host's delivery record, routing and destinations, host cursors.
    "CREATE TABLE messages_in (
        seq           INTEGER PRIMARY KEY CHECK (seq > 0 AND seq % 2 = 0),
        id            TEXT NOT NULL UNIQUE,
        kind          TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        status        TEXT NOT NULL DEFAULT 'pending',
        process_after TEXT,
        tries         INTEGER NOT NULL DEFAULT 0,
        trigger       INTEGER NOT NULL DEFAULT 1,
        channel_type  TEXT NOT NULL,
        platform_id   TEXT NOT NULL,
        thread_id     TEXT,
        sender_id     TEXT,
        sender_name   TEXT,
        content       TEXT NOT NULL,
        error         TEXT,
        notified      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX messages_in_pending ON messages_in(seq) WHERE status = 'pending';
    CREATE INDEX messages_in_unnotified ON messages_in(seq) WHERE status = 'failed' AND notified = 0;
    CREATE TABLE delivery (
        out_seq             INTEGER PRIMARY KEY,
        status              TEXT NOT NULL,
        attempts            INTEGER NOT NULL DEFAULT 0,
        platform_message_id TEXT,
        last_error          TEXT,
        updated_at          TEXT NOT NULL
    );
    CREATE INDEX delivery_open ON delivery(out_seq) WHERE status IN ('pending', 'sending');
    CREATE TABLE session_routing (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        channel_type TEXT NOT NULL,
        platform_id  TEXT NOT NULL,
        thread_id    TEXT
    );
    CREATE TABLE destinations (
        name         TEXT PRIMARY KEY,
        display_name TEXT,
        channel_type TEXT NOT NULL,
        platform_id  TEXT NOT NULL,
        thread_id    TEXT
    );
    CREATE TABLE host_state (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );",
    // 2: the host's event log (events.rs): re-queues, failures, delivery errors, runner exits.
    "CREATE TABLE host_events (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        at   TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );",
    // 3: the host's answers to the container's requests (`request.rs`), and the detail of a
    // verdict (e.g. a task script's outcome) next to its status.
    "ALTER TABLE messages_in ADD COLUMN detail TEXT;
    CREATE TABLE responses (
        request_seq INTEGER PRIMARY KEY CHECK (request_seq > 0 AND request_seq % 2 = 1),
        ok          INTEGER NOT NULL,
        body        TEXT NOT NULL,
        at          TEXT NOT NULL
    );",
];

pub(crate) const OUTBOUND: &[&str] = &[
    // 1: replies, the ack log, conversation history, runner state.
    "CREATE TABLE messages_out (
        seq          INTEGER PRIMARY KEY CHECK (seq > 0 AND seq % 2 = 1),
        id           TEXT NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        in_reply_to  INTEGER,
        created_at   TEXT NOT NULL,
        channel_type TEXT NOT NULL,
        platform_id  TEXT NOT NULL,
        thread_id    TEXT,
        content      TEXT NOT NULL
    );
    CREATE TABLE acks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        message_seq INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        error       TEXT,
        at          TEXT NOT NULL
    );
    CREATE INDEX acks_by_message ON acks(message_seq, id);
    CREATE TABLE history (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        epoch   INTEGER NOT NULL,
        turn    INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX history_by_epoch ON history(epoch, id);
    CREATE TABLE runner_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        pid             INTEGER NOT NULL,
        started_at      TEXT NOT NULL,
        activity        TEXT NOT NULL,
        step            INTEGER NOT NULL DEFAULT 0,
        tool            TEXT,
        tool_timeout_ms INTEGER,
        updated_at      TEXT NOT NULL
    );
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: the runner's event log (events.rs): its start, model steps, tool calls.
    "CREATE TABLE events (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        at   TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );",
    // 3: the detail of a verdict (JSON), e.g. what a scheduled task's script decided.
    "ALTER TABLE acks ADD COLUMN detail TEXT;",
    // 4: the growing text of the turn in progress (drafts.rs), one row per turn.
    "CREATE TABLE drafts (
        turn       INTEGER PRIMARY KEY,
        reply_to   INTEGER NOT NULL,
        step       INTEGER NOT NULL,
        text       TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // 5: the tool calls a draft's step is running (drafts.rs), JSON, for progress lines.
    "ALTER TABLE drafts ADD COLUMN calls TEXT;",
];

/// Brings `conn` up to the last of `migrations`.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let supported = migrations.len() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}
