//! `make bench` (dashboard part): page weight of the dashboard (HTML + JS + CSS), the time to
//! serve the overview and the session list with 1,000 sessions on record, and the host's RSS
//! before and with the dashboard open (an overview stream and a story stream following).
//! Prints figures; asserts nothing (the machine is shared and noisy).
//!
//! Usage: `bench_dashboard [path/to/clawbox]` (default `target/release/clawbox`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::procs::{processes, rss_kib};
use testkit::{FakeModel, HostFixture, Reply};

const SESSIONS: usize = 1000;
const SAMPLES: usize = 20;

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

fn mb(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

/// Median and max time to fetch `path` whole.
async fn timed(client: &reqwest::Client, url: &str, cookie: &str) -> (Duration, Duration, usize) {
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut size = 0;
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let body = client
            .get(url)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        samples.push(start.elapsed());
        size = body.len();
    }
    samples.sort();
    (samples[SAMPLES / 2], *samples.last().unwrap(), size)
}

#[tokio::main]
async fn main() {
    let bin: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/release/clawbox"), PathBuf::from);
    let bin =
        std::fs::canonicalize(&bin).expect("clawbox binary (build with `make build-release`)");
    let model = FakeModel::start().await.unwrap();
    model.set_default(Reply::text("ok"));
    let mut fixture = HostFixture::new(&bin, &model.base_url()).unwrap();
    fixture.set("RUST_LOG", "warn");
    // First start: database and defaults. Then 1,000 sessions on record, each with its mailbox.
    fixture.start().await.unwrap();
    fixture.stop().await.unwrap();
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    let sessions_dir = fixture.data_dir().join("sessions");
    let now = chrono::Utc::now();
    for i in 0..SESSIONS {
        let chat = format!("bench:{i}");
        conn.execute(
            "INSERT INTO messaging_groups (id, channel_type, platform_id, is_group, created_at)
             VALUES (?1, 'bench', ?2, 0, '2026-01-01T00:00:00.000Z')",
            [&chat, &i.to_string()],
        )
        .unwrap();
        let id = format!("sess-bench-{i:04}");
        host::db::insert_session(&conn, &id, "default", &chat, None, now).unwrap();
        let paths = mailbox::SessionPaths::for_session(&sessions_dir, "default", &id).unwrap();
        paths.create_dirs().unwrap();
        mailbox::InboundDb::open(&paths).unwrap();
        mailbox::OutboundDb::open(&paths).unwrap();
    }
    drop(conn);
    fixture.start().await.unwrap();
    let pid = host_pid(&fixture);
    let before = rss_kib(pid);

    let link = String::from_utf8(
        fixture
            .command(&["dashboard"])
            .output()
            .await
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client.get(&link).send().await.unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let base = link.split("/login").next().unwrap().to_owned();

    // One live session: a terminal message (the chat's own session, with a runner).
    let chat = fixture.chat("hello\n").await.unwrap();
    assert!(chat.status.success());

    let (overview_p50, overview_max, overview_bytes) =
        timed(&client, &format!("{base}/"), &cookie).await;
    let (list_p50, list_max, list_bytes) =
        timed(&client, &format!("{base}/sessions"), &cookie).await;
    let js = client
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let css = client
        .get(format!("{base}/assets/style.css"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    println!("--- dashboard ({SESSIONS} sessions on record, 1 live) ---");
    println!(
        "page weight: overview HTML {overview_bytes} B + app.js {js} B + style.css {css} B = {:.1} KB (session list: {:.1} KB HTML)",
        (overview_bytes + js + css) as f64 / 1024.0,
        list_bytes as f64 / 1024.0
    );
    println!(
        "overview served whole: p50 {:.1} ms  max {:.1} ms   session list ({SESSIONS} rows): p50 {:.1} ms  max {:.1} ms",
        overview_p50.as_secs_f64() * 1e3,
        overview_max.as_secs_f64() * 1e3,
        list_p50.as_secs_f64() * 1e3,
        list_max.as_secs_f64() * 1e3
    );

    // The dashboard open: an overview stream and a story stream, for a few seconds.
    let mut streams = Vec::new();
    for path in ["/events/overview", "/events/sessions/default"] {
        let response = client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        streams.push(response);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let open = rss_kib(pid);
    println!(
        "host RSS: before the dashboard was used {}   with the dashboard open (2 live streams, after the page loads above) {}",
        mb(before),
        mb(open)
    );
    drop(streams);
    fixture.stop().await.unwrap();
}
