//! Recognising a model service's "the request is too long for the context" answer, whatever
//! server sent it, and what it says the real context is. Pure functions with a table of the
//! shapes real servers produce; what the turn does about it (compact harder, retry once) is
//! `turn.rs`'s business.
//!
//! The shapes (the readable part `model.rs` keeps of an error body is the `message`):
//! - OpenAI: 400, `code: context_length_exceeded`, "This model's maximum context length is 128000
//!   tokens. However, your messages resulted in 130000 tokens…".
//! - vLLM: 400 with the same sentence ("… However, you requested 5000 tokens (4000 in the
//!   messages, 1000 in the completion)…"), or, newer, "… maximum context length is 4096 tokens
//!   and your request has 5000 input tokens".
//! - llama.cpp server: 400 `exceed_context_size_error`, "the request exceeds the available
//!   context size, try increasing it" (older: "input is too large to process…").
//! - llama-cpp-python: 400 "Requested tokens (5000) exceed context window of 4096".
//! - Ollama: "prompt too long; exceeded max context length by 904 tokens", or "input length
//!   exceeds the context length".
//! - LiteLLM: "litellm.ContextWindowExceededError: …" wrapping one of the above.
//! - Anthropic-style proxies: "prompt is too long: 210000 tokens > 200000 maximum".
//! - Any server or proxy: 413 Payload Too Large.

use crate::model::ModelError;

/// Phrases (lowercase) that only a context-length refusal contains.
const PHRASES: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "max context length",
    "context length exceeded",
    "exceeds the context length",
    "exceed context window",
    "exceeds the context window",
    "context window exceeded",
    "contextwindowexceeded",
    "exceeds the available context size",
    "exceed_context_size",
    "input is too large to process",
    "prompt is too long",
    "prompt too long",
    "too many tokens",
    "reduce the length of the messages",
];

/// Whether a model error is a refusal because the request is too long.
pub fn is_context_overflow(err: &ModelError) -> bool {
    match err {
        // The model client recognised it already.
        ModelError::ContextLength { .. } => true,
        ModelError::Status { status, detail, .. } | ModelError::Invalid { status, detail, .. } => {
            // 429 is a rate limit, whatever its text says about tokens.
            *status == 413
                || ((400..500).contains(status) && *status != 429 && mentions_overflow(detail))
        }
        ModelError::Timeout { .. }
        | ModelError::Unreachable { .. }
        | ModelError::Malformed { .. }
        | ModelError::Cancelled => false,
    }
}

/// Whether an error text speaks of an overlong request.
pub fn mentions_overflow(detail: &str) -> bool {
    let lower = detail.to_lowercase();
    PHRASES.iter().any(|p| lower.contains(p))
}

/// The context size an error names, if any ("maximum context length is 4096 tokens", "context
/// window of 4096", "> 200000 maximum").
pub fn stated_context(detail: &str) -> Option<u64> {
    let lower = detail.to_lowercase();
    for marker in [
        "maximum context length is",
        "context window of",
        "context length of",
    ] {
        if let Some(at) = lower.find(marker)
            && let Some(n) = leading_number(&lower[at + marker.len()..])
        {
            return Some(n);
        }
    }
    if let Some(at) = lower.find(" maximum")
        && let Some(gt) = lower[..at].rfind('>')
    {
        return leading_number(&lower[gt + 1..at]);
    }
    None
}

fn leading_number(text: &str) -> Option<u64> {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    fn status(status: u16, detail: &str) -> ModelError {
        ModelError::Status {
            status,
            detail: detail.to_owned(),
            attempts: 1,
        }
    }

    #[test]
    fn every_known_shape_is_recognised() {
        // (server, status, message, the context it states)
        let table: &[(&str, u16, &str, Option<u64>)] = &[
            (
                "OpenAI",
                400,
                "This model's maximum context length is 128000 tokens. However, your messages \
                 resulted in 130412 tokens. Please reduce the length of the messages.",
                Some(128_000),
            ),
            (
                "vLLM",
                400,
                "This model's maximum context length is 4096 tokens. However, you requested 5000 \
                 tokens (4000 in the messages, 1000 in the completion). Please reduce the length \
                 of the messages or completion.",
                Some(4_096),
            ),
            (
                "vLLM (newer)",
                400,
                "'max_tokens' or 'max_completion_tokens' is too large: 1000. This model's maximum \
                 context length is 4096 tokens and your request has 3500 input tokens",
                Some(4_096),
            ),
            (
                "llama.cpp server",
                400,
                "the request exceeds the available context size, try increasing it",
                None,
            ),
            (
                "llama.cpp server (older)",
                500,
                "input is too large to process. increase the physical batch size",
                None,
            ),
            (
                "llama-cpp-python",
                400,
                "Requested tokens (5000) exceed context window of 4096",
                Some(4_096),
            ),
            (
                "Ollama",
                400,
                "prompt too long; exceeded max context length by 904 tokens",
                None,
            ),
            (
                "Ollama (newer)",
                400,
                "the input length exceeds the context length",
                None,
            ),
            (
                "LiteLLM",
                400,
                "litellm.ContextWindowExceededError: litellm.BadRequestError: \
                 ContextWindowExceededError: OpenAIException - This model's maximum context \
                 length is 8192 tokens.",
                Some(8_192),
            ),
            (
                "Anthropic-style proxy",
                400,
                "prompt is too long: 210000 tokens > 200000 maximum",
                Some(200_000),
            ),
            ("a proxy's body limit", 413, "Payload Too Large", None),
        ];
        for (server, code, message, context) in table {
            let err = status(*code, message);
            // A 500 is retried by the client and not a refusal to act on; every 4xx shape is.
            let want = *code != 500;
            assert_eq!(is_context_overflow(&err), want, "{server}");
            assert!(mentions_overflow(message) || *code == 413, "{server}");
            assert_eq!(stated_context(message), *context, "{server}");
        }
    }

    #[test]
    fn other_failures_are_not_overflows() {
        let table = [
            status(400, "Invalid value for 'tool_choice'"),
            status(401, "Incorrect API key provided"),
            status(429, "Rate limit reached for gpt-4o: too many requests"),
            status(404, "The model `gpt-9` does not exist"),
            ModelError::Timeout {
                after: std::time::Duration::from_secs(1),
                attempts: 1,
            },
            ModelError::Cancelled,
        ];
        for err in table {
            assert!(!is_context_overflow(&err), "{err}");
        }
    }
}
