//! Reading the files a runner attached to an outbound message
//! (`outbound/files/<message id>/<name>`) without letting the runner point the host anywhere
//! else. The runner owns that tree and can swap any part of it for a symlink at any moment, so
//! every component is opened relative to the already-opened parent with `O_NOFOLLOW`: a link
//! anywhere on the way is refused, and nothing is checked by path and then opened by path.
//! The host only reads here; it never deletes through the runner's tree.
//!
//! One row may not make the host copy more than it could send: every file of a message is
//! opened and checked (regular, one link, its size) before any is read, the message carries at
//! most [`MAX_ATTACHMENTS`] files and [`MAX_MESSAGE_ATTACHMENT_BYTES`] together. A file with
//! several hard links is refused: listed under each of its names, one 50 MB file was read and
//! copied twenty times.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Largest attachment the host will read (Telegram's bot upload limit is 50 MB).
pub const MAX_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;
/// Files one message may carry (Telegram's media groups hold 10).
pub const MAX_ATTACHMENTS: usize = 10;
/// Bytes the files of one message may hold together: what the host holds in memory for one
/// delivery at most.
pub const MAX_MESSAGE_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachmentError {
    /// The name is not a single plain file name.
    #[error("unsafe attachment name {0:?}")]
    UnsafeName(String),
    /// A component is a symlink, or the file is not a regular file.
    #[error("attachment {0:?} is not a regular file inside the message's folder")]
    NotRegular(String),
    #[error("attachment {name:?} is {size} bytes; the limit is {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    /// The file has other names too (hard links): one file listed many times would be copied
    /// many times.
    #[error("attachment {0:?} is a hard link (the same file under several names)")]
    HardLink(String),
    #[error("{count} files attached; a message may carry at most {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("the attached files hold {size} bytes in total; a message may carry at most {limit}")]
    TooLargeTogether { size: u64, limit: u64 },
    #[error("cannot read attachment {name:?}: {error}")]
    Io { name: String, error: String },
}

/// A single path component that cannot name a parent, a hidden file, or another directory.
fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

fn open_at(dir: Option<&OwnedFd>, path: &Path, name: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(if dir.is_some() {
        name.as_bytes().to_vec()
    } else {
        path.as_os_str().as_encoded_bytes().to_vec()
    })
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let base = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: openat with a valid NUL-terminated path and a live directory descriptor (or
    // AT_FDCWD); the returned descriptor is owned by us from here on.
    let fd = unsafe { libc::openat(base, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the files `names` of one message, each as [`read_attachment`] does, after checking
/// them all: at most [`MAX_ATTACHMENTS`], at most [`MAX_MESSAGE_ATTACHMENT_BYTES`] together.
/// Nothing is read unless every file passes.
pub fn read_attachments(
    outbound_dir: &Path,
    message_id: &str,
    names: &[String],
) -> Result<Vec<Attachment>, AttachmentError> {
    if names.len() > MAX_ATTACHMENTS {
        return Err(AttachmentError::TooMany {
            count: names.len(),
            limit: MAX_ATTACHMENTS,
        });
    }
    let mut opened = Vec::with_capacity(names.len());
    let mut total = 0u64;
    for name in names {
        let (file, size) = open_attachment(outbound_dir, message_id, name)?;
        total = total.saturating_add(size);
        if total > MAX_MESSAGE_ATTACHMENT_BYTES {
            return Err(AttachmentError::TooLargeTogether {
                size: total,
                limit: MAX_MESSAGE_ATTACHMENT_BYTES,
            });
        }
        opened.push((name, file, size));
    }
    opened
        .into_iter()
        .map(|(name, file, size)| read_opened(name, file, size))
        .collect()
}

/// Reads `outbound_dir/files/<message_id>/<name>`, refusing links, hard links and special
/// files.
pub fn read_attachment(
    outbound_dir: &Path,
    message_id: &str,
    name: &str,
) -> Result<Attachment, AttachmentError> {
    let (file, size) = open_attachment(outbound_dir, message_id, name)?;
    read_opened(name, file, size)
}

/// Opens one attachment and checks it without reading it; returns it with its size.
fn open_attachment(
    outbound_dir: &Path,
    message_id: &str,
    name: &str,
) -> Result<(File, u64), AttachmentError> {
    if !safe_component(name) {
        return Err(AttachmentError::UnsafeName(name.to_owned()));
    }
    if !safe_component(message_id) {
        return Err(AttachmentError::UnsafeName(message_id.to_owned()));
    }
    let refused = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => AttachmentError::NotRegular(name.to_owned()),
        _ => AttachmentError::Io {
            name: name.to_owned(),
            error: e.to_string(),
        },
    };
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let outbound = open_at(None, outbound_dir, "", dir_flags).map_err(refused)?;
    let files = open_at(Some(&outbound), outbound_dir, "files", dir_flags).map_err(refused)?;
    let message = open_at(Some(&files), outbound_dir, message_id, dir_flags).map_err(refused)?;
    // O_NONBLOCK: a FIFO planted under the name must not hang the host.
    let fd = open_at(
        Some(&message),
        outbound_dir,
        name,
        libc::O_RDONLY | libc::O_NONBLOCK,
    )
    .map_err(refused)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(refused)?;
    if !meta.file_type().is_file() {
        return Err(AttachmentError::NotRegular(name.to_owned()));
    }
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        return Err(AttachmentError::HardLink(name.to_owned()));
    }
    if meta.len() > MAX_ATTACHMENT_BYTES {
        return Err(AttachmentError::TooLarge {
            name: name.to_owned(),
            size: meta.len(),
            limit: MAX_ATTACHMENT_BYTES,
        });
    }
    Ok((file, meta.len()))
}

/// Reads an opened attachment of `size` bytes; a file that grew since it was checked is
/// refused rather than read on.
fn read_opened(name: &str, mut file: File, size: u64) -> Result<Attachment, AttachmentError> {
    let mut bytes = Vec::with_capacity(size as usize);
    file.by_ref()
        .take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| AttachmentError::Io {
            name: name.to_owned(),
            error: e.to_string(),
        })?;
    if bytes.len() as u64 > size {
        return Err(AttachmentError::TooLarge {
            name: name.to_owned(),
            size: bytes.len() as u64,
            limit: size,
        });
    }
    Ok(Attachment {
        name: name.to_owned(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let outbound = dir.path().join("outbound");
        std::fs::create_dir_all(outbound.join("files/out-1")).unwrap();
        std::fs::write(outbound.join("files/out-1/report.txt"), "hello").unwrap();
        (dir, outbound)
    }

    #[test]
    fn reads_a_regular_file() {
        let (_dir, outbound) = setup();
        let a = read_attachment(&outbound, "out-1", "report.txt").unwrap();
        assert_eq!(a.bytes, b"hello");
    }

    #[test]
    fn refuses_unsafe_names() {
        let (_dir, outbound) = setup();
        for (id, name) in [
            ("out-1", "../out-1/report.txt"),
            ("out-1", ".hidden"),
            ("..", "passwd"),
            ("out-1", "a/b"),
            ("out-1", ""),
        ] {
            assert!(
                matches!(
                    read_attachment(&outbound, id, name),
                    Err(AttachmentError::UnsafeName(_))
                ),
                "{id}/{name}"
            );
        }
    }

    #[test]
    fn refuses_links_at_every_level() {
        let (dir, outbound) = setup();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "top secret").unwrap();
        // The file itself is a link.
        symlink(&secret, outbound.join("files/out-1/link.txt")).unwrap();
        assert!(matches!(
            read_attachment(&outbound, "out-1", "link.txt"),
            Err(AttachmentError::NotRegular(_))
        ));
        // The message folder is a link to a folder outside.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("report.txt"), "top secret").unwrap();
        symlink(&elsewhere, outbound.join("files/out-2")).unwrap();
        assert!(read_attachment(&outbound, "out-2", "report.txt").is_err());
        // The whole files/ folder is swapped for a link (clawside's outbox attack).
        std::fs::rename(outbound.join("files"), dir.path().join("old-files")).unwrap();
        symlink(dir.path().join("old-files"), outbound.join("files")).unwrap();
        assert!(read_attachment(&outbound, "out-1", "report.txt").is_err());
    }

    #[test]
    fn refuses_hard_links_and_too_much_together() {
        let (_dir, outbound) = setup();
        let dir = outbound.join("files/out-1");
        std::fs::hard_link(dir.join("report.txt"), dir.join("again.txt")).unwrap();
        assert_eq!(
            read_attachment(&outbound, "out-1", "report.txt"),
            Err(AttachmentError::HardLink("report.txt".into()))
        );
        std::fs::remove_file(dir.join("again.txt")).unwrap();
        let names: Vec<String> = (0..=MAX_ATTACHMENTS).map(|i| format!("f{i}")).collect();
        assert_eq!(
            read_attachments(&outbound, "out-1", &names),
            Err(AttachmentError::TooMany {
                count: MAX_ATTACHMENTS + 1,
                limit: MAX_ATTACHMENTS
            })
        );
        for name in ["a", "b"] {
            std::fs::File::create(dir.join(name))
                .unwrap()
                .set_len(MAX_MESSAGE_ATTACHMENT_BYTES / 2 + 1)
                .unwrap();
        }
        assert!(matches!(
            read_attachments(&outbound, "out-1", &["a".into(), "b".into()]),
            Err(AttachmentError::TooLargeTogether { .. })
        ));
        let read =
            read_attachments(&outbound, "out-1", &["report.txt".into(), "a".into()]).unwrap();
        assert_eq!(read[0].bytes, b"hello");
        assert_eq!(
            read[1].bytes.len() as u64,
            MAX_MESSAGE_ATTACHMENT_BYTES / 2 + 1
        );
    }

    #[test]
    fn refuses_special_files() {
        let (_dir, outbound) = setup();
        let fifo = CString::new(
            outbound
                .join("files/out-1/pipe")
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
        )
        .unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_attachment(&outbound, "out-1", "pipe"),
            Err(AttachmentError::NotRegular(_))
        ));
        std::fs::create_dir(outbound.join("files/out-1/dir")).unwrap();
        assert!(read_attachment(&outbound, "out-1", "dir").is_err());
    }
}
