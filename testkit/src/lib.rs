//! Test fakes that speak real wire protocols on 127.0.0.1 and record what they receive, so tests
//! can drive a component end to end and assert on its outbound requests: an OpenAI-compatible
//! model server and a Telegram Bot API server; and a real model server (llama-cpp-python, see
//! `llama`) for what only a real one can show. Production code never depends on this crate.

pub mod fake_model;
pub use fake_model::*;

pub mod fake_telegram;
pub use fake_telegram::FakeTelegram;

pub mod host;
pub mod llama;
pub use llama::{LlamaOptions, LlamaServer};
pub mod procs;
pub use host::HostFixture;
