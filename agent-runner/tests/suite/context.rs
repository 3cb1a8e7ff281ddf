//! Long conversations: the context budget, automatic compaction, `/compact`, the memory flush,
//! archives, recovery from an overlong request, a crash during compaction.

use std::time::Duration;

use agent_runner::compact::{FLUSH_PROMPT, SUMMARY_PROMPT};
use chrono::Utc;
use mailbox::{AckStatus, OutboundDb, Requeue};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use testkit::{FakeModel, RecordedRequest, Reply, ToolCall};

use super::harness::{RUN_LIMIT, Session, last_user, signal};

/// The fake's estimate of a request's prompt tokens (what its `usage` reports and its context
/// limit compares): four bytes of body per token.
fn fake_tokens(request: &RecordedRequest) -> u64 {
    (request.body.to_string().len() as u64).div_ceil(4)
}

fn is_summary(request: &RecordedRequest) -> bool {
    request
        .messages()
        .first()
        .and_then(|m| m["content"].as_str())
        == Some(SUMMARY_PROMPT)
}

/// The archives of a session's workspace, by name.
fn archives(session: &Session) -> Vec<(String, String)> {
    let dir = session.paths.workspace.join("conversations");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read_to_string(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn compaction_record(session: &Session) -> Value {
    let db = OutboundDb::open(&session.paths).unwrap();
    db.kv("compaction")
        .unwrap()
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null)
}

/// A message of about 600 characters that names its turn.
fn long_message(i: usize) -> String {
    format!(
        "turn {i}: {} end of turn {i}",
        "lorem ipsum dolor sit amet ".repeat(22)
    )
}

#[tokio::test]
async fn five_hundred_long_turns_fit_a_small_budget() {
    const TURNS: usize = 500;
    const CONTEXT: u64 = 4_000;
    let fake = FakeModel::start().await.unwrap();
    // The model refuses anything above the budget: a turn that overflowed would fail.
    fake.set_context_limit(CONTEXT);
    fake.summarise_when(SUMMARY_PROMPT);
    let mut session = Session::new();
    session.set_env("CLAWBOX_CONTEXT_TOKENS", &CONTEXT.to_string());
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    session.set_env("RUST_LOG", "warn");
    let mut child = session.start(&fake);
    let mut seqs = Vec::new();
    for i in 1..=TURNS {
        // One message per turn: the next is sent once the previous is answered.
        seqs.push(session.send(&long_message(i)));
        session.wait_replies(i, RUN_LIMIT).await;
    }
    session.stop(&mut child).await;

    let replies = session.replies();
    assert_eq!(replies.len(), TURNS);
    // The default reply echoes the message: long answers.
    assert_eq!(
        replies[TURNS - 1].text(),
        Some(format!("echo: {}", long_message(TURNS)).as_str())
    );
    let failed: Vec<_> = session
        .acks()
        .into_iter()
        .filter(|a| a.status != AckStatus::Processing && a.status != AckStatus::Completed)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    let requests = fake.requests();
    let largest = requests.iter().map(fake_tokens).max().unwrap();
    assert!(largest <= CONTEXT, "a request of {largest} tokens");
    let summaries = requests.iter().filter(|r| is_summary(r)).count();
    assert!(summaries >= 1, "no compaction");
    // Flat: the turns' requests at the end are no bigger than the largest ever sent.
    let turn_requests: Vec<u64> = requests
        .iter()
        .filter(|r| !is_summary(r))
        .map(fake_tokens)
        .collect();
    assert_eq!(turn_requests.len(), TURNS, "one request per turn");

    let record = compaction_record(&session);
    let count = record["count"].as_u64().unwrap();
    assert!(count as usize <= summaries, "{record}");

    // The history: one summary, then the newest turns word for word.
    let history = session.history();
    assert!(
        history[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("[clawbox: summary of the earlier conversation"),
        "{}",
        history[0]
    );
    let last_user = history[history.len() - 2]["content"].as_str().unwrap();
    assert!(last_user.contains(&long_message(TURNS)), "{last_user}");
    assert_eq!(
        history[history.len() - 1]["content"],
        format!("echo: {}", long_message(TURNS))
    );

    // Every turn not kept word for word is in an archive.
    let archives = archives(&session);
    assert_eq!(archives.len() as u64, count);
    assert!(
        archives[0].1.contains(&long_message(1)),
        "{}",
        archives[0].1
    );
    for i in 1..=TURNS {
        let needle = long_message(i);
        let verbatim = history[1..]
            .iter()
            .any(|m| m["content"].as_str().unwrap_or("").contains(&needle));
        if !verbatim {
            assert!(
                archives.iter().any(|(_, text)| text.contains(&needle)),
                "turn {i} is neither kept nor archived"
            );
        }
    }
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn an_overlong_request_is_compacted_and_retried_in_the_same_turn() {
    let fake = FakeModel::start().await.unwrap();
    // The model's real context is far smaller than the budget the runner was given.
    fake.set_context_limit(2_500);
    fake.summarise_when(SUMMARY_PROMPT);
    let mut session = Session::new();
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "60000");
    let mut child = session.start(&fake);
    let mut refused_at = None;
    for i in 1..=12 {
        session.send(&long_message(i));
        session.wait_replies(i, RUN_LIMIT).await;
        let refused = fake
            .requests()
            .iter()
            .filter(|r| fake_tokens(r) > 2_500)
            .count();
        if refused > 0 && refused_at.is_none() {
            refused_at = Some(i);
        }
    }
    session.stop(&mut child).await;

    let refused_at = refused_at.expect("the conversation never reached the model's limit");
    let refused = fake
        .requests()
        .iter()
        .filter(|r| fake_tokens(r) > 2_500)
        .count();
    assert_eq!(
        refused, 1,
        "one refusal; the learnt context prevents the next ones"
    );
    let acks = session.acks();
    assert!(
        acks.iter().all(|a| a.status != AckStatus::Failed),
        "no turn failed: {acks:?}"
    );
    let replies = session.replies();
    assert_eq!(replies.len(), 12);
    assert_eq!(
        replies[refused_at - 1].text(),
        Some(format!("echo: {}", long_message(refused_at)).as_str()),
        "the turn that overflowed was answered"
    );
    assert!(fake.requests().iter().any(is_summary));
    assert!(
        session
            .log()
            .contains("the model refused the request as too long")
    );
}

#[tokio::test]
async fn a_message_too_large_for_any_request_is_cut_not_failed() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_context_limit(3_000);
    fake.set_default(Reply::text("got it"));
    let mut session = Session::new();
    session.set_env("CLAWBOX_CONTEXT_TOKENS", "3000");
    let huge = format!("BEGIN {} END", "word ".repeat(20_000));
    let seq = session.send(&huge);
    session.run(&fake).await;

    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Completed));
    let request = fake.last_request().unwrap();
    assert!(fake_tokens(&request) <= 3_000);
    let user = last_user(request.messages());
    assert!(user.contains("BEGIN"), "the start is kept");
    assert!(user.contains("END"), "the end is kept");
    assert!(user.contains("too long for the context budget"), "{user}");
    // The history keeps the cut message, so no later request carries it whole.
    let history = session.history();
    assert!(history[0]["content"].as_str().unwrap().len() < 12_000);
}

#[tokio::test]
async fn compact_flushes_memory_archives_and_says_what_was_kept() {
    let fake = FakeModel::start().await.unwrap();
    fake.summarise_when(SUMMARY_PROMPT);
    fake.push(Reply::text("Noted: you like green tea."));
    let mut session = Session::new();
    session.with_builtin_tools();
    session.send("I am Alice and I like green tea.");
    session.run(&fake).await;

    // The flush: the agent writes its memory, then says it is done.
    fake.push(Reply::ToolCalls(vec![ToolCall::new(
        "write_file",
        json!({ "path": "agent/CLAUDE.local.md", "content": "- Alice likes green tea.\n" }),
    )]));
    fake.push(Reply::text("DONE"));
    let seq = session.send("/compact");
    session.run(&fake).await;

    assert_eq!(
        std::fs::read_to_string(session.agent_dir.join("CLAUDE.local.md")).unwrap(),
        "- Alice likes green tea.\n"
    );
    let requests = fake.requests();
    let flush = &requests[1];
    assert_eq!(last_user(flush.messages()), FLUSH_PROMPT);
    assert!(
        flush.messages().iter().any(|m| m["content"]
            .as_str()
            .is_some_and(|t| t.contains("green tea"))),
        "the flush sees the part to be compacted"
    );
    assert!(
        is_summary(&requests[3]),
        "flush, its tool result, then the summary"
    );
    assert_eq!(requests.len(), 4);

    let replies = session.replies();
    let reply = replies.last().unwrap();
    assert_eq!(reply.in_reply_to, Some(seq));
    let text = reply.text().unwrap();
    assert!(
        text.starts_with("Compacted the conversation: 2 earlier messages are now one summary, the newest 0 are kept word for word."),
        "{text}"
    );
    let archives = archives(&session);
    assert_eq!(archives.len(), 1);
    let (name, archive) = &archives[0];
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(name, &format!("{today}-1.md"));
    assert!(
        archive.contains("I am Alice and I like green tea."),
        "{archive}"
    );
    assert!(text.contains(&format!("conversations/{name}")), "{text}");

    let history = session.history();
    assert_eq!(history.len(), 1, "{history:?}");
    let summary = history[0]["content"].as_str().unwrap();
    assert!(summary.contains("Summary of"), "{summary}");
    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Completed));

    // The next turn starts from the summary, and the memory is in the prompt.
    session.send("What do I like?");
    session.run(&fake).await;
    let request = fake.last_request().unwrap();
    let messages = request.messages();
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("Alice likes green tea.")
    );
    assert_eq!(messages[1]["content"], history[0]["content"]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn compact_with_nothing_to_compact_says_so() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    session.send("/compact");
    session.run(&fake).await;
    assert_eq!(fake.request_count(), 0);
    let replies = session.replies();
    assert!(
        replies[0]
            .text()
            .unwrap()
            .starts_with("Nothing to compact yet: the conversation has 0 messages"),
        "{replies:?}"
    );
}

#[tokio::test]
async fn a_runner_killed_during_compaction_answers_the_turn_once() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    for i in 1..=3 {
        session.send(&long_message(i));
    }
    // Three turns' worth of history, written with a generous budget (one batch, one turn).
    session.run(&fake).await;
    for i in 4..=5 {
        session.send(&long_message(i));
        session.run(&fake).await;
    }
    let before = session.history();
    assert_eq!(before.len(), 6);

    // With a small budget the next turn must compact first; its summary request hangs.
    session.set_env("CLAWBOX_CONTEXT_TOKENS", "1500");
    fake.push(Reply::Hang);
    let seq = session.send(&long_message(6));
    let mut child = session.start(&fake);
    let n = fake.request_count();
    let requests = fake.wait_for_requests(n + 1, RUN_LIMIT).await.unwrap();
    assert!(
        is_summary(requests.last().unwrap()),
        "the summary request is in flight"
    );
    signal(&child, libc::SIGKILL);
    child.wait().await.unwrap();
    assert_eq!(
        session.history(),
        before,
        "nothing of the compaction was kept"
    );
    assert!(archives(&session).len() <= 1);

    // What the host does when a runner dies holding a claim.
    let requeued = session
        .inbound
        .requeue(
            &[seq],
            /*max_tries*/ 3,
            Duration::from_millis(50),
            "runner died",
            Utc::now(),
        )
        .unwrap();
    assert!(
        matches!(requeued[..], [Requeue::Retry { .. }]),
        "{requeued:?}"
    );
    fake.summarise_when(SUMMARY_PROMPT);
    session.run(&fake).await;

    let answers: Vec<_> = session
        .replies()
        .into_iter()
        .filter(|r| r.in_reply_to == Some(seq))
        .collect();
    assert_eq!(answers.len(), 1, "answered once: {answers:?}");
    let last = session.acks().pop().unwrap();
    assert_eq!(
        (last.message_seq, last.attempt, last.status),
        (seq, 2, AckStatus::Completed)
    );
    let after = session.history();
    assert!(
        after[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("[clawbox: summary")
    );
    // The newest turn is there once, word for word.
    let sixth = after
        .iter()
        .filter(|m| {
            m["content"]
                .as_str()
                .unwrap_or("")
                .contains(&long_message(6))
        })
        .count();
    assert_eq!(sixth, 2, "its message and its echo: {after:?}");
    assert_eq!(compaction_record(&session)["count"], 1);
    assert_eq!(
        archives(&session).len(),
        1,
        "the retry rewrote the same archive"
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn a_starting_runner_prunes_old_settled_rows_and_keeps_pending_work() {
    let fake = FakeModel::start().await.unwrap();
    let mut session = Session::new();
    let old = session.send("an old question");
    session.run(&fake).await;
    // The host takes the reply for delivery and folds the acks, as it does.
    let outbound = session.outbound();
    let reply = session.replies()[0].seq;
    session
        .inbound
        .begin_deliveries(&[reply], &[reply], Utc::now())
        .unwrap();
    session
        .inbound
        .settle(
            &[(reply, None)],
            &outbound.acks_after(0).unwrap(),
            Utc::now(),
        )
        .unwrap();
    let fresh = session.send("a new question");
    session.run(&fake).await;
    assert_eq!(session.replies().len(), 2);

    // A runner started with a retention of one day prunes the first exchange's
    // reply and acks (delivered, folded), and nothing of the second (not yet taken by the host).
    session.set_env("CLAWBOX_RETENTION_DAYS", "1");
    // The days pass on the rows themselves: the first exchange is three days old.
    {
        let conn = rusqlite::Connection::open(session.paths.outbound_db()).unwrap();
        let before = Utc::now() - chrono::Duration::days(3);
        let at = before.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        conn.execute(
            "UPDATE messages_out SET created_at = ?1 WHERE seq = ?2",
            (&at, reply),
        )
        .unwrap();
        conn.execute("UPDATE acks SET at = ?1 WHERE message_seq = ?2", (&at, old))
            .unwrap();
    }
    session.run(&fake).await;
    let left: Vec<i64> = session.replies().iter().map(|m| m.seq).collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0] > reply);
    let acked: Vec<i64> = session.acks().iter().map(|a| a.message_seq).collect();
    assert!(!acked.contains(&old), "{acked:?}");
    assert!(acked.contains(&fresh), "{acked:?}");
    assert!(session.log().contains("old settled rows pruned"));
    // The history is compaction's business, not retention's.
    assert_eq!(session.history().len(), 4);
}
