//! A clawbox host in a temporary directory, run as the real `clawbox` binary: its own data and
//! groups directories, the fake model as its endpoint, short timings so retries happen in
//! milliseconds, and helpers to start, kill (SIGKILL) and restart it, or to run `clawbox chat`.
//! The binary path comes from the caller (`env!("CARGO_BIN_EXE_clawbox")` in the host's tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

pub struct HostFixture {
    dir: tempfile::TempDir,
    bin: PathBuf,
    env: BTreeMap<String, String>,
    child: Option<Child>,
    starts: u32,
}

impl HostFixture {
    /// A fresh directory configured for `model_base_url` and the process runtime.
    pub fn new(clawbox_bin: impl Into<PathBuf>, model_base_url: &str) -> anyhow::Result<Self> {
        Self::new_in(&std::env::temp_dir(), clawbox_bin, model_base_url)
    }

    /// The same in a fresh directory under `parent` (the benchmark puts its hosts on the disk
    /// the repository lives on, where `/tmp` may be a tmpfs).
    pub fn new_in(
        parent: &Path,
        clawbox_bin: impl Into<PathBuf>,
        model_base_url: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::Builder::new()
            .prefix("clawbox-test-")
            .tempdir_in(parent)?;
        let env = [
            // The fixture's directory is the config home: a `.env` of the machine's user
            // (`~/.config/clawbox`) never leaks into a test.
            ("CLAWBOX_HOME", dir.path().display().to_string()),
            ("DATA_DIR", dir.path().join("data").display().to_string()),
            (
                "GROUPS_DIR",
                dir.path().join("groups").display().to_string(),
            ),
            ("OPENAI_BASE_URL", model_base_url.to_owned()),
            ("OPENAI_API_KEY", "test-key".to_owned()),
            ("DEFAULT_MODEL", "fake-model".to_owned()),
            ("CONTAINER_RUNTIME", "process".to_owned()),
            ("BACKOFF_BASE_MS", "50".to_owned()),
            ("HEARTBEAT_MS", "200".to_owned()),
            ("CLAIM_STUCK_MS", "3000".to_owned()),
            ("IDLE_TIMEOUT_MS", "60000".to_owned()),
            ("MODEL_BACKOFF_MS", "20".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            // Any free port: tests run many hosts at once (the address lands in dashboard.addr).
            ("DASHBOARD_ADDR", "127.0.0.1:0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(HostFixture {
            dir,
            bin: clawbox_bin.into(),
            env,
            child: None,
            starts: 0,
        })
    }

    /// Removes a variable (one the fixture sets by default, such as `RUST_LOG`) for later starts.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.env.remove(key);
        self
    }

    /// Sets (or overrides) a configuration variable for later starts.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn groups_dir(&self) -> PathBuf {
        self.dir.path().join("groups")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.data_dir().join("clawbox.sock")
    }

    /// `clawbox <args>` with exactly this fixture's environment, run in its directory (so no
    /// stray `.env` is read).
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(&self.bin, args)
    }

    /// Another binary of the workspace (e.g. `create-agent`) with this fixture's environment,
    /// run in its directory.
    pub fn command_of(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .envs(&self.env)
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        for key in ["PATH", "HOME", "LANG"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd
    }

    /// Starts `clawbox run` and waits until its admin socket answers. Its log goes to
    /// `host-<n>.log` in the fixture directory.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("host already running");
        }
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("host-{}.log", self.starts)))?;
        let child = self
            .command(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning clawbox run")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::UnixStream::connect(self.socket_path())
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("clawbox run exited with {status}:\n{}", self.logs());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "clawbox run did not open its socket in 30 s:\n{}",
                    self.logs()
                );
            }
            // Short: the benchmark times host starts with this loop.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Kills the host with SIGKILL (no shutdown at all), leaving its runners orphaned.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Stops the host with SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .context("clawbox run did not stop within 30 s")??;
            if !status.success() {
                bail!("clawbox run exited with {status}");
            }
        }
        Ok(())
    }

    /// Runs `clawbox chat` with `input` on stdin and returns its output.
    pub async fn chat(&self, input: &str) -> anyhow::Result<Output> {
        let mut child = self
            .command(&["chat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning clawbox chat")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("clawbox chat did not finish within 60 s")??;
        Ok(out)
    }

    /// Everything the host processes of this fixture logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("host-{n}.log"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                all.push_str(&format!("--- host start {n} ---\n{text}"));
            }
        }
        if let Ok(text) = std::fs::read_to_string(self.data_dir().join("logs/clawbox.log")) {
            all.push_str(&format!("--- in-process hosts ---\n{text}"));
        }
        all
    }
}

impl Drop for HostFixture {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // The test is over: no graceful shutdown needed.
            let _ = child.start_kill();
        }
        kill_processes_under(self.dir.path());
    }
}

/// SIGKILLs the process group of every process whose environment names a path under `root`
/// (runners and their tools left behind by a killed host), so tests leave nothing running.
pub fn kill_processes_under(root: &Path) {
    let needle = root.as_os_str().as_encoded_bytes();
    for p in crate::procs::processes() {
        let mentions = p
            .env()
            .filter_map(|var| var.splitn(2, |b| *b == b'=').nth(1))
            .any(|value| value.starts_with(needle));
        if mentions {
            let Ok(pid) = i32::try_from(p.pid) else {
                continue;
            };
            // SAFETY: signals to processes this test started (they carry its temp dir).
            unsafe {
                let pgid = libc::getpgid(pid);
                if pgid > 1 && pgid == pid {
                    libc::killpg(pgid, libc::SIGKILL);
                } else {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}
