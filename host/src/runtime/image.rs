//! The agent image, built from this machine's files with no registry: a root filesystem
//! assembled here as a tarball and imported by the engine (`docker import`, with the image
//! config — user, environment, entry point, labels — given as changes). Owns the image's
//! layout, its freshness labels and the build; running containers from it is
//! `runtime/docker.rs`'s business.
//!
//! Why an import rather than `docker build` of a `FROM scratch` context: the same single layer
//! and config, but the classic builder commits one container per metadata instruction, which
//! took 18 s here (fuse-overlayfs) against 0.5 s for the import. No base image, no registry,
//! no `RUN` step either way.
//!
//! Layout (the same as `container/Dockerfile`, which builds from public images instead):
//!
//! ```text
//! /app/agent-runner, /app/mcp-tools      the runner and the built-in MCP server (stripped)
//! /app/skills/                           built-in skills (CLAWBOX_SKILLS_DIR, container/skills)
//! /lib…, /lib64/ld-linux-…               the shared libraries they link (found with `ldd`)
//! /bin/busybox + applet symlinks         a shell and core utilities (Debian's busybox-static)
//! /bin/bash                              `exec /bin/sh "$@"`: the shell tool runs `bash -c`
//! /etc/passwd, /etc/group                root and the runner user `clawbox` (10001:10001)
//! /etc/ssl/certs/ca-certificates.crt     CA certificates (servers an agent reaches itself)
//! /usr/share/zoneinfo/                   this machine's tzdata (without right/), when installed
//! /tmp, /workspace, /mailbox, /run/clawbox   mount points
//! ```
//!
//! The binaries are the ones next to the running `clawbox` (`CLAWBOX_RUNNER_BIN` and its
//! sibling `mcp-tools`): `make image` uses the release builds, tests the debug builds.
//!
//! Freshness: the image carries `clawbox.binaries`, a SHA-256 of both binaries, the skills,
//! busybox, the CA certificates, tzdata's `tzdata.zi` (its version) and the layout version, and
//! `clawbox.stamp`, a hash of their paths, sizes and modification times.
//!
//! Tags: unless `CONTAINER_IMAGE` names one, the image is `clawbox-agent:<first 16 hex digits
//! of clawbox.binaries>` — tagged by content, so two checkouts or versions on one engine each
//! have their own image and never rebuild each other's. A start whose stamp matches an image's
//! label finds its tag with one `list` (no hashing); otherwise the hash names the tag. Every
//! image built here is labelled `clawbox.data_dir` (a hash of the install's `DATA_DIR`); after
//! a build of a content tag, this install's other content tags are removed — never another
//! install's, and never one a container still uses (the engine refuses, and it is kept).
//! A `CONTAINER_IMAGE` set explicitly (say `clawbox-agent:latest`) is one tag rebuilt in
//! place when the binaries change, and nothing else is removed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, ListImagesOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::runtime::ownership::{FALLBACK_GID, FALLBACK_UID};

/// Label: content hash of what went into the image.
pub const LABEL_BINARIES: &str = "clawbox.binaries";
/// Label: sizes and mtimes of what went into the image (a cheap first check).
pub const LABEL_STAMP: &str = "clawbox.stamp";
/// Label of images built with `container/Dockerfile`: the user manages them, the host never
/// rebuilds them.
pub const LABEL_BUILDER: &str = "clawbox.builder";
/// Label: the install that built the image, a hash of its `DATA_DIR` ([`install_label`]).
pub const LABEL_DATA_DIR: &str = "clawbox.data_dir";
/// The repository of content tags (`clawbox-agent:<hash>`), and of `clawbox-agent:latest`,
/// which is used when there are no binaries to hash.
pub const CONTENT_REPO: &str = "clawbox-agent";
/// Hex digits of the content hash in a content tag (64 bits: no collision between the few
/// versions one engine holds).
const CONTENT_TAG_LEN: usize = 16;
/// Bump when the layout changes, so older images are rebuilt.
const LAYOUT_VERSION: u32 = 3;
/// Where Debian's `busybox-static` installs busybox.
const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The time zone database, copied to the same path in the image. The runner and `run_bash`
/// hand their shells `TZ=<IANA name>` (`TIMEZONE`); busybox (static glibc) reads that zone from
/// here, and without the file it silently runs on UTC under the zone's name ("Europe", +0000):
/// a task script checking the hour was off by the zone's offset.
const ZONEINFO: &str = "/usr/share/zoneinfo";
/// One file of tzdata that names its version: in the stamp, so a tzdata update rebuilds.
const TZDATA_VERSION: &str = "tzdata.zi";

/// Debian's `busybox-static`, which every build needs (the image's shell), if installed.
pub fn find_busybox() -> Option<&'static Path> {
    BUSYBOX_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// What goes into the image, in host paths.
#[derive(Debug, Clone)]
pub struct ImageSources {
    pub runner_bin: PathBuf,
    pub mcp_tools_bin: PathBuf,
    pub skills_dir: Option<PathBuf>,
}

impl ImageSources {
    pub fn from_config(config: &Config) -> Self {
        ImageSources {
            runner_bin: config.runner_bin.clone(),
            mcp_tools_bin: config.runner_bin.with_file_name("mcp-tools"),
            skills_dir: config.skills_dir.clone(),
        }
    }
}

/// The value of [`LABEL_DATA_DIR`] for an install: a hash of its `DATA_DIR`, resolved through
/// symlinks as far as it exists (`make image` may run before the first start creates it).
pub fn install_label(data_dir: &Path) -> String {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(real) = existing.canonicalize() {
            break rest
                .iter()
                .rev()
                .fold(real, |path: PathBuf, part: &&std::ffi::OsStr| {
                    path.join(part)
                });
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => break absolute.clone(),
        }
    };
    hex(&Sha256::digest(resolved.as_os_str().as_encoded_bytes()))[..CONTENT_TAG_LEN].to_owned()
}

/// Which image the docker runtime runs: the one `CONTAINER_IMAGE` names, or the content tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    /// `CONTAINER_IMAGE` (or `clawbox image build --tag`): that tag, rebuilt in place.
    Named(String),
    /// `clawbox-agent:<hash of the sources>`.
    ByContent,
}

impl ImageChoice {
    pub fn from_config(config: &Config) -> Self {
        match &config.container_image {
            Some(tag) => ImageChoice::Named(tag.clone()),
            None => ImageChoice::ByContent,
        }
    }
}

/// The tag a choice comes to, and how that image compares to the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub tag: String,
    pub freshness: Freshness,
    /// A content tag: built under its own name, this install's older ones removed after.
    pub by_content: bool,
}

/// Decides the tag (hashing the sources only when no image's stamp matches) and checks it.
/// Host start, `doctor` and `clawbox image build` all come here, so they agree on the tag.
pub async fn resolve(
    docker: &Docker,
    choice: &ImageChoice,
    sources: &ImageSources,
) -> Result<Resolved, ImageError> {
    if let ImageChoice::Named(tag) = choice {
        return Ok(Resolved {
            tag: tag.clone(),
            freshness: check(docker, tag, sources).await?,
            by_content: false,
        });
    }
    let for_stamp = sources.clone();
    let stamp = match blocking(move || stamp(&for_stamp)).await {
        Ok(stamp) => stamp,
        // No binaries to hash: an image built with container/Dockerfile under the name its
        // comment gives, used as it is; else the error says how to get the binaries.
        Err(missing @ ImageError::Missing { .. }) => {
            let latest = format!("{CONTENT_REPO}:latest");
            return match docker.inspect_image(&latest).await {
                Ok(_) => Ok(Resolved {
                    tag: latest,
                    freshness: Freshness::Unmanaged,
                    by_content: false,
                }),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Err(missing),
                Err(e) => Err(e.into()),
            };
        }
        Err(e) => return Err(e),
    };
    let filters = HashMap::from([
        ("label", vec![format!("{LABEL_STAMP}={}", stamp.text)]),
        ("reference", vec![CONTENT_REPO.to_owned()]),
    ]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    for image in docker.list_images(Some(options)).await? {
        let Some(built_from) = image.labels.get(LABEL_BINARIES) else {
            continue;
        };
        let tag = content_tag(built_from);
        if image.repo_tags.contains(&tag) {
            return Ok(Resolved {
                tag,
                freshness: Freshness::Current,
                by_content: true,
            });
        }
    }
    let files = stamp.files;
    let hash = blocking(move || content_hash(&files)).await?;
    let tag = content_tag(&hash);
    let freshness = match docker.inspect_image(&tag).await {
        Ok(image) => {
            let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            if labels.get(LABEL_BINARIES) == Some(&hash) {
                Freshness::Current
            } else {
                // Something else under our name (an image made by hand): replaced.
                Freshness::Stale
            }
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Freshness::Missing,
        Err(e) => return Err(e.into()),
    };
    Ok(Resolved {
        tag,
        freshness,
        by_content: true,
    })
}

/// `clawbox-agent:<hash>` for a `clawbox.binaries` value.
fn content_tag(hash: &str) -> String {
    format!(
        "{CONTENT_REPO}:{}",
        hash.get(..CONTENT_TAG_LEN).unwrap_or(hash)
    )
}

/// Whether `tag` is a content tag (`clawbox-agent:` and 16 hex digits).
fn is_content_tag(tag: &str) -> bool {
    tag.strip_prefix(CONTENT_REPO)
        .and_then(|t| t.strip_prefix(':'))
        .is_some_and(|v| v.len() == CONTENT_TAG_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Removes this install's content tags other than `keep`; returns the tags removed. A tag a
/// container uses (running or stopped) is refused by the engine (409) and kept; another
/// install's images are never listed.
pub async fn remove_old_tags(
    docker: &Docker,
    keep: &str,
    install: &str,
) -> Result<Vec<String>, ImageError> {
    let filters = HashMap::from([
        ("label", vec![format!("{LABEL_DATA_DIR}={install}")]),
        ("reference", vec![CONTENT_REPO.to_owned()]),
    ]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut removed = Vec::new();
    for image in docker.list_images(Some(options)).await? {
        for tag in image.repo_tags {
            if tag == keep || !is_content_tag(&tag) {
                continue;
            }
            // Not forced: the engine keeps an image a container was created from.
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::default().build();
            match docker.remove_image(&tag, Some(options), None).await {
                Ok(_) => removed.push(tag),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message,
                }) => {
                    tracing::info!(image = %tag, "older agent image kept: {message}");
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}

/// Why the image could not be checked or built; the host does not start the docker runtime.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file that goes into the image is missing; the message says how to get it.
    #[error("{what} not found at {}: {hint}", path.display())]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `ldd` could not say which libraries a binary needs.
    #[error("cannot list the shared libraries of {}: {reason}", path.display())]
    Libraries { path: PathBuf, reason: String },
    /// The engine refused or failed the build.
    #[error("building image {tag} failed: {reason}")]
    Build { tag: String, reason: String },
    #[error("Docker engine: {0}")]
    Engine(#[from] bollard::errors::Error),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How the image compares to the current binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// Built with `container/Dockerfile`, or the binaries to compare with are not on this
    /// machine: used as it is.
    Unmanaged,
    Missing,
    /// Built from other binaries (or an older layout).
    Stale,
}

/// The image's built state, without building.
pub async fn check(
    docker: &Docker,
    tag: &str,
    sources: &ImageSources,
) -> Result<Freshness, ImageError> {
    let labels = match docker.inspect_image(tag).await {
        Ok(image) => image.config.and_then(|c| c.labels).unwrap_or_default(),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(Freshness::Missing),
        Err(e) => return Err(e.into()),
    };
    if labels.get(LABEL_BUILDER).is_some_and(|b| b == "dockerfile") {
        return Ok(Freshness::Unmanaged);
    }
    let sources = sources.clone();
    let (stamp, labels) = match blocking(move || Ok((stamp(&sources)?, labels))).await {
        Ok(found) => found,
        // An installed image and no binaries to build another from: use the image.
        Err(ImageError::Missing { .. }) => return Ok(Freshness::Unmanaged),
        Err(e) => return Err(e),
    };
    if labels.get(LABEL_STAMP) == Some(&stamp.text) {
        return Ok(Freshness::Current);
    }
    let Some(built_from) = labels.get(LABEL_BINARIES).cloned() else {
        return Ok(Freshness::Stale);
    };
    let hash = blocking(move || content_hash(&stamp.files)).await?;
    Ok(if hash == built_from {
        Freshness::Current
    } else {
        Freshness::Stale
    })
}

/// Builds the image when it is missing or stale (then, for a content tag, removes this
/// install's older ones); returns the tag to run. `install` is [`install_label`]'s value;
/// `progress` gets one line per step.
pub async fn ensure(
    docker: &Docker,
    choice: &ImageChoice,
    sources: &ImageSources,
    install: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ImageError> {
    let resolved = resolve(docker, choice, sources).await?;
    let tag = &resolved.tag;
    match resolved.freshness {
        Freshness::Current => {}
        Freshness::Unmanaged => {
            tracing::info!(
                image = %tag,
                "using the agent image as it is (built with container/Dockerfile, or no agent-runner next to clawbox to compare with)"
            );
        }
        Freshness::Missing => {
            progress(&format!("agent image {tag} not found; building it"));
            build_resolved(docker, &resolved, sources, install, progress).await?;
        }
        Freshness::Stale => {
            progress(&format!(
                "agent image {tag} was built from other binaries; rebuilding it"
            ));
            build_resolved(docker, &resolved, sources, install, progress).await?;
        }
    }
    Ok(resolved.tag)
}

/// Builds `resolved.tag`; after a content tag, removes this install's older content tags.
async fn build_resolved(
    docker: &Docker,
    resolved: &Resolved,
    sources: &ImageSources,
    install: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, ImageError> {
    let built = build(docker, &resolved.tag, sources, install, progress).await?;
    if resolved.by_content {
        for old in remove_old_tags(docker, &resolved.tag, install).await? {
            progress(&format!(
                "removed {old}, an older agent image of this install"
            ));
        }
    }
    Ok(built)
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub tag: String,
    /// Uncompressed size as the engine reports it.
    pub size_bytes: u64,
    /// The root filesystem imported; `None` when the content tag was already built.
    pub context_bytes: Option<usize>,
}

/// Builds (or rebuilds) the image under `tag`, labelled as built by `install`
/// ([`install_label`]).
pub async fn build(
    docker: &Docker,
    tag: &str,
    sources: &ImageSources,
    install: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, ImageError> {
    let started = std::time::Instant::now();
    // The image this build replaces: removed afterwards, or every rebuild leaves an untagged
    // 25–50 MB image behind.
    let previous = docker.inspect_image(tag).await.ok().and_then(|i| i.id);
    progress(&format!(
        "assembling the image from {} and {}",
        sources.runner_bin.display(),
        sources.mcp_tools_bin.display()
    ));
    let for_context = sources.clone();
    let install = install.to_owned();
    let context = blocking(move || build_context(&for_context, &install)).await?;
    for warning in &context.warnings {
        progress(&format!("warning: {warning}"));
    }
    let context_bytes = context.tar.len();
    progress(&format!(
        "importing a {:.1} MB root filesystem into the Docker engine",
        context_bytes as f64 / 1e6
    ));
    let (repo, version) = split_tag(tag);
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(context.changes)
        .message("built by clawbox (host/src/image.rs)")
        .build();
    let failed = |reason: String| ImageError::Build {
        tag: tag.to_owned(),
        reason,
    };
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_full(context.tar.into())),
        None,
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| failed(e.to_string()))?;
        if let Some(detail) = info.error_detail {
            return Err(failed(
                detail.message.unwrap_or_else(|| "unknown error".into()),
            ));
        }
    }
    let image = docker.inspect_image(tag).await?;
    if let Some(old) = previous.filter(|old| Some(old) != image.id.as_ref()) {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default().build();
        // A container still running from the old image keeps it (409); that is fine.
        if let Err(e) = docker.remove_image(&old, Some(options), None).await {
            tracing::debug!(image = %old, "previous image not removed: {e}");
        }
    }
    let size_bytes = image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    progress(&format!(
        "built {tag} ({:.1} MB) in {:.1} s",
        size_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    Ok(Built {
        tag: tag.to_owned(),
        size_bytes,
        context_bytes: Some(context_bytes),
    })
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, ImageError> + Send + 'static,
) -> Result<R, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Build {
            tag: String::new(),
            reason: format!("internal task failed: {e}"),
        })?
}

/// The files the image is made of, each by the name it has in the image (so the same files in
/// another checkout hash the same), with a hash of their paths, sizes and mtimes.
struct Stamp {
    text: String,
    files: Vec<(String, PathBuf)>,
}

fn stamp(sources: &ImageSources) -> Result<Stamp, ImageError> {
    let mut files = vec![
        (
            "app/agent-runner".to_owned(),
            require_file("agent-runner", &sources.runner_bin, BINARY_HINT)?,
        ),
        (
            "app/mcp-tools".to_owned(),
            require_file("mcp-tools", &sources.mcp_tools_bin, BINARY_HINT)?,
        ),
    ];
    if let Some(dir) = &sources.skills_dir {
        files.extend(
            skill_files(dir)?
                .into_iter()
                .map(|(rel, path)| (format!("app/skills/{}", rel.display()), path)),
        );
    }
    // The shared libraries are not in the stamp (finding them runs `ldd`): a newer libc
    // alone does not rebuild the image, whose libraries still match the binaries.
    if let Some(busybox) = find_busybox() {
        files.push(("bin/busybox".to_owned(), busybox.to_path_buf()));
    }
    for extra in [CA_CERTIFICATES, &format!("{ZONEINFO}/{TZDATA_VERSION}")] {
        let path = Path::new(extra);
        if path.is_file() {
            files.push((extra.trim_start_matches('/').to_owned(), path.to_path_buf()));
        }
    }
    let mut text = format!("v{LAYOUT_VERSION}");
    for (_, f) in &files {
        let meta = std::fs::metadata(f).map_err(io("read", f))?;
        text.push_str(&format!(
            ";{}:{}:{}.{}",
            f.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
    }
    // A label is no place for a long text: hash the stamp too.
    Ok(Stamp {
        text: hex(&Sha256::digest(text.as_bytes())),
        files,
    })
}

const BINARY_HINT: &str = "build it first (`make image` builds the release binaries and the image), set \
     CLAWBOX_RUNNER_BIN, or build the image with container/Dockerfile";

fn require_file(
    what: &'static str,
    path: &Path,
    hint: &'static str,
) -> Result<PathBuf, ImageError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(ImageError::Missing {
            what,
            path: path.to_path_buf(),
            hint,
        })
    }
}

fn content_hash(files: &[(String, PathBuf)]) -> Result<String, ImageError> {
    let mut hasher = Sha256::new();
    hasher.update(format!("clawbox image layout v{LAYOUT_VERSION}\n").as_bytes());
    for (name, f) in files {
        let mut file = std::fs::File::open(f).map_err(io("open", f))?;
        let len = file.metadata().map_err(io("read", f))?.len();
        // Name and length first: no two different sets of files hash alike.
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(io("read", f))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Regular files below the skills directory, by their path relative to it (sorted, so the
/// hash does not depend on directory order). Symlinks are not followed.
fn skill_files(dir: &Path) -> Result<BTreeMap<PathBuf, PathBuf>, ImageError> {
    let mut files = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("list", &d))? {
            let entry = entry.map_err(io("list", &d))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("read", &path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && let Ok(rel) = path.strip_prefix(dir)
            {
                files.insert(rel.to_path_buf(), path.clone());
            }
        }
    }
    Ok(files)
}

/// The image's root filesystem and its config, as `docker import` changes.
struct Context {
    tar: Vec<u8>,
    changes: Vec<String>,
    /// What the image lacks that the user may want to install (progress lines).
    warnings: Vec<String>,
}

/// `name:tag` → (`name`, `tag`); the tag defaults to `latest`. A colon before the last `/`
/// belongs to a registry host (`host:5000/name`).
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rsplit_once(':') {
        Some((name, version)) if !version.contains('/') => (name, version),
        _ => (tag, "latest"),
    }
}

fn build_context(sources: &ImageSources, install: &str) -> Result<Context, ImageError> {
    let stamp = stamp(sources)?;
    let hash = content_hash(&stamp.files)?;
    let busybox = find_busybox().ok_or_else(|| ImageError::Missing {
        what: "busybox",
        path: PathBuf::from(BUSYBOX_CANDIDATES[0]),
        hint: "install Debian's busybox-static (`apt-get install busybox-static`)",
    })?;
    let ca = require_file(
        "CA certificates",
        Path::new(CA_CERTIFICATES),
        "install the ca-certificates package",
    )?;

    let mut tar = Tar::new();
    for dir in [
        "bin",
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "app",
        "workspace",
        "mailbox",
        "run",
        "run/clawbox",
    ] {
        tar.dir(dir, 0o755)?;
    }
    tar.dir("tmp", 0o1777)?;

    let stripped_runner = stripped(&sources.runner_bin)?;
    let stripped_tools = stripped(&sources.mcp_tools_bin)?;
    tar.file("app/agent-runner", &stripped_runner, 0o755)?;
    tar.file("app/mcp-tools", &stripped_tools, 0o755)?;
    tar.file(
        "bin/busybox",
        &std::fs::read(busybox).map_err(io("read", busybox))?,
        0o755,
    )?;

    let mut libraries = std::collections::BTreeSet::new();
    for bin in [
        &sources.runner_bin,
        &sources.mcp_tools_bin,
        &busybox.to_path_buf(),
    ] {
        libraries.extend(shared_libraries(bin)?);
    }
    for lib in &libraries {
        let Some(rel) = lib.strip_prefix("/").ok().and_then(Path::to_str) else {
            continue;
        };
        let bytes = std::fs::read(lib).map_err(io("read", lib))?;
        let parent = Path::new(rel).parent().and_then(Path::to_str).unwrap_or("");
        tar.dirs_for(parent)?;
        tar.file(rel, &bytes, 0o755)?;
    }

    for applet in busybox_applets(busybox)? {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file(
        "bin/bash",
        b"#!/bin/sh\n# clawbox image: busybox has no bash; its ash runs the agent's shell commands.\nexec /bin/sh \"$@\"\n",
        0o755,
    )?;

    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nclawbox:x:{FALLBACK_UID}:{FALLBACK_GID}:clawbox agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    );
    let group = format!("root:x:0:\nclawbox:x:{FALLBACK_GID}:\nnogroup:x:65534:\n");
    tar.file("etc/passwd", passwd.as_bytes(), 0o644)?;
    tar.file("etc/group", group.as_bytes(), 0o644)?;
    tar.file(
        "etc/ssl/certs/ca-certificates.crt",
        &std::fs::read(&ca).map_err(io("read", &ca))?,
        0o644,
    )?;

    let mut warnings = Vec::new();
    if !add_zoneinfo(&mut tar, Path::new(ZONEINFO))? {
        warnings.push(format!(
            "no time zone data at {ZONEINFO} (install tzdata): shell commands and task scripts \
             in containers will see UTC whatever TIMEZONE says"
        ));
    }

    tar.dir("app/skills", 0o755)?;
    if let Some(dir) = &sources.skills_dir {
        for (rel, path) in skill_files(dir)? {
            let Some(rel) = rel.to_str() else { continue };
            let target = format!("app/skills/{rel}");
            if let Some(parent) = Path::new(&target).parent().and_then(Path::to_str) {
                tar.dirs_for(parent)?;
            }
            tar.file(
                &target,
                &std::fs::read(&path).map_err(io("read", &path))?,
                0o644,
            )?;
        }
    }

    let changes = vec![
        "ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/workspace LANG=C.UTF-8 \
         SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
            .to_owned(),
        format!("USER {FALLBACK_UID}:{FALLBACK_GID}"),
        "WORKDIR /workspace".to_owned(),
        format!(
            "LABEL {LABEL_BINARIES}=\"{hash}\" {LABEL_STAMP}=\"{}\" {LABEL_DATA_DIR}=\"{install}\" org.opencontainers.image.title=\"clawbox agent\"",
            stamp.text
        ),
        r#"ENTRYPOINT ["/app/agent-runner"]"#.to_owned(),
    ];
    Ok(Context {
        tar: tar.finish()?,
        changes,
        warnings,
    })
}

/// Copies the time zone database at `dir` (if any) to the same path in the image, links as
/// links; returns whether there was one. Leaves out `right/` (the leap-second variants, as
/// large again and never what a `TZ` name means) and absolute links (`localtime` points at this
/// machine's own `/etc/localtime`).
fn add_zoneinfo(tar: &mut Tar, dir: &Path) -> Result<bool, ImageError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let Some(root) = dir.strip_prefix("/").ok().and_then(Path::to_str) else {
        return Ok(false);
    };
    // Sorted, so the same tzdata gives the same context.
    let mut entries = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("list", &d))? {
            let entry = entry.map_err(io("list", &d))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("read", &path))?;
            if kind.is_dir() {
                if path != dir.join("right") {
                    stack.push(path);
                }
            } else if kind.is_file() || kind.is_symlink() {
                entries.insert(path, kind.is_symlink());
            }
        }
    }
    tar.dirs_for(root)?;
    for (path, is_link) in entries {
        let Some(rel) = path.strip_prefix("/").ok().and_then(Path::to_str) else {
            continue;
        };
        if let Some(parent) = Path::new(rel).parent().and_then(Path::to_str) {
            tar.dirs_for(parent)?;
        }
        if is_link {
            let target = std::fs::read_link(&path).map_err(io("read", &path))?;
            match target.to_str() {
                Some(target) if !target.starts_with('/') => tar.symlink(rel, target)?,
                _ => continue,
            }
        } else {
            tar.file(
                rel,
                &std::fs::read(&path).map_err(io("read", &path))?,
                0o644,
            )?;
        }
    }
    Ok(true)
}

/// `strip`ped copy of a binary (debug builds shrink six-fold); the original when `strip` is
/// unavailable or fails.
fn stripped(bin: &Path) -> Result<Vec<u8>, ImageError> {
    let out = tempfile::Builder::new()
        .prefix("clawbox-strip-")
        .tempfile()
        .map_err(io("create a temporary file for", bin))?;
    let status = std::process::Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(out.path())
        .arg(bin)
        .status();
    match status {
        Ok(s) if s.success() => std::fs::read(out.path()).map_err(io("read", out.path())),
        other => {
            tracing::warn!(binary = %bin.display(), "strip unavailable or failed ({other:?}); copying unstripped");
            std::fs::read(bin).map_err(io("read", bin))
        }
    }
}

/// Absolute paths of the shared libraries (and the dynamic loader) `bin` needs, per `ldd`.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| ImageError::Libraries {
            path: bin.to_path_buf(),
            reason: format!("cannot run ldd: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // glibc's ldd says so (and fails) for static binaries.
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ImageError::Libraries {
            path: bin.to_path_buf(),
            reason: stderr.trim().to_owned(),
        });
    }
    parse_ldd(&stdout).map_err(|reason| ImageError::Libraries {
        path: bin.to_path_buf(),
        reason,
    })
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        // `linux-vdso.so.1 (0x…)` lives in the kernel, not in a file.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io("run", busybox))?;
    if !out.status.success() {
        return Err(ImageError::Build {
            tag: String::new(),
            reason: format!("`{} --list` failed", busybox.display()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A tar archive in memory: root-owned entries with a fixed mtime, so the same inputs give
/// the same context.
struct Tar {
    builder: tar::Builder<Vec<u8>>,
    dirs: std::collections::BTreeSet<String>,
}

impl Tar {
    fn new() -> Self {
        Tar {
            builder: tar::Builder::new(Vec::new()),
            dirs: Default::default(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn err(path: &str) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            action: "add to the build context",
            path: PathBuf::from(path),
            source,
        }
    }

    fn dir(&mut self, rel: &str, mode: u32) -> Result<(), ImageError> {
        if !self.dirs.insert(rel.to_owned()) {
            return Ok(());
        }
        let path = format!("{rel}/");
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, &path, std::io::empty())
            .map_err(Self::err(rel))
    }

    /// Creates every directory leading to `rel` (inclusive).
    fn dirs_for(&mut self, rel: &str) -> Result<(), ImageError> {
        let mut so_far = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            self.dir(&so_far.clone(), 0o755)?;
        }
        Ok(())
    }

    fn file(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<(), ImageError> {
        let mut h = Self::header(tar::EntryType::Regular, mode, bytes.len() as u64);
        self.builder
            .append_data(&mut h, rel, bytes)
            .map_err(Self::err(rel))
    }

    fn symlink(&mut self, rel: &str, target: &str) -> Result<(), ImageError> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, rel, target)
            .map_err(Self::err(rel))
    }

    fn finish(self) -> Result<Vec<u8>, ImageError> {
        self.builder.into_inner().map_err(Self::err("archive"))
    }
}

/// `clawbox image build`: connects to the engine and builds the image, progress on stderr. A
/// named tag (`--tag`, `CONTAINER_IMAGE`) is always rebuilt; the content tag only when it is
/// not built yet (the same binaries make the same image).
pub async fn build_command(config: &Config, tag: Option<&str>) -> Result<Built, crate::HostError> {
    let docker = crate::runtime::docker::connect_engine(config.docker_host.as_deref()).await?;
    let choice = match tag {
        Some(tag) => ImageChoice::Named(tag.to_owned()),
        None => ImageChoice::from_config(config),
    };
    let sources = ImageSources::from_config(config);
    let install = install_label(&config.data_dir);
    let resolved = resolve(&docker, &choice, &sources).await?;
    if resolved.by_content && resolved.freshness == Freshness::Current {
        let image = docker
            .inspect_image(&resolved.tag)
            .await
            .map_err(ImageError::from)?;
        stderr_progress(&format!(
            "{} is already built from these binaries; nothing to do",
            resolved.tag
        ));
        return Ok(Built {
            size_bytes: image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            tag: resolved.tag,
            context_bytes: None,
        });
    }
    // Without binaries (`Unmanaged`), the build fails naming the missing one.
    Ok(build_resolved(&docker, &resolved, &sources, &install, &mut stderr_progress).await?)
}

/// Removes the image (tests, `clawbox image rm` later); a missing image is fine.
pub async fn remove(docker: &Docker, tag: &str) -> Result<(), ImageError> {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    match docker.remove_image(tag, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a progress line to stderr (the CLI's progress sink).
pub fn stderr_progress(line: &str) {
    let mut err = std::io::stderr().lock();
    // Progress is best effort: a closed stderr must not fail the build.
    let _ = writeln!(err, "clawbox: {line}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn tags_split_at_the_last_colon_after_the_last_slash() {
        assert_eq!(
            split_tag("clawbox-agent:latest"),
            ("clawbox-agent", "latest")
        );
        assert_eq!(split_tag("clawbox-agent"), ("clawbox-agent", "latest"));
        assert_eq!(split_tag("host:5000/agent"), ("host:5000/agent", "latest"));
        assert_eq!(split_tag("host:5000/agent:t1"), ("host:5000/agent", "t1"));
    }

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fa5)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa5)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007fa5)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(
            parse_ldd("\tlibfoo.so.1 => not found\n")
                .unwrap_err()
                .contains("libfoo")
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn the_stamp_changes_when_a_binary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("agent-runner");
        let tools = dir.path().join("mcp-tools");
        std::fs::write(&runner, "one").unwrap();
        std::fs::write(&tools, "two").unwrap();
        let sources = ImageSources {
            runner_bin: runner.clone(),
            mcp_tools_bin: tools,
            skills_dir: None,
        };
        let before = stamp(&sources).unwrap();
        let hash_before = content_hash(&before.files).unwrap();
        assert_eq!(stamp(&sources).unwrap().text, before.text);
        std::fs::write(&runner, "one, rebuilt").unwrap();
        let after = stamp(&sources).unwrap();
        assert_ne!(after.text, before.text);
        assert_ne!(content_hash(&after.files).unwrap(), hash_before);
    }

    #[test]
    fn the_content_hash_is_of_the_files_not_of_where_they_are() {
        let sources_in = |dir: &Path, runner: &str| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("agent-runner"), runner).unwrap();
            std::fs::write(dir.join("mcp-tools"), "tools").unwrap();
            ImageSources {
                runner_bin: dir.join("agent-runner"),
                mcp_tools_bin: dir.join("mcp-tools"),
                skills_dir: None,
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let hash_of = |s: &ImageSources| content_hash(&stamp(s).unwrap().files).unwrap();
        let one = hash_of(&sources_in(&dir.path().join("one"), "runner"));
        let two = hash_of(&sources_in(&dir.path().join("two"), "runner"));
        let other = hash_of(&sources_in(&dir.path().join("three"), "runner 2"));
        assert_eq!(one, two);
        assert_ne!(one, other);
        let tag = content_tag(&one);
        assert_eq!(tag.len(), "clawbox-agent:".len() + 16);
        assert!(is_content_tag(&tag), "{tag}");
        for not_ours in [
            "clawbox-agent:latest",
            "clawbox-agent:test",
            "other:0123456789abcdef",
            "clawbox-agent:0123456789abcdeg",
        ] {
            assert!(!is_content_tag(not_ours), "{not_ours}");
        }
    }

    #[test]
    fn the_install_label_is_the_same_before_and_after_data_dir_exists() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), &link).unwrap();
        let before = install_label(&link.join("data"));
        std::fs::create_dir(link.join("data")).unwrap();
        assert_eq!(install_label(&link.join("data")), before);
        assert_eq!(install_label(&dir.path().join("real/data")), before);
        assert_ne!(install_label(&dir.path().join("real/other")), before);
        assert_eq!(before.len(), 16);
    }

    #[test]
    fn the_zoneinfo_is_copied_with_its_links_and_without_right() {
        let dir = tempfile::tempdir().unwrap();
        let zi = dir.path().join("zoneinfo");
        std::fs::create_dir_all(zi.join("Asia")).unwrap();
        std::fs::create_dir_all(zi.join("right/Asia")).unwrap();
        std::fs::create_dir_all(zi.join("posix")).unwrap();
        std::fs::write(zi.join("Asia/Kolkata"), "TZif").unwrap();
        std::fs::write(zi.join("right/Asia/Kolkata"), "TZif").unwrap();
        std::os::unix::fs::symlink("Asia/Kolkata", zi.join("Asia/Calcutta")).unwrap();
        std::os::unix::fs::symlink("../Asia", zi.join("posix/Asia")).unwrap();
        std::os::unix::fs::symlink("/etc/localtime", zi.join("localtime")).unwrap();
        let mut tar = Tar::new();
        assert!(add_zoneinfo(&mut tar, &zi).unwrap());
        let bytes = tar.finish().unwrap();
        let root = zi.strip_prefix("/").unwrap().to_str().unwrap().to_owned();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, String)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let what = match e.link_name().unwrap() {
                    Some(target) => format!("-> {}", target.display()),
                    None => format!("{:?}", e.header().entry_type()),
                };
                (path.replace(&root, "Z"), what)
            })
            .filter(|(path, _)| path.starts_with('Z'))
            .collect();
        let want: Vec<(String, String)> = [
            ("Z/", "Directory"),
            ("Z/Asia/", "Directory"),
            ("Z/Asia/Calcutta", "-> Asia/Kolkata"),
            ("Z/Asia/Kolkata", "Regular"),
            ("Z/posix/", "Directory"),
            ("Z/posix/Asia", "-> ../Asia"),
        ]
        .into_iter()
        .map(|(p, w)| (p.to_owned(), w.to_owned()))
        .collect();
        assert_eq!(entries, want);
        assert!(!add_zoneinfo(&mut Tar::new(), &dir.path().join("none")).unwrap());
    }

    #[test]
    fn missing_binaries_say_how_to_get_them() {
        let sources = ImageSources {
            runner_bin: PathBuf::from("/nonexistent/agent-runner"),
            mcp_tools_bin: PathBuf::from("/nonexistent/mcp-tools"),
            skills_dir: None,
        };
        let err = stamp(&sources).err().unwrap().to_string();
        assert!(err.contains("agent-runner not found"), "{err}");
        assert!(err.contains("make image"), "{err}");
    }
}
