//! Turns end to end: replies, retries, failures, `/clear`, batching, the step limit.

use mailbox::{AckStatus, OutboundKind};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use testkit::{FakeModel, Reply, ToolCall};

use super::harness::{Session, last_user, route, tool_results};

#[tokio::test]
async fn hello_gets_one_reply_and_a_completed_ack() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("Hi Alice"));
    let mut session = Session::new();
    let seq = session.send("hello");
    session.run(&fake).await;

    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply = &replies[0];
    assert_eq!(reply.seq % 2, 1, "outbound seqs are odd");
    assert!(reply.seq > seq);
    assert_eq!(reply.kind, OutboundKind::Chat);
    assert_eq!(reply.in_reply_to, Some(seq));
    assert_eq!(reply.route, route());
    assert_eq!(reply.text(), Some("Hi Alice"));

    let acks: Vec<(i64, u32, AckStatus)> = session
        .acks()
        .iter()
        .map(|a| (a.message_seq, a.attempt, a.status))
        .collect();
    assert_eq!(
        acks,
        [
            (seq, 1, AckStatus::Processing),
            (seq, 1, AckStatus::Completed)
        ]
    );

    let request = fake.last_request().unwrap();
    assert_eq!(request.header("authorization"), Some("Bearer sk-session"));
    assert_eq!(request.body["model"], "test-model");
    let messages = request.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a test agent."), "{system}");
    assert!(
        system.contains("Your time zone: Europe/Berlin."),
        "{system}"
    );
    // No clock in the system prompt: it would change the cached prefix every minute.
    assert!(!system.contains("(Europe/Berlin, "), "{system}");
    assert!(system.contains("This conversation is on: cli."), "{system}");
    let user = last_user(messages);
    let (now, user_batch) = user.split_once('\n').unwrap();
    assert!(
        now.starts_with("<now>") && now.contains("(Europe/Berlin, ") && now.ends_with(")</now>"),
        "{user}"
    );
    assert!(
        user_batch.starts_with(&format!("<message id=\"{seq}\" sender=\"Alice\" time=\"")),
        "{user}"
    );
    assert!(user.ends_with("\">hello</message>"), "{user}");

    assert_eq!(
        session.history(),
        [
            json!({ "role": "user", "content": user }),
            json!({ "role": "assistant", "content": "Hi Alice" }),
        ]
    );
    let state = session.outbound().runner_state().unwrap().unwrap();
    assert_eq!(
        (
            state.activity,
            state.step,
            state.tool,
            state.tool_timeout_ms
        ),
        (mailbox::Activity::Idle, 0, None, None)
    );
    assert!(session.paths.heartbeat().exists());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn server_errors_are_retried_and_answered_once() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::Status(500, "boom".to_owned()));
    fake.push(Reply::Status(500, "boom again".to_owned()));
    fake.push(Reply::text("finally"));
    let mut session = Session::new();
    let seq = session.send("hello");
    session.run(&fake).await;

    assert_eq!(fake.request_count(), 3);
    let replies = session.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].text(), Some("finally"));
    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Completed));
}

#[tokio::test]
async fn malformed_responses_fail_the_turn_but_keep_the_message() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_default(Reply::Garbage("{definitely not json".to_owned()));
    let mut session = Session::new();
    session.set_env("CLAWBOX_MODEL_RETRIES", "1");
    let seq = session.send("remember: the code is 4711");
    session.run(&fake).await;

    assert_eq!(fake.request_count(), 2, "one try plus one retry");
    assert!(session.replies().is_empty());
    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Failed));
    let reason = last.error.unwrap();
    assert!(
        reason.starts_with("The model returned a malformed response: the body is not JSON"),
        "{reason}"
    );
    assert!(reason.ends_with("(after 2 attempts)"), "{reason}");
    let history = session.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(history[0]["content"].as_str().unwrap().contains("4711"));

    // The next turn still sees what the user said.
    fake.set_default(Reply::text("The code is 4711."));
    session.send("what was the code?");
    session.run(&fake).await;
    let messages = fake.last_request().unwrap().messages().to_vec();
    let users: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    assert_eq!(users.len(), 2, "{messages:?}");
    assert_eq!(session.replies().len(), 1);
}

#[tokio::test]
async fn clear_starts_a_new_conversation() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("first answer"));
    let mut session = Session::new();
    session.send("old topic");
    session.run(&fake).await;

    let clear = session.send("/clear");
    let after = session.send("new topic");
    fake.push(Reply::text("second answer"));
    session.run(&fake).await;

    let texts: Vec<(Option<i64>, String)> = session
        .replies()
        .iter()
        .map(|r| (r.in_reply_to, r.text().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(texts[1], (Some(clear), "Conversation cleared.".to_owned()));
    assert_eq!(texts[2], (Some(after), "second answer".to_owned()));
    assert_eq!(texts.len(), 3);

    let request = fake.last_request().unwrap();
    let messages = request.messages();
    assert_eq!(
        messages.len(),
        2,
        "only the system prompt and the new topic: {messages:?}"
    );
    assert!(last_user(messages).contains("new topic"));
    assert!(!last_user(messages).contains("/clear"));
    let history = session.history();
    assert_eq!(history.len(), 2, "{history:?}");

    let verdicts: Vec<(i64, AckStatus)> = session
        .acks()
        .iter()
        .filter(|a| a.status != AckStatus::Processing)
        .map(|a| (a.message_seq, a.status))
        .collect();
    assert!(verdicts.contains(&(clear, AckStatus::Completed)));
    assert!(verdicts.contains(&(after, AckStatus::Completed)));
}

#[tokio::test]
async fn a_clear_the_host_did_not_authorise_is_an_ordinary_message() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("first answer"));
    let mut session = Session::new();
    session.send("old topic");
    session.run(&fake).await;

    // The text of a command without the host's mark: the conversation goes on.
    session.send_unmarked("/clear");
    fake.push(Reply::text("second answer"));
    session.run(&fake).await;

    let texts: Vec<String> = session
        .replies()
        .iter()
        .map(|r| r.text().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["first answer", "second answer"]);
    let request = fake.last_request().unwrap();
    let users: Vec<&Value> = request
        .messages()
        .iter()
        .filter(|m| m["role"] == "user")
        .collect();
    assert_eq!(users.len(), 2, "the old topic is still there: {users:?}");
    assert!(users[0].to_string().contains("old topic"));
    assert!(last_user(request.messages()).contains("/clear"));
}

#[tokio::test]
async fn pending_messages_are_batched_oldest_first() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("both answered"));
    let mut session = Session::new();
    let first = session.send("first");
    let second = session.send("second");
    session.run(&fake).await;

    assert_eq!(fake.request_count(), 1);
    let user = last_user(fake.last_request().unwrap().messages());
    let lines: Vec<&str> = user.lines().collect();
    assert_eq!(lines.len(), 5, "{user}");
    assert!(lines[0].starts_with("<now>"), "{user}");
    let lines = &lines[1..];
    assert_eq!(lines[0], "<messages>");
    assert!(
        lines[1].starts_with(&format!("<message id=\"{first}\"")),
        "{user}"
    );
    assert!(lines[1].ends_with(">first</message>"), "{user}");
    assert!(
        lines[2].starts_with(&format!("<message id=\"{second}\"")),
        "{user}"
    );
    assert_eq!(lines[3], "</messages>");

    let replies = session.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].in_reply_to, Some(second));
    let completed: Vec<i64> = session
        .acks()
        .iter()
        .filter(|a| a.status == AckStatus::Completed)
        .map(|a| a.message_seq)
        .collect();
    assert_eq!(completed, [first, second]);
}

#[tokio::test]
async fn the_step_limit_ends_the_turn_with_a_notice() {
    let fake = FakeModel::start().await.unwrap();
    fake.set_default(Reply::tool_call("lookup", json!({ "q": "x" })));
    let mut session = Session::new();
    session.set_env("CLAWBOX_MAX_STEPS", "2");
    let seq = session.send("loop forever");
    session.run(&fake).await;

    assert_eq!(fake.request_count(), 2);
    let replies = session.replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].text(),
        Some(
            "I stopped after 2 steps without finishing. Send me a message if you want me to continue."
        )
    );
    assert_eq!(replies[0].in_reply_to, Some(seq));
    // Without tools every call is unknown, and still answered.
    let results = tool_results(fake.last_request().unwrap().messages());
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].1,
        "Error: unknown tool 'lookup'. Available tools: none"
    );
    // user, 2 × (assistant + tool), the notice.
    assert_eq!(session.history().len(), 6);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn a_final_answer_may_be_empty() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::ToolCalls(vec![ToolCall::new(
        "send_message",
        json!({ "text": "x" }),
    )]));
    fake.push(Reply::text(""));
    let mut session = Session::new();
    let seq = session.send("say it with send_message");
    session.run(&fake).await;

    assert!(session.replies().is_empty());
    let last = session.acks().pop().unwrap();
    assert_eq!((last.message_seq, last.status), (seq, AckStatus::Completed));
    // user, assistant (tool call), tool; the empty answer is not stored.
    assert_eq!(session.history().len(), 3);
}
