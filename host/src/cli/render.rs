//! How the operator commands print their reports for people: aligned tables, ages relative to
//! the report's own time (so the same report always renders the same), times in `TIMEZONE`,
//! long texts cut to one line. Pure functions of their input; `--json` bypasses all of this.
//!
//! Much of what is shown was written by others — chat messages, sender names, tool names a model
//! made up, error texts of remote services — so every line passes through [`clean`]: control
//! characters (escape sequences could rewrite the operator's terminal) and bidirectional
//! overrides (which could make a line read differently than it is) never reach the terminal.
//! Snapshot-tested (`insta`) here and over a real host in `tests/suite/operator.rs`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::{Activity, InboundKind};
use unicode_width::UnicodeWidthStr;

use crate::report::doctor::{DoctorReport, Level};
use crate::report::inspect::{
    AgentList, ContainerState, Doing, DroppedList, SessionList, SessionStatus, StatusReport,
};
use crate::report::logs::{LogEntry, LogEvent};

/// The longest cell in a table column that holds free text (errors, reasons).
const TEXT_CELL: usize = 60;
/// The longest message text shown in a log line.
const LOG_TEXT: usize = 100;

// ---------------------------------------------------------------------------------------------
// Building blocks

/// A table: left-aligned text columns, right-aligned number columns, two spaces apart, the last
/// column not padded.
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: (header, right-aligned).
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    fn render(&self, indent: &str) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.width());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = indent.to_owned();
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                let pad = " ".repeat(widths[i].saturating_sub(cell.width()));
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i != last {
                        line.push_str(&pad);
                    }
                }
                if i != last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `45s`, `3m 05s`, `2h 03m`, `3d 4h`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// `250 ms`, `1.5 s`, else as [`duration`].
pub fn millis(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => duration(ms / 1000),
    }
}

fn since(then: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    u64::try_from((now - then).num_seconds()).unwrap_or(0)
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `text` without what must not reach a terminal: control characters (line breaks become `↵`,
/// tabs spaces) and the invisible characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width spaces, byte-order marks).
pub fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('↵'),
            c => safe_char(c),
        })
        .collect()
}

/// `text` safe for a terminal but with its lines kept: like [`clean`], except that line breaks
/// stay line breaks (what agents write in a chat).
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            c => safe_char(c),
        })
        .collect()
}

fn safe_char(c: char) -> Option<char> {
    match c {
        '\t' => Some(' '),
        '\u{200B}'
        | '\u{200C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{061C}'
        | '\u{FEFF}' => None,
        c if c.is_control() => None,
        c => Some(c),
    }
}

/// One clean line of at most `max` characters, cut with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = clean(text.trim());
    if flat.chars().count() <= max {
        return flat;
    }
    let mut short: String = flat.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{} {many}", thousands(n))
    }
}

// ---------------------------------------------------------------------------------------------
// clawbox status

pub fn status(report: &StatusReport) -> String {
    let now = report.generated_at;
    let mut out = String::new();
    let runtime = if report.isolated {
        format!("{} runtime", report.runtime)
    } else {
        format!("{} runtime (NOT isolated)", report.runtime)
    };
    let containers = match (report.containers.cap, report.runtime.as_str()) {
        (Some(cap), _) => format!("containers {}/{cap}", report.containers.running),
        (None, _) => format!(
            "{} (not capped)",
            plural(report.containers.running as u64, "runner", "runners")
        ),
    };
    let live = plural(
        report.sessions.len() as u64,
        "live session",
        "live sessions",
    );
    let tokens = format!("{} tokens today", thousands(report.tokens_today));
    match &report.host {
        Some(host) => out.push_str(&format!(
            "host up {} · {runtime} · {containers} · {live} · {tokens}\n",
            duration(host.uptime_s)
        )),
        None => {
            out.push_str(
                "no host is running — this is what the files say; sessions listed are those \
                 the last host left busy\n",
            );
            out.push_str(&format!(
                "{runtime} (configured) · {} left busy · {tokens}\n",
                plural(report.sessions.len() as u64, "session", "sessions")
            ));
        }
    }
    if report.sessions.is_empty() {
        out.push_str(match report.host {
            Some(_) => "\nno live sessions (`clawbox sessions` lists every session)\n",
            None => "\nnothing was left busy (`clawbox sessions` lists every session)\n",
        });
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&[
        ("SESSION", false),
        ("AGENT", false),
        ("CHAT", false),
        ("CONTAINER", false),
        ("DOING", false),
        ("IN", true),
        ("OUT", true),
        ("TOKENS", true),
        ("LAST ERROR", false),
    ]);
    for s in &report.sessions {
        table.row(vec![
            s.id.clone(),
            s.agent.clone(),
            chat(&s.chat, s.thread.as_deref()),
            container(&s.container, &s.chat, now),
            doing(s.doing.as_ref(), now),
            s.pending_in.to_string(),
            out_cell(s),
            thousands(s.tokens_today.total()),
            match &s.last_error {
                Some(e) => one_line(
                    &match e.at {
                        Some(at) => format!("{} ago: {}", duration(since(at, now)), e.text),
                        None => e.text.clone(),
                    },
                    TEXT_CELL,
                ),
                None => "-".to_owned(),
            },
        ]);
    }
    out.push_str(&table.render(""));
    out.push_str(
        "\nIN: messages waiting for the agent · OUT: replies not yet delivered · TOKENS: today\n",
    );
    out
}

fn chat(chat: &str, thread: Option<&str>) -> String {
    match thread {
        Some(t) => format!("{chat}#{t}"),
        None => chat.to_owned(),
    }
}

/// Undelivered replies, and those given up on.
fn out_cell(s: &SessionStatus) -> String {
    match s.failed_deliveries {
        0 => s.undelivered_out.to_string(),
        n => format!("{} ({n} failed)", s.undelivered_out),
    }
}

fn container(state: &ContainerState, chat: &str, now: DateTime<Utc>) -> String {
    match state {
        ContainerState::Running { uptime_s, .. } => format!("running {}", duration(*uptime_s)),
        ContainerState::WaitingForSlot => "waiting for a slot".to_owned(),
        ContainerState::Retrying { at } if *at > now => {
            format!("retry in {}", duration(since(now, *at).max(1)))
        }
        ContainerState::Retrying { .. } => "retry due".to_owned(),
        ContainerState::WaitingForChannel if chat.starts_with("cli:") => {
            "replies wait for a terminal".to_owned()
        }
        ContainerState::WaitingForChannel => "replies wait for the chat".to_owned(),
        ContainerState::Stopped => "stopped".to_owned(),
        ContainerState::Recorded { recorded } => format!("{recorded} (last host)"),
    }
}

fn doing(doing: Option<&Doing>, now: DateTime<Utc>) -> String {
    let Some(d) = doing else {
        return "-".to_owned();
    };
    let for_ = duration(since(d.since, now));
    let what = match d.activity {
        Activity::Starting => format!("starting ({for_})"),
        Activity::Idle => "idle".to_owned(),
        Activity::Model => format!("model step {} ({for_})", d.step),
        Activity::Tool => format!(
            "tool {} ({for_})",
            d.tool
                .as_deref()
                .map_or("?".to_owned(), |t| one_line(t, 30))
        ),
    };
    match (d.heartbeat_stale, d.heartbeat_age_ms) {
        (true, Some(age)) => format!("{what}, no heartbeat for {}", duration(age / 1000)),
        (true, None) => format!("{what}, no heartbeat"),
        (false, _) => what,
    }
}

// ---------------------------------------------------------------------------------------------
// clawbox sessions

pub fn sessions(list: &SessionList) -> String {
    let now = list.generated_at;
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — states are what the last host recorded\n\n");
    }
    if list.sessions.is_empty() {
        out.push_str("no sessions yet\n");
        return out;
    }
    let mut table = Table::new(&[
        ("SESSION", false),
        ("AGENT", false),
        ("CHAT", false),
        ("STATE", false),
        ("LAST ACTIVE", false),
        ("IN", true),
        ("OUT", true),
        ("PENDING", true),
        ("FAILED", true),
        ("UNDELIVERED", true),
        ("TOKENS TODAY", true),
    ]);
    for s in &list.sessions {
        let state = match (&s.container, s.status.as_str()) {
            (_, "closed") => "closed".to_owned(),
            (Some(c), _) => container(c, &s.chat, now),
            (None, _) if !list.host_running && s.recorded != "stopped" => {
                format!("{} (last host)", s.recorded)
            }
            (None, _) => "idle".to_owned(),
        };
        table.row(vec![
            s.id.clone(),
            s.agent.clone(),
            chat(&s.chat, s.thread.as_deref()),
            state,
            format!("{} ago", duration(since(s.last_activity, now))),
            thousands(s.messages_in),
            thousands(s.messages_out),
            s.pending_in.to_string(),
            s.failed_in.to_string(),
            s.undelivered_out.to_string(),
            thousands(s.tokens_today),
        ]);
    }
    out.push_str(&table.render(""));
    out.push_str(&format!(
        "\n{}; IN/OUT count messages to and from the agent\n",
        plural(list.sessions.len() as u64, "session", "sessions")
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// clawbox agents

pub fn agents(list: &AgentList) -> String {
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — live sessions are not known\n\n");
    }
    for (i, row) in list.agents.iter().enumerate() {
        let a = &row.agent;
        if i > 0 {
            out.push('\n');
        }
        let model = match &a.model {
            Some(m) => m.clone(),
            None => format!("{} (DEFAULT_MODEL)", list.default_model),
        };
        let live = if list.host_running {
            format!(", {} live", row.live_sessions)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{} \"{}\" · model {} · folder {} · {}{live}\n",
            clean(&a.id),
            clean(&a.name),
            clean(&model),
            clean(&a.folder),
            plural(row.sessions, "session", "sessions")
        ));
        if a.wirings.is_empty() {
            out.push_str("  wired to no chat\n");
        } else {
            let mut table = Table::new(&[
                ("CHAT", false),
                ("ENGAGE", false),
                ("STICKY", false),
                ("SESSIONS", false),
                ("UNKNOWN SENDERS", false),
                ("IGNORED", false),
            ]);
            for w in &a.wirings {
                let engage = match &w.engage_pattern {
                    Some(p) => format!("{} {p:?}", w.engage_mode),
                    None => w.engage_mode.clone(),
                };
                let sticky = if w.engage_mode == "mention-sticky" {
                    duration(u64::try_from(w.sticky_window_s).unwrap_or(0))
                } else {
                    "-".to_owned()
                };
                let kind = if w.is_group { " (group)" } else { "" };
                table.row(vec![
                    format!("{}:{}{kind}", w.channel_type, w.platform_id),
                    engage,
                    sticky,
                    w.session_mode.clone(),
                    w.unknown_sender_policy.clone(),
                    w.ignored_messages.clone(),
                ]);
            }
            out.push_str(&table.render("  "));
        }
        let destinations: Vec<String> = a
            .destinations
            .iter()
            .map(|d| {
                let thread = d
                    .thread_id
                    .as_deref()
                    .map_or(String::new(), |t| format!("#{t}"));
                format!("{} → {}:{}{thread}", d.name, d.channel_type, d.platform_id)
            })
            .collect();
        out.push_str(&format!(
            "  destinations: {}\n",
            if destinations.is_empty() {
                "none".to_owned()
            } else {
                clean(&destinations.join(", "))
            }
        ));
        let roles: Vec<String> = a
            .roles
            .iter()
            .map(|r| format!("{} {}", r.role, r.user_id))
            .collect();
        out.push_str(&format!(
            "  roles: {}\n",
            if roles.is_empty() {
                "none".to_owned()
            } else {
                clean(&roles.join(", "))
            }
        ));
    }
    if list.agents.is_empty() {
        out.push_str("no agents yet (the host creates `default` at first start)\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// clawbox dropped

pub fn dropped(list: &DroppedList, timezone: Tz) -> String {
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — read from the files\n\n");
    }
    if list.dropped.is_empty() {
        out.push_str("no refused messages on record\n");
        return out;
    }
    let mut table = Table::new(&[
        ("TIME", false),
        ("CHAT", false),
        ("SENDER", false),
        ("AGENT", false),
        ("REASON", false),
    ]);
    for d in &list.dropped {
        let sender = match (&d.sender_name, &d.sender_id) {
            (Some(name), Some(id)) => format!("{name} ({id})"),
            (Some(name), None) => name.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => "-".to_owned(),
        };
        table.row(vec![
            d.at.with_timezone(&timezone)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            d.chat.clone(),
            one_line(&sender, 40),
            d.agent.clone().unwrap_or_else(|| "-".to_owned()),
            one_line(&d.reason, TEXT_CELL),
        ]);
    }
    out.push_str(&table.render(""));
    let shown = list.dropped.len() as u64;
    if list.total > shown {
        out.push_str(&format!(
            "\nnewest {shown} of {}; `--limit N` shows more\n",
            thousands(list.total)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// clawbox doctor

pub fn doctor(report: &DoctorReport) -> String {
    let mut out = String::new();
    out.push_str(if report.ran_by_host {
        "checked by the running host, with its configuration\n\n"
    } else {
        "no host is running; checked with this shell's configuration (.env and environment)\n\n"
    });
    let width = report
        .checks
        .iter()
        .map(|c| c.name.width())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let level = match c.level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let pad = " ".repeat(width - c.name.width());
        out.push_str(&format!(
            "{level:<4}  {}{pad}  {}\n",
            clean(&c.name),
            clean(&c.detail)
        ));
        if let Some(hint) = &c.hint {
            out.push_str(&format!("      {}  → {}\n", " ".repeat(width), clean(hint)));
        }
    }
    let count = |level| report.checks.iter().filter(|c| c.level == level).count() as u64;
    let (failed, warned) = (count(Level::Fail), count(Level::Warn));
    out.push('\n');
    out.push_str(&match (failed, warned) {
        (0, 0) => "all checks passed\n".to_owned(),
        (0, w) => format!("no failures, {}\n", plural(w, "warning", "warnings")),
        (f, w) => format!(
            "{} failed, {}\n",
            plural(f, "check", "checks"),
            plural(w, "warning", "warnings")
        ),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// clawbox logs

/// Renders log entries one line each, with a date line whenever the day changes.
pub struct LogPrinter {
    timezone: Tz,
    day: Option<String>,
}

impl LogPrinter {
    pub fn new(timezone: Tz) -> Self {
        LogPrinter {
            timezone,
            day: None,
        }
    }

    pub fn print(&mut self, entry: &LogEntry) -> String {
        let local = entry.at.with_timezone(&self.timezone);
        let day = local.format("%Y-%m-%d (%Z)").to_string();
        let mut out = String::new();
        if self.day.as_ref() != Some(&day) {
            out.push_str(&format!("── {day}\n"));
            self.day = Some(day);
        }
        let (what, detail) = log_line(&entry.event, self.timezone);
        out.push_str(&format!(
            "{}  {:<12} {}\n",
            local.format("%H:%M:%S%.3f"),
            clean(&what),
            clean(&detail)
        ));
        out
    }
}

fn log_line(event: &LogEvent, timezone: Tz) -> (String, String) {
    match event {
        LogEvent::MessageIn {
            seq,
            kind,
            sender,
            text,
            trigger,
        } => {
            let from = match kind {
                InboundKind::Chat => sender.clone().unwrap_or_else(|| "someone".to_owned()),
                InboundKind::Task => "scheduled task".to_owned(),
                InboundKind::System => "host notice".to_owned(),
            };
            let context = if *trigger { "" } else { " (context only)" };
            (
                format!("in #{seq}"),
                format!("{from}: {}{context}", one_line(text, LOG_TEXT)),
            )
        }
        LogEvent::Claimed { seq, attempt } => (
            format!("claim #{seq}"),
            if *attempt > 1 {
                format!("attempt {attempt}")
            } else {
                "turn started".to_owned()
            },
        ),
        LogEvent::RunnerStarted { pid, model } => (
            "runner".to_owned(),
            format!("started (pid {pid}, model {model})"),
        ),
        LogEvent::RunnerReady { tools, problems } => {
            let mut detail = format!("ready with {}", plural(u64::from(*tools), "tool", "tools"));
            for p in problems {
                detail.push_str(&format!("; problem: {}", one_line(p, LOG_TEXT)));
            }
            ("runner".to_owned(), detail)
        }
        LogEvent::ModelStep {
            step,
            latency_ms,
            attempts,
            prompt_tokens,
            completion_tokens,
            tool_calls,
            ..
        } => {
            let tokens = |n: &Option<u64>| n.map_or_else(|| "?".to_owned(), thousands);
            let mut detail = format!(
                "step {step}: {} → {} tokens, {}",
                tokens(prompt_tokens),
                tokens(completion_tokens),
                millis(*latency_ms)
            );
            if *attempts > 1 {
                detail.push_str(&format!(" ({attempts} attempts)"));
            }
            detail.push_str(&match tool_calls {
                0 => ", answered".to_owned(),
                n => format!(", {}", plural(u64::from(*n), "tool call", "tool calls")),
            });
            ("model".to_owned(), detail)
        }
        LogEvent::ModelFailed {
            step,
            latency_ms,
            error,
            ..
        } => (
            "model".to_owned(),
            format!(
                "step {step} FAILED after {}: {}",
                millis(*latency_ms),
                one_line(error, LOG_TEXT)
            ),
        ),
        LogEvent::ToolCall {
            tool,
            duration_ms,
            ok,
            error,
            ..
        } => (
            "tool".to_owned(),
            match (ok, error) {
                (true, _) => format!("{tool} ok, {}", millis(*duration_ms)),
                (false, e) => format!(
                    "{tool} FAILED, {}: {}",
                    millis(*duration_ms),
                    one_line(e.as_deref().unwrap_or("no reason given"), LOG_TEXT)
                ),
            },
        ),
        LogEvent::Reply {
            seq,
            in_reply_to,
            text,
            files,
            to,
        } => {
            let mut detail = match (to, in_reply_to) {
                (Some(to), _) => format!("to {to}: "),
                (None, Some(r)) => format!("to #{r}: "),
                (None, None) => String::new(),
            };
            detail.push_str(&one_line(text, LOG_TEXT));
            for f in files {
                detail.push_str(&format!(" [file {f}]"));
            }
            (format!("reply #{seq}"), detail)
        }
        LogEvent::Edit { seq, edit_of, text } => (
            format!("edit #{seq}"),
            format!(
                "of #{}: {}",
                edit_of.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                one_line(text, LOG_TEXT)
            ),
        ),
        LogEvent::Reaction {
            seq,
            reaction_to,
            emoji,
        } => (
            format!("react #{seq}"),
            format!(
                "{emoji} to #{}",
                reaction_to.map_or_else(|| "?".to_owned(), |n| n.to_string())
            ),
        ),
        LogEvent::Request { seq, op } => (format!("request #{seq}"), clean(op)),
        LogEvent::Completed { seq } => (format!("done #{seq}"), "completed".to_owned()),
        LogEvent::Failed { seq, error } => (
            format!("failed #{seq}"),
            one_line(error.as_deref().unwrap_or("no reason given"), LOG_TEXT),
        ),
        LogEvent::Requeued {
            seq,
            tries,
            retry_at,
            reason,
        } => (
            format!("retry #{seq}"),
            format!(
                "attempt {tries} ended: {}; next attempt at {}",
                one_line(reason, LOG_TEXT),
                retry_at.with_timezone(&timezone).format("%H:%M:%S")
            ),
        ),
        LogEvent::Delivered { seq, attempts } => (
            format!("sent #{seq}"),
            if *attempts > 1 {
                format!("delivered (attempt {attempts})")
            } else {
                "delivered".to_owned()
            },
        ),
        LogEvent::DeliveryFailed {
            seq,
            error,
            gave_up,
        } => (
            format!("unsent #{seq}"),
            format!(
                "{}: {}",
                if *gave_up {
                    "delivery FAILED for good"
                } else {
                    "delivery failed, will retry"
                },
                one_line(error, LOG_TEXT)
            ),
        ),
        LogEvent::RunnerExited {
            exit,
            reason,
            unexpected,
            ..
        } => (
            "runner".to_owned(),
            match (reason, unexpected) {
                (Some(reason), _) => format!("stopped ({exit}): {reason}"),
                (None, true) => format!("CRASHED ({exit})"),
                (None, false) => format!("exited ({exit})"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn terminal_safe_keeps_lines_and_drops_what_drives_a_terminal() {
        assert_eq!(
            terminal_safe("a\u{1b}[31mb\tc\nd\u{202e}e\u{7}"),
            "a[31mb c\nde"
        );
        assert_eq!(clean("a\nb"), "a↵b");
    }

    #[test]
    fn durations() {
        let table = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 00s"),
            (185, "3m 05s"),
            (3600, "1h 00m"),
            (7380, "2h 03m"),
            (90000, "1d 1h"),
        ];
        for (secs, want) in table {
            assert_eq!(duration(secs), want);
        }
        assert_eq!(millis(250), "250 ms");
        assert_eq!(millis(1500), "1.5 s");
        assert_eq!(millis(125_000), "2m 05s");
    }

    #[test]
    fn numbers_and_text() {
        let table = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
        ];
        for (n, want) in table {
            assert_eq!(thousands(n), want);
        }
        assert_eq!(one_line("a\nb\r\n", 10), "a↵b");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("  ok  ", 4), "ok");
        let table = [
            ("\u{1b}[2J\u{1b}]0;pwned\u{7}hi", "[2J]0;pwnedhi"),
            ("a\tb", "a b"),
            ("evil\u{202E}txt.exe", "eviltxt.exe"),
            ("\u{2066}x\u{2069}\u{200B}", "x"),
            ("\u{85}nel\u{9b}csi", "nelcsi"),
            ("👨\u{200D}👩\u{200D}👧 ok", "👨\u{200D}👩\u{200D}👧 ok"),
        ];
        for (text, want) in table {
            assert_eq!(clean(text), want, "{text:?}");
        }
    }

    use crate::db::TokenUsage;
    use crate::db::{AgentListing, DestinationListing, RoleListing, WiringListing};
    use crate::report::doctor::Check;
    use crate::report::inspect::{
        AgentRow, ContainerCount, DroppedMessage, HostSummary, LastError, ProxySummary, SessionRow,
    };

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::seconds(secs)
    }

    fn tokens(total: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: total - total / 10,
            completion_tokens: total / 10,
            requests: 3,
        }
    }

    fn session(id: &str, agent: &str, chat: &str, container: ContainerState) -> SessionStatus {
        SessionStatus {
            id: id.into(),
            agent: agent.into(),
            agent_name: agent.into(),
            chat: chat.into(),
            thread: None,
            container,
            doing: None,
            pending_in: 0,
            undelivered_out: 0,
            failed_deliveries: 0,
            tokens_today: TokenUsage::default(),
            last_error: None,
            last_activity: t(-5),
        }
    }

    fn doing(activity: Activity, step: u32, tool: Option<&str>, since: i64) -> Option<Doing> {
        Some(Doing {
            activity,
            step,
            tool: tool.map(str::to_owned),
            tool_timeout_ms: tool.map(|_| 600_000),
            since: t(since),
            heartbeat_age_ms: Some(800),
            heartbeat_stale: false,
            pid: 4242,
        })
    }

    /// Four sessions in different states on a docker host.
    fn busy_report() -> StatusReport {
        let mut working = session(
            "sess-20260301115000-a1b2c3",
            "default",
            "cli:local",
            ContainerState::Running {
                runner: "c0ffee".into(),
                started_at: t(-7380),
                uptime_s: 7380,
            },
        );
        working.doing = doing(Activity::Tool, 2, Some("run_bash"), -12);
        working.pending_in = 1;
        working.tokens_today = tokens(48_210);
        let mut stuck = session(
            "sess-20260301100000-d4e5f6",
            "sales",
            "telegram:-1001234567890",
            ContainerState::Running {
                runner: "beef".into(),
                started_at: t(-600),
                uptime_s: 600,
            },
        );
        stuck.doing = doing(Activity::Model, 3, None, -95);
        if let Some(d) = &mut stuck.doing {
            d.heartbeat_stale = true;
            d.heartbeat_age_ms = Some(95_000);
        }
        stuck.pending_in = 2;
        stuck.tokens_today = tokens(910);
        let mut retrying = session(
            "sess-20260301090000-g7h8i9",
            "sales",
            "telegram:987654321",
            ContainerState::Retrying { at: t(8) },
        );
        retrying.pending_in = 1;
        retrying.undelivered_out = 1;
        retrying.failed_deliveries = 1;
        retrying.last_error = Some(LastError {
            at: Some(t(-185)),
            text: "message 6 re-queued: the agent stopped responding (silent for 61 s)".into(),
        });
        let mut waiting = session(
            "sess-20260301080000-j1k2l3",
            "助手",
            "cli:local",
            ContainerState::WaitingForSlot,
        );
        waiting.pending_in = 3;
        StatusReport {
            generated_at: t(0),
            host: Some(HostSummary {
                install_id: "inst".into(),
                started_at: t(-90_000),
                uptime_s: 90_000,
                data_dir: "/srv/clawbox/data".into(),
                model_proxy: ProxySummary {
                    loopback: "127.0.0.1:4100".into(),
                    socket: "/srv/clawbox/data/model.sock".into(),
                    live_tokens: 2,
                    token_budget_per_session_day: None,
                },
            }),
            runtime: "docker".into(),
            isolated: true,
            containers: ContainerCount {
                running: 2,
                cap: Some(8),
            },
            tokens_today: 49_120,
            sessions: vec![working, stuck, retrying, waiting],
        }
    }

    #[test]
    fn status_tables() {
        insta::assert_snapshot!("status_docker", status(&busy_report()));
        let mut quiet = busy_report();
        quiet.sessions.clear();
        quiet.containers.running = 0;
        insta::assert_snapshot!("status_quiet", status(&quiet));
        // No host: what the files say, with the runner a dead host left behind.
        let mut left = busy_report();
        left.host = None;
        left.sessions.truncate(1);
        left.sessions[0].container = ContainerState::Recorded {
            recorded: "running".into(),
        };
        let mut process = left.clone();
        insta::assert_snapshot!("status_no_host", status(&left));
        process.runtime = "process".into();
        process.isolated = false;
        process.containers.cap = None;
        process.host = busy_report().host;
        process.sessions[0].container = ContainerState::WaitingForChannel;
        process.sessions[0].doing = None;
        insta::assert_snapshot!("status_process", status(&process));
    }

    #[test]
    fn session_list() {
        let row = |id: &str, status: &str, container: Option<ContainerState>, recorded: &str| {
            SessionRow {
                id: id.into(),
                agent: "default".into(),
                agent_name: "Andy".into(),
                chat: "cli:local".into(),
                thread: None,
                status: status.into(),
                container,
                recorded: recorded.into(),
                created_at: t(-86_400),
                last_activity: t(-3_700),
                messages_in: 1_204,
                messages_out: 1_187,
                pending_in: 0,
                failed_in: 3,
                undelivered_out: 0,
                tokens_today: 12_000,
            }
        };
        let list = SessionList {
            generated_at: t(0),
            host_running: true,
            sessions: vec![
                row(
                    "sess-20260301115000-a1b2c3",
                    "active",
                    Some(ContainerState::Running {
                        runner: "c".into(),
                        started_at: t(-60),
                        uptime_s: 60,
                    }),
                    "running",
                ),
                row("sess-20260228090000-d4e5f6", "active", None, "stopped"),
                row("sess-20260101090000-g7h8i9", "closed", None, "stopped"),
            ],
        };
        insta::assert_snapshot!("sessions", sessions(&list));
        let offline = SessionList {
            host_running: false,
            sessions: vec![row("sess-20260301115000-a1b2c3", "active", None, "running")],
            ..list
        };
        insta::assert_snapshot!("sessions_no_host", sessions(&offline));
    }

    #[test]
    fn agent_list() {
        let list = AgentList {
            host_running: true,
            default_model: "gpt-4o".into(),
            agents: vec![
                AgentRow {
                    agent: AgentListing {
                        id: "default".into(),
                        name: "Andy".into(),
                        folder: "default".into(),
                        model: None,
                        wirings: vec![WiringListing {
                            channel_type: "cli".into(),
                            platform_id: "local".into(),
                            is_group: false,
                            unknown_sender_policy: "strict".into(),
                            engage_mode: "pattern".into(),
                            engage_pattern: Some(".".into()),
                            sticky_window_s: 600,
                            session_mode: "shared".into(),
                            ignored_messages: "drop".into(),
                        }],
                        destinations: vec![DestinationListing {
                            name: "cli".into(),
                            channel_type: "cli".into(),
                            platform_id: "local".into(),
                            thread_id: None,
                        }],
                        roles: vec![RoleListing {
                            user_id: "cli:local".into(),
                            role: "owner".into(),
                        }],
                    },
                    sessions: 1,
                    live_sessions: 1,
                },
                AgentRow {
                    agent: AgentListing {
                        id: "sales".into(),
                        name: "Sales".into(),
                        folder: "sales".into(),
                        model: Some("gpt-4o-mini".into()),
                        wirings: vec![
                            WiringListing {
                                channel_type: "telegram".into(),
                                platform_id: "-1001234567890".into(),
                                is_group: true,
                                unknown_sender_policy: "strict".into(),
                                engage_mode: "mention-sticky".into(),
                                engage_pattern: None,
                                sticky_window_s: 1800,
                                session_mode: "per-thread".into(),
                                ignored_messages: "accumulate".into(),
                            },
                            WiringListing {
                                channel_type: "telegram".into(),
                                platform_id: "987654321".into(),
                                is_group: false,
                                unknown_sender_policy: "public".into(),
                                engage_mode: "pattern".into(),
                                engage_pattern: Some("(?i)price".into()),
                                sticky_window_s: 600,
                                session_mode: "shared".into(),
                                ignored_messages: "drop".into(),
                            },
                        ],
                        destinations: vec![
                            DestinationListing {
                                name: "telegram--1001234567890".into(),
                                channel_type: "telegram".into(),
                                platform_id: "-1001234567890".into(),
                                thread_id: None,
                            },
                            DestinationListing {
                                name: "telegram-987654321".into(),
                                channel_type: "telegram".into(),
                                platform_id: "987654321".into(),
                                thread_id: None,
                            },
                        ],
                        roles: vec![
                            RoleListing {
                                user_id: "cli:local".into(),
                                role: "owner".into(),
                            },
                            RoleListing {
                                user_id: "telegram:123456789".into(),
                                role: "owner".into(),
                            },
                        ],
                    },
                    sessions: 4,
                    live_sessions: 0,
                },
                AgentRow {
                    agent: AgentListing {
                        id: "idle".into(),
                        name: "Idle".into(),
                        folder: "idle".into(),
                        model: None,
                        wirings: vec![],
                        destinations: vec![],
                        roles: vec![],
                    },
                    sessions: 0,
                    live_sessions: 0,
                },
            ],
        };
        insta::assert_snapshot!("agents", agents(&list));
    }

    #[test]
    fn dropped_and_doctor() {
        let list = DroppedList {
            host_running: false,
            total: 120,
            dropped: vec![
                DroppedMessage {
                    id: 120,
                    at: t(-30),
                    chat: "telegram:-1001234567890".into(),
                    sender_id: Some("telegram:555".into()),
                    sender_name: Some("Mallory".into()),
                    agent: Some("sales".into()),
                    reason: "not_authorized".into(),
                },
                DroppedMessage {
                    id: 119,
                    at: t(-4000),
                    chat: "telegram:42".into(),
                    sender_id: None,
                    sender_name: None,
                    agent: None,
                    reason: "no_agent_wired".into(),
                },
            ],
        };
        insta::assert_snapshot!("dropped", dropped(&list, Tz::Europe__Berlin));
        let check = |name: &str, level, detail: &str, hint: Option<&str>| Check {
            name: name.into(),
            level,
            detail: detail.into(),
            hint: hint.map(str::to_owned),
        };
        let report = DoctorReport {
            ran_by_host: true,
            checks: vec![
                check(
                    "runtime",
                    Level::Ok,
                    "docker: engine 27.1 at unix:///var/run/docker.sock",
                    None,
                ),
                check(
                    "image",
                    Level::Warn,
                    "clawbox-agent:latest is not built yet",
                    Some("`clawbox run` builds it at start"),
                ),
                check(
                    "model endpoint",
                    Level::Fail,
                    "cannot reach http://127.0.0.1:1/v1/models: connection refused",
                    Some("is the model server running?"),
                ),
                check(
                    "mcp default/time",
                    Level::Ok,
                    "starts in 0.7 s with 2 tools (get_current_time, convert_time)",
                    None,
                ),
            ],
        };
        insta::assert_snapshot!("doctor", doctor(&report));
    }

    #[test]
    fn every_log_event_has_a_line() {
        let e = |secs: i64, event: LogEvent| LogEntry {
            id: "x:1".into(),
            session_id: "s".into(),
            at: t(secs),
            event,
        };
        let entries = vec![
            e(
                0,
                LogEvent::MessageIn {
                    seq: 2,
                    kind: InboundKind::Chat,
                    sender: Some("Ada".into()),
                    text: "first line\nsecond line".into(),
                    trigger: true,
                },
            ),
            e(
                0,
                LogEvent::MessageIn {
                    seq: 4,
                    kind: InboundKind::Chat,
                    sender: None,
                    text: "just context".into(),
                    trigger: false,
                },
            ),
            e(
                0,
                LogEvent::MessageIn {
                    seq: 6,
                    kind: InboundKind::Task,
                    sender: None,
                    text: "daily report".into(),
                    trigger: true,
                },
            ),
            e(
                0,
                LogEvent::MessageIn {
                    seq: 8,
                    kind: InboundKind::System,
                    sender: Some("clawbox".into()),
                    text: "Your message 7 could not be delivered".into(),
                    trigger: false,
                },
            ),
            e(
                1,
                LogEvent::RunnerStarted {
                    pid: 4242,
                    model: "gpt-4o".into(),
                },
            ),
            e(
                1,
                LogEvent::RunnerReady {
                    tools: 11,
                    problems: vec![
                        "MCP server \"time\" from container.json is not available: timed out"
                            .into(),
                    ],
                },
            ),
            e(1, LogEvent::Claimed { seq: 2, attempt: 1 }),
            e(
                2,
                LogEvent::ModelStep {
                    turn: 2,
                    step: 1,
                    latency_ms: 812,
                    attempts: 2,
                    prompt_tokens: Some(12_034),
                    completion_tokens: Some(56),
                    tool_calls: 2,
                    finish_reason: Some("tool_calls".into()),
                },
            ),
            e(
                3,
                LogEvent::ToolCall {
                    turn: 2,
                    step: 1,
                    call_id: "c1".into(),
                    tool: "run_bash".into(),
                    duration_ms: 1530,
                    ok: true,
                    error: None,
                },
            ),
            e(
                3,
                LogEvent::ToolCall {
                    turn: 2,
                    step: 1,
                    call_id: "c2".into(),
                    tool: "lookup".into(),
                    duration_ms: 0,
                    ok: false,
                    error: Some("Error: unknown tool 'lookup'".into()),
                },
            ),
            e(
                4,
                LogEvent::ModelStep {
                    turn: 2,
                    step: 2,
                    latency_ms: 95,
                    attempts: 1,
                    prompt_tokens: None,
                    completion_tokens: None,
                    tool_calls: 0,
                    finish_reason: None,
                },
            ),
            e(
                4,
                LogEvent::Reply {
                    seq: 9,
                    in_reply_to: Some(2),
                    text: "Here you go.".into(),
                    files: vec!["report.pdf".into()],
                    to: None,
                },
            ),
            e(
                4,
                LogEvent::Reply {
                    seq: 11,
                    in_reply_to: None,
                    text: "FYI".into(),
                    files: vec![],
                    to: Some("telegram:-100123".into()),
                },
            ),
            e(
                4,
                LogEvent::Edit {
                    seq: 13,
                    edit_of: Some(9),
                    text: "Here you go (fixed).".into(),
                },
            ),
            e(
                4,
                LogEvent::Reaction {
                    seq: 15,
                    reaction_to: Some(2),
                    emoji: "👍".into(),
                },
            ),
            e(4, LogEvent::Completed { seq: 2 }),
            e(
                5,
                LogEvent::Delivered {
                    seq: 9,
                    attempts: 1,
                },
            ),
            e(
                5,
                LogEvent::Delivered {
                    seq: 11,
                    attempts: 2,
                },
            ),
            e(
                5,
                LogEvent::DeliveryFailed {
                    seq: 13,
                    error: "Bad Request: message to edit not found".into(),
                    gave_up: false,
                },
            ),
            e(
                6,
                LogEvent::DeliveryFailed {
                    seq: 13,
                    error: "Bad Request: message to edit not found".into(),
                    gave_up: true,
                },
            ),
            e(7, LogEvent::Claimed { seq: 4, attempt: 2 }),
            e(
                8,
                LogEvent::ModelFailed {
                    turn: 4,
                    step: 1,
                    latency_ms: 120_000,
                    error: "the model service did not answer within 120s (4 attempt(s))".into(),
                },
            ),
            e(
                8,
                LogEvent::Failed {
                    seq: 4,
                    error: Some("The model service did not answer".into()),
                },
            ),
            e(
                9,
                LogEvent::Requeued {
                    seq: 6,
                    tries: 1,
                    retry_at: t(14),
                    reason: "the agent stopped responding (silent for 61 s)".into(),
                },
            ),
            e(
                9,
                LogEvent::Failed {
                    seq: 6,
                    error: None,
                },
            ),
            e(
                10,
                LogEvent::RunnerExited {
                    runner: "c0ffee".into(),
                    exit: "killed by signal 9".into(),
                    reason: Some("the agent stopped responding (silent for 61 s)".into()),
                    unexpected: false,
                },
            ),
            e(
                11,
                LogEvent::RunnerExited {
                    runner: "c0ffee".into(),
                    exit: "exit code 101".into(),
                    reason: None,
                    unexpected: true,
                },
            ),
            e(
                12,
                LogEvent::RunnerExited {
                    runner: "c0ffee".into(),
                    exit: "exit code 0".into(),
                    reason: None,
                    unexpected: false,
                },
            ),
            // A new day in Berlin.
            e(43_200, LogEvent::Completed { seq: 20 }),
        ];
        let mut printer = LogPrinter::new(Tz::Europe__Berlin);
        let text: String = entries.iter().map(|entry| printer.print(entry)).collect();
        insta::assert_snapshot!("log_lines", text);
    }

    #[test]
    fn nothing_written_by_others_reaches_the_terminal_raw() {
        let entry = LogEntry {
            id: "run:1".into(),
            session_id: "s".into(),
            at: t(0),
            event: LogEvent::ToolCall {
                turn: 2,
                step: 1,
                call_id: "c".into(),
                tool: "\u{1b}[31mred\u{1b}[0m".into(),
                duration_ms: 1,
                ok: false,
                error: Some("line\u{1b}[2Kerased".into()),
            },
        };
        let line = LogPrinter::new(Tz::UTC).print(&entry);
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\n'),
            "{line:?}"
        );
        let mut report = busy_report();
        report.sessions[0].last_error = Some(LastError {
            at: None,
            text: "\u{1b}]8;;http://evil\u{7}click\u{202E}".into(),
        });
        let shown = status(&report);
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{202E}'),
            "{shown}"
        );
    }

    #[test]
    fn tables_align_by_display_width() {
        let mut t = Table::new(&[("NAME", false), ("N", true), ("NOTE", false)]);
        t.row(vec!["助手".into(), "5".into(), "wide".into()]);
        t.row(vec!["a".into(), "123".into(), String::new()]);
        insta::assert_snapshot!(t.render(""), @r"
        NAME    N  NOTE
        助手    5  wide
        a     123
        ");
    }
}
