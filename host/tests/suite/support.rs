//! A terminal client of the admin socket for tests, and fixture helpers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use host::admin::protocol::{Event, Request};
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use testkit::{FakeModel, HostFixture};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(30);

pub async fn setup() -> (FakeModel, HostFixture) {
    let model = FakeModel::start().await.unwrap();
    let fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &model.base_url()).unwrap();
    (model, fixture)
}

pub struct Client {
    write: OwnedWriteHalf,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    /// The session each accepted seq belongs to (seqs are per session: several agents on one
    /// chat each number their own messages).
    sessions: std::collections::HashMap<i64, String>,
}

impl Client {
    /// Connects and attaches as a terminal.
    pub async fn attach(socket: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(socket).await.context("connect")?;
        let (read, write) = stream.into_split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let ev: Event = serde_json::from_str(&line).expect("event parses");
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let mut client = Client {
            write,
            events,
            seen: Vec::new(),
            sessions: std::collections::HashMap::new(),
        };
        client.request(&Request::Attach).await?;
        client
            .wait_for(|e| matches!(e, Event::Attached { .. }))
            .await?;
        Ok(client)
    }

    pub async fn request(&mut self, req: &Request) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        self.write.write_all(line.as_bytes()).await?;
        Ok(())
    }

    pub async fn raw(&mut self, line: &str) -> anyhow::Result<()> {
        self.write.write_all(line.as_bytes()).await?;
        Ok(())
    }

    /// Sends a chat message and returns (session id, seq) once the host accepted it.
    pub async fn send(&mut self, text: &str) -> anyhow::Result<(String, i64)> {
        self.request(&Request::Send {
            text: text.to_owned(),
        })
        .await?;
        match self
            .wait_for(|e| matches!(e, Event::Accepted { .. } | Event::Rejected { .. }))
            .await?
        {
            Event::Accepted { session_id, seq } => {
                self.sessions.insert(seq, session_id.clone());
                Ok((session_id, seq))
            }
            other => bail!("message refused: {other:?}"),
        }
    }

    /// Waits for (and returns) the first event, seen or new, matching `pred`... among new ones.
    pub async fn wait_for(&mut self, pred: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("timed out; seen so far: {:#?}", self.seen))?
                .context("host closed the connection")?;
            self.seen.push(ev.clone());
            if pred(&ev) {
                return Ok(ev);
            }
        }
    }

    /// Waits for the verdict on `seq` (already seen or still to come).
    pub async fn done(&mut self, seq: i64) -> anyhow::Result<(InboundStatus, Option<String>)> {
        let session = self.sessions.get(&seq).cloned();
        let is_done = move |e: &Event| {
            matches!(e, Event::Chat(ChatEvent::Done { seq: s, session_id, .. })
                if *s == seq && session.as_ref().is_none_or(|want| want == session_id))
        };
        let ev = match self.seen.iter().find(|e| is_done(e)).cloned() {
            Some(ev) => ev,
            None => self.wait_for(is_done).await?,
        };
        match ev {
            Event::Chat(ChatEvent::Done { status, error, .. }) => Ok((status, error)),
            _ => unreachable!(),
        }
    }

    /// Collects events for `quiet` more time (to show nothing else arrives).
    pub async fn settle(&mut self, quiet: Duration) {
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, self.events.recv()).await {
            self.seen.push(ev);
        }
    }

    /// Texts of the replies to `seq` seen so far.
    pub fn replies_to(&self, seq: i64) -> Vec<String> {
        let session = self.sessions.get(&seq);
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Chat(ChatEvent::Reply {
                    in_reply_to: Some(r),
                    session_id,
                    text,
                    ..
                }) if *r == seq && session.is_none_or(|s| s == session_id) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn notices(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Chat(ChatEvent::Notice { text }) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The session directory of the default agent's session.
pub fn session_dir(fixture: &HostFixture, session_id: &str) -> PathBuf {
    fixture.data_dir().join("sessions/default").join(session_id)
}

/// The pid the current runner of a session recorded, once it has one newer than `not`.
pub async fn runner_pid(fixture: &HostFixture, session_id: &str, not: Option<u32>) -> u32 {
    let db = session_dir(fixture, session_id).join("outbound/outbound.db");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(reader) = mailbox::OutboundReader::open(&db)
            && let Ok(Some(state)) = reader.runner_state()
            && Some(state.pid) != not
        {
            return state.pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no runner pid recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a runner process this test started through the host.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The `tool` messages of a recorded request, by tool call id order.
pub fn tool_results(request: &testkit::RecordedRequest) -> Vec<String> {
    request
        .messages()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            m["content"]
                .as_str()
                .map_or_else(|| m["content"].to_string(), str::to_owned)
        })
        .collect()
}

/// The callback data of the inline buttons under a message the bot sent.
pub fn buttons(m: &testkit::fake_telegram::BotMessage) -> Vec<String> {
    m.reply_markup
        .as_ref()
        .and_then(|k| k["inline_keyboard"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
        .collect()
}

/// Whether process `pid` is gone (or only a zombie left for its parent to reap).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pid a test's command wrote into `path`, once it has.
pub async fn read_pid(path: &Path) -> i32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
