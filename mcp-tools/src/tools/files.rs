//! `read_file`, `write_file`, `edit_file`, and the confined open every tool that reads or
//! writes a workspace file shares. Paths go through [`crate::paths::Confinement`] for clear
//! messages, then are opened below their root by descriptor ([`crate::beneath`]: no link, even
//! one swapped in after the check, leads out; the final component is never followed), with
//! `O_NONBLOCK` (a FIFO cannot hang the call). All file I/O runs on the blocking pool.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::{Context, Tools};
use crate::beneath::{Lookup, Refusal, Root, open_at};
use crate::error::{ToolError, tool_result};
use crate::paths::{Area, PathError, Resolved};

/// Lines returned when `limit` is not given.
const DEFAULT_LIMIT: u64 = 2000;
/// Longer lines are cut (minified files would otherwise fill the context).
const MAX_LINE_CHARS: usize = 2000;
/// Bytes of one line kept in memory: enough for `MAX_LINE_CHARS` of any UTF-8.
const MAX_LINE_BYTES: usize = MAX_LINE_CHARS * 4;
/// Size budget of one `read_file` answer; the footer says where to continue.
const MAX_READ_BYTES: usize = 100_000;

/// Flags for every open of a file: never follow a final symlink, never block on a FIFO.
pub(super) const OPEN_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// What a tool does with the file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    ReadWrite,
    /// Create or truncate for writing, making missing folders.
    Replace,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadFileArgs {
    /// File path; inbound/… for the files people sent.
    pub path: String,
    /// Line number to start at (1 = first line). Default 1.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Maximum number of lines to return. Default 2000.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFileArgs {
    /// File path.
    pub path: String,
    /// The complete new content of the file.
    pub content: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EditFileArgs {
    /// File path.
    pub path: String,
    /// The exact text to replace; it must occur exactly once in the file.
    pub old_string: String,
    /// The text to put in its place.
    pub new_string: String,
}

#[tool_router(router = file_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Read a text file: up to 2000 lines from `offset`, numbered like `cat -n` \
                       (number, tab, text; the numbers are not in the file). A final [note] says \
                       how to continue if more follow. Lines over 2000 characters are cut.",
        annotations(read_only_hint = true)
    )]
    async fn read_file(&self, Parameters(args): Parameters<ReadFileArgs>) -> CallToolResult {
        tool_result("read_file", read_file(self.ctx.clone(), args).await)
    }

    #[tool(
        description = "Create or overwrite a file with `content` (missing folders are \
                       created); returns the bytes written. To change part of a file, use \
                       edit_file.",
        annotations(destructive_hint = true, idempotent_hint = true)
    )]
    async fn write_file(&self, Parameters(args): Parameters<WriteFileArgs>) -> CallToolResult {
        tool_result("write_file", write_file(self.ctx.clone(), args).await)
    }

    #[tool(
        description = "Replace `old_string` with `new_string` in a text file. `old_string` must \
                       occur exactly once, whitespace included: copy it from read_file without \
                       the line numbers, with neighbouring lines if it is not unique.",
        annotations(destructive_hint = true)
    )]
    async fn edit_file(&self, Parameters(args): Parameters<EditFileArgs>) -> CallToolResult {
        tool_result("edit_file", edit_file(self.ctx.clone(), args).await)
    }
}

async fn read_file(ctx: Arc<Context>, args: ReadFileArgs) -> Result<String, ToolError> {
    let offset = args.offset.unwrap_or(1).max(1);
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(ToolError::OutOfRange {
            name: "limit",
            rule: "at least 1",
            value: limit,
        });
    }
    let resolved = ctx.confinement.resolve(&args.path)?;
    tokio::task::spawn_blocking(move || {
        read_resolved(&resolved, &args.path, offset, limit, Lookup::Kernel)
    })
    .await?
}

/// `read_file` once the path passed the checks.
pub(super) fn read_resolved(
    resolved: &Resolved,
    shown: &str,
    offset: u64,
    limit: u64,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let file = open_file(resolved, shown, Access::Read, lookup)?;
    let listing =
        number_lines(BufReader::new(file), offset, limit).map_err(|source| ToolError::Io {
            action: "read",
            path: shown.to_owned(),
            source,
        })?;
    listing.render(shown, offset)
}

async fn write_file(ctx: Arc<Context>, args: WriteFileArgs) -> Result<String, ToolError> {
    let resolved = ctx.confinement.resolve(&args.path)?;
    tokio::task::spawn_blocking(move || write_resolved(&resolved, &args, Lookup::Kernel)).await?
}

/// `write_file` once the path passed the checks.
pub(super) fn write_resolved(
    resolved: &Resolved,
    args: &WriteFileArgs,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let mut file = open_file(resolved, &args.path, Access::Replace, lookup)?;
    file.write_all(args.content.as_bytes())
        .map_err(|source| ToolError::Io {
            action: "write",
            path: args.path.clone(),
            source,
        })?;
    Ok(format!(
        "wrote {} bytes to {}",
        args.content.len(),
        args.path
    ))
}

async fn edit_file(ctx: Arc<Context>, args: EditFileArgs) -> Result<String, ToolError> {
    if args.old_string.is_empty() {
        return Err(ToolError::EmptyOldString);
    }
    if args.old_string == args.new_string {
        return Err(ToolError::NoChange);
    }
    let resolved = ctx.confinement.resolve(&args.path)?;
    tokio::task::spawn_blocking(move || edit_resolved(&resolved, args, Lookup::Kernel)).await?
}

/// `edit_file` once the arguments and the path passed the checks.
pub(super) fn edit_resolved(
    resolved: &Resolved,
    args: EditFileArgs,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let io_error = |action, source| ToolError::Io {
        action,
        path: args.path.clone(),
        source,
    };
    let mut file = open_file(resolved, &args.path, Access::ReadWrite, lookup)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error("read", e))?;
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(ToolError::NotUtf8 { path: args.path });
    };
    let Some(at) = text.find(&args.old_string) else {
        return Err(ToolError::NoMatch { path: args.path });
    };
    let count = occurrences(&text, &args.old_string);
    if count > 1 {
        return Err(ToolError::Ambiguous {
            path: args.path,
            count,
        });
    }
    let line = text[..at].matches('\n').count() + 1;
    let edited = [
        &text[..at],
        &args.new_string,
        &text[at + args.old_string.len()..],
    ]
    .concat();
    // In place (truncate and rewrite), so the file keeps its inode, mode and hard links.
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.set_len(0))
        .and_then(|()| file.write_all(edited.as_bytes()))
        .map_err(|e| io_error("write", e))?;
    Ok(format!("edited {} (at line {line})", args.path))
}

/// Opens a confined path below its root without following any link out of it, nor a final
/// link at all; refuses anything but a regular file. `shown` is the path as the model gave it.
pub(super) fn open_file(
    resolved: &Resolved,
    shown: &str,
    access: Access,
    lookup: Lookup,
) -> Result<File, ToolError> {
    if resolved.area == Area::Inbound && !matches!(access, Access::Read) {
        return Err(ToolError::ReadOnly {
            path: shown.to_owned(),
        });
    }
    let root = open_root(resolved, shown)?;
    let (flags, create) = match access {
        Access::Read => (libc::O_RDONLY, false),
        Access::ReadWrite => (libc::O_RDWR, false),
        Access::Replace => (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, true),
    };
    let (dir, name) = root
        .parent(&resolved.relative, create, lookup)
        .map_err(|e| match e {
            Refusal::Io(source) if create => ToolError::Io {
                action: "create the folders of",
                path: shown.to_owned(),
                source,
            },
            e => refused(e, resolved.area, shown),
        })?;
    open_in(dir.as_fd(), &name, flags, resolved.area, shown)
}

/// Opens `name` in the folder `dir` without following it; refuses anything but a regular file.
pub(super) fn open_in(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    area: Area,
    shown: &str,
) -> Result<File, ToolError> {
    let path = || shown.to_owned();
    let file = open_at(dir, name, flags | OPEN_FLAGS, /*mode*/ 0o666)
        .map_err(|e| refused(e.into(), area, shown))?;
    let file = File::from(file);
    let meta = file.metadata().map_err(|source| ToolError::Io {
        action: "inspect",
        path: path(),
        source,
    })?;
    if meta.is_dir() {
        return Err(ToolError::IsDirectory { path: path() });
    }
    if !meta.is_file() {
        return Err(ToolError::NotRegularFile { path: path() });
    }
    Ok(file)
}

/// Opens the root a resolved path lies in.
pub(super) fn open_root(resolved: &Resolved, shown: &str) -> Result<Root, ToolError> {
    Root::open(&resolved.root).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            PathError::RootMissing {
                area: resolved.area,
                path: shown.to_owned(),
            }
            .into()
        } else {
            ToolError::Io {
                action: "open",
                path: shown.to_owned(),
                source,
            }
        }
    })
}

/// What the model reads when an open below a root fails: the one place these errors are
/// mapped for every tool.
pub(super) fn refused(err: Refusal, area: Area, shown: &str) -> ToolError {
    let path = shown.to_owned();
    let source = match err {
        Refusal::Escape => return PathError::SymlinkEscape { area, path }.into(),
        Refusal::Io(source) => source,
    };
    match source.raw_os_error() {
        // ELOOP is Linux's answer to O_NOFOLLOW on a symlink (and to a loop of links); EMLINK
        // is the BSDs'.
        Some(libc::ELOOP | libc::EMLINK) => ToolError::Symlink { path },
        // RESOLVE_BENEATH's answer; the lookup walks instead, so this is only a backstop.
        Some(libc::EXDEV) => PathError::SymlinkEscape { area, path }.into(),
        Some(libc::EISDIR) => ToolError::IsDirectory { path },
        // A FIFO without a reader, opened for writing with O_NONBLOCK.
        Some(libc::ENXIO) => ToolError::NotRegularFile { path },
        _ if source.kind() == io::ErrorKind::NotFound => ToolError::NotFound { path },
        _ => ToolError::Io {
            action: "open",
            path,
            source,
        },
    }
}

/// Occurrences of `needle`, overlapping ones included: "aa" in "aaa" is ambiguous.
fn occurrences(haystack: &str, needle: &str) -> usize {
    let step = needle.chars().next().map_or(1, char::len_utf8);
    let mut count = 0;
    let mut start = 0;
    while let Some(i) = haystack[start..].find(needle) {
        count += 1;
        start += i + step;
    }
    count
}

/// The numbered lines `read_file` shows, and what it knows about the rest of the file.
#[derive(Debug, PartialEq)]
struct Listing {
    text: String,
    /// Last line included (0 when none).
    last_shown: u64,
    /// Lines in the whole file.
    total: u64,
    /// Stopped early because of `MAX_READ_BYTES`.
    size_capped: bool,
}

impl Listing {
    fn render(self, path: &str, offset: u64) -> Result<String, ToolError> {
        if self.total == 0 {
            return Ok("[empty file]".to_owned());
        }
        if self.last_shown == 0 {
            return Err(ToolError::OffsetPastEnd {
                path: path.to_owned(),
                offset,
                lines: self.total,
            });
        }
        let mut text = self.text;
        if self.last_shown < self.total {
            let why = if self.size_capped {
                "size limit reached; "
            } else {
                ""
            };
            text.push_str(&format!(
                "[{why}showed lines {offset}-{} of {}; continue with offset={}]\n",
                self.last_shown,
                self.total,
                self.last_shown + 1
            ));
        }
        Ok(text)
    }
}

/// Numbers lines `offset..offset+limit` (1-based) like `cat -n`, cutting long lines, and counts
/// the file's lines. Memory stays bounded by `MAX_READ_BYTES` whatever the file holds.
fn number_lines(mut reader: impl BufRead, offset: u64, limit: u64) -> io::Result<Listing> {
    let mut listing = Listing {
        text: String::new(),
        last_shown: 0,
        total: 0,
        size_capped: false,
    };
    let mut shown = 0u64;
    let mut line = Vec::new();
    while let Some(len) = next_line(&mut reader, &mut line, MAX_LINE_BYTES)? {
        listing.total += 1;
        let n = listing.total;
        if n < offset || shown >= limit || listing.size_capped {
            continue;
        }
        let entry = format!("{n:>6}\t{}\n", shown_line(&line, len));
        if shown > 0 && listing.text.len() + entry.len() > MAX_READ_BYTES {
            listing.size_capped = true;
            continue;
        }
        listing.text.push_str(&entry);
        listing.last_shown = n;
        shown += 1;
    }
    Ok(listing)
}

/// Reads one line (through `\n` or EOF) keeping at most `max_bytes` of it in `buf`; returns
/// its full length in bytes, or `None` at EOF.
pub(super) fn next_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> io::Result<Option<u64>> {
    buf.clear();
    let mut len = 0u64;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((len > 0).then_some(len));
        }
        let (part, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..=i], true),
            None => (chunk, false),
        };
        let room = max_bytes.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = part.len();
        len += used as u64;
        reader.consume(used);
        if complete {
            return Ok(Some(len));
        }
    }
}

/// A line as shown: without its line break, invalid UTF-8 replaced, cut at `MAX_LINE_CHARS`.
fn shown_line(kept: &[u8], len: u64) -> String {
    let whole = kept.len() as u64 == len;
    let kept = kept.strip_suffix(b"\n").unwrap_or(kept);
    let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
    let text = String::from_utf8_lossy(kept);
    match text.char_indices().nth(MAX_LINE_CHARS) {
        None if whole => text.into_owned(),
        cut => {
            let end = cut.map_or(text.len(), |(i, _)| i);
            format!("{} [… line cut, {len} bytes in all]", &text[..end])
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn listing(content: &[u8], offset: u64, limit: u64) -> Result<String, String> {
        number_lines(content, offset, limit)
            .unwrap()
            .render("f.txt", offset)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbering_and_paging() {
        /// (content, offset, limit, answer or error)
        type Case = (&'static [u8], u64, u64, Result<&'static str, &'static str>);
        let table: [Case; 8] = [
            (b"", 1, 10, Ok("[empty file]")),
            (b"a\nb\n", 1, 10, Ok("     1\ta\n     2\tb\n")),
            (b"a\nb", 1, 10, Ok("     1\ta\n     2\tb\n")),
            (b"a\r\nb\r\n", 1, 10, Ok("     1\ta\n     2\tb\n")),
            (b"\n\n", 1, 10, Ok("     1\t\n     2\t\n")),
            (
                b"a\nb\nc\n",
                2,
                1,
                Ok("     2\tb\n[showed lines 2-2 of 3; continue with offset=3]\n"),
            ),
            (b"a\xffb\n", 1, 10, Ok("     1\ta\u{fffd}b\n")),
            (
                b"a\n",
                5,
                10,
                Err("offset 5 is past the end of f.txt (1 lines)"),
            ),
        ];
        for (content, offset, limit, want) in table {
            assert_eq!(
                listing(content, offset, limit),
                want.map(str::to_owned).map_err(str::to_owned),
                "{:?}",
                String::from_utf8_lossy(content)
            );
        }
    }

    #[test]
    fn long_lines_are_cut() {
        let long = format!("{}\nshort\n", "é".repeat(5000));
        let text = listing(long.as_bytes(), 1, 10).unwrap();
        let first = text.lines().next().unwrap();
        assert!(
            first.ends_with(" [… line cut, 10001 bytes in all]"),
            "{}",
            &first[first.len() - 60..]
        );
        assert_eq!(first.chars().filter(|c| *c == 'é').count(), MAX_LINE_CHARS);
        assert!(text.ends_with("     2\tshort\n"));
        // Exactly at the limit: not cut.
        let exact = "x".repeat(MAX_LINE_CHARS);
        assert_eq!(
            listing(exact.as_bytes(), 1, 1).unwrap(),
            format!("     1\t{exact}\n")
        );
    }

    #[test]
    fn the_answer_size_is_bounded() {
        let line = "y".repeat(1000);
        let content = format!("{line}\n").repeat(500);
        let text = listing(content.as_bytes(), 1, 2000).unwrap();
        assert!(text.len() <= MAX_READ_BYTES + 200, "{}", text.len());
        let footer = text.lines().last().unwrap();
        assert!(
            footer.starts_with("[size limit reached; showed lines 1-"),
            "{footer}"
        );
        assert!(
            footer.contains(" of 500; continue with offset="),
            "{footer}"
        );
    }

    #[test]
    fn overlapping_occurrences_count() {
        for (hay, needle, want) in [
            ("aaa", "aa", 2),
            ("abab", "ab", 2),
            ("x", "y", 0),
            ("ééé", "éé", 2),
            ("fn a() {}\nfn b() {}", "fn a", 1),
        ] {
            assert_eq!(occurrences(hay, needle), want, "{hay:?} {needle:?}");
        }
    }
}
