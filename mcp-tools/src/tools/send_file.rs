//! `send_file`: copies a workspace file into `outbound/files/<message id>/<name>` and writes the
//! chat row that carries it. Owns the attachment's name and the copy; the route is chosen as
//! for `send_message`, delivery is the host's.
//!
//! The source is confined and opened like every file tool's path (below its root by
//! descriptor, the final component with `O_NOFOLLOW`, see `crate::beneath`); the copy reads
//! from that open file, so a link swapped in after the checks changes nothing. The
//! destination is built with `mkdirat`/`openat` relative to `outbound/`, never following a
//! symlink, and the file is created with `O_EXCL`: whatever the agent placed under
//! `outbound/files/` (e.g. `files -> /`, clawside's §15.1 attack), the copy cannot land
//! anywhere but a fresh directory of ours.
//!
//! Consistency: copy first, row second. A row is never written without its file; when the
//! row cannot be written, the copy is removed again.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use mailbox::{InboundReader, NewOutbound, OutboundDb, OutboundKind};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::files::{Access, open_file};
use super::message::{choose_route, new_message_id};
use super::{Context, Tools};
use crate::beneath::{Lookup, mkdir_at, open_at, unlink_at};
use crate::error::{ToolError, tool_result};
use crate::paths::Resolved;

/// How the folders below `outbound/` are opened: never through a link.
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
/// Largest file `send_file` copies: Telegram's limit for a bot's uploads.
const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// Longest attachment name, in bytes: what common file systems allow for one component.
const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SendFileArgs {
    /// The file to send.
    pub path: String,
    /// A destination name from your context; leave it out for this chat.
    #[serde(default)]
    pub to: Option<String>,
    /// A caption sent with the file. Optional.
    #[serde(default)]
    pub text: Option<String>,
    /// The file name the recipient sees. Default: the file's own name. A plain name: no
    /// folders, not starting with a dot.
    #[serde(default)]
    pub filename: Option<String>,
}

#[tool_router(router = send_file_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Send a file from the workspace (or agent/…) as a chat attachment, with an \
                       optional caption (`text`), to this chat or to another destination \
                       (`to`). Files of at most 50 MB; directories and symbolic links are \
                       refused. `filename` renames the attachment. Returns the message id.",
        annotations(destructive_hint = false, open_world_hint = true)
    )]
    async fn send_file(&self, Parameters(args): Parameters<SendFileArgs>) -> CallToolResult {
        tool_result("send_file", send_file(self.ctx.clone(), args).await)
    }
}

async fn send_file(ctx: Arc<Context>, args: SendFileArgs) -> Result<String, ToolError> {
    if let Some(name) = &args.filename {
        check_filename(name).map_err(|rule| ToolError::BadFilename {
            name: name.clone(),
            rule,
            own_name: false,
        })?;
    }
    let resolved = ctx.confinement.resolve(&args.path)?;
    tokio::task::spawn_blocking(move || send_resolved(&ctx, &resolved, args, Lookup::Kernel))
        .await?
}

/// `send_file` once the filename and the path passed the checks.
pub(super) fn send_resolved(
    ctx: &Context,
    resolved: &Resolved,
    args: SendFileArgs,
    lookup: Lookup,
) -> Result<String, ToolError> {
    let to = args
        .to
        .map(|to| to.trim().to_owned())
        .filter(|to| !to.is_empty());
    let session = &ctx.session;
    // The route first: an unknown destination costs no copy.
    let inbound = InboundReader::open(&session.inbound_db())?;
    let route = choose_route(to.as_deref(), inbound.routing()?, &inbound.destinations()?)?;
    drop(inbound);

    let source = open_file(resolved, &args.path, Access::Read, lookup)?;
    let size = source
        .metadata()
        .map_err(|source| ToolError::Io {
            action: "inspect",
            path: args.path.clone(),
            source,
        })?
        .len();
    let too_large = |size| ToolError::TooLarge {
        path: args.path.clone(),
        size,
        limit: MAX_FILE_BYTES,
    };
    if size > MAX_FILE_BYTES {
        return Err(too_large(size));
    }
    let name = match args.filename {
        Some(name) => name,
        None => {
            let own = resolved
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            check_filename(&own).map_err(|rule| ToolError::BadFilename {
                name: own.clone(),
                rule,
                own_name: true,
            })?;
            own
        }
    };

    let id = new_message_id();
    let stored = store(&session.outbound_dir, &id, &name, source, too_large)?;
    let message = NewOutbound {
        id,
        kind: OutboundKind::Chat,
        in_reply_to: None,
        route,
        content: serde_json::json!({
            "text": args.text.unwrap_or_default(),
            "files": [name],
        }),
    };
    let written =
        OutboundDb::open(session).and_then(|mut db| db.insert_message(&message, Utc::now()));
    let seq = match written {
        Ok(seq) => seq,
        Err(err) => {
            stored.remove();
            return Err(err.into());
        }
    };
    tracing::info!(seq, id = %message.id, file = %name, bytes = stored.bytes, to = ?to, "file written");
    Ok(match to {
        Some(to) => format!("sent {name} to {to} (id {seq})"),
        None => format!("sent {name} (id {seq})"),
    })
}

/// An attachment name is one plain path component the host and the recipient can use as is;
/// the error is the rule it breaks.
fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Err("it is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Err("it must be a plain file name, without / or \\")
    } else if name.contains('\0') {
        Err("it contains a NUL byte")
    } else if name.starts_with('.') {
        Err("it must not start with a dot")
    } else if name.chars().any(char::is_control) {
        Err("it contains control characters")
    } else if name.trim() != name {
        Err("it starts or ends with a space")
    } else {
        Ok(())
    }
}

/// The copy in `outbound/files/<id>/<name>`, with what is needed to take it back.
struct Stored {
    files_dir: OwnedFd,
    message_dir: OwnedFd,
    id: CString,
    name: CString,
    bytes: u64,
}

impl Stored {
    /// Removes the copy and its directory (the row that would have named them was not
    /// written). Failures are only logged: an orphaned folder is never delivered, and the
    /// tool already reports the error that matters.
    fn remove(self) {
        if let Err(e) = unlink_at(self.message_dir.as_fd(), &self.name, 0) {
            tracing::warn!(error = %e, "cannot remove an unsent attachment");
        }
        if let Err(e) = unlink_at(self.files_dir.as_fd(), &self.id, libc::AT_REMOVEDIR) {
            tracing::warn!(error = %e, "cannot remove the folder of an unsent attachment");
        }
    }
}

/// Copies `source` to `<outbound>/files/<id>/<name>` without following any symlink below
/// `outbound/`; on failure leaves nothing behind.
fn store(
    outbound: &Path,
    id: &str,
    name: &str,
    source: File,
    too_large: impl Fn(u64) -> ToolError,
) -> Result<Stored, ToolError> {
    let fail = |action| move |source| ToolError::Attachment { action, source };
    let c_id = CString::new(id).map_err(|e| fail("name its folder")(e.into()))?;
    let c_name = CString::new(name).map_err(|e| fail("name the file")(e.into()))?;
    let outbound_dir: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(outbound)
        .map_err(fail("open the outbound folder"))?
        .into();
    match mkdir_at(outbound_dir.as_fd(), c"files", /*mode*/ 0o755) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("create outbound/files")(e)),
    }
    // ELOOP or ENOTDIR when `files` is a symlink or a file: refused, never followed.
    let files_dir = open_at(outbound_dir.as_fd(), c"files", DIR_FLAGS, /*mode*/ 0)
        .map_err(fail("open outbound/files"))?;
    // A fresh id: an existing entry of that name is refused rather than reused.
    mkdir_at(files_dir.as_fd(), &c_id, /*mode*/ 0o755)
        .map_err(fail("create the message folder"))?;
    let message_dir = match open_at(files_dir.as_fd(), &c_id, DIR_FLAGS, /*mode*/ 0) {
        Ok(fd) => fd,
        Err(e) => {
            // Only an empty directory of ours can be removed here; a swapped-in link is not.
            let _ = unlink_at(files_dir.as_fd(), &c_id, libc::AT_REMOVEDIR);
            return Err(fail("open the message folder")(e));
        }
    };
    let mut stored = Stored {
        files_dir,
        message_dir,
        id: c_id,
        name: c_name,
        bytes: 0,
    };
    match copy_into(&stored, source, &too_large) {
        Ok(bytes) => {
            stored.bytes = bytes;
            Ok(stored)
        }
        Err(e) => {
            stored.remove();
            Err(e)
        }
    }
}

/// Creates the file (exclusively) in the message folder and copies at most `MAX_FILE_BYTES`
/// into it, durably: the host may read it as soon as the row is committed.
fn copy_into(
    stored: &Stored,
    source: File,
    too_large: &impl Fn(u64) -> ToolError,
) -> Result<u64, ToolError> {
    let fail = |action| move |source| ToolError::Attachment { action, source };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut dest = open_at(
        stored.message_dir.as_fd(),
        &stored.name,
        flags,
        /*mode*/ 0o644,
    )
    .map(File::from)
    .map_err(fail("create the copy"))?;
    // One byte over the limit tells a file that grew since it was measured.
    let copied =
        io::copy(&mut source.take(MAX_FILE_BYTES + 1), &mut dest).map_err(fail("copy the file"))?;
    if copied > MAX_FILE_BYTES {
        return Err(too_large(copied));
    }
    dest.sync_all().map_err(fail("flush the copy"))?;
    // The directory entries too, so a crash cannot leave a committed row without its file.
    File::from(
        stored
            .message_dir
            .try_clone()
            .map_err(fail("flush the copy"))?,
    )
    .sync_all()
    .map_err(fail("flush the copy"))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn filename_rules() {
        let long = "a".repeat(256);
        let table = [
            ("report.pdf", None),
            ("Quarterly report (final).pdf", None),
            ("тест.txt", None),
            ("", Some("it is empty")),
            ("  ", Some("it is empty")),
            ("a/b.txt", Some("without / or \\")),
            ("a\\b.txt", Some("without / or \\")),
            ("..", Some("must not start with a dot")),
            (".env", Some("must not start with a dot")),
            ("a\0b", Some("NUL")),
            ("a\nb", Some("control characters")),
            (" a.txt", Some("starts or ends with a space")),
            (long.as_str(), Some("longer than 255 bytes")),
        ];
        for (name, want) in table {
            match (check_filename(name), want) {
                (Ok(()), None) => {}
                (Err(rule), Some(needle)) => assert!(rule.contains(needle), "{name:?}: {rule}"),
                (got, want) => panic!("{name:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn source(dir: &Path, content: &[u8]) -> File {
        let path = dir.join("source");
        std::fs::write(&path, content).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn copies_into_a_fresh_folder() {
        let dir = tempfile::tempdir().unwrap();
        let outbound = dir.path().join("outbound");
        std::fs::create_dir(&outbound).unwrap();
        let stored = store(
            &outbound,
            "out-1",
            "a.txt",
            source(dir.path(), b"hello"),
            |_| unreachable!(),
        )
        .unwrap();
        assert_eq!(stored.bytes, 5);
        assert_eq!(
            std::fs::read(outbound.join("files/out-1/a.txt")).unwrap(),
            b"hello"
        );
        // The same id again: the folder exists, so nothing is overwritten.
        let err = store(
            &outbound,
            "out-1",
            "a.txt",
            source(dir.path(), b"other"),
            |_| unreachable!(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("create the message folder"),
            "{err}"
        );
        stored.remove();
        assert!(!outbound.join("files/out-1").exists());
        assert!(outbound.join("files").is_dir());
    }

    /// clawside's §15.1: `outbound/files` replaced by a link to somewhere else.
    #[test]
    fn a_symlinked_files_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outbound = dir.path().join("outbound");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&outbound).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, outbound.join("files")).unwrap();
        let err = store(
            &outbound,
            "out-2",
            "a.txt",
            source(dir.path(), b"x"),
            |_| unreachable!(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot store the attachment (open outbound/files)"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
