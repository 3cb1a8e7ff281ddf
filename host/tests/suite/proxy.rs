//! The model proxy end to end: runners talk to the host's proxy with a session token, the real
//! key reaches only the model service, unknown tokens are refused, streams pass through as they
//! come, tokens are counted per session and a daily budget is enforced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mailbox::InboundStatus;
use serde_json::{Value, json};
use testkit::{HostFixture, Reply};
use tokio::sync::Notify;

use super::support::*;

/// `http://127.0.0.1:<port>/v1` of the running host's proxy.
fn proxy_url(fixture: &HostFixture) -> String {
    let addr = std::fs::read_to_string(fixture.data_dir().join("proxy.addr")).unwrap();
    format!("http://{}/v1", addr.trim())
}

/// The environment a process was started with.
fn environ(pid: u32) -> HashMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|var| {
            let text = String::from_utf8_lossy(var);
            let (k, v) = text.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Starts a host, runs one turn, and returns the client, the session id and the live runner's
/// session token (the runner idles for a minute, so the token stays valid).
async fn one_turn(fixture: &mut HostFixture) -> (Client, String, String, u32) {
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap().0,
        InboundStatus::Completed,
        "{}",
        fixture.logs()
    );
    let pid = runner_pid(fixture, &session, None).await;
    let env = environ(pid);
    assert!(!env.contains_key("OPENAI_API_KEY"), "{env:?}");
    let token = env["CLAWBOX_MODEL_TOKEN"].clone();
    (client, session, token, pid)
}

/// `(day, prompt, completion, requests)` rows of the session in the central DB.
fn usage_rows(fixture: &HostFixture, session: &str) -> Vec<(String, i64, i64, i64)> {
    let conn = rusqlite::Connection::open_with_flags(
        fixture.data_dir().join("clawbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT day, prompt_tokens, completion_tokens, requests FROM token_usage
             WHERE session_id = ?1 ORDER BY day",
        )
        .unwrap();
    stmt.query_map([session], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Waits until the session's total request count reaches `requests` (usage is recorded when a
/// response body has been sent, a moment after the client has it).
async fn usage_after(
    fixture: &HostFixture,
    session: &str,
    requests: i64,
) -> Vec<(String, i64, i64, i64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = usage_rows(fixture, session);
        if rows.iter().map(|r| r.3).sum::<i64>() >= requests {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage never reached {requests} requests: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn completion_with_usage(text: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-counted",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-model",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion },
    })
}

#[tokio::test]
async fn the_key_reaches_the_model_but_never_the_runner() {
    let (model, mut fixture) = setup().await;
    let (mut client, _session, token, pid) = one_turn(&mut fixture).await;
    client.settle(Duration::from_millis(100)).await;

    let env = environ(pid);
    assert_eq!(env["OPENAI_BASE_URL"], proxy_url(&fixture));
    assert!(
        token.starts_with("cbx-") && token.len() >= 4 + 32,
        "{token}"
    );
    assert!(
        !env.values().any(|v| v.contains("test-key")),
        "the real key leaked into the runner: {env:?}"
    );

    let requests = model.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer test-key"));
        assert!(
            !request.headers.iter().any(|(_, v)| v.contains(&token)),
            "the session token reached the model service: {:?}",
            request.headers
        );
    }

    // Ending the runner revokes its token.
    signal(pid, libc::SIGKILL);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = http
            .get(format!("{}/models", proxy_url(&fixture)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token still valid after the runner died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_and_missing_tokens_are_refused() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let url = format!("{}/chat/completions", proxy_url(&fixture));
    let body = json!({ "model": "fake-model", "messages": [{ "role": "user", "content": "hi" }] });
    let http = reqwest::Client::new();
    let attempts = [
        http.post(&url).json(&body),
        http.post(&url).json(&body).bearer_auth("cbx-not-a-token"),
        http.post(&url).json(&body).bearer_auth("test-key"),
        http.post(&url).json(&body).basic_auth("user", Some("pw")),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("session token"),
            "{error}"
        );
    }
    assert_eq!(model.request_count(), 0, "a refused request was forwarded");
    assert!(
        fixture
            .logs()
            .contains("model proxy refused a request without a valid session token"),
        "{}",
        fixture.logs()
    );
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn streams_pass_through_unchanged_and_statuses_too() {
    let (model, mut fixture) = setup().await;
    let (_client, session, token, _pid) = one_turn(&mut fixture).await;
    let before = usage_after(&fixture, &session, 1).await;
    let http = reqwest::Client::new();
    let base = proxy_url(&fixture);

    let events = vec![
        json!({ "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
                "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "Hel" }, "finish_reason": null }] }),
        json!({ "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
                "choices": [{ "index": 0, "delta": { "content": "lo" }, "finish_reason": "stop" }] }),
        json!({ "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
                "choices": [], "usage": { "prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37 } }),
    ];
    let expected: String = events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect();
    model.push(Reply::Sse(events));
    let response = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({
            "model": "fake-model",
            "stream": true,
            "stream_options": { "include_usage": true },
            "messages": [{ "role": "user", "content": "stream please" }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.text().await.unwrap(), expected);
    let forwarded = model.last_request().unwrap();
    assert_eq!(forwarded.body["stream"], true);
    assert_eq!(forwarded.header("authorization"), Some("Bearer test-key"));

    // The final chunk's usage is added to the session's count.
    let after = usage_after(&fixture, &session, 2).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].1 - before[0].1, 30);
    assert_eq!(after[0].2 - before[0].2, 7);

    // Error statuses and bodies come back as the service sent them.
    model.push(Reply::Status(503, "overloaded".to_owned()));
    let response = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({ "model": "fake-model", "messages": [{ "role": "user", "content": "x" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["message"], "overloaded");
    // The fake serves no model list: its 404 passes through (not the proxy's 401 or 404).
    let response = http
        .get(format!("{base}/models"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(model.last_request().unwrap().path, "/v1/chat/completions");
    // Routes beyond inference are not forwarded at all.
    let response = http
        .post(format!("{base}/files"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unknown_url");
    fixture.stop().await.unwrap();
}

/// An upstream that answers plain requests at once and holds a stream after its first event
/// until released: proves the proxy hands each chunk on as it arrives.
#[derive(Clone, Default)]
struct GatedUpstream {
    release: Arc<Notify>,
    streams: Arc<Mutex<u32>>,
}

async fn gated(
    axum::extract::State(up): axum::extract::State<GatedUpstream>,
    Json(body): Json<Value>,
) -> Response {
    if body["stream"] != true {
        return Json(completion_with_usage("ok", 10, 1)).into_response();
    }
    *up.streams.lock().unwrap() += 1;
    let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\n";
    let rest =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"rest\"}}]}\n\ndata: [DONE]\n\n";
    let release = Arc::clone(&up.release);
    let stream = futures::stream::unfold(0, move |step| {
        let release = Arc::clone(&release);
        async move {
            match step {
                0 => Some((Ok::<_, std::convert::Infallible>(first.to_owned()), 1)),
                1 => {
                    release.notified().await;
                    Some((Ok(rest.to_owned()), 2))
                }
                _ => None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[tokio::test]
async fn a_stream_is_not_buffered() {
    let upstream = GatedUpstream::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(gated))
        .with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut fixture =
        HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &format!("http://{addr}/v1")).unwrap();
    // The agent's own turn asks for its answer whole: the gated stream is the test's.
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("container.json"), r#"{ "stream": false }"#).unwrap();
    let (_client, _session, token, _pid) = one_turn(&mut fixture).await;

    let mut response = reqwest::Client::new()
        .post(format!("{}/chat/completions", proxy_url(&fixture)))
        .bearer_auth(&token)
        .json(&json!({ "model": "m", "stream": true, "messages": [] }))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("the first event arrives while the upstream still holds the rest")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    assert_eq!(*upstream.streams.lock().unwrap(), 1);
    upstream.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_are_counted_and_a_budget_is_enforced() {
    let (model, mut fixture) = setup().await;
    fixture.set("TOKEN_BUDGET_PER_SESSION_DAY", "100");
    model.push(Reply::Json(completion_with_usage("counted", 123, 45)));
    let (mut client, session, _token, _pid) = one_turn(&mut fixture).await;

    let rows = usage_after(&fixture, &session, 1).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(rows, vec![(today, 123, 45, 1)]);

    // 168 of 100 tokens used: the next model request is refused by the proxy, not forwarded.
    let (_, seq) = client.send("more").await.unwrap();
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed, "{}", fixture.logs());
    let error = error.unwrap_or_default();
    assert!(
        error.contains("HTTP 429") && error.contains("token budget used up"),
        "{error}"
    );
    assert_eq!(model.request_count(), 1);
    assert_eq!(usage_rows(&fixture, &session)[0].3, 1);
    fixture.stop().await.unwrap();
}

/// One HTTP/1.1 exchange over the proxy's Unix socket (what a container's runner does).
async fn over_socket(fixture: &HostFixture, token: Option<&str>, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(fixture.data_dir().join("model.sock"))
        .await
        .unwrap();
    let body = body.to_string();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: clawbox-proxy\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn the_socket_serves_the_same_proxy() {
    use std::os::unix::fs::PermissionsExt;
    let (model, mut fixture) = setup().await;
    let (_client, _session, token, _pid) = one_turn(&mut fixture).await;
    let socket = fixture.data_dir().join("model.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, host::proxy::MODEL_SOCKET_MODE);

    let body =
        json!({ "model": "fake-model", "messages": [{ "role": "user", "content": "via socket" }] });
    let refused = over_socket(&fixture, None, &body).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let answered = over_socket(&fixture, Some(&token), &body).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.contains("echo: via socket"), "{answered}");
    assert_eq!(
        model.last_request().unwrap().header("authorization"),
        Some("Bearer test-key")
    );

    // A clean shutdown removes the socket and the address file.
    fixture.stop().await.unwrap();
    assert!(!socket.exists());
    assert!(!fixture.data_dir().join("proxy.addr").exists());
}
