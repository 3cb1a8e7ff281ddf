//! The processes of this machine as `/proc` shows them, for tests and benchmarks that look for
//! the runners and tools a host started (by their command line or environment).

/// One readable process: its pid, argv and environment (NUL-separated, as in `/proc`).
pub struct Proc {
    pub pid: u32,
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
}

impl Proc {
    /// The arguments, `argv[0]` first.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        self.cmdline.split(|b| *b == 0)
    }

    /// `NAME=value` entries of the environment.
    pub fn env(&self) -> impl Iterator<Item = &[u8]> {
        self.environ.split(|b| *b == 0)
    }

    /// The parent's pid.
    pub fn ppid(&self) -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Every process whose command line and environment this user may read (others, and those
/// that exit meanwhile, are left out).
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            Some(Proc {
                pid,
                cmdline: std::fs::read(entry.path().join("cmdline")).ok()?,
                environ: std::fs::read(entry.path().join("environ")).ok()?,
            })
        })
        .collect()
}
