//! What the model reads: the system prompt (the agent's `CLAUDE.md`, its memory
//! `CLAUDE.local.md`, the shared `groups/global/CLAUDE.md`, the skills section of `skills.rs`, and
//! a context section with the date, name, channel, destinations and setup problems) and the
//! rendering of a batch of inbound messages as XML-ish text. Pure functions apart from
//! [`read_prompt_files`]; the files are re-read for every turn so that edits take effect at once.

use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::{Destination, InboundKind, InboundMessage};
use serde_json::Value;

use crate::skills::{SkillSet, TriggerContext, load_skills};

/// The agent's instruction files; `None` when a file is missing, empty or unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptFiles {
    /// `<agent dir>/CLAUDE.md`.
    pub instructions: Option<String>,
    /// `<agent dir>/CLAUDE.local.md`, the agent's memory.
    pub memory: Option<String>,
    /// `<global dir>/CLAUDE.md`, shared by all agents.
    pub global: Option<String>,
    /// The built-in skills and the agent's `skills/`.
    pub skills: SkillSet,
}

/// Reads the three files and the skills (blocking; call it off the async threads).
pub fn read_prompt_files(
    agent_dir: &Path,
    global_dir: Option<&Path>,
    skills_dir: Option<&Path>,
) -> PromptFiles {
    PromptFiles {
        instructions: read_optional(&agent_dir.join("CLAUDE.md")),
        memory: read_optional(&agent_dir.join("CLAUDE.local.md")),
        global: global_dir.and_then(|dir| read_optional(&dir.join("CLAUDE.md"))),
        skills: load_skills(skills_dir, agent_dir),
    }
}

fn read_optional(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            (!text.is_empty()).then_some(text)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            // A prompt file we cannot read is a deployment problem worth a log line, not a
            // reason to leave the user without an answer.
            tracing::warn!(path = %path.display(), error = %err, "cannot read prompt file");
            None
        }
    }
}

/// The per-turn facts of the context section.
#[derive(Debug, Clone)]
pub struct PromptContext<'a> {
    pub now: DateTime<Utc>,
    pub timezone: Tz,
    pub assistant_name: &'a str,
    /// Channel type of the conversation the batch came from (`telegram`, `cli`…).
    pub channel: Option<&'a str>,
    pub destinations: &'a [Destination],
    /// No assistant message in the conversation before this turn (for skill triggers).
    pub first_message_in_session: bool,
    /// Parts of the agent's setup that failed to load (`container.json`, MCP servers), one
    /// readable line each, so the agent can tell the user.
    pub setup_problems: &'a [String],
}

/// The system prompt: the files in order, the skills, then the context section.
pub fn system_prompt(files: &PromptFiles, ctx: &PromptContext<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(instructions) = &files.instructions {
        parts.push(instructions.clone());
    }
    if let Some(memory) = &files.memory {
        parts.push(format!(
            "## Your memory (CLAUDE.local.md in your agent folder)\n\n{memory}"
        ));
    }
    if let Some(global) = &files.global {
        parts.push(format!("## Instructions for all agents\n\n{global}"));
    }
    let triggers = TriggerContext {
        channel_type: ctx.channel,
        first_message_in_session: ctx.first_message_in_session,
    };
    if let Some(skills) = crate::skills::render(&files.skills, &triggers) {
        parts.push(skills);
    }
    parts.push(context_section(ctx));
    parts.join("\n\n")
}

fn context_section(ctx: &PromptContext<'_>) -> String {
    let mut out = String::from("## Context\n\n");
    out.push_str(&format!("You are {}.\n", ctx.assistant_name));
    out.push_str(&format!(
        "Current date and time: {}.\n",
        local_date_time(ctx.now, ctx.timezone)
    ));
    if let Some(channel) = ctx.channel {
        out.push_str(&format!("This conversation is on: {channel}.\n"));
    }
    out.push_str(
        "Messages arrive as <message id=\"…\" sender=\"…\" time=\"…\">…</message> (<task> for \
         scheduled tasks, <system> for notices from the host); the id is the message's number. \
         Times are in the time zone above.\n\
         Your final answer (your text once you call no more tools) is sent to this conversation \
         as your reply. Use send_message to write to another destination or to say something \
         before you finish.\n",
    );
    if ctx.destinations.is_empty() {
        out.push_str("Destinations: none besides this conversation.");
    } else {
        out.push_str("Destinations (names for send_message):");
        for d in ctx.destinations {
            let display = d.display_name.as_deref().unwrap_or(&d.name);
            out.push_str(&format!(
                "\n- {}: {display} ({})",
                d.name, d.route.channel_type
            ));
        }
    }
    if !ctx.setup_problems.is_empty() {
        out.push_str(
            "\nProblems with your setup (tell the user when it matters; most are fixed in \
             container.json in your agent folder):",
        );
        for problem in ctx.setup_problems {
            out.push_str(&format!("\n- {problem}"));
        }
    }
    out
}

/// `2026-11-23 16:04 (Europe/Berlin, Monday)`.
pub fn local_date_time(now: DateTime<Utc>, tz: Tz) -> String {
    let local = now.with_timezone(&tz);
    format!(
        "{} ({}, {})",
        local.format("%Y-%m-%d %H:%M"),
        tz.name(),
        local.format("%A")
    )
}

/// The user message of a turn: one element per inbound message, in order; several are wrapped
/// in `<messages>…</messages>`.
pub fn format_batch(messages: &[InboundMessage], tz: Tz) -> String {
    let elements: Vec<String> = messages.iter().map(|m| format_message(m, tz)).collect();
    match elements.as_slice() {
        [one] => one.clone(),
        many => format!("<messages>\n{}\n</messages>", many.join("\n")),
    }
}

fn format_message(m: &InboundMessage, tz: Tz) -> String {
    let time = m.created_at.with_timezone(&tz).format("%Y-%m-%d %H:%M");
    match m.kind {
        InboundKind::Chat => {
            let sender = m
                .sender_name
                .as_deref()
                .or(m.sender_id.as_deref())
                .unwrap_or("unknown");
            format!(
                "<message id=\"{}\" sender=\"{}\" time=\"{time}\">{}</message>",
                m.seq,
                escape(sender),
                escape(m.text().unwrap_or_default())
            )
        }
        InboundKind::Task => {
            let prompt = m
                .content
                .get("prompt")
                .and_then(Value::as_str)
                .or_else(|| m.text())
                .unwrap_or_default();
            format!(
                "<task id=\"{}\" time=\"{time}\">{}</task>",
                m.seq,
                escape(prompt)
            )
        }
        InboundKind::System => {
            let text = m
                .text()
                .map_or_else(|| m.content.to_string(), str::to_owned);
            format!(
                "<system id=\"{}\" time=\"{time}\">{}</system>",
                m.seq,
                escape(&text)
            )
        }
    }
}

/// XML escaping for text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeZone;
    use mailbox::{InboundStatus, Route};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    fn msg(seq: i64, kind: InboundKind, sender: Option<&str>, content: Value) -> InboundMessage {
        InboundMessage {
            seq,
            id: format!("m{seq}"),
            kind,
            created_at: at(15, 4),
            status: InboundStatus::Pending,
            process_after: None,
            tries: 0,
            trigger: true,
            route: Route::new("telegram", "42"),
            sender_id: Some("telegram:1".to_owned()),
            sender_name: sender.map(str::to_owned),
            content,
            error: None,
            detail: None,
        }
    }

    #[test]
    fn messages_are_rendered_and_escaped() {
        let berlin = chrono_tz::Europe::Berlin;
        let table = [
            (
                msg(
                    12,
                    InboundKind::Chat,
                    Some("Alice"),
                    json!({ "text": "hi" }),
                ),
                r#"<message id="12" sender="Alice" time="2026-11-23 16:04">hi</message>"#,
            ),
            (
                msg(
                    14,
                    InboundKind::Chat,
                    Some("Bob \"B\" <b>"),
                    json!({ "text": "a < b && c > d" }),
                ),
                r#"<message id="14" sender="Bob &quot;B&quot; &lt;b&gt;" time="2026-11-23 16:04">a &lt; b &amp;&amp; c &gt; d</message>"#,
            ),
            (
                msg(16, InboundKind::Chat, None, json!({})),
                r#"<message id="16" sender="telegram:1" time="2026-11-23 16:04"></message>"#,
            ),
            (
                msg(
                    18,
                    InboundKind::Task,
                    None,
                    json!({ "prompt": "Water <plants>" }),
                ),
                r#"<task id="18" time="2026-11-23 16:04">Water &lt;plants&gt;</task>"#,
            ),
            (
                msg(
                    20,
                    InboundKind::System,
                    None,
                    json!({ "text": "Reply 13 was not delivered" }),
                ),
                r#"<system id="20" time="2026-11-23 16:04">Reply 13 was not delivered</system>"#,
            ),
            (
                msg(22, InboundKind::System, None, json!({ "code": 1 })),
                r#"<system id="22" time="2026-11-23 16:04">{&quot;code&quot;:1}</system>"#,
            ),
        ];
        for (m, want) in table {
            assert_eq!(format_batch(std::slice::from_ref(&m), berlin), want);
        }
    }

    #[test]
    fn several_messages_are_wrapped() {
        let batch = [
            msg(2, InboundKind::Chat, Some("A"), json!({ "text": "one" })),
            msg(4, InboundKind::Chat, Some("B"), json!({ "text": "two" })),
        ];
        assert_eq!(
            format_batch(&batch, Tz::UTC),
            "<messages>\n\
             <message id=\"2\" sender=\"A\" time=\"2026-11-23 15:04\">one</message>\n\
             <message id=\"4\" sender=\"B\" time=\"2026-11-23 15:04\">two</message>\n\
             </messages>"
        );
    }

    #[test]
    fn date_time_in_zone() {
        let table = [
            (Tz::UTC, "2026-11-23 15:04 (UTC, Monday)"),
            (
                chrono_tz::Europe::Berlin,
                "2026-11-23 16:04 (Europe/Berlin, Monday)",
            ),
            (
                chrono_tz::Pacific::Auckland,
                "2026-11-24 04:04 (Pacific/Auckland, Tuesday)",
            ),
        ];
        for (tz, want) in table {
            assert_eq!(local_date_time(at(15, 4), tz), want);
        }
    }

    #[test]
    fn system_prompt_joins_the_parts_in_order() {
        let mut skills = SkillSet::default();
        skills.skills.insert(
            "greet".to_owned(),
            crate::skills::parse_skill(
                "greet",
                "---\ntriggers: [{on: first_message_in_session}]\n---\nSay hello.",
                crate::skills::Origin::Builtin,
            )
            .unwrap()
            .0,
        );
        let files = PromptFiles {
            instructions: Some("# Agent\nBe kind.".to_owned()),
            memory: Some("User likes tea.".to_owned()),
            global: Some("No secrets.".to_owned()),
            skills,
        };
        let destinations = [Destination {
            name: "family".to_owned(),
            display_name: Some("Family chat".to_owned()),
            route: Route::new("telegram", "-100"),
        }];
        let ctx = PromptContext {
            now: at(15, 4),
            timezone: chrono_tz::Europe::Berlin,
            assistant_name: "Andy",
            channel: Some("telegram"),
            destinations: &destinations,
            first_message_in_session: true,
            setup_problems: &["container.json is not valid: oops".to_owned()],
        };
        let prompt = system_prompt(&files, &ctx);
        let order = [
            "# Agent\nBe kind.",
            "## Your memory (CLAUDE.local.md in your agent folder)\n\nUser likes tea.",
            "## Instructions for all agents\n\nNo secrets.",
            "## Skills\n\n### Skill: greet\n\nSay hello.",
            "## Context\n\nYou are Andy.\nCurrent date and time: 2026-11-23 16:04 (Europe/Berlin, Monday).\nThis conversation is on: telegram.\n",
            "Destinations (names for send_message):\n- family: Family chat (telegram)",
            "\nProblems with your setup (tell the user when it matters; most are fixed in container.json in your agent folder):\n- container.json is not valid: oops",
        ];
        let mut from = 0;
        for part in order {
            let at = prompt[from..]
                .find(part)
                .unwrap_or_else(|| panic!("{part:?} missing or out of order in\n{prompt}"));
            from += at + part.len();
        }

        let bare = system_prompt(
            &PromptFiles::default(),
            &PromptContext {
                channel: None,
                destinations: &[],
                setup_problems: &[],
                ..ctx
            },
        );
        assert!(bare.starts_with("## Context\n\nYou are Andy."), "{bare}");
        assert!(bare.ends_with("Destinations: none besides this conversation."));
    }

    #[test]
    fn prompt_files_are_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_prompt_files(dir.path(), None, None),
            PromptFiles::default()
        );
        std::fs::write(dir.path().join("CLAUDE.md"), "  be brief \n").unwrap();
        std::fs::write(dir.path().join("CLAUDE.local.md"), "\n").unwrap();
        let global = tempfile::tempdir().unwrap();
        std::fs::write(global.path().join("CLAUDE.md"), "shared").unwrap();
        assert_eq!(
            read_prompt_files(dir.path(), Some(global.path()), None),
            PromptFiles {
                instructions: Some("be brief".to_owned()),
                memory: None,
                global: Some("shared".to_owned()),
                skills: SkillSet::default(),
            }
        );
    }
}
