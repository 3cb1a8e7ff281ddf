//! How the operator commands print their reports for people: aligned tables, ages relative to
//! the report's own time (so the same report always renders the same), times in `TIMEZONE`,
//! long texts cut to one line. Pure functions of their input; `--json` bypasses all of this.
//!
//! Much of what is shown was written by others — chat messages, sender names, tool names a model
//! made up, error texts of remote services — so every line passes through [`clean`]: control
//! characters (escape sequences could rewrite the operator's terminal) and bidirectional
//! overrides (which could make a line read differently than it is) never reach the terminal.
//! Snapshot-tested (`insta`, `tests.rs`) here and over a real host in `tests/suite/operator.rs`.
//!
//! This file holds the building blocks (tables, durations, cleaning); each report has its own
//! file: `sessions.rs` (`status`, `sessions`), `agents.rs` (`agents`, `dropped`), `doctor.rs`,
//! `logs.rs` (`logs`, line by line).

mod agents;
mod doctor;
mod logs;
mod sessions;
#[cfg(test)]
mod tests;

pub use agents::{agents, dropped};
pub use doctor::doctor;
pub use logs::LogPrinter;
pub use sessions::{sessions, status};

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
/// The longest part of a tool call's arguments shown in its log line.
const TOOL_ARGUMENTS: usize = 60;

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

/// `512 B`, `12.3 KB`, `4.5 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        _ if n < 1024.0 => format!("{n} B"),
        _ if n < 1024.0 * 1024.0 => format!("{:.1} KB", n / 1024.0),
        _ if n < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MB", n / (1024.0 * 1024.0)),
        _ => format!("{:.1} GB", n / (1024.0 * 1024.0 * 1024.0)),
    }
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
