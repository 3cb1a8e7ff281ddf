//! Opens paths below a root folder through directory descriptors, so that no symbolic link,
//! whenever it appears, leads out of the root. Owns the descriptor-relative lookup and the thin
//! `*at` system-call wrappers; which paths are allowed at all, and the messages the model reads,
//! are `paths.rs`'s and the tools'.
//!
//! `paths.rs` checks a path by name; a folder in it could be swapped for a link between that
//! check and the open (a concurrent `run_bash`). So the tools open nothing by path: the root is
//! opened once, and every later step is relative to a descriptor already held.
//! - The folders of a path are resolved by the kernel with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)`, which follows a link only while it stays below the root and fails
//!   with EXDEV otherwise.
//! - Where the kernel cannot (no `openat2` before Linux 5.6, or a seccomp filter that predates
//!   it) or will not (an absolute link, which `RESOLVE_BENEATH` refuses even when it points
//!   inside), [`Lookup::Walk`] does the same one component at a time with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`, reading each link itself and keeping its targets below
//!   the root.
//! - The last component is opened relative to its folder with `O_NOFOLLOW`: never followed.
//! - Missing folders are made with `mkdirat` in the folder already open, then entered with
//!   `O_NOFOLLOW`; never `create_dir_all` on a path.
//!
//! Links inside the root keep working in the middle of a path (`alias/file` with
//! `alias -> real`), as they always have; `RESOLVE_NO_SYMLINKS` would refuse them.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// How the folders of a path are looked up. The tools use `Kernel`; tests run both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// `openat2(RESOLVE_BENEATH)`, walking where the kernel cannot or will not resolve.
    Kernel,
    /// Always the component walk: what a kernel without `openat2` gets.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the tools always start with the kernel; tests force the walk"
        )
    )]
    Walk,
}

/// Why a lookup below the root failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// A symbolic link (or a `..` in one) leads out of the root. The tools report it as
    /// `PathError::SymlinkEscape`.
    #[error("a symbolic link leads out of the root")]
    Escape,
    /// What the system answered: ENOENT, ENOTDIR, ELOOP (too many links), EACCES, …
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Flags of the folders a lookup passes through. On Linux `O_PATH`: search permission is
/// enough, as for the kernel's own path walk.
#[cfg(target_os = "linux")]
const DIR_FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;
#[cfg(not(target_os = "linux"))]
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

/// Links one lookup follows before giving up with ELOOP: Linux's own limit.
const MAX_LINKS: u32 = 40;

/// An open root folder (the workspace or the agent folder).
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// The root as configured and as canonicalized: an absolute link target below either
    /// names something inside, and is looked up from `fd`, never by its name.
    paths: Vec<PathBuf>,
}

impl Root {
    /// Opens the root itself. Its own path is trusted configuration, so links in it are
    /// followed.
    pub fn open(path: &Path) -> io::Result<Root> {
        let c_path = c_string(path.as_os_str())?;
        // SAFETY: `c_path` is a NUL-terminated string valid for the duration of the call.
        let fd = unsafe { libc::open(c_path.as_ptr(), DIR_FLAGS | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut paths = vec![path.to_owned()];
        paths.extend(std::fs::canonicalize(path).ok().filter(|c| c != path));
        Ok(Root { fd, paths })
    }

    /// The folder `rel` (relative, without `..`), following links only while they stay below
    /// the root.
    pub fn open_dir(&self, rel: &Path, lookup: Lookup) -> Result<OwnedFd, Refusal> {
        if rel.as_os_str().is_empty() {
            return Ok(self.fd.try_clone()?);
        }
        if lookup == Lookup::Kernel
            && let Some(answer) = self.kernel_lookup(rel)
        {
            return answer;
        }
        self.walk(rel)
    }

    /// Like [`Root::open_dir`], making the folders that are missing.
    pub fn create_dir(&self, rel: &Path, lookup: Lookup) -> Result<OwnedFd, Refusal> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|part| match part {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        // The deepest folder that exists, from the full path upwards.
        let mut depth = parts.len();
        let mut dir = loop {
            let prefix: PathBuf = parts[..depth].iter().collect();
            match self.open_dir(&prefix, lookup) {
                Ok(fd) => break fd,
                Err(Refusal::Io(e)) if e.kind() == io::ErrorKind::NotFound && depth > 0 => {
                    depth -= 1;
                }
                Err(e) => return Err(e),
            }
        };
        for name in &parts[depth..] {
            let c_name = c_string(name)?;
            match mkdir_at(dir.as_fd(), &c_name, /*mode*/ 0o777) {
                Ok(()) => {}
                // Made meanwhile, or a dangling link: the open below tells them apart.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            // Made a moment ago, yet possibly replaced since: entered, never followed.
            dir = open_at(
                dir.as_fd(),
                &c_name,
                DIR_FLAGS | libc::O_NOFOLLOW,
                /*mode*/ 0,
            )?;
        }
        Ok(dir)
    }

    /// The folder holding `rel`'s last component, and that component: `(root, ".")` for the
    /// root itself. `create` makes missing folders. The caller opens the component with
    /// `O_NOFOLLOW` (or inspects it with `AT_SYMLINK_NOFOLLOW`).
    pub fn parent(
        &self,
        rel: &Path,
        create: bool,
        lookup: Lookup,
    ) -> Result<(OwnedFd, CString), Refusal> {
        let Some(name) = rel.file_name() else {
            return Ok((self.fd.try_clone()?, c".".to_owned()));
        };
        let folder = rel.parent().unwrap_or(Path::new(""));
        let dir = if create {
            self.create_dir(folder, lookup)?
        } else {
            self.open_dir(folder, lookup)?
        };
        Ok((dir, c_string(name)?))
    }

    /// `openat2` from the root; `None` when the walk must decide instead.
    #[cfg(target_os = "linux")]
    fn kernel_lookup(&self, rel: &Path) -> Option<Result<OwnedFd, Refusal>> {
        let c_rel = match c_string(rel.as_os_str()) {
            Ok(c_rel) => c_rel,
            Err(e) => return Some(Err(e.into())),
        };
        let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        match openat2(self.fd.as_fd(), &c_rel, DIR_FLAGS, resolve) {
            Ok(fd) => Some(Ok(fd)),
            // ENOSYS: Linux before 5.6. EPERM: a seccomp filter that predates openat2.
            // EXDEV: out of the root, or an absolute link, which may well point inside.
            // EAGAIN: a rename raced with a `..`; the walk does not mind.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM | libc::EXDEV | libc::EAGAIN)
                ) =>
            {
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn kernel_lookup(&self, _rel: &Path) -> Option<Result<OwnedFd, Refusal>> {
        None
    }

    /// Resolves `rel` one component at a time from the root: each folder is entered with
    /// `O_NOFOLLOW`, each link read with `readlinkat` and its target resolved the same way,
    /// from the folder that holds it (relative) or from the root (absolute, below the root's
    /// path). A `..` returns to the folder entered before, and never above the root.
    fn walk(&self, rel: &Path) -> Result<OwnedFd, Refusal> {
        let mut pending = Vec::new();
        push_steps(&mut pending, rel);
        // The folders entered below the root, innermost last.
        let mut entered: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(step) = pending.pop() {
            let name = match step {
                Step::Up => {
                    if entered.pop().is_none() {
                        return Err(Refusal::Escape);
                    }
                    continue;
                }
                Step::Enter(name) => c_string(&name)?,
            };
            let here = entered.last().map_or(self.fd.as_fd(), AsFd::as_fd);
            match open_at(here, &name, DIR_FLAGS | libc::O_NOFOLLOW, /*mode*/ 0) {
                Ok(fd) => {
                    entered.push(fd);
                    continue;
                }
                // A link, or not a folder: ELOOP, or ENOTDIR with O_PATH; EMLINK on the BSDs.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOTDIR | libc::EMLINK)
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            let target = match read_link_at(here, &name) {
                Ok(target) => PathBuf::from(target),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR).into());
                }
                Err(e) => return Err(e.into()),
            };
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP).into());
            }
            if target.is_absolute() {
                let inside = self
                    .paths
                    .iter()
                    .find_map(|root| target.strip_prefix(root).ok())
                    .ok_or(Refusal::Escape)?;
                entered.clear();
                push_steps(&mut pending, inside);
            } else {
                push_steps(&mut pending, &target);
            }
        }
        match entered.pop() {
            Some(fd) => Ok(fd),
            None => Ok(self.fd.try_clone()?),
        }
    }
}

/// One step of [`Root::walk`].
enum Step {
    Enter(OsString),
    Up,
}

/// Queues `path`'s steps so that its first component is popped first.
fn push_steps(pending: &mut Vec<Step>, path: &Path) {
    for part in path.components().rev() {
        match part {
            Component::Normal(name) => pending.push(Step::Enter(name.to_owned())),
            Component::ParentDir => pending.push(Step::Up),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

fn c_string(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `openat2(2)` with `how.mode = 0` (no `O_CREAT`).
#[cfg(target_os = "linux")]
fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    /// `struct open_how` of linux/openat2.h; libc's is `#[non_exhaustive]`, so it cannot be
    /// built outside libc.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: u64::from((flags | libc::O_CLOEXEC).cast_unsigned()),
        mode: 0,
        resolve,
    };
    // SAFETY: `dir` is an open descriptor, `path` a NUL-terminated string and `how` an
    // `open_how` of the size passed, all valid for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: `openat2` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)`, close-on-exec; `mode` matters only with `O_CREAT`.
pub(crate) fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::c_uint,
) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both valid for
    // the duration of the call; the mode is the variadic argument O_CREAT requires.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: as in `open_at`.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: as in `open_at`.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fstatat(2)` without following a final link.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as in `open_at`; `stat` is writable memory of the right type.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstatat` succeeded, so it filled `stat`.
    Ok(unsafe { stat.assume_init() })
}

/// `readlinkat(2)`: the target of the link `name` in `dir`, whatever its length.
pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OsString> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: as in `open_at`; `buf` is writable for `buf.len()` bytes.
        let len = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(io::Error::last_os_error());
        };
        if len < buf.len() {
            buf.truncate(len);
            return Ok(OsString::from_vec(buf));
        }
        // Filled to the brim: possibly cut, so again with more room.
        buf.resize(buf.len() * 2, 0);
    }
}

/// The names in the folder `dir` (without `.` and `..`), in no particular order.
pub(crate) fn read_dir_at(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // A descriptor of its own: `fdopendir` takes it over, and `dir` may be an O_PATH one.
    let own = open_at(
        dir,
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        /*mode*/ 0,
    )?
    .into_raw_fd();
    // SAFETY: `own` is an open directory descriptor that the stream now owns.
    let stream = unsafe { libc::fdopendir(own) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: the stream did not take `own` over, so it is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(own) });
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `stream` is an open directory stream used by this thread only. A null entry
        // ends the listing; an error mid-way (EIO) cuts it short, as an unreadable folder
        // shows as an empty one.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: `readdir` returned a valid entry whose `d_name` is NUL-terminated; it is
        // copied before the next call reuses the memory.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: `stream` is open and not used again; closing it closes `own`.
    unsafe { libc::closedir(stream) };
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree {
        _dir: tempfile::TempDir,
        ws: PathBuf,
        outside: PathBuf,
    }

    /// A root with links of every kind, and an outside folder.
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(ws.join("real/deeper")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(ws.join("real/file"), "inside").unwrap();
        std::fs::write(ws.join("real/deeper/mark-deeper"), "").unwrap();
        std::fs::write(ws.join("mark-root"), "").unwrap();
        std::fs::write(outside.join("mark-outside"), "").unwrap();
        symlink("real", ws.join("alias")).unwrap();
        symlink("real/../real/deeper", ws.join("dotted")).unwrap();
        symlink(ws.join("real/deeper"), ws.join("absolute-inside")).unwrap();
        symlink("..", ws.join("real/up")).unwrap();
        symlink("../..", ws.join("real/up-twice")).unwrap();
        symlink(&outside, ws.join("absolute-out")).unwrap();
        symlink("../outside", ws.join("relative-out")).unwrap();
        symlink(ws.join("../outside"), ws.join("absolute-dotted-out")).unwrap();
        symlink("loop-b", ws.join("loop-a")).unwrap();
        symlink("loop-a", ws.join("loop-b")).unwrap();
        symlink("missing", ws.join("dangling")).unwrap();
        Tree {
            ws,
            outside,
            _dir: dir,
        }
    }

    /// What a folder descriptor holds, to tell which folder a lookup reached.
    fn marks(fd: &OwnedFd) -> Vec<String> {
        let mut names: Vec<String> = read_dir_at(fd.as_fd())
            .unwrap()
            .into_iter()
            .map(|n| n.into_string().unwrap())
            .filter(|n| n.starts_with("mark-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn lookups_stay_below_the_root() {
        let t = tree();
        let root = Root::open(&t.ws).unwrap();
        /// (path, the mark of the folder reached, or the error)
        type Want = Result<&'static str, &'static str>;
        let table: [(&str, Want); 16] = [
            ("", Ok("mark-root")),
            ("real/deeper", Ok("mark-deeper")),
            ("alias/deeper", Ok("mark-deeper")),
            ("dotted", Ok("mark-deeper")),
            ("absolute-inside", Ok("mark-deeper")),
            ("real/up", Ok("mark-root")),
            ("alias/up/alias/deeper", Ok("mark-deeper")),
            ("real/up-twice", Err("escape")),
            ("absolute-out", Err("escape")),
            ("relative-out", Err("escape")),
            ("absolute-dotted-out", Err("escape")),
            ("loop-a", Err("ELOOP")),
            ("dangling", Err("ENOENT")),
            ("missing/x", Err("ENOENT")),
            ("real/file", Err("ENOTDIR")),
            ("real/file/x", Err("ENOTDIR")),
        ];
        for lookup in [Lookup::Kernel, Lookup::Walk] {
            for (rel, want) in table {
                let got = match root.open_dir(Path::new(rel), lookup) {
                    Ok(fd) => Ok(marks(&fd).join(",")),
                    Err(Refusal::Escape) => Err("escape".to_owned()),
                    Err(Refusal::Io(e)) => Err(match e.raw_os_error() {
                        Some(libc::ELOOP) => "ELOOP".to_owned(),
                        Some(libc::ENOENT) => "ENOENT".to_owned(),
                        Some(libc::ENOTDIR) => "ENOTDIR".to_owned(),
                        _ => e.to_string(),
                    }),
                };
                assert_eq!(
                    got,
                    want.map(str::to_owned).map_err(str::to_owned),
                    "{lookup:?} {rel:?}"
                );
            }
        }
        assert_eq!(
            std::fs::read_dir(&t.outside).unwrap().count(),
            1,
            "nothing was made outside"
        );
    }

    /// The race itself: a folder passes `paths.rs`'s check, then is replaced by a link to the
    /// outside before the lookup. Nothing is read from or made outside.
    #[test]
    fn a_folder_swapped_for_a_link_is_refused() {
        for lookup in [Lookup::Kernel, Lookup::Walk] {
            let t = tree();
            let root = Root::open(&t.ws).unwrap();
            std::fs::rename(t.ws.join("real"), t.ws.join("was-real")).unwrap();
            symlink(&t.outside, t.ws.join("real")).unwrap();
            for rel in ["real", "real/deeper"] {
                let err = root.open_dir(Path::new(rel), lookup).unwrap_err();
                assert!(matches!(err, Refusal::Escape), "{lookup:?} {rel}: {err:?}");
                let err = root
                    .create_dir(Path::new(&format!("{rel}/new/newer")), lookup)
                    .unwrap_err();
                assert!(matches!(err, Refusal::Escape), "{lookup:?} {rel}: {err:?}");
            }
            let left: Vec<_> = std::fs::read_dir(&t.outside).unwrap().collect();
            assert_eq!(left.len(), 1, "{lookup:?}: nothing was made outside");
        }
    }

    #[test]
    fn missing_folders_are_made_without_following_links() {
        for lookup in [Lookup::Kernel, Lookup::Walk] {
            let t = tree();
            let root = Root::open(&t.ws).unwrap();
            let fd = root
                .create_dir(Path::new("alias/new/newer"), lookup)
                .unwrap();
            assert!(marks(&fd).is_empty());
            assert!(t.ws.join("real/new/newer").is_dir(), "{lookup:?}");
            // Again: everything exists now.
            root.create_dir(Path::new("alias/new/newer"), lookup)
                .unwrap();
            // A dangling link inside is not made into a folder, nor followed.
            let err = root
                .create_dir(Path::new("dangling/x"), lookup)
                .unwrap_err();
            // ENOTDIR: `O_PATH | O_DIRECTORY | O_NOFOLLOW` on a link; ELOOP without O_PATH.
            assert!(
                matches!(&err, Refusal::Io(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))),
                "{lookup:?}: {err:?}"
            );
            assert!(!t.ws.join("missing").exists(), "{lookup:?}");
        }
    }

    #[test]
    fn parents_and_names() {
        let t = tree();
        let root = Root::open(&t.ws).unwrap();
        let (dir, name) = root
            .parent(Path::new("alias/deeper/mark-deeper"), false, Lookup::Walk)
            .unwrap();
        assert_eq!(name.as_c_str(), c"mark-deeper");
        assert_eq!(marks(&dir), ["mark-deeper"]);
        let (dir, name) = root.parent(Path::new(""), false, Lookup::Kernel).unwrap();
        assert_eq!(name.as_c_str(), c".");
        assert_eq!(marks(&dir), ["mark-root"]);
        assert_eq!(
            read_link_at(dir.as_fd(), c"absolute-out").unwrap(),
            t.outside.as_os_str()
        );
        let long = "x".repeat(1000);
        symlink(&long, t.ws.join("long")).unwrap();
        assert_eq!(read_link_at(dir.as_fd(), c"long").unwrap(), *long);
    }
}
