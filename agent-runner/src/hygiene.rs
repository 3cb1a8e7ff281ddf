//! Tool output hygiene: what a tool returns (the built-in server's or a user server's) is
//! cleaned before it reaches the model and the stored history. Invisible and direction-changing
//! characters are removed, because they let a web page or a file hide instructions from the person
//! reading the conversation while the model still reads them (and reorder what the person sees);
//! terminal escape sequences are removed; and the text is capped, so one `cat` of a log cannot
//! fill the context window. Pure functions; `turn.rs` applies them to every tool result.

/// The most characters of one tool result the model sees.
pub const MAX_TOOL_OUTPUT_CHARS: usize = 30_000;
/// Of a cut output, this many leading characters are kept; the rest of the budget goes to the
/// end, where commands print their errors and summaries.
const HEAD_CHARS: usize = 20_000;

/// Strips risky characters, then caps the result at [`MAX_TOOL_OUTPUT_CHARS`].
pub fn clean_tool_output(text: &str) -> String {
    cap(&strip_controls(text), MAX_TOOL_OUTPUT_CHARS)
}

/// Whether `c` is removed from tool output: invisible format characters, bidirectional
/// controls, and control characters other than `\n` and `\t`.
pub fn is_stripped(c: char) -> bool {
    matches!(c,
        // C0 controls except tab and newline (carriage returns are handled before), DEL, C1.
        '\u{0}'..='\u{8}' | '\u{B}'..='\u{1F}' | '\u{7F}'..='\u{9F}'
        // Soft hyphen, Arabic letter mark, Mongolian vowel separator.
        | '\u{AD}' | '\u{61C}' | '\u{180E}'
        // Zero-width space, non-joiner, joiner; left-to-right and right-to-left marks.
        | '\u{200B}'..='\u{200F}'
        // Bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
        | '\u{202A}'..='\u{202E}'
        // Word joiner, invisible operators, bidi isolates (LRI, RLI, FSI, PDI), deprecated
        // shaping controls.
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        // Variation selectors: invisible, and 256 of them are enough to smuggle bytes after a
        // visible character. (Emoji lose their presentation hint, nothing else.)
        | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
        // Byte order mark / zero-width no-break space; interlinear annotation controls.
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        // Tag characters: invisible ASCII look-alikes used for "ASCII smuggling".
        | '\u{E0000}'..='\u{E007F}'
    )
}

/// Removes the characters of [`is_stripped`] and ANSI escape sequences (colours, cursor
/// movement, terminal titles and hyperlinks). `\r\n` becomes `\n` and a lone `\r` (progress
/// bars redrawing a line) becomes `\n`, so no line is hidden behind another.
pub fn strip_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\u{1B}' => skip_escape(&mut chars),
            c if is_stripped(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips the rest of an escape sequence whose ESC was just read: CSI (`ESC [` parameters,
/// intermediates, one final byte), OSC/DCS/SOS/PM/APC strings (up to BEL or `ESC \`), or a
/// two-character sequence. Text after an unterminated sequence is dropped with it.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7E}').contains(&c) {
                    return;
                }
                if !('\u{20}'..='\u{3F}').contains(&c) {
                    // Not a CSI sequence after all; drop only what we have read.
                    return;
                }
            }
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                match c {
                    '\u{7}' => return,
                    '\u{1B}' if chars.peek() == Some(&'\\') => {
                        chars.next();
                        return;
                    }
                    _ => {}
                }
            }
        }
        // Two-character sequences (`ESC 7`, `ESC =`…), or ESC at the very end.
        Some(_) | None => {}
    }
}

/// Caps `text` at `max` characters: the first [`HEAD_CHARS`] (scaled down for a small `max`)
/// and the last characters, with a line saying how much was cut in between.
pub fn cap(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let note_for = |cut: usize| {
        format!(
            "\n\n[… output cut: {cut} of {total} characters omitted here; the tool result is \
             limited to {max} characters …]\n\n"
        )
    };
    // The note's length depends on the number in it; size it for the largest possible cut.
    let budget = max.saturating_sub(note_for(total).chars().count());
    let head = HEAD_CHARS.min(budget * 2 / 3);
    let tail = budget - head;
    let cut = total - head - tail;
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(total - tail)
        .map_or(text.len(), |(i, _)| i);
    let mut out = String::with_capacity(head_end + (text.len() - tail_start) + 128);
    out.push_str(&text[..head_end]);
    out.push_str(&note_for(cut));
    out.push_str(&text[tail_start..]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn risky_characters_are_stripped() {
        let table = [
            ("plain text\nwith\ttabs", "plain text\nwith\ttabs"),
            // Trojan Source: an RLO/LRI pair that reorders what a reader sees.
            (
                "access = \u{202E}\u{2066}// admin only\u{2069}\u{2066}",
                "access = // admin only",
            ),
            (
                "zero\u{200B}width\u{200C}\u{200D}joiners",
                "zerowidthjoiners",
            ),
            ("\u{FEFF}bom", "bom"),
            ("marks \u{200E}\u{200F}\u{061C}", "marks "),
            ("isolates \u{2066}\u{2067}\u{2068}\u{2069}", "isolates "),
            ("embeddings \u{202A}\u{202B}\u{202C}\u{202D}", "embeddings "),
            ("word\u{2060}joiner\u{2064}", "wordjoiner"),
            ("soft\u{AD}hyphen", "softhyphen"),
            // "ignore" spelt in invisible tag characters after a visible word.
            (
                "hello\u{E0069}\u{E0067}\u{E006E}\u{E006F}\u{E0072}\u{E0065}",
                "hello",
            ),
            ("a\u{FE0F}b\u{E0100}c", "abc"),
            ("nul\u{0}bell\u{7}del\u{7F}c1\u{85}", "nulbelldelc1"),
            ("crlf\r\nline", "crlf\nline"),
            ("progress 10%\rprogress 100%", "progress 10%\nprogress 100%"),
            ("\u{1B}[31mred\u{1B}[0m and \u{1B}[1;4mbold", "red and bold"),
            (
                "\u{1B}]8;;https://evil.example\u{7}link\u{1B}]8;;\u{1B}\\ text",
                "link text",
            ),
            ("\u{1B}]0;title\u{1B}\\after", "after"),
            ("esc at end \u{1B}", "esc at end "),
            // Ordinary non-ASCII text is left alone.
            ("Grüße, שלום, مرحبا, 你好 🎉", "Grüße, שלום, مرحبا, 你好 🎉"),
        ];
        for (input, want) in table {
            assert_eq!(strip_controls(input), want, "{input:?}");
        }
    }

    #[test]
    fn short_output_is_not_capped() {
        let text = "x".repeat(MAX_TOOL_OUTPUT_CHARS);
        assert_eq!(clean_tool_output(&text), text);
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_says_how_much_was_cut() {
        let text: String = (0..100_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let text = format!("START{text}END");
        let out = clean_tool_output(&text);
        assert!(
            out.chars().count() <= MAX_TOOL_OUTPUT_CHARS,
            "{}",
            out.len()
        );
        assert!(out.starts_with("START"));
        assert!(out.ends_with("END"));
        let total = text.chars().count();
        let (head, rest) = out.split_once("\n\n[… output cut: ").unwrap();
        let (note, tail) = rest.split_once(" …]\n\n").unwrap();
        let kept = head.chars().count() + tail.chars().count();
        assert_eq!(
            note,
            format!(
                "{} of {total} characters omitted here; the tool result is limited to \
                 {MAX_TOOL_OUTPUT_CHARS} characters",
                total - kept
            )
        );
        // About two thirds from the start, one third from the end.
        assert!(head.chars().count() > 19_000, "{}", head.len());
        assert!(tail.chars().count() > 9_000, "{}", tail.len());
    }

    #[test]
    fn capping_respects_character_boundaries() {
        let text = "é🎉".repeat(1_000);
        let out = cap(&text, 500);
        assert!(out.chars().count() <= 500);
        assert!(out.starts_with("é🎉"));
        assert!(out.ends_with("é🎉"));
        assert!(out.contains("of 2000 characters omitted"), "{out}");
    }
}
