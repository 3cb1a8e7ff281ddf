//! Test fakes that speak real wire protocols on 127.0.0.1 and record what they receive, so tests
//! can drive a component end to end and assert on its outbound requests: an OpenAI-compatible
//! model server and a Telegram Bot API server. Production code never depends on this crate.

pub mod fake_model;
pub use fake_model::*;

pub mod fake_telegram;
pub use fake_telegram::FakeTelegram;

pub mod host;
pub mod procs;
pub use host::HostFixture;
