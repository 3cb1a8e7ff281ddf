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
//!
//! An [`Attachment`] is the opened, checked file, not its bytes: channels stream it where it
//! goes ([`Attachment::copy_to`], in chunks of [`COPY_CHUNK`]), so a delivery holds a chunk in
//! memory, not the file. The copy counts what it reads against the size that was checked, and
//! a file that grows (or shrinks) meanwhile is refused rather than copied on.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Largest attachment the host will read (Telegram's bot upload limit is 50 MB).
pub const MAX_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;
/// Files one message may carry (Telegram's media groups hold 10).
pub const MAX_ATTACHMENTS: usize = 10;
/// Bytes the files of one message may hold together: what the host holds in memory for one
/// delivery at most.
pub const MAX_MESSAGE_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;

/// What one read of an attachment's copy holds in memory.
pub const COPY_CHUNK: usize = 64 * 1024;

/// One attached file, opened and checked; cheap to clone (the descriptor is shared).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    /// Its size when it was checked: a copy that finds more or fewer bytes is refused.
    pub size: u64,
    file: Arc<File>,
}

impl Attachment {
    /// Streams the file, from its start, into `to`; returns the bytes copied. Refuses
    /// ([`AttachmentError::Changed`]) a file whose size is no longer the one checked: what was
    /// written to `to` by then is the caller's to discard. Blocking.
    pub fn copy_to(&self, to: &mut dyn Write) -> Result<u64, AttachmentError> {
        let io = |e: std::io::Error| AttachmentError::Io {
            name: self.name.clone(),
            error: e.to_string(),
        };
        let mut chunk = vec![0u8; COPY_CHUNK];
        let mut copied = 0u64;
        loop {
            // Positional reads: clones share the descriptor, and each copy starts at 0.
            let n = match self.file.read_at(&mut chunk, copied) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            copied += n as u64;
            if copied > self.size {
                return Err(self.changed());
            }
            to.write_all(&chunk[..n]).map_err(io)?;
        }
        if copied != self.size {
            return Err(self.changed());
        }
        Ok(copied)
    }

    /// A file the host makes itself (the whole text of a reply too long to show), written to
    /// an unlinked temporary file so that channels read it like any other attachment. Blocking.
    pub fn from_bytes(name: String, bytes: &[u8]) -> std::io::Result<Attachment> {
        let mut file = tempfile::tempfile()?;
        file.write_all(bytes)?;
        Ok(Attachment {
            name,
            size: bytes.len() as u64,
            file: Arc::new(file),
        })
    }

    /// The whole file in memory, checked like [`Attachment::copy_to`], for a channel that
    /// uploads from memory; at most [`MAX_MESSAGE_ATTACHMENT_BYTES`] by construction. Blocking.
    pub fn read_all(&self) -> Result<Vec<u8>, AttachmentError> {
        let mut bytes = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        self.copy_to(&mut bytes)?;
        Ok(bytes)
    }

    fn changed(&self) -> AttachmentError {
        AttachmentError::Changed {
            name: self.name.clone(),
            size: self.size,
        }
    }
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
    /// The file's size changed after it was checked (the agent still writes it).
    #[error("attachment {name:?} changed while it was copied (it had {size} bytes when checked)")]
    Changed { name: String, size: u64 },
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

/// Opens the files `names` of one message, each as [`open_attachment`] does, and checks them
/// together: at most [`MAX_ATTACHMENTS`], at most [`MAX_MESSAGE_ATTACHMENT_BYTES`] in all.
/// None is returned unless every file passes.
pub fn open_attachments(
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
        let attachment = open_attachment(outbound_dir, message_id, name)?;
        total = total.saturating_add(attachment.size);
        if total > MAX_MESSAGE_ATTACHMENT_BYTES {
            return Err(AttachmentError::TooLargeTogether {
                size: total,
                limit: MAX_MESSAGE_ATTACHMENT_BYTES,
            });
        }
        opened.push(attachment);
    }
    Ok(opened)
}

/// Opens `outbound_dir/files/<message_id>/<name>` and checks it without reading it,
/// refusing links, hard links, special files and files over [`MAX_ATTACHMENT_BYTES`].
pub fn open_attachment(
    outbound_dir: &Path,
    message_id: &str,
    name: &str,
) -> Result<Attachment, AttachmentError> {
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
    Ok(Attachment {
        name: name.to_owned(),
        size: meta.len(),
        file: Arc::new(file),
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
        let a = open_attachment(&outbound, "out-1", "report.txt").unwrap();
        assert_eq!(a.size, 5);
        let clone = a.clone();
        assert_eq!(a.read_all().unwrap(), b"hello");
        // Every copy starts at the beginning, a clone's too.
        assert_eq!(clone.read_all().unwrap(), b"hello");
        assert_eq!(a.read_all().unwrap(), b"hello");
    }

    #[test]
    fn a_large_file_is_streamed_in_chunks() {
        let (_dir, outbound) = setup();
        let path = outbound.join("files/out-1/big.bin");
        let content: Vec<u8> = (0..(3 * COPY_CHUNK + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let a = open_attachment(&outbound, "out-1", "big.bin").unwrap();
        /// Records the largest single write it was given.
        struct Sink(Vec<u8>, usize);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1 = self.1.max(buf.len());
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Sink(Vec::new(), 0);
        assert_eq!(a.copy_to(&mut sink).unwrap(), content.len() as u64);
        assert!(sink.0 == content, "the copy is the file");
        assert!(sink.1 <= COPY_CHUNK, "{} bytes at once", sink.1);
    }

    #[test]
    fn a_file_that_changes_after_its_check_is_refused() {
        let (_dir, outbound) = setup();
        let path = outbound.join("files/out-1/report.txt");
        let grown = open_attachment(&outbound, "out-1", "report.txt").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![b'x'; 2 * COPY_CHUNK]).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            grown.copy_to(&mut out).err(),
            Some(AttachmentError::Changed {
                name: "report.txt".into(),
                size: 5
            })
        );
        assert!(
            out.len() <= COPY_CHUNK,
            "stopped at the first chunk past the size"
        );
        let shrunk = open_attachment(&outbound, "out-1", "report.txt").unwrap();
        f.set_len(3).unwrap();
        assert!(matches!(
            shrunk.read_all(),
            Err(AttachmentError::Changed { .. })
        ));
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
                    open_attachment(&outbound, id, name),
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
            open_attachment(&outbound, "out-1", "link.txt"),
            Err(AttachmentError::NotRegular(_))
        ));
        // The message folder is a link to a folder outside.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("report.txt"), "top secret").unwrap();
        symlink(&elsewhere, outbound.join("files/out-2")).unwrap();
        assert!(open_attachment(&outbound, "out-2", "report.txt").is_err());
        // The whole files/ folder is swapped for a link (clawside's outbox attack).
        std::fs::rename(outbound.join("files"), dir.path().join("old-files")).unwrap();
        symlink(dir.path().join("old-files"), outbound.join("files")).unwrap();
        assert!(open_attachment(&outbound, "out-1", "report.txt").is_err());
    }

    #[test]
    fn refuses_hard_links_and_too_much_together() {
        let (_dir, outbound) = setup();
        let dir = outbound.join("files/out-1");
        std::fs::hard_link(dir.join("report.txt"), dir.join("again.txt")).unwrap();
        assert_eq!(
            open_attachment(&outbound, "out-1", "report.txt").err(),
            Some(AttachmentError::HardLink("report.txt".into()))
        );
        std::fs::remove_file(dir.join("again.txt")).unwrap();
        let names: Vec<String> = (0..=MAX_ATTACHMENTS).map(|i| format!("f{i}")).collect();
        assert_eq!(
            open_attachments(&outbound, "out-1", &names).err(),
            Some(AttachmentError::TooMany {
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
            open_attachments(&outbound, "out-1", &["a".into(), "b".into()]),
            Err(AttachmentError::TooLargeTogether { .. })
        ));
        let read =
            open_attachments(&outbound, "out-1", &["report.txt".into(), "a".into()]).unwrap();
        assert_eq!(read[0].read_all().unwrap(), b"hello");
        assert_eq!(read[1].size, MAX_MESSAGE_ATTACHMENT_BYTES / 2 + 1);
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
            open_attachment(&outbound, "out-1", "pipe"),
            Err(AttachmentError::NotRegular(_))
        ));
        std::fs::create_dir(outbound.join("files/out-1/dir")).unwrap();
        assert!(open_attachment(&outbound, "out-1", "dir").is_err());
    }
}
