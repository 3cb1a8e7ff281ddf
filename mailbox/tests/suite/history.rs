//! The conversation lives in the mailbox: history by turn and epoch, runner key-values, and
//! transactions that are all or nothing.

use mailbox::outbound::HistoryEntry;
use mailbox::{AckStatus, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::common::{Session, reply, t};

fn msg(role: &str, text: &str) -> Value {
    json!({ "role": role, "content": text })
}

fn entry(turn: i64, role: &str, text: &str) -> HistoryEntry {
    HistoryEntry {
        turn,
        message: msg(role, text),
    }
}

#[test]
fn turns_are_appended_discarded_and_cleared() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(runner.history().unwrap(), []);

    let mut tx = runner.transaction().unwrap();
    tx.append_history(2, &[msg("user", "hi"), msg("assistant", "hello")])
        .unwrap();
    tx.commit().unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.append_history(4, &[msg("user", "crash")]).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        runner.history().unwrap(),
        [
            entry(2, "user", "hi"),
            entry(2, "assistant", "hello"),
            entry(4, "user", "crash"),
        ]
    );

    // A retried turn starts over: only its own entries go.
    let mut tx = runner.transaction().unwrap();
    tx.discard_turn(4).unwrap();
    tx.append_history(4, &[msg("user", "crash"), msg("assistant", "survived")])
        .unwrap();
    tx.commit().unwrap();
    drop(runner);
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(
        runner.history().unwrap(),
        [
            entry(2, "user", "hi"),
            entry(2, "assistant", "hello"),
            entry(4, "user", "crash"),
            entry(4, "assistant", "survived"),
        ]
    );

    // `/clear`: a new epoch, empty, and later turns land in it.
    let mut tx = runner.transaction().unwrap();
    tx.clear_history().unwrap();
    tx.commit().unwrap();
    assert_eq!(runner.history().unwrap(), []);
    assert_eq!(runner.kv("epoch").unwrap().as_deref(), Some("1"));
    let mut tx = runner.transaction().unwrap();
    tx.append_history(6, &[msg("user", "fresh")]).unwrap();
    // Discarding a turn of the old epoch cannot touch the new one.
    tx.discard_turn(2).unwrap();
    tx.commit().unwrap();
    assert_eq!(runner.history().unwrap(), [entry(6, "user", "fresh")]);

    let mut tx = runner.transaction().unwrap();
    tx.clear_history().unwrap();
    tx.clear_history().unwrap();
    tx.commit().unwrap();
    assert_eq!(runner.kv("epoch").unwrap().as_deref(), Some("3"));
    assert_eq!(runner.history().unwrap(), []);
}

#[test]
fn kv_set_get_delete() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    assert_eq!(runner.kv("turn").unwrap(), None);
    let mut tx = runner.transaction().unwrap();
    tx.set_kv("turn", "[2,4]").unwrap();
    tx.set_kv("turn", "[2,4,6]").unwrap();
    tx.set_kv("other", "x").unwrap();
    tx.commit().unwrap();
    assert_eq!(runner.kv("turn").unwrap().as_deref(), Some("[2,4,6]"));

    let mut tx = runner.transaction().unwrap();
    tx.delete_kv("turn").unwrap();
    tx.delete_kv("never-set").unwrap();
    tx.commit().unwrap();
    assert_eq!(runner.kv("turn").unwrap(), None);
    assert_eq!(runner.kv("other").unwrap().as_deref(), Some("x"));
}

#[test]
fn a_dropped_transaction_leaves_nothing() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.append_history(2, &[msg("user", "kept")]).unwrap();
    tx.set_kv("keep", "1").unwrap();
    tx.commit().unwrap();

    // A turn that dies half-way: reply, history, acks, kv, a clear — none of it happened.
    let mut tx = runner.transaction().unwrap();
    tx.insert_message(&reply("r1", Some(2), "half an answer"), t(1))
        .unwrap();
    tx.ack(2, 1, AckStatus::Completed, None, t(1)).unwrap();
    tx.append_history(2, &[msg("assistant", "half")]).unwrap();
    tx.set_kv("turn", "[2]").unwrap();
    tx.delete_kv("keep").unwrap();
    tx.discard_turn(2).unwrap();
    tx.clear_history().unwrap();
    drop(tx);

    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(host.messages_after(0).unwrap(), []);
    assert_eq!(host.acks_after(0).unwrap(), []);
    assert_eq!(runner.history().unwrap(), [entry(2, "user", "kept")]);
    assert_eq!(runner.kv("turn").unwrap(), None);
    assert_eq!(runner.kv("keep").unwrap().as_deref(), Some("1"));
    assert_eq!(runner.kv("epoch").unwrap(), None);

    // The lock was released: the next transaction goes through, and seq 1 is reused.
    assert_eq!(
        runner
            .insert_message(&reply("r1", Some(2), "whole answer"), t(2))
            .unwrap(),
        1
    );
}

#[test]
fn a_corrupt_epoch_is_reported_not_reset() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.clear_history().unwrap();
    tx.append_history(2, &[msg("user", "after clear")]).unwrap();
    // `epoch` is reserved; a runner bug that overwrites it must not revive or mix conversations.
    tx.set_kv("epoch", "not a number").unwrap();
    tx.commit().unwrap();
    assert!(matches!(
        runner.history(),
        Err(mailbox::Error::Malformed { table: "kv", .. })
    ));
}

#[test]
fn compaction_replaces_the_oldest_entries_with_one_summary_or_nothing() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.append_history(2, &[msg("user", "one"), msg("assistant", "1")])
        .unwrap();
    tx.append_history(4, &[msg("user", "two"), msg("assistant", "2")])
        .unwrap();
    tx.append_history(6, &[msg("user", "three"), msg("assistant", "3")])
        .unwrap();
    tx.commit().unwrap();
    let ids: Vec<i64> = runner
        .history_with_ids()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids.len(), 6);

    // A compaction that is not committed changes nothing.
    let mut tx = runner.transaction().unwrap();
    assert_eq!(
        tx.compact_history(ids[3], &msg("user", "summary")).unwrap(),
        4
    );
    drop(tx);
    assert_eq!(runner.history().unwrap().len(), 6);

    let mut tx = runner.transaction().unwrap();
    tx.compact_history(ids[3], &msg("user", "summary of one and two"))
        .unwrap();
    tx.set_kv("compaction", "{\"count\":1}").unwrap();
    tx.commit().unwrap();
    assert_eq!(
        runner.history().unwrap(),
        [
            entry(
                mailbox::outbound::SUMMARY_TURN,
                "user",
                "summary of one and two"
            ),
            entry(6, "user", "three"),
            entry(6, "assistant", "3"),
        ]
    );
    // New entries go after the kept ones; a second compaction folds the summary in.
    let mut tx = runner.transaction().unwrap();
    tx.append_history(8, &[msg("user", "four")]).unwrap();
    tx.commit().unwrap();
    let ids: Vec<i64> = runner
        .history_with_ids()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    let mut tx = runner.transaction().unwrap();
    assert_eq!(tx.compact_history(ids[2], &msg("user", "all")).unwrap(), 3);
    tx.commit().unwrap();
    assert_eq!(
        runner.history().unwrap(),
        [
            entry(mailbox::outbound::SUMMARY_TURN, "user", "all"),
            entry(8, "user", "four"),
        ]
    );
}
