//! `list_files` and `grep` on real trees: order, kinds, caps, and links shown but never followed.

use std::os::unix::fs::symlink;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::Session;

/// A small tree with every kind of entry, and a link that leads out.
fn tree(s: &Session) {
    let ws = s.workspace();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("deep")).unwrap();
    std::fs::write(outside.join("deep/secret.txt"), "needle outside\n").unwrap();
    std::fs::create_dir_all(ws.join("src/nested")).unwrap();
    std::fs::write(ws.join("src/main.rs"), "fn main() {\n    needle();\n}\n").unwrap();
    std::fs::write(ws.join("src/nested/lib.rs"), "// needle in lib\n").unwrap();
    std::fs::write(ws.join("notes.md"), "first\nA Needle here\n").unwrap();
    std::fs::write(ws.join("blob.bin"), b"needle\0\x01\x02").unwrap();
    std::fs::create_dir(ws.join(".git")).unwrap();
    std::fs::write(ws.join(".git/config"), "needle in git\n").unwrap();
    symlink(&outside, ws.join("escape")).unwrap();
    symlink("notes.md", ws.join("notes-link")).unwrap();
}

#[tokio::test]
async fn list_files_shows_kinds_sorted_without_following_links() {
    let s = Session::start().await;
    tree(&s);
    let listing = s.call("list_files", json!({})).await.ok();
    assert_eq!(
        listing,
        format!(
            "dir  .git/\n\
             file  .git/config (14 bytes)\n\
             file  blob.bin (9 bytes)\n\
             link  escape -> {}\n\
             link  notes-link -> notes.md\n\
             file  notes.md (20 bytes)\n\
             dir  src/\n\
             file  src/main.rs (28 bytes)\n\
             dir  src/nested/",
            s.dir.path().join("outside").display()
        )
    );
    assert_eq!(
        s.call("list_files", json!({"path": "src", "depth": 5}))
            .await
            .ok(),
        "file  src/main.rs (28 bytes)\ndir  src/nested/\nfile  src/nested/lib.rs (17 bytes)"
    );
    assert_eq!(
        s.call("list_files", json!({"path": "src/main.rs"}))
            .await
            .ok(),
        "file  src/main.rs (28 bytes)"
    );
    assert_eq!(
        s.call("list_files", json!({"path": "notes-link"}))
            .await
            .ok(),
        "link  notes-link -> notes.md"
    );

    std::fs::create_dir_all(s.agent_dir.join("skills/empty")).unwrap();
    assert_eq!(
        s.call("list_files", json!({"path": "agent"})).await.ok(),
        "dir  agent/skills/\ndir  agent/skills/empty/"
    );
    assert_eq!(
        s.call("list_files", json!({"path": "agent/skills/empty"}))
            .await
            .ok(),
        "[agent/skills/empty is empty]"
    );

    let table = [
        (
            json!({"path": "escape"}),
            "path escapes the workspace through a symbolic link: escape",
        ),
        (json!({"path": "nope"}), "file not found: nope"),
        (
            json!({"path": "../"}),
            "path escapes the workspace: ../ (`..` is not allowed in paths)",
        ),
        (json!({"depth": 0}), "depth must be between 1 and 20, got 0"),
    ];
    for (args, want) in table {
        assert_eq!(
            s.call("list_files", args.clone()).await.err(),
            want,
            "{args}"
        );
    }
}

#[tokio::test]
async fn list_files_caps_the_answer() {
    let s = Session::start().await;
    let dir = s.workspace().join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..620 {
        std::fs::write(dir.join(format!("f{i:04}")), "").unwrap();
    }
    let listing = s.call("list_files", json!({"path": "many"})).await.ok();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 501);
    assert_eq!(lines[0], "file  many/f0000 (0 bytes)");
    assert_eq!(lines[499], "file  many/f0499 (0 bytes)");
    assert_eq!(
        lines[500],
        "[showed 500 entries; 120 more not shown: list a subfolder, or use a smaller depth]"
    );
}

#[tokio::test]
async fn grep_finds_lines_in_text_files_only() {
    let s = Session::start().await;
    tree(&s);
    assert_eq!(
        s.call("grep", json!({"pattern": "needle"})).await.ok(),
        "src/main.rs:2:     needle();\nsrc/nested/lib.rs:1: // needle in lib"
    );
    assert_eq!(
        s.call("grep", json!({"pattern": "(?i)needle", "glob": "*.md"}))
            .await
            .ok(),
        "notes.md:2: A Needle here"
    );
    assert_eq!(
        s.call(
            "grep",
            json!({"pattern": "needle", "path": "src", "glob": "nested/**/*.rs"})
        )
        .await
        .ok(),
        "src/nested/lib.rs:1: // needle in lib"
    );
    // A file named directly, and a link named directly.
    assert_eq!(
        s.call("grep", json!({"pattern": "^fn", "path": "src/main.rs"}))
            .await
            .ok(),
        "src/main.rs:1: fn main() {"
    );
    assert_eq!(
        s.call("grep", json!({"pattern": "x", "path": "notes-link"}))
            .await
            .err(),
        "notes-link is a symbolic link; refusing to follow it (use the path it points to)"
    );
    assert_eq!(
        s.call("grep", json!({"pattern": "nothing-like-this"}))
            .await
            .ok(),
        "no matches (3 files searched, 1 binary skipped)"
    );

    std::fs::create_dir_all(s.agent_dir.join("skills/x")).unwrap();
    std::fs::write(s.agent_dir.join("skills/x/SKILL.md"), "needle skill\n").unwrap();
    assert_eq!(
        s.call("grep", json!({"pattern": "needle", "path": "agent"}))
            .await
            .ok(),
        "agent/skills/x/SKILL.md:1: needle skill"
    );

    let invalid = s.call("grep", json!({"pattern": "a(b"})).await.err();
    assert!(invalid.starts_with("invalid pattern: "), "{invalid}");
    let table = [
        (
            json!({"pattern": "x", "glob": "*.{rs"}),
            "invalid glob: \"*.{rs\": unclosed {",
        ),
        (
            json!({"pattern": "x", "path": "escape/deep"}),
            "path escapes the workspace through a symbolic link: escape/deep",
        ),
        (
            json!({"pattern": "x", "path": "/etc"}),
            "path is outside the workspace and the agent folder: /etc (use a path relative to \
             the workspace, agent/… for the agent folder, or inbound/… for files people sent)",
        ),
        (
            json!({"pattern": "x", "max_results": 0}),
            "max_results must be between 1 and 1000, got 0",
        ),
    ];
    for (args, want) in table {
        assert_eq!(s.call("grep", args.clone()).await.err(), want, "{args}");
    }
}

#[tokio::test]
async fn grep_caps_results_and_long_lines() {
    let s = Session::start().await;
    let many: String = (1..=50).map(|i| format!("hit {i}\n")).collect();
    std::fs::write(s.workspace().join("many.txt"), many).unwrap();
    let out = s
        .call("grep", json!({"pattern": "hit", "max_results": 3}))
        .await
        .ok();
    assert_eq!(
        out,
        "many.txt:1: hit 1\nmany.txt:2: hit 2\nmany.txt:3: hit 3\n\
         [stopped after 3 matches; narrow the pattern, path or glob, or raise max_results]"
    );

    let long = format!("{}MARK{}\n", "a".repeat(5000), "b".repeat(5000));
    std::fs::write(s.workspace().join("min.js"), long).unwrap();
    let out = s
        .call("grep", json!({"pattern": "MARK", "glob": "*.js"}))
        .await
        .ok();
    assert!(out.starts_with("min.js:1: …aaa"), "{out}");
    assert!(out.ends_with("bbb…"), "{out}");
    assert!(out.contains("MARK"));
    assert!(out.chars().count() < 400, "{}", out.chars().count());
}
