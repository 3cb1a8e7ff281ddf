//! A real browser on the dashboard: headless Chromium (Debian's `chromium`, installed by
//! `make test` when missing), driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: fd 3 in, fd 4 out, messages ended by NUL). It signs in through a
//! login link, sees a session appear on the overview live after a message is sent, opens the
//! session's story, and writes screenshots to `target/tmp/dashboard-*.png` for people to look at.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::Reply;

use super::support::*;

/// Chromium with a DevTools session on one page.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start() -> Browser {
        use std::os::fd::AsRawFd;
        let binary = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| {
                Command::new("which")
                    .arg(b)
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("chromium is installed (`make test` installs Debian's `chromium`)");
        let profile = tempfile::tempdir().unwrap();
        let (their_in, our_out) = pipe();
        let (our_in, their_out) = pipe();
        let (fd_in, fd_out) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut command = Command::new(binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd_in, 3) < 0 || libc::dup2(fd_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop((their_in, their_out));
        let mut browser = Browser {
            child,
            to: std::fs::File::from(our_out),
            from: BufReader::new(std::fs::File::from(our_in)),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the DevTools pipe");
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; panics with the page's text otherwise.
    async fn wait_for(&mut self, expression: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.eval(&format!("!!({expression})")) == json!(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.eval("document.documentElement.outerHTML");
                panic!("the page never got {expression}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = decode_base64(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test]
async fn a_browser_sees_a_session_appear_live_and_opens_its_story() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let out = fixture.command(&["dashboard"]).output().await.unwrap();
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut browser = Browser::start();
    browser.page("Page.enable", json!({}));
    browser.page("Page.navigate", json!({ "url": link }));
    // The link signs in and lands on the overview, with no session yet.
    browser
        .wait_for("location.pathname === '/' && document.querySelector('#live') && document.querySelector('#live').textContent.includes('No live sessions')")
        .await;

    // A message from the terminal: the overview shows its session without a reload.
    let marker = browser.eval("window.__notReloaded = true");
    assert_eq!(marker, json!(true));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::text("the browser can see this").after(Duration::from_millis(500)));
    let (session, seq) = client.send("hello from the terminal").await.unwrap();
    browser
        .wait_for(&format!(
            "document.querySelector('tr[data-session=\"{session}\"] a') && window.__notReloaded"
        ))
        .await;
    assert_eq!(
        client.done(seq).await.unwrap().0,
        mailbox::InboundStatus::Completed
    );
    let overview = browser.screenshot("dashboard-overview.png");

    // Its story, opened from the overview's link, shows the conversation.
    browser.eval(&format!(
        "document.querySelector('tr[data-session=\"{session}\"] a').click()"
    ));
    browser
        .wait_for("location.pathname.startsWith('/sessions/') && document.querySelector('.story') && document.querySelector('.story').textContent.includes('the browser can see this')")
        .await;
    let text = browser.eval("document.querySelector('.story').textContent");
    assert!(
        text.as_str().unwrap().contains("hello from the terminal"),
        "{text}"
    );
    // And follows it: the next exchange appears without a reload.
    browser.eval("window.__notReloaded = true");
    model.push(Reply::text("and this one, live"));
    let (_, seq) = client.send("once more").await.unwrap();
    browser
        .wait_for("document.querySelector('.story').textContent.includes('and this one, live') && window.__notReloaded")
        .await;
    client.done(seq).await.unwrap();
    let story = browser.screenshot("dashboard-story.png");
    // No script was refused by the page's own policy, and nothing failed to load.
    let errors = browser.eval("document.body.classList.contains('stale')");
    assert_eq!(errors, json!(false));
    eprintln!("screenshots: {} {}", overview.display(), story.display());
    drop(browser);
    fixture.stop().await.unwrap();
}
