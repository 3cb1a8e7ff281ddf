//! The heartbeat file `outbound/heartbeat`: the runner rewrites it on a timer for as long as it
//! runs; the host reads its mtime to decide whether a claim is stuck.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::SystemTime;

use crate::{Error, Result};

/// Marks the runner alive now (creates the file if needed).
pub fn touch(path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        action: "touch heartbeat",
        path: path.to_path_buf(),
        source,
    };
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    file.set_modified(SystemTime::now()).map_err(io)
}

/// When the runner last marked itself alive; `None` if it never did.
pub fn last_beat(path: &Path) -> Option<SystemTime> {
    // A missing or unreadable file means "no beat yet": the host then judges by claim age.
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn touch_advances_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heartbeat");
        assert!(last_beat(&path).is_none());
        touch(&path).unwrap();
        let first = last_beat(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        touch(&path).unwrap();
        assert!(last_beat(&path).unwrap() > first);
    }
}
