//! Against a real OpenAI-compatible server nobody here wrote: llama-cpp-python 0.3.36 with
//! SmolLM2-135M-Instruct on the CPU (testkit's `LlamaServer`, built by `tests/llama-server.sh`).
//! The tests assert protocol — each request accepted at the first attempt (HTTP 200) and
//! answered, the tool call carried out and its result accepted, a stream assembled, the context
//! error recognised — never what the 135M model says. They are few and small: the model is slow
//! on a busy 2-core machine. One server runs at a time.

use std::time::Duration;

use agent_runner::model::{ModelClient, ModelError, ModelSettings};
use mailbox::{AckStatus, RunnerEvent};
use serde_json::{Map, Value, json};
use testkit::{LlamaOptions, LlamaServer};
use tokio_util::sync::CancellationToken;

use super::harness::{Session, mcp_tools_bin};

/// One request of the 135M model on a loaded CPU takes seconds to minutes (a grammar-constrained
/// tool call took over 120 s on a machine busy compiling). It gets one long limit and no retry:
/// llama-cpp-python serves one request at a time and finishes an abandoned one, so a retry
/// after a timeout waits for that work and then does it again (4 attempts of 120 s failed).
const REQUEST_LIMIT: Duration = Duration::from_secs(420);
/// A runner's whole life in these tests: its start, at most two requests, its exit.
const TURN_LIMIT: Duration = Duration::from_secs(2 * 420 + 60);

/// A session whose runner waits [`REQUEST_LIMIT`] for each request and never retries one.
fn real_model_session() -> Session {
    let mut session = Session::new();
    session.set_env(
        "CLAWBOX_MODEL_TIMEOUT_MS",
        &REQUEST_LIMIT.as_millis().to_string(),
    );
    session.set_env("CLAWBOX_MODEL_RETRIES", "0");
    session
}

/// One llama server at a time: each takes both cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn events(session: &Session) -> Vec<RunnerEvent> {
    session
        .outbound()
        .events_after(0, u32::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// `(attempts, prompt_tokens, tool_calls)` of every model step.
fn steps(session: &Session) -> Vec<(u32, Option<u64>, u32)> {
    events(session)
        .into_iter()
        .filter_map(|e| match e {
            RunnerEvent::ModelStep {
                attempts,
                prompt_tokens,
                tool_calls,
                ..
            } => Some((attempts, prompt_tokens, tool_calls)),
            _ => None,
        })
        .collect()
}

async fn run(session: &Session, server: &LlamaServer) {
    let mut child = session.start_at(&server.base_url());
    session.wait_exit_within(&mut child, TURN_LIMIT).await;
}

fn statuses(session: &Session) -> Vec<AckStatus> {
    session
        .acks()
        .into_iter()
        .filter(|a| a.status != AckStatus::Processing)
        .map(|a| a.status)
        .collect()
}

fn client(server: &LlamaServer, params: Value) -> ModelClient {
    ModelClient::new(ModelSettings {
        base_url: server.base_url(),
        api_key: String::new(),
        socket: None,
        model: testkit::llama::MODEL_ALIAS.to_owned(),
        timeout: REQUEST_LIMIT,
        retries: 0,
        backoff: Duration::from_millis(10),
        stream: params.get("stream") == Some(&Value::Bool(true)),
        params: params.as_object().cloned().unwrap_or_else(Map::new),
        tool_call_content: agent_runner::model::ToolCallContent::Empty,
    })
    .unwrap()
}

#[tokio::test]
async fn a_conversation_streams_and_overflows_against_llama_cpp() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = LlamaServer::start(LlamaOptions { n_ctx: 2048 })
        .await
        .unwrap();

    // Three turns through the runner, each accepted at once and answered; history is carried
    // (each prompt is longer than the one before).
    let mut session = real_model_session();
    // Unstreamed: llama-cpp-python sends no token counts in a stream, and they show that the
    // history is carried. (The tool-call test below streams, as agents do by default.)
    session.container_json(&json!({
        "model_params": { "max_tokens": 16, "temperature": 0 },
        "stream": false,
    }));
    for word in ["apple", "river", "what did I say first?"] {
        session.send(word);
        run(&session, &server).await;
    }
    assert_eq!(
        statuses(&session),
        [AckStatus::Completed; 3],
        "{}\n{}",
        session.log(),
        server.log_tail()
    );
    let steps = steps(&session);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(
        steps.iter().all(|(attempts, _, _)| *attempts == 1),
        "{steps:?}"
    );
    let prompts: Vec<u64> = steps.iter().filter_map(|s| s.1).collect();
    assert!(
        prompts.len() == 3 && prompts[0] < prompts[1] && prompts[1] < prompts[2],
        "{steps:?}"
    );
    let replies = session.replies();
    assert_eq!(replies.len(), 3, "{replies:?}");

    // A streamed step: the server answers with an event stream, assembled into one reply.
    let streamed = client(&server, json!({ "stream": true, "max_tokens": 12 }));
    let messages = [json!({ "role": "user", "content": "Say hello." })];
    let reply = streamed
        .complete(&messages, &[], &CancellationToken::new())
        .await
        .unwrap();
    assert!(reply.content.is_some_and(|t| !t.is_empty()));
    // (llama-cpp-python sends no usage in a stream, `stream_options` or not.)
    let raw = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&streamed.request_body(&messages, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let content_type = raw.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );

    // Too long for the context window: recognised as such, not retried.
    let long = "word ".repeat(3000);
    let err = client(&server, json!({ "max_tokens": 8 }))
        .complete(
            &[json!({ "role": "user", "content": long })],
            &[],
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::ContextLength { .. }), "{err:?}");
}

#[tokio::test]
async fn a_tool_call_reaches_mcp_tools_and_its_result_is_accepted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = LlamaServer::start(LlamaOptions { n_ctx: 4096 })
        .await
        .unwrap();
    let mut session = real_model_session();
    session.set_env("CLAWBOX_MCP_TOOLS_BIN", mcp_tools_bin().to_str().unwrap());
    // Two steps: the call, then the request carrying its result.
    session.set_env("CLAWBOX_MAX_STEPS", "2");
    // A 135M model does not pick a tool reliably on its own; naming the function in
    // tool_choice makes llama-cpp-python's grammar produce the call. Every group but the file
    // tools is off, which keeps the prompt small.
    session.container_json(&json!({
        "model_params": {
            "max_tokens": 48,
            "temperature": 0,
            "tool_choice": { "type": "function", "function": { "name": "list_files" } },
        },
        "tools": { "bash": false, "messages": false, "questions": false, "tasks": false, "skills": false },
    }));
    session.send("Which files are in the workspace?");
    run(&session, &server).await;

    assert_eq!(
        statuses(&session),
        [AckStatus::Completed],
        "{}\n{}",
        session.log(),
        server.log_tail()
    );
    let steps = steps(&session);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(
        steps
            .iter()
            .all(|(attempts, _, calls)| *attempts == 1 && *calls >= 1),
        "{steps:?}"
    );
    let calls: Vec<String> = events(&session)
        .into_iter()
        .filter_map(|e| match e {
            RunnerEvent::ToolCall { tool, .. } => Some(tool),
            _ => None,
        })
        .collect();
    assert!(
        !calls.is_empty() && calls.iter().all(|tool| tool == "list_files"),
        "{calls:?}"
    );
    // mcp-tools answered (a listing, or its own error for arguments the model got wrong: both
    // are results from the server), and the second request, which carried it, was accepted.
    let history = session.history();
    let results: Vec<&str> = history
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(results.len(), calls.len(), "{history:?}");
    assert!(
        results
            .iter()
            .all(|r| !r.is_empty() && !r.contains("unknown tool")),
        "{results:?}"
    );
    eprintln!("tool results from the real model's calls: {results:?}");
}
