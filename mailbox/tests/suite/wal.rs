//! Invariant 7 in WAL mode: the host chooses the journal of a session (`Journal`), the
//! container follows it; a reader whose `-shm` is read-only (the container's view through the
//! read-only `inbound/` mount) sees every commit; and a writer killed with SIGKILL in the middle
//! of its commits loses nothing it had committed and leaves no half transaction.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mailbox::{
    AckStatus, InboundDb, InboundReader, Journal, OutboundDb, OutboundReader, SessionPaths,
};
use pretty_assertions::assert_eq;
use rusqlite::{Connection, OpenFlags};

use super::common::{Session, chat, file_names, reply, t};

fn journal_mode(path: &Path) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_host_chooses_wal_and_the_container_follows() {
    let s = Session::new();
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    assert_eq!(
        Journal::of_file(&s.paths.inbound_db()).unwrap(),
        Some(Journal::Wal)
    );
    // The container is told nothing: it reads the mode off inbound.db.
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();
    runner
        .insert_message(&reply("r1", Some(seq), "hello"), t(1))
        .unwrap();
    assert_eq!(journal_mode(&s.paths.inbound_db()), "wal");
    assert_eq!(journal_mode(&s.paths.outbound_db()), "wal");

    // Closing every connection keeps -wal and -shm: a reader behind a read-only mount could not
    // create them, and without them it could not open the database at all.
    drop(host);
    drop(runner);
    assert_eq!(
        file_names(&s.paths.inbound_dir),
        ["inbound.db", "inbound.db-shm", "inbound.db-wal"]
    );
    assert_eq!(
        file_names(&s.paths.outbound_dir),
        ["outbound.db", "outbound.db-shm", "outbound.db-wal"]
    );
    let inbound = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(inbound.get(seq).unwrap().unwrap().text(), Some("hi"));
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(outbound.messages_after(0).unwrap().len(), 1);
}

#[test]
fn open_keeps_the_mode_and_open_with_switches_it() {
    let s = Session::new();
    assert_eq!(Journal::of_file(&s.paths.inbound_db()).unwrap(), None);
    InboundDb::open(&s.paths).unwrap();
    assert_eq!(
        Journal::of_file(&s.paths.inbound_db()).unwrap(),
        Some(Journal::Delete),
        "a new file gets the rollback journal"
    );
    InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    // A plain open (a tool, a test, an older caller) does not switch it back.
    InboundDb::open(&s.paths)
        .unwrap()
        .insert(&chat("tg:1", "x"), t(0))
        .unwrap();
    assert_eq!(journal_mode(&s.paths.inbound_db()), "wal");
    OutboundDb::open(&s.paths).unwrap();
    assert_eq!(journal_mode(&s.paths.outbound_db()), "wal");

    // Back to the rollback journal (the setting changed between two runs): the container's
    // file follows at its next open, and no WAL file is left behind.
    let mut host = InboundDb::open_with(&s.paths, Journal::Delete).unwrap();
    OutboundDb::open(&s.paths).unwrap();
    assert_eq!(journal_mode(&s.paths.inbound_db()), "delete");
    assert_eq!(journal_mode(&s.paths.outbound_db()), "delete");
    assert_eq!(file_names(&s.paths.inbound_dir), ["inbound.db"]);
    assert_eq!(file_names(&s.paths.outbound_dir), ["outbound.db"]);
    assert_eq!(
        host.pending().unwrap().len(),
        1,
        "nothing lost in the switch"
    );
    host.insert(&chat("tg:2", "y"), t(1)).unwrap();
}

/// How the container sees `inbound.db` through its read-only mount: SQLite cannot open the
/// `-shm` file for writing, so the connection maps it read-only (`readonly_shm=1` asks for
/// exactly that on a writable directory).
fn open_through_read_only_mount(path: &Path) -> Connection {
    Connection::open_with_flags(
        format!("file:{}?readonly_shm=1", path.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

fn count_in(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM messages_in", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_reader_with_a_read_only_shm_sees_every_commit() {
    const ROWS: i64 = 400;
    let s = Session::new();
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    let reader = open_through_read_only_mount(&s.paths.inbound_db());
    // A second handle the way the host checkpoints: through its own writable connection.
    let checkpointer = Connection::open(s.paths.inbound_db()).unwrap();
    for i in 0..ROWS {
        host.insert(&chat(&format!("tg:{i}"), "x"), t(0)).unwrap();
        assert_eq!(count_in(&reader), i + 1, "after commit {i}");
        if i % 50 == 49 {
            // Checkpoints move the rows into the database file and restart the log; the reader
            // must keep seeing all of them across both.
            checkpointer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            assert_eq!(count_in(&reader), i + 1, "after checkpoint {i}");
        }
    }
    // With the writer gone the -shm has no owner; the reader still gets the last commit.
    drop(host);
    drop(checkpointer);
    let late = open_through_read_only_mount(&s.paths.inbound_db());
    assert_eq!(count_in(&late), ROWS);
    assert_eq!(count_in(&reader), ROWS);
    // And a writer that comes back continues where it was.
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    host.insert(&chat("tg:again", "x"), t(1)).unwrap();
    assert_eq!(count_in(&late), ROWS + 1);
}

/// The other side wakes on file events only (no poll here): after every commit some event
/// must come late enough for a read to see it. SQLite writes a commit's frames before it
/// publishes the commit in `-shm`, so without the writer's announcement a read woken by the
/// last frame could find nothing and have nothing left to wake it.
#[test]
fn every_wal_commit_wakes_a_watching_reader_late_enough_to_see_it() {
    use notify::{RecursiveMode, Watcher};
    use std::sync::mpsc;
    const ROWS: i64 = 200;
    let s = Session::new();
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    let (events, woken) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if let Ok(e) = e
            && mailbox::layout::is_commit_event(&e, mailbox::layout::INBOUND_DB)
        {
            let _ = events.send(());
        }
    })
    .unwrap();
    watcher
        .watch(&s.paths.inbound_dir, RecursiveMode::NonRecursive)
        .unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let path = s.paths.inbound_db();
    let reader = std::thread::spawn(move || {
        let conn = open_through_read_only_mount(&path);
        // Reads only when woken; reports what it saw.
        while woken.recv().is_ok() {
            if seen_tx.send(count_in(&conn)).is_err() {
                return;
            }
        }
    });
    for i in 1..=ROWS {
        host.insert(&chat(&format!("tg:{i}"), "x"), t(0)).unwrap();
        loop {
            let count = seen
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("commit {i} woke nobody late enough to be seen"));
            if count == i {
                break;
            }
        }
    }
    drop(watcher);
    drop(seen);
    reader.join().unwrap();
}

const CHILD_ROOT: &str = "MAILBOX_TEST_CRASH_ROOT";
const CHILD_SIDE: &str = "MAILBOX_TEST_CRASH_SIDE";

/// Runs [`crash_child`] as `side` on `root` until it has reported `commits` commits, then kills
/// it with SIGKILL — wherever it is, usually inside its next commit. Returns the reported seqs.
fn run_and_kill(root: &Path, side: &str, commits: usize) -> Vec<i64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "suite::wal::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, root)
        .env(CHILD_SIDE, side)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    while seqs.len() < commits {
        let line = lines
            .next()
            .expect("the child stopped before it was killed")
            .unwrap();
        if let Some(seq) = line.strip_prefix("committed ") {
            seqs.push(seq.parse().unwrap());
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");
    seqs
}

fn integrity_ok(path: &Path) {
    let check: String = Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", path.display());
}

#[test]
fn a_host_killed_mid_commit_keeps_every_committed_message() {
    let s = Session::new();
    InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    let root = s.paths.inbound_dir.parent().unwrap().to_path_buf();
    let mut committed = Vec::new();
    for (round, commits) in [37, 5, 120, 1, 64].into_iter().enumerate() {
        let seqs = run_and_kill(&root, "host", commits);
        committed.extend(seqs);
        integrity_ok(&s.paths.inbound_db());
        assert_eq!(journal_mode(&s.paths.inbound_db()), "wal");
        // Everything the dead host reported committed is there (it ran on while the reports
        // were read, so more may be); the commit it was in is whole or absent.
        let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
        let stored: Vec<i64> = reader
            .messages_after(0)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(
            committed.iter().all(|seq| stored.contains(seq)),
            "round {round}: lost a committed row"
        );
        // The two delivery records of one transaction are both there or both absent.
        let raw = Connection::open(s.paths.inbound_db()).unwrap();
        let halves: i64 = raw
            .query_row(
                "SELECT COUNT(*) FROM delivery d WHERE NOT EXISTS (SELECT 1 FROM delivery o
                     WHERE o.out_seq = CASE d.out_seq % 4 WHEN 1 THEN d.out_seq + 2
                                                          ELSE d.out_seq - 2 END)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(halves, 0, "round {round}: a half transaction survived");
        committed = stored;
    }
    // The next host continues with the next even seq.
    let max = committed.iter().copied().max().unwrap();
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    assert_eq!(
        host.insert(&chat("tg:next", "x"), t(9)).unwrap().seq(),
        max + 2
    );
}

#[test]
fn a_runner_killed_mid_commit_keeps_every_committed_turn() {
    let s = Session::new();
    let mut host = InboundDb::open_with(&s.paths, Journal::Wal).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();
    let root = s.paths.inbound_dir.parent().unwrap().to_path_buf();
    let mut committed = Vec::new();
    for (round, commits) in [50, 3, 150, 1].into_iter().enumerate() {
        committed.extend(run_and_kill(&root, "runner", commits));
        integrity_ok(&s.paths.outbound_db());
        assert_eq!(journal_mode(&s.paths.outbound_db()), "wal");
        let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
        let replies: Vec<i64> = reader
            .messages_after(0)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(
            committed.iter().all(|seq| replies.contains(seq)),
            "round {round}: lost a committed reply"
        );
        // A turn's reply, its ack and its history are one transaction: all or none.
        let acks = reader.acks_after(0).unwrap();
        assert_eq!(acks.len(), replies.len(), "round {round}");
        assert!(acks.iter().all(|a| a.message_seq == seq));
        let history: i64 = Connection::open(s.paths.outbound_db())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(history as usize, replies.len(), "round {round}");
        committed = replies;
    }
    // The host's delivery pass reads them all after the crashes.
    let last = committed.iter().copied().max().unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(
        runner
            .insert_message(&reply("after", None, "x"), t(9))
            .unwrap(),
        last + 2
    );
}

/// The child half of the kill tests: writes as the host (messages with their bookkeeping) or
/// as the runner (a turn's reply, ack and history) in a loop, printing each committed seq,
/// until it is killed. Does nothing when run by hand.
#[test]
#[ignore = "run as a child process by the kill tests of suite::wal"]
fn crash_child() {
    use std::io::Write;
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let paths = SessionPaths::from_root(&PathBuf::from(root));
    let side = std::env::var(CHILD_SIDE).unwrap();
    let pid = std::process::id();
    let mut out = std::io::stdout().lock();
    let big = "x".repeat(3000);
    for i in 0.. {
        let seq = if side == "host" {
            let mut db = InboundDb::open_with(&paths, Journal::Wal).unwrap();
            let seq = db
                .insert(&chat(&format!("tg:{pid}:{i}"), &big), t(0))
                .unwrap()
                .seq();
            // A multi-row transaction of the delivery pass: two outbound rows recorded and
            // started together (4k+1 and 4k+3, so the pair can be checked).
            let first = 4 * (i64::from(pid) * 100_000 + i) + 1;
            db.begin_deliveries(&[first, first + 2], &[first, first + 2], t(0))
                .unwrap();
            seq
        } else {
            let mut db = OutboundDb::open(&paths).unwrap();
            let mut tx = db.transaction().unwrap();
            let seq = tx
                .insert_message(&reply(&format!("r{pid}:{i}"), Some(2), &big), t(0))
                .unwrap();
            tx.append_history(
                2,
                &[serde_json::json!({"role": "assistant", "content": big})],
            )
            .unwrap();
            tx.ack(2, 1, AckStatus::Completed, None, t(0)).unwrap();
            tx.commit().unwrap();
            seq
        };
        writeln!(out, "committed {seq}").unwrap();
        out.flush().unwrap();
    }
}
