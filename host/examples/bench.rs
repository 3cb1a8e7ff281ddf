//! `make bench`: latency and memory of the host with the process runtime and a fake model that
//! answers instantly, then the same for the docker runtime (image size, cold start, added warm
//! latency, runner memory inside a container; skipped with `BENCH_DOCKER=0`). Prints figures;
//! asserts nothing (the machine is shared and noisy). The long-conversation figures (request
//! size, turn latency, runner RSS and `outbound.db` size at turns 10, 100, 1000 and 3000 of one
//! conversation under a 16k-token budget; `BENCH_LONG_TURNS` overrides the length, 0 skips it)
//! show that compaction keeps them flat. The streaming figures (`BENCH_STREAM=0` skips them):
//! time to the first visible text of a reply that a model writes at 20 tokens a second, on the
//! terminal and on Telegram (a fake Bot API), against the time to the whole reply;
//! `BENCH_ONLY=stream` runs only those, `BENCH_ONLY=long` only the long conversation.
//!
//! Usage: `bench [path/to/clawbox]` (default `target/release/clawbox`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use host::admin::protocol::{Event, Request};
use host::channels::cli::ChatEvent;
use testkit::procs::{processes, rss_kib};
use testkit::{FakeModel, HostFixture};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Warm messages per run; `BENCH_WARM` overrides. Each one grows the conversation the fake model
/// receives, as a real chat does.
const WARM_MESSAGES: usize = 300;
const COLD_SESSIONS: usize = 15;
const FANOUT_SESSIONS: usize = 100;
/// Warm messages sent under strace to count fsyncs (after the timed ones, which run untraced);
/// enough that WAL checkpoints, which sync, are part of the average.
const SYNC_MESSAGES: usize = 100;

struct Client {
    write: OwnedWriteHalf,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
}

impl Client {
    async fn attach(socket: &Path) -> Client {
        let (read, write) = UnixStream::connect(socket).await.unwrap().into_split();
        let mut c = Client {
            write,
            lines: BufReader::new(read).lines(),
        };
        c.request(&Request::Attach).await;
        c.until(|e| matches!(e, Event::Attached { .. })).await;
        c
    }

    async fn request(&mut self, r: &Request) {
        let mut line = serde_json::to_string(r).unwrap();
        line.push('\n');
        self.write.write_all(line.as_bytes()).await.unwrap();
    }

    async fn until(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("event within 60 s")
                .unwrap()
                .expect("host still connected");
            let ev: Event = serde_json::from_str(&line).unwrap();
            if pred(&ev) {
                return ev;
            }
        }
    }

    /// Sends and waits for the verdict; returns the time to the first reply.
    async fn round_trip(&mut self, text: &str) -> Duration {
        let start = Instant::now();
        self.request(&Request::Send { text: text.into() }).await;
        self.until(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
            .await;
        let elapsed = start.elapsed();
        self.until(|e| matches!(e, Event::Chat(ChatEvent::Done { .. })))
            .await;
        elapsed
    }
}

/// Where the bench's hosts keep their data: `BENCH_DIR`, default `data/bench` of the
/// repository — the disk a real installation uses, where `/tmp` may be a tmpfs that hides the
/// cost of every fsync.
fn bench_dir() -> PathBuf {
    std::env::var_os("BENCH_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/bench"),
        PathBuf::from,
    )
}

fn new_fixture(bin: &Path, model: &FakeModel) -> HostFixture {
    HostFixture::new_in(&bench_dir(), bin, &model.base_url()).unwrap()
}

/// Counts the sync calls (`fsync`, `fdatasync`, …) that `pids` (every thread of each) make
/// while it is alive: `strace -c -f` attached to them, stopped with SIGINT by [`SyncCount::stop`].
struct SyncCount {
    child: std::process::Child,
    out: PathBuf,
}

const SYNC_CALLS: &str = "trace=fsync,fdatasync,sync_file_range,syncfs,sync,msync";

impl SyncCount {
    /// `None` (with a note) when strace is missing or cannot attach.
    async fn start(pids: &[u32], out: PathBuf) -> Option<SyncCount> {
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-c", "-qq", "-e", SYNC_CALLS, "-o"])
            .arg(&out)
            .stderr(std::process::Stdio::null());
        for pid in pids {
            cmd.arg("-p").arg(pid.to_string());
        }
        let Ok(child) = cmd.spawn() else {
            println!("  (strace not found: fsyncs not counted)");
            return None;
        };
        // Attached once every thread of every pid reports a tracer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|pid| traced(*pid)) {
            if Instant::now() > deadline {
                println!("  (strace did not attach: fsyncs not counted)");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(SyncCount { child, out })
    }

    fn stop(mut self) -> u64 {
        // SAFETY: kill(2) on the strace child this struct spawned and has not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let summary = std::fs::read_to_string(&self.out).unwrap_or_default();
        // `-c` ends with a row `100.00 <seconds> <usecs/call> <calls> [errors] total`.
        summary
            .lines()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn traced(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .is_some_and(|v| v.trim() != "0")
        })
    })
}

/// Sends `n` warm messages while counting the syncs of the host and of the session's runner
/// processes (agent-runner and its mcp-tools); prints them per message.
async fn count_warm_syncs(client: &mut Client, host: u32, runner: &[u32], n: usize) {
    let dir = bench_dir();
    let host_count = SyncCount::start(&[host], dir.join("strace-host.txt")).await;
    let runner_count = SyncCount::start(runner, dir.join("strace-runner.txt")).await;
    for i in 0..n {
        client.round_trip(&format!("counted {i}")).await;
    }
    let per = |c: Option<SyncCount>| c.map(|c| format!("{:.1}", c.stop() as f64 / n as f64));
    match (per(host_count), per(runner_count)) {
        (Some(h), Some(r)) => println!(
            "fsyncs per warm message ({n} messages under strace -c -f): host {h}   runner {r}"
        ),
        _ => println!("fsyncs per warm message: not counted"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn host_pid(fixture: &HostFixture) -> u32 {
    // The only process whose environment points at this fixture and whose argv is `run`.
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

fn runner_pids(fixture: &HostFixture) -> Vec<u32> {
    let sessions = fixture.data_dir().join("sessions");
    let mut pids = Vec::new();
    for agent in std::fs::read_dir(&sessions).into_iter().flatten().flatten() {
        for session in std::fs::read_dir(agent.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let db = session.path().join("outbound/outbound.db");
            if let Ok(r) = mailbox::OutboundReader::open(&db)
                && let Ok(Some(state)) = r.runner_state()
                && Path::new(&format!("/proc/{}", state.pid)).exists()
            {
                pids.push(state.pid);
            }
        }
    }
    pids
}

/// `pids` and their direct children (a runner's mcp-tools).
fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    all.extend(
        processes()
            .into_iter()
            .filter(|p| p.ppid().is_some_and(|ppid| pids.contains(&ppid)))
            .map(|p| p.pid),
    );
    all
}

#[tokio::main]
async fn main() {
    let bin: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/release/clawbox"), PathBuf::from);
    let bin =
        std::fs::canonicalize(&bin).expect("clawbox binary (build with `make build-release`)");
    let long_turns = std::env::var("BENCH_LONG_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LONG_TURNS);
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("stream") => return streaming_figures(&bin).await,
        Ok("long") => return long_conversation(&bin, long_turns).await,
        _ => {}
    }
    let model = FakeModel::start().await.unwrap();
    println!(
        "clawbox bench — process runtime, fake model answering instantly, binary {}",
        bin.display()
    );

    // Warm: one session, runner already running.
    let mut fixture = new_fixture(&bin, &model);
    fixture.set("RUST_LOG", "warn");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await;
    client.round_trip("warm up").await;
    let idle_host = rss_kib(host_pid(&fixture));
    let warm = std::env::var("BENCH_WARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WARM_MESSAGES);
    let mut samples = Vec::with_capacity(warm);
    for i in 0..warm {
        samples.push(client.round_trip(&format!("message {i}")).await);
    }
    let first: Vec<_> = samples
        .iter()
        .take(20)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let last: Vec<_> = samples
        .iter()
        .rev()
        .take(20)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    samples.sort();
    println!("\nwarm round trip (message in → reply out), {warm} messages:");
    println!(
        "  p50 {}   p90 {}   p99 {}   max {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
    println!(
        "  mean of first 20: {:.2} ms, of last 20: {:.2} ms",
        avg(&first),
        avg(&last)
    );
    let runner = runner_pids(&fixture);
    let with_tools = with_children(&runner);
    count_warm_syncs(&mut client, host_pid(&fixture), &with_tools, SYNC_MESSAGES).await;
    let runner_rss: Vec<String> = runner
        .iter()
        .filter_map(|p| rss_kib(*p))
        .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
        .collect();
    println!(
        "agent-runner RSS (warm, after {warm} turns): {}",
        runner_rss.join(", ")
    );
    let mcp = processes()
        .into_iter()
        .filter(|p| {
            p.ppid().is_some_and(|ppid| runner.contains(&ppid))
                && p.cmdline.windows(9).any(|w| w == b"mcp-tools")
        })
        .filter_map(|p| p.rss_kib())
        .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
        .collect::<Vec<_>>();
    println!("mcp-tools RSS: {}", mcp.join(", "));
    if let Some(k) = idle_host {
        println!("host RSS, 1 session: {:.1} MB", k as f64 / 1024.0);
    }
    drop(client);
    fixture.stop().await.unwrap();
    drop(fixture);

    // Cold: a brand-new host data dir each time, so the first message creates the session,
    // its mailbox and its runner.
    let mut cold = Vec::with_capacity(COLD_SESSIONS);
    for _ in 0..COLD_SESSIONS {
        let mut fixture = new_fixture(&bin, &model);
        fixture.set("RUST_LOG", "warn");
        fixture.start().await.unwrap();
        let mut client = Client::attach(&fixture.socket_path()).await;
        cold.push(client.round_trip("first message").await);
        drop(client);
        fixture.stop().await.unwrap();
    }
    cold.sort();
    println!(
        "\nfirst message of a new session (session + mailbox created, runner started), {COLD_SESSIONS} sessions:"
    );
    println!(
        "  p50 {}   p90 {}   max {}",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.9)),
        ms(*cold.last().unwrap())
    );

    // Memory with many sessions: agents fanned out on the terminal chat, one session each.
    let mut fixture = new_fixture(&bin, &model);
    fixture
        .set("RUST_LOG", "warn")
        .set("IDLE_TIMEOUT_MS", "1000");
    fixture.start().await.unwrap();
    let idle = rss_kib(host_pid(&fixture));
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    for i in 0..FANOUT_SESSIONS - 1 {
        conn.execute_batch(&format!(
            "INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('a{i}', 'A{i}', 'a{i}', '2026-01-01T00:00:00.000Z');
             INSERT INTO user_roles (user_id, agent_group_id, role, granted_at) VALUES ('cli:local', 'a{i}', 'owner', '2026-01-01T00:00:00.000Z');
             INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
                 VALUES ('w{i}', 'cli:local', 'a{i}', 'pattern', '.', '2026-01-01T00:00:00.000Z');"
        ))
        .unwrap();
        std::fs::create_dir_all(fixture.groups_dir().join(format!("a{i}"))).unwrap();
    }
    let mut client = Client::attach(&fixture.socket_path()).await;
    let start = Instant::now();
    client
        .request(&Request::Send {
            text: "hello everyone".into(),
        })
        .await;
    let mut replies = 0;
    while replies < FANOUT_SESSIONS {
        client
            .until(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
            .await;
        replies += 1;
    }
    let fanout = start.elapsed();
    let busy = rss_kib(host_pid(&fixture));
    // Let every runner idle out, then measure the host with 100 idle sessions.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !runner_pids(&fixture).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(host_pid(&fixture));
    println!(
        "\n{FANOUT_SESSIONS} sessions (one message fanned out to {FANOUT_SESSIONS} agents): all replies in {}",
        ms(fanout)
    );
    let mb = |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0));
    println!(
        "host RSS: idle (no sessions) {}   100 runners live {}   100 idle sessions {}",
        mb(idle),
        mb(busy),
        mb(after)
    );
    drop(client);
    fixture.stop().await.unwrap();

    if long_turns > 0 {
        long_conversation(&bin, long_turns).await;
    }
    host_start_figures(&bin, &model).await;
    if std::env::var("BENCH_STREAM").as_deref() != Ok("0") {
        streaming_figures(&bin).await;
    }

    if std::env::var("BENCH_DOCKER").as_deref() != Ok("0") {
        docker_figures(&bin, &model, percentile(&samples, 0.5)).await;
    }
}

/// Turns of the long conversation, and its budget (`context_tokens` in the agent's
/// `container.json`).
const LONG_TURNS: usize = 3000;
const LONG_CONTEXT_TOKENS: u64 = 16_000;

/// The `outbound.db` (with its WAL) of the only session of a fixture, in bytes.
fn outbound_bytes(fixture: &HostFixture) -> u64 {
    let sessions = fixture.data_dir().join("sessions");
    let mut total = 0;
    for agent in std::fs::read_dir(&sessions).into_iter().flatten().flatten() {
        for session in std::fs::read_dir(agent.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for name in ["outbound.db", "outbound.db-wal"] {
                total += std::fs::metadata(session.path().join("outbound").join(name))
                    .map_or(0, |m| m.len());
            }
        }
    }
    total
}

/// One conversation of `turns` messages of ~600 bytes, each answered with its echo, under a
/// small budget: the figures at turns 10, 100, 1000 and 3000 must stay flat once compaction
/// starts (within 2× of turn 100).
async fn long_conversation(bin: &Path, turns: usize) {
    // A model of its own: its request log is read for the sizes.
    let model = FakeModel::start().await.unwrap();
    model.summarise_when(agent_runner::compact::SUMMARY_PROMPT);
    let mut fixture = HostFixture::new(bin, &model.base_url()).unwrap();
    fixture.set("RUST_LOG", "warn");
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(
        agent.join("container.json"),
        format!("{{\"context_tokens\": {LONG_CONTEXT_TOKENS}}}"),
    )
    .unwrap();
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await;
    println!(
        "\nlong conversation, {turns} turns of ~600 bytes answered at length, budget \
         {LONG_CONTEXT_TOKENS} tokens:"
    );
    println!(
        "  {:>6}  {:>14}  {:>16}  {:>11}  {:>13}  {:>11}",
        "turn", "request bytes", "turn latency", "runner RSS", "outbound.db", "summaries"
    );
    let checkpoints = [10, 100, 1000, 3000];
    let mut recent: Vec<Duration> = Vec::new();
    let filler = "lorem ipsum dolor sit amet ".repeat(22);
    for i in 1..=turns {
        recent.push(client.round_trip(&format!("message {i}: {filler}")).await);
        if recent.len() > 10 {
            recent.remove(0);
        }
        if !checkpoints.contains(&i) && i != turns {
            continue;
        }
        let requests = model.requests();
        let summary = |r: &&testkit::RecordedRequest| {
            r.messages().first().and_then(|m| m["content"].as_str())
                == Some(agent_runner::compact::SUMMARY_PROMPT)
        };
        let summaries = requests.iter().filter(summary).count();
        let last = requests
            .iter()
            .rev()
            .find(|r| !summary(r))
            .map_or(0, |r| r.body.to_string().len());
        let latency = recent.iter().sum::<Duration>() / recent.len().max(1) as u32;
        let rss = runner_pids(&fixture)
            .first()
            .and_then(|p| rss_kib(*p))
            .map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0));
        println!(
            "  {i:>6}  {last:>14}  {:>16}  {rss:>11}  {:>10.1} KB  {summaries:>11}",
            format!("{} (last 10)", ms(latency)),
            outbound_bytes(&fixture) as f64 / 1024.0,
        );
    }
    drop(client);
    fixture.stop().await.unwrap();
}

/// Unrelated processes running while the host starts.
const BYSTANDERS: usize = 1000;
const HOST_STARTS: usize = 5;

/// Host start (process runtime: `clawbox run` until its admin socket answers, which includes
/// looking for runners a previous host left), on an idle machine and with [`BYSTANDERS`]
/// unrelated processes running. A restart of a host that has served a session, so there is a
/// runner record to check.
async fn host_start_figures(bin: &Path, model: &FakeModel) {
    let mut fixture = new_fixture(bin, model);
    fixture.set("RUST_LOG", "warn");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await;
    client.round_trip("hello").await;
    drop(client);
    fixture.stop().await.unwrap();
    println!();
    time_starts(&mut fixture, "idle machine").await;
    let mut bystanders: Vec<std::process::Child> = (0..BYSTANDERS)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap()
        })
        .collect();
    time_starts(&mut fixture, "1000 unrelated processes running").await;
    for b in &mut bystanders {
        let _ = b.kill();
        let _ = b.wait();
    }
}

async fn time_starts(fixture: &mut HostFixture, label: &str) {
    let mut times = Vec::with_capacity(HOST_STARTS);
    for _ in 0..HOST_STARTS {
        let start = Instant::now();
        fixture.start().await.unwrap();
        times.push(start.elapsed());
        // Up for real (it answers an attach) before it is asked to stop; a host stopped while
        // still installing its signal handlers can die of the signal itself, which is not
        // what is measured here.
        drop(Client::attach(&fixture.socket_path()).await);
        let _ = fixture.stop().await;
    }
    times.sort();
    println!(
        "host start, {label}: p50 {}   max {}",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap())
    );
}

/// Warm messages through a container.
const DOCKER_WARM_MESSAGES: usize = 100;
const DOCKER_COLD_SESSIONS: usize = 10;
/// Built from the release binaries next to `bin` under a pinned tag of its own: a bench build
/// never replaces or removes the content-tagged images of an install.
const BENCH_IMAGE: &str = "clawbox-agent:bench";

async fn docker_figures(bin: &Path, model: &FakeModel, process_warm_p50: Duration) {
    println!("\n--- docker runtime (image {BENCH_IMAGE}) ---");
    let docker_fixture = || {
        let mut f = new_fixture(bin, model);
        f.set("RUST_LOG", "warn")
            .set("CONTAINER_RUNTIME", "docker")
            .set("CONTAINER_IMAGE", BENCH_IMAGE);
        f
    };

    // Cold: message in → the model's first request, in a fresh host each time (new session,
    // new container). The first start also builds the image when needed.
    let mut cold = Vec::with_capacity(DOCKER_COLD_SESSIONS);
    let mut cold_reply = Vec::with_capacity(DOCKER_COLD_SESSIONS);
    for _ in 0..DOCKER_COLD_SESSIONS {
        let mut fixture = docker_fixture();
        fixture.start().await.unwrap();
        let mut client = Client::attach(&fixture.socket_path()).await;
        let before = model.request_count();
        let start = Instant::now();
        client
            .request(&Request::Send {
                text: "first message".into(),
            })
            .await;
        while model.request_count() == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        cold.push(start.elapsed());
        client
            .until(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
            .await;
        cold_reply.push(start.elapsed());
        drop(client);
        fixture.stop().await.unwrap();
    }
    cold.sort();
    cold_reply.sort();
    println!(
        "cold start (message in → first model request, container started), {DOCKER_COLD_SESSIONS} sessions:"
    );
    println!(
        "  p50 {}   p90 {}   max {}   (to the first reply: p50 {})",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.9)),
        ms(*cold.last().unwrap()),
        ms(percentile(&cold_reply, 0.5))
    );

    // Warm: one container, already running.
    let mut fixture = docker_fixture();
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await;
    client.round_trip("warm up").await;
    let mut samples = Vec::with_capacity(DOCKER_WARM_MESSAGES);
    for i in 0..DOCKER_WARM_MESSAGES {
        samples.push(client.round_trip(&format!("message {i}")).await);
    }
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!("warm round trip through a container, {DOCKER_WARM_MESSAGES} messages:");
    println!(
        "  p50 {}   p90 {}   max {}   (added over the process runtime's p50: {})",
        ms(p50),
        ms(percentile(&samples, 0.9)),
        ms(*samples.last().unwrap()),
        ms(p50.saturating_sub(process_warm_p50))
    );
    // The runner is in the host's PID namespace: find it by its path in the image and its
    // environment.
    let install = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap();
    let needle = format!("CLAWBOX_INSTALL={install}");
    let mut rss = Vec::new();
    let mut in_container = Vec::new();
    for p in processes() {
        let first = p.args().next().unwrap_or_default();
        let ours = p.env().any(|v| v == needle.as_bytes());
        if ours && (first == b"/app/agent-runner" || first == b"/app/mcp-tools") {
            in_container.push(p.pid);
            rss.push(format!(
                "{} {:.1} MB",
                String::from_utf8_lossy(first),
                p.rss_kib().unwrap_or(0) as f64 / 1024.0
            ));
        }
    }
    println!("RSS inside the container: {}", rss.join(", "));
    count_warm_syncs(
        &mut client,
        host_pid(&fixture),
        &in_container,
        SYNC_MESSAGES,
    )
    .await;
    drop(client);
    fixture.stop().await.unwrap();

    let docker = host::runtime::docker::connect_engine(None).await.unwrap();
    let image = docker.inspect_image(BENCH_IMAGE).await.unwrap();
    println!("image size: {:.1} MB", image.size.unwrap_or(0) as f64 / 1e6);
}

/// Deltas of the streamed reply, and the pace: 20 tokens a second, one token per delta.
const STREAM_TOKENS: usize = 60;
const STREAM_EVERY: Duration = Duration::from_millis(50);
const STREAM_RUNS: usize = 5;

/// A reply of [`STREAM_TOKENS`] deltas at 20 a second.
fn streamed_reply() -> testkit::Reply {
    let text: String = (0..STREAM_TOKENS).map(|i| format!("w{i:02} ")).collect();
    testkit::Reply::Streamed {
        text: text.trim_end().to_owned(),
        pieces: STREAM_TOKENS,
        every: STREAM_EVERY,
        hold: None,
    }
}

/// Time to the first visible text of a streamed reply (and to the whole reply), terminal and
/// Telegram.
async fn streaming_figures(bin: &Path) {
    let model = FakeModel::start().await.unwrap();
    println!(
        "
streamed reply ({STREAM_TOKENS} tokens at 20 tokens/s, {} ms of writing), {STREAM_RUNS} runs:",
        STREAM_EVERY.as_millis() * (STREAM_TOKENS as u128 - 1)
    );

    let mut fixture = new_fixture(bin, &model);
    fixture.set("RUST_LOG", "warn");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await;
    client.round_trip("warm up").await;
    let (mut first, mut whole) = (Vec::new(), Vec::new());
    for i in 0..STREAM_RUNS {
        model.push(streamed_reply());
        let start = Instant::now();
        client
            .request(&Request::Send {
                text: format!("stream {i}"),
            })
            .await;
        client
            .until(|e| {
                matches!(
                    e,
                    Event::Chat(ChatEvent::Draft { .. } | ChatEvent::Reply { .. })
                )
            })
            .await;
        first.push(start.elapsed());
        client
            .until(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
            .await;
        whole.push(start.elapsed());
        client
            .until(|e| matches!(e, Event::Chat(ChatEvent::Done { .. })))
            .await;
    }
    drop(client);
    fixture.stop().await.unwrap();
    first.sort();
    whole.sort();
    println!(
        "  terminal: first text p50 {} (max {}), whole reply p50 {}",
        ms(percentile(&first, 0.5)),
        ms(*first.last().unwrap()),
        ms(percentile(&whole, 0.5))
    );

    // Telegram: a bot on the fake Bot API, an agent wired to one group.
    const TOKEN: &str = "123456:bench-token";
    let tg = testkit::FakeTelegram::start(TOKEN).await.unwrap();
    let mut fixture = new_fixture(bin, &model);
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
                "--agent-name",
                "Andy",
                "--telegram-chat-id",
                "-1900",
                "--owner-user-id",
                "telegram:100",
                "--engage-mode",
                "pattern",
                "--engage-pattern",
                ".",
            ],
        )
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "create-agent: {out:?}");
    fixture.start().await.unwrap();
    let chat = testkit::fake_telegram::TgChat::group(-1900, "Bench");
    let user = testkit::fake_telegram::TgUser::new(100, "Olga", None);
    let (mut first, mut whole) = (Vec::new(), Vec::new());
    for i in 0..=STREAM_RUNS {
        model.push(streamed_reply());
        let before = tg.bot_messages(-1900).len();
        let start = Instant::now();
        tg.say(&chat, &user, &format!("stream {i}"));
        tg.wait_until(Duration::from_secs(60), "the first text", |f| {
            f.bot_messages(-1900).len() > before
        })
        .await
        .unwrap();
        let shown = start.elapsed();
        tg.wait_until(Duration::from_secs(60), "the whole reply", |f| {
            f.bot_messages(-1900)
                .last()
                .is_some_and(|m| m.parse_mode.as_deref() == Some("HTML"))
        })
        .await
        .unwrap();
        // The first run starts the session's runner: not a streaming figure.
        if i > 0 {
            first.push(shown);
            whole.push(start.elapsed());
        }
    }
    fixture.stop().await.unwrap();
    first.sort();
    whole.sort();
    println!(
        "  Telegram: first text p50 {} (max {}), whole reply p50 {}",
        ms(percentile(&first, 0.5)),
        ms(*first.last().unwrap()),
        ms(percentile(&whole, 0.5))
    );
}
