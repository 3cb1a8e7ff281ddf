//! The file tools refuse paths outside the workspace and the agent folder, however they are
//! spelled, and leave the outside untouched.

use std::os::unix::fs::symlink;

use serde_json::json;

use super::harness::Session;

#[tokio::test]
async fn lexical_escapes_are_refused() {
    let s = Session::start().await;
    std::fs::write(s.root.join("secret"), "s").unwrap();
    let outbound = s.paths.outbound_db();
    let table = [
        (
            "../secret",
            "path escapes the workspace: ../secret (`..` is not allowed in paths)",
        ),
        (
            "a/../../secret",
            "path escapes the workspace: a/../../secret",
        ),
        ("agent/../x", "path escapes the agent folder: agent/../x"),
        (
            "/etc/passwd",
            "path is outside the workspace and the agent folder: /etc/passwd",
        ),
        (
            outbound.to_str().unwrap(),
            "path is outside the workspace and the agent folder",
        ),
        ("", "path is empty"),
        ("a\0b", "path contains a NUL byte"),
    ];
    for (path, want) in table {
        for (tool, args) in [
            ("read_file", json!({"path": path})),
            ("write_file", json!({"path": path, "content": "pwned"})),
            (
                "edit_file",
                json!({"path": path, "old_string": "s", "new_string": "pwned"}),
            ),
            ("send_file", json!({"path": path})),
            ("list_files", json!({"path": path})),
            ("grep", json!({"pattern": "s", "path": path})),
        ] {
            let err = s.call(tool, args).await.err();
            assert!(err.starts_with(want), "{tool} {path:?}: {err}");
        }
    }
    assert_eq!(std::fs::read_to_string(s.root.join("secret")).unwrap(), "s");
}

#[tokio::test]
async fn symlinks_out_of_the_workspace_are_refused() {
    let s = Session::start().await;
    let ws = s.workspace();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    symlink("/etc/passwd", ws.join("passwd")).unwrap();
    symlink("/etc", ws.join("etc")).unwrap();
    symlink(&outside, ws.join("out")).unwrap();
    symlink(outside.join("new-file"), ws.join("dangling")).unwrap();
    symlink(outside.join("new-dir"), ws.join("dangling-dir")).unwrap();

    let escapes = "path escapes the workspace through a symbolic link";
    let table = [
        ("read_file", json!({"path": "passwd"}), escapes),
        ("read_file", json!({"path": "etc/passwd"}), escapes),
        ("read_file", json!({"path": "etc"}), escapes),
        ("read_file", json!({"path": "out/secret"}), escapes),
        (
            "write_file",
            json!({"path": "out/secret", "content": "x"}),
            escapes,
        ),
        (
            "write_file",
            json!({"path": "out/new.txt", "content": "x"}),
            escapes,
        ),
        (
            "write_file",
            json!({"path": "out/sub/new.txt", "content": "x"}),
            escapes,
        ),
        (
            "edit_file",
            json!({"path": "out/secret", "old_string": "s", "new_string": "x"}),
            escapes,
        ),
        ("send_file", json!({"path": "passwd"}), escapes),
        ("send_file", json!({"path": "out/secret"}), escapes),
        ("list_files", json!({"path": "etc"}), escapes),
        ("list_files", json!({"path": "out"}), escapes),
        ("grep", json!({"pattern": "s", "path": "out"}), escapes),
        (
            "grep",
            json!({"pattern": "s", "path": "etc/passwd"}),
            escapes,
        ),
        // Dangling links: nothing to canonicalize, so the open refuses them: O_NOFOLLOW the
        // last component, RESOLVE_BENEATH (or the walk) a folder.
        (
            "write_file",
            json!({"path": "dangling", "content": "x"}),
            "dangling is a symbolic link; refusing to follow it",
        ),
        (
            "write_file",
            json!({"path": "dangling-dir/x.txt", "content": "x"}),
            escapes,
        ),
    ];
    for (tool, args, want) in table {
        let err = s.call(tool, args.clone()).await.err();
        assert!(err.starts_with(want), "{tool} {args}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "s"
    );
    let mut left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["secret"], "nothing was created outside");
}

#[tokio::test]
async fn symlinks_inside_are_followed_only_in_the_middle() {
    let s = Session::start().await;
    let ws = s.workspace();
    std::fs::create_dir(ws.join("real")).unwrap();
    std::fs::write(ws.join("real/file"), "inside\n").unwrap();
    symlink("real", ws.join("alias")).unwrap();
    symlink("real/file", ws.join("file-link")).unwrap();
    assert_eq!(
        s.call("read_file", json!({"path": "alias/file"}))
            .await
            .ok(),
        "     1\tinside\n"
    );
    // The final component is never followed, even when it points inside: the check and the
    // open cannot be split by a swapped-in link.
    assert_eq!(
        s.call("read_file", json!({"path": "file-link"}))
            .await
            .err(),
        "file-link is a symbolic link; refusing to follow it (use the path it points to)"
    );
}
