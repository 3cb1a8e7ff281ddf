//! Invariant 8, schema versioned: `PRAGMA user_version` is the number of migrations applied;
//! opening again is a no-op; a newer database is refused untouched.

use std::path::Path;

use mailbox::{Error, InboundDb, OutboundDb, SessionPaths};
use pretty_assertions::assert_eq;
use rusqlite::Connection;

use super::common::{Session, chat, reply, t};

/// Migrations in `mailbox/src/schema.rs`; bump with each new one.
const INBOUND_VERSION: i64 = 3;
const OUTBOUND_VERSION: i64 = 5;

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn set_user_version(path: &Path, v: i64) {
    Connection::open(path)
        .unwrap()
        .pragma_update(None, "user_version", v)
        .unwrap();
}

#[test]
fn open_migrates_once() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(user_version(&s.paths.inbound_db()), INBOUND_VERSION);
    assert_eq!(user_version(&s.paths.outbound_db()), OUTBOUND_VERSION);
    host.insert(&chat("tg:1", "x"), t(0)).unwrap();
    runner
        .insert_message(&reply("r1", None, "y"), t(0))
        .unwrap();
    drop((host, runner));

    // Opening again keeps version and data (a second CREATE TABLE would fail outright).
    let host = InboundDb::open(&s.paths).unwrap();
    let runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(user_version(&s.paths.inbound_db()), INBOUND_VERSION);
    assert_eq!(user_version(&s.paths.outbound_db()), OUTBOUND_VERSION);
    assert_eq!(host.get(2).unwrap().unwrap().text(), Some("x"));
    assert_eq!(runner.message(3).unwrap().unwrap().text(), Some("y"));
}

#[test]
fn a_newer_database_is_refused_untouched() {
    let s = Session::new();
    drop(InboundDb::open(&s.paths).unwrap());
    drop(OutboundDb::open(&s.paths).unwrap());
    let inbound = s.paths.inbound_db();
    let outbound = s.paths.outbound_db();
    set_user_version(&inbound, INBOUND_VERSION + 1);
    set_user_version(&outbound, OUTBOUND_VERSION + 5);

    let check = |err: Error, want_path: &Path, want_found: i64, want_supported: i64| {
        let Error::SchemaTooNew {
            path,
            found,
            supported,
        } = err
        else {
            panic!("expected SchemaTooNew, got {err}");
        };
        assert_eq!(
            (path.as_path(), found, supported),
            (want_path, want_found, want_supported)
        );
    };
    let Err(err) = InboundDb::open(&s.paths) else {
        panic!("a newer inbound.db must be refused");
    };
    check(err, &inbound, INBOUND_VERSION + 1, INBOUND_VERSION);
    let Err(err) = OutboundDb::open(&s.paths) else {
        panic!("a newer outbound.db must be refused");
    };
    check(err, &outbound, OUTBOUND_VERSION + 5, OUTBOUND_VERSION);

    assert_eq!(user_version(&inbound), INBOUND_VERSION + 1);
    assert_eq!(user_version(&outbound), OUTBOUND_VERSION + 5);
}

#[test]
fn a_fresh_file_gets_every_table() {
    let s = Session::new();
    drop(InboundDb::open(&s.paths).unwrap());
    drop(OutboundDb::open(&s.paths).unwrap());
    let tables = |path: &Path| -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        tables(&s.paths.inbound_db()),
        [
            "delivery",
            "destinations",
            "host_events",
            "host_state",
            "messages_in",
            "responses",
            "session_routing"
        ]
    );
    assert_eq!(
        tables(&s.paths.outbound_db()),
        [
            "acks",
            "drafts",
            "events",
            "history",
            "kv",
            "messages_out",
            "runner_state"
        ]
    );
}

#[test]
fn open_fails_cleanly_without_the_session_directory() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::for_session(dir.path(), "agent", "missing").unwrap();
    // The database file is created (0600) before SQLite opens it: the missing folder is an
    // I/O error naming the path.
    for err in [
        InboundDb::open(&paths).err(),
        OutboundDb::open(&paths).err(),
    ] {
        match err {
            Some(Error::Io { action, path, .. }) => {
                assert_eq!(action, "create");
                assert!(path.starts_with(dir.path()), "{}", path.display());
            }
            other => panic!("{other:?}"),
        }
    }
}
