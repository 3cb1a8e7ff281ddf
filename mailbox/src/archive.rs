//! Conversation archives: the Markdown transcripts kept of conversation a session no longer
//! carries in its history. One format and one writer for both producers: the runner's
//! compaction (the compacted part, in the session's workspace, `conversations/<date>-<n>.md`)
//! and the host's retirement of an idle session (its remaining history, next to the session's
//! earlier archives, once they move to the agent's folder). Rendering and writing only; what to
//! archive and when is the caller's business.

use std::path::Path;

use serde_json::Value;

/// Folder of the archives, in the session's workspace (and, for a retired session, in the
/// agent's folder: `conversations/<session id>/`).
pub const ARCHIVE_DIR: &str = "conversations";
/// The kv key (`outbound.db`) of the runner's record of the last compaction, whose `count` is
/// the number of archives the session has written.
pub const COMPACTION_KEY: &str = "compaction";

/// The file name of archive `n`: `<date>-<n>.md`.
pub fn archive_file(date: &str, n: u32) -> String {
    format!("{date}-{n}.md")
}

/// The archive's path relative to the workspace: `conversations/<date>-<n>.md`.
pub fn archive_name(date: &str, n: u32) -> String {
    format!("{ARCHIVE_DIR}/{}", archive_file(date, n))
}

/// The text of archive `n`: a title, one line of what happened (`what`, e.g. "Compacted
/// 2026-01-02 10:00 UTC (12 messages); …"), and the transcript of `messages`.
pub fn archive_text(n: u32, what: &str, messages: &[Value]) -> String {
    format!(
        "# Conversation archive {n}\n\n{what}\n\n{}",
        transcript(messages)
    )
}

/// Renders messages as a readable Markdown transcript (for summary requests and archives).
pub fn transcript(messages: &[Value]) -> String {
    let mut out = String::new();
    for message in messages {
        let role = message["role"].as_str().unwrap_or("unknown");
        let text = content_text(message);
        match role {
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                out.push_str(&format!("### tool result ({id})\n\n{text}\n\n"));
            }
            "assistant" => {
                out.push_str("### assistant\n\n");
                if !text.is_empty() {
                    out.push_str(&text);
                    out.push_str("\n\n");
                }
                if let Some(calls) = message["tool_calls"].as_array() {
                    for call in calls {
                        out.push_str(&format!(
                            "- calls `{}` ({}) with `{}`\n",
                            call["function"]["name"].as_str().unwrap_or_default(),
                            call["id"].as_str().unwrap_or_default(),
                            call["function"]["arguments"].as_str().unwrap_or_default(),
                        ));
                    }
                    out.push('\n');
                }
            }
            other => out.push_str(&format!("### {other}\n\n{text}\n\n")),
        }
    }
    out
}

fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Writes `text` to `path` (creating its folder) and fsyncs the file and its folder, so an
/// archive that was written survives a crash. Blocking. Writing the same archive again replaces
/// it: callers that may be interrupted simply write it again.
pub fn write_archive(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
