//! The Telegram channel end to end: the real `clawbox` host (process runtime, real runners and
//! mcp-tools), agents provisioned with the real `create-agent`, the fake OpenAI-compatible model,
//! and testkit's fake Bot API server playing Telegram (and its users), which records every call
//! and validates what the real one validates (HTML entities, lengths, unknown messages).

use std::path::Path;
use std::time::Duration;

use pretty_assertions::assert_eq;
use rusqlite::Connection;
use serde_json::json;
use testkit::fake_telegram::{BotMessage, Failure, TgChat, TgUser};
use testkit::{FakeModel, FakeTelegram, HostFixture, Reply, ToolCall};

use super::support::*;

pub(super) const TOKEN: &str = "123456:test-token";
const CREATE_AGENT: &str = env!("CARGO_BIN_EXE_create-agent");

pub(super) fn owner() -> TgUser {
    TgUser::new(100, "Olga", Some("olga_owner"))
}

fn member() -> TgUser {
    TgUser::new(200, "Mike", Some("mike_m"))
}

fn stranger() -> TgUser {
    TgUser::new(300, "Sam", None)
}

/// A host with the Telegram channel on, pointed at the fake Bot API.
pub(super) struct Tg {
    pub(super) model: FakeModel,
    pub(super) tg: FakeTelegram,
    pub(super) fixture: HostFixture,
    /// Whether the agent streams its replies (drafts edited as they grow). Off unless a test
    /// is about streaming: the fake model streams in an instant, and the other tests count
    /// and order the Bot API calls of whole replies.
    pub(super) stream: bool,
    /// Whether chats show progress lines under drafts (`show_tools`): off unless a test is
    /// about them, for the same reason.
    pub(super) show_tools: bool,
}

impl Tg {
    pub(super) async fn new() -> Tg {
        let (model, mut fixture) = setup().await;
        let tg = FakeTelegram::start(TOKEN).await.unwrap();
        fixture
            .set("TELEGRAM_BOT_TOKEN", TOKEN)
            .set("TELEGRAM_API_URL", tg.api_url())
            .set("TELEGRAM_POLL_TIMEOUT_S", "1");
        Tg {
            model,
            tg,
            fixture,
            stream: false,
            show_tools: false,
        }
    }

    /// Runs the real `create-agent`; panics with its output unless it succeeds.
    pub(super) async fn create_agent(&self, args: &[&str]) {
        let out = self
            .fixture
            .command_of(Path::new(CREATE_AGENT), args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "create-agent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `andy`, owned by Olga, wired to `chat` with `extra` flags; then the host starts.
    pub(super) async fn start_with_agent(&mut self, chat: i64, extra: &[&str]) {
        let chat = chat.to_string();
        let mut args = vec![
            "--agent-id",
            "andy",
            "--agent-name",
            "Andy",
            "--telegram-chat-id",
            &chat,
            "--owner-user-id",
            "telegram:100",
        ];
        args.extend_from_slice(extra);
        self.create_agent(&args).await;
        self.set_stream();
        self.fixture.start().await.unwrap();
    }

    /// Writes andy's container.json with [`Tg::stream`] and [`Tg::show_tools`].
    fn set_stream(&self) {
        std::fs::write(
            self.fixture.groups_dir().join("andy/container.json"),
            json!({ "stream": self.stream, "show_tools": self.show_tools }).to_string(),
        )
        .unwrap();
    }

    pub(super) fn db(&self) -> Connection {
        Connection::open(self.fixture.data_dir().join("clawbox.db")).unwrap()
    }

    /// (sender, reason) of every dropped message.
    fn dropped(&self) -> Vec<(String, String)> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT COALESCE(sender_id, ''), reason FROM dropped_messages ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Waits until `n` messages were dropped for `reason`.
    async fn wait_dropped(&self, reason: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let count = self.dropped().iter().filter(|(_, r)| r == reason).count();
            if count >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {n} drops ({reason}); have {:?}\n{}",
                self.dropped(),
                self.fixture.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bot's live messages in `chat` once there are `n`.
    pub(super) async fn bot_messages(&self, chat: i64, n: usize) -> Vec<BotMessage> {
        match self.tg.wait_for_bot_messages(chat, n, WAIT).await {
            Ok(all) => all.into_iter().filter(|m| !m.deleted).collect(),
            Err(e) => panic!("{e}\n{}", self.fixture.logs()),
        }
    }

    /// Waits until the poller has fetched updates twice more (so whatever was pending has been
    /// handed out and handled or not), then a little longer.
    pub(super) async fn settle(&self) {
        let polls = self.tg.calls_to("getUpdates").len();
        self.tg
            .wait_until(WAIT, "two more polls", |f| {
                f.calls_to("getUpdates").len() >= polls + 2
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn mention_sticky_engages_per_topic_until_the_window_ends() {
    let mut t = Tg::new().await;
    t.start_with_agent(-1001, &["--sticky-window", "3"]).await;
    let chat = TgChat::forum(-1001, "Team");
    let at = t.tg.bot_mention();

    t.tg.message(&chat, &owner())
        .topic(10)
        .text("anyone there?")
        .send();
    let m =
        t.tg.message(&chat, &owner())
            .topic(10)
            .text(&format!("{at} hello"))
            .send();
    let replies = t.bot_messages(-1001, 1).await;
    assert_eq!(replies[0].thread_id, Some(10));
    assert_eq!(replies[0].reply_to, Some(m.message_id));
    assert!(replies[0].visible.contains("hello"), "{:?}", replies[0]);

    // Engaged now: a follow-up needs no mention.
    t.tg.message(&chat, &owner())
        .topic(10)
        .text("and a follow-up")
        .send();
    let replies = t.bot_messages(-1001, 2).await;
    assert!(
        replies[1].visible.contains("and a follow-up"),
        "{:?}",
        replies[1]
    );

    // Another topic is another scope, and another session.
    t.tg.message(&chat, &owner())
        .topic(20)
        .text("over here")
        .send();
    t.tg.message(&chat, &owner())
        .topic(20)
        .text(&format!("{at} topic two"))
        .send();
    let replies = t.bot_messages(-1001, 3).await;
    assert_eq!(replies[2].thread_id, Some(20));
    assert!(replies[2].visible.contains("topic two"));
    let threads: Vec<String> = t
        .db()
        .prepare("SELECT thread_id FROM sessions WHERE agent_group_id = 'andy' ORDER BY thread_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(threads, vec!["10", "20"]);

    // Quiet for longer than the window: a mention is needed again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    t.tg.message(&chat, &owner())
        .topic(10)
        .text("still there?")
        .send();
    t.wait_dropped("not engaged", 3).await;
    t.settle().await;
    assert_eq!(t.bot_messages(-1001, 3).await.len(), 3);
}

#[tokio::test]
async fn a_reply_to_the_bot_is_a_mention_and_clear_needs_an_owner() {
    let mut t = Tg::new().await;
    t.create_agent(&[
        "--agent-id",
        "andy",
        "--agent-name",
        "Andy",
        "--telegram-chat-id",
        "-1002",
        "--owner-user-id",
        "telegram:100",
        "--engage-mode",
        "mention",
    ])
    .await;
    // Mike is a member (as an approval would have made him).
    t.db()
        .execute_batch(
            "INSERT INTO users (id, kind, created_at) VALUES ('telegram:200', 'telegram', 'x');
             INSERT INTO user_roles (user_id, agent_group_id, role, granted_at)
                 VALUES ('telegram:200', 'andy', 'member', 'x');",
        )
        .unwrap();
    t.set_stream();
    t.fixture.start().await.unwrap();
    let chat = TgChat::group(-1002, "Team");
    let at = t.tg.bot_mention();

    t.tg.say(&chat, &owner(), &format!("{at} hi"));
    let first = t.bot_messages(-1002, 1).await.remove(0);
    // A reply to the bot, without a mention, engages.
    t.tg.message(&chat, &member())
        .reply_to(first.message_id)
        .text("thanks")
        .send();
    let replies = t.bot_messages(-1002, 2).await;
    assert!(replies[1].visible.contains("thanks"));
    // Without a mention or reply: not engaged (mention mode is not sticky).
    t.tg.say(&chat, &member(), "just chatting");
    t.wait_dropped("not engaged", 1).await;

    // /clear from a member: refused with a notice, as a reply to the command.
    let cmd = t.tg.say(&chat, &member(), "/clear@clawbox_test_bot");
    let replies = t.bot_messages(-1002, 3).await;
    assert_eq!(
        replies[2].visible,
        "Only an owner or admin of this agent can use /clear."
    );
    assert_eq!(replies[2].reply_to, Some(cmd.message_id));
    t.wait_dropped("admin command from non-admin", 1).await;
    // A command for another bot is not ours at all.
    t.tg.say(&chat, &owner(), "/clear@other_bot");
    // From the owner it works.
    t.tg.say(&chat, &owner(), "/clear@clawbox_test_bot");
    let replies = t.bot_messages(-1002, 4).await;
    assert_eq!(replies[3].visible, "Conversation cleared.");
    t.settle().await;
    assert_eq!(t.bot_messages(-1002, 4).await.len(), 4);
}

#[tokio::test]
async fn a_clear_from_a_sender_without_a_role_never_clears_addressed_or_not() {
    let mut t = Tg::new().await;
    t.model
        .summarise_when(agent_runner::compact::SUMMARY_PROMPT);
    // Anyone may talk, and what does not address the agent is kept as context: an unaddressed
    // command from Sam (no role) reaches the mailbox.
    t.start_with_agent(
        -1010,
        &[
            "--engage-mode",
            "mention",
            "--unknown-sender-policy",
            "public",
            "--ignored-messages",
            "accumulate",
        ],
    )
    .await;
    let chat = TgChat::group(-1010, "Team");
    let at = t.tg.bot_mention();
    t.tg.say(&chat, &owner(), &format!("{at} the code is 4711"));
    t.bot_messages(-1010, 1).await;

    // Unaddressed: context, not a command.
    t.tg.say(&chat, &stranger(), "/clear");
    t.tg.say(&chat, &stranger(), "/compact");
    // Addressed: refused with a notice.
    let cmd = t.tg.say(&chat, &stranger(), "/clear@clawbox_test_bot");
    let replies = t.bot_messages(-1010, 2).await;
    assert_eq!(
        replies[1].visible,
        "Only an owner or admin of this agent can use /clear."
    );
    assert_eq!(replies[1].reply_to, Some(cmd.message_id));
    t.tg.say(&chat, &owner(), &format!("{at} what was the code?"));
    let replies = t.bot_messages(-1010, 3).await;
    assert!(
        replies[2].visible.contains("what was the code"),
        "{replies:?}"
    );
    let last = t.model.last_request().unwrap();
    let sent = serde_json::to_string(last.messages()).unwrap();
    assert!(
        sent.contains("the code is 4711"),
        "the conversation was not cleared: {sent}"
    );
    assert!(sent.contains("/clear"), "Sam's text is context: {sent}");
    let summaries = t
        .model
        .requests()
        .iter()
        .filter(|r| {
            r.messages().first().and_then(|m| m["content"].as_str())
                == Some(agent_runner::compact::SUMMARY_PROMPT)
        })
        .count();
    assert_eq!(summaries, 0, "nothing was compacted");

    // The owner's /clear clears.
    t.tg.say(&chat, &owner(), "/clear@clawbox_test_bot");
    let replies = t.bot_messages(-1010, 4).await;
    assert_eq!(replies[3].visible, "Conversation cleared.");
    t.tg.say(&chat, &owner(), &format!("{at} hello again"));
    t.bot_messages(-1010, 5).await;
    let sent = serde_json::to_string(t.model.last_request().unwrap().messages()).unwrap();
    assert!(!sent.contains("4711"), "the owner's /clear cleared: {sent}");

    // The owner's unaddressed /clear is carried out too, when the agent next takes a turn.
    t.tg.say(&chat, &owner(), &format!("{at} the room is 12b"));
    t.bot_messages(-1010, 6).await;
    t.tg.say(&chat, &owner(), "/clear");
    t.tg.say(&chat, &owner(), &format!("{at} and now?"));
    let replies = t.bot_messages(-1010, 8).await;
    assert_eq!(replies[6].visible, "Conversation cleared.", "{replies:?}");
    let sent = serde_json::to_string(t.model.last_request().unwrap().messages()).unwrap();
    assert!(!sent.contains("12b"), "{sent}");
}

#[tokio::test]
async fn compact_needs_an_owner_and_says_what_it_kept() {
    let mut t = Tg::new().await;
    t.model
        .summarise_when(agent_runner::compact::SUMMARY_PROMPT);
    t.create_agent(&[
        "--agent-id",
        "andy",
        "--agent-name",
        "Andy",
        "--telegram-chat-id",
        "-1009",
        "--owner-user-id",
        "telegram:100",
        "--engage-mode",
        "mention",
    ])
    .await;
    t.db()
        .execute_batch(
            "INSERT INTO users (id, kind, created_at) VALUES ('telegram:200', 'telegram', 'x');
             INSERT INTO user_roles (user_id, agent_group_id, role, granted_at)
                 VALUES ('telegram:200', 'andy', 'member', 'x');",
        )
        .unwrap();
    t.set_stream();
    t.fixture.start().await.unwrap();
    let chat = TgChat::group(-1009, "Team");
    let at = t.tg.bot_mention();
    t.tg.say(
        &chat,
        &owner(),
        &format!("{at} remember the launch is on Friday"),
    );
    t.bot_messages(-1009, 1).await;

    // A member may not compact.
    let cmd = t.tg.say(&chat, &member(), "/compact@clawbox_test_bot");
    let replies = t.bot_messages(-1009, 2).await;
    assert_eq!(
        replies[1].visible,
        "Only an owner or admin of this agent can use /compact."
    );
    assert_eq!(replies[1].reply_to, Some(cmd.message_id));
    t.wait_dropped("admin command from non-admin", 1).await;
    // The owner may; the answer says how much was kept.
    t.tg.say(&chat, &owner(), "/compact@clawbox_test_bot");
    let replies = t.bot_messages(-1009, 3).await;
    assert!(
        replies[2]
            .visible
            .starts_with("Compacted the conversation: 2 earlier messages are now one summary"),
        "{}",
        replies[2].visible
    );
    let summaries = t
        .model
        .requests()
        .iter()
        .filter(|r| {
            r.messages().first().and_then(|m| m["content"].as_str())
                == Some(agent_runner::compact::SUMMARY_PROMPT)
        })
        .count();
    assert_eq!(summaries, 1);
    // `clawbox logs` tells the story: what was summarised, the tokens before and after.
    let session: String = t
        .db()
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let out = t
        .fixture
        .command(&["logs", &session])
        .output()
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    let line = logs
        .lines()
        .find(|l| l.contains("compacted "))
        .unwrap_or_else(|| panic!("no compacted line:\n{logs}"));
    assert!(
        line.contains("2 entries summarised, 0 kept,") && line.contains("tokens (/compact)"),
        "{line}"
    );
    let out = t
        .fixture
        .command(&["logs", &session, "--json"])
        .output()
        .await
        .unwrap();
    let compacted: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "compacted")
        .collect();
    assert_eq!(compacted.len(), 1, "{compacted:?}");
    let (before, after) = (
        compacted[0]["tokens_before"].as_u64().unwrap(),
        compacted[0]["tokens_after"].as_u64().unwrap(),
    );
    assert!(before > 0 && after > 0, "{compacted:?}");
}

#[tokio::test]
async fn stop_needs_an_owner_and_ends_a_long_command() {
    let mut t = Tg::new().await;
    let pid_file = t.fixture.root().join("sleep.pid");
    t.model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({
            "command": format!("echo $$ > {}; exec sleep 60", pid_file.display()),
            "timeout_ms": 70000,
        }),
    )]));
    t.create_agent(&[
        "--agent-id",
        "andy",
        "--agent-name",
        "Andy",
        "--telegram-chat-id",
        "-1010",
        "--owner-user-id",
        "telegram:100",
    ])
    .await;
    t.db()
        .execute_batch(
            "INSERT INTO users (id, kind, created_at) VALUES ('telegram:200', 'telegram', 'x');
             INSERT INTO user_roles (user_id, agent_group_id, role, granted_at)
                 VALUES ('telegram:200', 'andy', 'member', 'x');",
        )
        .unwrap();
    // Progress lines off: the test counts the bot's messages.
    t.set_stream();
    t.fixture.start().await.unwrap();
    let chat = TgChat::group(-1010, "Team");
    let at = t.tg.bot_mention();
    t.tg.say(&chat, &owner(), &format!("{at} take your time"));
    let pid = read_pid(&pid_file).await;

    // A member may not stop the owner's turn: the command runs on.
    let cmd = t.tg.say(&chat, &member(), "/stop@clawbox_test_bot");
    let replies = t.bot_messages(-1010, 1).await;
    assert_eq!(
        replies[0].visible,
        "Only an owner or admin of this agent can use /stop."
    );
    assert_eq!(replies[0].reply_to, Some(cmd.message_id));
    t.wait_dropped("admin command from non-admin", 1).await;
    assert!(!gone(pid), "a member's /stop ended the command");

    // The owner may: the command is ended, the turn fails with the notice, the stop is answered.
    let stopped_at = tokio::time::Instant::now();
    t.tg.say(&chat, &owner(), "/stop@clawbox_test_bot");
    let deadline = stopped_at + WAIT;
    while !gone(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sleep {pid} survived /stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "the command was gone {:?} after /stop",
        stopped_at.elapsed()
    );
    let replies = t.bot_messages(-1010, 3).await;
    let texts: Vec<&str> = replies.iter().map(|m| m.visible.as_str()).collect();
    assert!(texts.contains(&"⏹ Stopped Andy's turn."), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("the turn was stopped (/stop)")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn pattern_mode_and_an_invalid_pattern_is_refused_by_create_agent() {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -1003,
        &[
            "--engage-mode",
            "pattern",
            "--engage-pattern",
            r"(?i)^andy\b",
        ],
    )
    .await;
    let out = t
        .fixture
        .command_of(
            Path::new(CREATE_AGENT),
            &[
                "--agent-id",
                "andy",
                "--telegram-chat-id",
                "-1003",
                "--engage-pattern",
                "(unclosed",
            ],
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--engage-pattern") && stderr.contains("regular expression"),
        "{stderr}"
    );

    let chat = TgChat::group(-1003, "Team");
    t.tg.say(&chat, &member(), "hello all");
    t.tg.say(&chat, &owner(), "Andy, what is up?");
    let replies = t.bot_messages(-1003, 1).await;
    assert!(replies[0].visible.contains("what is up"));
    t.settle().await;
    assert_eq!(t.bot_messages(-1003, 1).await.len(), 1);
    // The stored pattern was not touched by the refused run.
    let pattern: String = t
        .db()
        .query_row(
            "SELECT engage_pattern FROM wirings WHERE agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pattern, r"(?i)^andy\b");
}

#[tokio::test]
async fn strict_chats_drop_unknown_senders_and_audit_them() {
    let mut t = Tg::new().await;
    t.start_with_agent(-1004, &[]).await;
    let chat = TgChat::group(-1004, "Team");
    let at = t.tg.bot_mention();
    t.tg.say(&chat, &stranger(), &format!("{at} let me in"));
    t.wait_dropped("unknown sender", 1).await;
    assert!(
        t.dropped()
            .contains(&("telegram:300".into(), "unknown sender".into()))
    );
    // A chat nobody wired is dropped too.
    t.tg.say(
        &TgChat::group(-9999, "Elsewhere"),
        &owner(),
        &format!("{at} hi"),
    );
    t.wait_dropped("unknown chat", 1).await;
    t.settle().await;
    assert!(t.tg.bot_messages(-1004).is_empty());
    assert!(t.tg.bot_messages(-9999).is_empty());
}

#[tokio::test]
async fn request_approval_asks_the_owner_and_replays_on_allow() {
    let mut t = Tg::new().await;
    // The owner is known by username only; the first message binds it to the numeric id.
    t.create_agent(&[
        "--agent-id",
        "andy",
        "--agent-name",
        "Andy",
        "--telegram-chat-id",
        "-1005",
        "--owner-user-id",
        "telegram:@Olga_Owner",
        "--unknown-sender-policy",
        "request_approval",
    ])
    .await;
    t.set_stream();
    t.fixture.start().await.unwrap();
    let chat = TgChat::group(-1005, "Team");
    let at = t.tg.bot_mention();
    t.tg.say(&chat, &owner(), &format!("{at} hello"));
    t.bot_messages(-1005, 1).await;
    let role: String = t
        .db()
        .query_row("SELECT role FROM user_roles WHERE user_id = 'telegram:100' AND agent_group_id = 'andy'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(role, "owner");

    // The owner never opened a private chat with the bot: the card goes to the group.
    t.tg.fail_next(
        "sendMessage",
        Failure::Error(
            403,
            "Forbidden: bot can't initiate conversation with a user".into(),
        ),
    );
    let asked = t.tg.say(&chat, &stranger(), &format!("{at} can I join?"));
    let shown = t.bot_messages(-1005, 3).await;
    let card = shown[1].clone();
    assert!(
        card.visible.contains("Sam") && card.visible.contains("can I join?"),
        "{card:?}"
    );
    // The stranger is told why nothing answers yet, in reply to their message.
    assert!(
        shown[2].visible.contains("Waiting for approval"),
        "{:?}",
        shown[2]
    );
    assert_eq!(shown[2].reply_to, Some(asked.message_id));
    let data = buttons(&card);
    assert_eq!(data.len(), 2, "{card:?}");
    assert!(data.iter().all(|d| d.len() < 64));
    let second =
        t.tg.say(&chat, &stranger(), &format!("{at} second message"));
    t.settle().await;
    assert_eq!(
        t.bot_messages(-1005, 3).await.len(),
        3,
        "one card and one notice per sender"
    );

    // Anyone else pressing gets an alert and nothing changes.
    t.tg.press(&chat, &member(), card.message_id, &data[0]);
    t.tg.wait_until(WAIT, "an alert", |f| {
        f.calls_to("answerCallbackQuery")
            .iter()
            .any(|c| c.params["show_alert"] == true)
    })
    .await
    .unwrap();
    let alert = t.tg.calls_to("answerCallbackQuery").remove(0);
    assert!(
        alert.params["text"]
            .as_str()
            .unwrap()
            .contains("Only an owner or admin of Andy")
    );
    assert!(!buttons(&t.tg.bot_messages(-1005)[1]).is_empty());

    // The owner allows: the card says so, and the held messages reach the agent, in order
    // (one turn or two, depending on how fast they are replayed), and are answered.
    t.tg.press(&chat, &owner(), card.message_id, &data[0]);
    t.tg.wait_until(WAIT, "the answer to the held messages", |f| {
        f.bot_messages(-1005)
            .iter()
            .any(|m| m.reply_to == Some(second.message_id))
    })
    .await
    .unwrap();
    let all = t.tg.bot_messages(-1005);
    assert!(
        all[1].visible.contains("may now talk to Andy") && all[1].visible.contains("Olga"),
        "{:?}",
        all[1]
    );
    assert!(buttons(&all[1]).is_empty());
    let seen: String = t
        .model
        .requests()
        .iter()
        .map(|r| r.messages().last().unwrap()["content"].to_string())
        .collect();
    let (a, b) = (
        seen.find("can I join?").expect("first held message"),
        seen.find("second message").expect("second held message"),
    );
    assert!(a < b, "{seen}");
    // From now on Sam is a member.
    let answered = all.len();
    t.tg.say(&chat, &stranger(), &format!("{at} third"));
    let all = t.bot_messages(-1005, answered + 1).await;
    assert!(all[answered].visible.contains("third"));

    // Deny: the card goes to the owner's private chat this time; later messages are dropped.
    let dan = TgUser::new(400, "Dan", Some("dan_d"));
    t.tg.say(&chat, &dan, &format!("{at} me too"));
    let card = t.bot_messages(100, 1).await.remove(0);
    t.tg.press(
        &TgChat::private(&owner()),
        &owner(),
        card.message_id,
        &buttons(&card)[1],
    );
    t.tg.wait_until(WAIT, "the card updated", |f| {
        f.bot_messages(100)[0].visible.contains("denied by")
    })
    .await
    .unwrap();
    t.tg.say(&chat, &dan, &format!("{at} please?"));
    t.wait_dropped("sender denied by an owner", 1).await;
    t.settle().await;
    assert_eq!(t.tg.bot_messages(100).len(), 1);
    // Dan's waiting notice is the one message more.
    let all = t.tg.bot_messages(-1005);
    assert_eq!(all.len(), answered + 2, "{all:?}");
    assert!(all[answered + 1].visible.contains("Waiting for approval"));
}

/// The log lines of a first contact with `chat`.
fn first_contact_lines(logs: &str, chat: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("clawbox create-agent") && l.contains(chat))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stranger_is_logged_once_with_the_command_that_wires_them() {
    let mut t = Tg::new().await;
    t.start_with_agent(-1006, &[]).await;
    let at = t.tg.bot_mention();
    let elsewhere = TgChat::group(-7777, "Elsewhere");
    t.tg.say(&elsewhere, &member(), &format!("{at} hi"));
    t.tg.say(&elsewhere, &member(), &format!("{at} hello?"));
    // A stranger in the wired (strict) chat, twice.
    let team = TgChat::group(-1006, "Team");
    t.tg.say(&team, &stranger(), &format!("{at} let me in"));
    t.tg.say(&team, &stranger(), &format!("{at} please"));
    t.wait_dropped("unknown chat", 2).await;
    t.wait_dropped("unknown sender", 2).await;
    let logs = t.fixture.logs();
    let lines = first_contact_lines(&logs, "telegram:-7777");
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(
        lines[0].contains(
            "clawbox create-agent --agent-id default --telegram-chat-id -7777 --owner-user-id \
             telegram:200"
        ),
        "{}",
        lines[0]
    );
    let lines = first_contact_lines(&logs, "telegram:-1006");
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains(
            "clawbox create-agent --agent-id andy --telegram-chat-id -1006 \
             --unknown-sender-policy request_approval"
        ),
        "{}",
        lines[0]
    );

    // After a restart the audit still knows them: no second line.
    t.fixture.stop().await.unwrap();
    t.fixture.start().await.unwrap();
    t.tg.say(&elsewhere, &member(), &format!("{at} anyone?"));
    t.wait_dropped("unknown chat", 3).await;
    let logs = t.fixture.logs();
    assert_eq!(
        first_contact_lines(&logs, "telegram:-7777").len(),
        1,
        "{logs}"
    );

    // `clawbox dropped` prints each command once.
    let out = t.fixture.command(&["dropped"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for command in [
        "telegram:-7777: clawbox create-agent --agent-id default --telegram-chat-id -7777 \
         --owner-user-id telegram:200",
        "telegram:-1006: clawbox create-agent --agent-id andy --telegram-chat-id -1006 \
         --unknown-sender-policy request_approval",
    ] {
        assert_eq!(text.matches(command).count(), 1, "{command}\n{text}");
    }
    t.settle().await;
    assert!(t.tg.bot_messages(-7777).is_empty());
    assert!(t.tg.bot_messages(-1006).is_empty());
}

#[tokio::test]
async fn a_new_group_gets_a_public_hint_only_when_announcing_is_on() {
    for announce in [false, true] {
        let mut t = Tg::new().await;
        if announce {
            t.fixture.set("TELEGRAM_ANNOUNCE_UNKNOWN", "true");
        }
        t.fixture.start().await.unwrap();
        let group = TgChat::group(-4242, "New group");
        t.tg.add_bot_to(&group, &owner());
        t.wait_dropped("bot added to an unknown chat", 1).await;
        // Added again (removed and re-added): recorded, but neither logged nor said again.
        t.tg.add_bot_to(&group, &owner());
        t.wait_dropped("bot added to an unknown chat", 2).await;
        t.settle().await;
        let logs = t.fixture.logs();
        let lines = first_contact_lines(&logs, "telegram:-4242");
        assert_eq!(lines.len(), 1, "{logs}");
        assert!(lines[0].contains("added the bot"), "{}", lines[0]);
        let said = t.tg.bot_messages(-4242);
        if announce {
            assert_eq!(said.len(), 1, "{said:?}");
            assert!(
                said[0]
                    .visible
                    .contains("clawbox create-agent --agent-id default --telegram-chat-id -4242"),
                "{:?}",
                said[0]
            );
            assert!(!said[0].visible.contains("telegram:100"), "{:?}", said[0]);
        } else {
            assert!(said.is_empty(), "{said:?}");
        }
    }
}

#[tokio::test]
async fn a_long_answer_arrives_in_ordered_parts_with_html_that_telegram_accepts() {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -1006,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let mut answer = String::from(
        "Math: a < b & c > d, and **bold** too.\n\n```rust\nfn main() { if a < b && c > d {} }\n```\n\n",
    );
    for i in 0..25 {
        answer.push_str(&format!("Paragraph {i}: "));
        for j in 0..70 {
            answer.push_str(&format!("w{i}_{j} "));
        }
        answer.push_str("\n\n");
    }
    assert!(answer.len() > 10_000);
    t.model.push(Reply::text(answer));
    let ask =
        t.tg.say(&TgChat::group(-1006, "Team"), &owner(), "write a lot");
    t.settle().await;
    let parts = t.bot_messages(-1006, 3).await;
    assert!(parts.len() >= 3, "{}", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert!(
            testkit::fake_telegram::utf16_len(&p.visible) <= 4096,
            "part {i}"
        );
        assert_eq!(p.parse_mode.as_deref(), Some("HTML"));
        assert_eq!(p.reply_to, (i == 0).then_some(ask.message_id));
    }
    assert!(
        parts[0].raw.contains("a &lt; b &amp; c &gt; d") && parts[0].raw.contains("<b>bold</b>")
    );
    assert!(parts[0].raw.contains("<pre><code class=\"language-rust\">fn main() { if a &lt; b &amp;&amp; c &gt; d {} }</code></pre>"));
    // Every word, once, in order.
    let all: Vec<String> = parts
        .iter()
        .flat_map(|p| {
            p.visible
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|w| w.starts_with('w') && w.contains('_'))
        .collect();
    let want: Vec<String> = (0..25)
        .flat_map(|i| (0..70).map(move |j| format!("w{i}_{j}")))
        .collect();
    assert_eq!(all, want);
}

#[tokio::test]
async fn rate_limits_and_failures_are_retried_without_loss_or_duplicates() {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -1008,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let chat = TgChat::group(-1008, "Team");

    // A 429 on the reply: waited out, sent once.
    t.tg.fail_next("sendMessage", Failure::RetryAfter(1));
    t.tg.say(&chat, &owner(), "first");
    let replies = t.bot_messages(-1008, 1).await;
    assert!(replies[0].visible.contains("first"));
    let sends = t.tg.calls_to("sendMessage");
    assert_eq!(
        sends.iter().map(|c| c.ok).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert!(sends[1].at - sends[0].at >= Duration::from_millis(950));

    // A two-part answer whose second part fails twice (Telegram's 500s): the first part is
    // not sent again when the delivery is retried.
    let long = format!("{}\n\n{}", "a ".repeat(1500), "b ".repeat(1500));
    t.model.push(Reply::text(long));
    t.tg.pass_next("sendMessage");
    t.tg.fail_next(
        "sendMessage",
        Failure::Error(500, "Internal Server Error".into()),
    );
    t.tg.fail_next("sendMessage", Failure::Garbage(502));
    t.tg.say(&chat, &owner(), "second");
    let replies = t.bot_messages(-1008, 3).await;
    t.settle().await;
    let replies_now = t.bot_messages(-1008, 3).await;
    assert_eq!(replies_now.len(), 3, "{replies:#?}");
    assert!(replies[1].visible.starts_with("a a") && replies[2].visible.starts_with("b b"));
}

#[tokio::test]
async fn files_arrive_in_the_inbound_folder_and_files_the_agent_sends_arrive_as_documents() {
    let mut t = Tg::new().await;
    t.fixture.set("TELEGRAM_MAX_FILE_MB", "1");
    t.start_with_agent(
        -1007,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let chat = TgChat::group(-1007, "Team");

    // A document the agent reads with its file tools.
    t.model.push(Reply::tool_call(
        "read_file",
        json!({ "path": "inbound/msg-_1007-101/notes.txt" }),
    ));
    t.model.push(Reply::text("read it"));
    let doc =
        t.tg.message(&chat, &owner())
            .document("notes.txt", "text/plain", b"the secret word is fennel")
            .caption("read this")
            .send();
    assert_eq!(doc.message_id, 101);
    t.bot_messages(-1007, 1).await;
    let requests = t.model.requests();
    let prompt = requests[0].messages().last().unwrap()["content"].to_string();
    assert!(
        prompt.contains(r#"<file kind=\"document\" name=\"notes.txt\" mime=\"text/plain\" path=\"inbound/msg-_1007-101/notes.txt\" bytes=\"25\"/>"#),
        "{prompt}"
    );
    assert!(
        tool_results(&requests[1])[0].contains("the secret word is fennel"),
        "{:?}",
        tool_results(&requests[1])
    );

    // A photo is stored byte for byte; one over TELEGRAM_MAX_FILE_MB is described, not stored.
    let photo: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let sent =
        t.tg.message(&chat, &owner())
            .photo(&photo)
            .caption("look")
            .send();
    t.bot_messages(-1007, 2).await;
    let big = vec![b'x'; 1_500_000];
    let too_big =
        t.tg.message(&chat, &owner())
            .document("big.bin", "application/octet-stream", &big)
            .send();
    t.bot_messages(-1007, 3).await;
    let session: String = t
        .db()
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let files = t
        .fixture
        .data_dir()
        .join("sessions/andy")
        .join(&session)
        .join("inbound/files");
    let dir = |id: i64| files.join(format!("msg-_1007-{id}"));
    assert_eq!(
        std::fs::read(dir(sent.message_id).join("photo.jpg")).unwrap(),
        photo
    );
    assert!(!dir(too_big.message_id).join("big.bin").exists());
    let prompt = t
        .model
        .requests()
        .last()
        .unwrap()
        .messages()
        .last()
        .unwrap()["content"]
        .to_string();
    assert!(
        prompt.contains(r#"skipped=\"larger than the 1 MB limit\""#),
        "{prompt}"
    );

    // A file the agent writes and sends arrives as a document, with the text as caption.
    // (Two steps: calls of one step run concurrently.)
    t.model.push(Reply::tool_call(
        "write_file",
        json!({ "path": "report.txt", "content": "quarterly numbers" }),
    ));
    t.model.push(Reply::tool_call(
        "send_file",
        json!({ "path": "report.txt", "text": "Here is *the* report" }),
    ));
    t.model.push(Reply::text("sent it"));
    t.tg.say(&chat, &owner(), "send me the report");
    let all = t.bot_messages(-1007, 5).await;
    let doc = all.iter().find(|m| m.file.is_some()).expect("a document");
    assert_eq!(
        doc.file,
        Some(("report.txt".to_owned(), b"quarterly numbers".to_vec()))
    );
    assert_eq!(doc.raw, "Here is <i>the</i> report");
    assert!(all.last().unwrap().visible.contains("sent it"));
}

#[tokio::test]
async fn the_same_update_twice_gets_one_reply_and_edits_change_nothing() {
    let mut t = Tg::new().await;
    t.start_with_agent(100, &[]).await;
    // A private chat engages without a mention.
    let private = TgChat::private(&owner());
    let hello = t.tg.say(&private, &owner(), "hello there");
    t.bot_messages(100, 1).await;
    t.tg.redeliver(hello.update_id);
    t.tg.edit(&private, &owner(), hello.message_id, "hello (edited)");
    t.settle().await;
    assert_eq!(t.bot_messages(100, 1).await.len(), 1);
    let journalled: i64 = t
        .db()
        .query_row(
            "SELECT COUNT(*) FROM telegram_updates WHERE update_id = ?1",
            [hello.update_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(journalled, 1);
    // The adapter carries on.
    t.tg.say(&private, &owner(), "still working?");
    let replies = t.bot_messages(100, 2).await;
    assert!(replies[1].visible.contains("still working?"));
    assert_eq!(t.model.request_count(), 2);
}

#[tokio::test]
async fn typing_edits_reactions_status_and_a_plain_text_fallback() {
    let mut t = Tg::new().await;
    t.start_with_agent(100, &[]).await;
    let private = TgChat::private(&owner());
    // The agent's message 3 is edited, the user's message 2 gets a reaction.
    t.model.push(Reply::tool_call(
        "send_message",
        json!({ "text": "working on it" }),
    ));
    t.model.push(Reply::ToolCalls(vec![
        ToolCall::new(
            "edit_message",
            json!({ "message_id": 3, "text": "done **working**" }),
        ),
        ToolCall::new("add_reaction", json!({ "message_id": 2, "emoji": "👍" })),
    ]));
    t.model
        .push(Reply::text("final answer").after(Duration::from_millis(1500)));
    let ask = t.tg.say(&private, &owner(), "do the thing");
    let replies = t.bot_messages(100, 2).await;
    assert_eq!(replies[0].visible, "done working");
    assert_eq!(replies[0].edits, vec!["working on it".to_owned()]);
    assert_eq!(replies[0].raw, "done <b>working</b>");
    assert_eq!(replies[1].visible, "final answer");
    let reaction = t.tg.calls_to("setMessageReaction").remove(0);
    assert_eq!(reaction.params["message_id"], ask.message_id);
    assert_eq!(reaction.params["reaction"][0]["emoji"], "👍");
    let typing = t.tg.calls_to("sendChatAction");
    assert!(
        !typing.is_empty()
            && typing
                .iter()
                .all(|c| c.params["action"] == "typing" && c.chat_id() == Some(100))
    );

    // /status is answered by the host itself.
    t.tg.say(&private, &owner(), "/status");
    let replies = t.bot_messages(100, 3).await;
    assert!(
        replies[2].visible.starts_with("Andy is idle"),
        "{:?}",
        replies[2]
    );

    // Telegram refuses the entities: the text goes out plain rather than not at all.
    t.tg.fail_next(
        "sendMessage",
        Failure::Error(
            400,
            "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0"
                .into(),
        ),
    );
    t.model.push(Reply::text("some **bold** words"));
    t.tg.say(&private, &owner(), "once more");
    let replies = t.bot_messages(100, 4).await;
    assert_eq!(replies[3].visible, "some bold words");
    assert_eq!(replies[3].parse_mode, None);
}

/// Entities whose offsets lie outside the text (or inside a surrogate pair) are what a
/// hostile client can send; teloxide's entity parsing panics on them. The host validates them
/// first: the message is handled without them, the next update is answered, and a restart does
/// not handle the poison update again.
#[tokio::test]
async fn out_of_range_entities_are_ignored_and_the_host_goes_on() {
    let mut t = Tg::new().await;
    t.start_with_agent(100, &[]).await;
    let private = TgChat::private(&owner());
    // One at a time: messages arriving together would be answered in one turn.
    t.tg.message(&private, &owner())
        .text("hi")
        .raw_entity(json!({ "type": "mention", "offset": 50, "length": 9 }))
        .send();
    t.bot_messages(100, 1).await;
    t.tg.message(&private, &owner())
        .text("😀 ok")
        .raw_entity(json!({ "type": "bold", "offset": 1, "length": 2 }))
        .send();
    t.bot_messages(100, 2).await;
    t.tg.message(&private, &owner())
        .text("@x")
        .raw_entity(json!({ "type": "bot_command", "offset": 0, "length": 4000000000u64 }))
        .send();
    let replies = t.bot_messages(100, 3).await;
    assert!(replies[0].visible.contains("hi"), "{:?}", replies[0]);
    t.tg.say(&private, &owner(), "and now?");
    let replies = t.bot_messages(100, 4).await;
    assert!(replies[3].visible.contains("and now?"), "{:?}", replies[3]);
    assert_eq!(t.model.request_count(), 4);
    // Nothing is handled again after a restart.
    t.fixture.stop().await.unwrap();
    t.fixture.start().await.unwrap();
    t.tg.say(&private, &owner(), "after the restart");
    let replies = t.bot_messages(100, 5).await;
    assert!(replies[4].visible.contains("after the restart"));
    t.settle().await;
    assert_eq!(t.model.request_count(), 5);
}

/// The runner pid of andy's session, once it differs from `not`.
async fn andy_runner_pid(t: &Tg, not: Option<u32>) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let session: Option<String> = t
            .db()
            .query_row(
                "SELECT id FROM sessions WHERE agent_group_id = 'andy'",
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(session) = session {
            let db = t
                .fixture
                .data_dir()
                .join("sessions/andy")
                .join(&session)
                .join("outbound/outbound.db");
            if let Ok(reader) = mailbox::OutboundReader::open(&db)
                && let Ok(Some(state)) = reader.runner_state()
                && Some(state.pid) != not
            {
                return state.pid;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no runner pid");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The texts (`text` parameter) of the calls to `method` in `chat`.
fn texts_of(t: &Tg, method: &str, chat: i64) -> Vec<String> {
    t.tg.calls_to(method)
        .iter()
        .filter(|c| c.ok && c.params["chat_id"] == json!(chat))
        .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_streamed_reply_is_one_message_edited_as_it_grows() {
    let mut t = Tg::new().await;
    t.stream = true;
    t.start_with_agent(
        -1020,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let gate = testkit::fake_model::Gate::new();
    let answer =
        "Streaming **works**: the words of this answer come in ten pieces, half a second apart.";
    // Eight pieces over 3.5 s (more than two edit intervals), then held until the test has
    // seen the draft edited.
    t.model.push(Reply::Streamed {
        text: answer.to_owned(),
        pieces: 10,
        every: Duration::from_millis(500),
        hold: Some((8, gate.clone())),
    });
    let ask =
        t.tg.say(&TgChat::group(-1020, "Team"), &owner(), "stream please");
    t.tg.wait_until(WAIT, "an edit of the draft", |f| {
        f.calls_to("editMessageText").iter().any(|c| c.ok)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    gate.open();
    t.tg.wait_until(WAIT, "the final edit", |f| {
        f.calls_to("editMessageText")
            .iter()
            .any(|c| c.params["parse_mode"] == "HTML")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    t.settle().await;

    // One message: sent once as a plain draft, quoting the question as the reply does.
    let sends = texts_of(&t, "sendMessage", -1020);
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert!(answer.starts_with(&sends[0]), "{sends:?}");
    let messages = t.bot_messages(-1020, 1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].reply_to, Some(ask.message_id));
    // Edited as it grew, then into the reply with its formatting.
    let edits = texts_of(&t, "editMessageText", -1020);
    let (last, drafts) = edits.split_last().unwrap();
    assert!(!drafts.is_empty(), "{edits:?}");
    let mut shown = sends[0].clone();
    for draft in drafts {
        assert!(
            draft.starts_with(&shown) && draft.len() > shown.len(),
            "{edits:?}"
        );
        assert!(answer.starts_with(draft.as_str()), "{edits:?}");
        shown.clone_from(draft);
    }
    assert_eq!(
        last,
        "Streaming <b>works</b>: the words of this answer come in ten pieces, half a second apart."
    );
    assert_eq!(messages[0].raw, *last);
    assert_eq!(messages[0].parse_mode.as_deref(), Some("HTML"));
    // Far under Telegram's limits: at least the edit interval between two edits.
    let calls: Vec<tokio::time::Instant> =
        t.tg.calls()
            .iter()
            .filter(|c| c.ok && matches!(c.method.as_str(), "sendMessage" | "editMessageText"))
            .map(|c| c.at)
            .collect();
    for pair in calls[..calls.len() - 1].windows(2) {
        assert!(pair[1] - pair[0] >= host::channels::telegram::DRAFT_EDIT_EVERY);
    }
}

/// A model step that writes "Let me sleep." and then calls run_bash `sleep 2`, streamed.
fn sleep_step() -> Reply {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    Reply::Sse(vec![
        chunk(
            json!({ "role": "assistant", "content": "Let me sleep." }),
            None,
        ),
        chunk(
            json!({ "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
                "function": { "name": "run_bash", "arguments": "{\"command\": \"sleep 2\"}" } }] }),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ])
}

/// Every text the bot sent or edited in `chat` (sends and edits, in order).
fn all_texts(t: &Tg, chat: i64) -> Vec<String> {
    t.tg.calls()
        .iter()
        .filter(|c| {
            c.ok && c.params["chat_id"] == json!(chat)
                && matches!(c.method.as_str(), "sendMessage" | "editMessageText")
        })
        .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_running_tool_shows_as_the_drafts_italic_footer() {
    let mut t = Tg::new().await;
    t.stream = true;
    t.show_tools = true;
    t.start_with_agent(
        -1024,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let gate = testkit::fake_model::Gate::new();
    t.model.push(sleep_step());
    // The answer waits until the test has seen the footer.
    t.model.push(Reply::held("Slept **well**.", 2, 0, &gate));
    t.tg.say(&TgChat::group(-1024, "Team"), &owner(), "sleep a bit");
    let line = "running `sleep 2`…";
    let footed = format!("Let me sleep.\n\n{line}");
    t.tg.wait_until(WAIT, "the draft with its footer", |f| {
        f.calls()
            .iter()
            .any(|c| c.ok && c.params["text"] == json!(footed))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    // The footer, and only the footer, is italic (offsets in UTF-16 units).
    let call =
        t.tg.calls()
            .into_iter()
            .find(|c| c.ok && c.params["text"] == json!(footed))
            .unwrap();
    assert_eq!(
        call.params["entities"],
        json!([{ "type": "italic", "offset": 15, "length": line.encode_utf16().count() }])
    );
    let shown = t.bot_messages(-1024, 1).await;
    assert_eq!(shown[0].visible, footed);
    assert_eq!(shown[0].entities.len(), 1, "{shown:#?}");

    gate.open();
    t.tg.wait_until(WAIT, "the reply", |f| {
        f.bot_messages(-1024)
            .iter()
            .any(|m| m.parse_mode.as_deref() == Some("HTML"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    t.settle().await;
    // One message, the draft edited into the reply: no footer, no entities left.
    let messages = t.bot_messages(-1024, 1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].raw, "Slept <b>well</b>.");
    assert_eq!(messages[0].visible, "Slept well.");
    assert!(messages[0].entities.is_empty(), "{messages:#?}");
    assert!(messages[0].edits.contains(&footed), "{messages:#?}");
    let texts = all_texts(&t, -1024);
    assert_eq!(texts.last().map(String::as_str), Some("Slept <b>well</b>."));
}

#[tokio::test]
async fn show_tools_false_keeps_progress_lines_out_of_telegram() {
    let mut t = Tg::new().await;
    t.stream = true;
    t.show_tools = false;
    t.start_with_agent(
        -1025,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let gate = testkit::fake_model::Gate::new();
    t.model.push(sleep_step());
    t.model.push(Reply::held("Slept **well**.", 2, 0, &gate));
    t.tg.say(&TgChat::group(-1025, "Team"), &owner(), "sleep a bit");
    // The call has ended and the answer is held: whatever the draft showed meanwhile is in.
    t.model.wait_for_requests(2, WAIT).await.unwrap();
    t.settle().await;
    gate.open();
    t.tg.wait_until(WAIT, "the reply", |f| {
        f.bot_messages(-1025)
            .iter()
            .any(|m| m.parse_mode.as_deref() == Some("HTML"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    t.settle().await;
    let texts = all_texts(&t, -1025);
    assert!(
        texts
            .iter()
            .all(|t| !t.contains("running") && !t.contains("sleep 2")),
        "{texts:?}"
    );
    // The draft itself was shown, and became the reply.
    assert_eq!(texts.first().map(String::as_str), Some("Let me sleep."));
    let messages = t.bot_messages(-1025, 1).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].visible, "Slept well.");
    assert!(
        t.tg.calls()
            .iter()
            .all(|c| c.params.get("entities").is_none())
    );
}

#[tokio::test]
async fn a_runner_killed_mid_stream_answers_once() {
    let mut t = Tg::new().await;
    t.stream = true;
    t.start_with_agent(
        -1021,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let gate = testkit::fake_model::Gate::new();
    let answer = "The whole answer, written twice but delivered once.";
    t.model.push(Reply::held(answer, 4, 2, &gate));
    t.model.push(Reply::text(answer));
    t.tg.say(&TgChat::group(-1021, "Team"), &owner(), "answer me");
    // The draft is in the chat; the runner dies in the middle of writing.
    let drafts = t.bot_messages(-1021, 1).await;
    assert!(answer.starts_with(&drafts[0].visible), "{drafts:#?}");
    let pid = andy_runner_pid(&t, None).await;
    signal(pid, libc::SIGKILL);

    // The host re-queues the claim; the retried turn answers.
    t.tg.wait_until(WAIT, "the final reply", |f| {
        f.bot_messages(-1021)
            .iter()
            .any(|m| !m.deleted && m.visible == answer)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    t.settle().await;
    gate.open();
    t.settle().await;
    let live: Vec<BotMessage> =
        t.tg.bot_messages(-1021)
            .into_iter()
            .filter(|m| !m.deleted)
            .collect();
    // One final reply, and no second copy of it: the dead runner's draft was deleted, or
    // edited into the reply.
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].visible, answer);
    assert_eq!(t.model.request_count(), 2);
}

#[tokio::test]
async fn a_draft_whose_turn_ends_without_a_reply_is_removed() {
    let mut t = Tg::new().await;
    t.stream = true;
    t.start_with_agent(
        -1023,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    let gate = testkit::fake_model::Gate::new();
    t.model
        .push(Reply::held("A first half that never ends.", 4, 2, &gate));
    t.model
        .push(Reply::Status(400, "the model refuses this one".into()));
    t.tg.say(&TgChat::group(-1023, "Team"), &owner(), "try this");
    let drafts = t.bot_messages(-1023, 1).await;
    let draft = drafts[0].message_id;
    // The runner dies mid-stream; the retried turn fails: no reply will take the draft over.
    signal(andy_runner_pid(&t, None).await, libc::SIGKILL);
    t.tg.wait_until(WAIT, "the draft deleted", |f| {
        f.bot_messages(-1023)
            .iter()
            .any(|m| m.message_id == draft && m.deleted)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", t.fixture.logs()));
    gate.open();
    // The sender is told the turn failed, as without streaming.
    let live = t.bot_messages(-1023, 1).await;
    assert!(live.iter().all(|m| m.message_id != draft), "{live:#?}");
    assert!(
        live.iter()
            .any(|m| m.visible.contains("the model refuses this one")),
        "{live:#?}"
    );
}

#[tokio::test]
async fn stream_false_sends_the_reply_whole() {
    let mut t = Tg::new().await;
    t.start_with_agent(
        -1022,
        &["--engage-mode", "pattern", "--engage-pattern", "."],
    )
    .await;
    // `Tg` wrote container.json with "stream": false.
    t.model.push(Reply::slow(
        "Whole, not streamed.",
        4,
        Duration::from_millis(400),
    ));
    t.tg.say(&TgChat::group(-1022, "Team"), &owner(), "hi");
    let replies = t.bot_messages(-1022, 1).await;
    t.settle().await;
    assert_eq!(replies[0].visible, "Whole, not streamed.");
    assert_eq!(texts_of(&t, "sendMessage", -1022).len(), 1);
    assert!(texts_of(&t, "editMessageText", -1022).is_empty());
    assert_eq!(t.model.last_request().unwrap().body["stream"], false);
}

/// The pairing code in `clawbox pair`'s output (`ABCD-EFGH`).
fn pairing_code(out: &str) -> String {
    out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| {
            w.len() == 9
                && w.as_bytes()[4] == b'-'
                && w.chars()
                    .all(|c| c == '-' || c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(|| panic!("no pairing code in {out:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_pairing_code_makes_its_sender_the_owner_once() {
    let mut t = Tg::new().await;
    t.start_with_agent(-1001, &[]).await;
    let out = t
        .fixture
        .command(&["pair", "--agent-id", "andy"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = pairing_code(&String::from_utf8_lossy(&out.stdout));

    // A wrong code is refused, and nothing is wired.
    let sam = stranger();
    let private = TgChat::private(&sam);
    t.tg.say(&private, &sam, "/start ABCD-EFGH");
    let refused = t.bot_messages(300, 1).await;
    assert!(refused[0].visible.contains("not valid"), "{refused:?}");

    // The right one (typed in lower case, without the dash) pairs: owner, chat wired.
    t.tg.say(
        &private,
        &sam,
        &format!("/start {}", code.replace('-', "").to_lowercase()),
    );
    let paired = t.bot_messages(300, 2).await;
    assert!(paired[1].visible.contains("Paired"), "{paired:?}");
    let role: String = t
        .db()
        .query_row(
            "SELECT role FROM user_roles WHERE user_id = 'telegram:300' AND agent_group_id = 'andy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(role, "owner");

    // The paired chat talks to the agent; the model saw no code.
    t.model.push(Reply::text("hello Sam"));
    t.tg.say(&private, &sam, "hi there");
    let replies = t.bot_messages(300, 3).await;
    assert!(replies[2].visible.contains("hello Sam"), "{replies:?}");
    assert_eq!(t.model.request_count(), 1);

    // A spent code is refused like a wrong one.
    let mike = member();
    let other = TgChat::private(&mike);
    t.tg.say(&other, &mike, &format!("/start {code}"));
    let again = t.bot_messages(200, 1).await;
    assert!(again[0].visible.contains("not valid"), "{again:?}");
    let roles: i64 = t
        .db()
        .query_row(
            "SELECT COUNT(*) FROM user_roles WHERE user_id = 'telegram:200'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(roles, 0);
}
