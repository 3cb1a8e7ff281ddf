//! Invariant 1, one writer per file: the container only reads `inbound.db`, the host only reads
//! `outbound.db`, and neither reader leaves anything behind in the other side's directory (under
//! a read-only mount it could not).

use mailbox::{AckStatus, Error, InboundDb, InboundReader, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;
use rusqlite::{Connection, OpenFlags};

use super::common::{Session, chat, file_names, reply, t};

/// How `InboundReader` / `OutboundReader` open the other side's file.
fn open_like_a_reader(path: &std::path::Path) -> Connection {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap()
}

fn assert_read_only(err: rusqlite::Error) {
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
}

#[test]
fn container_cannot_write_inbound() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();

    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(reader.get(seq).unwrap().unwrap().text(), Some("hi"));

    let raw = open_like_a_reader(&s.paths.inbound_db());
    assert_read_only(
        raw.execute("UPDATE messages_in SET status = 'completed'", [])
            .unwrap_err(),
    );
    assert_read_only(
        raw.execute_batch("CREATE TABLE sneaky (x INTEGER)")
            .unwrap_err(),
    );
    // Still pending: nothing the container holds could change it.
    assert_eq!(
        host.get(seq).unwrap().unwrap().status,
        mailbox::InboundStatus::Pending
    );
}

#[test]
fn host_cannot_write_outbound() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = runner
        .insert_message(&reply("r1", None, "hello"), t(0))
        .unwrap();

    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(reader.message(seq).unwrap().unwrap().text(), Some("hello"));

    let raw = open_like_a_reader(&s.paths.outbound_db());
    // Host-originated notices never go into outbound.db: the host could not write one.
    assert_read_only(
        raw.execute(
            "INSERT INTO messages_out (seq, id, kind, created_at, channel_type, platform_id, content)
             VALUES (99, 'notice', 'chat', 'x', 'telegram', 'c', '{}')",
            [],
        )
        .unwrap_err(),
    );
    assert_read_only(raw.execute("DELETE FROM acks", []).unwrap_err());
}

#[test]
fn readers_never_create_the_other_sides_file() {
    let s = Session::new();
    let inbound = s.paths.inbound_db();
    let outbound = s.paths.outbound_db();

    let Err(Error::Io { path, source, .. }) = InboundReader::open(&inbound) else {
        panic!("opening a missing inbound.db must fail");
    };
    assert_eq!(path, inbound);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(!inbound.exists());

    let Err(Error::Io { source, .. }) = OutboundReader::open(&outbound) else {
        panic!("opening a missing outbound.db must fail");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(!outbound.exists());

    // Each writer reads the other side's max seq; a missing file counts as empty and is not
    // created either.
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(
        runner
            .insert_message(&reply("r1", None, "a"), t(0))
            .unwrap(),
        1
    );
    assert!(!inbound.exists());
    drop(runner);
    std::fs::remove_file(&outbound).unwrap();
    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(host.insert(&chat("tg:1", "b"), t(0)).unwrap().seq(), 2);
    assert!(!outbound.exists());
}

#[test]
fn reading_the_other_side_leaves_no_files_behind() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();
    assert_eq!(file_names(&s.paths.inbound_dir), ["inbound.db"]);
    assert_eq!(file_names(&s.paths.outbound_dir), ["outbound.db"]);

    // The container reads inbound (and its seq allocation peeks at it) while writing outbound.
    let inbound = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let due = inbound.due(t(1)).unwrap();
    inbound.next_due_after(t(1)).unwrap();
    inbound.routing().unwrap();
    inbound.destinations().unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.ack(
        due[0].seq,
        due[0].attempt(),
        AckStatus::Processing,
        None,
        t(1),
    )
    .unwrap();
    tx.insert_message(&reply("r1", Some(seq), "hello"), t(1))
        .unwrap();
    tx.commit().unwrap();

    // The host reads outbound (and its seq allocation peeks at it) while writing inbound.
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    outbound.acks_after(0).unwrap();
    outbound.messages_after(0).unwrap();
    outbound.runner_state().unwrap();
    host.insert(&chat("tg:2", "again"), t(2)).unwrap();

    // No journal, WAL or shared-memory file: a read-only mount would have refused them.
    assert_eq!(file_names(&s.paths.inbound_dir), ["inbound.db"]);
    assert_eq!(file_names(&s.paths.outbound_dir), ["outbound.db"]);
}

#[test]
fn a_reader_sees_an_unmigrated_outbound_db_as_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let paths = mailbox::SessionPaths::from_root(dir.path());
    paths.create_dirs().unwrap();
    // The runner has created the file but not yet its tables.
    rusqlite::Connection::open(paths.outbound_db())
        .unwrap()
        .execute_batch("PRAGMA journal_mode=DELETE;")
        .unwrap();
    let reader = mailbox::OutboundReader::open(&paths.outbound_db()).unwrap();
    assert!(!reader.is_ready().unwrap());
    mailbox::OutboundDb::open(&paths).unwrap();
    assert!(reader.is_ready().unwrap());
}
