//! The central database's schema: numbered migrations, each applied with its `user_version`
//! bump in one transaction.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{DbError, DbResult};

/// Numbered migrations; each runs with its `user_version` bump in one transaction.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE agent_groups (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        folder     TEXT NOT NULL UNIQUE,
        model      TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE messaging_groups (
        id                    TEXT PRIMARY KEY,
        channel_type          TEXT NOT NULL,
        platform_id           TEXT NOT NULL,
        name                  TEXT,
        is_group              INTEGER NOT NULL DEFAULT 0,
        unknown_sender_policy TEXT NOT NULL DEFAULT 'strict'
                              CHECK (unknown_sender_policy IN ('strict', 'public')),
        created_at            TEXT NOT NULL,
        UNIQUE (channel_type, platform_id)
    );
    CREATE TABLE wirings (
        id                     TEXT PRIMARY KEY,
        messaging_group_id     TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        agent_group_id         TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        engage_mode            TEXT NOT NULL CHECK (engage_mode IN ('pattern', 'mention', 'mention-sticky')),
        engage_pattern         TEXT,
        sticky_window_s        INTEGER NOT NULL DEFAULT 600,
        sender_scope           TEXT NOT NULL DEFAULT 'all' CHECK (sender_scope IN ('all', 'known')),
        ignored_message_policy TEXT NOT NULL DEFAULT 'drop' CHECK (ignored_message_policy IN ('drop', 'accumulate')),
        session_mode           TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared', 'per-thread', 'agent-shared')),
        priority               INTEGER NOT NULL DEFAULT 0,
        created_at             TEXT NOT NULL,
        UNIQUE (messaging_group_id, agent_group_id)
    );
    CREATE TABLE users (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        display_name TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE TABLE user_roles (
        user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
        granted_by     TEXT,
        granted_at     TEXT NOT NULL,
        PRIMARY KEY (user_id, agent_group_id)
    );
    CREATE TABLE sessions (
        id                 TEXT PRIMARY KEY,
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        thread_id          TEXT,
        status             TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
        runner_state       TEXT NOT NULL DEFAULT 'stopped' CHECK (runner_state IN ('stopped', 'running', 'waiting')),
        last_activity      TEXT NOT NULL,
        created_at         TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sessions_key ON sessions(agent_group_id, messaging_group_id, COALESCE(thread_id, ''))
        WHERE status = 'active';
    CREATE INDEX sessions_busy ON sessions(runner_state) WHERE runner_state != 'stopped';
    CREATE TABLE destinations (
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        display_name   TEXT,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        thread_id      TEXT,
        created_at     TEXT NOT NULL,
        PRIMARY KEY (agent_group_id, name)
    );
    CREATE TABLE dropped_messages (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        sender_id      TEXT,
        sender_name    TEXT,
        agent_group_id TEXT,
        reason         TEXT NOT NULL,
        at             TEXT NOT NULL
    );",
    // 2: tokens the model proxy forwarded, per session and calendar day (proxy.rs).
    "CREATE TABLE token_usage (
        session_id        TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        day               TEXT NOT NULL,
        prompt_tokens     INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        requests          INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, day)
    );",
    // 3: the Telegram channel. Chats may ask the owner about unknown senders
    // (`request_approval`, a CHECK change, so the table is rebuilt); usernames are aliases of
    // numeric ids; mention-sticky engagement has its own scopes (agent, chat, topic); unknown
    // senders wait in `approvals` with their messages held; `telegram_updates` is the
    // journal that lets the poller confirm an update before it is routed.
    "CREATE TABLE messaging_groups_new (
        id                    TEXT PRIMARY KEY,
        channel_type          TEXT NOT NULL,
        platform_id           TEXT NOT NULL,
        name                  TEXT,
        is_group              INTEGER NOT NULL DEFAULT 0,
        unknown_sender_policy TEXT NOT NULL DEFAULT 'strict'
                              CHECK (unknown_sender_policy IN ('strict', 'public', 'request_approval')),
        created_at            TEXT NOT NULL,
        UNIQUE (channel_type, platform_id)
    );
    INSERT INTO messaging_groups_new
        SELECT id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at
        FROM messaging_groups;
    DROP TABLE messaging_groups;
    ALTER TABLE messaging_groups_new RENAME TO messaging_groups;
    CREATE TABLE user_aliases (
        alias    TEXT PRIMARY KEY,
        user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        bound_at TEXT NOT NULL
    );
    CREATE TABLE engagements (
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        thread_key         TEXT NOT NULL DEFAULT '',
        last_activity      TEXT NOT NULL,
        PRIMARY KEY (agent_group_id, messaging_group_id, thread_key)
    );
    CREATE TABLE approvals (
        id                 TEXT PRIMARY KEY,
        agent_group_id     TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
        sender_id          TEXT NOT NULL,
        sender_name        TEXT,
        status             TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'allowed', 'denied')),
        cards              TEXT NOT NULL DEFAULT '[]',
        created_at         TEXT NOT NULL,
        decided_by         TEXT,
        decided_at         TEXT,
        UNIQUE (agent_group_id, sender_id)
    );
    CREATE TABLE held_messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        approval_id TEXT NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
        event       TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE telegram_updates (
        bot_id      INTEGER NOT NULL,
        update_id   INTEGER NOT NULL,
        chat_key    TEXT NOT NULL,
        payload     TEXT NOT NULL,
        received_at TEXT NOT NULL,
        done_at     TEXT,
        PRIMARY KEY (bot_id, update_id)
    );
    CREATE INDEX telegram_updates_open ON telegram_updates(bot_id, update_id) WHERE done_at IS NULL;",
    // 4: scheduled tasks, their run history, and the journal of answered tool requests
    // (tasks.rs, scheduler.rs, requests.rs).
    "CREATE TABLE tasks (
        id             TEXT PRIMARY KEY,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        prompt         TEXT NOT NULL,
        script         TEXT,
        schedule_kind  TEXT NOT NULL CHECK (schedule_kind IN ('once', 'cron')),
        run_at         TEXT,
        cron           TEXT,
        timezone       TEXT NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('active', 'paused', 'cancelled', 'completed')),
        next_run       TEXT,
        last_run       TEXT,
        last_outcome   TEXT,
        run_count      INTEGER NOT NULL DEFAULT 0,
        created_by     TEXT NOT NULL,
        requested_by   TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        CHECK ((schedule_kind = 'once') = (run_at IS NOT NULL AND cron IS NULL))
    );
    CREATE INDEX tasks_due ON tasks(next_run) WHERE status = 'active';
    CREATE INDEX tasks_by_agent ON tasks(agent_group_id, status);
    CREATE TABLE task_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id       TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        scheduled_for TEXT NOT NULL,
        fired_at      TEXT NOT NULL,
        trigger       TEXT NOT NULL CHECK (trigger IN ('schedule', 'run-now')),
        session_id    TEXT NOT NULL,
        inbound_seq   INTEGER,
        outcome       TEXT NOT NULL CHECK (outcome IN ('fired', 'skipped-overlap', 'script-false',
                          'script-error', 'completed', 'failed')),
        detail        TEXT,
        UNIQUE (task_id, scheduled_for)
    );
    CREATE INDEX task_runs_open ON task_runs(session_id, inbound_seq) WHERE outcome = 'fired';
    CREATE TABLE tool_requests (
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        request_seq INTEGER NOT NULL,
        op          TEXT NOT NULL,
        ok          INTEGER NOT NULL,
        body        TEXT NOT NULL,
        at          TEXT NOT NULL,
        PRIMARY KEY (session_id, request_seq)
    );",
    // 5: questions agents ask people (questions.rs): shown as buttons or numbered options,
    // answered by the asker or an owner/admin, or expired; `delivered` once the outcome is in
    // the session's inbox.
    "CREATE TABLE questions (
        id             TEXT PRIMARY KEY,
        session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        request_seq    INTEGER NOT NULL,
        channel_type   TEXT NOT NULL,
        platform_id    TEXT NOT NULL,
        thread_id      TEXT,
        asked_by       TEXT,
        title          TEXT NOT NULL,
        question       TEXT NOT NULL,
        options        TEXT NOT NULL,
        timeout_s      INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'answered', 'expired')),
        card           TEXT,
        created_at     TEXT NOT NULL,
        expires_at     TEXT NOT NULL,
        outcome        TEXT,
        closed_at      TEXT,
        delivered      INTEGER NOT NULL DEFAULT 0,
        UNIQUE (session_id, request_seq)
    );
    CREATE INDEX questions_open ON questions(expires_at) WHERE status = 'pending';
    CREATE INDEX questions_undelivered ON questions(closed_at)
        WHERE status != 'pending' AND delivered = 0;",
    // 6: retirement of idle sessions (session/retention.rs). A retired session is `closed`;
    // `retired` is 'removing' from then until its folder is gone, then 'done'. The retention
    // pass finds what is due by last activity, and unfinished removals, through indexes.
    "ALTER TABLE sessions ADD COLUMN retired TEXT CHECK (retired IN ('removing', 'done'));
    CREATE INDEX sessions_idle ON sessions(last_activity) WHERE status = 'active';
    CREATE INDEX sessions_retiring ON sessions(id) WHERE retired = 'removing';",
    // 7: when a session was retired, for `clawbox logs` of a retired session (NULL for those
    // retired before this column existed).
    "ALTER TABLE sessions ADD COLUMN retired_at TEXT;",
    // 8: pairing codes (db/pairing.rs): hashes only, each spent once; wrong guesses are kept
    // for the rate limit's window.
    "CREATE TABLE pairing_codes (
        code_hash      TEXT PRIMARY KEY,
        agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
        created_at     TEXT NOT NULL,
        expires_at     TEXT NOT NULL,
        used_at        TEXT,
        used_by        TEXT
    );
    CREATE TABLE pairing_attempts (
        id        INTEGER PRIMARY KEY,
        sender_id TEXT NOT NULL,
        at        TEXT NOT NULL
    );
    CREATE INDEX pairing_attempts_at ON pairing_attempts(at);",
];

/// Applies the missing migrations in one transaction. Foreign keys are off meanwhile, as
/// SQLite's procedure for rebuilding a table requires (a migration that replaces a parent table
/// must not cascade into its children); the transaction checks them before it commits.
pub(super) fn migrate(conn: &mut Connection) -> DbResult<()> {
    let supported = MIGRATIONS.len() as i64;
    // Cannot change inside a transaction, hence here.
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > supported {
            return Err(DbError::TooNew { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        let broken: Option<String> = tx
            .query_row(
                "SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(table) = broken {
            return Err(DbError::Malformed(format!(
                "migration left a dangling reference in {table}"
            )));
        }
        tx.commit()?;
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}
