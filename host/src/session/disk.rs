//! The per-session disk quota (`SESSION_DISK_MB`): how much of the host's disk a session's
//! `workspace/` and `outbound/` take, and whether that is over the quota. The supervisor
//! measures and acts (stops the runner, fails the messages, refuses to start it again); this
//! module only measures and decides.
//!
//! Neither Docker's `--storage-opt size=` nor XFS project quotas apply to bind mounts on
//! overlay/ext4, where clawbox usually runs, so the quota is kept by the host: the usage is
//! the allocated blocks (`st_blocks`, what a sparse file really costs) of every file below the
//! two directories, each inode counted once. The walk is rate-limited by its own cost
//! ([`Pacer`]): a workspace with a hundred thousand files is measured less often, and the host
//! never spends more than a small share of one core on it. Between two measures a file is
//! also bounded by the runner's file-size limit (`RLIMIT_FSIZE`, set by the runtimes to the
//! room left when the runner started), so one big write stops at the quota by itself.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deeper directories are not walked (a nested tree deeper than this is still counted down
/// to this depth, which is all an agent gains by nesting).
const MAX_DEPTH: usize = 256;
/// A measure may cost at most 1/`COST_FACTOR` of the time between two measures.
const COST_FACTOR: u32 = 50;

/// Why a session's messages fail while it is over its quota (shown to the sender).
pub fn over_quota_notice(quota_bytes: u64) -> String {
    format!(
        "the agent's workspace is over its SESSION_DISK_MB quota ({} MB): delete files or raise \
         the quota",
        quota_bytes / (1024 * 1024)
    )
}

/// Bytes allocated on disk below `roots` (not following symlinks, not crossing into other
/// file systems, each inode once). Entries that vanish during the walk are skipped.
pub fn usage(roots: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for root in roots {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let dev = meta.dev();
        let mut stack = vec![(root.clone(), 0usize)];
        total = total.saturating_add(allocated(&meta, &mut seen));
        while let Some((dir, depth)) = stack.pop() {
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.dev() != dev {
                    continue; // a mount point inside the tree is not the session's disk
                }
                total = total.saturating_add(allocated(&meta, &mut seen));
                if meta.is_dir() {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
    total
}

fn allocated(meta: &std::fs::Metadata, seen: &mut HashSet<(u64, u64)>) -> u64 {
    if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    meta.blocks().saturating_mul(512)
}

/// The directories the quota covers.
pub fn quota_roots(workspace: &Path, outbound: &Path) -> Vec<PathBuf> {
    vec![workspace.to_path_buf(), outbound.to_path_buf()]
}

/// When to measure next: not before `every` has passed since the last measure, nor before
/// [`COST_FACTOR`] times the last measure's own duration.
#[derive(Debug)]
pub struct Pacer {
    every: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(every: Duration) -> Self {
        Pacer { every, next: None }
    }

    /// Whether a measure is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Records a measure that started at `started` and took `took`.
    pub fn measured(&mut self, started: Instant, took: Duration) {
        self.next = Some(started + self.every.max(took * COST_FACTOR));
    }

    /// Makes the next call to [`Pacer::due`] true (a runner is about to start).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// The file-size limit for a runner starting with `used` of `quota` bytes taken: the room
/// left, at least one MB (the runner must be able to write its history).
pub fn file_size_limit(quota: u64, used: u64) -> u64 {
    quota.saturating_sub(used).max(1024 * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usage_counts_allocated_blocks_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("workspace");
        let out = dir.path().join("outbound");
        std::fs::create_dir_all(ws.join("deep/er")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let empty = usage(&quota_roots(&ws, &out));
        std::fs::write(ws.join("deep/er/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(ws.join("deep/er/a"), ws.join("b")).unwrap();
        std::fs::hard_link(ws.join("deep/er/a"), out.join("c")).unwrap();
        // Sparse: 1 GB long, nothing allocated.
        std::fs::File::create(ws.join("sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::os::unix::fs::symlink("/", ws.join("root-link")).unwrap();
        let used = usage(&quota_roots(&ws, &out)) - empty;
        assert!(
            (1 << 20..(1 << 20) + (64 << 10)).contains(&used),
            "{used} bytes"
        );
    }

    #[test]
    fn missing_roots_use_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(usage(&[dir.path().join("nope")]), 0);
    }

    #[test]
    fn the_pacer_spaces_measures_by_their_cost() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_secs(2));
        assert!(p.due(t0));
        p.measured(t0, Duration::from_millis(10));
        assert!(!p.due(t0 + Duration::from_secs(1)));
        assert!(p.due(t0 + Duration::from_secs(2)));
        // A measure that took 1 s waits 20 s.
        p.measured(t0, Duration::from_secs(1));
        assert!(!p.due(t0 + Duration::from_secs(49)));
        assert!(p.due(t0 + Duration::from_secs(50)));
        p.reset();
        assert!(p.due(t0));
    }

    #[test]
    fn the_file_size_limit_is_the_room_left() {
        let mb = 1024 * 1024;
        assert_eq!(file_size_limit(100 * mb, 30 * mb), 70 * mb);
        assert_eq!(file_size_limit(100 * mb, 100 * mb - 10), mb);
        assert_eq!(file_size_limit(100 * mb, 200 * mb), mb);
    }

    #[test]
    fn the_notice_says_what_to_do() {
        assert_eq!(
            over_quota_notice(2048 * 1024 * 1024),
            "the agent's workspace is over its SESSION_DISK_MB quota (2048 MB): delete files or \
             raise the quota"
        );
    }
}
