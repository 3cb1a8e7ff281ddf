//! How `clawbox chat` shows a reply while the agent writes it (`ChatEvent::Draft`), and how
//! the final reply then completes it. Pure: it decides what to print, `chat.rs` prints it.
//!
//! Piped output has one open line: the draft's new text is appended as it arrives and the
//! reply adds what is missing and the newline, so stdout holds the reply exactly once. At a
//! terminal, text is printed above the line being edited (rustyline ends every print with a
//! newline), so the draft appears line by line: each line as soon as it is complete or fills
//! the terminal's width (cut at a space), and the reply prints the rest.
//!
//! A draft that does not continue what is shown (a new model step, a retried attempt) starts
//! over below it; a reply that does not continue its draft is printed whole.

/// What to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    /// Appended to the open line (piped output).
    Text(String),
    /// One whole line.
    Line(String),
}

/// The draft on the screen and how output is laid out.
#[derive(Debug)]
pub struct Drafts {
    /// `Some(width)`: whole lines at most this wide (a terminal); `None`: one open line (piped).
    lines: Option<usize>,
    shown: Option<Shown>,
}

#[derive(Debug)]
struct Shown {
    session_id: String,
    reply_to: i64,
    step: u32,
    /// The part of the draft's text already printed (a prefix of it).
    printed: String,
    /// Piped output: a line is open (text printed, no newline yet).
    open: bool,
    /// Whether the first line (the one with the label) has been printed.
    started: bool,
}

impl Drafts {
    /// `lines`: see [`Drafts::lines`]; widths below 20 are taken as 20.
    pub fn new(lines: Option<usize>) -> Self {
        Drafts {
            lines: lines.map(|w| w.max(20)),
            shown: None,
        }
    }

    /// A draft event: what to print of `text`.
    pub fn draft(
        &mut self,
        session_id: &str,
        reply_to: i64,
        step: u32,
        text: &str,
        label: Option<&str>,
    ) -> Vec<Emit> {
        let mut out = Vec::new();
        let continues = self.shown.as_ref().is_some_and(|s| {
            s.session_id == session_id
                && s.reply_to == reply_to
                && s.step == step
                && text.starts_with(&s.printed)
        });
        if !continues {
            out.extend(self.close());
            self.shown = Some(Shown {
                session_id: session_id.to_owned(),
                reply_to,
                step,
                printed: String::new(),
                open: false,
                started: false,
            });
        }
        if let Some(shown) = self.shown.as_mut() {
            out.extend(shown.advance(text, label, self.lines, /*last*/ false));
        }
        out
    }

    /// A reply arrived: `Some` with what to print when it completes the draft shown for it
    /// (it is then shown in full); `None` when it is to be printed as usual, after `before`
    /// (what closes a draft it does not continue).
    pub fn reply(
        &mut self,
        session_id: &str,
        in_reply_to: Option<i64>,
        text: &str,
        label: Option<&str>,
        before: &mut Vec<Emit>,
    ) -> Option<Vec<Emit>> {
        let ours = self
            .shown
            .as_ref()
            .is_some_and(|s| s.session_id == session_id && in_reply_to == Some(s.reply_to));
        if !ours {
            // Another message's reply: it goes on a line of its own.
            before.extend(self.interrupt());
            return None;
        }
        let continues = self
            .shown
            .as_ref()
            .is_some_and(|s| text.starts_with(&s.printed));
        if !continues {
            before.extend(self.close());
            return None;
        }
        let mut shown = self.shown.take()?;
        Some(shown.advance(text, label, self.lines, /*last*/ true))
    }

    /// The verdict on `seq` came: a draft still shown for it ends (its turn had no reply).
    pub fn done(&mut self, session_id: &str, seq: i64) -> Vec<Emit> {
        if self
            .shown
            .as_ref()
            .is_some_and(|s| s.session_id == session_id && s.reply_to == seq)
        {
            return self.close();
        }
        Vec::new()
    }

    /// Something else is about to be printed on stdout: the open line ends (the draft goes on
    /// below it if more comes).
    pub fn interrupt(&mut self) -> Vec<Emit> {
        match self.shown.as_mut() {
            Some(s) if s.open => {
                s.open = false;
                vec![Emit::Text("\n".to_owned())]
            }
            _ => Vec::new(),
        }
    }

    /// Forgets the draft shown, ending its open line.
    fn close(&mut self) -> Vec<Emit> {
        let out = self.interrupt();
        self.shown = None;
        out
    }
}

impl Shown {
    /// Prints what `text` adds to what is printed; `last`: it is the whole reply.
    fn advance(
        &mut self,
        text: &str,
        label: Option<&str>,
        lines: Option<usize>,
        last: bool,
    ) -> Vec<Emit> {
        let mut out = Vec::new();
        let Some(mut pending) = text.get(self.printed.len()..) else {
            return out;
        };
        let prefix = |started: bool| match label {
            Some(label) if !started => format!("{label} › "),
            _ => String::new(),
        };
        match lines {
            None => {
                if !pending.is_empty() || (last && !self.started) {
                    if !self.open {
                        let prefix = prefix(self.started);
                        if !prefix.is_empty() {
                            out.push(Emit::Text(prefix));
                        }
                        self.open = true;
                        self.started = true;
                    }
                    out.push(Emit::Text(pending.to_owned()));
                }
                if last {
                    if self.open {
                        out.push(Emit::Text("\n".to_owned()));
                    }
                    self.open = false;
                }
                self.printed = text.to_owned();
            }
            Some(width) => loop {
                let (line, consumed) = if let Some(nl) = pending.find('\n') {
                    (&pending[..nl], nl + 1)
                } else if last {
                    if pending.is_empty() && self.started {
                        break;
                    }
                    (pending, pending.len())
                } else if let Some(cut) = wrap_point(pending, width) {
                    cut
                } else {
                    break;
                };
                out.push(Emit::Line(format!("{}{line}", prefix(self.started))));
                self.started = true;
                self.printed.push_str(&pending[..consumed]);
                pending = &pending[consumed..];
                if last && pending.is_empty() {
                    break;
                }
            },
        }
        out
    }
}

/// Where a line of at most `width` characters ends in `text`, which has no newline: after the
/// last space within the width (the space is consumed), or at the width; `None` while the
/// text still fits (more may come).
fn wrap_point(text: &str, width: usize) -> Option<(&str, usize)> {
    let (end, _) = text.char_indices().nth(width)?;
    let head = &text[..end];
    match head.rfind(' ') {
        Some(space) if space > 0 => Some((&head[..space], space + 1)),
        _ => Some((head, end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn text(s: &str) -> Emit {
        Emit::Text(s.to_owned())
    }

    fn line(s: &str) -> Emit {
        Emit::Line(s.to_owned())
    }

    #[test]
    fn piped_output_appends_and_the_reply_completes_the_line() {
        let mut d = Drafts::new(None);
        assert_eq!(d.draft("s", 2, 1, "Hel", None), [text("Hel")]);
        assert_eq!(d.draft("s", 2, 1, "Hello, wo", None), [text("lo, wo")]);
        let mut before = Vec::new();
        let done = d.reply("s", Some(2), "Hello, world", None, &mut before);
        assert_eq!(done, Some(vec![text("rld"), text("\n")]));
        assert!(before.is_empty());
        // Nothing left open: the next reply prints as usual.
        assert_eq!(d.reply("s", Some(4), "next", None, &mut before), None);
        assert!(before.is_empty());
    }

    #[test]
    fn a_reply_that_does_not_continue_its_draft_is_printed_whole() {
        let mut d = Drafts::new(None);
        d.draft("s", 2, 1, "Let me look", Some("Andy"));
        // A new step starts a new text below the old one.
        assert_eq!(
            d.draft("s", 2, 2, "It is", Some("Andy")),
            [text("\n"), text("Andy › "), text("It is")]
        );
        let mut before = Vec::new();
        assert_eq!(
            d.reply("s", Some(2), "Something else", Some("Andy"), &mut before),
            None
        );
        assert_eq!(before, [text("\n")]);
        // A turn that ends without a reply closes its line.
        d.draft("s", 4, 1, "half", None);
        assert_eq!(d.done("s", 4), [text("\n")]);
        assert_eq!(d.done("s", 4), []);
    }

    #[test]
    fn a_terminal_gets_whole_lines_as_they_fill() {
        let mut d = Drafts::new(Some(20));
        assert_eq!(d.draft("s", 2, 1, "one two three", Some("Andy")), []);
        assert_eq!(
            d.draft("s", 2, 1, "one two three four five six", Some("Andy")),
            [line("Andy › one two three four")]
        );
        assert_eq!(
            d.draft(
                "s",
                2,
                1,
                "one two three four five six\nseven",
                Some("Andy")
            ),
            [line("five six")]
        );
        let mut before = Vec::new();
        assert_eq!(
            d.reply(
                "s",
                Some(2),
                "one two three four five six\nseven eight",
                Some("Andy"),
                &mut before
            ),
            Some(vec![line("seven eight")])
        );
        assert!(before.is_empty());
    }

    #[test]
    fn a_reply_with_no_draft_shown_yet_prints_whole_with_its_label() {
        let mut d = Drafts::new(Some(80));
        assert_eq!(d.draft("s", 2, 1, "Hi", Some("Andy")), []);
        let mut before = Vec::new();
        assert_eq!(
            d.reply("s", Some(2), "Hi there", Some("Andy"), &mut before),
            Some(vec![line("Andy › Hi there")])
        );
        let mut d = Drafts::new(None);
        d.draft("s", 2, 1, "Hi", None);
        assert_eq!(
            d.reply("s", Some(2), "Hi", None, &mut before),
            Some(vec![text("\n")])
        );
    }

    #[test]
    fn long_words_are_cut_at_the_width() {
        assert_eq!(wrap_point("short", 10), None);
        assert_eq!(wrap_point("abcdefghijklmnop", 10), Some(("abcdefghij", 10)));
        assert_eq!(wrap_point("abc defghijklmnop", 10), Some(("abc", 4)));
        assert_eq!(
            wrap_point("ééééé ééééé", 8),
            Some(("ééééé", "ééééé ".len()))
        );
    }
}
