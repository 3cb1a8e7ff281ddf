//! What reaches the chats, whatever the agent writes: replies over `MAX_REPLY_CHARS` shown as
//! their beginning plus the whole text as a file, Telegram messages paced per chat, rows
//! forged for another forum topic refused, and the delivery window around a host killed with
//! SIGKILL.

use std::time::Duration;

use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use testkit::Reply;
use testkit::fake_telegram::{BotMessageKind, TgChat};

use super::support::*;
use super::telegram::{Tg, owner};

/// `lines` lines of numbered words: a reply whose every part can be found again.
fn long_text(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog {i}\n"))
        .collect()
}

const NOTE: &str = "the whole text is attached";

/// On the terminal a reply over the cap is shown cut, with the note, and the whole text saved
/// as a file the user can open; an edit over the cap is refused and the agent told.
#[tokio::test]
async fn a_reply_over_the_cap_is_cut_and_attached_whole_on_the_terminal() {
    let (model, mut fixture) = setup().await;
    fixture.set("MAX_REPLY_CHARS", "1000");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let text = long_text(100);
    assert!(text.chars().count() > 5000);
    model.push(Reply::text(text.clone()));
    let (session, seq) = client.send("write a lot").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let (reply_seq, shown, files) = client
        .seen
        .iter()
        .find_map(|e| match e {
            Event::Chat(ChatEvent::Reply {
                seq: s,
                in_reply_to: Some(r),
                text,
                files,
                ..
            }) if *r == seq => Some((*s, text.clone(), files.clone())),
            _ => None,
        })
        .expect("a reply");
    assert!(shown.chars().count() <= 1000, "{}", shown.chars().count());
    assert!(
        shown.ends_with(&format!(
            "✂ The reply was {} characters; {NOTE} (reply-{reply_seq}.md).",
            text.chars().count()
        )),
        "{shown}"
    );
    let head = shown.split("\n\n✂").next().unwrap();
    assert!(
        text.starts_with(head) && head.ends_with(char::is_numeric) && head.len() > 500,
        "{head}"
    );
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].name, format!("reply-{reply_seq}.md"));
    assert_eq!(std::fs::read_to_string(&files[0].path).unwrap(), text);

    // A short reply is untouched.
    model.push(Reply::text("short"));
    let (_, seq2) = client.send("and briefly?").await.unwrap();
    assert_eq!(client.done(seq2).await.unwrap().0, InboundStatus::Completed);
    assert_eq!(client.replies_to(seq2), vec!["short".to_owned()]);

    // An edit of the long reply with more than the cap: refused, the reply stays as it was.
    let db = session_dir(&fixture, &session).join("outbound/outbound.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let (max, channel, platform): (i64, String, String) = conn
        .query_row(
            "SELECT MAX(seq), channel_type, platform_id FROM messages_out",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let edit_seq = max + 20 + (max + 1) % 2;
    conn.execute(
        "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
             platform_id, thread_id, content)
         VALUES (?1, 'long-edit', 'edit', NULL, '2026-01-02T03:04:05.000Z', ?2, ?3, NULL, ?4)",
        rusqlite::params![
            edit_seq,
            channel,
            platform,
            serde_json::json!({ "text": "e".repeat(2000), "edit_of": reply_seq }).to_string()
        ],
    )
    .unwrap();
    drop(conn);
    let inbound = session_dir(&fixture, &session).join("inbound/inbound.db");
    let deadline = tokio::time::Instant::now() + WAIT;
    let error = loop {
        let conn = rusqlite::Connection::open(&inbound).unwrap();
        let row: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT status, last_error FROM delivery WHERE out_seq = ?1",
                [edit_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if let Some((status, error)) = row
            && status == "failed"
        {
            break error.unwrap_or_default();
        }
        assert!(tokio::time::Instant::now() < deadline, "edit not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("MAX_REPLY_CHARS"), "{error}");
    client.settle(Duration::from_millis(300)).await;
    assert!(
        !client.seen.iter().any(|e| matches!(
            e,
            Event::Chat(ChatEvent::Reply {
                edit_of: Some(_),
                ..
            })
        )),
        "the edit was shown"
    );
    fixture.stop().await.unwrap();
}

/// A 3 MB answer on Telegram: a bounded number of messages (the beginning, with the note), the
/// whole text as one document, and the agent's other conversation answered meanwhile.
#[tokio::test]
async fn a_three_megabyte_answer_is_a_few_messages_and_one_file_on_telegram() {
    let mut t = Tg::new().await;
    let pattern = ["--engage-mode", "pattern", "--engage-pattern", "."];
    t.create_agent(
        &[
            &["--agent-id", "andy", "--telegram-chat-id", "-1021"][..],
            &pattern[..],
        ]
        .concat(),
    )
    .await;
    t.start_with_agent(-1020, &pattern).await;
    let flooded = TgChat::group(-1020, "Flooded");
    let other = TgChat::group(-1021, "Other");

    let text = long_text(52_000);
    assert!(text.len() > 3 << 20, "{}", text.len());
    t.model.push(Reply::text(text.clone()));
    t.tg.say(&flooded, &owner(), "write me three megabytes");
    t.model.wait_for_requests(1, WAIT).await.unwrap();
    t.tg.say(&other, &owner(), "are you still there?");

    let answered = t.bot_messages(-1021, 1).await;
    assert!(
        answered[0].visible.contains("are you still there?"),
        "{answered:?}"
    );
    t.tg.wait_until(Duration::from_secs(60), "the document", |f| {
        f.bot_messages(-1020)
            .iter()
            .any(|m| m.kind == BotMessageKind::Document)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    // The note ends the last part.
    t.tg.wait_until(Duration::from_secs(60), "the note", |f| {
        f.bot_messages(-1020)
            .iter()
            .any(|m| m.visible.contains(NOTE))
    })
    .await
    .unwrap();
    t.settle().await;
    let sent = t.tg.bot_messages(-1020);
    // 32000 characters: a caption and at most eight 4096-character messages.
    assert!(sent.len() <= 10, "{} messages", sent.len());
    let documents: Vec<_> = sent
        .iter()
        .filter(|m| m.kind == BotMessageKind::Document)
        .collect();
    assert_eq!(documents.len(), 1);
    let (name, bytes) = documents[0].file.clone().unwrap();
    assert!(
        name.starts_with("reply-") && name.ends_with(".md"),
        "{name}"
    );
    assert_eq!(bytes.len(), text.len());
    assert!(bytes == text.as_bytes(), "the file is not the whole text");
    let shown: usize = sent.iter().map(|m| m.visible.chars().count()).sum();
    assert!(shown <= 32_000, "{shown} characters shown");
    assert!(sent[0].visible.starts_with("line 0: the quick brown fox"));
    assert_eq!(
        t.tg.calls_to("sendMessage")
            .iter()
            .filter(|c| c.ok && c.chat_id() == Some(-1020))
            .count(),
        sent.len() - 1
    );
    // The conversation goes on.
    t.tg.say(&other, &owner(), "and now?");
    let answered = t.bot_messages(-1021, 2).await;
    assert!(answered[1].visible.contains("and now?"));
}

/// Messages to one chat are paced a second apart (the parts of a long reply), while another
/// chat is answered in between, not after them.
#[tokio::test]
async fn one_chat_is_paced_and_another_is_not_held_behind_it() {
    let mut t = Tg::new().await;
    let pattern = ["--engage-mode", "pattern", "--engage-pattern", "."];
    t.create_agent(
        &[
            &["--agent-id", "andy", "--telegram-chat-id", "-1031"][..],
            &pattern[..],
        ]
        .concat(),
    )
    .await;
    t.start_with_agent(-1030, &pattern).await;
    let busy = TgChat::group(-1030, "Busy");
    let other = TgChat::group(-1031, "Other");
    // The other chat's runner is up before the long reply starts.
    t.tg.say(&other, &owner(), "hello");
    t.bot_messages(-1031, 1).await;

    // About 30,000 characters: eight parts.
    let text: String = (0..8)
        .map(|i| format!("{}\n\n", format!("p{i} ").repeat(1200)))
        .collect();
    t.model.push(Reply::text(text));
    t.tg.say(&busy, &owner(), "write a lot");
    t.bot_messages(-1030, 1).await;
    t.tg.say(&other, &owner(), "meanwhile?");
    let answered = t.bot_messages(-1031, 2).await;
    assert!(answered[1].visible.contains("meanwhile?"));
    let parts = t.bot_messages(-1030, 8).await;
    assert_eq!(parts.len(), 8);

    let sends = |chat: i64| {
        t.tg.calls_to("sendMessage")
            .into_iter()
            .filter(|c| c.ok && c.chat_id() == Some(chat))
            .map(|c| c.at)
            .collect::<Vec<_>>()
    };
    let busy_at = sends(-1030);
    assert_eq!(busy_at.len(), 8);
    for pair in busy_at.windows(2) {
        // A second apart, less what the network took off one arrival (lower bound only).
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    // The other chat's answer went out while the busy chat's parts were still being paced.
    let other_at = sends(-1031);
    assert!(
        other_at[1] < busy_at[7],
        "the other chat waited behind the busy one"
    );
}

/// The session of one forum topic cannot post into another: a row it forged with another
/// topic's `thread_id` (one with a session of its own, or any other) is refused, the topic it
/// belongs to is told, nothing reaches the other topic, and both topics go on being answered.
/// (The chat's general topic, without a thread, is the destination `telegram-<chat id>` that
/// wiring the chat gives the agent, so a row there is allowed.)
#[tokio::test]
async fn a_row_forged_for_another_forum_topic_is_refused_and_the_topic_told() {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -1050,
        &[
            "--engage-mode",
            "pattern",
            "--engage-pattern",
            ".",
            "--session-mode",
            "per-thread",
        ],
    )
    .await;
    let forum = TgChat::forum(-1050, "Forum");
    t.tg.message(&forum, &owner())
        .topic(10)
        .text("in ten")
        .send();
    t.bot_messages(-1050, 1).await;
    t.tg.message(&forum, &owner())
        .topic(20)
        .text("in twenty")
        .send();
    let sent = t.bot_messages(-1050, 2).await;
    assert_eq!(
        sent.iter().map(|m| m.thread_id).collect::<Vec<_>>(),
        vec![Some(10), Some(20)]
    );
    let session_of_ten: String = t
        .db()
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'andy' AND thread_id = '10'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dir = t
        .fixture
        .data_dir()
        .join("sessions/andy")
        .join(&session_of_ten);
    let conn = rusqlite::Connection::open(dir.join("outbound/outbound.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let max: i64 = conn
        .query_row("SELECT MAX(seq) FROM messages_out", [], |r| r.get(0))
        .unwrap();
    let forged = [(max + 20, "20"), (max + 22, "30")];
    for (seq, thread) in forged {
        conn.execute(
            "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
                 platform_id, thread_id, content)
             VALUES (?1, ?2, 'chat', NULL, '2026-01-02T03:04:05.000Z', 'telegram', '-1050', ?3,
                 '{\"text\":\"forged into another topic\"}')",
            rusqlite::params![seq, format!("forged-{seq}"), thread],
        )
        .unwrap();
    }
    drop(conn);

    const REFUSED: &str = "the agent produced a reply clawbox could not deliver";
    t.tg.wait_until(WAIT, "two notices in topic 10", |f| {
        f.bot_messages(-1050)
            .iter()
            .filter(|m| m.thread_id == Some(10) && m.visible.contains(REFUSED))
            .count()
            == 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    let inbound = dir.join("inbound/inbound.db");
    let conn = rusqlite::Connection::open(inbound).unwrap();
    for (seq, _) in forged {
        let (status, error): (String, String) = conn
            .query_row(
                "SELECT status, last_error FROM delivery WHERE out_seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(status, "failed");
        assert!(error.contains("topic"), "{error}");
    }
    // Both topics are still answered, each in its own topic.
    t.tg.message(&forum, &owner())
        .topic(20)
        .text("twenty again")
        .send();
    t.tg.message(&forum, &owner())
        .topic(10)
        .text("ten again")
        .send();
    t.tg.wait_until(WAIT, "both answered", |f| {
        let sent = f.bot_messages(-1050);
        sent.iter()
            .any(|m| m.thread_id == Some(20) && m.visible.contains("twenty again"))
            && sent
                .iter()
                .any(|m| m.thread_id == Some(10) && m.visible.contains("ten again"))
    })
    .await
    .unwrap();
    t.settle().await;
    let sent = t.tg.bot_messages(-1050);
    assert!(
        !sent
            .iter()
            .any(|m| m.visible.contains("forged into another topic")),
        "{sent:#?}"
    );
    assert!(sent.iter().all(|m| m.thread_id.is_some()), "{sent:#?}");
}

/// The delivery record of outbound row `out_seq`: (status, attempts).
fn delivery_of(dir: &std::path::Path, out_seq: i64) -> Option<(String, i64)> {
    let conn = rusqlite::Connection::open(dir.join("inbound/inbound.db")).ok()?;
    conn.query_row(
        "SELECT status, attempts FROM delivery WHERE out_seq = ?1",
        [out_seq],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// The host killed with SIGKILL around `sendMessage`. While Telegram holds its answer to a
/// reply it accepted, the host cannot know the reply arrived: after the restart it sends it
/// once more (one duplicate, never more), with a WARN naming the row. Killed after a send
/// that failed, it sends the reply once. Nothing is lost, and a later restart sends nothing.
#[tokio::test]
async fn a_host_killed_around_send_message_loses_nothing_and_duplicates_at_most_once() {
    let mut t = Tg::new().await;
    t.start_with_agent(100, &[]).await;
    let private = TgChat::private(&owner());
    let count = |t: &Tg, text: &str| {
        t.tg.bot_messages(100)
            .iter()
            .filter(|m| m.visible == text)
            .count()
    };

    // In flight: Telegram has the reply, the host has not heard back.
    t.tg.hold_next("sendMessage");
    t.tg.say(&private, &owner(), "first");
    t.tg.wait_until(WAIT, "the held reply", |f| f.held() == 1)
        .await
        .unwrap();
    assert_eq!(count(&t, "echo: first"), 1);
    t.fixture.kill().await.unwrap();
    t.tg.release();
    let session: String = t
        .db()
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dir = t.fixture.data_dir().join("sessions/andy").join(&session);
    let out_seq: i64 = rusqlite::Connection::open(dir.join("inbound/inbound.db"))
        .unwrap()
        .query_row(
            "SELECT out_seq FROM delivery WHERE status = 'sending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    t.fixture.start().await.unwrap();
    t.tg.wait_until(WAIT, "the reply sent again", |f| {
        f.bot_messages(100)
            .iter()
            .filter(|m| m.visible == "echo: first")
            .count()
            == 2
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while delivery_of(&dir, out_seq) != Some(("delivered".into(), 2)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            delivery_of(&dir, out_seq)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = t.fixture.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("re-sending a reply"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(
        warned[0].contains(&format!("out_seq={out_seq}")),
        "{}",
        warned[0]
    );

    // Before the send: its first attempt failed, and the host died before the retry.
    t.tg.fail_next(
        "sendMessage",
        testkit::fake_telegram::Failure::Error(500, "Internal Server Error".into()),
    );
    t.tg.say(&private, &owner(), "second");
    t.tg.wait_until(WAIT, "the failed send", |f| {
        f.calls_to("sendMessage").iter().any(|c| !c.ok)
    })
    .await
    .unwrap();
    t.fixture.kill().await.unwrap();
    assert_eq!(count(&t, "echo: second"), 0);
    t.fixture.start().await.unwrap();
    t.bot_messages(100, 3).await;
    t.settle().await;
    assert_eq!(count(&t, "echo: second"), 1);

    // Nothing is sent again by a later restart.
    t.fixture.stop().await.unwrap();
    t.fixture.start().await.unwrap();
    t.tg.say(&private, &owner(), "third");
    t.bot_messages(100, 4).await;
    t.settle().await;
    assert_eq!(
        (
            count(&t, "echo: first"),
            count(&t, "echo: second"),
            count(&t, "echo: third")
        ),
        (2, 1, 1)
    );
}

/// On the terminal a reply written while no terminal is attached waits for one; the host
/// killed then delivers it exactly once after its restart, and never again.
#[tokio::test]
async fn a_host_killed_with_a_reply_waiting_for_the_terminal_delivers_it_exactly_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::text("the waiting answer").after(Duration::from_millis(500)));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("answer when I am gone").await.unwrap();
    drop(client);
    let dir = session_dir(&fixture, &session);
    // The host has seen the reply and holds it for a terminal.
    let deadline = tokio::time::Instant::now() + WAIT;
    let out_seq = loop {
        if let Ok(conn) = rusqlite::Connection::open(dir.join("inbound/inbound.db"))
            && let Ok(seq) = conn.query_row(
                "SELECT out_seq FROM delivery WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
        {
            break seq;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", fixture.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    fixture.kill().await.unwrap();

    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    // The waiting reply may come with the attach itself.
    let is_reply = |e: &Event| matches!(e, Event::Chat(ChatEvent::Reply { .. }));
    if !client.seen.iter().any(is_reply) {
        client.wait_for(is_reply).await.unwrap();
    }
    client.settle(Duration::from_millis(500)).await;
    assert_eq!(
        client.replies_to(seq),
        vec!["the waiting answer".to_owned()]
    );
    assert_eq!(delivery_of(&dir, out_seq), Some(("delivered".into(), 1)));
    drop(client);

    fixture.kill().await.unwrap();
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client.settle(Duration::from_millis(800)).await;
    assert!(client.replies_to(seq).is_empty(), "{:?}", client.seen);
    fixture.stop().await.unwrap();
}

/// Two replies in one delivery pass: the first is recorded delivered as soon as Telegram
/// answered it, so a host killed while the second is in flight sends only the second again.
#[tokio::test]
async fn each_reply_of_a_pass_is_recorded_before_the_next_is_sent() {
    let mut t = Tg::new().await;
    t.start_with_agent(100, &[]).await;
    let private = TgChat::private(&owner());
    t.tg.say(&private, &owner(), "hello");
    t.bot_messages(100, 1).await;
    let session: String = t
        .db()
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dir = t.fixture.data_dir().join("sessions/andy").join(&session);
    let mut conn = rusqlite::Connection::open(dir.join("outbound/outbound.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let max: i64 = conn
        .query_row("SELECT MAX(seq) FROM messages_out", [], |r| r.get(0))
        .unwrap();
    let (a, b) = (max + 20, max + 22);
    let tx = conn.transaction().unwrap();
    for (seq, text) in [(a, "reply A"), (b, "reply B")] {
        tx.execute(
            "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
                 platform_id, thread_id, content)
             VALUES (?1, ?2, 'chat', NULL, '2026-01-02T03:04:05.000Z', 'telegram', '100', NULL, ?3)",
            rusqlite::params![
                seq,
                format!("pair-{seq}"),
                serde_json::json!({ "text": text }).to_string()
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(conn);
    // A goes out; B, paced a second later, is held in flight.
    t.tg.wait_until(WAIT, "reply A", |f| {
        f.bot_messages(100).iter().any(|m| m.visible == "reply A")
    })
    .await
    .unwrap();
    t.tg.hold_next("sendMessage");
    t.tg.wait_until(WAIT, "reply B held", |f| f.held() == 1)
        .await
        .unwrap();
    t.fixture.kill().await.unwrap();
    t.tg.release();
    assert_eq!(delivery_of(&dir, a).map(|d| d.0), Some("delivered".into()));
    assert_eq!(delivery_of(&dir, b).map(|d| d.0), Some("sending".into()));

    t.fixture.start().await.unwrap();
    t.bot_messages(100, 4).await;
    t.settle().await;
    let texts: Vec<String> =
        t.tg.bot_messages(100)
            .into_iter()
            .map(|m| m.visible)
            .collect();
    assert_eq!(texts[1..], ["reply A", "reply B", "reply B"], "{texts:?}");
}
