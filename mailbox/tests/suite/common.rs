//! Shared fixtures: a session directory in a tempdir, fixed clocks, message builders.

use chrono::{DateTime, TimeZone, Utc};
use mailbox::{InboundKind, NewInbound, NewOutbound, OutboundKind, Route, SessionPaths};
use serde_json::json;
use tempfile::TempDir;

/// A session laid out as the host creates it; the tempdir lives as long as this value.
pub struct Session {
    _dir: TempDir,
    pub paths: SessionPaths,
}

impl Session {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = SessionPaths::for_session(dir.path(), "agent", "s1").unwrap();
        paths.create_dirs().unwrap();
        Session { _dir: dir, paths }
    }
}

/// A fixed instant plus `secs` seconds: tests never read the wall clock.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::seconds(secs)
}

pub fn route() -> Route {
    Route::new("telegram", "chat-1")
}

pub fn chat(id: &str, text: &str) -> NewInbound {
    NewInbound {
        id: id.to_owned(),
        kind: InboundKind::Chat,
        trigger: true,
        route: route(),
        sender_id: Some("telegram:42".to_owned()),
        sender_name: Some("Ada".to_owned()),
        content: json!({ "text": text }),
        process_after: None,
    }
}

pub fn reply(id: &str, in_reply_to: Option<i64>, text: &str) -> NewOutbound {
    NewOutbound {
        id: id.to_owned(),
        kind: OutboundKind::Chat,
        in_reply_to,
        route: route(),
        content: json!({ "text": text }),
    }
}

/// Files in `dir`, sorted, by name.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
