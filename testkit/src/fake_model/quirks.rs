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

/// What real OpenAI-compatible servers refuse (or quietly ignore) in a *request*, for
/// [`super::FakeModel::set_request_quirks`]. Each is one server's documented or observed
/// behaviour; a request that trips one is answered the way that server answers, before any
/// scripted reply is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestQuirk {
    /// llama-cpp-python (pydantic request models): an assistant message with `"content": null`
    /// is HTTP 500 "validation error … Input should be a valid string".
    NullContentIs500,
    /// llama-cpp-python's `chatml-function-calling`: without `tool_choice` (or with `"none"`)
    /// the model never sees the tools; a scripted tool call becomes a plain text answer.
    ToolsNeedToolChoice,
    /// vLLM and llama.cpp serving models whose chat template demands strict user/assistant
    /// alternation (Mistral, Gemma): two user messages in a row are refused (HTTP 400).
    AlternatingRoles,
    /// vLLM started without `--enable-auto-tool-choice`: `tool_choice: "auto"` is HTTP 400.
    AutoToolChoiceRefused,
    /// Servers that predate `stream_options` (Azure's older API versions, old gateways):
    /// HTTP 400 "Unrecognized request argument supplied: stream_options".
    StreamOptionsRefused,
    /// Anthropic's Messages API behind an OpenAI-compatible gateway (LiteLLM, OpenRouter): an
    /// assistant message's `"content": ""` becomes an empty text block, which it refuses with
    /// HTTP 400 "text content blocks must be non-empty"; `null` (no text block) passes.
    EmptyContentRefused,
}

/// How a server with `quirks` answers `body`: `Err((status, message))` if it refuses it,
/// `Ok(true)` when it accepts it but hides the tools from the model.
pub fn check_request(body: &Value, quirks: &[RequestQuirk]) -> Result<bool, (u16, String)> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut tools_hidden = false;
    for quirk in quirks {
        match quirk {
            RequestQuirk::NullContentIs500 => {
                if let Some(at) = messages
                    .iter()
                    .position(|m| m["role"] == "assistant" && m["content"].is_null())
                {
                    return Err((
                        500,
                        format!(
                            "1 validation error for CreateChatCompletionRequest\nmessages.{at}.\
                             content\n  Input should be a valid string [type=string_type, \
                             input_value=None, input_type=NoneType]"
                        ),
                    ));
                }
            }
            RequestQuirk::ToolsNeedToolChoice => {
                let choice = body.get("tool_choice");
                if body.get("tools").is_some() && choice.is_none_or(|c| c == "none") {
                    tools_hidden = true;
                }
            }
            RequestQuirk::AlternatingRoles => {
                let roles: Vec<&str> = messages
                    .iter()
                    .filter_map(|m| m["role"].as_str())
                    .filter(|r| *r != "system" && *r != "tool")
                    .collect();
                if roles.windows(2).any(|w| w[0] == "user" && w[1] == "user") {
                    return Err((
                        400,
                        "Conversation roles must alternate user/assistant/user/assistant/..."
                            .to_owned(),
                    ));
                }
            }
            RequestQuirk::AutoToolChoiceRefused => {
                if body.get("tool_choice").is_some_and(|c| c == "auto") {
                    return Err((
                        400,
                        "\"auto\" tool choice requires --enable-auto-tool-choice and \
                         --tool-call-parser to be set"
                            .to_owned(),
                    ));
                }
            }
            RequestQuirk::EmptyContentRefused => {
                if let Some(at) = messages
                    .iter()
                    .position(|m| m["role"] == "assistant" && m["content"] == "")
                {
                    return Err((
                        400,
                        format!(
                            "litellm.BadRequestError: AnthropicException - {{\"type\":\"error\",\
                             \"error\":{{\"type\":\"invalid_request_error\",\"message\":\
                             \"messages.{at}: text content blocks must be non-empty\"}}}}"
                        ),
                    ));
                }
            }
            RequestQuirk::StreamOptionsRefused => {
                if body.get("stream_options").is_some() {
                    return Err((
                        400,
                        "Unrecognized request argument supplied: stream_options".to_owned(),
                    ));
                }
            }
        }
    }
    Ok(tools_hidden)
}

/// The context-length errors of real servers, as `(server, status, message)`, for
/// `Reply::Status`.
pub const CONTEXT_LENGTH_ERRORS: &[(&str, u16, &str)] = &[
    (
        "OpenAI, vLLM, llama-cpp-python, LiteLLM",
        400,
        "This model's maximum context length is 4096 tokens. However, you requested 5018 \
         tokens (5010 in the messages, 8 in the completion). Please reduce the length of the \
         messages or completion.",
    ),
    (
        "llama.cpp server",
        400,
        "the request exceeds the available context size, try increasing it",
    ),
    (
        "OpenRouter",
        400,
        "This endpoint's maximum context length is 8192 tokens. However, you requested about \
         9000 tokens.",
    ),
    (
        "LM Studio",
        400,
        "Trying to keep the first 5000 tokens when context the overflows. However, the model \
         is loaded with context length of only 4096 tokens, which is not enough.",
    ),
];
