//! `ask_user_question` end to end: the real host, runner and mcp-tools with the fake model, and
//! the question answered from a terminal (admin socket or piped `clawbox chat`) or from
//! Telegram buttons (the fake Bot API): answers, timeouts, who may answer, an answer that
//! arrives after the runner was killed, and two questions at once.

use std::time::Duration;

use host::admin::protocol::{Event, Request};
use host::channels::cli::ChatEvent;
use serde_json::{Value, json};
use testkit::fake_telegram::{BotMessage, TgChat, TgUser};
use testkit::{FakeTelegram, Reply, ToolCall};

use super::support::*;
use super::telegram::Tg;

fn ask(title: &str, options: Value, timeout_s: u64) -> ToolCall {
    ToolCall::new(
        "ask_user_question",
        json!({ "title": title, "question": format!("{title}?"), "options": options, "timeout_s": timeout_s }),
    )
}

/// The (id, labels) of the next question shown to the terminal.
async fn next_question(client: &mut Client) -> (String, Vec<String>) {
    match client
        .wait_for(|e| matches!(e, Event::Chat(ChatEvent::Question { .. })))
        .await
        .unwrap()
    {
        Event::Chat(ChatEvent::Question {
            question_id,
            options,
            ..
        }) => (question_id, options),
        _ => unreachable!(),
    }
}

/// Answers, expecting a refusal; returns its text.
async fn answer_refused(client: &mut Client, question_id: String, choice: usize) -> String {
    client
        .request(&Request::Answer {
            question_id,
            choice,
        })
        .await
        .unwrap();
    match client
        .wait_for(|e| matches!(e, Event::Error { .. }))
        .await
        .unwrap()
    {
        Event::Error { message } => message,
        _ => unreachable!(),
    }
}

async fn closed(client: &mut Client, id: &str) -> String {
    let id = id.to_owned();
    match client
        .wait_for(move |e| matches!(e, Event::Chat(ChatEvent::QuestionClosed { question_id, .. }) if *question_id == id))
        .await
        .unwrap()
    {
        Event::Chat(ChatEvent::QuestionClosed { outcome, .. }) => outcome,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_terminal_answers_and_the_tool_returns_the_value() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::ToolCalls(vec![ask(
        "Deploy",
        json!(["Staging", { "label": "Production", "value": "prod" }]),
        60,
    )]));
    model.push(Reply::text("deploying to prod"));
    let (_, seq) = client.send("deploy it").await.unwrap();
    let (id, options) = next_question(&mut client).await;
    assert_eq!(options, vec!["Staging", "Production"]);
    client
        .request(&Request::Answer {
            question_id: id.clone(),
            choice: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        closed(&mut client, &id).await,
        "✅ Production — chosen by you"
    );
    client.done(seq).await.unwrap();
    let requests = model.requests();
    assert_eq!(
        tool_results(&requests[1]),
        vec![r#"Answer: "prod" (the option "Production", chosen by you)"#.to_owned()]
    );
    // The notice of the same answer was marked handled: no second turn.
    client.settle(Duration::from_millis(800)).await;
    assert_eq!(model.request_count(), 2);
    assert_eq!(client.replies_to(seq), vec!["deploying to prod".to_owned()]);
    // Answering again is refused.
    let refusal = answer_refused(&mut client, id, 1).await;
    assert!(refusal.contains("answered already"), "{refusal}");
}

#[tokio::test]
async fn an_unanswered_question_expires_and_the_agent_is_told() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::ToolCalls(vec![ask(
        "Wait",
        json!(["Yes", "No"]),
        10,
    )]));
    model.push(Reply::text("ok, nobody answered"));
    let (_, seq) = client.send("ask me").await.unwrap();
    let (id, _) = next_question(&mut client).await;
    assert!(closed(&mut client, &id).await.contains("expired"));
    client.done(seq).await.unwrap();
    let results = tool_results(&model.requests()[1]);
    assert!(
        results[0].starts_with("No answer: nobody chose within 10 s"),
        "{results:?}"
    );
    let refusal = answer_refused(&mut client, id, 1).await;
    assert!(refusal.contains("expired already"), "{refusal}");
}

#[tokio::test]
async fn piped_chat_answers_with_a_number_and_explains_anything_else() {
    let (model, fixture) = setup().await;
    model.push(Reply::ToolCalls(vec![ask(
        "Colour",
        json!(["Red", "Blue"]),
        60,
    )]));
    model.push(Reply::text("blue it is"));
    let out = fixture.chat("paint it\nmaybe\n2\n").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", fixture.logs());
    assert!(
        stdout.contains("❓ Colour\nColour?\n  1. Red\n  2. Blue\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("To answer “Colour”, type a number from 1 to 2"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("blue it is"), "{stdout}");
    assert_eq!(
        tool_results(&model.requests()[1]),
        vec![r#"Answer: "Blue" (chosen by you)"#.to_owned()]
    );
}

#[tokio::test]
async fn an_answer_after_the_runner_died_reaches_the_agent_as_a_message() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::ToolCalls(vec![ask("Plan", json!(["A", "B"]), 600)]));
    // The retried turn (a new runner) does not ask again.
    model.push(Reply::text("I asked you; I will act when you answer"));
    let (session, seq) = client.send("make a plan").await.unwrap();
    let (id, _) = next_question(&mut client).await;
    let pid = runner_pid(&fixture, &session, None).await;
    signal(pid, libc::SIGKILL);
    client.done(seq).await.unwrap();
    // The question is still open; the answer goes to the agent as a message.
    client
        .request(&Request::Answer {
            question_id: id.clone(),
            choice: 1,
        })
        .await
        .unwrap();
    closed(&mut client, &id).await;
    let requests = model.wait_for_requests(3, WAIT).await.unwrap();
    let last = requests[2].messages().last().unwrap()["content"].to_string();
    assert!(
        last.contains("Answer to your question") && last.contains("&quot;A&quot;"),
        "{last}"
    );
}

#[tokio::test]
async fn two_questions_at_once_are_told_apart() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::ToolCalls(vec![
        ask("Size", json!(["Small", "Large"]), 60),
        ask("Colour", json!(["Red", "Blue"]), 60),
    ]));
    model.push(Reply::text("done"));
    let (_, seq) = client.send("order").await.unwrap();
    let first = next_question(&mut client).await;
    let second = next_question(&mut client).await;
    assert_ne!(first.0, second.0);
    // The calls run concurrently, so either may come first; each gets its own choice, the
    // later one answered first.
    let choice_for = |options: &[String]| if options[0] == "Red" { 2 } else { 1 };
    for (id, options) in [(&second.0, &second.1), (&first.0, &first.1)] {
        let choice = choice_for(options);
        client
            .request(&Request::Answer {
                question_id: id.clone(),
                choice,
            })
            .await
            .unwrap();
        let outcome = closed(&mut client, id).await;
        assert!(outcome.contains(&options[choice - 1]), "{outcome}");
    }
    client.done(seq).await.unwrap();
    let mut results = tool_results(&model.requests()[1]);
    results.sort();
    assert_eq!(
        results,
        vec![
            r#"Answer: "Blue" (chosen by you)"#.to_owned(),
            r#"Answer: "Small" (chosen by you)"#.to_owned()
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Telegram

/// `andy` answering every message of the group -2001, from anyone.
async fn telegram() -> Tg {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -2001,
        &[
            "--engage-mode",
            "pattern",
            "--engage-pattern",
            ".",
            "--unknown-sender-policy",
            "public",
        ],
    )
    .await;
    t
}

async fn alert_count(tg: &FakeTelegram, n: usize) -> Vec<testkit::fake_telegram::Call> {
    tg.wait_until(WAIT, "callback answers", |f| {
        f.calls_to("answerCallbackQuery").len() >= n
    })
    .await
    .unwrap();
    tg.calls_to("answerCallbackQuery")
}

#[tokio::test]
async fn telegram_buttons_only_answer_for_the_asker_or_an_owner() {
    let Tg {
        model,
        tg,
        fixture: _host,
        ..
    } = telegram().await;
    let chat = TgChat::forum(-2001, "Team");
    let mike = TgUser::new(200, "Mike", Some("mike_m"));
    let sam = TgUser::new(300, "Sam", None);
    let olga = TgUser::new(100, "Olga", None);
    model.push(Reply::ToolCalls(vec![ask(
        "Deploy",
        json!(["Staging", "Production"]),
        60,
    )]));
    model.push(Reply::text("staging, then"));
    tg.message(&chat, &mike)
        .topic(5)
        .text("please deploy")
        .send();
    let card = tg
        .wait_for_bot_messages(-2001, 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(card.thread_id, Some(5));
    assert_eq!(card.raw, "❓ <b>Deploy</b>\nDeploy?");
    let data = buttons(&card);
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|d| d.len() < 64), "{data:?}");

    // Sam did not ask and has no role: an alert, nothing changes.
    tg.press(&chat, &sam, card.message_id, &data[1]);
    let answers = alert_count(&tg, 1).await;
    assert_eq!(answers[0].params["show_alert"], true);
    assert!(
        answers[0].params["text"]
            .as_str()
            .unwrap()
            .contains("Only Mike (@mike_m)"),
        "{answers:?}"
    );
    assert_eq!(buttons(&tg.bot_messages(-2001)[0]).len(), 2);
    // Mike asked: his choice counts.
    tg.press(&chat, &mike, card.message_id, &data[0]);
    let answers = alert_count(&tg, 2).await;
    assert_eq!(answers[1].params["text"], "Noted: Staging");
    tg.wait_until(WAIT, "the card updated", |f| {
        buttons(&f.bot_messages(-2001)[0]).is_empty()
    })
    .await
    .unwrap();
    assert!(
        tg.bot_messages(-2001)[0]
            .visible
            .ends_with("✅ Staging — chosen by Mike (@mike_m)")
    );
    let replies = tg.wait_for_bot_messages(-2001, 2, WAIT).await.unwrap();
    assert_eq!(replies[1].visible, "staging, then");
    assert_eq!(
        tool_results(&model.requests()[1]),
        vec![r#"Answer: "Staging" (chosen by Mike (@mike_m))"#.to_owned()]
    );

    // Two questions at once, from a turn Mike started, answered by the owner in reverse order.
    model.push(Reply::ToolCalls(vec![
        ask("Size", json!(["S", "L"]), 60),
        ask("When", json!(["Now", "Later"]), 60),
    ]));
    model.push(Reply::text("noted both"));
    tg.message(&chat, &mike).topic(5).text("order").send();
    let all = tg.wait_for_bot_messages(-2001, 4, WAIT).await.unwrap();
    let cards: Vec<&BotMessage> = all[2..4].iter().collect();
    let by_title = |t: &str| {
        cards
            .iter()
            .find(|c| c.visible.contains(t))
            .copied()
            .unwrap()
    };
    let (size, when) = (by_title("Size"), by_title("When"));
    tg.press(&chat, &olga, when.message_id, &buttons(when)[1]);
    tg.press(&chat, &olga, size.message_id, &buttons(size)[0]);
    tg.wait_for_bot_messages(-2001, 5, WAIT).await.unwrap();
    // The conversation so far holds the first turn's result too; this turn's are the last two.
    let all_results = tool_results(&model.requests()[3]);
    let mut results = all_results[all_results.len() - 2..].to_vec();
    results.sort();
    assert_eq!(
        results,
        vec![
            r#"Answer: "Later" (chosen by Olga)"#.to_owned(),
            r#"Answer: "S" (chosen by Olga)"#.to_owned()
        ]
    );
}

#[tokio::test]
async fn telegram_cards_expire_and_stale_buttons_are_answered_politely() {
    let Tg {
        model,
        tg,
        fixture: _host,
        ..
    } = telegram().await;
    let chat = TgChat::group(-2001, "Team");
    let olga = TgUser::new(100, "Olga", None);
    model.push(Reply::ToolCalls(vec![ask(
        "Quick",
        json!(["Yes", "No"]),
        10,
    )]));
    model.push(Reply::text("no answer, moving on"));
    tg.say(&chat, &olga, "ask me something");
    let card = tg
        .wait_for_bot_messages(-2001, 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    let data = buttons(&card);
    tg.wait_until(Duration::from_secs(40), "the card to expire", |f| {
        f.bot_messages(-2001)[0].visible.contains("expired")
    })
    .await
    .unwrap();
    assert!(buttons(&tg.bot_messages(-2001)[0]).is_empty());
    let replies = tg.wait_for_bot_messages(-2001, 2, WAIT).await.unwrap();
    assert_eq!(replies[1].visible, "no answer, moving on");
    // A press on the expired card, and one on a button nobody knows.
    tg.press(&chat, &olga, card.message_id, &data[0]);
    tg.press(&chat, &olga, card.message_id, "q:nosuchquestion:0");
    let answers = alert_count(&tg, 2).await;
    assert_eq!(answers[0].params["text"], "This question has expired.");
    assert_eq!(
        answers[1].params["text"],
        "This button is no longer active."
    );
}
