//! Caps on what sessions use at once, on the process runtime: `MAX_CONCURRENT_CONTAINERS` holds
//! for runner processes as it does for containers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use testkit::Reply;
use testkit::fake_telegram::TgChat;
use testkit::procs::processes;

use super::support::*;
use super::telegram::{Tg, owner};

const SLOT_TAKEN: &str = "every container slot is taken";

/// Live `agent-runner` processes of the host under `root`.
fn runners_of(root: &[u8]) -> usize {
    processes()
        .iter()
        .filter(|p| {
            p.args()
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"agent-runner"))
                && p.environ.windows(root.len()).any(|w| w == root)
        })
        .count()
}

/// Cap 2, five conversations with work, asked one after the other: never more than two runner
/// processes alive (sampled from `/proc` all along), each later conversation waits for a slot
/// in turn, and all five are answered, the last one asked last.
#[tokio::test]
async fn the_process_runtime_runs_at_most_the_cap_of_runners() {
    let mut t = Tg::new().await;
    t.fixture.set("MAX_CONCURRENT_CONTAINERS", "2");
    let pattern = ["--engage-mode", "pattern", "--engage-pattern", "."];
    let chats: Vec<i64> = (1..=5).map(|i| -1040 - i).collect();
    for chat in &chats[1..] {
        let chat = chat.to_string();
        t.create_agent(
            &[
                &["--agent-id", "andy", "--telegram-chat-id", &chat][..],
                &pattern[..],
            ]
            .concat(),
        )
        .await;
    }
    t.start_with_agent(chats[0], &pattern).await;
    // Each turn takes a while, so the conversations overlap.
    t.model
        .set_default(Reply::Echo.after(Duration::from_millis(1500)));

    let root = t.fixture.root().as_os_str().as_encoded_bytes().to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, most) = (Arc::clone(&stop), Arc::clone(&most));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                most.fetch_max(runners_of(&root), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let waits = |t: &Tg| t.fixture.logs().matches(SLOT_TAKEN).count();
    for (i, chat) in chats.iter().enumerate() {
        t.tg.say(&TgChat::group(*chat, "Team"), &owner(), &format!("m{i}"));
        // The first two get a slot and reach the model; each later one waits for a slot.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !(if i < 2 {
            t.model.request_count() > i
        } else {
            waits(&t) > i - 2
        }) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "m{i} neither started nor waited\n{}",
                t.fixture.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (i, chat) in chats.iter().enumerate() {
        let replies = t.bot_messages(*chat, 1).await;
        assert!(replies[0].visible.contains(&format!("m{i}")), "{replies:?}");
    }
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} runners alive at once");
    assert!(most >= 1, "the sampler saw no runner at all");

    // The model saw the first two first and the last one last.
    let asked: Vec<String> = t
        .model
        .requests()
        .iter()
        .map(|r| {
            let last_user = r
                .messages()
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(|m| m["content"].to_string())
                .unwrap_or_default();
            (0..5)
                .map(|i| format!("m{i}"))
                .find(|m| last_user.contains(m.as_str()))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(asked.len(), 5, "{asked:?}");
    let mut first_two = asked[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, vec!["m0", "m1"], "{asked:?}");
    assert_eq!(asked[4], "m4", "{asked:?}");
    assert_eq!(waits(&t), 3);
}
