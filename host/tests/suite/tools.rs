//! Tool calls through the whole stack: the model asks, agent-runner calls mcp-tools, the result
//! goes back to the model, the files land in the session workspace — and nowhere else.

use std::time::Duration;

use mailbox::InboundStatus;
use serde_json::json;
use testkit::{Reply, ToolCall};

use super::support::*;

#[tokio::test]
async fn write_then_read_round_trip() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "write_file",
        json!({"path": "notes.txt", "content": "remember the milk"}),
    )]));
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "read_file",
        json!({"path": "notes.txt"}),
    )]));
    model.push(Reply::text("noted"));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("please save a note").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None)
    );
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(client.replies_to(seq), vec!["noted".to_owned()]);

    let file = session_dir(&fixture, &session).join("workspace/notes.txt");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "remember the milk");
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        tool_results(&requests[1])[0].contains("wrote"),
        "{:?}",
        tool_results(&requests[1])
    );
    let read = &tool_results(&requests[2])[1];
    assert!(read.contains("remember the milk"), "{read}");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    // Tools were offered to the model with their schemas.
    let tools = requests[0].body["tools"].as_array().unwrap();
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    for want in [
        "send_message",
        "read_file",
        "write_file",
        "edit_file",
        "run_bash",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn file_tools_refuse_escapes() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    model.push(Reply::ToolCalls(vec![
        ToolCall::new("read_file", json!({"path": "../x"})),
        ToolCall::new("read_file", json!({"path": "/etc/passwd"})),
        ToolCall::new(
            "write_file",
            json!({"path": "../../escaped.txt", "content": "x"}),
        ),
        ToolCall::new(
            "run_bash",
            json!({"command": "ln -s /etc/passwd link && ln -s /etc etc_dir"}),
        ),
    ]));
    model.push(Reply::ToolCalls(vec![
        ToolCall::new("read_file", json!({"path": "link"})),
        ToolCall::new("read_file", json!({"path": "etc_dir/passwd"})),
        ToolCall::new(
            "write_file",
            json!({"path": "etc_dir/evil", "content": "x"}),
        ),
    ]));
    model.push(Reply::text("could not"));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("try to escape").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);

    let requests = model.requests();
    let first = tool_results(&requests[1]);
    // Each request carries the whole conversation: the second round's results are the last 3.
    let second = tool_results(&requests[2]);
    assert_eq!((first.len(), second.len()), (4, 7));
    for refusal in first[..3].iter().chain(second[4..].iter()) {
        assert!(!refusal.contains("root:"), "leaked: {refusal}");
        assert!(
            refusal.contains("escape")
                || refusal.contains("outside")
                || refusal.contains("symlink")
                || refusal.contains("refused"),
            "not a clear refusal: {refusal}"
        );
    }
    // Tool errors are marked as such for the model, and nothing was written outside.
    let session_root = session_dir(&fixture, &session);
    assert!(!session_root.join("escaped.txt").exists());
    assert!(!session_root.parent().unwrap().join("escaped.txt").exists());
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn two_sessions_cannot_see_each_others_workspace() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    // A second agent on the same chat, with its own model name so the fake can script it.
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO agent_groups (id, name, folder, model, created_at)
             VALUES ('other', 'Other', 'other', 'model-b', '2026-01-01T00:00:00.000Z');
         INSERT INTO user_roles (user_id, agent_group_id, role, granted_at)
             VALUES ('cli:local', 'other', 'owner', '2026-01-01T00:00:00.000Z');
         INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
             VALUES ('wire:cli:other', 'cli:local', 'other', 'pattern', '.', '2026-01-01T00:00:00.000Z');",
    )
    .unwrap();
    std::fs::create_dir_all(fixture.groups_dir().join("other")).unwrap();

    model.push_for(
        "fake-model",
        Reply::ToolCalls(vec![ToolCall::new(
            "write_file",
            json!({"path": "secret.txt", "content": "the default agent's secret"}),
        )]),
    );
    model.push_for("fake-model", Reply::text("saved"));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("save the secret").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let secret = session_dir(&fixture, &session).join("workspace/secret.txt");
    assert!(
        secret.is_file(),
        "{:#?}\n{:#?}",
        client.seen,
        model
            .requests()
            .iter()
            .map(|r| r.body["model"].clone())
            .collect::<Vec<_>>()
    );

    let relative = format!("../../../default/{session}/workspace/secret.txt");
    model.push_for(
        "model-b",
        Reply::ToolCalls(vec![
            ToolCall::new("read_file", json!({"path": secret.display().to_string()})),
            ToolCall::new("read_file", json!({"path": relative})),
        ]),
    );
    model.push_for("model-b", Reply::text("nothing there"));
    let (_, seq) = client.send("peek").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let deadline = tokio::time::Instant::now() + WAIT;
    let peeked = loop {
        let found = model.requests().into_iter().find(|r| {
            r.body["model"] == "model-b" && r.messages().iter().any(|m| m["role"] == "tool")
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent b never got its tool results"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let results = tool_results(&peeked);
    assert_eq!(results.len(), 2, "{results:?}");
    for r in &results {
        assert!(
            !r.contains("the default agent's secret"),
            "agent b read agent a's file: {r}"
        );
        assert!(
            r.contains("outside") || r.contains("escape"),
            "not a clear refusal: {r}"
        );
    }
    let b_saw_secret = model
        .requests()
        .iter()
        .filter(|r| r.body["model"] == "model-b")
        .any(|r| r.body.to_string().contains("the default agent's secret"));
    assert!(!b_saw_secret);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn files_edits_and_reactions_reach_the_terminal() {
    use host::admin::protocol::Event;
    use host::channels::cli::ChatEvent;

    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, first) = client.send("hello").await.unwrap();
    assert_eq!(
        client.done(first).await.unwrap().0,
        InboundStatus::Completed
    );
    // The reply to "hello" was the first outbound row.
    let reply_seq = first + 1;

    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "write_file",
        json!({"path": "report.txt", "content": "quarterly numbers"}),
    )]));
    model.push(Reply::ToolCalls(vec![
        ToolCall::new(
            "send_file",
            json!({"path": "report.txt", "text": "here it is"}),
        ),
        ToolCall::new(
            "edit_message",
            json!({"message_id": reply_seq, "text": "hello, edited"}),
        ),
        ToolCall::new("add_reaction", json!({"message_id": first, "emoji": "👍"})),
    ]));
    model.push(Reply::text("done"));
    let (session, seq) = client.send("send me the report").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    client.settle(Duration::from_millis(300)).await;

    let file = client.seen.iter().find_map(|e| match e {
        Event::Chat(ChatEvent::Reply { files, text, .. }) if !files.is_empty() => {
            Some((text.clone(), files[0].clone()))
        }
        _ => None,
    });
    let (text, file) = file.expect("a reply with a file");
    assert_eq!(text, "here it is");
    assert_eq!(file.name, "report.txt");
    // The terminal gets a host-owned copy outside the session tree.
    assert!(
        file.path
            .starts_with(&fixture.data_dir().join("files").display().to_string())
    );
    assert_eq!(
        std::fs::read_to_string(&file.path).unwrap(),
        "quarterly numbers"
    );
    assert!(
        !file
            .path
            .contains(&session_dir(&fixture, &session).display().to_string())
    );

    assert!(client.seen.iter().any(|e| matches!(e,
        Event::Chat(ChatEvent::Reply { edit_of: Some(s), text, .. }) if *s == reply_seq && text == "hello, edited")));
    assert!(client.seen.iter().any(|e| matches!(e,
        Event::Chat(ChatEvent::Reaction { reaction_to, emoji, .. }) if *reaction_to == first && emoji == "👍")));
    assert_eq!(
        client.replies_to(seq).last().map(String::as_str),
        Some("done")
    );
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}
