//! The one short line a chat shows for the tool calls an agent is running ("running
//! `npm test`…", "reading `src/main.rs`"), made from what the runner names in its draft
//! (`mailbox::DraftCall`). Owns the wording and the cleaning; where the line is shown (the
//! terminal's status line, a Telegram draft's footer) is the channels' business.
//!
//! The facts come from the container and, through the model, from anyone who can write to
//! the agent: the line is cleaned here, once for every channel. Control characters (newlines
//! included) become spaces, invisible formatting characters (bidi overrides and isolates,
//! zero-width characters) are dropped, runs of spaces become one, backticks inside a quoted
//! part become `'` (so the quote cannot be closed early), and each part is cut to a few dozen
//! characters with `…`. Calls whose effect the chat shows by itself (a message sent, a
//! question asked) have no line.

use mailbox::DraftCall;

/// The most characters of a command, a path or a pattern a line quotes.
pub const MAX_QUOTED_CHARS: usize = 48;
/// The most characters of a tool's name a line shows.
pub const MAX_TOOL_CHARS: usize = 40;

/// The line for a step's calls: the first call that has one, and how many more run with it;
/// `None` when no call has a line.
pub fn line(calls: &[DraftCall]) -> Option<String> {
    let mut lines = calls.iter().filter_map(call_line);
    let first = lines.next()?;
    Some(match lines.count() {
        0 => first,
        n => format!("{first} (+{n} more)"),
    })
}

/// The line for one call; `None` for calls the chat shows by themselves.
pub fn call_line(call: &DraftCall) -> Option<String> {
    let arg = |key: &str| {
        call.arguments
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(|s| clean(s, MAX_QUOTED_CHARS).replace('`', "'"))
            .filter(|s| !s.is_empty())
    };
    let quoted = |verb: &str, key: &str, otherwise: &str| match arg(key) {
        Some(s) => format!("{verb} `{s}`"),
        None => otherwise.to_owned(),
    };
    Some(match call.tool.as_str() {
        "run_bash" => match arg("command") {
            Some(s) => format!("running `{s}`…"),
            None => "running a command…".to_owned(),
        },
        "read_file" => quoted("reading", "path", "reading a file"),
        "write_file" => quoted("writing", "path", "writing a file"),
        "edit_file" => quoted("editing", "path", "editing a file"),
        "list_files" => quoted("listing", "path", "listing files"),
        "grep" => quoted("searching for", "pattern", "searching"),
        "load_skill" => quoted("reading the skill", "name", "reading a skill"),
        "schedule_task" | "update_task" | "pause_task" | "resume_task" | "cancel_task"
        | "list_tasks" => "looking after scheduled tasks".to_owned(),
        // Shown in the chat by themselves: a line would only repeat them.
        "send_message" | "edit_message" | "add_reaction" | "send_file" | "ask_user_question" => {
            return None;
        }
        other => {
            // `mcp__<server>__<tool>`, as the runner names the tools of user MCP servers.
            let name = match other.strip_prefix("mcp__").and_then(|r| r.split_once("__")) {
                Some((server, tool)) => format!("{tool} ({server})"),
                None => other.to_owned(),
            };
            let name = clean(&name, MAX_TOOL_CHARS);
            if name.is_empty() {
                "using a tool".to_owned()
            } else {
                format!("using {name}")
            }
        }
    })
}

/// `text` made fit for one short line: see the module's header. Cut to `max` characters, the
/// last of them `…` when cut.
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0usize;
    let mut space = false;
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        let add = usize::from(space) + 1;
        if chars + add > max {
            // Room for the ellipsis: drop what does not fit with it.
            while chars + 1 > max {
                if out.pop().is_none() {
                    break;
                }
                chars -= 1;
            }
            out.truncate(out.trim_end().len());
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        chars += add;
    }
    out
}

/// Characters that change how text around them is shown without being seen: bidi controls,
/// zero-width characters, the word joiner and its kin, the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn call(tool: &str, arguments: serde_json::Value) -> DraftCall {
        DraftCall::new(tool, &arguments)
    }

    #[test]
    fn lines_by_tool() {
        let table = [
            (
                call("run_bash", json!({"command": "npm test"})),
                Some("running `npm test`…"),
            ),
            (call("run_bash", json!({})), Some("running a command…")),
            (
                call("read_file", json!({"path": "src/main.rs", "offset": 3})),
                Some("reading `src/main.rs`"),
            ),
            (
                call("write_file", json!({"path": "x", "content": "secret body"})),
                Some("writing `x`"),
            ),
            (
                call("edit_file", json!({"path": "a.txt", "old_string": "a"})),
                Some("editing `a.txt`"),
            ),
            (call("list_files", json!({})), Some("listing files")),
            (
                call("grep", json!({"pattern": "fn main", "path": "src"})),
                Some("searching for `fn main`"),
            ),
            (
                call("load_skill", json!({"name": "pdf"})),
                Some("reading the skill `pdf`"),
            ),
            (
                call("schedule_task", json!({"prompt": "x"})),
                Some("looking after scheduled tasks"),
            ),
            (
                call("mcp__time__get_current_time", json!({"tz": "UTC"})),
                Some("using get_current_time (time)"),
            ),
            (call("weather", json!({})), Some("using weather")),
            (call("\u{202E}\n", json!({})), Some("using a tool")),
            (call("send_message", json!({"text": "hi"})), None),
            (call("ask_user_question", json!({"title": "t"})), None),
            // An argument of the wrong type is no argument.
            (
                call("read_file", json!({"path": 7})),
                Some("reading a file"),
            ),
        ];
        for (c, want) in table {
            assert_eq!(call_line(&c).as_deref(), want, "{c:?}");
        }
    }

    #[test]
    fn hostile_arguments_are_cut_and_cleaned() {
        let table = [
            // Newlines and tabs: one line.
            (
                "cd /tmp &&\n\tmake\r\n  test",
                "running `cd /tmp && make test`…",
            ),
            // Terminal escapes lose their ESC; bidi overrides and zero-width characters go.
            (
                "\u{1b}[2Jls\u{202E}txt.exe\u{200B}\u{2066}",
                "running `[2Jlstxt.exe`…",
            ),
            // A backtick cannot close the quote early.
            ("echo `id`", "running `echo 'id'`…"),
            // Long: cut, with an ellipsis, at most MAX_QUOTED_CHARS characters quoted.
            (
                "echo aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd eeeeeeeeee ffff",
                "running `echo aaaaaaaaaa bbbbbbbbbb cccccccccc ddddddddd…`…",
            ),
            // Only invisible or blank: no argument at all.
            ("\u{202E}\u{200B} \n", "running a command…"),
        ];
        for (command, want) in table {
            let got = call_line(&call("run_bash", json!({ "command": command })));
            assert_eq!(got.as_deref(), Some(want), "{command:?}");
        }
        let huge = "é".repeat(1_000_000);
        let got = call_line(&call("read_file", json!({ "path": huge }))).unwrap_or_default();
        assert_eq!(got.chars().count(), "reading ``".len() + MAX_QUOTED_CHARS);
        assert!(got.ends_with("é…`"), "{got}");
        let got = call_line(&call(&"t".repeat(500), json!({}))).unwrap_or_default();
        assert_eq!(got.chars().count(), "using ".len() + MAX_TOOL_CHARS);
    }

    #[test]
    fn cleaning_keeps_short_text_and_cuts_at_the_width() {
        assert_eq!(clean("  plain text  ", 20), "plain text");
        assert_eq!(clean("abcdef", 6), "abcdef");
        assert_eq!(clean("abcdefg", 6), "abcde…");
        // A cut that lands after a space does not leave it before the ellipsis.
        assert_eq!(clean("abcd efgh", 6), "abcd…");
        assert_eq!(clean("", 6), "");
        assert_eq!(clean("\u{7f}\u{85}x", 6), "x");
    }

    #[test]
    fn several_calls_make_one_line() {
        let calls = [
            call("send_message", json!({"text": "on it"})),
            call("read_file", json!({"path": "a"})),
            call("read_file", json!({"path": "b"})),
            call("grep", json!({"pattern": "x"})),
        ];
        assert_eq!(line(&calls).as_deref(), Some("reading `a` (+2 more)"));
        assert_eq!(line(&calls[..2]).as_deref(), Some("reading `a`"));
        assert_eq!(line(&calls[..1]), None);
        assert_eq!(line(&[]), None);
    }
}
