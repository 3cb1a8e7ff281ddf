//! Invariant 9: rows the container writes are validated, bounded and isolated one by one. The
//! rows here are written straight into `outbound.db` with SQL, as a hostile agent with a shell
//! can: a bad row fails alone and the rows after it are read.

use mailbox::inbound::Inserted;
use mailbox::outbound::{MAX_ROW_BYTES, PAGE_ROWS};
use mailbox::seq::MAX_SEQ;
use mailbox::{BadRow, InboundDb, OutboundDb, OutboundReader, RowRead};
use pretty_assertions::assert_eq;
use rusqlite::{Connection, params};

use super::common::{Session, chat, reply, t};

/// The runner's file, with the schema in place, and a raw connection for forging rows.
fn forge(s: &Session) -> (OutboundDb, Connection) {
    let out = OutboundDb::open(&s.paths).unwrap();
    let raw = Connection::open(s.paths.outbound_db()).unwrap();
    (out, raw)
}

fn insert_raw(raw: &Connection, seq: i64, kind: &str, content: rusqlite::types::Value) {
    raw.execute(
        "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
             platform_id, thread_id, content)
         VALUES (?1, ?2, ?3, NULL, '2026-01-02T03:04:05.000Z', 'telegram', 'chat-1', NULL, ?4)",
        params![seq, format!("forged-{seq}"), kind, content],
    )
    .unwrap();
}

fn text(s: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(s.to_owned())
}

/// The seqs of a page, each with the reason it was refused (`None`: read fine).
fn outcome(page: &[RowRead]) -> Vec<(i64, Option<String>)> {
    page.iter()
        .map(|r| match r {
            Ok(m) => (m.seq, None),
            Err(BadRow { seq, reason }) => (*seq, Some(reason.clone())),
        })
        .collect()
}

#[test]
fn a_bad_row_fails_alone_and_the_next_rows_flow() {
    let s = Session::new();
    let (_out, raw) = forge(&s);
    insert_raw(&raw, 1, "chat", text(r#"{"text":"first"}"#));
    insert_raw(&raw, 3, "chat", text("this is not JSON"));
    insert_raw(
        &raw,
        5,
        "chat",
        rusqlite::types::Value::Blob(vec![0xff; 10]),
    );
    insert_raw(&raw, 7, "no-such-kind", text("{}"));
    insert_raw(&raw, 9, "chat", text("{}"));
    raw.execute(
        "UPDATE messages_out SET in_reply_to = 'abc' WHERE seq = 9",
        [],
    )
    .unwrap();
    // An even seq in messages_out (the CHECK is the container's to drop).
    raw.execute_batch("PRAGMA ignore_check_constraints = ON")
        .unwrap();
    insert_raw(&raw, 10, "chat", text("{}"));
    insert_raw(&raw, 11, "chat", text(r#"{"text":"last"}"#));

    let host = InboundDb::open(&s.paths).unwrap();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let page = reader.page_after(host.out_cursors().unwrap()).unwrap();
    let got = outcome(&page);
    assert_eq!(got.len(), 7);
    assert_eq!(got[0], (1, None));
    assert!(got[1].1.as_deref().unwrap().contains("not JSON"), "{got:?}");
    assert_eq!(got[2], (5, Some("its content is not text".to_owned())));
    assert_eq!(
        got[3],
        (7, Some("its kind \"no-such-kind\" is unknown".to_owned()))
    );
    assert_eq!(
        got[4],
        (9, Some("its in_reply_to is not a number".to_owned()))
    );
    assert_eq!(
        got[5],
        (10, Some("its message id 10 is out of range".to_owned()))
    );
    assert_eq!(got[6], (11, None));
    let Ok(last) = &page[6] else { unreachable!() };
    assert_eq!(last.text(), Some("last"));
    // The same row read alone is judged the same way.
    assert_eq!(reader.read_message(3).unwrap().unwrap().unwrap_err().seq, 3);
    assert_eq!(reader.read_message(11).unwrap().unwrap().unwrap().seq, 11);
    assert_eq!(reader.read_message(13).unwrap(), None);
}

/// An oversized row is refused from its size, without its value being loaded; the page around
/// it stays within its byte budget.
#[test]
fn oversized_rows_are_refused_by_size() {
    let s = Session::new();
    let (_out, raw) = forge(&s);
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_ROW_BYTES as usize + 1));
    insert_raw(&raw, 1, "chat", text(&big));
    // Oversized in a column other than content.
    raw.execute(
        "INSERT INTO messages_out (seq, id, kind, created_at, channel_type, platform_id, content)
         VALUES (3, ?1, 'chat', '2026-01-02T03:04:05.000Z', 'telegram', 'chat-1', '{}')",
        [&big],
    )
    .unwrap();
    // Three rows of 3 MiB: two would pass the page's 8 MiB, so they come in two pages.
    let three_mib = format!(r#"{{"text":"{}"}}"#, "y".repeat(3 << 20));
    for seq in [5, 7, 9] {
        insert_raw(&raw, seq, "chat", text(&three_mib));
    }

    let mut host = InboundDb::open(&s.paths).unwrap();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let page = reader.page_after(host.out_cursors().unwrap()).unwrap();
    let got = outcome(&page);
    let too_big = |seq: i64| {
        let size = big.len() + if seq == 1 { "forged-1".len() } else { 2 };
        (
            seq,
            Some(format!(
                "it is {} bytes, more than the 4 MiB a reply may be",
                size + "chat".len() + 24 + "telegram".len() + "chat-1".len()
            )),
        )
    };
    assert_eq!(got, vec![too_big(1), too_big(3), (5, None), (7, None)]);
    let seqs: Vec<i64> = got.iter().map(|(seq, _)| *seq).collect();
    host.begin_deliveries(&seqs, &[], t(1)).unwrap();
    let page = reader.page_after(host.out_cursors().unwrap()).unwrap();
    assert_eq!(outcome(&page), vec![(9, None)]);
}

#[test]
fn pages_hold_a_bounded_number_of_rows() {
    let s = Session::new();
    let mut out = OutboundDb::open(&s.paths).unwrap();
    for i in 0..(PAGE_ROWS + 10) {
        out.insert_message(&reply(&format!("r{i}"), None, "hi"), t(1))
            .unwrap();
    }
    let mut host = InboundDb::open(&s.paths).unwrap();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let first = reader.page_after(host.out_cursors().unwrap()).unwrap();
    assert_eq!(first.len(), PAGE_ROWS as usize);
    let seqs: Vec<i64> = outcome(&first).iter().map(|(seq, _)| *seq).collect();
    host.begin_deliveries(&seqs, &[], t(1)).unwrap();
    let second = reader.page_after(host.out_cursors().unwrap()).unwrap();
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(Result::is_ok));
}

/// A forged seq near `i64::MAX` neither breaks the host's next inbound seq nor the runner's
/// next outbound one; it is reported once as a bad row, and the rows after it flow.
#[test]
fn a_forged_huge_seq_does_not_take_over_the_counters() {
    let s = Session::new();
    let (mut out, raw) = forge(&s);
    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(
        host.insert(&chat("in-1", "hi"), t(0)).unwrap(),
        Inserted::New(2)
    );
    insert_raw(&raw, i64::MAX, "chat", text(r#"{"text":"forged"}"#));
    insert_raw(&raw, MAX_SEQ + 2, "chat", text(r#"{"text":"forged too"}"#));

    // The host's counter ignores them: no CHECK failure, no overflow.
    assert_eq!(
        host.insert(&chat("in-2", "again"), t(1)).unwrap(),
        Inserted::New(4)
    );
    // So does the runner's.
    assert_eq!(
        out.insert_message(&reply("r1", Some(4), "ok"), t(2))
            .unwrap(),
        5
    );
    assert_eq!(
        host.insert(&chat("in-3", "more"), t(3)).unwrap(),
        Inserted::New(6)
    );

    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let page = reader.page_after(host.out_cursors().unwrap()).unwrap();
    let out_of_range = |seq: i64| (seq, Some(format!("its message id {seq} is out of range")));
    assert_eq!(
        outcome(&page),
        vec![(5, None), out_of_range(MAX_SEQ + 2), out_of_range(i64::MAX)]
    );
    host.begin_deliveries(&[5, MAX_SEQ + 2, i64::MAX], &[], t(4))
        .unwrap();
    // Recorded once, never reported again; the in-range cursor did not jump.
    assert_eq!(host.out_cursor().unwrap(), 5);
    assert_eq!(
        reader.page_after(host.out_cursors().unwrap()).unwrap(),
        vec![]
    );
    assert_eq!(
        out.insert_message(&reply("r2", Some(6), "ok"), t(5))
            .unwrap(),
        7
    );
    assert_eq!(
        outcome(&reader.page_after(host.out_cursors().unwrap()).unwrap()),
        vec![(7, None)]
    );
    assert_eq!(
        reader.read_message(i64::MAX).unwrap().unwrap().unwrap_err(),
        BadRow {
            seq: i64::MAX,
            reason: format!("its message id {} is out of range", i64::MAX)
        }
    );
}

/// Acks are the container's too: one that does not decode is skipped (the acks after it are
/// read), and an oversized error text is not loaded.
#[test]
fn bad_acks_are_skipped_and_big_errors_cut() {
    let s = Session::new();
    let (mut out, raw) = forge(&s);
    out.ack(2, 1, mailbox::AckStatus::Processing, None, t(0))
        .unwrap();
    raw.execute(
        "INSERT INTO acks (message_seq, attempt, status, error, at) VALUES (2, 1, 'bogus', NULL, 'x')",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO acks (message_seq, attempt, status, error, at) VALUES (2, 'one', 'failed', NULL, '2026-01-02T03:04:05.000Z')",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO acks (message_seq, attempt, status, error, at) VALUES (2, 1, 'failed', ?1, '2026-01-02T03:04:05.000Z')",
        ["e".repeat(100_000)],
    )
    .unwrap();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let acks = reader.acks_after(0).unwrap();
    let got: Vec<(i64, Option<String>)> = acks.iter().map(|a| (a.id, a.error.clone())).collect();
    assert_eq!(
        got,
        vec![
            (1, None),
            (4, Some("[error text too long to show]".to_owned()))
        ]
    );
}
