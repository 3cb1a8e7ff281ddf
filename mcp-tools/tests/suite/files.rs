//! `read_file`, `write_file`, `edit_file` on real files.

use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::Session;

#[tokio::test]
async fn write_then_read() {
    let s = Session::start().await;
    let wrote = s
        .call(
            "write_file",
            json!({"path": "notes/today.md", "content": "one\ntwo\n"}),
        )
        .await
        .ok();
    assert_eq!(wrote, "wrote 8 bytes to notes/today.md");
    assert_eq!(
        std::fs::read_to_string(s.workspace().join("notes/today.md")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        s.call("read_file", json!({"path": "notes/today.md"}))
            .await
            .ok(),
        "     1\tone\n     2\ttwo\n"
    );
    // Overwrite, and read through the absolute path inside the workspace.
    s.call(
        "write_file",
        json!({"path": "notes/today.md", "content": "three"}),
    )
    .await
    .ok();
    let absolute = s.workspace().join("notes/today.md");
    assert_eq!(
        s.call("read_file", json!({"path": absolute.to_str().unwrap()}))
            .await
            .ok(),
        "     1\tthree\n"
    );
}

#[tokio::test]
async fn agent_paths_reach_the_agent_folder() {
    let s = Session::start().await;
    s.call(
        "write_file",
        json!({"path": "agent/CLAUDE.local.md", "content": "remember\n"}),
    )
    .await
    .ok();
    assert_eq!(
        std::fs::read_to_string(s.agent_dir.join("CLAUDE.local.md")).unwrap(),
        "remember\n"
    );
    assert!(!s.workspace().join("agent").exists());
    let absolute = s.agent_dir.join("CLAUDE.local.md");
    assert_eq!(
        s.call("read_file", json!({"path": absolute.to_str().unwrap()}))
            .await
            .ok(),
        "     1\tremember\n"
    );
}

#[tokio::test]
async fn reading_pages_and_odd_content() {
    let s = Session::start().await;
    let lines: String = (1..=5).map(|i| format!("line {i}\n")).collect();
    std::fs::write(s.workspace().join("five.txt"), lines).unwrap();
    assert_eq!(
        s.call(
            "read_file",
            json!({"path": "five.txt", "offset": 2, "limit": 2})
        )
        .await
        .ok(),
        "     2\tline 2\n     3\tline 3\n[showed lines 2-3 of 5; continue with offset=4]\n"
    );
    assert_eq!(
        s.call("read_file", json!({"path": "five.txt", "offset": 9}))
            .await
            .err(),
        "offset 9 is past the end of five.txt (5 lines)"
    );
    std::fs::write(s.workspace().join("bin"), b"ok\xff\xfe\n").unwrap();
    assert_eq!(
        s.call("read_file", json!({"path": "bin"})).await.ok(),
        "     1\tok\u{fffd}\u{fffd}\n"
    );
    std::fs::write(s.workspace().join("empty"), b"").unwrap();
    assert_eq!(
        s.call("read_file", json!({"path": "empty"})).await.ok(),
        "[empty file]"
    );
    assert_eq!(
        s.call("read_file", json!({"path": "nope.txt"})).await.err(),
        "file not found: nope.txt"
    );
    std::fs::create_dir(s.workspace().join("dir")).unwrap();
    assert!(
        s.call("read_file", json!({"path": "dir"}))
            .await
            .err()
            .starts_with("dir is a directory")
    );
    assert!(
        s.call("write_file", json!({"path": "dir", "content": "x"}))
            .await
            .err()
            .starts_with("dir is a directory")
    );
}

#[tokio::test]
async fn edit_requires_exactly_one_match() {
    let s = Session::start().await;
    let path = s.workspace().join("main.rs");
    std::fs::write(&path, "fn a() {}\nfn b() {}\nfn b() {}\n").unwrap();

    assert_eq!(
        s.call(
            "edit_file",
            json!({"path": "main.rs", "old_string": "fn a() {}", "new_string": "fn a() { 1 }"})
        )
        .await
        .ok(),
        "edited main.rs (at line 1)"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fn a() { 1 }\nfn b() {}\nfn b() {}\n"
    );

    let table = [
        (
            json!({"path": "main.rs", "old_string": "fn c", "new_string": "x"}),
            "old_string was not found in main.rs; read the file again and copy the text \
             exactly, including whitespace and indentation",
        ),
        (
            json!({"path": "main.rs", "old_string": "fn b() {}", "new_string": "x"}),
            "old_string occurs 2 times in main.rs; include more surrounding text so that it \
             matches exactly once",
        ),
        (
            json!({"path": "main.rs", "old_string": "", "new_string": "x"}),
            "old_string is empty; use write_file to create or replace a whole file",
        ),
        (
            json!({"path": "main.rs", "old_string": "fn", "new_string": "fn"}),
            "old_string and new_string are identical; nothing to change",
        ),
        (
            json!({"path": "missing.rs", "old_string": "a", "new_string": "b"}),
            "file not found: missing.rs",
        ),
    ];
    for (args, want) in table {
        assert_eq!(
            s.call("edit_file", args.clone()).await.err(),
            want,
            "{args}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fn a() { 1 }\nfn b() {}\nfn b() {}\n",
        "refused edits change nothing"
    );

    std::fs::write(s.workspace().join("latin1"), b"caf\xe9\n").unwrap();
    assert_eq!(
        s.call(
            "edit_file",
            json!({"path": "latin1", "old_string": "caf", "new_string": "tea"})
        )
        .await
        .err(),
        "latin1 is not valid UTF-8 text; edit_file only edits text files"
    );
}

#[tokio::test]
async fn files_people_sent_are_readable_as_inbound_and_never_writable() {
    let s = Session::start().await;
    let dir = s.paths.inbound_files().join("msg-_100-7");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "from the chat\n").unwrap();
    assert_eq!(
        s.call("read_file", json!({"path": "inbound/msg-_100-7/notes.txt"}))
            .await
            .ok(),
        "     1\tfrom the chat\n"
    );
    let listing = s.call("list_files", json!({"path": "inbound"})).await.ok();
    assert!(
        listing.contains("inbound/msg-_100-7/notes.txt"),
        "{listing}"
    );
    for (tool, args) in [
        (
            "write_file",
            json!({"path": "inbound/msg-_100-7/notes.txt", "content": "x"}),
        ),
        (
            "write_file",
            json!({"path": "inbound/new.txt", "content": "x"}),
        ),
        (
            "edit_file",
            json!({"path": "inbound/msg-_100-7/notes.txt", "old_string": "from", "new_string": "to"}),
        ),
    ] {
        let err = s.call(tool, args.clone()).await.err();
        assert!(err.contains("read-only"), "{tool} {args}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "from the chat\n"
    );
    assert!(!s.paths.inbound_files().join("new.txt").exists());
    // The shell finds them through $INBOUND_FILES.
    let out = s
        .call(
            "run_bash",
            json!({"command": "cat \"$INBOUND_FILES/msg-_100-7/notes.txt\""}),
        )
        .await
        .ok();
    assert_eq!(out.trim(), "from the chat");
}
