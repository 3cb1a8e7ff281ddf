//! Routing decisions against a real central database, with the host running in-process:
//! unknown chats and senders are refused and recorded, admin commands need an admin.

use std::path::Path;

use host::session::router::{InboundEvent, Routed};
use testkit::FakeModel;

fn event(chat: &str, sender: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel_type: "test".into(),
        platform_id: chat.into(),
        message_id: format!("{sender}-{text}"),
        sender_id: sender.into(),
        sender_name: Some(sender.into()),
        text: text.into(),
        ..InboundEvent::default()
    }
}

fn dropped(data: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(data.join("clawbox.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT COALESCE(sender_id, ''), reason FROM dropped_messages ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn refusals_are_clear_and_recorded() {
    let model = FakeModel::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        (
            "GROUPS_DIR",
            dir.path().join("groups").display().to_string(),
        ),
        ("OPENAI_BASE_URL", model.base_url()),
        ("DASHBOARD_ADDR", "off".to_owned()),
        (
            "CLAWBOX_RUNNER_BIN",
            Path::new(env!("CARGO_BIN_EXE_clawbox"))
                .with_file_name("agent-runner")
                .display()
                .to_string(),
        ),
    ];
    let config = host::config::Config::from_lookup(
        |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
        dir.path(),
    )
    .unwrap();
    let host = host::app::start(config).await.unwrap();
    let router = host.ctx.router.clone();

    // A chat nobody configured.
    let routed = router
        .route(event("nowhere", "test:1", "hi"))
        .await
        .unwrap();
    assert!(matches!(&routed[..], [Routed::Refused { reason, .. }] if reason == "unknown chat"));

    // A chat wired to the default agent, with one member; strangers are refused.
    let conn = rusqlite::Connection::open(dir.path().join("data/clawbox.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO messaging_groups (id, channel_type, platform_id, is_group, created_at)
             VALUES ('mg:test:room', 'test', 'room', 1, '2026-01-01T00:00:00.000Z');
         INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
             VALUES ('wire:room', 'mg:test:room', 'default', 'pattern', '.', '2026-01-01T00:00:00.000Z');
         INSERT INTO users (id, kind, created_at) VALUES ('test:member', 'test', '2026-01-01T00:00:00.000Z');
         INSERT INTO user_roles (user_id, agent_group_id, role, granted_at)
             VALUES ('test:member', 'default', 'member', '2026-01-01T00:00:00.000Z');",
    )
    .unwrap();
    let routed = router
        .route(event("room", "test:stranger", "hi"))
        .await
        .unwrap();
    assert!(
        matches!(&routed[..], [Routed::Refused { notice: None, .. }]),
        "{routed:?}"
    );

    // A member may talk but not clear the conversation; the refusal says why.
    let routed = router
        .route(event("room", "test:member", "/clear"))
        .await
        .unwrap();
    let [
        Routed::Refused {
            notice: Some(notice),
            ..
        },
    ] = &routed[..]
    else {
        panic!("{routed:?}")
    };
    assert!(notice.contains("owner or admin"), "{notice}");
    let routed = router
        .route(event("room", "test:member", "hello"))
        .await
        .unwrap();
    let [
        Routed::Accepted {
            seq,
            duplicate: false,
            ..
        },
    ] = &routed[..]
    else {
        panic!("{routed:?}")
    };
    // The same platform message again is a no-op with the same seq.
    let again = router
        .route(event("room", "test:member", "hello"))
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [Routed::Accepted { seq: s, duplicate: true, .. }] if s == seq),
        "{again:?}"
    );

    let reasons: Vec<String> = dropped(&dir.path().join("data"))
        .into_iter()
        .map(|(sender, reason)| format!("{sender}: {reason}"))
        .collect();
    assert_eq!(
        reasons,
        vec![
            "test:1: unknown chat",
            "test:stranger: unknown sender",
            "test:member: admin command from non-admin",
        ]
    );
    host.shutdown().await;
}
