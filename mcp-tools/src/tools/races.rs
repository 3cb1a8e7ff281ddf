//! The check-then-open race, made deterministic: a path passes `paths.rs`'s check, then a
//! folder in it is replaced by a link to the outside, then the tool opens it. Every tool must
//! refuse and read or write nothing outside, with the kernel's lookup and with the walk that
//! kernels without `openat2` get.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailbox::{InboundDb, Route};
use pretty_assertions::assert_eq;
use regex::Regex;

use super::files::{EditFileArgs, WriteFileArgs, edit_resolved, read_resolved, write_resolved};
use super::search::{Search, grep_resolved, list_resolved};
use super::send_file::{SendFileArgs, send_resolved};
use super::skills::open_agent_skill_at;
use super::{Context, Tools};
use crate::beneath::Lookup;
use crate::config::Config;
use crate::error::ToolError;
use crate::paths::Resolved;

/// A session whose workspace and agent folder hold the same names as a folder outside them,
/// so that a followed link would find something to read or overwrite.
struct Race {
    dir: tempfile::TempDir,
    ctx: Arc<Context>,
}

impl Race {
    fn new() -> Race {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let agent = dir.path().join("agent");
        let outside = dir.path().join("outside");
        for (root, text) in [(&ws, "inside\n"), (&outside, "secret\n")] {
            std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
            std::fs::write(root.join("file"), text).unwrap();
            std::fs::write(root.join("sub/file"), text).unwrap();
            std::fs::write(root.join("sub/deeper/file"), text).unwrap();
        }
        for (root, text) in [(&agent, "inside\n"), (&outside, "secret\n")] {
            std::fs::create_dir_all(root.join("skills/s")).unwrap();
            std::fs::write(root.join("skills/s/SKILL.md"), text).unwrap();
            std::fs::create_dir_all(root.join("s")).unwrap();
            std::fs::write(root.join("s/SKILL.md"), text).unwrap();
            std::fs::write(root.join("SKILL.md"), text).unwrap();
        }
        let config = Config {
            mailbox_dir: dir.path().join("session"),
            workspace: ws,
            agent_dir: agent,
            skills_dir: None,
            timezone: None,
            bash_path: "/usr/bin:/bin".into(),
            bash_lang: "C.UTF-8".into(),
        };
        config.session_paths().create_dirs().unwrap();
        Race {
            ctx: Tools::new(Arc::new(config)).ctx,
            dir,
        }
    }

    /// Gives the session a chat to send to, so that `send_file` gets as far as the open. Not
    /// done for every case: creating the database costs a few fsyncs.
    fn route(&self) {
        InboundDb::open(&self.ctx.session)
            .unwrap()
            .set_routing(&Route::new("telegram", "100"))
            .unwrap();
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Replaces the folder `rel` of the workspace or the agent folder (`agent/…`) by a link to
    /// the outside: absolute, or climbing out with `..`.
    fn swap(&self, rel: &str, relative_link: bool) {
        let (root, rel) = match rel.strip_prefix("agent/") {
            Some(rel) => (&self.ctx.config.agent_dir, rel),
            None => (&self.ctx.config.workspace, rel),
        };
        let folder = root.join(rel);
        std::fs::rename(&folder, folder.with_extension("was")).unwrap();
        let target = if relative_link {
            let depth = Path::new(rel).components().count();
            PathBuf::from("../".repeat(depth)).join("outside")
        } else {
            self.outside()
        };
        symlink(target, &folder).unwrap();
    }

    /// Every file below the outside folder, with its content.
    fn outside_files(&self) -> Vec<(String, String)> {
        fn collect(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    collect(&path, base, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap().display().to_string();
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let mut files = Vec::new();
        collect(&self.outside(), &self.outside(), &mut files);
        files.sort();
        files
    }

    fn attachments(&self) -> usize {
        let files = self.ctx.session.outbound_files();
        std::fs::read_dir(files).map_or(0, Iterator::count)
    }
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Read,
    Write,
    Edit,
    Send,
    List,
    Grep,
    Skill,
}

impl Tool {
    fn run(self, ctx: &Context, resolved: &Resolved, shown: &str, lookup: Lookup) -> String {
        let outcome: Result<String, ToolError> = match self {
            Tool::Read => read_resolved(resolved, shown, 1, 100, lookup),
            Tool::Write => {
                let args = WriteFileArgs {
                    path: shown.to_owned(),
                    content: "pwned\n".to_owned(),
                };
                write_resolved(resolved, &args, lookup)
            }
            Tool::Edit => {
                let args = EditFileArgs {
                    path: shown.to_owned(),
                    old_string: "secret".to_owned(),
                    new_string: "pwned".to_owned(),
                };
                edit_resolved(resolved, args, lookup)
            }
            Tool::Send => {
                let args = SendFileArgs {
                    path: shown.to_owned(),
                    to: None,
                    text: None,
                    filename: None,
                };
                send_resolved(ctx, resolved, args, lookup)
            }
            Tool::List => list_resolved(resolved, shown, 5, lookup),
            Tool::Grep => {
                let search = Search::new(Regex::new("secret").unwrap(), None, 100, resolved);
                grep_resolved(resolved, shown.to_owned(), search, lookup)
            }
            Tool::Skill => open_agent_skill_at(resolved, "s", shown, lookup)
                .map(|file| format!("opened: {}", file.is_some())),
        };
        match outcome {
            Ok(answer) => panic!("{self:?} {shown}: not refused: {answer}"),
            Err(err) => err.to_string(),
        }
    }
}

#[test]
fn a_folder_swapped_for_a_link_after_the_check_is_refused() {
    let escapes =
        |area: &str, shown: &str| format!("path escapes {area} through a symbolic link: {shown}");
    let ws = |shown: &str| escapes("the workspace", shown);
    // (folder swapped, tool, path checked before the swap, the answer)
    let table = [
        ("sub", Tool::Read, "sub/file", ws("sub/file")),
        ("sub", Tool::Read, "sub/deeper/file", ws("sub/deeper/file")),
        (
            "sub/deeper",
            Tool::Read,
            "sub/deeper/file",
            ws("sub/deeper/file"),
        ),
        ("sub", Tool::Write, "sub/file", ws("sub/file")),
        (
            "sub/deeper",
            Tool::Write,
            "sub/deeper/file",
            ws("sub/deeper/file"),
        ),
        // Missing folders below the swapped one: none is made, there or outside.
        (
            "sub",
            Tool::Write,
            "sub/new/newer.txt",
            ws("sub/new/newer.txt"),
        ),
        (
            "sub/deeper",
            Tool::Write,
            "sub/deeper/new/newer/x.txt",
            ws("sub/deeper/new/newer/x.txt"),
        ),
        (
            "sub/deeper",
            Tool::Edit,
            "sub/deeper/file",
            ws("sub/deeper/file"),
        ),
        ("sub", Tool::Send, "sub/file", ws("sub/file")),
        (
            "sub/deeper",
            Tool::Send,
            "sub/deeper/file",
            ws("sub/deeper/file"),
        ),
        ("sub", Tool::List, "sub/deeper", ws("sub/deeper")),
        ("sub", Tool::Grep, "sub/deeper", ws("sub/deeper")),
        ("sub", Tool::Grep, "sub/deeper/file", ws("sub/deeper/file")),
        (
            "agent/skills",
            Tool::Skill,
            "agent/skills/s/SKILL.md",
            escapes("the agent folder", "agent/skills/s/SKILL.md"),
        ),
        // The skill folder itself: never followed, wherever it points.
        (
            "agent/skills/s",
            Tool::Skill,
            "agent/skills/s/SKILL.md",
            "agent/skills/s is a symbolic link; refusing to follow it (use the path it points \
             to)"
            .to_owned(),
        ),
    ];
    for lookup in [Lookup::Kernel, Lookup::Walk] {
        for relative_link in [false, true] {
            for (swapped, tool, shown, want) in &table {
                let race = Race::new();
                if matches!(tool, Tool::Send) {
                    race.route();
                }
                let before = race.outside_files();
                let resolved = race.ctx.confinement.resolve(shown).unwrap();
                race.swap(swapped, relative_link);
                let case = format!("{lookup:?}, relative link {relative_link}, {tool:?} {shown}");
                assert_eq!(
                    tool.run(&race.ctx, &resolved, shown, lookup),
                    *want,
                    "{case}"
                );
                assert_eq!(race.outside_files(), before, "{case}: outside changed");
                assert_eq!(race.attachments(), 0, "{case}: an attachment was stored");
            }
        }
    }
}

/// The control: without a swap the same calls succeed, and links inside the root still work
/// in the middle of a path with both lookups.
#[test]
fn without_a_swap_the_same_calls_succeed() {
    for lookup in [Lookup::Kernel, Lookup::Walk] {
        let race = Race::new();
        let ws = &race.ctx.config.workspace;
        symlink("sub", ws.join("alias")).unwrap();
        symlink(ws.join("sub"), ws.join("absolute-alias")).unwrap();
        for shown in [
            "sub/deeper/file",
            "alias/deeper/file",
            "absolute-alias/file",
        ] {
            let resolved = race.ctx.confinement.resolve(shown).unwrap();
            assert_eq!(
                read_resolved(&resolved, shown, 1, 100, lookup).unwrap(),
                "     1\tinside\n",
                "{lookup:?} {shown}"
            );
        }
        let shown = "alias/new/newer/x.txt";
        let resolved = race.ctx.confinement.resolve(shown).unwrap();
        let args = WriteFileArgs {
            path: shown.to_owned(),
            content: "made\n".to_owned(),
        };
        write_resolved(&resolved, &args, lookup).unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.join("sub/new/newer/x.txt")).unwrap(),
            "made\n"
        );
        race.route();
        let shown = "sub/file";
        let resolved = race.ctx.confinement.resolve(shown).unwrap();
        let args = SendFileArgs {
            path: shown.to_owned(),
            to: None,
            text: None,
            filename: None,
        };
        let sent = send_resolved(&race.ctx, &resolved, args, lookup).unwrap();
        assert!(sent.starts_with("sent file (id "), "{sent}");
        assert_eq!(race.attachments(), 1);
        let shown = "agent/skills/s/SKILL.md";
        let resolved = race.ctx.confinement.resolve(shown).unwrap();
        assert!(
            open_agent_skill_at(&resolved, "s", shown, lookup)
                .unwrap()
                .is_some()
        );
    }
}
