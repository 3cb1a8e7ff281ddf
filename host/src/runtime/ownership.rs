//! Who an agent container runs as, and handing it the directories it must write. Owns the
//! uid:gid choice and the `chown`/`chmod` of session and agent directories; which directories
//! are mounted where is `docker.rs`'s business.
//!
//! The runner runs as the uid:gid that owns `DATA_DIR` — normally the host's own user, so
//! nothing needs changing and the files a container writes stay the user's. When that owner is
//! root (a host run as root, as on many servers and CI machines), containers run as the fixed
//! unprivileged [`FALLBACK_UID`]:[`FALLBACK_GID`] instead, and before each start the host, being
//! root, gives that user what the runner must write: the session's `outbound/` and `workspace/`,
//! and the agent folder (`CLAUDE.local.md` is the agent's memory, and skills may be added). The
//! agent's `container.json` is left alone: it is mounted read-only. `inbound/` stays the host's
//! and is made world-readable, which exposes nothing because `DATA_DIR` is mode 0700.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The image's `clawbox` user, used when `DATA_DIR` belongs to root.
pub const FALLBACK_UID: u32 = 10001;
pub const FALLBACK_GID: u32 = 10001;
/// Deeper trees are left as they are (an agent could nest directories to exhaust descriptors).
const MAX_DEPTH: usize = 64;

/// Opens a directory (relative to `parent`, or the process's cwd for an absolute `name`)
/// without following a symlink in its last component.
fn open_dir_nofollow(parent: Option<&OwnedFd>, name: &OsStr) -> std::io::Result<OwnedFd> {
    let cname = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let at = parent.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: openat with a NUL-terminated name; the result is checked before use.
    let fd = unsafe {
        libc::openat(
            at,
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerUser {
    pub uid: u32,
    pub gid: u32,
    /// Whether the host (as root) hands directories over before a start. A non-root host runs
    /// containers as itself, so there is nothing to hand over.
    pub hand_over: bool,
}

impl RunnerUser {
    /// The user for containers of the host that owns `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(data_dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let host_is_root = unsafe { libc::geteuid() } == 0;
        Ok(Self::choose(meta.uid(), meta.gid(), host_is_root))
    }

    fn choose(owner_uid: u32, owner_gid: u32, host_is_root: bool) -> Self {
        let (uid, gid) = if owner_uid == 0 {
            (FALLBACK_UID, FALLBACK_GID)
        } else {
            (owner_uid, owner_gid)
        };
        RunnerUser {
            uid,
            gid,
            hand_over: host_is_root,
        }
    }

    /// `uid:gid`, as Docker's `User` field takes it.
    pub fn docker_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// Makes `root` and everything below it owned by the runner, without following symlinks
    /// (a link is re-owned itself, never its target) and without touching the top-level
    /// entries named in `skip`. Files with more than one hard link are skipped too: one could
    /// be a link to a host file outside the tree (planted while the unisolated process runtime
    /// was in use). Returns how many entries changed owner.
    ///
    /// The walk holds a descriptor per directory and works relative to it (`openat` with
    /// `O_NOFOLLOW`, `fchownat` with `AT_SYMLINK_NOFOLLOW`): the agent folder is writable by
    /// other running containers of the same agent, and a path-based walk could be raced into
    /// following a directory swapped for a symlink to `/etc` — while running as root.
    pub fn hand_over_tree(&self, root: &Path, skip: &[&str]) -> std::io::Result<usize> {
        if !self.hand_over {
            return Ok(0);
        }
        let dir = open_dir_nofollow(None, root.as_os_str())?;
        let mut changed = 0;
        // SAFETY: a plain C struct, for which all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor we own into a properly sized struct.
        if unsafe { libc::fstat(dir.as_raw_fd(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if st.st_uid != self.uid || st.st_gid != self.gid {
            // SAFETY: fchown on a descriptor we own.
            if unsafe { libc::fchown(dir.as_raw_fd(), self.uid, self.gid) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            changed += 1;
        }
        self.hand_over_below(&dir, skip, /*depth*/ 0, &mut changed)?;
        Ok(changed)
    }

    fn hand_over_below(
        &self,
        dir: &OwnedFd,
        skip: &[&str],
        depth: usize,
        changed: &mut usize,
    ) -> std::io::Result<()> {
        if depth >= MAX_DEPTH {
            tracing::warn!("not re-owning below {MAX_DEPTH} nested directories");
            return Ok(());
        }
        // The names, read through the descriptor (not the path, which may have been swapped).
        let listing = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
        let names: Vec<std::ffi::OsString> = std::fs::read_dir(&listing)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        for name in names {
            if skip.iter().any(|s| name == *s) {
                continue;
            }
            let Ok(cname) = CString::new(name.as_bytes()) else {
                continue;
            };
            // SAFETY: a plain C struct, for which all zeroes is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstatat relative to a descriptor we own, with a NUL-terminated name,
            // into a properly sized struct.
            let rc = unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::NotFound {
                    continue; // removed meanwhile
                }
                return Err(e);
            }
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFREG && st.st_nlink > 1 {
                tracing::warn!(file = ?name, "not re-owning a file with several hard links");
                continue;
            }
            if st.st_uid != self.uid || st.st_gid != self.gid {
                // SAFETY: as above; AT_SYMLINK_NOFOLLOW re-owns a symlink itself.
                let rc = unsafe {
                    libc::fchownat(
                        dir.as_raw_fd(),
                        cname.as_ptr(),
                        self.uid,
                        self.gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::NotFound {
                        continue;
                    }
                    return Err(e);
                }
                *changed += 1;
            }
            if kind == libc::S_IFDIR {
                match open_dir_nofollow(Some(dir), &name) {
                    Ok(sub) => self.hand_over_below(&sub, &[], depth + 1, changed)?,
                    // Swapped for something else (a symlink: ELOOP) or removed meanwhile.
                    Err(_) => continue,
                }
            }
        }
        Ok(())
    }

    /// Lets the runner read `root` and everything below it (directories `o+rx`, files `o+r`)
    /// when it is not their owner. Symlinks are left alone.
    pub fn make_readable(&self, root: &Path) -> std::io::Result<()> {
        if !self.hand_over {
            return Ok(());
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let want = if meta.is_dir() {
                0o005
            } else if meta.is_file() {
                0o004
            } else {
                continue;
            };
            let mode = meta.permissions().mode();
            if meta.uid() != self.uid && mode & want != want {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | want))?;
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path)? {
                    stack.push(entry?.path());
                }
            }
        }
        Ok(())
    }

    /// Gives the runner's group access to a socket the host created (the model proxy's), so a
    /// container can connect to it through the group bits.
    pub fn share_socket(&self, socket: &Path) -> std::io::Result<()> {
        if !self.hand_over {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(socket)?;
        if meta.gid() != self.gid {
            std::os::unix::fs::lchown(socket, None, Some(self.gid))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn root_owned_data_means_the_fallback_user() {
        let table = [
            // (owner uid, owner gid, host is root) -> (uid, gid, hand over)
            ((0, 0, true), (FALLBACK_UID, FALLBACK_GID, true)),
            ((1000, 1000, false), (1000, 1000, false)),
            // `sudo clawbox run` on a user's checkout: run as that user, hand over what root made.
            ((1000, 100, true), (1000, 100, true)),
        ];
        for ((owner_uid, owner_gid, root), (uid, gid, hand_over)) in table {
            assert_eq!(
                RunnerUser::choose(owner_uid, owner_gid, root),
                RunnerUser {
                    uid,
                    gid,
                    hand_over
                }
            );
        }
    }

    #[test]
    fn nothing_changes_without_hand_over() {
        let dir = tempfile::tempdir().unwrap();
        let user = RunnerUser {
            uid: 4242,
            gid: 4242,
            hand_over: false,
        };
        assert_eq!(user.hand_over_tree(dir.path(), &[]).unwrap(), 0);
        user.make_readable(dir.path()).unwrap();
    }

    #[test]
    fn hand_over_reowns_the_tree_but_not_links_targets_or_skipped_files() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can give files away; CI and this project's machines run as root
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        std::fs::write(root.join("keep.json"), "{}").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let outside_dir = dir.path().join("outside-dir");
        std::fs::create_dir(&outside_dir).unwrap();
        std::fs::write(outside_dir.join("inner"), "x").unwrap();
        std::os::unix::fs::symlink(&outside_dir, root.join("dirlink")).unwrap();
        std::fs::hard_link(&outside, root.join("hard")).unwrap();
        let user = RunnerUser {
            uid: 4242,
            gid: 4243,
            hand_over: true,
        };
        let keep = root.join("keep.json");
        let changed = user.hand_over_tree(&root, &["keep.json"]).unwrap();
        assert_eq!(changed, 5, "tree, sub, sub/file, link, dirlink");
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&root.join("sub/file")), (4242, 4243));
        assert_eq!(owner(&root.join("link")), (4242, 4243));
        assert_eq!(
            owner(&outside),
            (0, 0),
            "a symlink's target is not re-owned"
        );
        assert_eq!(owner(&outside_dir.join("inner")), (0, 0), "nor followed");
        assert_eq!(owner(&keep), (0, 0));
        assert_eq!(user.hand_over_tree(&root, &["keep.json"]).unwrap(), 0);

        std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o600)).unwrap();
        user.make_readable(&root).unwrap();
        assert_eq!(
            std::fs::metadata(&keep).unwrap().permissions().mode() & 0o777,
            0o604
        );
    }
}
