//! Drafts of turns in progress: written in commits of their own, deleted by the verdict in the
//! reply's transaction, read by the host bounded (the container may write anything there).

use mailbox::drafts::{MAX_DRAFT_BYTES, READ_CALLS_BYTES, READ_DRAFT_BYTES};
use mailbox::{Draft, DraftCall, OutboundDb, OutboundReader};
use pretty_assertions::assert_eq;
use rusqlite::{Connection, params};

use super::common::{Session, reply, t};

fn draft(turn: i64, step: u32, text: &str) -> Draft {
    Draft {
        turn,
        reply_to: turn + 2,
        step,
        text: text.to_owned(),
        calls: Vec::new(),
        updated_at: t(i64::from(step)),
    }
}

#[test]
fn a_draft_grows_and_the_verdict_replaces_it_with_the_reply() {
    let s = Session::new();
    let mut out = OutboundDb::open(&s.paths).unwrap();
    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    assert_eq!(host.draft().unwrap(), None);

    out.set_draft(&draft(2, 1, "Hel")).unwrap();
    assert_eq!(host.draft().unwrap(), Some(draft(2, 1, "Hel")));
    out.set_draft(&draft(2, 1, "Hello, wor")).unwrap();
    assert_eq!(host.draft().unwrap(), Some(draft(2, 1, "Hello, wor")));

    let mut tx = out.transaction().unwrap();
    let seq = tx
        .insert_message(&reply("r", Some(4), "Hello, world"), t(9))
        .unwrap();
    tx.delete_draft(2).unwrap();
    tx.commit().unwrap();
    assert_eq!(host.draft().unwrap(), None);
    assert_eq!(
        host.message(seq).unwrap().unwrap().text(),
        Some("Hello, world")
    );
}

#[test]
fn drafts_are_capped_and_a_new_runner_clears_stale_ones() {
    let s = Session::new();
    let mut out = OutboundDb::open(&s.paths).unwrap();
    out.set_draft(&draft(2, 3, &"x".repeat(MAX_DRAFT_BYTES * 3)))
        .unwrap();
    let shown = out.draft().unwrap().unwrap();
    assert_eq!(shown.text.len(), MAX_DRAFT_BYTES);
    assert_eq!(shown.step, 3);
    out.clear_drafts().unwrap();
    assert_eq!(out.draft().unwrap(), None);
}

#[test]
fn forged_drafts_are_not_loaded() {
    let s = Session::new();
    let _out = OutboundDb::open(&s.paths).unwrap();
    let raw = Connection::open(s.paths.outbound_db()).unwrap();
    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let forge = |text: rusqlite::types::Value, step: rusqlite::types::Value| {
        raw.execute("DELETE FROM drafts", []).unwrap();
        raw.execute(
            "INSERT INTO drafts (turn, reply_to, step, text, updated_at)
             VALUES (2, 2, ?1, ?2, '2026-01-02T03:04:05.000Z')",
            params![step, text],
        )
        .unwrap();
    };
    use rusqlite::types::Value as V;
    // Too long to load: the host does not read it at all.
    forge(
        V::Text("y".repeat(READ_DRAFT_BYTES as usize + 1)),
        V::Integer(1),
    );
    assert_eq!(host.draft().unwrap(), None);
    // Wrong types, or a step out of range: skipped, not an error.
    forge(V::Blob(vec![1, 2, 3]), V::Integer(1));
    assert_eq!(host.draft().unwrap(), None);
    forge(V::Text("ok".into()), V::Integer(-1));
    assert_eq!(host.draft().unwrap(), None);
    forge(V::Text("ok".into()), V::Text("one".into()));
    assert_eq!(host.draft().unwrap(), None);
    // Just within the host's bound: read.
    forge(
        V::Text("z".repeat(READ_DRAFT_BYTES as usize)),
        V::Integer(1),
    );
    assert_eq!(
        host.draft().unwrap().unwrap().text.len(),
        READ_DRAFT_BYTES as usize
    );
}

#[test]
fn a_draft_names_the_calls_its_step_runs_until_the_next_step_writes() {
    let s = Session::new();
    let mut out = OutboundDb::open(&s.paths).unwrap();
    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let running = Draft {
        calls: vec![DraftCall::new(
            "run_bash",
            &serde_json::json!({"command": "npm test", "timeout_ms": 60000}),
        )],
        ..draft(2, 1, "Let me run the tests.")
    };
    out.set_draft(&running).unwrap();
    let shown = host.draft().unwrap().unwrap();
    assert_eq!(shown, running);
    assert_eq!(shown.calls[0].arguments["command"], "npm test");
    assert!(shown.calls[0].arguments.get("timeout_ms").is_none());
    // The next step's text replaces the row, calls and all.
    out.set_draft(&draft(2, 2, "All")).unwrap();
    assert_eq!(host.draft().unwrap(), Some(draft(2, 2, "All")));
}

#[test]
fn forged_calls_are_dropped_and_the_text_still_shows() {
    let s = Session::new();
    let _out = OutboundDb::open(&s.paths).unwrap();
    let raw = Connection::open(s.paths.outbound_db()).unwrap();
    let host = OutboundReader::open(&s.paths.outbound_db()).unwrap();
    let forge = |calls: rusqlite::types::Value| {
        raw.execute("DELETE FROM drafts", []).unwrap();
        raw.execute(
            "INSERT INTO drafts (turn, reply_to, step, text, calls, updated_at)
             VALUES (2, 2, 1, 'text', ?1, '2026-01-02T03:04:05.000Z')",
            params![calls],
        )
        .unwrap();
    };
    use rusqlite::types::Value as V;
    let big = format!(
        r#"[{{"tool": "run_bash", "arguments": {{"command": "{}"}}}}]"#,
        "y".repeat(READ_CALLS_BYTES as usize)
    );
    for calls in [
        V::Text(big),
        V::Text("not json".into()),
        V::Text(r#"{"tool": "run_bash"}"#.into()),
        V::Text(r#"[{"tool": 5}]"#.into()),
        V::Blob(vec![1, 2]),
        V::Integer(7),
    ] {
        forge(calls.clone());
        let shown = host.draft().unwrap().unwrap();
        assert_eq!(shown.text, "text", "{calls:?}");
        assert!(shown.calls.is_empty(), "{calls:?}");
    }
    // Well formed: read, at most MAX_DRAFT_CALLS of them.
    let many = format!("[{}]", vec![r#"{"tool": "grep"}"#; 20].join(","));
    forge(V::Text(many));
    assert_eq!(
        host.draft().unwrap().unwrap().calls.len(),
        mailbox::drafts::MAX_DRAFT_CALLS
    );
}
