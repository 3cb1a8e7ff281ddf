//! `DATA_DIR/logs/clawbox.log` (the in-process host of `clawbox chat` logs there, out of the
//! terminal's way), size-capped: past [`LOG_CAP_BYTES`] the file becomes `clawbox.log.1`
//! (replacing the previous one) and a new one starts, so the logs never take more than twice the
//! cap (give or take the line that crosses it). Rotation happens only between lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The size at which the log rotates.
pub const LOG_CAP_BYTES: u64 = 10 * 1024 * 1024;

/// An append-only log file that rotates at a size cap.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    cap: u64,
    /// The last byte written ended a line: rotating now splits no line.
    at_line_start: bool,
}

impl RotatingLog {
    /// Opens (creating) `path` for appending, rotating first if it is already past `cap`.
    pub fn open(path: &Path, cap: u64) -> io::Result<RotatingLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let mut log = RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            cap,
            at_line_start: true,
        };
        if log.size >= cap {
            log.rotate()?;
        }
        Ok(log)
    }

    /// The previous file's name: `clawbox.log.1`.
    pub fn previous(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        std::fs::rename(&self.path, Self::previous(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.at_line_start && self.size > 0 && self.size + buf.len() as u64 > self.cap {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_and_keeps_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clawbox.log");
        let mut log = RotatingLog::open(&path, 100).unwrap();
        for i in 0..30 {
            writeln!(log, "line {i:02} of the log").unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(RotatingLog::previous(&path)).unwrap();
        // At most one line past the cap.
        assert!(
            current.len() <= 120 && previous.len() <= 120,
            "{current:?} {previous:?}"
        );
        assert!(current.ends_with("line 29 of the log\n"), "{current}");
        assert!(
            previous.lines().all(|l| l.starts_with("line ")),
            "whole lines: {previous}"
        );
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one previous file, no more");
        drop(log);
        // A file already past the cap rotates when it is opened.
        std::fs::write(&path, "x".repeat(150)).unwrap();
        let _log = RotatingLog::open(&path, 100).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(
            std::fs::read_to_string(RotatingLog::previous(&path))
                .unwrap()
                .len(),
            150
        );
    }
}
