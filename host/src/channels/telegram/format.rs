//! The model's Markdown as Telegram messages: rendered to Telegram's HTML subset with correct
//! escaping, and split into parts that fit Telegram's limits (4096 characters per message,
//! 1024 per caption, counted in UTF-16 units after entity parsing, as Telegram counts them).
//!
//! Rendering first flattens the Markdown into styled runs of visible text; splitting then
//! works on the visible text alone, preferring paragraph, then line, then word boundaries, and
//! each part is turned into HTML on its own, closing every tag at its end and reopening what
//! continues in the next part. So a code block split across two messages is a code block in
//! both, and no part ever carries an unbalanced tag. Every part also has a plain-text twin for
//! when Telegram refuses the entities.
//!
//! Telegram's nesting rules (Bot API, "Formatting options") are respected by construction:
//! `code`/`pre` never sit inside or around other entities, blockquotes are never nested and do
//! not hold links or code.

use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// Telegram's limit for a message text.
pub const MESSAGE_LIMIT: usize = 4096;
/// Telegram's limit for a media caption.
pub const CAPTION_LIMIT: usize = 1024;

/// One message's worth of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// For `parse_mode: HTML`.
    pub html: String,
    /// The same text without formatting, for when Telegram rejects the entities.
    pub plain: String,
}

/// A style, in the order tags nest (outermost first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Style {
    Quote,
    Link(String),
    Bold,
    Italic,
    Strike,
    Code,
    Pre(Option<String>),
}

impl Style {
    fn open(&self) -> String {
        match self {
            Style::Quote => "<blockquote>".into(),
            Style::Link(href) => format!("<a href=\"{}\">", escape(href, true)),
            Style::Bold => "<b>".into(),
            Style::Italic => "<i>".into(),
            Style::Strike => "<s>".into(),
            Style::Code => "<code>".into(),
            Style::Pre(None) => "<pre>".into(),
            Style::Pre(Some(lang)) => {
                format!("<pre><code class=\"language-{}\">", escape(lang, true))
            }
        }
    }

    fn close(&self) -> &'static str {
        match self {
            Style::Quote => "</blockquote>",
            Style::Link(_) => "</a>",
            Style::Bold => "</b>",
            Style::Italic => "</i>",
            Style::Strike => "</s>",
            Style::Code => "</code>",
            Style::Pre(None) => "</pre>",
            Style::Pre(Some(_)) => "</code></pre>",
        }
    }
}

/// A run of visible text (a byte range of [`Rendered::text`]) with its styles.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    range: Range<usize>,
    styles: Vec<Style>,
}

#[derive(Debug, Default)]
struct Rendered {
    text: String,
    runs: Vec<Run>,
}

/// Whether a link target is one Telegram accepts in `href`.
fn linkable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "tg://", "mailto:"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Applies Telegram's nesting rules: code and pre stand alone; a link drops the quote around
/// it; the rest nest in the canonical order.
fn normalise(styles: &[Style]) -> Vec<Style> {
    if let Some(pre) = styles.iter().find(|s| matches!(s, Style::Pre(_))) {
        return vec![pre.clone()];
    }
    let has_link = styles.iter().any(|s| matches!(s, Style::Link(_)));
    // Code inside a link gives way to the link: the target matters more than the font.
    if !has_link && styles.contains(&Style::Code) {
        return vec![Style::Code];
    }
    let mut out: Vec<Style> = Vec::new();
    for s in styles {
        if (has_link && matches!(s, Style::Quote | Style::Code)) || out.contains(s) {
            continue;
        }
        out.push(s.clone());
    }
    out.sort();
    out
}

/// What separates the next text from the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Line,
    Paragraph,
}

struct Builder {
    out: Rendered,
    styles: Vec<Style>,
    gap: Gap,
    /// Nesting of lists: the next number for ordered ones.
    lists: Vec<Option<u64>>,
    /// Link targets Telegram would refuse, shown after their label.
    dropped_links: Vec<Option<String>>,
    table: Option<Table>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    cell: Option<String>,
}

impl Builder {
    fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(table) = &mut self.table {
            if let Some(cell) = &mut table.cell {
                cell.push_str(text);
            }
            return;
        }
        if !self.out.text.is_empty() {
            match self.gap {
                Gap::None => {}
                Gap::Line => self.raw("\n", Vec::new()),
                Gap::Paragraph => self.raw("\n\n", Vec::new()),
            }
        }
        self.gap = Gap::None;
        let styles = normalise(&self.styles);
        self.raw(text, styles);
    }

    fn raw(&mut self, text: &str, styles: Vec<Style>) {
        let start = self.out.text.len();
        self.out.text.push_str(text);
        let end = self.out.text.len();
        match self.out.runs.last_mut() {
            Some(last) if last.styles == styles && last.range.end == start => last.range.end = end,
            _ => self.out.runs.push(Run {
                range: start..end,
                styles,
            }),
        }
    }

    fn gap(&mut self, gap: Gap) {
        self.gap = self.gap.max(gap);
    }

    fn block_gap(&mut self) {
        // Inside a list, blocks of an item are lines, not paragraphs.
        self.gap(if self.lists.is_empty() {
            Gap::Paragraph
        } else {
            Gap::Line
        });
    }
}

fn render(markdown: &str) -> Rendered {
    let options =
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES | Options::ENABLE_TASKLISTS;
    let mut b = Builder {
        out: Rendered::default(),
        styles: Vec::new(),
        gap: Gap::None,
        lists: Vec::new(),
        dropped_links: Vec::new(),
        table: None,
    };
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(tag) => match tag {
                Tag::Paragraph => b.block_gap(),
                Tag::Heading { .. } => {
                    b.block_gap();
                    b.styles.push(Style::Bold);
                }
                Tag::BlockQuote(_) => {
                    b.block_gap();
                    b.styles.push(Style::Quote);
                }
                Tag::CodeBlock(kind) => {
                    b.block_gap();
                    let lang = match kind {
                        CodeBlockKind::Fenced(info) => info
                            .split_whitespace()
                            .next()
                            .filter(|l| {
                                l.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "+-#_.".contains(c))
                            })
                            .map(str::to_owned),
                        CodeBlockKind::Indented => None,
                    };
                    b.styles.push(Style::Pre(lang));
                }
                Tag::List(start) => {
                    if b.lists.is_empty() {
                        b.block_gap();
                    } else {
                        b.gap(Gap::Line);
                    }
                    b.lists.push(start);
                }
                Tag::Item => {
                    b.gap(Gap::Line);
                    let depth = b.lists.len().saturating_sub(1);
                    let marker = match b.lists.last_mut() {
                        Some(Some(n)) => {
                            let m = format!("{n}. ");
                            *n += 1;
                            m
                        }
                        _ => "• ".to_owned(),
                    };
                    let saved = std::mem::take(&mut b.styles);
                    b.push(&format!("{}{marker}", "  ".repeat(depth)));
                    b.styles = saved;
                }
                Tag::Emphasis => b.styles.push(Style::Italic),
                Tag::Strong => b.styles.push(Style::Bold),
                Tag::Strikethrough => b.styles.push(Style::Strike),
                Tag::Link { dest_url, .. } => {
                    if linkable(&dest_url) {
                        b.styles.push(Style::Link(dest_url.to_string()));
                        b.dropped_links.push(None);
                    } else {
                        b.dropped_links.push(Some(dest_url.to_string()));
                    }
                }
                Tag::Image { dest_url, .. } => b.dropped_links.push(Some(dest_url.to_string())),
                Tag::Table(_) => {
                    b.block_gap();
                    b.table = Some(Table::default());
                }
                Tag::TableRow | Tag::TableHead => {
                    if let Some(t) = &mut b.table {
                        t.rows.push(Vec::new());
                    }
                }
                Tag::TableCell => {
                    if let Some(t) = &mut b.table {
                        t.cell = Some(String::new());
                    }
                }
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph => b.block_gap(),
                TagEnd::Heading(_) => {
                    b.styles.pop();
                    b.block_gap();
                }
                TagEnd::BlockQuote(_) => {
                    b.styles.pop();
                    b.block_gap();
                }
                TagEnd::CodeBlock => {
                    // The block's text ends with its newline; the gap stands for it.
                    if let Some(run) = b.out.runs.last_mut()
                        && matches!(run.styles.as_slice(), [Style::Pre(_)])
                        && b.out.text[run.range.clone()].ends_with('\n')
                    {
                        run.range.end -= 1;
                        b.out.text.pop();
                    }
                    b.styles.pop();
                    b.block_gap();
                }
                TagEnd::List(_) => {
                    b.lists.pop();
                    b.block_gap();
                }
                TagEnd::Item => b.gap(Gap::Line),
                TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough => {
                    b.styles.pop();
                }
                TagEnd::Link | TagEnd::Image => match b.dropped_links.pop() {
                    Some(None) => {
                        b.styles.pop();
                    }
                    Some(Some(url)) if !url.is_empty() => b.push(&format!(" ({url})")),
                    _ => {}
                },
                TagEnd::Table => {
                    if let Some(table) = b.table.take() {
                        let text = table_text(&table.rows);
                        b.styles.push(Style::Pre(None));
                        b.push(&text);
                        b.styles.pop();
                    }
                    b.block_gap();
                }
                TagEnd::TableCell => {
                    if let Some(t) = &mut b.table
                        && let Some(cell) = t.cell.take()
                        && let Some(row) = t.rows.last_mut()
                    {
                        row.push(cell.trim().to_owned());
                    }
                }
                _ => {}
            },
            Event::Text(text) => b.push(&text),
            Event::Code(code) => {
                b.styles.push(Style::Code);
                b.push(&code);
                b.styles.pop();
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                let t = html.trim();
                if t.eq_ignore_ascii_case("<br>")
                    || t.eq_ignore_ascii_case("<br/>")
                    || t.eq_ignore_ascii_case("<br />")
                {
                    b.push("\n");
                } else {
                    b.push(&html);
                }
            }
            Event::SoftBreak | Event::HardBreak => b.push("\n"),
            Event::Rule => {
                b.block_gap();
                b.push("———");
                b.block_gap();
            }
            Event::TaskListMarker(done) => b.push(if done { "☑ " } else { "☐ " }),
            Event::FootnoteReference(name) => b.push(&format!("[{name}]")),
            Event::InlineMath(m) | Event::DisplayMath(m) => b.push(&m),
        }
    }
    b.out
}

/// A table as aligned monospace text (Telegram has no tables).
fn table_text(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter_map(|r| r.get(c))
            .map(|cell| cell.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut lines = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = (0..columns)
            .map(|c| {
                let cell = row.get(c).map_or("", String::as_str);
                format!("{cell:<w$}", w = widths[c])
            })
            .collect();
        lines.push(cells.join(" | ").trim_end().to_owned());
        if i == 0 && rows.len() > 1 {
            lines.push(
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("-+-"),
            );
        }
    }
    lines.join("\n")
}

fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// The byte index at which `text[start..]` reaches `limit` UTF-16 units (a char boundary).
fn fits_until(text: &str, start: usize, limit: usize) -> usize {
    let mut units = 0;
    for (i, c) in text[start..].char_indices() {
        units += c.len_utf16();
        if units > limit {
            return start + i;
        }
    }
    text.len()
}

/// Splits `text` into ranges of at most `first_limit` (the first) and `limit` (the rest)
/// UTF-16 units, at the best boundary available: a paragraph, a line, a space, or anywhere.
/// Whitespace at a boundary belongs to no part.
fn split_points(text: &str, first_limit: usize, limit: usize) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start = skip_space(text, 0);
    while start < text.len() {
        let cap = if parts.is_empty() { first_limit } else { limit };
        let hard = fits_until(text, start, cap);
        if hard >= text.len() {
            parts.push(start..text.trim_end().len().max(start));
            break;
        }
        let window = &text[start..hard];
        // A boundary in the second half of the window avoids tiny parts; failing that, any.
        let half = window.len() / 2;
        let boundary = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|&p| p >= half && p > 0))
            .or_else(|| {
                ["\n\n", "\n", " "]
                    .iter()
                    .find_map(|sep| window.rfind(sep).filter(|&p| p > 0))
            });
        let end = boundary.map_or(hard, |p| start + p);
        let trimmed_end = start + text[start..end].trim_end().len();
        if trimmed_end > start {
            parts.push(start..trimmed_end);
        }
        start = skip_space(text, end);
    }
    parts
}

fn skip_space(text: &str, from: usize) -> usize {
    from + (text[from..].len() - text[from..].trim_start().len())
}

fn html_of(r: &Rendered, range: Range<usize>) -> String {
    let mut html = String::new();
    let mut open: Vec<Style> = Vec::new();
    for run in &r.runs {
        let start = run.range.start.max(range.start);
        let end = run.range.end.min(range.end);
        if start >= end {
            continue;
        }
        let common = open
            .iter()
            .zip(&run.styles)
            .take_while(|(a, b)| a == b)
            .count();
        while open.len() > common {
            if let Some(s) = open.pop() {
                html.push_str(s.close());
            }
        }
        for s in &run.styles[common..] {
            html.push_str(&s.open());
            open.push(s.clone());
        }
        html.push_str(&escape(&r.text[start..end], false));
    }
    while let Some(s) = open.pop() {
        html.push_str(s.close());
    }
    html
}

/// Renders `markdown` and splits it: the first part fits `first_limit` (use
/// [`CAPTION_LIMIT`] when it becomes a caption), the others [`MESSAGE_LIMIT`]. Empty or
/// whitespace-only input gives no parts.
pub fn to_parts(markdown: &str, first_limit: usize) -> Vec<Part> {
    let rendered = render(markdown);
    split_points(&rendered.text, first_limit, MESSAGE_LIMIT)
        .into_iter()
        .map(|range| Part {
            html: html_of(&rendered, range.clone()),
            plain: rendered.text[range].to_owned(),
        })
        .collect()
}

/// Plain text (host notices) split into messages, no Markdown involved.
pub fn plain_parts(text: &str) -> Vec<String> {
    split_points(text, MESSAGE_LIMIT, MESSAGE_LIMIT)
        .into_iter()
        .map(|r| text[r].to_owned())
        .collect()
}

/// Plain text (notices, cards) escaped for `parse_mode: HTML`.
pub fn escape_text(text: &str) -> String {
    escape(text, false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utf16_len(text: &str) -> usize {
        text.encode_utf16().count()
    }

    fn html(md: &str) -> String {
        let parts = to_parts(md, MESSAGE_LIMIT);
        assert_eq!(parts.len(), 1, "{parts:#?}");
        parts[0].html.clone()
    }

    #[test]
    fn inline_styles_and_escaping() {
        let table = [
            ("plain", "plain"),
            ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
            (
                "**bold** and *it* and ~~gone~~",
                "<b>bold</b> and <i>it</i> and <s>gone</s>",
            ),
            ("***both***", "<b><i>both</i></b>"),
            ("`x < 1`", "<code>x &lt; 1</code>"),
            (
                "**bold `code` bold**",
                "<b>bold </b><code>code</code><b> bold</b>",
            ),
            (
                "[site](https://example.com/?a=1&b=\"2\")",
                "<a href=\"https://example.com/?a=1&amp;b=&quot;2&quot;\">site</a>",
            ),
            ("[doc](notes/readme.md)", "doc (notes/readme.md)"),
            ("![cat](https://x.y/cat.png)", "cat (https://x.y/cat.png)"),
            ("line one\nline two", "line one\nline two"),
            ("a<br>b", "a\nb"),
            ("<div>raw</div>", "&lt;div&gt;raw&lt;/div&gt;"),
        ];
        for (md, want) in table {
            assert_eq!(html(md), want, "{md}");
        }
    }

    #[test]
    fn blocks() {
        let md = "# Title\n\nText *here*.\n\n- one\n- two\n  1. sub\n  2. sub2\n\n> quoted **bold**\n\n```rust\nfn main() { println!(\"<hi>\"); }\n```\n\n---\n\n| a | bb |\n|---|----|\n| 1 | 2 |\n";
        let want = "<b>Title</b>\n\nText <i>here</i>.\n\n• one\n• two\n  1. sub\n  2. sub2\n\n<blockquote>quoted <b>bold</b></blockquote>\n\n<pre><code class=\"language-rust\">fn main() { println!(\"&lt;hi&gt;\"); }</code></pre>\n\n———\n\n<pre>a | bb\n--+---\n1 | 2</pre>";
        assert_eq!(html(md), want);
    }

    #[test]
    fn nesting_follows_telegram_rules() {
        // A link inside a quote: the quote gives way; code inside bold or a link stands alone.
        assert_eq!(
            html("> see [here](https://a.b) now"),
            "<blockquote>see </blockquote><a href=\"https://a.b\">here</a><blockquote> now</blockquote>"
        );
        assert_eq!(
            html("[`code`](https://a.b)"),
            "<a href=\"https://a.b\">code</a>"
        );
        assert_eq!(html("> > deep"), "<blockquote>deep</blockquote>");
    }

    #[test]
    fn empty_input_has_no_parts() {
        assert!(to_parts("", MESSAGE_LIMIT).is_empty());
        assert!(to_parts("  \n\n ", MESSAGE_LIMIT).is_empty());
    }

    #[test]
    fn long_text_splits_at_paragraphs_then_lines_then_words() {
        let para = "word ".repeat(300); // 1500 chars
        let md = format!("{para}\n\n{para}\n\n{para}\n\n{para}");
        let parts = to_parts(&md, MESSAGE_LIMIT);
        assert_eq!(parts.len(), 2);
        for p in &parts {
            assert!(utf16_len(&p.plain) <= MESSAGE_LIMIT);
            assert!(p.plain.ends_with("word"));
        }
        // Nothing lost: the words all arrive, in order.
        let words: usize = parts
            .iter()
            .map(|p| p.plain.split_whitespace().count())
            .sum();
        assert_eq!(words, 1200);

        let one_line = "x".repeat(5000);
        let parts = to_parts(&one_line, MESSAGE_LIMIT);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_len(&parts[0].plain), MESSAGE_LIMIT);
        assert_eq!(parts[0].plain.len() + parts[1].plain.len(), 5000);
    }

    #[test]
    fn limits_count_utf16_units() {
        // Each emoji is two UTF-16 units: 3000 of them need two messages.
        let parts = to_parts(&"😀".repeat(3000), MESSAGE_LIMIT);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| utf16_len(&p.plain) <= MESSAGE_LIMIT));
        assert_eq!(
            parts[0].plain.chars().count() + parts[1].plain.chars().count(),
            3000
        );
    }

    #[test]
    fn a_split_code_block_stays_code_in_both_parts() {
        let code: String = (0..400).map(|i| format!("let v{i} = {i} < 1;\n")).collect();
        let md = format!("Intro\n\n```rust\n{code}```\n\nDone & dusted");
        let parts = to_parts(&md, MESSAGE_LIMIT);
        assert!(parts.len() >= 2, "{}", parts.len());
        for p in &parts {
            assert!(utf16_len(&p.plain) <= MESSAGE_LIMIT);
            assert_eq!(
                p.html.matches("<pre>").count(),
                p.html.matches("</pre>").count()
            );
        }
        assert!(
            parts[1]
                .html
                .starts_with("<pre><code class=\"language-rust\">"),
            "{}",
            &parts[1].html[..60]
        );
        assert!(parts.last().unwrap().html.ends_with("Done &amp; dusted"));
    }

    /// Every part is HTML that Telegram's parser (as strict as testkit's fake is) accepts, and
    /// shows exactly the part's plain text.
    #[test]
    fn every_part_is_valid_telegram_html_showing_its_plain_text() {
        let long_code: String = (0..300).map(|i| format!("x{i} = a < b && c;\n")).collect();
        let corpus = [
            "**bold _italic `code` still italic_ bold**".to_owned(),
            "> quote with [a link](https://a.b/?q=<x>&y) and `code`\n> > nested".to_owned(),
            "[**bold link** and `code`](https://example.com)".to_owned(),
            "- [ ] todo\n- [x] done\n  - nested *item*\n\n1. one\n2. two".to_owned(),
            "| h1 | h2 |\n|---|---|\n| <a> | & |".to_owned(),
            "Text with <b>html</b> & entities &amp; &lt;".to_owned(),
            format!("intro\n\n```\n{long_code}```\n\n**end** & done"),
            format!("> {}", "quoted words ".repeat(800)),
            "~~strike **both**~~ ![img](https://x.y/i.png) footnote[^1]\n\n[^1]: note".to_owned(),
        ];
        for md in &corpus {
            for part in to_parts(md, MESSAGE_LIMIT) {
                let visible = testkit::fake_telegram::visible_text(&part.html)
                    .unwrap_or_else(|e| panic!("{e}\n{}", part.html));
                assert_eq!(visible, part.plain, "{md}");
                assert!(utf16_len(&visible) <= MESSAGE_LIMIT);
            }
        }
    }

    #[test]
    fn caption_limit_applies_to_the_first_part_only() {
        let md = "word ".repeat(500); // 2500 chars
        let parts = to_parts(&md, CAPTION_LIMIT);
        assert_eq!(parts.len(), 2);
        assert!(utf16_len(&parts[0].plain) <= CAPTION_LIMIT);
        assert!(utf16_len(&parts[1].plain) > CAPTION_LIMIT);
    }
}
