//! Why a tool call failed, and how that reaches the model. Every variant becomes an MCP tool
//! error (`is_error: true`) whose text is the `Display` below: the model reads it and decides
//! what to do next, so each message says what was wrong and, where useful, what to do instead.
//! Protocol errors (unknown tool, undecodable arguments) are rmcp's, not ours.

use rmcp::model::{CallToolResult, ContentBlock};

use crate::paths::PathError;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// File tools: the path was refused by the confinement rules (`paths.rs`).
    #[error(transparent)]
    Path(#[from] PathError),
    /// File tools: nothing at the path.
    #[error("file not found: {path}")]
    NotFound { path: String },
    /// File tools: the path names a directory.
    #[error("{path} is a directory, not a file (see what it holds with list_files)")]
    IsDirectory { path: String },
    /// File tools: a FIFO, socket or device.
    #[error("{path} is not a regular file")]
    NotRegularFile { path: String },
    /// File tools: the final component is a symlink; `O_NOFOLLOW` refused to open it, so a
    /// link swapped in after the check cannot redirect the call.
    #[error("{path} is a symbolic link; refusing to follow it (use the path it points to)")]
    Symlink { path: String },
    /// `write_file`, `edit_file`: the path is in `inbound/`, which the host writes.
    #[error(
        "{path} is one of the files people sent, which are read-only; copy it into the \
         workspace (read it, then write_file) to change it"
    )]
    ReadOnly { path: String },
    /// File tools: any other I/O failure (permissions, disk full).
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `read_file`: `offset` lies beyond the last line.
    #[error("offset {offset} is past the end of {path} ({lines} lines)")]
    OffsetPastEnd {
        path: String,
        offset: u64,
        lines: u64,
    },
    /// An integer argument is out of its range.
    #[error("{name} must be {rule}, got {value}")]
    OutOfRange {
        name: &'static str,
        rule: &'static str,
        value: u64,
    },
    /// `edit_file`: the file is not UTF-8, and a lossy rewrite would corrupt it.
    #[error("{path} is not valid UTF-8 text; edit_file only edits text files")]
    NotUtf8 { path: String },
    /// `edit_file`: empty `old_string`.
    #[error("old_string is empty; use write_file to create or replace a whole file")]
    EmptyOldString,
    /// `edit_file`: `old_string == new_string`.
    #[error("old_string and new_string are identical; nothing to change")]
    NoChange,
    /// `edit_file`: no occurrence.
    #[error(
        "old_string was not found in {path}; read the file again and copy the text exactly, \
         including whitespace and indentation"
    )]
    NoMatch { path: String },
    /// `edit_file`: more than one occurrence.
    #[error(
        "old_string occurs {count} times in {path}; include more surrounding text so that it \
         matches exactly once"
    )]
    Ambiguous { path: String, count: usize },
    /// `send_file`: the file is bigger than a chat attachment may be.
    #[error("{path} is {size} bytes; send_file sends files of at most {} MB ({limit} bytes)", limit / (1024 * 1024))]
    TooLarge { path: String, size: u64, limit: u64 },
    /// `send_file`: the attachment name would not be a single plain file name. `own_name`:
    /// the name came from the file itself, not from the `filename` argument.
    #[error(
        "invalid filename {name:?}: {rule}{}",
        if *.own_name { " (it is the file's own name; pass `filename` to send it under another)" } else { "" }
    )]
    BadFilename {
        name: String,
        rule: &'static str,
        own_name: bool,
    },
    /// `send_file`: the copy into `outbound/files/` failed; nothing was sent.
    #[error("cannot store the attachment ({action}): {source}; nothing was sent")]
    Attachment {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `send_message`, `edit_message`: empty or whitespace-only text.
    #[error("text is empty")]
    EmptyText,
    /// `edit_message`: an even id names a message from a user.
    #[error("message {seq} is a user message; you can only edit your own messages")]
    NotOwnMessage { seq: i64 },
    /// `edit_message`, `add_reaction`: no message has this id.
    #[error("there is no message with id {seq}")]
    UnknownMessage { seq: i64 },
    /// `edit_message`, `add_reaction`: the id names a row that is not a chat message (an
    /// edit, a reaction, a scheduled task, a system notice).
    #[error("message {seq} is {what}, not a chat message; {hint}")]
    NotChatMessage {
        seq: i64,
        what: &'static str,
        hint: &'static str,
    },
    /// `add_reaction`: the emoji is empty, too long or contains spaces or control characters.
    #[error("invalid emoji {emoji:?}: {rule}")]
    BadEmoji { emoji: String, rule: &'static str },
    /// `grep`: the pattern or the glob does not compile.
    #[error("invalid {what}: {detail}")]
    BadPattern { what: &'static str, detail: String },
    /// `load_skill`: the name could not be a skill's folder name.
    #[error("invalid skill name {name:?}: use lowercase letters, digits, '-' and '_'")]
    BadSkillName { name: String },
    /// `load_skill`: the skill's `SKILL.md` is over the size agent-runner accepts.
    #[error("skill {name:?} cannot be used: its SKILL.md is larger than {limit_kib} KiB")]
    SkillTooLarge { name: String, limit_kib: u64 },
    /// `load_skill`: no skill of that name in the agent folder or the built-in skills.
    #[error("unknown skill {name:?}; {}", skill_list(.available))]
    UnknownSkill {
        name: String,
        available: Vec<String>,
    },
    /// `run_bash`: empty or whitespace-only command.
    #[error("command is empty")]
    EmptyCommand,
    /// `send_message`: `to` names no destination of this session.
    #[error("unknown destination {name:?}; {}", destination_list(.valid))]
    UnknownDestination { name: String, valid: Vec<String> },
    /// `send_message` without `to` in a session the host has not given a route.
    #[error("this session has no default chat to reply to; pass `to`: {}", destination_list(.valid))]
    NoDefaultRoute { valid: Vec<String> },
    /// Task tools: the host refused the request; its text says why (an invalid cron, a time in
    /// the past, an unknown task id…).
    #[error("{0}")]
    Refused(String),
    /// Task tools: the host did not answer in time. It answers every request eventually, so the
    /// change may still be applied.
    #[error(
        "the host did not answer within {} s; the change may still be applied — check with \
         list_tasks before trying again",
        .0.as_secs()
    )]
    HostTimeout(std::time::Duration),
    /// `ask_user_question`: the question breaks a rule (no options, a label too long for a
    /// button…); the text says which.
    #[error("{0}")]
    InvalidQuestion(String),
    /// Task tools: the host's answer does not have the expected shape (a host of another version).
    #[error("unexpected answer from the host: {0}")]
    BadAnswer(String),
    /// `send_message`: the session databases could not be read or written.
    #[error("the mailbox is unavailable: {0}")]
    Mailbox(#[from] mailbox::Error),
    /// `run_bash`: bash (or the pipe for its output) could not be started.
    #[error("cannot start bash: {0}")]
    Spawn(#[source] std::io::Error),
    /// A blocking task panicked; a bug, reported rather than taking the server down.
    #[error("internal error: {0}")]
    Internal(#[from] tokio::task::JoinError),
}

fn destination_list(valid: &[String]) -> String {
    if valid.is_empty() {
        "this session has no destinations".to_owned()
    } else {
        format!("valid destinations: {}", valid.join(", "))
    }
}

fn skill_list(available: &[String]) -> String {
    if available.is_empty() {
        "no skills are installed".to_owned()
    } else {
        format!("available skills: {}", available.join(", "))
    }
}

/// The one place a tool outcome becomes what the model sees.
pub fn tool_result(tool: &'static str, outcome: Result<String, ToolError>) -> CallToolResult {
    match outcome {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(err) => {
            tracing::info!(tool, error = %err, "tool call refused or failed");
            CallToolResult::error(vec![ContentBlock::text(err.to_string())])
        }
    }
}
