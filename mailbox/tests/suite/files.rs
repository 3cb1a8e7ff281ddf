//! Invariant 7, crash-safe files: a new session's databases use the rollback journal
//! (`DELETE`) unless the host chooses WAL (`wal.rs`), and ids that become path components
//! cannot escape the sessions directory.

use std::path::Path;

use mailbox::{Error, InboundDb, Journal, OutboundDb, SessionPaths};
use pretty_assertions::assert_eq;
use rusqlite::Connection;

use super::common::{Session, chat, file_names, reply, t};

fn journal_mode(path: &Path) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn both_databases_use_the_rollback_journal() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    host.insert(&chat("tg:1", "x"), t(0)).unwrap();
    runner
        .insert_message(&reply("r1", None, "y"), t(0))
        .unwrap();

    assert_eq!(journal_mode(&s.paths.inbound_db()), "delete");
    assert_eq!(journal_mode(&s.paths.outbound_db()), "delete");
    assert_eq!(file_names(&s.paths.inbound_dir), ["inbound.db"]);
    assert_eq!(file_names(&s.paths.outbound_dir), ["outbound.db"]);
}

#[test]
fn a_wal_database_is_switched_back_on_open() {
    let s = Session::new();
    for path in [s.paths.inbound_db(), s.paths.outbound_db()] {
        let raw = Connection::open(&path).unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch("CREATE TABLE leftover (x INTEGER)")
            .unwrap();
        drop(raw);
        assert_eq!(
            journal_mode(&path),
            "wal",
            "WAL is persistent until switched"
        );
    }

    // The host asks for the rollback journal; the container follows inbound.db.
    InboundDb::open_with(&s.paths, Journal::Delete).unwrap();
    OutboundDb::open(&s.paths).unwrap();
    assert_eq!(journal_mode(&s.paths.inbound_db()), "delete");
    assert_eq!(journal_mode(&s.paths.outbound_db()), "delete");
}

#[test]
fn session_ids_cannot_escape_the_sessions_directory() {
    let root = Path::new("/data/sessions");
    for bad in [
        "..", "../other", "a/b", "/etc", ".hidden", ".", "", "a\\b", "x y",
    ] {
        for (agent, session) in [(bad, "s1"), ("agent", bad)] {
            let err = SessionPaths::for_session(root, agent, session).unwrap_err();
            let Error::InvalidId { value, .. } = err else {
                panic!("{agent:?}/{session:?}: {err}");
            };
            assert_eq!(value, bad);
        }
    }
    let long = "a".repeat(129);
    assert!(SessionPaths::for_session(root, "agent", &long).is_err());

    let ok = SessionPaths::for_session(root, "agent-1", "tg_42.thread-7").unwrap();
    assert_eq!(
        ok.inbound_db(),
        Path::new("/data/sessions/agent-1/tg_42.thread-7/inbound/inbound.db")
    );
}

#[test]
fn the_container_view_keeps_the_same_file_names() {
    let paths = SessionPaths::from_root(Path::new("/mailbox")).with_workspace("/workspace".into());
    assert_eq!(
        paths,
        SessionPaths {
            inbound_dir: "/mailbox/inbound".into(),
            outbound_dir: "/mailbox/outbound".into(),
            workspace: "/workspace".into(),
        }
    );
    assert_eq!(
        paths.outbound_db(),
        Path::new("/mailbox/outbound/outbound.db")
    );
    assert_eq!(paths.heartbeat(), Path::new("/mailbox/outbound/heartbeat"));
    assert_eq!(paths.inbound_files(), Path::new("/mailbox/inbound/files"));
    assert_eq!(paths.outbound_files(), Path::new("/mailbox/outbound/files"));
}
