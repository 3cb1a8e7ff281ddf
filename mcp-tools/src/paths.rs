//! Confines the file tools' paths to three areas: the session workspace, the agent folder
//! (reached as `agent/…`), and, read-only, the files people sent with their messages (reached
//! as `inbound/…`; the host writes them, the tools never do). Owns the lexical rules and the symlink check, which exist to tell the
//! model clearly what is wrong with a path; the enforcement is `beneath.rs`'s descriptor-based
//! open, which the tools use for every file and folder.
//!
//! The agent folder is mounted at `/workspace/agent` in a container, so `agent/notes.md` names
//! the same file in both runtimes. `run_bash` is not confined by this module: a shell can reach
//! anything its process can, and the container is its boundary.
//!
//! What is refused, and why:
//! - `..` anywhere: a lexical check is only sound without it, and the model never needs it.
//! - absolute paths outside both roots (`/etc/passwd`).
//! - NUL bytes (the OS would cut the path there).
//! - paths whose deepest existing ancestor canonicalizes outside its root, i.e. that leave
//!   through a symlink (`ln -s /etc etc; read etc/passwd`).
//!
//! This check works on names, so a folder swapped for a link after it (a concurrent `run_bash`)
//! would pass; the open in `beneath.rs` refuses that link, and the tools report it with the
//! same [`PathError::SymlinkEscape`].

use std::path::{Component, Path, PathBuf};

/// Which root a path resolved into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Workspace,
    Agent,
    /// Files that arrived with messages: `<mailbox>/inbound/files`, read-only.
    Inbound,
}

impl Area {
    pub fn describe(self) -> &'static str {
        match self {
            Area::Workspace => "the workspace",
            Area::Agent => "the agent folder",
            Area::Inbound => "the files people sent",
        }
    }

    /// The prefix of relative paths into this area (`""` for the workspace).
    pub fn prefix(self) -> &'static str {
        match self {
            Area::Workspace => "",
            Area::Agent => AGENT_PREFIX,
            Area::Inbound => INBOUND_PREFIX,
        }
    }
}

/// Relative paths whose first component is this name go to the agent folder.
const AGENT_PREFIX: &str = "agent";
/// … and these to the files people sent.
const INBOUND_PREFIX: &str = "inbound";

/// A refused path. The text is shown to the model, so it says what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path escapes {}: {path} (`..` is not allowed in paths)", area.describe())]
    ParentDir { area: Area, path: String },
    #[error(
        "path is outside the workspace and the agent folder: {path} (use a path relative to \
         the workspace, agent/… for the agent folder, or inbound/… for files people sent)"
    )]
    Outside { path: String },
    #[error("path escapes {} through a symbolic link: {path}", area.describe())]
    SymlinkEscape { area: Area, path: String },
    #[error("{} does not exist, so {path} cannot be used", area.describe())]
    RootMissing { area: Area, path: String },
}

/// A path that passed the checks: `path` is the root as configured joined with the relative
/// part (not canonicalized, so messages see the name the model gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub area: Area,
    /// The root as configured; the tools open it, then `relative` below it.
    pub root: PathBuf,
    pub path: PathBuf,
    /// The path relative to its root; empty for the root itself.
    pub relative: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Confinement {
    workspace: PathBuf,
    agent: PathBuf,
    inbound: PathBuf,
}

impl Confinement {
    /// All roots must be absolute (the config guarantees it).
    pub fn new(workspace: &Path, agent: &Path, inbound: &Path) -> Self {
        // `components()` drops `.`, doubled and trailing slashes, so prefix tests are exact.
        Confinement {
            workspace: workspace.components().collect(),
            agent: agent.components().collect(),
            inbound: inbound.components().collect(),
        }
    }

    pub fn root(&self, area: Area) -> &Path {
        match area {
            Area::Workspace => &self.workspace,
            Area::Agent => &self.agent,
            Area::Inbound => &self.inbound,
        }
    }

    /// The lexical step, without touching the file system: which area a path is in and its
    /// part relative to that root.
    pub fn locate(&self, raw: &str) -> Result<(Area, PathBuf), PathError> {
        if raw.trim().is_empty() {
            return Err(PathError::Empty);
        }
        if raw.contains('\0') {
            return Err(PathError::Nul);
        }
        let path = Path::new(raw);
        let (area, rest) = if path.is_absolute() {
            // The longer root first: in a container the agent folder lies inside the workspace.
            let mut roots = [
                (Area::Agent, &self.agent),
                (Area::Inbound, &self.inbound),
                (Area::Workspace, &self.workspace),
            ];
            roots.sort_by_key(|(_, root)| std::cmp::Reverse(root.components().count()));
            roots
                .into_iter()
                .find_map(|(area, root)| Some((area, path.strip_prefix(root).ok()?)))
                .ok_or_else(|| PathError::Outside {
                    path: raw.to_owned(),
                })?
        } else {
            let mut parts = path.components();
            let first = parts.find(|c| *c != Component::CurDir);
            match first {
                Some(Component::Normal(first)) if first == AGENT_PREFIX => {
                    (Area::Agent, parts.as_path())
                }
                Some(Component::Normal(first)) if first == INBOUND_PREFIX => {
                    (Area::Inbound, parts.as_path())
                }
                _ => (Area::Workspace, path),
            }
        };
        let mut relative = PathBuf::new();
        for part in rest.components() {
            match part {
                Component::Normal(name) => relative.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(PathError::ParentDir {
                        area,
                        path: raw.to_owned(),
                    });
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::Outside {
                        path: raw.to_owned(),
                    });
                }
            }
        }
        Ok((area, relative))
    }

    /// The lexical step plus the symlink check: the deepest existing ancestor of the path
    /// (the path itself when it exists) must canonicalize inside the canonical root.
    pub fn resolve(&self, raw: &str) -> Result<Resolved, PathError> {
        let (area, relative) = self.locate(raw)?;
        let root = self.root(area);
        let Ok(canonical_root) = std::fs::canonicalize(root) else {
            return Err(PathError::RootMissing {
                area,
                path: raw.to_owned(),
            });
        };
        let parts: Vec<Component<'_>> = relative.components().collect();
        // From the full path up to the root: the first that canonicalizes is the deepest
        // existing ancestor. Missing components below it are created by us later, as plain
        // directories, or refused by the open (`beneath.rs`) when they are dangling symlinks.
        for depth in (0..=parts.len()).rev() {
            let candidate = root.join(parts[..depth].iter().collect::<PathBuf>());
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            if !real.starts_with(&canonical_root) {
                return Err(PathError::SymlinkEscape {
                    area,
                    path: raw.to_owned(),
                });
            }
            return Ok(Resolved {
                area,
                root: root.to_owned(),
                path: root.join(&relative),
                relative,
            });
        }
        // Not even the root canonicalizes any more: it was removed after the check above.
        Err(PathError::RootMissing {
            area,
            path: raw.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    /// The container layout: the agent folder inside the workspace.
    fn container() -> Confinement {
        Confinement::new(
            Path::new("/workspace"),
            Path::new("/workspace/agent"),
            Path::new("/mailbox/inbound/files"),
        )
    }

    /// The process runtime: the agent folder elsewhere.
    fn process() -> Confinement {
        Confinement::new(
            Path::new("/data/sessions/a/s1/workspace/"),
            Path::new("/data/groups/a"),
            Path::new("/data/sessions/a/s1/inbound/files"),
        )
    }

    #[test]
    fn lexical_rules() {
        use Area::*;
        type Want = Result<(Area, &'static str), &'static str>;
        let table: [(&Confinement, &str, Want); 29] = [
            (&container(), "notes.txt", Ok((Workspace, "notes.txt"))),
            (&container(), "./a/./b.txt", Ok((Workspace, "a/b.txt"))),
            (&container(), "a//b/", Ok((Workspace, "a/b"))),
            (&container(), ".", Ok((Workspace, ""))),
            (&container(), "agent/CLAUDE.md", Ok((Agent, "CLAUDE.md"))),
            (&container(), "./agent/x", Ok((Agent, "x"))),
            (&container(), "agent", Ok((Agent, ""))),
            (&container(), "agents/x", Ok((Workspace, "agents/x"))),
            (
                &container(),
                "inbound/msg-1-2/photo.jpg",
                Ok((Inbound, "msg-1-2/photo.jpg")),
            ),
            (
                &container(),
                "/mailbox/inbound/files/m/x",
                Ok((Inbound, "m/x")),
            ),
            (&container(), "/mailbox/inbound/inbound.db", Err("outside")),
            (
                &container(),
                "inbound/../x",
                Err("escapes the files people sent"),
            ),
            (
                &container(),
                "/workspace/notes.txt",
                Ok((Workspace, "notes.txt")),
            ),
            (&container(), "/workspace", Ok((Workspace, ""))),
            (&container(), "/workspace/agent/x", Ok((Agent, "x"))),
            (&container(), "/workspacex/y", Err("outside")),
            (&container(), "/etc/passwd", Err("outside")),
            (&container(), "/", Err("outside")),
            (&container(), "../x", Err("escapes the workspace")),
            (&container(), "a/../../x", Err("escapes the workspace")),
            (&container(), "a/../b", Err("escapes the workspace")),
            (
                &container(),
                "/workspace/../etc/passwd",
                Err("escapes the workspace"),
            ),
            (&container(), "agent/../x", Err("escapes the agent folder")),
            (&container(), "", Err("empty")),
            (&container(), "a\0b", Err("NUL")),
            (
                &process(),
                "/data/groups/a/skills/x.md",
                Ok((Agent, "skills/x.md")),
            ),
            (
                &process(),
                "/data/sessions/a/s1/workspace/x",
                Ok((Workspace, "x")),
            ),
            (
                &process(),
                "/data/sessions/a/s1/outbound/outbound.db",
                Err("outside"),
            ),
            (
                &process(),
                "/data/sessions/a/s1/inbound/files/m/a.pdf",
                Ok((Inbound, "m/a.pdf")),
            ),
        ];
        for (confinement, raw, want) in table {
            let got = confinement.locate(raw);
            match (got, want) {
                (Ok((area, rel)), Ok((want_area, want_rel))) => {
                    assert_eq!(
                        (area, rel.as_path()),
                        (want_area, Path::new(want_rel)),
                        "{raw:?}"
                    );
                }
                (Err(e), Err(needle)) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{raw:?}: {text}");
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn messages_say_what_and_why() {
        assert_eq!(
            container().locate("../x").unwrap_err().to_string(),
            "path escapes the workspace: ../x (`..` is not allowed in paths)"
        );
        assert!(
            container()
                .locate("/etc/passwd")
                .unwrap_err()
                .to_string()
                .starts_with("path is outside the workspace and the agent folder: /etc/passwd")
        );
    }

    struct Tree {
        _dir: tempfile::TempDir,
        outside: PathBuf,
        confinement: Confinement,
    }

    /// A workspace, an agent folder and an outside directory, with symlinks of every kind.
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let agent = dir.path().join("agent");
        let outside = dir.path().join("outside");
        for d in [&ws, &agent, &outside, &ws.join("sub")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(ws.join("sub/file"), "f").unwrap();
        symlink(&outside, ws.join("out_dir")).unwrap();
        symlink(outside.join("secret"), ws.join("out_file")).unwrap();
        symlink(outside.join("missing"), ws.join("dangling_out")).unwrap();
        symlink(ws.join("sub"), ws.join("in_dir")).unwrap();
        symlink("sub/file", ws.join("in_file")).unwrap();
        symlink(&agent, ws.join("to_agent")).unwrap();
        symlink(&outside, agent.join("out")).unwrap();
        Tree {
            confinement: Confinement::new(&ws, &agent, &dir.path().join("inbound")),
            outside,
            _dir: dir,
        }
    }

    #[test]
    fn symlinks_that_leave_the_root_are_refused() {
        let t = tree();
        let table: [(&str, Result<(), &str>); 14] = [
            ("sub/file", Ok(())),
            ("sub/new/deeper.txt", Ok(())),
            ("new.txt", Ok(())),
            ("in_dir/file", Ok(())),
            // Inside, so it passes here; the open's final-component O_NOFOLLOW refuses it.
            ("in_file", Ok(())),
            // Dangling: nothing to canonicalize; the open refuses it later.
            ("dangling_out", Ok(())),
            ("agent/new.md", Ok(())),
            (
                "out_dir",
                Err("escapes the workspace through a symbolic link"),
            ),
            (
                "out_dir/secret",
                Err("escapes the workspace through a symbolic link"),
            ),
            (
                "out_dir/new/file",
                Err("escapes the workspace through a symbolic link"),
            ),
            (
                "out_file",
                Err("escapes the workspace through a symbolic link"),
            ),
            // The agent folder is outside this workspace, so reaching it by symlink is refused
            // too: each path must stay within its own root.
            (
                "to_agent/x",
                Err("escapes the workspace through a symbolic link"),
            ),
            (
                "agent/out/secret",
                Err("escapes the agent folder through a symbolic link"),
            ),
            ("./out_dir/../sub", Err("`..` is not allowed")),
        ];
        for (raw, want) in table {
            let got = t.confinement.resolve(raw);
            match (got, want) {
                (Ok(r), Ok(())) => {
                    assert!(r.path.starts_with(t.confinement.root(r.area)), "{raw:?}");
                }
                (Err(e), Err(needle)) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{raw:?}: {text}");
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(t.outside.join("secret").exists());
    }

    #[test]
    fn an_absolute_path_through_the_outside_target_is_refused() {
        let t = tree();
        let raw = t.outside.join("secret");
        let err = t.confinement.resolve(raw.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, PathError::Outside { .. }), "{err}");
    }

    #[test]
    fn a_missing_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let c = Confinement::new(
            dir.path(),
            &dir.path().join("no-agent"),
            &dir.path().join("no-inbound"),
        );
        assert_eq!(
            c.resolve("agent/x").unwrap_err().to_string(),
            "the agent folder does not exist, so agent/x cannot be used"
        );
    }
}
