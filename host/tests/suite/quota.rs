//! The per-session disk quota (`SESSION_DISK_MB`) against an agent that fills its workspace
//! with its own shell: the runner is stopped, the chat told, the session refuses to start again
//! until files are deleted, and another session (a second agent on the same chat) keeps
//! answering throughout. The docker runtime runs the same attack in docker.rs.

use std::path::PathBuf;
use std::time::Duration;

use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use serde_json::json;
use testkit::{FakeModel, HostFixture, Reply, ToolCall};

use super::support::*;

/// The quota the attacks run under, in MB.
pub const QUOTA_MB: u64 = 20;

const NOTICE: &str = "over its SESSION_DISK_MB quota (20 MB): delete files or raise the quota";

/// Bytes allocated on disk under `dir` (what `du` counts), each inode once.
pub fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if seen.insert(meta.ino()) {
                total += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

fn is_quota_failure(e: &Event) -> bool {
    matches!(e, Event::Chat(ChatEvent::Done { status: InboundStatus::Failed, error: Some(err), .. })
        if err.contains(NOTICE))
}

async fn reply_seen(client: &mut Client, want: &str) {
    let is_it = |e: &Event| matches!(e, Event::Chat(ChatEvent::Reply { text, .. }) if text == want);
    if !client.seen.iter().any(is_it) {
        client.wait_for(is_it).await.unwrap();
    }
}

/// The attack, up to the moment the host reacted: a second agent (`helper`) on the terminal
/// chat, then the default agent's shell writes 100 MiB into its workspace (the file-size limit
/// stops it at the room left), one more small file, and sleeps for `marker` seconds (a number
/// only this attack's `sleep` carries, to find it among the machine's processes). Returns the
/// client and the default agent's session once the chat was told and the helper answered.
pub async fn fill_the_disk(
    model: &FakeModel,
    fixture: &mut HostFixture,
    marker: &str,
) -> (Client, String) {
    fixture.set("SESSION_DISK_MB", QUOTA_MB.to_string());
    let created = fixture
        .command_of(
            std::path::Path::new(env!("CARGO_BIN_EXE_create-agent")),
            &["--agent-id", "helper", "--cli", "--model", "helper-model"],
        )
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    fixture.start().await.unwrap();
    model.push_for(
        "fake-model",
        Reply::ToolCalls(vec![ToolCall::new(
            "run_bash",
            json!({"command": format!(
                "head -c 104857600 /dev/zero > fill.bin; echo more > more.txt; sleep {marker}"
            )}),
        )]),
    );
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, _seq) = client.send("fill it").await.unwrap();
    client
        .wait_for(is_quota_failure)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fixture.logs()));
    // The other session answered meanwhile.
    reply_seen(&mut client, "echo: fill it").await;
    (client, session)
}

/// After the runner was stopped: what the attack wrote stayed within the quota (printed, for
/// the record), a new message is refused with the notice while the helper answers it, and
/// once the file is deleted the session answers again. Returns the bytes the session holds.
pub async fn refused_until_cleaned(
    mut client: Client,
    fixture: &mut HostFixture,
    session: &str,
) -> u64 {
    let dir = session_dir(fixture, session);
    let roots: Vec<PathBuf> = vec![dir.join("workspace"), dir.join("outbound")];
    let held: u64 = roots.iter().map(|r| allocated(r)).sum();
    let fill = std::fs::metadata(dir.join("workspace/fill.bin"))
        .unwrap()
        .len();
    println!(
        "disk-fill attack under a {QUOTA_MB} MB quota: fill.bin {fill} bytes, the session holds \
         {held} bytes ({:.2}% of the quota)",
        held as f64 * 100.0 / (QUOTA_MB << 20) as f64
    );
    let quota = QUOTA_MB << 20;
    assert!(fill <= quota, "one file outgrew the quota: {fill}");
    // The target is the quota + 1 % (measured: 100.6-100.8 %); 2 % leaves room for the
    // runner's own mailbox writes.
    assert!(held <= quota + quota / 50, "{held} bytes held");
    // Still over the quota: refused, with the notice; the helper answers the same message.
    let before = client.seen.iter().filter(|e| is_quota_failure(e)).count();
    let (_, again) = client.send("and now?").await.unwrap();
    let (status, error) = client.done(again).await.unwrap();
    assert_eq!(status, InboundStatus::Failed);
    assert!(error.unwrap_or_default().contains(NOTICE));
    assert_eq!(
        client.seen.iter().filter(|e| is_quota_failure(e)).count(),
        before + 1
    );
    reply_seen(&mut client, "echo: and now?").await;

    std::fs::remove_file(dir.join("workspace/fill.bin")).unwrap();
    let (_, after) = client.send("cleaned up").await.unwrap();
    assert_eq!(
        client.done(after).await.unwrap(),
        (InboundStatus::Completed, None),
        "{}",
        fixture.logs()
    );
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(
        client.replies_to(after),
        vec!["echo: cleaned up".to_owned()]
    );
    held
}

/// Whether the attack's `sleep` still runs anywhere on the machine (containers included).
pub fn attack_alive(marker: &str) -> bool {
    testkit::procs::processes()
        .iter()
        .any(|p| p.args().any(|a| a == marker.as_bytes()))
}

/// Waits (up to [`WAIT`]) for the attack's processes to be gone.
pub async fn attack_ended(marker: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while attack_alive(marker) {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[tokio::test]
async fn a_disk_filling_agent_is_stopped_at_its_quota() {
    let (model, mut fixture) = setup().await;
    let marker = "97.25";
    let (client, session) = fill_the_disk(&model, &mut fixture, marker).await;
    assert!(
        attack_ended(marker).await,
        "the runner and its tool were stopped"
    );
    refused_until_cleaned(client, &mut fixture, &session).await;
    fixture.stop().await.unwrap();
}
