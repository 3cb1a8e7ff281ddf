//! A hostile agent against the real host. Each attack is what an agent with a shell in its
//! session can do: call the model proxy with its own session token (readable in its runner's
//! environment), or write rows into its own `outbound.db`. Each test asserts that the attack
//! did not work, that the host kept serving, and that the user was told where there is
//! something to tell.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use serde_json::json;
use testkit::HostFixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

/// What an upstream model service received: method, path with query, headers.
type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

/// An upstream that answers every chat request with "ok" and records every request, whatever
/// its path: proof of what the proxy let through.
async fn recording_upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    async fn any(
        State(seen): State<Seen>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        seen.lock()
            .unwrap()
            .push((method.to_string(), path, headers));
        axum::Json(json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "fake-model",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "ok" }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
        }))
        .into_response()
    }
    let app = Router::new().fallback(any).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

/// The live runner's session token (what the agent can read from its runner's environment).
async fn session_token(fixture: &HostFixture, session: &str) -> String {
    let pid = runner_pid(fixture, session, None).await;
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"CLAWBOX_MODEL_TOKEN="))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .expect("runner has a token")
}

/// Sends one raw HTTP/1.1 request (the path exactly as given, nothing normalised by a client
/// library) and returns the status code.
async fn raw_request(fixture: &HostFixture, request: &str) -> u16 {
    let addr = std::fs::read_to_string(fixture.data_dir().join("proxy.addr")).unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr.trim()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

fn get(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

/// Asks one message and waits for its answer; proof that the host still serves.
async fn answered(client: &mut Client, text: &str) {
    let (_session, seq) = client.send(text).await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
}

#[tokio::test]
async fn proxy_paths_cannot_leave_the_inference_routes() {
    let (upstream, seen) = recording_upstream().await;
    let mut fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &upstream).unwrap();
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let token = session_token(&fixture, &session).await;
    let before = seen.lock().unwrap().len();

    let attacks = [
        "/v1/models/%2e%2e/files",
        "/v1/models/%2E%2E/%2E%2E/admin",
        "/v1/models/..%2Ffiles",
        "/v1/models/%2e%2e%2ffiles",
        "/v1/models/../files",
        "/v1/models/./x",
        "/v1/models//files",
        "/v1/models/x/../../files",
        "/v1/models/%252e%252e/files",
        "/v1/models/a/b/c",
        "/v1/files",
        "/v1/organization/users",
        "/v1//models",
        "/v1/models%2f..%2ffiles",
    ];
    for path in attacks {
        let status = raw_request(&fixture, &get(path, &token)).await;
        assert!(
            status == 404 || status == 400,
            "{path} answered {status} instead of being refused"
        );
    }
    let post = format!(
        "POST /v1/chat/completions/%2e%2e/%2e%2e/files HTTP/1.1\r\nHost: proxy\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    assert_eq!(raw_request(&fixture, &post).await, 404);
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "refused requests reached the upstream: {:?}",
        &seen.lock().unwrap()[before..]
    );

    // A route that is allowed still works, with only allow-listed headers forwarded.
    let request = format!(
        "GET /v1/models/gpt-4o HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\n\
         OpenAI-Organization: org-victim\r\nOpenAI-Project: proj-victim\r\n\
         X-HTTP-Method-Override: DELETE\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: a=b\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_request(&fixture, &request).await, 200);
    let (method, path, headers) = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("GET", "/v1/models/gpt-4o")
    );
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    for forbidden in [
        "openai-organization",
        "openai-project",
        "x-http-method-override",
        "x-forwarded-for",
        "cookie",
    ] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} forwarded: {names:?}"
        );
    }
    assert!(names.contains(&"accept"), "{names:?}");
    assert!(
        headers.contains(&("authorization".to_owned(), "Bearer test-key".to_owned())),
        "{headers:?}"
    );
    assert!(
        fixture.logs().contains("model proxy refused"),
        "the refusals were not logged"
    );
    answered(&mut client, "still there?").await;
    fixture.stop().await.unwrap();
}

/// One token cannot flood the upstream or the host's memory: requests beyond the per-token
/// rate get 429, a body beyond the cap gets 413, and the runner's own turns still work after.
#[tokio::test]
async fn proxy_caps_rate_and_body_per_token() {
    let (upstream, seen) = recording_upstream().await;
    let mut fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &upstream).unwrap();
    fixture
        .set("PROXY_REQUESTS_PER_MINUTE", "20")
        .set("PROXY_MAX_REQUEST_MB", "1");
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let token = session_token(&fixture, &session).await;

    let big = "x".repeat(2 << 20);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let before = seen.lock().unwrap().len();
    assert_eq!(raw_request(&fixture, &request).await, 413);
    assert_eq!(seen.lock().unwrap().len(), before);

    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(raw_request(&fixture, &get("/v1/models", &token)).await);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 15, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // The flood used the agent's own allowance; the host serves other conversations as before
    // (this one included, once a minute has passed: not waited for here).
    let logs = fixture.logs();
    assert!(logs.contains("rate"), "{logs}");
    fixture.stop().await.unwrap();
}

/// The route and a fresh seq base for forged rows: those of the session's first reply.
fn forge_conn(fixture: &HostFixture, session: &str) -> (rusqlite::Connection, (String, String)) {
    let db = session_dir(fixture, session).join("outbound/outbound.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let route = conn
        .query_row(
            "SELECT channel_type, platform_id FROM messages_out ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (conn, route)
}

/// Writes a chat row as the agent can (any seq, any content).
fn forge_row(conn: &rusqlite::Connection, route: &(String, String), seq: i64, content: &str) {
    conn.execute(
        "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
             platform_id, thread_id, content)
         VALUES (?1, ?2, 'chat', NULL, '2026-01-02T03:04:05.000Z', ?3, ?4, NULL, ?5)",
        rusqlite::params![seq, format!("forged-{seq}"), route.0, route.1, content],
    )
    .unwrap();
}

fn next_odd(conn: &rusqlite::Connection) -> i64 {
    let max: i64 = conn
        .query_row(
            "SELECT MAX(seq) FROM messages_out WHERE seq < 9007199254740991",
            [],
            |r| r.get(0),
        )
        .unwrap();
    max + 20 + (max + 1) % 2
}

const UNDELIVERABLE: &str = "the agent produced a reply clawbox could not deliver";

/// Waits until `n` notices about undeliverable replies have been seen.
async fn undeliverable_notices(client: &mut Client, n: usize) -> Vec<String> {
    let count = |c: &Client| {
        c.notices()
            .into_iter()
            .filter(|t| t.contains(UNDELIVERABLE))
            .collect::<Vec<_>>()
    };
    while count(client).len() < n {
        client
            .wait_for(|e| {
                matches!(e, Event::Chat(ChatEvent::Notice { text }) if text.contains(UNDELIVERABLE))
            })
            .await
            .unwrap();
    }
    count(client)
}

fn reply_texts(client: &Client) -> Vec<String> {
    client
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Chat(ChatEvent::Reply { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A row that is not JSON, one of 5 MB, one with a seq at `i64::MAX`: each fails alone with a
/// notice to the chat, the valid row after them is delivered, and the conversation goes on
/// (a later message gets a normal seq and an answer).
#[tokio::test]
async fn forged_rows_fail_alone_and_the_session_goes_on() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let (conn, route) = forge_conn(&fixture, &session);
    let base = next_odd(&conn);
    forge_row(&conn, &route, base, "this is not JSON");
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(5 << 20));
    forge_row(&conn, &route, base + 2, &huge);
    forge_row(&conn, &route, base + 4, r#"{"text":"the valid one"}"#);
    forge_row(&conn, &route, i64::MAX, r#"{"text":"out of range"}"#);
    drop(conn);

    let notices = undeliverable_notices(&mut client, 3).await;
    assert!(
        notices.iter().any(|n| n.contains("not JSON")),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("bytes")), "{notices:?}");
    assert!(
        notices.iter().any(|n| n.contains("out of range")),
        "{notices:?}"
    );
    // The valid row's reply and the out-of-range row's notice come in either order.
    if !reply_texts(&client).iter().any(|t| t == "the valid one") {
        client
            .wait_for(
                |e| matches!(e, Event::Chat(ChatEvent::Reply { text, .. }) if text == "the valid one"),
            )
            .await
            .unwrap();
    }
    assert!(!reply_texts(&client).iter().any(|t| t.len() > 1 << 20));

    model.push(testkit::Reply::text("still here"));
    let (_, later) = client.send("are you there?").await.unwrap();
    assert!(later < 1 << 53, "{later}");
    assert_eq!(
        client.done(later).await.unwrap().0,
        InboundStatus::Completed
    );
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.replies_to(later), vec!["still here".to_owned()]);
    // Each bad row was reported once.
    client.settle(Duration::from_secs(2)).await;
    assert_eq!(undeliverable_notices(&mut client, 3).await.len(), 3);
    fixture.stop().await.unwrap();
}

/// Attachments the agent lists are refused when they are hard links (one file listed many
/// times would be copied many times), not regular files (a FIFO would block the reader), too
/// many, or too large together; the user is told, and the next reply goes out.
#[tokio::test]
async fn attachment_amplification_is_refused() {
    let (_model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let outbound = session_dir(&fixture, &session).join("outbound");
    let (conn, route) = forge_conn(&fixture, &session);
    let base = next_odd(&conn);

    let attach = |seq: i64, files: &[&str]| {
        conn.execute(
            "INSERT INTO messages_out (seq, id, kind, in_reply_to, created_at, channel_type,
                 platform_id, thread_id, content)
             VALUES (?1, ?2, 'chat', NULL, '2026-01-02T03:04:05.000Z', ?3, ?4, NULL, ?5)",
            rusqlite::params![
                seq,
                format!("att-{seq}"),
                route.0,
                route.1,
                json!({"text": format!("files {seq}"), "files": files}).to_string()
            ],
        )
        .unwrap();
    };
    let dir = |seq: i64| {
        let d = outbound.join("files").join(format!("att-{seq}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // Hard links of one file.
    let d = dir(base);
    std::fs::write(d.join("big.bin"), vec![7u8; 1 << 20]).unwrap();
    for i in 0..5 {
        std::fs::hard_link(d.join("big.bin"), d.join(format!("l{i}.bin"))).unwrap();
    }
    // A FIFO.
    let d = dir(base + 2);
    let fifo = std::ffi::CString::new(d.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Three sparse files of 20 MB: more than the total a message may carry.
    let d = dir(base + 4);
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::File::create(d.join(name))
            .unwrap()
            .set_len(20 << 20)
            .unwrap();
    }
    // Too many files.
    let d = dir(base + 6);
    let many: Vec<String> = (0..25).map(|i| format!("f{i}.txt")).collect();
    for name in &many {
        std::fs::write(d.join(name), "x").unwrap();
    }
    attach(
        base,
        &["big.bin", "l0.bin", "l1.bin", "l2.bin", "l3.bin", "l4.bin"],
    );
    attach(base + 2, &["pipe"]);
    attach(base + 4, &["a.bin", "b.bin", "c.bin"]);
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    attach(base + 6, &many_refs);
    forge_row(&conn, &route, base + 8, r#"{"text":"after the files"}"#);
    drop(conn);

    let notices = undeliverable_notices(&mut client, 4).await;
    assert!(
        notices.iter().any(|n| n.contains("hard link")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("not a regular file")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("in total")),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("files")), "{notices:?}");
    client
        .wait_for(|e| matches!(e, Event::Chat(ChatEvent::Reply { text, .. }) if text == "after the files"))
        .await
        .unwrap();
    // Nothing of the refused rows was copied.
    let copied: u64 = walk_size(&fixture.data_dir().join("files"));
    assert!(copied < 1 << 20, "{copied} bytes copied");
    answered(&mut client, "still there?").await;
    fixture.stop().await.unwrap();
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                walk_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}
