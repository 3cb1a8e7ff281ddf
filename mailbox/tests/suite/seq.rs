//! Invariant 2, seq parity: inbound seqs are even, outbound odd, each the next of its parity
//! above the max of both tables — also when several processes write at once.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mailbox::seq::Parity;
use mailbox::{AckStatus, InboundDb, OutboundDb, OutboundReader, SessionPaths};
use pretty_assertions::assert_eq;

use super::common::{Session, chat, reply, t};

#[test]
fn host_and_container_seqs_interleave_with_parity() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut seqs = Vec::new();

    seqs.push(host.insert(&chat("tg:1", "a"), t(0)).unwrap().seq());
    seqs.push(
        runner
            .insert_message(&reply("r1", Some(2), "b"), t(1))
            .unwrap(),
    );
    seqs.push(host.insert(&chat("tg:2", "c"), t(2)).unwrap().seq());
    // Acks, history and kv do not consume seqs.
    runner.ack(4, 1, AckStatus::Processing, None, t(3)).unwrap();
    let mut tx = runner.transaction().unwrap();
    seqs.push(tx.insert_message(&reply("r2", Some(4), "d"), t(3)).unwrap());
    seqs.push(tx.insert_message(&reply("r3", Some(4), "e"), t(3)).unwrap());
    tx.append_history(4, &[serde_json::json!({"role": "user"})])
        .unwrap();
    tx.ack(4, 1, AckStatus::Completed, None, t(3)).unwrap();
    tx.commit().unwrap();
    // Two host messages in a row skip the odd numbers, and vice versa.
    seqs.push(host.insert(&chat("tg:3", "f"), t(4)).unwrap().seq());
    seqs.push(host.insert(&chat("tg:4", "g"), t(5)).unwrap().seq());
    seqs.push(
        runner
            .insert_message(&reply("r4", None, "h"), t(6))
            .unwrap(),
    );
    // A duplicate inbound does not consume a seq.
    host.insert(&chat("tg:4", "g"), t(7)).unwrap();
    seqs.push(host.insert(&chat("tg:5", "i"), t(8)).unwrap().seq());

    assert_eq!(seqs, [2, 3, 4, 5, 7, 8, 10, 11, 12]);
    for seq in seqs {
        let want = if seq % 2 == 0 {
            Parity::Inbound
        } else {
            Parity::Outbound
        };
        assert_eq!(Parity::of(seq), want);
    }
}

#[test]
fn a_rolled_back_transaction_gives_its_seq_back() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut tx = runner.transaction().unwrap();
    assert_eq!(tx.insert_message(&reply("r1", None, "x"), t(0)).unwrap(), 1);
    drop(tx);
    assert_eq!(
        runner
            .insert_message(&reply("r1", None, "x"), t(0))
            .unwrap(),
        1
    );
}

#[test]
fn concurrent_host_and_container_writers_keep_parity_and_order() {
    const ROWS: usize = 150;
    let s = Session::new();
    // Both files exist before the race, so every seq must consult the other side.
    InboundDb::open(&s.paths).unwrap();
    OutboundDb::open(&s.paths).unwrap();

    let host_paths = s.paths.clone();
    let host = std::thread::spawn(move || {
        let mut db = InboundDb::open(&host_paths).unwrap();
        let peek = OutboundReader::open(&host_paths.outbound_db()).unwrap();
        (0..ROWS)
            .map(|i| {
                let seen = max_seq(&peek.messages_after(0).unwrap());
                let seq = db
                    .insert(&chat(&format!("tg:{i}"), "x"), t(0))
                    .unwrap()
                    .seq();
                (seen, seq)
            })
            .collect::<Vec<_>>()
    });
    let runner_paths = s.paths.clone();
    let runner = std::thread::spawn(move || {
        let mut db = OutboundDb::open(&runner_paths).unwrap();
        (0..ROWS)
            .map(|i| {
                let seen = max_inbound_seq(&runner_paths);
                let seq = db
                    .insert_message(&reply(&format!("r{i}"), None, "y"), t(0))
                    .unwrap();
                (seen, seq)
            })
            .collect::<Vec<_>>()
    });
    let host = host.join().unwrap();
    let runner = runner.join().unwrap();

    let mut all = HashSet::new();
    for (side, rows, parity) in [
        ("host", &host, Parity::Inbound),
        ("runner", &runner, Parity::Outbound),
    ] {
        let mut last = 0;
        for &(seen, seq) in rows {
            assert_eq!(Parity::of(seq), parity, "{side} seq {seq}");
            assert!(seq > last, "{side}: {seq} after {last}");
            // Above everything the other side had committed before this insert began.
            assert!(
                seq > seen,
                "{side}: {seq} not above the other side's {seen}"
            );
            assert!(all.insert(seq), "{side}: {seq} allocated twice");
            last = seq;
        }
    }
    assert_eq!(all.len(), 2 * ROWS);

    // Once the race is over, the next seqs are above the max of both tables again.
    let max = all.iter().copied().max().unwrap();
    let mut db = InboundDb::open(&s.paths).unwrap();
    let next_in = db.insert(&chat("tg:last", "z"), t(1)).unwrap().seq();
    assert!(next_in > max && next_in % 2 == 0, "{next_in} after {max}");
    let mut db = OutboundDb::open(&s.paths).unwrap();
    let next_out = db.insert_message(&reply("last", None, "z"), t(1)).unwrap();
    assert_eq!(next_out, next_in + 1);
}

fn max_seq(rows: &[mailbox::OutboundMessage]) -> i64 {
    rows.iter().map(|m| m.seq).max().unwrap_or(0)
}

fn max_inbound_seq(paths: &SessionPaths) -> i64 {
    let reader = mailbox::InboundReader::open(&paths.inbound_db()).unwrap();
    // Everything is due at the far end of time; only seqs matter here.
    reader
        .due(t(1_000_000))
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .max()
        .unwrap_or(0)
}

const CHILD_ROOT: &str = "MAILBOX_TEST_CHILD_ROOT";
const CHILD_NAME: &str = "MAILBOX_TEST_CHILD_NAME";
const CHILD_ROWS: &str = "MAILBOX_TEST_CHILD_ROWS";

/// Spawns `children` copies of this test binary running [`child_writer`], releases them at
/// once, and checks what they wrote into one `outbound.db`.
#[test]
fn processes_allocating_odd_seqs_concurrently_never_collide() {
    const CHILDREN: usize = 3;
    const ROWS: usize = 200;
    let s = Session::new();
    // Some inbound rows first: every odd seq must land above them. The outbound file does not
    // exist yet, so the children also race to create and migrate it.
    let mut host = InboundDb::open(&s.paths).unwrap();
    for i in 0..3 {
        host.insert(&chat(&format!("tg:{i}"), "x"), t(0)).unwrap();
    }
    let max_in = 6;
    let root = s.paths.inbound_dir.parent().unwrap().to_path_buf();

    let mut children: Vec<_> = (0..CHILDREN)
        .map(|c| spawn_child(&root, &format!("c{c}"), ROWS))
        .collect();
    // Each child waits for a line on stdin before it opens the database: a start barrier
    // without sleeps.
    for child in &mut children {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let rows = reader.messages_after(0).unwrap();
    assert_eq!(rows.len(), CHILDREN * ROWS);
    let seqs: HashSet<i64> = rows.iter().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), rows.len(), "duplicate seqs");
    assert!(rows.iter().all(|m| m.seq % 2 == 1 && m.seq > max_in));
    // Each child's own rows got increasing seqs in the order it wrote them.
    for c in 0..CHILDREN {
        let mine: Vec<i64> = rows
            .iter()
            .filter(|m| m.id.starts_with(&format!("c{c}-")))
            .map(|m| m.seq)
            .collect();
        assert_eq!(mine.len(), ROWS);
        let order: Vec<usize> = rows
            .iter()
            .filter_map(|m| m.id.strip_prefix(&format!("c{c}-")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(order, (0..ROWS).collect::<Vec<_>>(), "child c{c}");
    }
    // Every child acked as well: the ack log has one entry per tenth row.
    assert_eq!(reader.acks_after(0).unwrap().len(), CHILDREN * ROWS / 10);
}

fn spawn_child(root: &Path, name: &str, rows: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "suite::seq::child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, root)
        .env(CHILD_NAME, name)
        .env(CHILD_ROWS, rows.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The child half of [`processes_allocating_odd_seqs_concurrently_never_collide`]; does nothing
/// when run by hand.
#[test]
#[ignore = "run as a child process by processes_allocating_odd_seqs_concurrently_never_collide"]
fn child_writer() {
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let name = std::env::var(CHILD_NAME).unwrap();
    let rows: usize = std::env::var(CHILD_ROWS).unwrap().parse().unwrap();
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).unwrap();

    let paths = SessionPaths::from_root(&PathBuf::from(root));
    // Agent-runner and mcp-tools each open their own handle, exactly like this.
    let mut db = OutboundDb::open(&paths).unwrap();
    for i in 0..rows {
        let id = format!("{name}-{i}");
        if i % 10 == 0 {
            // A turn's final transaction: reply and ack together.
            let mut tx = db.transaction().unwrap();
            tx.insert_message(&reply(&id, Some(2), "x"), t(0)).unwrap();
            tx.ack(2, 1, AckStatus::Processing, None, t(0)).unwrap();
            tx.commit().unwrap();
        } else {
            db.insert_message(&reply(&id, None, "x"), t(0)).unwrap();
        }
    }
    println!("{name}: wrote {rows} rows");
}
