//! Figures for the hostile-agent defences (issue: "a hostile agent cannot hurt the host"): the
//! host's peak memory while an agent forges a 400 MB row and a 50 MB file listed under 20 hard
//! links, the disk those attacks make the host write, what an agent filling its workspace
//! gets onto the disk under the default `SESSION_DISK_MB`, and the time from a poison Telegram
//! update (a message entity far outside its text, which used to panic inside teloxide at every
//! start) to the next update answered. Process runtime, fake model, fake Bot API. Prints
//! figures; asserts nothing (the machine is shared and noisy).
//!
//! Usage: `attacks [path/to/clawbox] [--poison-only]` (default `target/release/clawbox`;
//! `create-agent` is taken from next to it); needs about 3.5 GB of free disk in the temporary
//! directory unless `--poison-only`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::fake_telegram::{TgChat, TgUser};
use testkit::procs::processes;
use testkit::{FakeModel, FakeTelegram, HostFixture};

/// Peak resident memory (VmHWM) of `pid`, in MB.
fn peak_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn host_pid(fixture: &HostFixture) -> u32 {
    let root = fixture.root().as_os_str().as_encoded_bytes().to_vec();
    processes()
        .into_iter()
        .find(|p| {
            p.args().nth(1) == Some(b"run".as_slice())
                && p.environ.windows(root.len()).any(|w| w == root.as_slice())
        })
        .map(|p| p.pid)
        .expect("host process not found")
}

fn session_dir(fixture: &HostFixture) -> PathBuf {
    let agent = fixture.data_dir().join("sessions/default");
    std::fs::read_dir(agent)
        .unwrap()
        .flatten()
        .next()
        .expect("a session")
        .path()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    dir_bytes(&e.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    })
}

/// Bytes allocated on disk under `dir` (what `du` counts), each inode once.
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut total = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
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

/// Waits until the host has recorded row `seq` as failed (it read and refused it).
async fn refused(session: &Path, seq: i64) -> Duration {
    let started = Instant::now();
    let db = session.join("inbound/inbound.db");
    loop {
        let status: Option<String> = rusqlite::Connection::open(&db).ok().and_then(|c| {
            c.query_row(
                "SELECT status FROM delivery WHERE out_seq = ?1",
                [seq],
                |r| r.get(0),
            )
            .ok()
        });
        if status.as_deref() == Some("failed") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "row {seq} never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn forge(session: &Path, seq: i64, content_sql: &str) {
    let conn = rusqlite::Connection::open(session.join("outbound/outbound.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        &format!(
            "INSERT INTO messages_out (seq, id, kind, created_at, channel_type, platform_id, content)
             VALUES (?1, ?2, 'chat', '2026-01-02T03:04:05.000Z', 'cli', 'local', {content_sql})"
        ),
        rusqlite::params![seq, format!("forged-{seq}")],
    )
    .unwrap();
}

#[tokio::main]
async fn main() {
    let bin: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/release/clawbox"), PathBuf::from);
    let bin =
        std::fs::canonicalize(&bin).expect("clawbox binary (build with `make build-release`)");
    if std::env::args().any(|a| a == "--poison-only") {
        poison_update(&bin).await;
        return;
    }
    let model = FakeModel::start().await.unwrap();
    let mut fixture = HostFixture::new(&bin, &model.base_url()).unwrap();
    fixture.set("RUST_LOG", "warn");
    fixture.start().await.unwrap();
    let out = fixture.chat("hello\n").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = session_dir(&fixture);
    let pid = host_pid(&fixture);
    let idle = peak_mb(pid);
    let files_before = dir_bytes(&fixture.data_dir().join("files"));

    // 1. A 400 MB row.
    forge(
        &session,
        1001,
        "'{\"text\":\"' || printf('%.*c', 419430400, 'x') || '\"}'",
    );
    let took = refused(&session, 1001).await;
    let after_row = peak_mb(pid);
    println!(
        "400 MB row: host peak RSS {idle:.1} MB before, {after_row:.1} MB after (+{:.1} MB); refused {:.0} ms after it was written",
        after_row - idle,
        took.as_secs_f64() * 1000.0
    );

    // 2. One 50 MB file listed under 21 names (20 hard links). Files are read only when the
    // reply's chat is there to take them: a terminal stays attached meanwhile.
    let mut terminal = fixture
        .command(&["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = session.join("outbound/files/forged-1003");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join("big.bin"))
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let mut names = vec!["big.bin".to_owned()];
    for i in 0..20 {
        let name = format!("link{i}.bin");
        std::fs::hard_link(dir.join("big.bin"), dir.join(&name)).unwrap();
        names.push(name);
    }
    let content = serde_json::json!({"text": "files", "files": names}).to_string();
    forge(
        &session,
        1003,
        &format!("'{}'", content.replace('\'', "''")),
    );
    refused(&session, 1003).await;
    let after_links = peak_mb(pid);
    drop(terminal.stdin.take());
    terminal.wait().await.unwrap();
    let copied = dir_bytes(&fixture.data_dir().join("files")) - files_before;
    println!(
        "50 MB file + 20 hard links: host peak RSS {after_row:.1} MB before, {after_links:.1} MB after (+{:.1} MB); {copied} bytes copied into DATA_DIR/files",
        after_links - after_row
    );
    let out = fixture.chat("still there?\n").await.unwrap();
    println!(
        "a turn after the attacks: {}",
        if out.status.success() {
            "answered"
        } else {
            "FAILED"
        }
    );
    fixture.stop().await.unwrap();

    // 3. Filling the disk with the agent's own shell, in a fresh install under the default
    // quota (SESSION_DISK_MB=2048): 3 GB asked for, then one more file.
    let model = FakeModel::start().await.unwrap();
    let mut fixture = HostFixture::new(&bin, &model.base_url()).unwrap();
    fixture.set("RUST_LOG", "warn");
    fixture.start().await.unwrap();
    model.push(testkit::Reply::ToolCalls(vec![testkit::ToolCall::new(
        "run_bash",
        serde_json::json!({
            "command": "head -c 3221225472 /dev/zero > fill.bin; echo more > more.txt; sleep 300"
        }),
    )]));
    let started = Instant::now();
    let out = fixture.chat("fill the disk\n").await.unwrap();
    let took = started.elapsed();
    let session = session_dir(&fixture);
    let quota = 2048u64 << 20;
    let fill = std::fs::metadata(session.join("workspace/fill.bin")).map_or(0, |m| m.len());
    let held = allocated(&session.join("workspace")) + allocated(&session.join("outbound"));
    let told = String::from_utf8_lossy(&out.stdout).contains("SESSION_DISK_MB")
        || String::from_utf8_lossy(&out.stderr).contains("SESSION_DISK_MB");
    println!(
        "disk fill (3 GB asked, quota 2048 MB): fill.bin {fill} bytes, the session holds {held} \
         bytes ({:.2} % of the quota); turn stopped after {:.1} s; chat told: {told}",
        held as f64 * 100.0 / quota as f64,
        took.as_secs_f64()
    );
    std::fs::remove_file(session.join("workspace/fill.bin")).unwrap();
    let out = fixture.chat("cleaned up\n").await.unwrap();
    println!(
        "a turn after deleting the file: {}",
        if out.status.success() {
            "answered"
        } else {
            "FAILED"
        }
    );
    fixture.stop().await.unwrap();
    poison_update(&bin).await;
}

/// The time from a poison update to the next update answered, against the same after a plain
/// update (the median of a few rounds each). In a group where the agent answers mentions only,
/// the first update of a round (poison or plain) is not for the agent and the second, a
/// mention, is answered; rounds are more than a second apart, so Telegram pacing adds nothing.
async fn poison_update(bin: &Path) {
    const TOKEN: &str = "123456:attacks";
    let model = FakeModel::start().await.unwrap();
    let tg = FakeTelegram::start(TOKEN).await.unwrap();
    let mut fixture = HostFixture::new(bin, &model.base_url()).unwrap();
    fixture
        .set("RUST_LOG", "warn")
        .set("TELEGRAM_BOT_TOKEN", TOKEN)
        .set("TELEGRAM_API_URL", tg.api_url())
        .set("TELEGRAM_POLL_TIMEOUT_S", "1");
    let create_agent = bin.with_file_name("create-agent");
    let out = fixture
        .command_of(
            &create_agent,
            &[
                "--agent-id",
                "andy",
                "--telegram-chat-id",
                "-100",
                "--owner-user-id",
                "telegram:100",
                "--engage-mode",
                "mention",
            ],
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fixture.start().await.unwrap();
    let owner = TgUser::new(100, "Olga", Some("olga_owner"));
    let chat = TgChat::group(-100, "Team");
    let at = tg.bot_mention();
    let round = async |poison: bool, n: usize| -> Duration {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let started = Instant::now();
        let mut first = tg.message(&chat, &owner).text("not for the agent");
        if poison {
            first = first.raw_entity(
                serde_json::json!({ "type": "bold", "offset": 4_000_000_000u64, "length": 9 }),
            );
        }
        first.send();
        let marker = format!("next {n}");
        tg.say(&chat, &owner, &format!("{at} {marker}"));
        tg.wait_until(Duration::from_secs(60), "the next update answered", |f| {
            f.bot_messages(-100)
                .iter()
                .any(|m| m.visible.contains(&marker))
        })
        .await
        .unwrap();
        started.elapsed()
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // The first turn starts the runner; not counted.
    round(false, 100).await;
    let mut plain = Vec::new();
    let mut poisoned = Vec::new();
    for n in 0..5 {
        plain.push(round(false, 2 * n).await);
        poisoned.push(round(true, 2 * n + 1).await);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "poison Telegram update: the next update answered {:.0} ms after it (median of 5; after a plain update: {:.0} ms); {} bot messages for 11 mentions",
        ms(median(poisoned)),
        ms(median(plain)),
        tg.bot_messages(-100).len()
    );
    fixture.stop().await.unwrap();
}
