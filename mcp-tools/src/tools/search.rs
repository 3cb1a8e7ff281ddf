//! `list_files` and `grep`: read-only views of a folder in the workspace or the agent folder.
//! Owns the walk (sorted, depth-first, never following a symlink: links are shown, not
//! entered or read) and the caps on what one answer holds. The start path goes through
//! [`crate::paths::Confinement`] and is opened below its root like the file tools' paths
//! ([`crate::beneath`]); from there the walk goes by descriptor only: each folder is read with
//! `readdir` on its descriptor, each entry inspected with `fstatat(AT_SYMLINK_NOFOLLOW)` and
//! opened with `openat(O_NOFOLLOW)` in the folder that lists it, so a folder swapped for a
//! link mid-walk is skipped, never followed.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::{Regex, RegexBuilder};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::files::{OPEN_FLAGS, next_line, open_root, refused};
use super::{Context, Tools};
use crate::beneath::{Lookup, open_at, read_dir_at, read_link_at, stat_at};
use crate::error::{ToolError, tool_result};
use crate::paths::{Area, Resolved};

/// Entries one `list_files` answer shows.
const MAX_ENTRIES: usize = 500;
/// Entries counted past `MAX_ENTRIES` before the walk stops counting ("more than …").
const MAX_COUNTED: usize = 50_000;
const DEFAULT_DEPTH: u32 = 2;
const MAX_DEPTH: u32 = 20;
/// `grep` descends at most this deep (a guard against pathological trees, not a feature).
const GREP_DEPTH: u32 = 64;
const DEFAULT_RESULTS: u32 = 100;
const MAX_RESULTS: u32 = 1000;
/// Characters of a matching line shown; the rest is cut around the match.
const MAX_MATCH_CHARS: usize = 300;
/// Bytes of one line searched; a longer line is searched in its first part only.
const MAX_GREP_LINE_BYTES: usize = 64 * 1024;
/// A NUL byte among a file's first bytes marks it as binary (git and ripgrep do the same).
const BINARY_PROBE: usize = 8 * 1024;
/// Wall-clock budget of one search; the answer says when it ran out.
const SEARCH_BUDGET: Duration = Duration::from_secs(20);
/// Folders `grep` does not enter: version-control internals are noise.
const GREP_SKIPPED_DIRS: [&str; 1] = [".git"];
/// How the walk opens a folder to list it: never through a link.
const FOLDER_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListFilesArgs {
    /// Folder to list (inbound: the files people sent). Default: the workspace.
    #[serde(default)]
    pub path: Option<String>,
    /// How many levels to show: 1 = only the folder's own entries. Default 2.
    #[serde(default)]
    #[schemars(range(min = 1, max = 20))]
    pub depth: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GrepArgs {
    /// Regular expression (Rust regex syntax, like ripgrep's; `(?i)` at the start ignores case).
    pub pattern: String,
    /// File or folder to search (inbound/…: the files people sent). Default: the workspace.
    #[serde(default)]
    pub path: Option<String>,
    /// Only search files matching this glob, e.g. `*.rs`, `*.{md,txt}`, or `src/**/*.py`
    /// (with a `/` the glob matches the path below `path`, without it the file name).
    #[serde(default)]
    pub glob: Option<String>,
    /// Stop after this many matching lines. Default 100.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub max_results: Option<u32>,
}

#[tool_router(router = search_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "List a folder's files and subfolders up to `depth` levels, sorted: \
                       `dir  path/`, `file  path (N bytes)`, `link  path -> target` (not \
                       followed) or `other  path (kind)`. At most 500 entries; a final note says \
                       how many more there are.",
        annotations(read_only_hint = true)
    )]
    async fn list_files(&self, Parameters(args): Parameters<ListFilesArgs>) -> CallToolResult {
        tool_result("list_files", list_files(self.ctx.clone(), args).await)
    }

    #[tool(
        description = "Search the text files under `path` (optionally only those matching \
                       `glob`) with a regular expression. Returns `path:line: text` lines, long \
                       ones cut around the match; skips binary files, symbolic links and .git. \
                       Stops after `max_results` matches and says so.",
        annotations(read_only_hint = true)
    )]
    async fn grep(&self, Parameters(args): Parameters<GrepArgs>) -> CallToolResult {
        tool_result("grep", grep(self.ctx.clone(), args).await)
    }
}

/// What a directory entry is, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File { size: u64 },
    Link { target: String },
    Other { what: &'static str },
}

impl Kind {
    /// The entry `name` of the folder `dir`, not followed.
    fn at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Kind> {
        let stat = stat_at(dir, name)?;
        Ok(match stat.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File {
                size: u64::try_from(stat.st_size).unwrap_or_default(),
            },
            libc::S_IFLNK => Kind::Link {
                target: read_link_at(dir, name).map_or_else(
                    |e| format!("(unreadable: {e})"),
                    |t| t.to_string_lossy().into_owned(),
                ),
            },
            libc::S_IFIFO => Kind::Other { what: "fifo" },
            libc::S_IFSOCK => Kind::Other { what: "socket" },
            libc::S_IFCHR => Kind::Other {
                what: "character device",
            },
            libc::S_IFBLK => Kind::Other {
                what: "block device",
            },
            _ => Kind::Other {
                what: "unknown kind",
            },
        })
    }

    fn line(&self, shown: &str) -> String {
        match self {
            Kind::Dir => format!("dir  {shown}/"),
            Kind::File { size } => format!("file  {shown} ({size} bytes)"),
            Kind::Link { target } => format!("link  {shown} -> {target}"),
            Kind::Other { what } => format!("other  {shown} ({what})"),
        }
    }
}

/// A path as the model writes it in the next call: relative to the workspace, `agent/…` or
/// `inbound/…`.
fn shown_path(area: Area, relative: &Path) -> String {
    let relative = relative.to_string_lossy();
    match (area, relative.is_empty()) {
        (Area::Workspace, true) => ".".to_owned(),
        (Area::Workspace, false) => relative.into_owned(),
        (Area::Agent | Area::Inbound, true) => area.prefix().to_owned(),
        (Area::Agent | Area::Inbound, false) => format!("{}/{relative}", area.prefix()),
    }
}

/// One entry met by [`walk`]: `name` in the folder `dir`.
struct Visit<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    /// Relative to the confinement root (for display and globs).
    relative: &'a Path,
    kind: Kind,
}

/// Whether the walk goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Visits the entries of the folder `dir` depth-first, each folder's entries sorted by name,
/// down to `depth` levels. Symlinks are visited, never entered; `enter` decides for each folder.
fn walk(
    dir: BorrowedFd<'_>,
    relative: &Path,
    depth: u32,
    enter: &impl Fn(&Path) -> bool,
    visit: &mut impl FnMut(Visit<'_>) -> Flow,
) -> Flow {
    if depth == 0 {
        return Flow::Continue;
    }
    // An unreadable folder (permissions, removed meanwhile) is shown as an empty one.
    let Ok(mut names) = read_dir_at(dir) else {
        return Flow::Continue;
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        // Removed meanwhile: skipped.
        let Ok(kind) = Kind::at(dir, &name) else {
            continue;
        };
        let child = relative.join(OsStr::from_bytes(name.as_bytes()));
        let is_dir = kind == Kind::Dir;
        if visit(Visit {
            dir,
            name: &name,
            relative: &child,
            kind,
        }) == Flow::Stop
        {
            return Flow::Stop;
        }
        if !is_dir || !enter(&child) {
            continue;
        }
        // A folder replaced by a link since `Kind::at` fails here (O_NOFOLLOW): skipped.
        let Ok(folder) = open_at(dir, &name, FOLDER_FLAGS, /*mode*/ 0) else {
            continue;
        };
        if walk(folder.as_fd(), &child, depth - 1, enter, visit) == Flow::Stop {
            return Flow::Stop;
        }
    }
    Flow::Continue
}

/// The start of a listing or search: the folder that holds it, its name there, and what it is
/// (not followed).
struct Start {
    parent: OwnedFd,
    name: CString,
    kind: Kind,
}

impl Start {
    fn open(resolved: &Resolved, shown: &str, lookup: Lookup) -> Result<Start, ToolError> {
        let root = open_root(resolved, shown)?;
        let (parent, name) = root
            .parent(&resolved.relative, false, lookup)
            .map_err(|e| refused(e, resolved.area, shown))?;
        let kind = Kind::at(parent.as_fd(), &name).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ToolError::NotFound {
                    path: shown.to_owned(),
                }
            } else {
                ToolError::Io {
                    action: "inspect",
                    path: shown.to_owned(),
                    source: e,
                }
            }
        })?;
        Ok(Start { parent, name, kind })
    }

    /// The start folder itself, to walk.
    fn folder(&self, resolved: &Resolved, shown: &str) -> Result<OwnedFd, ToolError> {
        open_at(
            self.parent.as_fd(),
            &self.name,
            FOLDER_FLAGS,
            /*mode*/ 0,
        )
        .map_err(|e| refused(e.into(), resolved.area, shown))
    }
}

async fn list_files(ctx: Arc<Context>, args: ListFilesArgs) -> Result<String, ToolError> {
    let depth = args.depth.unwrap_or(DEFAULT_DEPTH);
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(ToolError::OutOfRange {
            name: "depth",
            rule: "between 1 and 20",
            value: depth.into(),
        });
    }
    let raw = args.path.unwrap_or_else(|| ".".to_owned());
    let resolved = ctx.confinement.resolve(&raw)?;
    tokio::task::spawn_blocking(move || list_resolved(&resolved, &raw, depth, Lookup::Kernel))
        .await?
}

/// `list_files` once the path passed the checks.
pub(super) fn list_resolved(
    resolved: &Resolved,
    raw: &str,
    depth: u32,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let area = resolved.area;
    let start = Start::open(resolved, raw, lookup)?;
    if start.kind != Kind::Dir {
        return Ok(start.kind.line(&shown_path(area, &resolved.relative)));
    }
    let folder = start.folder(resolved, raw)?;
    let mut lines = Vec::new();
    let mut more = 0usize;
    walk(
        folder.as_fd(),
        &resolved.relative,
        depth,
        &|_: &Path| true,
        &mut |visit| {
            if lines.len() < MAX_ENTRIES {
                lines.push(visit.kind.line(&shown_path(area, visit.relative)));
                return Flow::Continue;
            }
            more += 1;
            if more >= MAX_COUNTED {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
    );
    let shown = shown_path(area, &resolved.relative);
    if lines.is_empty() {
        return Ok(format!("[{shown} is empty]"));
    }
    let mut text = lines.join("\n");
    if more > 0 {
        let count = if more >= MAX_COUNTED {
            format!("more than {MAX_COUNTED}")
        } else {
            more.to_string()
        };
        text.push_str(&format!(
            "\n[showed {MAX_ENTRIES} entries; {count} more not shown: list a subfolder, or \
             use a smaller depth]"
        ));
    }
    Ok(text)
}

/// Why a search ended before it had looked at everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    Results,
    Time,
}

/// The state of one `grep`.
pub(super) struct Search {
    pattern: Regex,
    glob: Option<Glob>,
    max_results: usize,
    deadline: Instant,
    area: Area,
    /// Relative path of the search root, which a glob with `/` is matched below.
    base: PathBuf,
    lines: Vec<String>,
    files: usize,
    binary: usize,
    cutoff: Option<Cutoff>,
}

async fn grep(ctx: Arc<Context>, args: GrepArgs) -> Result<String, ToolError> {
    let max_results = args.max_results.unwrap_or(DEFAULT_RESULTS);
    if !(1..=MAX_RESULTS).contains(&max_results) {
        return Err(ToolError::OutOfRange {
            name: "max_results",
            rule: "between 1 and 1000",
            value: max_results.into(),
        });
    }
    let pattern = RegexBuilder::new(&args.pattern)
        .build()
        .map_err(|e| ToolError::BadPattern {
            what: "pattern",
            detail: e.to_string(),
        })?;
    let glob = args
        .glob
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(Glob::new)
        .transpose()?;
    let raw = args.path.unwrap_or_else(|| ".".to_owned());
    let resolved = ctx.confinement.resolve(&raw)?;
    tokio::task::spawn_blocking(move || {
        let search = Search::new(pattern, glob, max_results as usize, &resolved);
        grep_resolved(&resolved, raw, search, Lookup::Kernel)
    })
    .await?
}

/// `grep` once the arguments and the path passed the checks.
pub(super) fn grep_resolved(
    resolved: &Resolved,
    raw: String,
    mut search: Search,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let start = Start::open(resolved, &raw, lookup)?;
    match start.kind {
        Kind::Dir => {
            let folder = start.folder(resolved, &raw)?;
            let enter = |relative: &Path| {
                relative
                    .file_name()
                    .is_none_or(|name| !GREP_SKIPPED_DIRS.iter().any(|s| name == *s))
            };
            walk(
                folder.as_fd(),
                &resolved.relative,
                GREP_DEPTH,
                &enter,
                &mut |visit| match visit.kind {
                    Kind::File { .. } => search.file(visit.dir, visit.name, visit.relative),
                    Kind::Dir | Kind::Link { .. } | Kind::Other { .. } => Flow::Continue,
                },
            );
        }
        Kind::File { .. } => {
            // A file named directly is searched whatever the glob says.
            search.glob = None;
            search.file(start.parent.as_fd(), &start.name, &resolved.relative);
        }
        Kind::Link { .. } => return Err(ToolError::Symlink { path: raw }),
        Kind::Other { .. } => return Err(ToolError::NotRegularFile { path: raw }),
    }
    Ok(search.render())
}

impl Search {
    /// A search below `resolved`, its time budget starting now.
    pub(super) fn new(
        pattern: Regex,
        glob: Option<Glob>,
        max_results: usize,
        resolved: &Resolved,
    ) -> Search {
        Search {
            pattern,
            glob,
            max_results,
            deadline: Instant::now() + SEARCH_BUDGET,
            area: resolved.area,
            base: resolved.relative.clone(),
            lines: Vec::new(),
            files: 0,
            binary: 0,
            cutoff: None,
        }
    }

    /// Searches `name` in the folder `dir`; unreadable and binary files are skipped.
    fn file(&mut self, dir: BorrowedFd<'_>, name: &CStr, relative: &Path) -> Flow {
        if Instant::now() > self.deadline {
            self.cutoff = Some(Cutoff::Time);
            return Flow::Stop;
        }
        if let Some(glob) = &self.glob {
            let below = relative.strip_prefix(&self.base).unwrap_or(relative);
            if !glob.matches(below) {
                return Flow::Continue;
            }
        }
        let Ok(file) = open_at(dir, name, libc::O_RDONLY | OPEN_FLAGS, /*mode*/ 0).map(File::from)
        else {
            return Flow::Continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Flow::Continue;
        }
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        match reader.fill_buf() {
            Ok(head) if head[..head.len().min(BINARY_PROBE)].contains(&0) => {
                self.binary += 1;
                return Flow::Continue;
            }
            Ok(_) => {}
            Err(_) => return Flow::Continue,
        }
        self.files += 1;
        let shown = shown_path(self.area, relative);
        let mut line = Vec::new();
        let mut number = 0u64;
        // A read error ends this file's search; what was found so far stays.
        while let Ok(Some(_)) = next_line(&mut reader, &mut line, MAX_GREP_LINE_BYTES) {
            number += 1;
            if number.is_multiple_of(10_000) && Instant::now() > self.deadline {
                self.cutoff = Some(Cutoff::Time);
                return Flow::Stop;
            }
            let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            let text = String::from_utf8_lossy(bytes);
            let Some(found) = self.pattern.find(&text) else {
                continue;
            };
            if self.lines.len() == self.max_results {
                self.cutoff = Some(Cutoff::Results);
                return Flow::Stop;
            }
            self.lines.push(format!(
                "{shown}:{number}: {}",
                excerpt(&text, found.start())
            ));
        }
        Flow::Continue
    }

    fn render(self) -> String {
        let binary = match self.binary {
            0 => String::new(),
            n => format!(", {n} binary skipped"),
        };
        let files = match self.files {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        let note = match self.cutoff {
            None => None,
            Some(Cutoff::Results) => Some(format!(
                "[stopped after {} matches; narrow the pattern, path or glob, or raise \
                 max_results]",
                self.max_results
            )),
            Some(Cutoff::Time) => Some(format!(
                "[search stopped after {} s, results are incomplete ({files} searched{binary}); \
                 narrow the path or glob]",
                SEARCH_BUDGET.as_secs()
            )),
        };
        if self.lines.is_empty() {
            return note.unwrap_or_else(|| format!("no matches ({files} searched{binary})"));
        }
        let mut text = self.lines.join("\n");
        if let Some(note) = note {
            text.push('\n');
            text.push_str(&note);
        }
        text
    }
}

/// A matching line as shown: whole when short, else `MAX_MATCH_CHARS` characters starting a
/// little before the match, with `…` where it was cut.
fn excerpt(line: &str, match_start: usize) -> String {
    if line.chars().count() <= MAX_MATCH_CHARS {
        return line.to_owned();
    }
    let before = line[..match_start].chars().count();
    let first = before.saturating_sub(MAX_MATCH_CHARS / 4);
    let shown: String = line.chars().skip(first).take(MAX_MATCH_CHARS).collect();
    let cut_end = first + MAX_MATCH_CHARS < line.chars().count();
    format!(
        "{}{shown}{}",
        if first > 0 { "…" } else { "" },
        if cut_end { "…" } else { "" }
    )
}

/// A file-name glob: `*` and `?` within one path component, `**` across folders, `[abc]`,
/// `[!abc]` and `{a,b}`. Without a `/` it matches the file name, with one the relative path.
pub(super) struct Glob {
    regex: Regex,
    whole_path: bool,
}

impl Glob {
    fn new(glob: &str) -> Result<Glob, ToolError> {
        let bad = |detail: &str| ToolError::BadPattern {
            what: "glob",
            detail: format!("{glob:?}: {detail}"),
        };
        let chars: Vec<char> = glob.chars().collect();
        let mut re = String::from("^");
        let mut open_braces = 0usize;
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    if chars.get(i + 2) == Some(&'/') {
                        // `**/`: any number of folders, none included.
                        re.push_str("(?:.*/)?");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '{' => {
                    open_braces += 1;
                    re.push_str("(?:");
                }
                '}' if open_braces > 0 => {
                    open_braces -= 1;
                    re.push(')');
                }
                ',' if open_braces > 0 => re.push('|'),
                '[' => {
                    let Some(len) = chars[i + 1..].iter().skip(1).position(|&c| c == ']') else {
                        return Err(bad("unclosed ["));
                    };
                    let class = &chars[i + 1..i + 2 + len];
                    re.push('[');
                    let members = match class.first() {
                        Some('!' | '^') => {
                            re.push('^');
                            &class[1..]
                        }
                        _ => class,
                    };
                    for &c in members {
                        // `-` keeps its range meaning; other punctuation is literal.
                        if c.is_ascii_punctuation() && c != '-' {
                            re.push('\\');
                        }
                        re.push(c);
                    }
                    re.push(']');
                    i += len + 3;
                    continue;
                }
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
            i += 1;
        }
        if open_braces > 0 {
            return Err(bad("unclosed {"));
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| bad(&e.to_string()))?;
        Ok(Glob {
            regex,
            whole_path: glob.contains('/'),
        })
    }

    fn matches(&self, relative: &Path) -> bool {
        let target = if self.whole_path {
            relative.to_string_lossy()
        } else {
            relative
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        };
        self.regex.is_match(&target)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        let table: [(&str, &str, bool); 18] = [
            ("*.rs", "src/main.rs", true),
            ("*.rs", "main.rs", true),
            ("*.rs", "main.rsx", false),
            ("*.{md,txt}", "docs/a.txt", true),
            ("*.{md,txt}", "docs/a.md", true),
            ("*.{md,txt}", "docs/a.rs", false),
            ("src/**/*.py", "src/a.py", true),
            ("src/**/*.py", "src/x/y/a.py", true),
            ("src/**/*.py", "lib/a.py", false),
            ("src/*.py", "src/x/a.py", false),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file10.txt", false),
            ("[ab].txt", "a.txt", true),
            ("[!ab].txt", "a.txt", false),
            ("[!ab].txt", "c.txt", true),
            ("[a-c].txt", "b.txt", true),
            ("a+b(1).txt", "a+b(1).txt", true),
            ("**", "any/thing", true),
        ];
        for (glob, path, want) in table {
            assert_eq!(
                Glob::new(glob).unwrap().matches(Path::new(path)),
                want,
                "{glob} {path}"
            );
        }
        for bad in ["{a,b", "[ab"] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn excerpts() {
        assert_eq!(excerpt("short line", 0), "short line");
        let long = format!("{}NEEDLE{}", "a".repeat(500), "b".repeat(500));
        let shown = excerpt(&long, 500);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert!(shown.contains("NEEDLE"));
        assert_eq!(shown.chars().count(), MAX_MATCH_CHARS + 2);
        let start = format!("NEEDLE{}", "é".repeat(400));
        let shown = excerpt(&start, 0);
        assert!(shown.starts_with("NEEDLE") && shown.ends_with('…'));
    }

    #[test]
    fn shown_paths_are_what_the_tools_take() {
        let table = [
            (Area::Workspace, "", "."),
            (Area::Workspace, "a/b.txt", "a/b.txt"),
            (Area::Agent, "", "agent"),
            (Area::Agent, "skills/x", "agent/skills/x"),
            (Area::Inbound, "msg-1-2/a.pdf", "inbound/msg-1-2/a.pdf"),
        ];
        for (area, relative, want) in table {
            assert_eq!(shown_path(area, Path::new(relative)), want);
        }
    }
}
