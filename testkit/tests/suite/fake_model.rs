//! Drives the fake model server over real HTTP with reqwest.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use testkit::{FakeModel, Reply, ToolCall, quirks};

fn chat(messages: Value) -> Value {
    json!({ "model": "test-model", "messages": messages })
}

async fn post(model: &FakeModel, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(model: &FakeModel, body: &Value) -> (u16, Value) {
    let response = post(model, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

async fn stream(model: &FakeModel, mut body: Value) -> Vec<Value> {
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let response = post(model, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn echo_is_the_default_reply() {
    let model = FakeModel::start().await.unwrap();
    let (status, body) = post_json(
        &model,
        &chat(json!([
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "hello there" },
        ])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );

    let parts = json!([{ "role": "user", "content": [{ "type": "text", "text": "in parts" }] }]);
    let (_, body) = post_json(&model, &chat(parts)).await;
    assert_eq!(body["choices"][0]["message"]["content"], "echo: in parts");
    assert!(model.violations().is_empty());
}

#[tokio::test]
async fn scripted_text_then_default() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::text("first"));
    model.set_default(Reply::text("fallback"));
    let request = chat(json!([{ "role": "user", "content": "hi" }]));

    let (status, body) = post_json(&model, &request).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "first");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let (_, body) = post_json(&model, &request).await;
    assert_eq!(body["choices"][0]["message"]["content"], "fallback");
    assert_eq!(model.pending_replies(), 0);
}

#[tokio::test]
async fn tool_calls_carry_arguments_as_a_json_string() {
    let model = FakeModel::start().await.unwrap();
    let call = ToolCall::new("read_file", json!({ "path": "/etc/hosts" }));
    assert!(call.id.starts_with("call_"));
    model.push(Reply::ToolCalls(vec![call.clone()]));

    let (status, body) =
        post_json(&model, &chat(json!([{ "role": "user", "content": "go" }]))).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let sent = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(sent["id"], call.id.as_str());
    assert_eq!(sent["type"], "function");
    assert_eq!(sent["function"]["name"], "read_file");
    let arguments: Value =
        serde_json::from_str(sent["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, call.arguments);
}

#[tokio::test]
async fn error_status_and_garbage() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::Status(500, "upstream exploded".into()));
    model.push(Reply::Garbage("<html>bad gateway</html>".into()));
    let request = chat(json!([{ "role": "user", "content": "hi" }]));

    let (status, body) = post_json(&model, &request).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["message"], "upstream exploded");
    assert_eq!(body["error"]["type"], "server_error");

    let response = post(&model, &request).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(text, "<html>bad gateway</html>");
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn json_reply_is_returned_verbatim() {
    let model = FakeModel::start().await.unwrap();
    let quirky = quirks::object_arguments(&ToolCall::new("f", json!({ "a": 1 })));
    model.push(Reply::Json(quirky.clone()));
    let (status, body) =
        post_json(&model, &chat(json!([{ "role": "user", "content": "hi" }]))).await;
    assert_eq!(status, 200);
    assert_eq!(body, quirky);
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        json!({ "a": 1 })
    );
}

#[tokio::test]
async fn streamed_text_assembles_back() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::text("hello streaming world"));
    let chunks = stream(&model, chat(json!([{ "role": "user", "content": "hi" }]))).await;

    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(contents.len() > 1, "{contents:?}");
    assert_eq!(contents.concat(), "hello streaming world");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn streamed_tool_calls_assemble_back() {
    let model = FakeModel::start().await.unwrap();
    let calls = vec![
        ToolCall::new("one", json!({ "x": "first argument" })),
        ToolCall::new("two", json!({ "y": [1, 2, 3] })),
    ];
    model.push(Reply::ToolCalls(calls.clone()));
    let chunks = stream(&model, chat(json!([{ "role": "user", "content": "hi" }]))).await;

    // (id, name, arguments) per index, assembled the way a client must.
    let mut assembled: Vec<(String, String, String)> = Vec::new();
    for delta in chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
    {
        for part in delta {
            let index = usize::try_from(part["index"].as_u64().unwrap()).unwrap();
            if index == assembled.len() {
                assert_eq!(part["type"], "function");
                assembled.push((
                    part["id"].as_str().unwrap().to_owned(),
                    part["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            if let Some(fragment) = part["function"]["arguments"].as_str() {
                assembled[index].2.push_str(fragment);
            }
        }
    }
    let expected: Vec<(String, String, String)> = calls
        .iter()
        .map(|c| (c.id.clone(), c.name.clone(), c.arguments.to_string()))
        .collect();
    assert_eq!(assembled, expected);
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null());
    assert_eq!(finish.unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn errors_stay_plain_http_when_streaming() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::Status(429, "slow down".into()));
    let mut request = chat(json!([{ "role": "user", "content": "hi" }]));
    request["stream"] = json!(true);
    let (status, body) = post_json(&model, &request).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["message"], "slow down");
}

#[tokio::test]
async fn tool_pairing_violations_are_rejected_and_recorded() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::text("scripted"));
    let asked = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{ "id": "call_a", "type": "function", "function": { "name": "f", "arguments": "{}" } }],
    });

    let unanswered = chat(json!([
        { "role": "user", "content": "hi" },
        asked,
        { "role": "user", "content": "again" },
    ]));
    let (status, body) = post_json(&model, &unanswered).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("call_a")
    );
    assert_eq!(model.violations().len(), 1);
    assert_eq!(
        model.pending_replies(),
        1,
        "a rejected request takes no scripted reply"
    );

    let orphan = chat(json!([{ "role": "tool", "tool_call_id": "call_z", "content": "x" }]));
    let (status, _) = post_json(&model, &orphan).await;
    assert_eq!(status, 400);
    assert!(model.violations()[1].contains("call_z"));

    let answered = chat(json!([
        { "role": "user", "content": "hi" },
        asked,
        { "role": "tool", "tool_call_id": "call_a", "content": "done" },
    ]));
    let (status, body) = post_json(&model, &answered).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "scripted");
    assert_eq!(model.violations().len(), 2);
    assert_eq!(model.request_count(), 3);
}

#[tokio::test]
async fn records_requests_with_lowercased_headers() {
    let model = FakeModel::start().await.unwrap();
    let request = chat(json!([{ "role": "user", "content": "hi" }]));
    post(&model, &request).await;

    let recorded = model
        .wait_for_requests(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].body, request);
    assert_eq!(recorded[0].header("Authorization"), Some("Bearer sk-test"));
    assert!(
        recorded[0]
            .headers
            .iter()
            .any(|(name, _)| name == "authorization")
    );
    assert_eq!(recorded[0].messages().len(), 1);

    let err = model.wait_for_requests(2, Duration::from_millis(50)).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn hang_lasts_until_the_client_gives_up_or_the_model_drops() {
    let model = FakeModel::start().await.unwrap();
    model.set_default(Reply::Hang);
    let url = format!("{}/chat/completions", model.base_url());
    let request = chat(json!([{ "role": "user", "content": "hi" }]));

    let client = reqwest::Client::new();
    let timed_out = client
        .post(&url)
        .timeout(Duration::from_millis(100))
        .json(&request)
        .send()
        .await
        .unwrap_err();
    assert!(timed_out.is_timeout());

    let pending = tokio::spawn(async move { client.post(&url).json(&request).send().await });
    model
        .wait_for_requests(2, Duration::from_secs(5))
        .await
        .unwrap();
    drop(model);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn delay_then_answer() {
    let model = FakeModel::start().await.unwrap();
    model.push(Reply::text("late").after(Duration::from_millis(20)));
    let (status, body) =
        post_json(&model, &chat(json!([{ "role": "user", "content": "hi" }]))).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "late");
}

#[tokio::test]
async fn the_model_list_is_served_once_set_and_usage_can_be_fixed() {
    let model = FakeModel::start().await.unwrap();
    let http = reqwest::Client::new();
    let list = |path: &'static str| {
        let http = http.clone();
        let url = format!("http://{}{path}", model.addr());
        async move { http.get(url).send().await.unwrap() }
    };
    // No list until a test sets one, as servers without a model list answer.
    assert_eq!(list("/v1/models").await.status(), 404);
    model.serve_models(&["fake-model", "other"]);
    for path in ["/v1/models", "/models"] {
        let response = list(path).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fake-model", "other"]);
    }
    // Listing is not a recorded chat request.
    assert_eq!(model.request_count(), 0);

    model.set_usage(100, 7);
    let (status, body) =
        post_json(&model, &chat(json!([{ "role": "user", "content": "hi" }]))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["usage"],
        json!({ "prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107 })
    );
}
