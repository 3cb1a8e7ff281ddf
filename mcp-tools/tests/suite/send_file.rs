//! `send_file`: the copy under `outbound/files/<id>/`, the chat row that names it, and every
//! refusal (which leaves neither a row nor a copy behind).

use std::os::unix::fs::symlink;
use std::path::Path;

use mailbox::{OutboundKind, OutboundMessage, OutboundReader, Route};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::{Session, routing};

fn rows(s: &Session) -> Vec<OutboundMessage> {
    OutboundReader::open(&s.paths.outbound_db())
        .map(|r| r.messages_after(0).unwrap())
        .unwrap_or_default()
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn copies_the_file_and_writes_a_chat_row() {
    let s = Session::start().await;
    std::fs::create_dir(s.workspace().join("out")).unwrap();
    std::fs::write(s.workspace().join("out/report.csv"), "a,b\n1,2\n").unwrap();

    let reply = s
        .call("send_file", json!({"path": "out/report.csv"}))
        .await
        .ok();
    let all = rows(&s);
    assert_eq!(all.len(), 1);
    let row = &all[0];
    assert_eq!(reply, format!("sent report.csv (id {})", row.seq));
    assert_eq!(row.kind, OutboundKind::Chat);
    assert_eq!(row.route, routing());
    assert_eq!(row.content, json!({"text": "", "files": ["report.csv"]}));
    assert!(row.id.starts_with("out-"), "{}", row.id);
    let copy = s.paths.outbound_files().join(&row.id).join("report.csv");
    assert_eq!(std::fs::read_to_string(copy).unwrap(), "a,b\n1,2\n");

    // A caption, another name, another destination, a file in the agent folder.
    std::fs::write(s.agent_dir.join("chart.png"), b"\x89PNG\0data").unwrap();
    let reply = s
        .call(
            "send_file",
            json!({"path": "agent/chart.png", "to": "work", "text": "the chart", "filename": "Q3 chart.png"}),
        )
        .await
        .ok();
    let row = rows(&s).pop().unwrap();
    assert_eq!(reply, format!("sent Q3 chart.png to work (id {})", row.seq));
    assert_eq!(row.route, Route::new("telegram", "200"));
    assert_eq!(
        row.content,
        json!({"text": "the chart", "files": ["Q3 chart.png"]})
    );
    assert_eq!(
        std::fs::read(s.paths.outbound_files().join(&row.id).join("Q3 chart.png")).unwrap(),
        b"\x89PNG\0data"
    );
}

#[tokio::test]
async fn refusals_leave_no_row_and_no_copy() {
    let s = Session::start().await;
    let ws = s.workspace();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::fs::write(ws.join("ok.txt"), "fine").unwrap();
    std::fs::write(ws.join(".env"), "KEY=1").unwrap();
    std::fs::create_dir(ws.join("dir")).unwrap();
    symlink(outside.join("secret"), ws.join("secret-link")).unwrap();
    symlink("ok.txt", ws.join("inside-link")).unwrap();
    symlink(&outside, ws.join("out")).unwrap();
    let fifo = ws.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Sparse: one byte over the cap without writing 50 MB.
    let big = std::fs::File::create(ws.join("big.bin")).unwrap();
    big.set_len(50 * 1024 * 1024 + 1).unwrap();

    let table = [
        (
            json!({"path": "../secret"}),
            "path escapes the workspace: ../secret (`..` is not allowed in paths)",
        ),
        (
            json!({"path": outside.join("secret").to_str().unwrap()}),
            "path is outside the workspace and the agent folder",
        ),
        (
            json!({"path": "secret-link"}),
            "path escapes the workspace through a symbolic link: secret-link",
        ),
        (
            json!({"path": "out/secret"}),
            "path escapes the workspace through a symbolic link: out/secret",
        ),
        (
            json!({"path": "inside-link"}),
            "inside-link is a symbolic link; refusing to follow it",
        ),
        (json!({"path": "dir"}), "dir is a directory, not a file"),
        (json!({"path": "fifo"}), "fifo is not a regular file"),
        (
            json!({"path": "missing.txt"}),
            "file not found: missing.txt",
        ),
        (
            json!({"path": "big.bin"}),
            "big.bin is 52428801 bytes; send_file sends files of at most 50 MB (52428800 bytes)",
        ),
        (
            json!({"path": "ok.txt", "filename": "../../etc/passwd"}),
            "invalid filename \"../../etc/passwd\": it must be a plain file name, without / or \\",
        ),
        (
            json!({"path": "ok.txt", "filename": "a\\b"}),
            "invalid filename \"a\\\\b\": it must be a plain file name",
        ),
        (
            json!({"path": "ok.txt", "filename": ".."}),
            "invalid filename \"..\": it must not start with a dot",
        ),
        (
            json!({"path": "ok.txt", "filename": "a\u{0}b"}),
            "invalid filename \"a\\0b\": it contains a NUL byte",
        ),
        (
            json!({"path": "ok.txt", "filename": "x".repeat(256)}),
            "it is longer than 255 bytes",
        ),
        (
            json!({"path": ".env"}),
            "invalid filename \".env\": it must not start with a dot (it is the file's own name; \
             pass `filename` to send it under another)",
        ),
        (
            json!({"path": "ok.txt", "to": "boss"}),
            "unknown destination \"boss\"; valid destinations: family, work",
        ),
    ];
    for (args, want) in table {
        let err = s.call("send_file", args.clone()).await.err();
        assert!(
            err.starts_with(want) || err.ends_with(want),
            "{args}: {err}"
        );
    }
    assert_eq!(rows(&s), []);
    assert_eq!(files_under(&s.paths.outbound_files()), Vec::<String>::new());
    assert_eq!(files_under(&outside), ["secret"]);

    // The hidden file goes out under a name the model picks.
    s.call("send_file", json!({"path": ".env", "filename": "env.txt"}))
        .await
        .ok();
    assert_eq!(rows(&s).len(), 1);
}

/// clawside's symlinked-outbox attack (§15.1): the agent points `outbound/files` elsewhere. The
/// copy is refused, and nothing is written through the link.
#[tokio::test]
async fn a_symlinked_outbox_is_not_followed() {
    let s = Session::start().await;
    std::fs::write(s.workspace().join("ok.txt"), "fine").unwrap();
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, s.paths.outbound_files()).unwrap();

    let err = s.call("send_file", json!({"path": "ok.txt"})).await.err();
    assert!(
        err.starts_with("cannot store the attachment (open outbound/files):"),
        "{err}"
    );
    assert!(err.ends_with("nothing was sent"), "{err}");
    assert_eq!(rows(&s), []);
    assert_eq!(files_under(&elsewhere), Vec::<String>::new());
}

/// Copy first, row second: when the row cannot be written, the copy is removed again.
#[tokio::test]
async fn a_failed_row_takes_its_copy_back() {
    let s = Session::start().await;
    std::fs::write(s.workspace().join("ok.txt"), "fine").unwrap();
    // A directory where the database should be: opening it for writing fails.
    std::fs::create_dir(s.paths.outbound_db()).unwrap();

    let err = s.call("send_file", json!({"path": "ok.txt"})).await.err();
    assert!(err.starts_with("the mailbox is unavailable"), "{err}");
    assert!(s.paths.outbound_files().is_dir(), "the copy was made first");
    assert_eq!(files_under(&s.paths.outbound_files()), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(s.paths.outbound_files()).unwrap().count(),
        0,
        "the message folder is gone too"
    );
}
