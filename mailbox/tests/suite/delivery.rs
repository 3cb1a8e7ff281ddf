//! Invariant 5, durable delivery state: the host's record of each outbound row survives restarts;
//! delivered rows are never offered again, failed ones are reported.

use mailbox::{Delivery, DeliveryStatus, InboundDb, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;

use super::common::{Session, reply, t};

#[test]
fn delivery_states_survive_a_restart() {
    let s = Session::new();
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    for id in ["r1", "r2", "r3", "r4"] {
        runner.insert_message(&reply(id, None, id), t(0)).unwrap();
    }

    let mut host = InboundDb::open(&s.paths).unwrap();
    let outbound = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(host.out_cursor().unwrap(), 0);
    let new: Vec<i64> = outbound
        .messages_after(host.out_cursor().unwrap())
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(new, [1, 3, 5, 7]);
    host.begin_deliveries(&new, &[], t(1)).unwrap();
    // Recording is idempotent: a pass that saw the same rows again changes nothing.
    host.begin_deliveries(&new, &[], t(2)).unwrap();
    assert_eq!(host.out_cursor().unwrap(), 7);
    assert_eq!(
        host.delivery(1).unwrap(),
        Some(Delivery {
            out_seq: 1,
            status: DeliveryStatus::Pending,
            attempts: 0,
            platform_message_id: None,
            last_error: None,
            updated_at: t(1),
        })
    );

    // 1: delivered. 3: one transient failure, then delivered. 5: given up. 7: interrupted.
    assert_eq!(host.begin_deliveries(&[], &[1], t(3)).unwrap()[0].1, 1);
    host.settle(&[(1, Some("tg-100".to_owned()))], &[], t(3))
        .unwrap();
    assert_eq!(host.begin_deliveries(&[], &[3], t(3)).unwrap()[0].1, 1);
    host.delivery_failed(3, "timeout", false, t(3)).unwrap();
    assert_eq!(
        host.delivery(3).unwrap().unwrap().status,
        DeliveryStatus::Sending,
        "a transient failure keeps the row open"
    );
    assert_eq!(host.begin_deliveries(&[], &[3], t(4)).unwrap()[0].1, 2);
    host.settle(&[(3, Some("tg-101".to_owned()))], &[], t(4))
        .unwrap();
    assert_eq!(host.begin_deliveries(&[], &[5], t(5)).unwrap()[0].1, 1);
    host.delivery_failed(5, "chat not found", true, t(5))
        .unwrap();
    assert_eq!(host.begin_deliveries(&[], &[7], t(6)).unwrap()[0].1, 1);
    // The host crashes here, mid-send of 7.
    drop(host);

    let mut host = InboundDb::open(&s.paths).unwrap();
    assert_eq!(host.out_cursor().unwrap(), 7);
    assert_eq!(
        host.delivery(3).unwrap(),
        Some(Delivery {
            out_seq: 3,
            status: DeliveryStatus::Delivered,
            attempts: 2,
            platform_message_id: Some("tg-101".to_owned()),
            last_error: None,
            updated_at: t(4),
        })
    );
    let failed = Delivery {
        out_seq: 5,
        status: DeliveryStatus::Failed,
        attempts: 1,
        platform_message_id: None,
        last_error: Some("chat not found".to_owned()),
        updated_at: t(5),
    };
    assert_eq!(host.delivery(5).unwrap(), Some(failed.clone()));
    // Only the interrupted row is offered again (at-least-once for that window only).
    assert_eq!(
        host.open_deliveries().unwrap(),
        [Delivery {
            out_seq: 7,
            status: DeliveryStatus::Sending,
            attempts: 1,
            platform_message_id: None,
            last_error: None,
            updated_at: t(6),
        }]
    );
    // The undeliverable reply is reported, not dropped.
    assert_eq!(host.failed_deliveries(10).unwrap(), [failed]);
    assert_eq!(host.delivery(99).unwrap(), None);

    // The next pass reads only rows the container wrote since.
    assert_eq!(outbound.messages_after(7).unwrap(), []);
    let mut runner = OutboundDb::open(&s.paths).unwrap();
    runner
        .insert_message(&reply("r5", None, "late"), t(7))
        .unwrap();
    let new = outbound.messages_after(host.out_cursor().unwrap()).unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].seq, 9);
    assert_eq!(new[0].text(), Some("late"));
    host.begin_deliveries(&[new[0].seq], &[], t(7)).unwrap();
    assert_eq!(
        host.open_deliveries()
            .unwrap()
            .iter()
            .map(|d| d.out_seq)
            .collect::<Vec<_>>(),
        [7, 9]
    );
}

#[test]
fn failed_deliveries_are_newest_first_and_limited() {
    let s = Session::new();
    let mut host = InboundDb::open(&s.paths).unwrap();
    host.begin_deliveries(&[1, 3, 5], &[], t(0)).unwrap();
    for seq in [1, 3, 5] {
        host.begin_deliveries(&[], &[seq], t(1)).unwrap();
        host.delivery_failed(seq, "blocked by user", true, t(1))
            .unwrap();
    }
    let seqs: Vec<i64> = host
        .failed_deliveries(2)
        .unwrap()
        .iter()
        .map(|d| d.out_seq)
        .collect();
    assert_eq!(seqs, [5, 3]);
    assert_eq!(host.open_deliveries().unwrap(), []);
}
