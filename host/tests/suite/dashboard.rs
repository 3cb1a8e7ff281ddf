//! The web dashboard over a real host with the fake model: access control (no cookie, a wrong
//! one, used or unknown login links, cross-origin and origin-less POSTs), the security headers,
//! each page's content, hostile text in every field, the live overview and story streams, the
//! task buttons, and the web chat: streamed drafts, files both ways, questions as buttons.

use std::time::Duration;

use mailbox::InboundStatus;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use testkit::fake_model::Gate;
use testkit::{HostFixture, Reply, ToolCall};

use super::support::*;
use super::tasks::{agent_calls, task_id, wait_task};

/// Markup, a bidi override, an isolate, a bell and an escape sequence.
const HOSTILE: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&\u{202E}gnp.exe\u{2066}x\u{7}\u{1b}[31m";

/// What must never reach a page raw.
fn assert_neutralised(page: &str, body: &str) {
    for raw in [
        "<script>", "<img", "\u{202E}", "\u{2066}", "\u{7}", "\u{1b}",
    ] {
        assert!(!body.contains(raw), "{page} shows {raw:?} raw:\n{body}");
    }
}

/// The dashboard's origin, from the address the host recorded.
fn base(fixture: &HostFixture) -> String {
    let addr = std::fs::read_to_string(fixture.data_dir().join("dashboard.addr")).unwrap();
    format!("http://{}", addr.trim())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `clawbox dashboard`'s link.
async fn login_link(fixture: &HostFixture) -> String {
    let out = fixture.command(&["dashboard"]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Signs in through a fresh login link and returns the cookie header to send.
async fn sign_in(fixture: &HostFixture) -> HeaderValue {
    let response = http().get(login_link(fixture).await).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    HeaderValue::from_str(set.split(';').next().unwrap()).unwrap()
}

async fn get(fixture: &HostFixture, cookie: &HeaderValue, path: &str) -> (StatusCode, String) {
    let response = http()
        .get(format!("{}{path}", base(fixture)))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn page(fixture: &HostFixture, cookie: &HeaderValue, path: &str) -> String {
    let (status, body) = get(fixture, cookie, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// A state-changing request from the dashboard's own page: the cookie and its Origin.
fn post_from_page(
    fixture: &HostFixture,
    cookie: &HeaderValue,
    path: &str,
) -> reqwest::RequestBuilder {
    let base = base(fixture);
    http()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("origin", base)
}

/// Sends `text` from the web chat's form.
async fn chat(fixture: &HostFixture, cookie: &HeaderValue, text: &str) -> reqwest::Response {
    post_from_page(fixture, cookie, "/chat")
        .form(&[("text", text)])
        .send()
        .await
        .unwrap()
}

/// A `multipart/form-data` body as a browser sends the chat form: the text, then each file
/// (its name written as is, UTF-8 included). Returns the content type and the body.
fn multipart(text: &str, files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "----clawboxTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n{text}\r\n")
            .as_bytes(),
    );
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

async fn chat_with_files(
    fixture: &HostFixture,
    cookie: &HeaderValue,
    text: &str,
    files: &[(&str, &[u8])],
) -> reqwest::Response {
    let (content_type, body) = multipart(text, files);
    post_from_page(fixture, cookie, "/chat")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The web chat page once it satisfies `check` (replies are written a moment after the POST).
async fn chat_page_until(
    fixture: &HostFixture,
    cookie: &HeaderValue,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let shown = page(fixture, cookie, "/chat").await;
        if check(&shown) {
            return shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chat page never got there:\n{shown}\n{}",
            fixture.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The web chat's one session.
fn web_session(fixture: &HostFixture) -> String {
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT id FROM sessions WHERE messaging_group_id = 'web:owner'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// The `href`/`action` values in `html` that start with `prefix`.
fn links(html: &str, attr: &str, prefix: &str) -> Vec<String> {
    let needle = format!("{attr}=\"{prefix}");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + attr.len() + 2..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

fn assert_security_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn the_dashboard_refuses_strangers_and_cross_origin_changes() {
    let (_model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let base = base(&fixture);
    let token = std::fs::read_to_string(fixture.data_dir().join("dashboard.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fixture.data_dir().join("dashboard.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // No cookie, a wrong one: 401, with the security headers all the same.
    let none = http().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(none.headers());
    let wrong = http()
        .get(format!("{base}/sessions"))
        .header("cookie", format!("clawbox_dashboard={}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for path in [
        "/events/overview",
        "/agents",
        "/tasks",
        "/dropped",
        "/usage",
    ] {
        let r = http().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // A forged login code is refused; a real one works exactly once.
    let forged = http()
        .get(format!("{base}/login?code={}", "a".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let link = login_link(&fixture).await;
    assert!(link.starts_with(&format!("{base}/login?code=")), "{link}");
    let first = http().get(&link).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()["location"], "/");
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("clawbox_dashboard={}", token.trim())),
        "{cookie}"
    );
    let again = http().get(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    let cookie = HeaderValue::from_str(cookie.split(';').next().unwrap()).unwrap();
    let ok = http()
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_security_headers(ok.headers());

    // State changes need the dashboard's own Origin, cookie or not.
    let host = base.trim_start_matches("http://").to_owned();
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let mut request = http()
            .post(format!("{base}/tasks/task-none/pause"))
            .header("cookie", &cookie);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    let unsigned = http()
        .post(format!("{base}/tasks/task-none/pause"))
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    // Through both gates, the operation itself answers: there is no such task.
    let through = http()
        .post(format!("{base}/tasks/task-none/pause"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), StatusCode::CONFLICT);
    assert!(through.text().await.unwrap().contains("task-none"));
    fixture.stop().await.unwrap();
    assert!(!fixture.data_dir().join("dashboard.addr").exists());
}

#[tokio::test]
async fn a_dashboard_that_is_off_or_remote_without_consent_is_not_served() {
    let (_model, mut fixture) = setup().await;
    fixture.set("DASHBOARD_ADDR", "off");
    fixture.start().await.unwrap();
    assert!(!fixture.data_dir().join("dashboard.addr").exists());
    let out = fixture.command(&["dashboard"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DASHBOARD_ADDR=off"));
    fixture.stop().await.unwrap();

    fixture.set("DASHBOARD_ADDR", "0.0.0.0:0");
    let out = fixture.command(&["run"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DASHBOARD_ALLOW_REMOTE"));

    // A second host whose dashboard address is taken does not start, and says which setting.
    let (_other_model, mut other) = setup().await;
    other.start().await.unwrap();
    let taken = base(&other).trim_start_matches("http://").to_owned();
    fixture.set("DASHBOARD_ADDR", taken);
    let out = fixture.command(&["run"]).output().await.unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DASHBOARD_ADDR=") && stderr.contains("cannot listen"),
        "{stderr}"
    );
    other.stop().await.unwrap();
}

/// Every page over a host whose agent, user, model, tools, tasks and refused senders all wrote
/// hostile text: it shows up escaped, never as markup or invisible characters.
#[tokio::test]
async fn every_page_shows_hostile_text_escaped() {
    let (model, mut fixture) = setup().await;
    model.set_usage(/*prompt*/ 120, /*completion*/ 30);
    // The dropped rows below carry a fixed date; retention must not take them.
    fixture.set("RETENTION_DAYS", "36500");
    fixture.start().await.unwrap();
    let create = fixture
        .command_of(
            std::path::Path::new(env!("CARGO_BIN_EXE_create-agent")),
            &["--agent-id", "default", "--agent-name", HOSTILE],
        )
        .output()
        .await
        .unwrap();
    assert!(create.status.success(), "{create:?}");
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO dropped_messages (channel_type, platform_id, sender_id, sender_name, reason, at)
         VALUES ('telegram', ?1, ?1, ?1, ?1, '2026-03-01T12:00:00.000Z'),
                ('telegram', '-1001234', 'telegram:555', ?1, 'unknown chat', '2026-03-01T12:00:01.000Z')",
        [HOSTILE],
    )
    .unwrap();
    drop(conn);

    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    // A tool whose name is hostile (it fails: no such tool), then a hostile answer.
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        HOSTILE,
        json!({ "q": HOSTILE }),
    )]));
    model.push(Reply::text(format!("answer {HOSTILE}")));
    let (session, seq) = client.send(&format!("question {HOSTILE}")).await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let result = agent_calls(
        &mut client,
        &model,
        "schedule something",
        "schedule_task",
        json!({ "prompt": format!("task {HOSTILE}"), "cron": "0 9 * * *" }),
    )
    .await;
    let task = task_id(&result);

    let cookie = sign_in(&fixture).await;
    let overview = page(&fixture, &cookie, "/").await;
    assert!(
        overview.contains("data-sse=\"/events/overview\""),
        "{overview}"
    );
    let pages = [
        ("/", "&lt;script&gt;"),
        ("/sessions", "&lt;script&gt;"),
        (
            &format!("/sessions/{session}") as &str,
            "question &lt;script&gt;",
        ),
        ("/agents", "&lt;script&gt;alert(1)"),
        ("/tasks", "task &lt;script&gt;"),
        (&format!("/tasks/{task}") as &str, "task &lt;script&gt;"),
        ("/dropped", "&lt;img src=x"),
        ("/usage", "default"),
    ];
    for (path, expected) in pages {
        let body = page(&fixture, &cookie, path).await;
        assert_neutralised(path, &body);
        assert!(
            body.contains(expected),
            "{path} lacks {expected:?}:\n{body}"
        );
    }
    // The story: the message in, the model steps, the failed hostile tool call, the reply.
    let story = page(&fixture, &cookie, &format!("/sessions/{session}")).await;
    for expected in [
        "chat from you",
        "model step",
        "answer &lt;script&gt;",
        "⟨U+202E⟩gnp.exe⟨U+2066⟩x⟨U+0007⟩⟨U+001B⟩[31m",
        "delivered",
        "completed",
        // What the call was asked and answered, neutralised like the rest.
        "arguments: {&quot;q&quot;:&quot;&lt;script&gt;",
        "result: Error: unknown tool",
    ] {
        assert!(
            story.contains(expected),
            "story lacks {expected:?}:\n{story}"
        );
    }
    assert!(
        story.contains("class=\"fail\""),
        "the unknown tool is a failed call:\n{story}"
    );
    // The agents page names the wiring; the dropped page the command that wires the chat.
    let agents = page(&fixture, &cookie, "/agents").await;
    assert!(agents.contains("cli:local"), "{agents}");
    let dropped = page(&fixture, &cookie, "/dropped").await;
    assert!(
        dropped.contains("create-agent --agent-id default --telegram-chat-id -1001234"),
        "{dropped}"
    );
    // Tokens: the fake model counts 150 per request; three requests so far, plus the one the
    // scheduling turn's second step made.
    // The proxy counts a response once its body has ended, so the last one may land a moment
    // after the turn's verdict.
    let expected = format!("<td>{}</td>", 150 * model.request_count());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let usage = page(&fixture, &cookie, "/usage").await;
        assert!(usage.contains("<svg class=\"chart\""), "{usage}");
        if usage.contains(&expected) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {expected}:\n{usage}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The web chat: a file name, a question with its options, and a draft, all the agent's.
    let hostile_file = "<img src=x onerror=alert(5)>\"'&\u{202E}lmth.txt";
    model.push(Reply::tool_call(
        "write_file",
        json!({ "path": "h.txt", "content": "x" }),
    ));
    model.push(Reply::tool_call(
        "send_file",
        json!({ "path": "h.txt", "filename": hostile_file }),
    ));
    model.push(Reply::tool_call(
        "ask_user_question",
        json!({
            "title": HOSTILE,
            "question": HOSTILE,
            "options": ["<script>x</script>\u{202E}\u{7}", "plain"],
            "timeout_s": 600
        }),
    ));
    let gate = Gate::new();
    model.push(Reply::held(format!("draft {HOSTILE}"), 2, 1, &gate));
    let mut live = Events::open(&fixture, &cookie, "/events/chat").await;
    assert_eq!(
        chat(&fixture, &cookie, "web chat").await.status(),
        StatusCode::SEE_OTHER
    );
    let card = live
        .until(|name, data| name == "reset" && data.contains("/chat/questions/"))
        .await;
    assert_neutralised("the question card", &card);
    assert!(
        card.contains("&lt;script&gt;x&lt;/script&gt;⟨U+202E⟩⟨U+0007⟩</button>")
            && card.contains("⟨U+202E⟩gnp.exe⟨U+2066⟩x⟨U+0007⟩⟨U+001B⟩[31m"),
        "{card}"
    );
    let shown = chat_page_until(&fixture, &cookie, |p| p.contains("/chat/files/")).await;
    assert_neutralised("/chat", &shown);
    assert!(
        shown.contains("&lt;img src=x onerror=alert(5)&gt;&quot;&#39;&amp;⟨U+202E⟩lmth.txt</a>"),
        "{shown}"
    );
    let actions = links(&card, "action", "/chat/questions/");
    let answered = post_from_page(&fixture, &cookie, &actions[1])
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::SEE_OTHER);
    let draft = live
        .until(|name, data| name == "reset" && data.contains("draft &lt;script&gt;"))
        .await;
    assert_neutralised("the draft", &draft);
    assert!(
        draft.contains("draft &lt;script&gt;alert(1)")
            && draft.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
            ),
        "{draft}"
    );
    gate.open();
    chat_page_until(&fixture, &cookie, |p| {
        p.contains("⟨U+001B⟩[31m</div>") && !p.contains("is writing")
    })
    .await;

    // An unknown session is a 404 page, its name escaped.
    let (status, body) = get(&fixture, &cookie, "/sessions/%3Cb%3Enope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("&lt;b&gt;nope") && !body.contains("<b>nope"),
        "{body}"
    );
    fixture.stop().await.unwrap();
}

/// Reads server-sent events from a response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(fixture: &HostFixture, cookie: &HeaderValue, path: &str) -> Events {
        let response = http()
            .get(format!("{}{path}", base(fixture)))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (its name and data), keep-alive comments skipped.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue;
                }
                return (name, data.join("\n"));
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event within the wait")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one satisfies `check`.
    async fn until(&mut self, check: impl Fn(&str, &str) -> bool) -> String {
        loop {
            let (name, data) = self.next().await;
            if check(&name, &data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_overview_and_a_story_follow_the_host_live() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    let mut overview = Events::open(&fixture, &cookie, "/events/overview").await;
    let (name, first) = overview.next().await;
    assert_eq!(name, "reset");
    assert!(first.contains("No live sessions"), "{first}");

    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::text("first answer").after(Duration::from_millis(300)));
    let (session, seq) = client.send("hello dashboard").await.unwrap();
    let live = overview
        .until(|name, data| name == "reset" && data.contains(&session))
        .await;
    assert!(
        live.contains(&format!("href=\"/sessions/{session}\"")),
        "{live}"
    );
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);

    // The story stream starts with the whole timeline, then appends what happens next.
    let mut story = Events::open(&fixture, &cookie, &format!("/events/sessions/{session}")).await;
    let (name, timeline) = story.next().await;
    assert_eq!(name, "reset");
    assert!(
        timeline.contains("hello dashboard") && timeline.contains("first answer"),
        "{timeline}"
    );
    model.push(Reply::text("second answer"));
    let (_, seq) = client.send("and again").await.unwrap();
    let appended = story
        .until(|name, data| name == "append" && data.contains("second answer"))
        .await;
    assert!(
        !appended.contains("first answer"),
        "only new entries: {appended}"
    );
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    // A host that stops ends the streams instead of waiting for the browser.
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn task_buttons_pause_resume_run_and_cancel() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let result = agent_calls(
        &mut client,
        &model,
        "every morning",
        "schedule_task",
        json!({ "prompt": "morning report", "cron": "0 9 * * *" }),
    )
    .await;
    let task = task_id(&result);
    let cookie = sign_in(&fixture).await;
    let base = base(&fixture);
    let post = |op: &'static str| {
        let url = format!("{base}/tasks/{task}/{op}");
        let cookie = cookie.clone();
        let origin = base.clone();
        async move {
            http()
                .post(url)
                .header("cookie", cookie)
                .header("origin", origin)
                .send()
                .await
                .unwrap()
        }
    };
    let tasks = page(&fixture, &cookie, "/tasks").await;
    assert!(
        tasks.contains(&format!("action=\"/tasks/{task}/pause\"")),
        "{tasks}"
    );

    let paused = post("pause").await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    wait_task(&fixture, &task, |t| t["task"]["status"] == "paused").await;
    let tasks = page(&fixture, &cookie, "/tasks").await;
    assert!(
        tasks.contains(&format!("action=\"/tasks/{task}/resume\"")),
        "{tasks}"
    );
    assert_eq!(post("resume").await.status(), StatusCode::SEE_OTHER);
    wait_task(&fixture, &task, |t| t["task"]["status"] == "active").await;
    model.push(Reply::text("report done"));
    assert_eq!(post("run-now").await.status(), StatusCode::SEE_OTHER);
    wait_task(&fixture, &task, |t| {
        t["runs"].as_array().is_some_and(|runs| {
            runs.iter()
                .any(|r| r["trigger"] == "run-now" && r["outcome"] == "completed")
        })
    })
    .await;
    let shown = page(&fixture, &cookie, &format!("/tasks/{task}")).await;
    assert!(
        shown.contains("run-now") && shown.contains("completed"),
        "{shown}"
    );
    assert_eq!(post("cancel").await.status(), StatusCode::SEE_OTHER);
    wait_task(&fixture, &task, |t| t["task"]["status"] == "cancelled").await;
    // A cancelled task cannot be resumed; the page says why, escaped like everything else.
    let refused = post("resume").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("class=\"error\"") && text.contains(&task),
        "{text}"
    );
    fixture.stop().await.unwrap();
}

/// The web chat is a conversation of its own with the default agent: the browser's message goes
/// through the router as `web:owner`, the fake model answers, and the page shows the reply,
/// following live. Terminal and web chat do not share a session.
#[tokio::test]
async fn the_web_chat_talks_to_the_default_agent() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    let base = base(&fixture);
    let empty = page(&fixture, &cookie, "/chat").await;
    assert!(
        empty.contains("No conversation yet") && empty.contains("action=\"/chat\""),
        "{empty}"
    );

    let post = |text: String| {
        let (url, cookie, origin) = (format!("{base}/chat"), cookie.clone(), base.clone());
        async move {
            http()
                .post(url)
                .header("cookie", cookie)
                .header("origin", origin)
                .form(&[("text", text)])
                .send()
                .await
                .unwrap()
        }
    };
    model.push(Reply::text("hello from the web"));
    let sent = post("hi from the browser".into()).await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    assert_eq!(sent.headers()["location"], "/chat");
    let deadline = tokio::time::Instant::now() + WAIT;
    let shown = loop {
        let shown = page(&fixture, &cookie, "/chat").await;
        // The reply, and its delivery record (written just after it).
        if shown.contains("hello from the web") && shown.contains("delivered") {
            break shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reply:\n{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        shown.contains("hi from the browser") && shown.contains("data-sse=\"/events/sessions/"),
        "{shown}"
    );
    let request = model.last_request().unwrap();
    let last = request.messages().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last.contains("hi from the browser"), "{last}");
    // The reply is recorded as delivered; the session is the web chat's, not the terminal's.
    let sessions = fixture
        .command(&["sessions", "--json"])
        .output()
        .await
        .unwrap();
    let sessions: serde_json::Value = serde_json::from_slice(&sessions.stdout).unwrap();
    let chats: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["chat"].as_str().unwrap())
        .collect();
    assert_eq!(chats, ["web:owner"]);

    // Empty and oversized messages are refused and nothing is sent.
    let requests = model.request_count();
    assert_eq!(post("   ".into()).await.status(), StatusCode::BAD_REQUEST);
    let big = post("x".repeat(40 * 1024)).await;
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(model.request_count(), requests);
    // A cross-origin form post is refused like every change.
    let forged = http()
        .post(format!("{base}/chat"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("text", "from elsewhere")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    fixture.stop().await.unwrap();
}

/// The web chat shows the reply while the agent writes it (the draft grows over the chat's
/// live stream, and the delivered reply takes its place); a draft whose turn ends without a
/// reply disappears.
#[tokio::test]
async fn the_web_chat_shows_a_reply_while_it_is_written() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    let mut live = Events::open(&fixture, &cookie, "/events/chat").await;
    let (name, first) = live.next().await;
    assert_eq!(name, "reset");
    assert!(!first.contains("is writing"), "{first}");

    let gate = Gate::new();
    let answer = "Half of it now, the other half later.";
    model.push(Reply::held(
        answer, /*pieces*/ 2, /*before*/ 1, &gate,
    ));
    assert_eq!(
        chat(&fixture, &cookie, "tell me slowly").await.status(),
        StatusCode::SEE_OTHER
    );
    let half = &answer[..answer.len().div_ceil(2)];
    let draft = live
        .until(|name, data| name == "reset" && data.contains("is writing"))
        .await;
    assert!(
        draft.contains(&format!("<div class=\"text\">{half}</div>")),
        "{draft}"
    );
    // A page opened now shows the draft too, and not yet a reply.
    let shown = page(&fixture, &cookie, "/chat").await;
    assert!(
        shown.contains("class=\"draft\"") && shown.contains(half) && !shown.contains(answer),
        "{shown}"
    );
    gate.open();
    let done = live
        .until(|name, data| name == "reset" && !data.contains("is writing"))
        .await;
    assert!(!done.contains(half), "{done}");
    let shown = chat_page_until(&fixture, &cookie, |p| {
        p.contains(answer) && p.contains("delivered")
    })
    .await;
    assert!(!shown.contains("class=\"draft\""), "{shown}");
    assert_eq!(shown.matches(answer).count(), 1, "{shown}");

    // The runner dies mid-stream and the retried turn fails: the draft goes, the failure shows.
    let gate = Gate::new();
    model.push(Reply::held("A first half that never ends.", 4, 2, &gate));
    model.push(Reply::Status(400, "the model refuses this one".into()));
    assert_eq!(
        chat(&fixture, &cookie, "try this").await.status(),
        StatusCode::SEE_OTHER
    );
    live.until(|name, data| name == "reset" && data.contains("A first"))
        .await;
    let session = web_session(&fixture);
    signal(runner_pid(&fixture, &session, None).await, libc::SIGKILL);
    let gone = live
        .until(|name, data| name == "reset" && !data.contains("is writing"))
        .await;
    assert!(!gone.contains("A first"), "{gone}");
    gate.open();
    let shown = chat_page_until(&fixture, &cookie, |p| {
        p.contains("the model refuses this one")
    })
    .await;
    assert!(!shown.contains("class=\"draft\""), "{shown}");
    fixture.stop().await.unwrap();
}

/// Files both ways: what the browser uploads reaches the agent's inbox as an attachment (its
/// hostile name made one safe component), and what the agent sends is a download of the web
/// chat only — never a page, never another session's file, never by a forged path.
#[tokio::test]
async fn files_go_both_ways_in_the_web_chat() {
    let (model, mut fixture) = setup().await;
    fixture.set("TELEGRAM_MAX_FILE_MB", "1");
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    let base = base(&fixture);

    let notes = b"the secret word is fennel".to_vec();
    let hostile_upload = "../../<img src=x onerror=alert(4)>\u{202E}lmth.txt";
    model.push(Reply::text("got it"));
    let sent = chat_with_files(
        &fixture,
        &cookie,
        "here are my notes",
        &[(hostile_upload, &notes)],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER, "{}", fixture.logs());
    chat_page_until(&fixture, &cookie, |p| p.contains("got it")).await;
    let session = web_session(&fixture);
    let files = session_dir(&fixture, &session).join("inbound/files");
    let dirs: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = dirs[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(dir.starts_with("msg-owner-web_"), "{dir}");
    let stored: Vec<_> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let stored_name = &stored[0];
    assert!(
        !stored_name.contains('/') && !stored_name.starts_with('.') && !stored_name.contains('<'),
        "{stored_name:?}"
    );
    assert_eq!(std::fs::read(dirs[0].join(stored_name)).unwrap(), notes);
    let prompt = model.last_request().unwrap().messages().last().unwrap()["content"].to_string();
    assert!(
        prompt.contains(&format!("path=\\\"inbound/{dir}/"))
            && prompt.contains(&format!("bytes=\\\"{}\\\"", notes.len())),
        "{prompt}"
    );
    assert!(prompt.contains("here are my notes"), "{prompt}");
    // Nothing of the upload is left outside the session.
    let spool = fixture.data_dir().join("web-uploads");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    // Over the cap (TELEGRAM_MAX_FILE_MB), or too many files: refused whole, nothing sent.
    let requests = model.request_count();
    let big = vec![b'x'; 1_500_000];
    let refused = chat_with_files(&fixture, &cookie, "big one", &[("big.bin", &big)]).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = refused.text().await.unwrap();
    assert!(text.contains("larger than the 1 MB limit"), "{text}");
    let many: Vec<(&str, &[u8])> = (0..11).map(|_| ("n.txt", b"n".as_slice())).collect();
    let refused = chat_with_files(&fixture, &cookie, "many", &many).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused.text().await.unwrap().contains("at most 10 files"));
    // An empty file input (no file chosen) is no attachment; the text alone goes.
    model.push(Reply::text("text alone"));
    let plain = chat_with_files(&fixture, &cookie, "no file", &[("", b"")]).await;
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    chat_page_until(&fixture, &cookie, |p| p.contains("text alone")).await;
    assert_eq!(model.request_count(), requests + 1);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    // The agent sends an HTML file under a hostile name: a download, not a page.
    let hostile_name = "<img src=x onerror=alert(3)>\u{202E}lmth.html";
    let html = "<script>alert('served inline')</script>";
    model.push(Reply::tool_call(
        "write_file",
        json!({ "path": "page.html", "content": html }),
    ));
    model.push(Reply::tool_call(
        "send_file",
        json!({ "path": "page.html", "text": "your page", "filename": hostile_name }),
    ));
    model.push(Reply::text("sent it"));
    assert_eq!(
        chat(&fixture, &cookie, "send me a page").await.status(),
        StatusCode::SEE_OTHER
    );
    let shown = chat_page_until(&fixture, &cookie, |p| p.contains("sent it")).await;
    assert_neutralised("/chat", &shown);
    let hrefs = links(&shown, "href", &format!("/chat/files/{session}/"));
    assert_eq!(hrefs.len(), 1, "{shown}");
    assert!(
        shown.contains("&lt;img src=x onerror=alert(3)&gt;⟨U+202E⟩lmth.html</a>"),
        "{shown}"
    );
    let download = http()
        .get(format!("{base}{}", hrefs[0]))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let headers = download.headers().clone();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        "attachment; filename=\"_img src=x onerror=alert(3)__lmth.html\"; \
         filename*=UTF-8''_img%20src%3Dx%20onerror%3Dalert%283%29__lmth.html"
    );
    assert_eq!(download.text().await.unwrap(), html);

    // The story page of the web chat's session links the same file.
    let story = page(&fixture, &cookie, &format!("/sessions/{session}")).await;
    assert!(story.contains(&hrefs[0]), "{story}");

    // Forged ids: another index, another row, a path, a session that is not the web chat's.
    let seq = hrefs[0].rsplit('/').nth(1).unwrap().to_owned();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::tool_call(
        "write_file",
        json!({ "path": "t.txt", "content": "terminal only" }),
    ));
    model.push(Reply::tool_call("send_file", json!({ "path": "t.txt" })));
    model.push(Reply::text("sent to the terminal"));
    let (terminal, done) = client.send("a file for the terminal").await.unwrap();
    assert_eq!(client.done(done).await.unwrap().0, InboundStatus::Completed);
    let terminal_story = page(&fixture, &cookie, &format!("/sessions/{terminal}")).await;
    assert!(
        terminal_story.contains("with t.txt") && !terminal_story.contains("/chat/files/"),
        "{terminal_story}"
    );
    for forged in [
        format!("/chat/files/{session}/{seq}/1"),
        format!("/chat/files/{session}/1/0"),
        format!("/chat/files/{session}/999/0"),
        format!("/chat/files/{session}/{seq}/x"),
        format!("/chat/files/{session}/{seq}/..%2F..%2Finbound.db"),
        format!("/chat/files/..%2F{session}/{seq}/0"),
        format!("/chat/files/{terminal}/{seq}/0"),
        format!("/chat/files/{terminal}/1/0"),
        format!("/chat/files/{terminal}/3/0"),
        format!("/chat/files/{terminal}/5/0"),
        "/chat/files/nope/1/0".to_owned(),
    ] {
        let (status, body) = get(&fixture, &cookie, &forged).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{forged}: {body}");
        assert!(!body.contains("terminal only"), "{forged}");
    }
    // Without the cookie, nothing.
    let stranger = http()
        .get(format!("{base}{}", hrefs[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    fixture.stop().await.unwrap();
}

/// The agent's questions are buttons in the web chat: a click answers exactly once, as a
/// Telegram button press does; a second click, a cross-origin one, a forged question or a
/// question asked in another chat change nothing.
#[tokio::test]
async fn questions_in_the_web_chat_are_buttons_answered_once() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    let base = base(&fixture);
    let mut live = Events::open(&fixture, &cookie, "/events/chat").await;
    live.next().await;

    let call = ToolCall::new(
        "ask_user_question",
        json!({ "title": "Pick", "question": "Pick one?", "options": ["apples", "pears"], "timeout_s": 600 }),
    );
    let call_id = call.id.clone();
    model.push(Reply::ToolCalls(vec![call]));
    model.push(Reply::text("pears it is"));
    assert_eq!(
        chat(&fixture, &cookie, "ask me something").await.status(),
        StatusCode::SEE_OTHER
    );
    let card = live
        .until(|name, data| name == "reset" && data.contains("Pick one?"))
        .await;
    let actions = links(&card, "action", "/chat/questions/");
    assert_eq!(actions.len(), 2, "{card}");
    assert!(card.contains(">apples</button>") && card.contains(">pears</button>"));
    // The page shows it too (a browser that opens it now).
    let shown = page(&fixture, &cookie, "/chat").await;
    assert!(shown.contains(&actions[1]), "{shown}");

    // From elsewhere: refused before anything is answered.
    let forged = http()
        .post(format!("{base}{}", actions[1]))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let unsigned = http()
        .post(format!("{base}{}", actions[1]))
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let id = actions[1].split('/').nth(3).unwrap().to_owned();
    for bad in [
        format!("/chat/questions/{id}/7"),
        format!("/chat/questions/{id}/x"),
        "/chat/questions/nope/0".to_owned(),
    ] {
        let r = post_from_page(&fixture, &cookie, &bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
        assert!(r.text().await.unwrap().contains("not known here"));
    }

    // The click, then a double click.
    let first = post_from_page(&fixture, &cookie, &actions[1])
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()["location"], "/chat");
    let second = post_from_page(&fixture, &cookie, &actions[0])
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let text = second.text().await.unwrap();
    assert!(
        text.contains("This question was answered already") && text.contains("pears"),
        "{text}"
    );
    let gone = live
        .until(|name, data| name == "reset" && !data.contains("Pick one?"))
        .await;
    assert!(!gone.contains("/chat/questions/"), "{gone}");
    chat_page_until(&fixture, &cookie, |p| p.contains("pears it is")).await;
    // The tool got the answer once: the option chosen, by the dashboard's owner.
    let result = model
        .requests()
        .iter()
        .flat_map(|r| r.messages().to_vec())
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id.as_str())
        .and_then(|m| m["content"].as_str().map(str::to_owned))
        .unwrap();
    assert!(
        result.contains("pears") && !result.contains("apples"),
        "{result}"
    );
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let (status, outcome): (String, String) = conn
        .query_row(
            "SELECT status, outcome FROM questions WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "answered");
    let outcome: serde_json::Value = serde_json::from_str(&outcome).unwrap();
    assert_eq!(outcome["value"], "pears");
    assert_eq!(outcome["answered_by"], "web:owner");

    // A question the agent asks in the terminal cannot be answered from the web chat, though
    // the dashboard's owner owns the agent.
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    model.push(Reply::tool_call(
        "ask_user_question",
        json!({ "title": "T", "question": "Terminal only?", "options": ["yes"], "timeout_s": 600 }),
    ));
    model.push(Reply::text("ok"));
    client.send("ask in the terminal").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let terminal_question: String = loop {
        let found = conn.query_row(
            "SELECT id FROM questions WHERE channel_type = 'cli' AND status = 'pending'",
            [],
            |r| r.get(0),
        );
        if let Ok(id) = found {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no terminal question"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shown = page(&fixture, &cookie, "/chat").await;
    assert!(!shown.contains("Terminal only?"), "{shown}");
    let refused = post_from_page(
        &fixture,
        &cookie,
        &format!("/chat/questions/{terminal_question}/0"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let status: String = conn
        .query_row(
            "SELECT status FROM questions WHERE id = ?1",
            [&terminal_question],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "pending");
    fixture.stop().await.unwrap();
}

/// A `/compact` from the web chat: the story shows the runner's `compacted` event as
/// `clawbox logs` does, neutralised like every line.
#[tokio::test]
async fn the_chat_story_shows_a_compaction() {
    let (model, mut fixture) = setup().await;
    model.summarise_when(agent_runner::compact::SUMMARY_PROMPT);
    fixture.start().await.unwrap();
    let cookie = sign_in(&fixture).await;
    model.push(Reply::text(format!("noted {HOSTILE}")));
    assert_eq!(
        chat(&fixture, &cookie, &format!("remember {HOSTILE}"))
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    chat_page_until(&fixture, &cookie, |p| p.contains("noted &lt;script&gt;")).await;
    let compacted = chat(&fixture, &cookie, "/compact").await;
    assert!(
        compacted.status() == StatusCode::SEE_OTHER || compacted.status() == StatusCode::OK,
        "{}",
        compacted.status()
    );
    let shown = chat_page_until(&fixture, &cookie, |p| p.contains("compacted (/compact)")).await;
    assert_neutralised("/chat", &shown);
    assert!(
        shown.contains("compacted (/compact): 2 entries summarised, 0 kept,"),
        "{shown}"
    );
    let session = web_session(&fixture);
    let story = page(&fixture, &cookie, &format!("/sessions/{session}")).await;
    assert!(story.contains("compacted (/compact)"), "{story}");
    assert!(story.contains("archive: "), "{story}");
    fixture.stop().await.unwrap();
}
