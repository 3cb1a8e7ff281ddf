//! Private files and directories: what clawbox creates for a session or an agent is readable by
//! its owner only (directories 0700, files 0600), whatever the process's umask. A mode given at
//! creation is masked by the umask, so every helper sets the exact mode afterwards too: a umask
//! of 0o277 must not leave a file the owner cannot write, and 0o002 must not leave one others
//! can read.
//!
//! The container's user keeps its access because the host hands it what it must use
//! (`host::runtime::ownership`), never through the "other" bits of these modes.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{ErrorKind, Result};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories clawbox creates for sessions and agents.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files clawbox creates there.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each created one with mode [`DIR_MODE`]. Existing
/// directories are left as they are.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)),
        // Another process created it meanwhile.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a new file with mode [`FILE_MODE`]; fails if it exists.
pub fn create_new(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates `path` empty with mode [`FILE_MODE`] unless it exists: for a SQLite database, whose
/// journal and WAL files SQLite then creates with the database file's mode.
pub fn ensure_file(path: &Path) -> Result<()> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the group and other bits of `path` (not following a symlink); returns whether it
/// changed anything. A missing path is no change.
pub fn tighten(path: &Path) -> Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(false);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode & 0o700))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_and_files_are_private() {
        // The umask is the process's (tests run in parallel), so it is left alone here; the
        // exact modes are set after creation, which is what makes them umask-independent.
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        let file = nested.join("f");
        create_new(&file).unwrap();
        let strict = nested.join("g");
        ensure_file(&strict).unwrap();
        ensure_file(&strict).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&strict), 0o600);
        assert!(create_new(&file).is_err(), "create_new never reuses a file");
    }

    #[test]
    fn tighten_removes_group_and_other_bits_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("agent");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        assert!(tighten(&d).unwrap());
        assert_eq!(mode(&d), 0o700);
        assert!(!tighten(&d).unwrap());
        let f = d.join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o444)).unwrap();
        assert!(tighten(&f).unwrap());
        assert_eq!(mode(&f), 0o400);
        assert!(!tighten(&d.join("missing")).unwrap());
    }
}
