//! Retention over a real host: idle sessions retired with their history archived, what must
//! stay (pending work, a live runner) left alone across repeated passes, and a host killed in
//! the middle of a retirement pass finishing it after a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use host::report::inspect::StatusReport;
use host::session::retention::RetentionSummary;
use mailbox::{InboundDb, InboundKind, NewInbound, OutboundDb, Route, SessionPaths};
use rusqlite::Connection;
use serde_json::json;
use testkit::HostFixture;

use super::support::*;

fn days_ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn central(fixture: &HostFixture) -> Connection {
    let conn = Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// The default agent's folder, where retired sessions' archives go.
fn archives_of(fixture: &HostFixture, session: &str) -> PathBuf {
    let folder: String = central(fixture)
        .query_row(
            "SELECT folder FROM agent_groups WHERE id = 'default'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    fixture
        .groups_dir()
        .join(folder)
        .join("conversations")
        .join(session)
}

/// `(status, retired)` of a session row.
fn row(fixture: &HostFixture, session: &str) -> (String, Option<String>) {
    central(fixture)
        .query_row(
            "SELECT status, retired FROM sessions WHERE id = ?1",
            [session],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// What the running host's retention did, from `clawbox status --json`.
async fn retention(fixture: &HostFixture) -> RetentionSummary {
    let out = fixture
        .command(&["status", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    report.host.expect("a host is running").retention
}

async fn wait_for_retention(
    fixture: &HostFixture,
    what: &str,
    done: impl Fn(&RetentionSummary) -> bool,
) -> RetentionSummary {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let summary = retention(fixture).await;
        if done(&summary) {
            return summary;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {what}; have {summary:?}\n{}",
            fixture.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session of the default agent made as the host would leave it: a row (in a chat of its
/// own, thread `id`), a mailbox with one answered exchange saying `text`, and, if `pending`, a
/// message that waits for tomorrow.
fn make_session(fixture: &HostFixture, id: &str, last_activity: &str, text: &str, pending: bool) {
    let conn = central(fixture);
    conn.execute(
        "INSERT OR IGNORE INTO messaging_groups (id, channel_type, platform_id, is_group, created_at)
             VALUES ('mg:test:room', 'test', 'room', 1, '2026-01-01T00:00:00.000Z')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, last_activity, created_at)
             VALUES (?1, 'default', 'mg:test:room', ?1, ?2, ?2)",
        (id, last_activity),
    )
    .unwrap();
    let paths =
        SessionPaths::for_session(&fixture.data_dir().join("sessions"), "default", id).unwrap();
    for dir in [&paths.inbound_dir, &paths.outbound_dir, &paths.workspace] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut inbound = InboundDb::open(&paths).unwrap();
    inbound
        .set_routing(&Route {
            channel_type: "test".into(),
            platform_id: "room".into(),
            thread_id: Some(id.to_owned()),
        })
        .unwrap();
    let mut outbound = OutboundDb::open(&paths).unwrap();
    let mut tx = outbound.transaction().unwrap();
    tx.append_history(
        2,
        &[
            json!({ "role": "user", "content": text }),
            json!({ "role": "assistant", "content": format!("noted: {text}") }),
        ],
    )
    .unwrap();
    tx.commit().unwrap();
    if pending {
        inbound
            .insert(
                &NewInbound {
                    id: format!("{id}:later"),
                    kind: InboundKind::Chat,
                    trigger: true,
                    route: Route::new("test", "room"),
                    sender_id: Some("test:someone".into()),
                    sender_name: None,
                    content: json!({ "text": "for tomorrow" }),
                    process_after: Some(Utc::now() + chrono::Duration::days(1)),
                },
                Utc::now(),
            )
            .unwrap();
    }
}

fn session_folder(fixture: &HostFixture, id: &str) -> PathBuf {
    fixture.data_dir().join("sessions/default").join(id)
}

fn pending_count(fixture: &HostFixture, id: &str) -> i64 {
    let db = session_folder(fixture, id).join("inbound/inbound.db");
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM messages_in WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn read_archives(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[tokio::test]
async fn an_idle_session_is_retired_with_its_history_archived_and_the_chat_starts_afresh() {
    let (model, mut fixture) = setup().await;
    fixture.set("SESSION_RETENTION_DAYS", "1");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("the code is 4711").await.unwrap();
    client.done(seq).await.unwrap();
    client.settle(Duration::from_millis(300)).await;
    drop(client);
    fixture.stop().await.unwrap();
    // An earlier compaction's archive, as the runner leaves it in the workspace.
    let own = session_folder(&fixture, &session).join("workspace/conversations");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("2026-01-01-1.md"),
        "# Conversation archive 1\n\nolder talk\n",
    )
    .unwrap();
    // And a link the agent planted to a file of the host's: never followed.
    let secret = fixture.root().join("host-secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    std::os::unix::fs::symlink(&secret, own.join("2026-01-02-7.md")).unwrap();

    // Three days without a word.
    central(&fixture)
        .execute(
            "UPDATE sessions SET last_activity = ?1 WHERE id = ?2",
            (days_ago(3), &session),
        )
        .unwrap();
    fixture.start().await.unwrap();
    wait_for_retention(&fixture, "a retirement", |r| r.sessions == 1).await;

    assert_eq!(
        row(&fixture, &session),
        ("closed".into(), Some("done".into()))
    );
    assert!(!session_folder(&fixture, &session).exists());
    let archives = archives_of(&fixture, &session);
    let mut names: Vec<String> = std::fs::read_dir(&archives)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        names[0], "2026-01-01-1.md",
        "the session's own archive, as it was"
    );
    assert!(names[1].ends_with("-2.md"), "{names:?}");
    let text = read_archives(&archives);
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("older talk"), "{text}");
    assert!(text.contains("# Conversation archive 2"), "{text}");
    assert!(text.contains("the code is 4711"), "{text}");
    assert!(text.contains("after 1 days without activity"), "{text}");
    let status =
        String::from_utf8_lossy(&fixture.command(&["status"]).output().await.unwrap().stdout)
            .into_owned();
    assert!(status.contains("1 idle session retired"), "{status}");
    // Its story is gone with its folder; asking for it says so, when, and where it went.
    let out = fixture.command(&["logs", &session]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let retired_at: String = central(&fixture)
        .query_row(
            "SELECT retired_at FROM sessions WHERE id = ?1",
            [&session],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        said.contains(&format!("session {session} was retired on 2")),
        "says when: {said}"
    );
    assert!(
        said.contains(&format!("{}/", archives.display())),
        "names the archive: {said}"
    );
    assert!(said.contains("its files were removed"), "{said}");
    let sessions = String::from_utf8_lossy(
        &fixture
            .command(&["sessions"])
            .output()
            .await
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        sessions
            .lines()
            .any(|l| l.contains(&session) && l.contains("closed")),
        "{sessions}"
    );

    // The terminal's next message starts a new conversation, without the old history.
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (fresh, seq) = client.send("what was the code?").await.unwrap();
    client.done(seq).await.unwrap();
    assert_ne!(fresh, session);
    let sent = serde_json::to_string(model.last_request().unwrap().messages()).unwrap();
    assert!(!sent.contains("4711"), "{sent}");
    assert_eq!(row(&fixture, &fresh), ("active".into(), None));
    fixture.stop().await.unwrap();

    // Without a host, the same answer from the files, here as JSON.
    let out = fixture
        .command(&["logs", &session, "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["session_id"], session.as_str());
    assert_eq!(json["removed"], true);
    assert_eq!(json["archive"], archives.display().to_string());
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!(at(json["retired_at"].as_str().unwrap()), at(&retired_at));
}

#[tokio::test]
async fn passes_repeat_and_leave_pending_work_and_a_live_runner_alone() {
    let (_model, mut fixture) = setup().await;
    fixture
        .set("SESSION_RETENTION_DAYS", "1")
        .set("RETENTION_INTERVAL_MS", "200");
    fixture.start().await.unwrap();
    // The terminal's session: answered, its runner idle but alive.
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (live, seq) = client.send("hello").await.unwrap();
    client.done(seq).await.unwrap();
    // Old, with a message waiting for tomorrow; and one idle only since today.
    make_session(&fixture, "sess-pending", &days_ago(5), "pending talk", true);
    make_session(&fixture, "sess-later", &days_ago(0), "later talk", false);
    central(&fixture)
        .execute(
            "UPDATE sessions SET last_activity = ?1 WHERE id = ?2",
            (days_ago(5), &live),
        )
        .unwrap();

    // Several passes go by: nothing is due that may go.
    let before = retention(&fixture).await.passes;
    wait_for_retention(&fixture, "two more passes", |r| r.passes >= before + 2).await;
    assert_eq!(retention(&fixture).await.sessions, 0);

    // The later session ages past the limit: a later pass retires it, and only it.
    central(&fixture)
        .execute(
            "UPDATE sessions SET last_activity = ?1 WHERE id = 'sess-later'",
            [days_ago(2)],
        )
        .unwrap();
    wait_for_retention(&fixture, "the retirement", |r| r.sessions == 1).await;
    assert_eq!(
        row(&fixture, "sess-later"),
        ("closed".into(), Some("done".into()))
    );
    assert!(read_archives(&archives_of(&fixture, "sess-later")).contains("later talk"));

    let passes = retention(&fixture).await.passes;
    wait_for_retention(&fixture, "two more passes", |r| r.passes >= passes + 2).await;
    for id in [live.as_str(), "sess-pending"] {
        assert_eq!(row(&fixture, id), ("active".into(), None), "{id}");
        assert!(session_folder(&fixture, id).exists(), "{id}");
        assert!(!archives_of(&fixture, id).exists(), "{id}");
    }
    assert_eq!(pending_count(&fixture, "sess-pending"), 1);
    // The live session still answers.
    let (same, seq) = client.send("still there?").await.unwrap();
    assert_eq!(same, live);
    client.done(seq).await.unwrap();
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_host_killed_in_the_middle_of_retiring_finishes_after_a_restart() {
    const MANY: usize = 150;
    let (_model, mut fixture) = setup().await;
    fixture
        .set("SESSION_RETENTION_DAYS", "1")
        .set("RETENTION_INTERVAL_MS", "300");
    // Start once so the central database exists, then fill it while no host runs.
    fixture.start().await.unwrap();
    fixture.stop().await.unwrap();
    let ids: Vec<String> = (0..MANY).map(|i| format!("sess-old-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        make_session(
            &fixture,
            id,
            &days_ago(10),
            &format!("fact number {i}"),
            false,
        );
    }
    make_session(
        &fixture,
        "sess-pending",
        &days_ago(10),
        "pending talk",
        true,
    );

    let retired = |fixture: &HostFixture| -> i64 {
        central(fixture)
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE status = 'closed'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    fixture.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while retired(&fixture) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{}", fixture.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fixture.kill().await.unwrap();
    let at_kill = retired(&fixture);
    assert!(
        (at_kill as usize) < MANY,
        "the host was killed before the pass was over ({at_kill} retired)"
    );

    fixture.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = central(&fixture)
            .query_row(
                "SELECT COUNT(*) FROM sessions WHERE retired = 'done'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if done as usize == MANY {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {MANY} retired\n{}",
            fixture.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.stop().await.unwrap();

    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            row(&fixture, id),
            ("closed".into(), Some("done".into())),
            "{id}"
        );
        assert!(!session_folder(&fixture, id).exists(), "{id}");
        let text = read_archives(&archives_of(&fixture, id));
        assert!(text.contains(&format!("fact number {i}\n")), "{id}: {text}");
        assert_eq!(
            text.matches("# Conversation archive").count(),
            1,
            "{id}: {text}"
        );
    }
    // Nothing pending was lost, and the databases are sound.
    assert_eq!(row(&fixture, "sess-pending"), ("active".into(), None));
    assert_eq!(pending_count(&fixture, "sess-pending"), 1);
    let check = |conn: &Connection| -> String {
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(check(&central(&fixture)), "ok");
    let inbound =
        Connection::open(session_folder(&fixture, "sess-pending").join("inbound/inbound.db"))
            .unwrap();
    assert_eq!(check(&inbound), "ok");
}
