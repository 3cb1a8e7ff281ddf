//! Turning text into HTML: everything the dashboard shows that an agent or a user wrote is
//! hostile input. [`esc`] escapes markup and makes the characters that hide or reorder text
//! (bidirectional overrides and isolates, zero-width marks, C0/C1 controls) visible as
//! `⟨U+XXXX⟩`, so a name cannot pose as another or flip the text after it. The page frame
//! ([`page`]) lives here too; the pages' content is `pages.rs`'s.

use std::fmt::Write;

/// Escapes `text` for HTML text and for attribute values in double or single quotes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Kept, as an entity: line breaks show in `white-space: pre-wrap` blocks, and an
            // SSE data line never breaks.
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if hidden(c) => {
                let _ = write!(out, "⟨U+{:04X}⟩", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder, hide or control text instead of showing it.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{061C}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Percent-encodes a path segment (ids in links).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Which tab of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Chat,
    Sessions,
    Agents,
    Tasks,
    Dropped,
    Usage,
}

const TABS: [(Tab, &str, &str); 7] = [
    (Tab::Overview, "/", "Overview"),
    (Tab::Chat, "/chat", "Chat"),
    (Tab::Sessions, "/sessions", "Sessions"),
    (Tab::Agents, "/agents", "Agents"),
    (Tab::Tasks, "/tasks", "Tasks"),
    (Tab::Dropped, "/dropped", "Dropped"),
    (Tab::Usage, "/usage", "Tokens"),
];

/// A whole page: `title` is plain text (escaped here), `body` is HTML built by the pages.
pub fn page(tab: Tab, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (t, href, label) in TABS {
        let current = if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · clawbox</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
<script src=\"/assets/app.js\" defer></script></head><body>\
<header><strong>clawbox</strong><nav>{nav}</nav></header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_invisible_characters_are_neutralised() {
        for (input, shown) in [
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a\"b'c&d", "a&quot;b&#39;c&amp;d"),
            ("evil\u{202E}txt.exe", "evil⟨U+202E⟩txt.exe"),
            ("\u{2066}x\u{2069}", "⟨U+2066⟩x⟨U+2069⟩"),
            ("bell\u{7}esc\u{1b}[31m", "bell⟨U+0007⟩esc⟨U+001B⟩[31m"),
            ("nul\u{0}c1\u{85}", "nul⟨U+0000⟩c1⟨U+0085⟩"),
            ("zero\u{200B}width\u{FEFF}", "zero⟨U+200B⟩width⟨U+FEFF⟩"),
            ("line\nbreak\ttab", "line&#10;break&#9;tab"),
            ("plain café ✓", "plain café ✓"),
        ] {
            assert_eq!(esc(input), shown, "{input:?}");
        }
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(url_segment("sess-1_a.b~"), "sess-1_a.b~");
        assert_eq!(url_segment("a/b?c=\"d\""), "a%2Fb%3Fc%3D%22d%22");
    }
}
