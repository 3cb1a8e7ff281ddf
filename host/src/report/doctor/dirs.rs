//! The data and groups directories: present or creatable, writable, private where they must be,
//! with enough free disk.

use super::*;

/// Whether the host can use `path` (`var` names its setting); `private`: it should be 0700.
pub(super) fn dir_check(name: &str, var: &str, path: &Path, private: bool) -> Check {
    let fix = format!(
        "make {} a directory this user can write (owner and permissions), or point {var} \
         elsewhere",
        path.display()
    );
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => {
            Check::fail(name, format!("{} is not a directory", path.display()), fix)
        }
        Ok(meta) => {
            if let Err(e) = probe_write(path) {
                return Check::fail(
                    name,
                    format!("{} is not writable: {e}", path.display()),
                    fix,
                );
            }
            let mode = meta.permissions().mode() & 0o777;
            let free = free_bytes(path);
            let free_text = free.map_or_else(String::new, |b| format!(", {} free", bytes(b)));
            if private && mode & 0o077 != 0 {
                return Check::warn(
                    name,
                    format!(
                        "{} is writable{free_text}, but other users may read it (mode {mode:o})",
                        path.display()
                    ),
                    format!(
                        "it holds every conversation: `chmod 700 {}` (the host does this at start)",
                        path.display()
                    ),
                );
            }
            if let Some(b) = free.filter(|b| *b < LOW_DISK_BYTES) {
                return Check::warn(
                    name,
                    format!(
                        "{} is writable, but only {} are free",
                        path.display(),
                        bytes(b)
                    ),
                    "free some disk space: conversations and their workspaces live here",
                );
            }
            Check::ok(name, format!("{} is writable{free_text}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match creatable(path) {
            Ok(parent) => Check::ok(
                name,
                format!(
                    "{} does not exist yet; the host creates it (in {}, which is writable)",
                    path.display(),
                    parent.display()
                ),
            ),
            Err(detail) => Check::fail(
                name,
                format!(
                    "{} does not exist and cannot be created: {detail}",
                    path.display()
                ),
                fix,
            ),
        },
        Err(e) => Check::fail(name, format!("{}: {e}", path.display()), fix),
    }
}

/// Whether the agents' folders are private (0700): they hold each agent's memory. `None` when
/// no agent folder exists yet. The host closes loose ones at start; this reports them before.
pub(super) fn agent_folders_check(groups_dir: &Path, agents: &[AgentInfo]) -> Option<Check> {
    let mut found = 0;
    let mut loose = Vec::new();
    for agent in agents {
        let dir = groups_dir.join(&agent.folder);
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        found += 1;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            loose.push(format!("{} (mode {mode:o})", dir.display()));
        }
    }
    if found == 0 {
        return None;
    }
    Some(if loose.is_empty() {
        Check::ok("agent folders", format!("{found} private (mode 700)"))
    } else {
        Check::warn(
            "agent folders",
            format!("other users may read {}", loose.join(", ")),
            "they hold each agent's memory: start the host (it makes agent folders 0700) or \
             `chmod 700` them",
        )
    })
}

/// How much of the disk `DATA_DIR` takes, and how much of that is sessions (`None` when it does
/// not exist yet). Informational: retention (`RETENTION_DAYS`) and compaction keep it in check.
pub(super) fn disk_use_check(data_dir: &Path, retention_days: u32) -> Option<Check> {
    if !data_dir.is_dir() {
        return None;
    }
    let total = tree_bytes(data_dir);
    let sessions = tree_bytes(&data_dir.join("sessions"));
    Some(Check::ok(
        "data dir use",
        format!(
            "{} in {} ({} of it sessions); settled rows are deleted after {retention_days} \
             days (RETENTION_DAYS)",
            bytes(total),
            data_dir.display(),
            bytes(sessions)
        ),
    ))
}

/// Bytes of the regular files under `dir` (symlinks are not followed).
pub(super) fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Creates and removes a file in `dir`: the only sure test of writability (root ignores modes).
pub(super) fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".clawbox-doctor-{}", crate::db::random_id(8)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The nearest existing ancestor of a missing `path`, if it is a writable directory.
pub(super) fn creatable(path: &Path) -> Result<PathBuf, String> {
    let mut current = path.parent();
    while let Some(dir) = current {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                return probe_write(dir)
                    .map(|()| dir.to_path_buf())
                    .map_err(|e| format!("{} is not writable: {e}", dir.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => current = dir.parent(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err("no existing parent directory".to_owned())
}

pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we own; the path is a valid NUL-terminated string.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
}

pub(super) fn bytes(n: u64) -> String {
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= GB {
        format!("{:.1} GB", n / GB)
    } else if n >= MB {
        format!("{:.0} MB", n / MB)
    } else {
        format!("{:.0} KB", n / 1024.0)
    }
}
