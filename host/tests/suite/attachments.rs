//! A large attachment on its way to the terminal: the host streams it from the agent's outbox
//! into its own copy under `DATA_DIR/files` instead of holding it in memory, and the copy is
//! the file, byte for byte.

use std::time::Duration;

use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use serde_json::json;
use testkit::procs::processes;
use testkit::{Reply, ToolCall};

use super::support::*;

/// Peak resident memory (VmHWM) of `pid`, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn host_pid(fixture: &testkit::HostFixture) -> u32 {
    let root = fixture.root().as_os_str().as_encoded_bytes().to_vec();
    processes()
        .into_iter()
        .find(|p| {
            p.args().nth(1) == Some(b"run".as_slice())
                && p.environ.windows(root.len()).any(|w| w == root.as_slice())
        })
        .map(|p| p.pid)
        .unwrap()
}

#[tokio::test]
async fn a_large_attachment_is_streamed_into_the_hosts_copy() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, first) = client.send("hello").await.unwrap();
    assert_eq!(
        client.done(first).await.unwrap().0,
        InboundStatus::Completed
    );
    let pid = host_pid(&fixture);
    let before = peak_kib(pid);

    // 45 MB of noise (under the 50 MB a message may carry), sent by the agent.
    const SIZE: u64 = 45 << 20;
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({"command": format!("head -c {SIZE} /dev/urandom > big.bin")}),
    )]));
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "send_file",
        json!({"path": "big.bin", "text": "the big one"}),
    )]));
    model.push(Reply::text("sent"));
    let (_, seq) = client.send("send me the big file").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None),
        "{}",
        fixture.logs()
    );
    client.settle(Duration::from_millis(300)).await;
    let file = client
        .seen
        .iter()
        .find_map(|e| match e {
            Event::Chat(ChatEvent::Reply { files, .. }) if !files.is_empty() => {
                Some(files[0].clone())
            }
            _ => None,
        })
        .expect("a reply with the file");
    assert_eq!(file.bytes, SIZE);
    assert!(
        file.path
            .starts_with(&fixture.data_dir().join("files").display().to_string())
    );
    let original = session_dir(&fixture, &session).join("workspace/big.bin");
    let (copy, original) = (
        std::fs::read(&file.path).unwrap(),
        std::fs::read(&original).unwrap(),
    );
    assert_eq!(copy.len() as u64, SIZE);
    assert!(copy == original, "the copy is the agent's file");
    let grew_mb = (peak_kib(pid).saturating_sub(before)) / 1024;
    println!(
        "host peak RSS grew by {grew_mb} MB while copying a {} MB file",
        SIZE >> 20
    );
    // Buffered whole, the file alone would have added 45 MB to the host's peak.
    assert!(grew_mb < 20, "host peak RSS grew by {grew_mb} MB");
    answered_again(&mut client).await;
    fixture.stop().await.unwrap();
}

async fn answered_again(client: &mut Client) {
    let (_, seq) = client.send("still there?").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
}
