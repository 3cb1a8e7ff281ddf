//! The context budget: how many tokens a request may hold, and how big a request is before it is
//! sent. Owns the numbers (budget, answer reserve, compaction threshold, the share kept
//! verbatim) and token counting; deciding what to compact is `compact.rs`'s business.
//!
//! Counting: for model names of OpenAI's chat families (`gpt-4o`, `gpt-4.1`, `gpt-5`, `o3`,
//! `gpt-4`, `gpt-3.5-turbo`, also behind a `provider/` prefix) the real tokenizer (tiktoken's
//! BPE tables, embedded in `tiktoken-rs`); for every other model a byte estimate, one token per
//! three bytes (English text is nearer four: the estimate errs on the large side). Either raw
//! count is then scaled by the session's **calibration ratio**: after every answer, the
//! `usage.prompt_tokens` the server reported divided by our raw count of the same request.
//! The ratio is kept in `outbound.db` (kv `context_ratio`), so a new runner starts calibrated.
//! It is clamped to [`MIN_RATIO`, `MAX_RATIO`] so that one odd answer (a server that reports
//! cached tokens only, or nothing useful) cannot make the budget meaningless.

use serde_json::Value;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::Tokenizer;

use crate::model::ToolSpec;

/// `CLAWBOX_CONTEXT_TOKENS` when the host sets none.
pub const DEFAULT_CONTEXT_TOKENS: u64 = 128_000;
/// The smallest budget accepted: below it the system prompt alone may not fit.
pub const MIN_CONTEXT_TOKENS: u64 = 1_000;
/// The kv key of the calibration ratio.
pub const RATIO_KEY: &str = "context_ratio";
/// Bounds of the calibration ratio.
pub const MIN_RATIO: f64 = 0.5;
pub const MAX_RATIO: f64 = 4.0;
/// Tokens every chat message costs besides its text (role, separators), as OpenAI counts them.
const MESSAGE_OVERHEAD: u64 = 4;
/// Bytes per token of the byte estimate.
const BYTES_PER_TOKEN: usize = 3;

/// The numbers derived from one context size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The model's context, in tokens: prompt plus answer.
    pub context: u64,
}

impl Budget {
    pub fn new(context: u64) -> Budget {
        Budget {
            context: context.max(MIN_CONTEXT_TOKENS),
        }
    }

    /// Kept free for the answer: an eighth of the context, at most 8192 tokens.
    pub fn reserve(&self) -> u64 {
        (self.context / 8).min(8_192)
    }

    /// The largest request ever sent.
    pub fn limit(&self) -> u64 {
        self.context - self.reserve()
    }

    /// A request above this is compacted first: 75 % of the context.
    pub fn threshold(&self) -> u64 {
        (self.context * 3 / 4).min(self.limit())
    }

    /// How much of the newest history compaction keeps verbatim: 30 % of the context, 10 %
    /// when compacting harder (after the model refused a request as too long).
    pub fn keep(&self, hard: bool) -> u64 {
        if hard {
            self.context / 10
        } else {
            self.context * 3 / 10
        }
    }

    /// The largest single message a request carries; a bigger one is cut (with a note). A
    /// third of the context, so that one message plus the prompt and a summary always fit.
    pub fn message_cap(&self) -> u64 {
        self.context / 3
    }
}

/// How tokens are counted for one model.
#[derive(Clone, Copy)]
enum Counter {
    Bpe(&'static CoreBPE),
    Bytes,
}

/// Sizes messages and requests for one model and session.
#[derive(Clone)]
pub struct Sizer {
    counter: Counter,
    ratio: f64,
}

impl std::fmt::Debug for Sizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sizer")
            .field("tokenizer", &self.tokenizer())
            .field("ratio", &self.ratio)
            .finish()
    }
}

impl Sizer {
    /// The counter for `model` (a `provider/` prefix is ignored), uncalibrated.
    pub fn for_model(model: &str) -> Sizer {
        let name = model.rsplit('/').next().unwrap_or(model);
        let counter = match tiktoken_rs::tokenizer::get_tokenizer(name) {
            Some(
                tokenizer
                @ (Tokenizer::O200kBase | Tokenizer::O200kHarmony | Tokenizer::Cl100kBase),
            ) => {
                match tiktoken_rs::bpe_for_tokenizer(tokenizer) {
                    Ok(bpe) => Counter::Bpe(bpe),
                    Err(err) => {
                        // The tables are embedded; this only fails if they do not parse.
                        tracing::warn!(error = %err, "tokenizer unavailable; estimating from bytes");
                        Counter::Bytes
                    }
                }
            }
            Some(_) | None => Counter::Bytes,
        };
        Sizer {
            counter,
            ratio: 1.0,
        }
    }

    /// `"bpe"` or `"bytes"` (for logs and the bench).
    pub fn tokenizer(&self) -> &'static str {
        match self.counter {
            Counter::Bpe(_) => "bpe",
            Counter::Bytes => "bytes",
        }
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Uses a stored ratio (clamped).
    pub fn set_ratio(&mut self, ratio: f64) {
        if ratio.is_finite() {
            self.ratio = ratio.clamp(MIN_RATIO, MAX_RATIO);
        }
    }

    /// Learns from an answer: the server counted `prompt_tokens` for a request whose raw count
    /// was `raw`. Returns whether the ratio changed.
    pub fn calibrate(&mut self, raw: u64, prompt_tokens: Option<u64>) -> bool {
        let Some(reported) = prompt_tokens.filter(|t| *t > 0) else {
            return false;
        };
        if raw == 0 {
            return false;
        }
        let before = self.ratio;
        self.set_ratio(reported as f64 / raw as f64);
        (self.ratio - before).abs() > f64::EPSILON
    }

    /// Raises the ratio after the server refused a request we thought fit: whatever it counts,
    /// it counts more than we do.
    pub fn distrust(&mut self) {
        self.set_ratio(self.ratio * 1.25);
    }

    /// Tokens of a text, uncalibrated.
    pub fn raw_text(&self, text: &str) -> u64 {
        let n = match self.counter {
            Counter::Bpe(bpe) => bpe.encode_ordinary(text).len(),
            Counter::Bytes => text.len().div_ceil(BYTES_PER_TOKEN),
        };
        n as u64
    }

    /// Tokens of one chat message, uncalibrated: its text, its tool calls, the overhead.
    pub fn raw_message(&self, message: &Value) -> u64 {
        let mut n = MESSAGE_OVERHEAD;
        match message.get("content") {
            Some(Value::String(text)) => n += self.raw_text(text),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(text) = part.get("text").and_then(Value::as_str) {
                        n += self.raw_text(text);
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                let function = &call["function"];
                n += MESSAGE_OVERHEAD;
                n += self.raw_text(function["name"].as_str().unwrap_or_default());
                n += self.raw_text(function["arguments"].as_str().unwrap_or_default());
                n += self.raw_text(call["id"].as_str().unwrap_or_default());
            }
        }
        if let Some(id) = message.get("tool_call_id").and_then(Value::as_str) {
            n += self.raw_text(id);
        }
        n
    }

    /// Tokens of the tool schemas, uncalibrated (they are sent as JSON).
    pub fn raw_tools(&self, tools: &[ToolSpec]) -> u64 {
        tools
            .iter()
            .map(|t| {
                MESSAGE_OVERHEAD
                    + self.raw_text(&t.name)
                    + self.raw_text(&t.description)
                    + self.raw_text(&t.parameters.to_string())
            })
            .sum()
    }

    /// A raw count, calibrated.
    pub fn scale(&self, raw: u64) -> u64 {
        (raw as f64 * self.ratio).ceil() as u64
    }

    /// The calibrated size of one message.
    pub fn message(&self, message: &Value) -> u64 {
        self.scale(self.raw_message(message))
    }
}

/// The raw size of a whole request: the tools and every message (the system prompt is the
/// first message).
pub fn raw_request(sizer: &Sizer, messages: &[Value], tools: &[ToolSpec]) -> u64 {
    sizer.raw_tools(tools) + messages.iter().map(|m| sizer.raw_message(m)).sum::<u64>()
}

/// Cuts the largest messages of `messages` (never the system prompt, the first) until the
/// request fits `limit`, each at most halved per round. Returns the calibrated size at the end,
/// which is above `limit` only when nothing more can be cut (no text left to cut).
pub fn fit_request(sizer: &Sizer, limit: u64, messages: &mut [Value], tools: &[ToolSpec]) -> u64 {
    for _round in 0..32 {
        let size = sizer.scale(raw_request(sizer, messages, tools));
        if size <= limit {
            return size;
        }
        let largest = messages
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, m)| (i, sizer.message(m)))
            .max_by_key(|(_, n)| *n);
        let Some((i, n)) = largest else { return size };
        let over = size - limit;
        let cap = n.saturating_sub(over).max(n / 2).max(64);
        match cut_message(sizer, &messages[i], cap) {
            Some(cut) => messages[i] = cut,
            None => return size,
        }
    }
    sizer.scale(raw_request(sizer, messages, tools))
}

/// Cuts a message's text to about `max_tokens` (keeping its start and its end) with a note to
/// the model that it was cut. Returns `None` when the message fits (or has no text to cut).
pub fn cut_message(sizer: &Sizer, message: &Value, max_tokens: u64) -> Option<Value> {
    let size = sizer.message(message);
    if size <= max_tokens {
        return None;
    }
    let text = message.get("content").and_then(Value::as_str)?;
    // Aim below the cap: the ratio of tokens to characters varies along the text.
    let keep_chars = ((text.chars().count() as u64).saturating_mul(max_tokens) / size.max(1))
        .saturating_mul(8)
        / 10;
    let keep_chars = usize::try_from(keep_chars).unwrap_or(usize::MAX);
    let head: String = text.chars().take(keep_chars * 3 / 4).collect();
    let tail_len = keep_chars / 4;
    let total = text.chars().count();
    let tail: String = text.chars().skip(total.saturating_sub(tail_len)).collect();
    let cut = total.saturating_sub(head.chars().count() + tail.chars().count());
    let mut cut_message = message.clone();
    cut_message["content"] = Value::String(format!(
        "{head}\n\n[clawbox: this message was about {size} tokens, too long for the context \
         budget of {max_tokens}; {cut} characters were cut here. Ask for the part you need, or \
         read the original with your tools if it is a file.]\n\n{tail}"
    ));
    Some(cut_message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_budget_numbers() {
        let b = Budget::new(128_000);
        assert_eq!(
            (
                b.reserve(),
                b.limit(),
                b.threshold(),
                b.keep(false),
                b.keep(true)
            ),
            (8_192, 119_808, 96_000, 38_400, 12_800)
        );
        let small = Budget::new(4_000);
        assert_eq!(
            (small.reserve(), small.limit(), small.threshold()),
            (500, 3_500, 3_000)
        );
        assert_eq!(Budget::new(10).context, MIN_CONTEXT_TOKENS);
    }

    #[test]
    fn openai_families_get_the_real_tokenizer() {
        let table = [
            ("gpt-4o", "bpe"),
            ("gpt-4o-mini", "bpe"),
            ("openai/gpt-4.1", "bpe"),
            ("gpt-5", "bpe"),
            ("o3-mini", "bpe"),
            ("gpt-3.5-turbo", "bpe"),
            ("llama3.1:8b", "bytes"),
            ("qwen2.5-coder", "bytes"),
            ("test-model", "bytes"),
        ];
        for (model, want) in table {
            assert_eq!(Sizer::for_model(model).tokenizer(), want, "{model}");
        }
        let bpe = Sizer::for_model("gpt-4o");
        // "hello world" is two tokens in o200k_base.
        assert_eq!(bpe.raw_text("hello world"), 2);
        let bytes = Sizer::for_model("llama3");
        assert_eq!(bytes.raw_text("hello world"), 4);
    }

    #[test]
    fn calibration_scales_and_is_bounded() {
        let mut s = Sizer::for_model("llama3");
        assert_eq!(s.scale(100), 100);
        assert!(s.calibrate(100, Some(150)));
        assert_eq!(s.scale(100), 150);
        assert!(!s.calibrate(100, None), "no usage: nothing learnt");
        assert!(!s.calibrate(100, Some(0)));
        s.calibrate(100, Some(10_000));
        assert_eq!(s.ratio(), MAX_RATIO);
        s.calibrate(100, Some(1));
        assert_eq!(s.ratio(), MIN_RATIO);
        s.set_ratio(f64::NAN);
        assert_eq!(s.ratio(), MIN_RATIO);
        s.set_ratio(1.0);
        s.distrust();
        assert_eq!(s.ratio(), 1.25);
    }

    #[test]
    fn messages_count_text_calls_and_overhead() {
        let s = Sizer::for_model("llama3");
        assert_eq!(
            s.raw_message(&json!({ "role": "user", "content": "abcdef" })),
            4 + 2
        );
        let call = json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "c1", "type": "function", "function": { "name": "abc", "arguments": "{}" } }
        ]});
        assert_eq!(s.raw_message(&call), 4 + 4 + 1 + 1 + 1);
        let result = json!({ "role": "tool", "tool_call_id": "c1", "content": "ok" });
        assert_eq!(s.raw_message(&result), 4 + 1 + 1);
    }

    #[test]
    fn requests_are_fitted_by_cutting_the_largest_messages() {
        let s = Sizer::for_model("llama3");
        let system = json!({ "role": "system", "content": "s".repeat(3_000) });
        let mut messages = vec![
            system.clone(),
            json!({ "role": "user", "content": "a".repeat(3_000) }),
            json!({ "role": "assistant", "content": "b".repeat(30_000) }),
            json!({ "role": "user", "content": "c".repeat(300) }),
        ];
        let size = fit_request(&s, 4_000, &mut messages, &[]);
        assert!(size <= 4_000, "{size}");
        assert_eq!(messages[0], system, "the system prompt is never cut");
        assert_eq!(
            messages[3]["content"],
            "c".repeat(300),
            "small messages stay whole"
        );
        assert!(
            messages[2]["content"]
                .as_str()
                .unwrap()
                .contains("[clawbox: this message")
        );
    }

    #[test]
    fn a_message_too_large_is_cut_with_a_note() {
        let s = Sizer::for_model("llama3");
        let small = json!({ "role": "user", "content": "short" });
        assert_eq!(cut_message(&s, &small, 100), None);
        let text = format!("BEGIN{}END", "x".repeat(30_000));
        let big = json!({ "role": "user", "content": text });
        let cut = cut_message(&s, &big, 1_000).unwrap();
        assert!(s.message(&cut) <= 1_000, "{}", s.message(&cut));
        let content = cut["content"].as_str().unwrap();
        assert!(content.starts_with("BEGIN"), "the start is kept");
        assert!(content.ends_with("END"), "the end is kept");
        assert!(
            content.contains("too long for the context budget"),
            "{content}"
        );
        assert_eq!(cut["role"], "user");
    }
}
