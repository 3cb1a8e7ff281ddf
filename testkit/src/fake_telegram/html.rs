//! Telegram's `parse_mode: HTML` as the Bot API documents it, strictly: the tags it supports
//! (`b strong i em u ins s strike del span.tg-spoiler tg-spoiler a code pre blockquote
//! tg-emoji`), the four named entities plus numeric ones, and nothing else. A text that the real
//! API would reject is rejected here with the same kind of `can't parse entities` description;
//! a bare `&` or `<` that Telegram might tolerate is rejected too, so a sender that passes this
//! check is safe against the real server.

/// Tags Telegram accepts, with the attributes each may carry.
const TAGS: &[(&str, &[&str])] = &[
    ("b", &[]),
    ("strong", &[]),
    ("i", &[]),
    ("em", &[]),
    ("u", &[]),
    ("ins", &[]),
    ("s", &[]),
    ("strike", &[]),
    ("del", &[]),
    ("span", &["class"]),
    ("tg-spoiler", &[]),
    ("a", &["href"]),
    ("code", &["class"]),
    ("pre", &[]),
    ("blockquote", &["expandable"]),
    ("tg-emoji", &["emoji-id"]),
];

/// The visible text of `html` (tags removed, entities decoded), or Telegram's error text.
pub fn visible_text(html: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with('<') {
            let Some(end) = rest.find('>') else {
                return Err(format!(
                    "Bad Request: can't parse entities: Unclosed start tag at byte offset {i}"
                ));
            };
            let inner = &rest[1..end];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match open.pop() {
                    Some(top) if top == name => {}
                    _ => {
                        return Err(format!(
                            "Bad Request: can't parse entities: Unmatched end tag at byte offset {i}, expected \"</{}>\", found \"</{name}>\"",
                            open.last().map_or("", String::as_str)
                        ));
                    }
                }
            } else {
                let (name, attrs) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
                let name = name.to_ascii_lowercase();
                let Some((_, allowed)) = TAGS.iter().find(|(t, _)| *t == name) else {
                    return Err(format!(
                        "Bad Request: can't parse entities: Unsupported start tag \"{name}\" at byte offset {i}"
                    ));
                };
                check_attributes(&name, attrs, allowed, i)?;
                check_nesting(&open, &name, i)?;
                open.push(name);
            }
            i += end + 1;
        } else if rest.starts_with('&') {
            let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
                return Err(format!(
                    "Bad Request: can't parse entities: Character '&' is reserved and must be escaped at byte offset {i}"
                ));
            };
            let entity = &rest[1..end];
            let decoded = match entity {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                num if num.starts_with("#x") || num.starts_with("#X") => {
                    numeric(u32::from_str_radix(&num[2..], 16).ok(), i)?
                }
                num if num.starts_with('#') => numeric(num[1..].parse().ok(), i)?,
                other => {
                    return Err(format!(
                        "Bad Request: can't parse entities: Unsupported HTML entity \"&{other};\" at byte offset {i}"
                    ));
                }
            };
            out.push(decoded);
            i += end + 1;
        } else if bytes[i] == b'>' {
            // Telegram tolerates a bare '>' in text.
            out.push('>');
            i += 1;
        } else {
            let Some(c) = rest.chars().next() else { break };
            out.push(c);
            i += c.len_utf8();
        }
    }
    if let Some(tag) = open.last() {
        return Err(format!(
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{tag}\""
        ));
    }
    Ok(out)
}

/// Telegram's nesting rules ("Formatting options"): `pre` and `code` neither contain nor sit
/// inside other entities (except `<pre><code class=…>`), blockquotes and links do not nest.
fn check_nesting(open: &[String], name: &str, at: usize) -> Result<(), String> {
    let err = |outer: &str| {
        Err(format!(
            "Bad Request: can't parse entities: Can't nest \"{name}\" inside \"{outer}\" at byte offset {at}"
        ))
    };
    let code_in_pre = name == "code" && open.last().is_some_and(|t| t == "pre");
    if !code_in_pre && let Some(outer) = open.iter().find(|t| *t == "pre" || *t == "code") {
        return err(outer);
    }
    if (name == "pre" || name == "code")
        && !code_in_pre
        && let Some(outer) = open.last()
    {
        return err(outer);
    }
    if matches!(name, "blockquote" | "a") && open.iter().any(|t| t == name) {
        return err(name);
    }
    Ok(())
}

fn numeric(code: Option<u32>, at: usize) -> Result<char, String> {
    code.and_then(char::from_u32).ok_or_else(|| {
        format!("Bad Request: can't parse entities: Invalid numeric entity at byte offset {at}")
    })
}

fn check_attributes(name: &str, attrs: &str, allowed: &[&str], at: usize) -> Result<(), String> {
    let mut rest = attrs.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .map_or((rest, ""), |(k, a)| (k.trim(), a.trim_start()));
        let key = key.split_whitespace().next().unwrap_or(key);
        if !allowed.contains(&key) {
            return Err(format!(
                "Bad Request: can't parse entities: Unsupported attribute \"{key}\" of tag \"{name}\" at byte offset {at}"
            ));
        }
        if after.is_empty() {
            rest = rest[key.len()..].trim_start();
            continue;
        }
        let value_end = if let Some(quoted) = after.strip_prefix('"') {
            let close = quoted.find('"').ok_or_else(|| {
                format!("Bad Request: can't parse entities: Unclosed attribute value at byte offset {at}")
            })?;
            if quoted[..close].contains('<') {
                return Err(format!(
                    "Bad Request: can't parse entities: Character '<' in attribute value at byte offset {at}"
                ));
            }
            close + 2
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        rest = after[value_end..].trim_start();
    }
    if name == "span" && !attrs.contains("tg-spoiler") {
        return Err(format!(
            "Bad Request: can't parse entities: Tag \"span\" must have class \"tg-spoiler\" at byte offset {at}"
        ));
    }
    Ok(())
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_telegram_accepts() {
        for (html, visible) in [
            ("plain", "plain"),
            ("<b>bold</b> &amp; <i>it</i>", "bold & it"),
            (
                "a &lt; b &gt; c &quot;q&quot; &#128512;",
                "a < b > c \"q\" 😀",
            ),
            (
                "<pre><code class=\"language-rust\">fn x() {}</code></pre>",
                "fn x() {}",
            ),
            ("<a href=\"https://x.y/?a=1&amp;b=2\">link</a>", "link"),
            ("<blockquote expandable>q</blockquote>", "q"),
            ("<span class=\"tg-spoiler\">s</span>", "s"),
            ("<blockquote><b>q</b> <i>r</i></blockquote>", "q r"),
            ("<a href=\"https://a\"><b>bold link</b></a>", "bold link"),
            ("1 > 0", "1 > 0"),
        ] {
            assert_eq!(visible_text(html).as_deref(), Ok(visible), "{html}");
        }
    }

    #[test]
    fn rejects_what_telegram_rejects() {
        for html in [
            "<b>unclosed",
            "<b><i>crossed</b></i>",
            "<h1>head</h1>",
            "a < b",
            "fish & chips",
            "&nbsp;",
            "<a onclick=\"x\">a</a>",
            "<span>no class</span>",
            "<pre><pre>x</pre></pre>",
            "<b><code>x</code></b>",
            "<code><b>x</b></code>",
            "<blockquote><blockquote>x</blockquote></blockquote>",
            "<a href=\"https://a\"><a href=\"https://b\">x</a></a>",
        ] {
            assert!(visible_text(html).is_err(), "{html}");
        }
    }
}
