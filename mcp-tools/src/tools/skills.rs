//! `load_skill`: the full `SKILL.md` of one skill, from the agent folder
//! (`agent/skills/<name>/SKILL.md`) or the built-in skills (`CLAWBOX_SKILLS_DIR/<name>/SKILL.md`);
//! an agent skill overrides a built-in one of the same name. Owns name validation and the
//! lookup; which skills are inlined into the system prompt, and the index of the others, are
//! agent-runner's.
//!
//! The agent folder is writable by the agent, so its skills are read under the file tools'
//! rules (confined, opened below the agent folder by descriptor, the skill folder and its
//! `SKILL.md` never followed). The built-in folder comes with the image or the install and is
//! trusted like the binary.

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::files::{open_in, open_root, refused};
use super::{Context, Tools};
use crate::beneath::{Lookup, Refusal, open_at, stat_at};
use crate::error::{ToolError, tool_result};
use crate::paths::{PathError, Resolved};

const SKILL_FILE: &str = "SKILL.md";
/// [`SKILL_FILE`], for `openat`.
const SKILL_FILE_C: &CStr = c"SKILL.md";
/// Skill names are folder names: short, lowercase, no path syntax.
const MAX_NAME_CHARS: usize = 64;
/// A bigger `SKILL.md` is refused: agent-runner leaves such a skill out of the prompt and its
/// index with the same limit, so both sides agree on which skills exist.
const MAX_SKILL_BYTES: u64 = 64 * 1024;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LoadSkillArgs {
    /// The skill's name, as listed in the skills index of your instructions (e.g. `welcome`).
    pub name: String,
}

#[tool_router(router = skill_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Load the full instructions of a skill listed in your instructions' skills \
                       index, and follow them. Returns the skill's SKILL.md. An unknown name \
                       returns the list of available skills.",
        annotations(read_only_hint = true)
    )]
    async fn load_skill(&self, Parameters(args): Parameters<LoadSkillArgs>) -> CallToolResult {
        tool_result("load_skill", load_skill(self.ctx.clone(), args).await)
    }
}

async fn load_skill(ctx: Arc<Context>, args: LoadSkillArgs) -> Result<String, ToolError> {
    let name = args.name.trim().to_owned();
    if !valid_name(&name) {
        return Err(ToolError::BadSkillName { name: args.name });
    }
    tokio::task::spawn_blocking(move || {
        if let Some(file) = open_agent_skill(&ctx, &name, Lookup::Kernel)? {
            tracing::debug!(skill = %name, "loading the agent's skill");
            return read_skill(file, &name);
        }
        if let Some(dir) = &ctx.config.skills_dir
            && let Some(file) = open_builtin_skill(dir, &name)?
        {
            tracing::debug!(skill = %name, "loading a built-in skill");
            return read_skill(file, &name);
        }
        Err(ToolError::UnknownSkill {
            name,
            available: available(&ctx),
        })
    })
    .await?
}

/// `[a-z0-9_-]`, 1–64 characters: a folder name that cannot leave `skills/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// The agent's `skills/<name>/SKILL.md`, read like `read_file` reads `agent/…`; `None` when
/// the agent has no such skill (or no agent folder).
fn open_agent_skill(ctx: &Context, name: &str, lookup: Lookup) -> Result<Option<File>, ToolError> {
    let shown = format!("agent/skills/{name}/{SKILL_FILE}");
    let resolved = match ctx.confinement.resolve(&shown) {
        Ok(resolved) => resolved,
        Err(PathError::RootMissing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    open_agent_skill_at(&resolved, name, &shown, lookup)
}

/// [`open_agent_skill`] once `agent/skills/<name>/SKILL.md` (`shown`) passed the checks.
pub(super) fn open_agent_skill_at(
    resolved: &Resolved,
    name: &str,
    shown: &str,
    lookup: Lookup,
) -> Result<Option<File>, ToolError> {
    let root = match open_root(resolved, shown) {
        Ok(root) => root,
        Err(ToolError::Path(PathError::RootMissing { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let absent = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
    };
    let folder = resolved.relative.parent().unwrap_or(Path::new(""));
    let (skills, c_name) = match root.parent(folder, false, lookup) {
        Ok(found) => found,
        Err(Refusal::Io(e)) if absent(&e) => return Ok(None),
        Err(e) => return Err(refused(e, resolved.area, shown)),
    };
    // A linked skill folder is refused, as agent-runner refuses it for the prompt.
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let dir = match open_at(skills.as_fd(), &c_name, flags, /*mode*/ 0) {
        Ok(dir) => dir,
        // With O_DIRECTORY, Linux answers ENOTDIR rather than ELOOP for a link: ask.
        Err(_)
            if stat_at(skills.as_fd(), &c_name)
                .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFLNK) =>
        {
            return Err(ToolError::Symlink {
                path: format!("agent/skills/{name}"),
            });
        }
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(refused(e.into(), resolved.area, shown)),
    };
    match open_in(
        dir.as_fd(),
        SKILL_FILE_C,
        libc::O_RDONLY,
        resolved.area,
        shown,
    ) {
        Ok(file) => Ok(Some(file)),
        Err(ToolError::NotFound { .. }) => Ok(None),
        Err(ToolError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTDIR) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn open_builtin_skill(dir: &Path, name: &str) -> Result<Option<File>, ToolError> {
    let path = dir.join(name).join(SKILL_FILE);
    let shown = || format!("built-in skill {name}");
    match File::open(&path) {
        Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => Ok(Some(file)),
        Ok(_) => Err(ToolError::NotRegularFile { path: shown() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(source) => Err(ToolError::Io {
            action: "open",
            path: shown(),
            source,
        }),
    }
}

fn read_skill(file: File, name: &str) -> Result<String, ToolError> {
    let mut bytes = Vec::new();
    file.take(MAX_SKILL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ToolError::Io {
            action: "read",
            path: format!("skill {name}"),
            source,
        })?;
    if bytes.len() as u64 > MAX_SKILL_BYTES {
        return Err(ToolError::SkillTooLarge {
            name: name.to_owned(),
            limit_kib: MAX_SKILL_BYTES / 1024,
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Names of the skills `load_skill` can load, agent and built-in together, sorted.
fn available(ctx: &Context) -> Vec<String> {
    let agent_skills = ctx
        .confinement
        .root(crate::paths::Area::Agent)
        .join("skills");
    let folders = |dir: &Path, follow: bool| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            // `DirEntry::file_type` does not follow a link: agent skill folders must not be
            // links (see `open_agent_skill`); the built-in ones may.
            .filter(|entry| follow || entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|entry| entry.path().join(SKILL_FILE).is_file())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| valid_name(name))
            .collect()
    };
    let mut names = folders(&agent_skills, false);
    if let Some(dir) = &ctx.config.skills_dir {
        names.extend(folders(dir, true));
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_names() {
        for good in ["welcome", "telegram-formatting", "a_b", "x1"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Welcome",
            "../etc",
            "a/b",
            ".hidden",
            "a b",
            "a.b",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
