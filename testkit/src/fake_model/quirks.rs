//! Response bodies for `Reply::Json` that deviate from OpenAI's `chat.completion` shape the way
//! OpenAI-compatible servers in the wild do, so a client can be tested against each deviation.
//! `text` and `tool_calls` are the standard shapes the quirks start from; a test that needs a
//! deviation not listed here can edit one of those `Value`s directly.

use serde_json::{Value, json};

use super::{DEFAULT_MODEL, ToolCall, approx_tokens, usage};

/// A standard, well-formed text completion.
pub fn text(text: &str) -> Value {
    completion(
        json!({ "role": "assistant", "content": text }),
        "stop",
        approx_tokens(text.len()),
    )
}

/// A standard, well-formed tool-call completion.
pub fn tool_calls(calls: &[ToolCall]) -> Value {
    let message = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": calls.iter().map(ToolCall::to_json).collect::<Vec<_>>(),
    });
    completion(message, "tool_calls", /*completion_tokens*/ 8)
}

/// A text completion without `id`, `object`, `created` or `choices[0].index`.
pub fn bare_text(text: &str) -> Value {
    let mut body = self::text(text);
    if let Some(top) = body.as_object_mut() {
        for key in ["id", "object", "created"] {
            top.remove(key);
        }
    }
    if let Some(choice) = body["choices"][0].as_object_mut() {
        choice.remove("index");
    }
    body
}

/// A tool call without `"type": "function"`.
pub fn untyped_tool_call(call: &ToolCall) -> Value {
    let mut body = tool_calls(std::slice::from_ref(call));
    if let Some(entry) = body["choices"][0]["message"]["tool_calls"][0].as_object_mut() {
        entry.remove("type");
    }
    body
}

/// A tool call whose `function.arguments` is a JSON object instead of a JSON-encoded string.
pub fn object_arguments(call: &ToolCall) -> Value {
    let mut body = tool_calls(std::slice::from_ref(call));
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] =
        call.arguments.clone();
    body
}

/// A text completion with a non-standard `finish_reason`, e.g. `"eos"` or `""`.
pub fn finish_reason(text: &str, reason: &str) -> Value {
    let mut body = self::text(text);
    body["choices"][0]["finish_reason"] = json!(reason);
    body
}

/// A text completion with `usage.completion_tokens: null`.
pub fn null_completion_tokens(text: &str) -> Value {
    let mut body = self::text(text);
    body["usage"]["completion_tokens"] = Value::Null;
    body
}

/// A text completion whose `created` is a float (`1700000000.5`).
pub fn float_created(text: &str) -> Value {
    let mut body = self::text(text);
    body["created"] = json!(1_700_000_000.5_f64);
    body
}

/// A text completion whose message has no `role`.
pub fn roleless_message(text: &str) -> Value {
    let mut body = self::text(text);
    if let Some(message) = body["choices"][0]["message"].as_object_mut() {
        message.remove("role");
    }
    body
}

fn completion(message: Value, finish_reason: &str, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-fake-quirk",
        "object": "chat.completion",
        "created": 1_700_000_000_u64,
        "model": DEFAULT_MODEL,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": usage(/*prompt_tokens*/ 16, completion_tokens),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn each_quirk_deviates_only_where_it_says() {
        let call = ToolCall::with_id("call_q", "f", json!({ "a": 1 }));
        let bare = bare_text("t");
        assert!(
            ["id", "object", "created"]
                .iter()
                .all(|k| bare.get(k).is_none())
        );
        assert!(bare["choices"][0].get("index").is_none());
        assert_eq!(bare["choices"][0]["message"]["content"], "t");

        let untyped = untyped_tool_call(&call);
        let entry = &untyped["choices"][0]["message"]["tool_calls"][0];
        assert!(entry.get("type").is_none());
        assert_eq!(entry["function"]["arguments"], r#"{"a":1}"#);

        let object = object_arguments(&call);
        let entry = &object["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(entry["type"], "function");
        assert_eq!(entry["function"]["arguments"], json!({ "a": 1 }));

        assert_eq!(
            finish_reason("t", "eos")["choices"][0]["finish_reason"],
            "eos"
        );
        assert!(null_completion_tokens("t")["usage"]["completion_tokens"].is_null());
        assert!(float_created("t")["created"].is_f64());
        let roleless = roleless_message("t");
        assert!(roleless["choices"][0]["message"].get("role").is_none());
        assert_eq!(roleless["choices"][0]["message"]["content"], "t");
    }
}
