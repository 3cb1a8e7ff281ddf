//! What the model reads: the system prompt (the agent's `CLAUDE.md`, its memory
//! `CLAUDE.local.md`, the shared `groups/global/CLAUDE.md`, the skills section of `skills.rs`, and
//! a context section with the name, time zone, channel, destinations and setup problems) and the
//! rendering of a batch of inbound messages as XML-ish text. Pure functions apart from
//! [`read_prompt_files`]; the files are re-read for every turn so that edits take effect at once.
//!
//! The system prompt holds nothing that changes from turn to turn by itself: no clock. The
//! current time opens each turn's user message instead ([`with_now`]), so the request prefix
//! (system prompt, tools, earlier turns) is byte-for-byte the one of the turn before, and the
//! prompt caches of providers and local servers (llama.cpp re-reads nothing it has seen) apply.
//! What still changes the system prompt is what should: edited files, skills whose triggers
//! match (the first message of a session), new destinations.

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
    /// The task tools are offered (their group is on in `container.json`).
    pub task_tools: bool,
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
    out.push_str(&format!("Your time zone: {}.\n", ctx.timezone.name()));
    if let Some(channel) = ctx.channel {
        out.push_str(&format!("This conversation is on: {channel}.\n"));
    }
    out.push_str(
        "New messages start with <now>…</now>, the current time. They arrive as <message \
         id=\"…\" sender=\"…\" time=\"…\">…</message> (<task> for scheduled tasks, <system> \
         for notices from the host); the id is the message's number. Times are in your time \
         zone. File tool paths are relative to your workspace; agent/… is your agent folder. \
         Files people send are listed as <file path=\"inbound/…\"/>: read them with the file \
         tools (read-only; $INBOUND_FILES in run_bash) or send them on.\n",
    );
    if ctx.task_tools {
        out.push_str(
            "A <task> is a task scheduled with schedule_task coming due: do what it says (with \
             the script's output, if it has one); your answer goes to this conversation. Manage \
             tasks with list_tasks, update_task, pause_task, resume_task and cancel_task.\n",
        );
    } else {
        out.push_str("A <task> is a scheduled task coming due: do what it says.\n");
    }
    out.push_str(
        "Your final answer (your text once you call no more tools) is sent to this conversation \
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

/// A turn's user message: `<now>…</now>` (the local time when the turn starts), then the
/// batch. The time lives here, not in the system prompt, so that the prefix stays cacheable.
pub fn with_now(now: DateTime<Utc>, tz: Tz, batch: &str) -> String {
    format!("<now>{}</now>\n{batch}", local_date_time(now, tz))
}

/// The batch of a turn: one element per inbound message, in order; several are wrapped
/// in `<messages>…</messages>`.
pub fn format_batch(messages: &[InboundMessage], tz: Tz) -> String {
    format_batch_with(messages, tz, None)
}

/// [`format_batch`], with the `data` a task's script passed on for the task message `seq`.
pub fn format_batch_with(
    messages: &[InboundMessage],
    tz: Tz,
    script_data: Option<(i64, &Value)>,
) -> String {
    let elements: Vec<String> = messages
        .iter()
        .map(|m| {
            let data = script_data.and_then(|(seq, data)| (seq == m.seq).then_some(data));
            format_message(m, tz, data)
        })
        .collect();
    match elements.as_slice() {
        [one] => one.clone(),
        many => format!("<messages>\n{}\n</messages>", many.join("\n")),
    }
}

fn format_message(m: &InboundMessage, tz: Tz, script_data: Option<&Value>) -> String {
    let time = m.created_at.with_timezone(&tz).format("%Y-%m-%d %H:%M");
    match m.kind {
        InboundKind::Chat => {
            let sender = m
                .sender_name
                .as_deref()
                .or(m.sender_id.as_deref())
                .unwrap_or("unknown");
            format!(
                "<message id=\"{}\" sender=\"{}\" time=\"{time}\">{}{}</message>",
                m.seq,
                escape(sender),
                escape(m.text().unwrap_or_default()),
                files_of(&m.content)
            )
        }
        InboundKind::Task => {
            let prompt = m
                .content
                .get("prompt")
                .and_then(Value::as_str)
                .or_else(|| m.text())
                .unwrap_or_default();
            let mut attributes = format!("id=\"{}\"", m.seq);
            if let Some(task) = m.content.get("task_id").and_then(Value::as_str) {
                attributes.push_str(&format!(" task=\"{}\"", escape(task)));
            }
            attributes.push_str(&format!(" time=\"{time}\""));
            let notes = task_notes(m, tz, script_data);
            if notes.is_empty() {
                format!("<task {attributes}>{}</task>", escape(prompt))
            } else {
                format!(
                    "<task {attributes}>\n{}\n{}\n</task>",
                    notes.join("\n"),
                    escape(prompt)
                )
            }
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

/// The files a chat message carries (`content.files`), one `<file …/>` each: where to read it
/// (`inbound/…`, read-only for the file tools), or why it was not stored.
fn files_of(content: &Value) -> String {
    let Some(files) = content.get("files").and_then(Value::as_array) else {
        return String::new();
    };
    let mut out = String::new();
    for f in files {
        let attr = |k: &str| f.get(k).and_then(Value::as_str).map(escape);
        out.push_str("\n<file");
        for key in ["kind", "name", "mime", "path"] {
            if let Some(v) = attr(key) {
                out.push_str(&format!(" {key}=\"{v}\""));
            }
        }
        if let Some(bytes) = f.get("bytes").and_then(Value::as_u64) {
            out.push_str(&format!(" bytes=\"{bytes}\""));
        }
        if let Some(why) = attr("skipped") {
            out.push_str(&format!(" skipped=\"{why}\""));
        }
        out.push_str("/>");
    }
    out
}

/// What the agent should know about a task run besides its prompt: that it is late (the host
/// was down when it was due), that it was started by hand, and its script's output.
fn task_notes(m: &InboundMessage, tz: Tz, script_data: Option<&Value>) -> Vec<String> {
    let mut notes = Vec::new();
    let flag = |name: &str| m.content.get(name).and_then(Value::as_bool) == Some(true);
    let instant = |name: &str| {
        m.content
            .get(name)
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if flag("late")
        && let Some(due) = instant("scheduled_for")
    {
        let task_tz = m
            .content
            .get("timezone")
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<Tz>().ok())
            .unwrap_or(tz);
        let fired = instant("fired_at").unwrap_or(m.created_at);
        let due_local = due.with_timezone(&task_tz);
        let zone = if task_tz == Tz::UTC {
            String::new()
        } else {
            format!(" ({})", task_tz.name())
        };
        notes.push(escape(&format!(
            "Note: this run is late. It was due {}{zone} and starts {} later, because the host \
             was not running at that time. Runs missed meanwhile are not repeated.",
            due_local.format("%Y-%m-%d %H:%M %Z"),
            late_by(fired - due)
        )));
    }
    if flag("run_now") {
        notes.push(
            "Note: this run was started by hand (clawbox tasks run-now), not by its schedule."
                .to_owned(),
        );
    }
    if let Some(data) = script_data {
        notes.push(format!(
            "<script_output>{}</script_output>",
            escape(&data.to_string())
        ));
    }
    notes
}

/// `3 min`, `2 h 5 min`, `1 d 4 h`.
fn late_by(d: chrono::Duration) -> String {
    let mins = d.num_minutes().max(0);
    match (mins / 1440, mins % 1440 / 60, mins % 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
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
                msg(
                    24,
                    InboundKind::Chat,
                    Some("Ann"),
                    json!({ "text": "look", "files": [
                        { "kind": "photo", "name": "photo.jpg", "mime": "image/jpeg", "path": "inbound/msg-1-7/photo.jpg", "bytes": 1234 },
                        { "kind": "document", "name": "big.zip", "skipped": "larger than the 20 MB limit" },
                    ] }),
                ),
                "<message id=\"24\" sender=\"Ann\" time=\"2026-11-23 16:04\">look\n<file kind=\"photo\" name=\"photo.jpg\" mime=\"image/jpeg\" path=\"inbound/msg-1-7/photo.jpg\" bytes=\"1234\"/>\n<file kind=\"document\" name=\"big.zip\" skipped=\"larger than the 20 MB limit\"/></message>",
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
    fn task_runs_say_what_the_agent_must_know() {
        let berlin = chrono_tz::Europe::Berlin;
        let plain = msg(
            18,
            InboundKind::Task,
            None,
            json!({ "prompt": "Water the plants", "task_id": "task-ab12", "late": false }),
        );
        assert_eq!(
            format_batch(std::slice::from_ref(&plain), berlin),
            r#"<task id="18" task="task-ab12" time="2026-11-23 16:04">Water the plants</task>"#
        );
        let late = msg(
            20,
            InboundKind::Task,
            None,
            json!({
                "prompt": "Daily overview",
                "task_id": "task-ab12",
                "scheduled_for": "2026-11-23T08:00:00.000Z",
                "fired_at": "2026-11-23T10:32:00.000Z",
                "timezone": "America/New_York",
                "late": true,
            }),
        );
        assert_eq!(
            format_batch(std::slice::from_ref(&late), berlin),
            "<task id=\"20\" task=\"task-ab12\" time=\"2026-11-23 16:04\">\n\
             Note: this run is late. It was due 2026-11-23 03:00 EST (America/New_York) and \
             starts 2 h 32 min later, because the host was not running at that time. Runs \
             missed meanwhile are not repeated.\n\
             Daily overview\n\
             </task>"
        );
        let gated = msg(
            22,
            InboundKind::Task,
            None,
            json!({ "prompt": "Tell me <what> broke", "task_id": "t", "run_now": true }),
        );
        let data = json!({ "failed": ["build <42>"] });
        assert_eq!(
            format_batch_with(std::slice::from_ref(&gated), berlin, Some((22, &data))),
            "<task id=\"22\" task=\"t\" time=\"2026-11-23 16:04\">\n\
             Note: this run was started by hand (clawbox tasks run-now), not by its schedule.\n\
             <script_output>{&quot;failed&quot;:[&quot;build &lt;42&gt;&quot;]}</script_output>\n\
             Tell me &lt;what&gt; broke\n\
             </task>"
        );
        let table = [
            (0, "0 min"),
            (45, "45 min"),
            (120, "2 h"),
            (150, "2 h 30 min"),
            (1500, "1 d 1 h"),
        ];
        for (mins, want) in table {
            assert_eq!(late_by(chrono::Duration::minutes(mins)), want);
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
            timezone: chrono_tz::Europe::Berlin,
            assistant_name: "Andy",
            channel: Some("telegram"),
            destinations: &destinations,
            first_message_in_session: true,
            setup_problems: &["container.json is not valid: oops".to_owned()],
            task_tools: true,
        };
        let prompt = system_prompt(&files, &ctx);
        let order = [
            "# Agent\nBe kind.",
            "## Your memory (CLAUDE.local.md in your agent folder)\n\nUser likes tea.",
            "## Instructions for all agents\n\nNo secrets.",
            "## Skills\n\n### Skill: greet\n\nSay hello.",
            "## Context\n\nYou are Andy.\nYour time zone: Europe/Berlin.\nThis conversation is on: telegram.\n",
            "Manage tasks with list_tasks",
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
        let no_tasks = system_prompt(
            &PromptFiles::default(),
            &PromptContext {
                task_tools: false,
                ..ctx
            },
        );
        assert!(!no_tasks.contains("schedule_task"), "{no_tasks}");
    }

    #[test]
    fn the_time_opens_the_user_message() {
        assert_eq!(
            with_now(
                at(15, 4),
                chrono_tz::Europe::Berlin,
                "<message>hi</message>"
            ),
            "<now>2026-11-23 16:04 (Europe/Berlin, Monday)</now>\n<message>hi</message>"
        );
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
