//! Figures for invariant 9 (the agent is untrusted): peak memory of the host's read of a
//! forged 400 MB row. Writes the row into a fresh session's `outbound.db` as an agent with a
//! shell could, reads the page as the host does, and prints the process's peak RSS (VmHWM)
//! before and after. Run with `cargo run --release -p mailbox --example untrusted_rows`.

use std::time::Instant;

use mailbox::{InboundDb, OutboundDb, OutboundReader, SessionPaths};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Writes a 400 MB row and a normal one after it, as the agent could.
fn forge(db: &str) -> Result<(), Box<dyn std::error::Error>> {
    let raw = rusqlite::Connection::open(db)?;
    raw.execute(
        "INSERT INTO messages_out (seq, id, kind, created_at, channel_type, platform_id, content)
         VALUES (1, 'forged', 'chat', '2026-01-02T03:04:05.000Z', 'cli', 'local',
                 '{\"text\":\"' || printf('%.*c', ?1, 'x') || '\"}')",
        [400i64 << 20],
    )?;
    raw.execute(
        "INSERT INTO messages_out (seq, id, kind, created_at, channel_type, platform_id, content)
         VALUES (3, 'after', 'chat', '2026-01-02T03:04:05.000Z', 'cli', 'local', '{\"text\":\"hi\"}')",
        [],
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, db] = args.as_slice()
        && flag == "--forge"
    {
        return forge(db);
    }
    let dir = tempfile::tempdir()?;
    let paths = SessionPaths::for_session(dir.path(), "agent", "s1")?;
    paths.create_dirs()?;
    drop(OutboundDb::open(&paths)?);
    let host = InboundDb::open(&paths)?;
    // The forger runs in a child process (this example again, with `--forge`), so its own
    // memory does not count in the reader's peak.
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--forge")
        .arg(paths.outbound_db())
        .status()?;
    if !status.success() {
        return Err("the forger failed".into());
    }
    let idle = peak_rss_mb();
    let reader = OutboundReader::open(&paths.outbound_db())?;
    let started = Instant::now();
    let page = reader.page_after(host.out_cursors()?)?;
    let took = started.elapsed();
    let peak = peak_rss_mb();
    for row in &page {
        match row {
            Ok(m) => println!("row {}: ok", m.seq),
            Err(bad) => println!("row {}: refused: {}", bad.seq, bad.reason),
        }
    }
    println!(
        "peak RSS before the read {idle:.1} MB, after {peak:.1} MB (+{:.1} MB); read took {took:?}",
        peak - idle
    );
    Ok(())
}
