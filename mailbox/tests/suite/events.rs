//! The two event logs (`clawbox logs`): the runner's events commit with the transaction that
//! carries them, the host's decisions log themselves, both are pruned, and a reader copes with a
//! file its writer has not migrated yet.

use std::time::Duration;

use mailbox::events::KEEP_EVENTS;
use mailbox::{
    HostEvent, InboundDb, InboundReader, OutboundDb, OutboundReader, RunnerEvent, Stored,
};
use pretty_assertions::assert_eq;
use rusqlite::Connection;

use super::common::{Session, chat, reply, t};

fn step(turn: i64, step: u32) -> RunnerEvent {
    RunnerEvent::ModelStep {
        turn,
        step,
        latency_ms: 120,
        attempts: 1,
        prompt_tokens: Some(50),
        completion_tokens: Some(7),
        tool_calls: 1,
        finish_reason: Some("tool_calls".into()),
    }
}

fn events_of<T: Clone>(stored: &[Stored<T>]) -> Vec<T> {
    stored.iter().map(|s| s.event.clone()).collect()
}

#[test]
fn runner_events_commit_with_their_transaction_or_not_at_all() {
    let s = Session::new();
    drop(InboundDb::open(&s.paths).unwrap());
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let call = RunnerEvent::ToolCall {
        turn: 2,
        step: 1,
        call_id: "c1".into(),
        tool: "run_bash".into(),
        duration_ms: 15,
        ok: false,
        error: Some("Error: exit status 1".into()),
        arguments: Some(r#"{"command":"false"}"#.into()),
        result: Some("Error: exit status 1".into()),
    };

    let mut tx = runner.transaction().unwrap();
    tx.record_events(&[(t(1), step(2, 1)), (t(2), call.clone())])
        .unwrap();
    tx.commit().unwrap();
    // Rolled back with the rest of its transaction.
    let mut tx = runner.transaction().unwrap();
    tx.insert_message(&reply("r1", Some(2), "lost"), t(2))
        .unwrap();
    tx.record_events(&[(t(3), step(2, 2))]).unwrap();
    drop(tx);

    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let all = reader.events_after(0, 100).unwrap();
    assert_eq!(events_of(&all), [step(2, 1), call]);
    assert_eq!((all[0].at, all[1].at), (t(1), t(2)));
    assert_eq!(reader.events_after(all[0].id, 100).unwrap().len(), 1);
    assert_eq!(reader.events_after(0, 1).unwrap().len(), 1);
    assert_eq!(reader.message_count().unwrap(), 0);
}

#[test]
fn host_decisions_log_themselves() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let a = host.insert(&chat("tg:1", "a"), t(0)).unwrap().seq();
    let b = host.insert(&chat("tg:2", "b"), t(0)).unwrap().seq();

    host.requeue(&[a], 2, Duration::from_secs(10), "runner died", t(1))
        .unwrap();
    host.requeue(&[a], 2, Duration::from_secs(10), "runner died", t(20))
        .unwrap();
    assert!(
        host.fail(b, "the agent could not be started: no image")
            .unwrap()
    );
    // Failing a row that is no longer pending changes nothing and logs nothing.
    assert!(!host.fail(b, "again").unwrap());
    host.begin_deliveries(&[3], &[3], t(30)).unwrap();
    host.delivery_failed(3, "network down", false, t(31))
        .unwrap();
    host.record_host_event(
        &HostEvent::RunnerExited {
            runner: "pid 7".into(),
            exit: "killed by signal 9".into(),
            reason: Some("the agent stopped responding (silent for 61 s)".into()),
            unexpected: false,
        },
        t(40),
    )
    .unwrap();

    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let logged = reader.host_events_after(0, 100).unwrap();
    assert_eq!(
        events_of(&logged),
        [
            HostEvent::Requeued {
                seq: a,
                tries: 1,
                retry_at: t(11),
                reason: "runner died".into()
            },
            HostEvent::Failed {
                seq: a,
                error: "runner died; gave up after 2 attempts".into()
            },
            HostEvent::Failed {
                seq: b,
                error: "the agent could not be started: no image".into()
            },
            HostEvent::DeliveryFailed {
                out_seq: 3,
                error: "network down".into(),
                gave_up: false
            },
            HostEvent::RunnerExited {
                runner: "pid 7".into(),
                exit: "killed by signal 9".into(),
                reason: Some("the agent stopped responding (silent for 61 s)".into()),
                unexpected: false,
            },
        ]
    );
    assert_eq!(
        logged.iter().map(|e| e.at).collect::<Vec<_>>(),
        [t(1), t(20), logged[2].at, t(31), t(40)]
    );
    let newest = reader.latest_host_events(2).unwrap();
    assert_eq!(newest[0].id, logged[4].id);
    assert_eq!(newest[1].id, logged[3].id);
    assert_eq!(host.host_events_after(logged[3].id, 10).unwrap().len(), 1);
}

#[test]
fn logs_keep_the_newest_rows() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    let extra = 5;
    let mut tx = runner.transaction().unwrap();
    let batch: Vec<_> = (0..KEEP_EVENTS + extra)
        .map(|i| (t(0), step(i, 1)))
        .collect();
    tx.record_events(&batch).unwrap();
    tx.commit().unwrap();
    let mut tx = runner.transaction().unwrap();
    tx.prune_events().unwrap();
    tx.commit().unwrap();
    let reader = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let kept = reader.events_after(0, u32::MAX).unwrap();
    assert_eq!(kept.len() as i64, KEEP_EVENTS);
    assert_eq!(kept[0].event, step(extra, 1));

    // The host prunes its own log whenever it records a runner's exit.
    let exit = HostEvent::RunnerExited {
        runner: "r".into(),
        exit: "exit code 0".into(),
        reason: None,
        unexpected: false,
    };
    let conn = Connection::open(s.paths.inbound_db()).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
         INSERT INTO host_events (at, kind, data) SELECT '2026-01-01T00:00:00.000Z', 'unknown',
             '{{\"kind\":\"unknown\"}}' FROM n",
        KEEP_EVENTS + extra
    ))
    .unwrap();
    host.record_host_event(&exit, t(1)).unwrap();
    let reader = InboundReader::open(&s.paths.inbound_db()).unwrap();
    let kept = reader.host_events_after(0, u32::MAX).unwrap();
    assert_eq!(kept.len() as i64, KEEP_EVENTS);
    assert_eq!(kept.last().unwrap().event, exit);
}

#[test]
fn readers_of_files_from_before_the_logs_see_none() {
    let s = Session::new();
    drop(InboundDb::open(&s.paths).unwrap());
    drop(OutboundDb::open(&s.paths).unwrap());
    // As a build without the event logs left them.
    for (path, drop_newer) in [
        (
            s.paths.inbound_db(),
            "DROP TABLE host_events; DROP TABLE responses; ALTER TABLE messages_in DROP COLUMN detail;",
        ),
        (
            s.paths.outbound_db(),
            "DROP TABLE drafts; DROP TABLE events; ALTER TABLE acks DROP COLUMN detail;",
        ),
    ] {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{drop_newer} PRAGMA user_version = 1;"))
            .unwrap();
    }
    let inbound = InboundReader::open(&s.paths.inbound_db()).unwrap();
    assert_eq!(inbound.host_events_after(0, 10).unwrap(), []);
    assert_eq!(inbound.latest_host_events(10).unwrap(), []);
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(outbound.events_after(0, 10).unwrap(), []);
    drop((inbound, outbound));
    // The writers migrate them on open.
    drop(InboundDb::open(&s.paths).unwrap());
    drop(OutboundDb::open(&s.paths).unwrap());
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(outbound.events_after(0, 10).unwrap(), []);
}
