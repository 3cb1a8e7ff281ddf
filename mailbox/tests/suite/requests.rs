//! Requests from the container to the host (`request.rs`): the row keeps seq parity and its
//! single writer, the answer is recorded once together with the row's delivery record, and the
//! waiting side sees it promptly without a busy poll, or times out with a clear error.

use std::time::{Duration, Instant};

use mailbox::request::{self, Answered, Request, WaitError, WaitOptions};
use mailbox::{
    AckStatus, DeliveryStatus, InboundDb, InboundReader, Journal, OutboundDb, OutboundKind,
    OutboundReader,
};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::common::{Session, chat, reply, t};

#[test]
fn a_request_is_an_odd_row_addressed_to_the_host() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    host.insert(&chat("tg:1", "hi"), t(0)).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = runner
        .insert_message(
            &request::outbound("req-1".into(), "schedule_task", json!({ "prompt": "x" })),
            t(1),
        )
        .unwrap();
    assert_eq!(seq, 3, "next odd seq above both tables");

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let row = outbound.message(seq).unwrap().unwrap();
    assert_eq!(row.kind, OutboundKind::Request);
    assert_eq!(
        (
            row.route.channel_type.as_str(),
            row.route.platform_id.as_str()
        ),
        request::HOST_ROUTE
    );
    assert_eq!(
        Request::from_message(&row).unwrap(),
        Request {
            seq,
            op: "schedule_task".into(),
            args: json!({ "prompt": "x" }),
            created_at: t(1),
        }
    );

    // Only request rows with an op decode.
    let chat_row = outbound
        .message(
            runner
                .insert_message(&reply("r1", None, "plain"), t(2))
                .unwrap(),
        )
        .unwrap()
        .unwrap();
    assert!(Request::from_message(&chat_row).is_err());
    let mut no_op = request::outbound("req-2".into(), "x", json!({}));
    no_op.content = json!({ "args": {} });
    let no_op = outbound
        .message(runner.insert_message(&no_op, t(3)).unwrap())
        .unwrap()
        .unwrap();
    let err = Request::from_message(&no_op).unwrap_err().to_string();
    assert!(err.contains("has no op"), "{err}");
}

#[test]
fn the_first_answer_wins_and_marks_the_row_delivered() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = runner
        .insert_message(&request::outbound("req-1".into(), "op", json!({})), t(0))
        .unwrap();
    let mut host = InboundDb::open(&s.paths).unwrap();
    // The host saw the row and started handling it (as its delivery pass does).
    host.begin_deliveries(&[seq], &[seq], t(1)).unwrap();
    assert_eq!(host.response(seq).unwrap(), None);

    let first = json!({ "task": "task-1" });
    assert_eq!(host.answer(seq, true, &first, t(2)).unwrap(), Answered::New);
    // A host that handles the request again (it crashed before it knew the answer was stored)
    // cannot change or repeat the answer.
    assert_eq!(
        host.answer(seq, false, &json!({ "error": "late" }), t(3))
            .unwrap(),
        Answered::Already
    );
    let response = host.response(seq).unwrap().unwrap();
    assert_eq!(
        (response.ok, response.body, response.at),
        (true, first, t(2))
    );
    let delivery = host.delivery(seq).unwrap().unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert!(host.open_deliveries().unwrap().is_empty());

    // A request answered before its delivery record existed gets one, delivered.
    let seq2 = runner
        .insert_message(&request::outbound("req-2".into(), "op", json!({})), t(4))
        .unwrap();
    host.answer(seq2, false, &json!({ "error": "no" }), t(5))
        .unwrap();
    assert_eq!(
        host.delivery(seq2).unwrap().unwrap().status,
        DeliveryStatus::Delivered
    );
    assert_eq!(host.out_cursor().unwrap(), seq2);

    // The container reads the same answers through its read-only handle.
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let refused = reader.response(seq2).unwrap().unwrap();
    assert!(!refused.ok);
    assert_eq!(refused.error_text(), "no");
}

#[test]
fn the_waiter_sees_the_answer_as_soon_as_it_is_committed() {
    the_waiter_is_woken_by_the_commit(Journal::Delete);
}

/// A WAL commit only writes `inbound.db-wal`; the waiter's watch covers it.
#[test]
fn the_waiter_sees_the_answer_as_soon_as_it_is_committed_in_wal_mode() {
    the_waiter_is_woken_by_the_commit(Journal::Wal);
}

fn the_waiter_is_woken_by_the_commit(journal: Journal) {
    let s = Session::new();
    let mut host = InboundDb::open_with(&s.paths, journal).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = runner
        .insert_message(&request::outbound("req-1".into(), "op", json!({})), t(0))
        .unwrap();
    let answer_after = Duration::from_millis(300);
    let answering = std::thread::spawn(move || {
        std::thread::sleep(answer_after);
        host.answer(seq, true, &json!({ "done": true }), t(1))
            .unwrap();
    });
    // The safety poll is far longer than the test: only the file event can wake the waiter.
    let options = WaitOptions {
        timeout: Duration::from_secs(20),
        poll: Duration::from_secs(20),
        poll_without_watcher: Duration::from_secs(20),
    };
    let started = Instant::now();
    let response = request::wait_for_response(&s.paths.inbound_dir, seq, options).unwrap();
    let waited = started.elapsed();
    answering.join().unwrap();
    assert_eq!(response.body, json!({ "done": true }));
    assert!(waited >= answer_after, "{waited:?}");
    assert!(
        waited < answer_after + Duration::from_secs(2),
        "woken by the file event, not a poll: {waited:?}"
    );

    // An answer already there is returned at once.
    let started = Instant::now();
    let again = request::wait_for_response(&s.paths.inbound_dir, seq, options).unwrap();
    assert_eq!(again, response);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn the_waiter_gives_up_after_its_timeout() {
    let s = Session::new();
    drop(InboundDb::open(&s.paths).unwrap());
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let seq = runner
        .insert_message(&request::outbound("req-1".into(), "op", json!({})), t(0))
        .unwrap();
    // Unrelated writes by the host wake the waiter but do not end it.
    let mut host = InboundDb::open(&s.paths).unwrap();
    let writes = std::thread::spawn(move || {
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            host.insert(&chat(&format!("tg:{i}"), "noise"), t(i))
                .unwrap();
        }
    });
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = request::wait_for_response(
        &s.paths.inbound_dir,
        seq,
        WaitOptions {
            timeout,
            poll: Duration::from_millis(100),
            poll_without_watcher: Duration::from_millis(100),
        },
    )
    .unwrap_err();
    writes.join().unwrap();
    let waited = started.elapsed();
    assert!(
        matches!(err, WaitError::Timeout { request_seq, .. } if request_seq == seq),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("the host did not answer request {seq}")),
        "{err}"
    );
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(2),
        "{waited:?}"
    );
}

#[test]
fn verdict_details_are_folded_with_the_status() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let detail = json!({ "script": { "outcome": "skip" } });
    let mut tx = runner.transaction().unwrap();
    tx.ack_with_detail(seq, 1, AckStatus::Completed, None, Some(&detail), t(1))
        .unwrap();
    tx.commit().unwrap();

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let acks = outbound.acks_after(0).unwrap();
    assert_eq!(acks[0].detail.as_ref(), Some(&detail));
    let verdicts = host.settle(&[], &acks, t(2)).unwrap();
    assert_eq!(verdicts[0].detail.as_ref(), Some(&detail));
    assert_eq!(host.get(seq).unwrap().unwrap().detail, Some(detail));
}

#[test]
fn acks_of_an_older_runner_schema_are_still_read() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let seq = host.insert(&chat("tg:1", "hi"), t(0)).unwrap().seq();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    runner
        .ack(seq, 1, AckStatus::Completed, None, t(1))
        .unwrap();
    drop(runner);
    // What a runner of the previous build left: no `detail` column.
    let conn = rusqlite::Connection::open(s.paths.outbound_db()).unwrap();
    conn.execute_batch(
        "DROP TABLE drafts; ALTER TABLE acks DROP COLUMN detail; DROP TABLE events; \
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);

    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let acks = outbound.acks_after(0).unwrap();
    assert_eq!((acks.len(), acks[0].detail.clone()), (1, None));
    assert_eq!(
        outbound.latest_acks(&[seq]).unwrap()[&seq].status,
        AckStatus::Completed
    );
    // Once a new runner migrates the file, the reader picks the column up.
    drop(OutboundDb::open(&s.paths).unwrap());
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.ack_with_detail(seq, 2, AckStatus::Completed, None, Some(&json!(1)), t(2))
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(outbound.acks_after(1).unwrap()[0].detail, Some(json!(1)));
}
