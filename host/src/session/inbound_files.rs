//! Files that arrive with a chat message (photos, documents, voice notes): what a channel says
//! about them, and putting them into the session's `inbound/files/<message dir>/`, where the
//! agent reads them (read-only) as `inbound/<message dir>/<name>`. The channel fetches the bytes
//! through [`FileSource`]; this module owns naming, the size cap, and writing them so that the
//! container can read them whatever the host's umask. Files are only fetched once an agent has
//! taken the message, so a busy group's photos are not downloaded for nothing.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A file a chat message carries, as the channel describes it before fetching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingFile {
    /// `photo`, `document`, `voice`, `audio`, `video`, `animation`.
    pub kind: String,
    /// A file name for it (sanitised again before use).
    pub name: String,
    pub mime: Option<String>,
    /// The size the platform announced, if any.
    pub size: Option<u64>,
    /// The platform's handle for fetching it (Telegram's `file_id`).
    pub source: String,
}

/// Why a file was not stored; told to the agent instead of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("larger than the {limit_mb} MB limit")]
    TooLarge { limit_mb: u64 },
    #[error("could not be downloaded: {0}")]
    Failed(String),
}

/// Where a channel's files come from.
pub trait FileSource: Send + Sync {
    /// Writes the file's bytes to `dest` (a new file), at most `max_bytes`; returns the size.
    fn fetch<'a>(
        &'a self,
        file: &'a IncomingFile,
        dest: &'a Path,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<u64, FetchError>>;
}

/// A file name that is one plain component: no separators, no leading dot, no control
/// characters, at most 120 bytes (keeping the extension).
pub fn safe_name(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return fallback.to_owned();
    }
    if cleaned.len() <= 120 {
        return cleaned.to_owned();
    }
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((s, e)) if e.len() <= 10 && !s.is_empty() => (s, format!(".{e}")),
        _ => (cleaned, String::new()),
    };
    let mut cut = 120 - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// The folder of one message's files: `msg-<chat>-<message>` with anything but letters,
/// digits, `_` and `.` replaced, so it is one safe path component.
pub fn message_dir(platform_id: &str, message_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("msg-{}-{}", clean(platform_id), clean(message_id))
}

/// A file as the agent is told about it (the `files` entries of an inbound row's content).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    pub file: IncomingFile,
    pub name: String,
    pub outcome: Result<u64, FetchError>,
}

impl StoredFile {
    /// `{"kind", "name", "path", "bytes", "mime"}`, or `{"kind", "name", "skipped": why}`.
    pub fn to_json(&self, dir: &str) -> Value {
        let mut v = json!({ "kind": self.file.kind, "name": self.name });
        if let Some(mime) = &self.file.mime {
            v["mime"] = json!(mime);
        }
        match &self.outcome {
            Ok(bytes) => {
                v["path"] = json!(format!("inbound/{dir}/{}", self.name));
                v["bytes"] = json!(bytes);
            }
            Err(e) => v["skipped"] = json!(e.to_string()),
        }
        v
    }
}

/// Fetches `files` into `files_root/<dir>/` (created 0755, files 0644: the container's user
/// reads them through a read-only mount). Names are made unique within the message.
pub async fn fetch_all(
    source: &dyn FileSource,
    files: &[IncomingFile],
    files_root: &Path,
    dir: &str,
    max_bytes: u64,
) -> Vec<StoredFile> {
    let target = files_root.join(dir);
    let mut stored: Vec<StoredFile> = Vec::new();
    for file in files {
        let mut name = safe_name(&file.name, &file.kind);
        let mut n = 1;
        while stored.iter().any(|s| s.name == name) {
            n += 1;
            name = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}-{n}.{ext}"),
                None => format!("{name}-{n}"),
            };
        }
        let outcome = if file.size.is_some_and(|s| s > max_bytes) {
            Err(FetchError::TooLarge {
                limit_mb: max_bytes / (1024 * 1024),
            })
        } else {
            fetch_one(source, file, &target, &name, max_bytes).await
        };
        if let Err(e) = &outcome {
            tracing::warn!(kind = %file.kind, name, "inbound file not stored: {e}");
        }
        stored.push(StoredFile {
            file: file.clone(),
            name,
            outcome,
        });
    }
    stored
}

async fn fetch_one(
    source: &dyn FileSource,
    file: &IncomingFile,
    target: &Path,
    name: &str,
    max_bytes: u64,
) -> Result<u64, FetchError> {
    let io = |e: std::io::Error| FetchError::Failed(format!("cannot store it: {e}"));
    let dir = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
    })
    .await
    .map_err(|e| FetchError::Failed(e.to_string()))?
    .map_err(io)?;
    let partial = target.join(format!(".{name}.part"));
    let _ = std::fs::remove_file(&partial); // left by an interrupted earlier attempt
    let size = source.fetch(file, &partial, max_bytes).await;
    match size {
        Ok(size) => {
            std::fs::rename(&partial, target.join(name)).map_err(io)?;
            Ok(size)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Copies already stored files of a message into another session's inbound folder (a message
/// can reach several agents); hard links when possible.
pub fn copy_stored(
    from_root: &Path,
    to_root: &Path,
    dir: &str,
    files: &[StoredFile],
) -> std::io::Result<()> {
    let target = to_root.join(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&target)?;
    for f in files.iter().filter(|f| f.outcome.is_ok()) {
        let src = from_root.join(dir).join(&f.name);
        let dst = target.join(&f.name);
        if dst.exists() {
            continue;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A new file for a download, readable by the container's user whatever the host's umask.
pub fn create_download(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        let table = [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "_.._etc_passwd"),
            (".bashrc", "bashrc"),
            ("a/b\\c", "a_b_c"),
            ("  ", "document"),
            ("...", "document"),
            ("bell\u{7}.txt", "bell_.txt"),
        ];
        for (name, want) in table {
            assert_eq!(safe_name(name, "document"), want, "{name:?}");
        }
        let long = format!("{}.tar.gz", "x".repeat(300));
        let safe = safe_name(&long, "document");
        assert!(safe.len() <= 120);
        assert!(safe.ends_with(".gz"));
        assert_eq!(message_dir("-100123", "55"), "msg-_100123-55");
    }
}
