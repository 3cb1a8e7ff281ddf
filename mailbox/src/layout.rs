//! The on-disk layout of one session:
//!
//! ```text
//! <sessions>/<agent_id>/<session_id>/
//!   inbound/    inbound.db, files/<message_id>/…   host writes; read-only for the container
//!   outbound/   outbound.db, files/<message_id>/…, heartbeat   container writes; host reads
//!   workspace/  the session's working directory
//! ```
//!
//! Inside a container the same tree is mounted as `/mailbox/inbound`, `/mailbox/outbound` and
//! `/workspace`, so [`SessionPaths`] is built from a mailbox root plus a workspace path.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPaths {
    pub inbound_dir: PathBuf,
    pub outbound_dir: PathBuf,
    pub workspace: PathBuf,
}

pub const INBOUND_DB: &str = "inbound.db";
pub const OUTBOUND_DB: &str = "outbound.db";
pub const HEARTBEAT: &str = "heartbeat";

/// Whether a change to the file `name` is a commit to database `db` (`INBOUND_DB` or
/// `OUTBOUND_DB`): the database itself or its rollback journal, or in WAL mode its `-wal`, the
/// only file a WAL commit touches. The `-shm` index is left out: readers write to it too, so a
/// side watching it would wake itself with its own reads.
pub fn is_commit_file(name: &std::ffi::OsStr, db: &str) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.strip_prefix(db)
        .is_some_and(|rest| matches!(rest, "" | "-journal" | "-wal"))
}

impl SessionPaths {
    /// The host's view: `<sessions_root>/<agent_id>/<session_id>/…`. Both ids are validated so
    /// that no id can point outside `sessions_root`.
    pub fn for_session(sessions_root: &Path, agent_id: &str, session_id: &str) -> Result<Self> {
        validate_id("agent id", agent_id)?;
        validate_id("session id", session_id)?;
        let root = sessions_root.join(agent_id).join(session_id);
        Ok(Self::from_root(&root))
    }

    /// A session directory laid out as above (also the container's `/mailbox` when the workspace
    /// is given separately with [`SessionPaths::with_workspace`]).
    pub fn from_root(root: &Path) -> Self {
        SessionPaths {
            inbound_dir: root.join("inbound"),
            outbound_dir: root.join("outbound"),
            workspace: root.join("workspace"),
        }
    }

    pub fn with_workspace(mut self, workspace: PathBuf) -> Self {
        self.workspace = workspace;
        self
    }

    pub fn inbound_db(&self) -> PathBuf {
        self.inbound_dir.join(INBOUND_DB)
    }

    pub fn outbound_db(&self) -> PathBuf {
        self.outbound_dir.join(OUTBOUND_DB)
    }

    pub fn heartbeat(&self) -> PathBuf {
        self.outbound_dir.join(HEARTBEAT)
    }

    pub fn inbound_files(&self) -> PathBuf {
        self.inbound_dir.join("files")
    }

    pub fn outbound_files(&self) -> PathBuf {
        self.outbound_dir.join("files")
    }

    /// Creates the three directories (host side, before the first container starts).
    pub fn create_dirs(&self) -> Result<()> {
        for dir in [&self.inbound_dir, &self.outbound_dir, &self.workspace] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                action: "create session directory",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Ids that become path components: `[A-Za-z0-9_.-]`, not starting with `.`, 1–128 chars.
pub fn validate_id(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_that_could_escape_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "../x", "a\\b", "a b", "x\0"] {
            assert!(validate_id("session id", bad).is_err(), "{bad:?}");
        }
        for good in ["default", "sess-1", "a.b_c-9"] {
            validate_id("session id", good).unwrap();
        }
        assert!(SessionPaths::for_session(Path::new("/s"), "..", "x").is_err());
    }

    #[test]
    fn commits_show_in_the_database_its_journal_or_its_log() {
        use std::ffi::OsStr;
        for (name, commit) in [
            ("inbound.db", true),
            ("inbound.db-journal", true),
            ("inbound.db-wal", true),
            ("inbound.db-shm", false),
            ("outbound.db-wal", false),
            ("inbound.dbx", false),
            ("heartbeat", false),
        ] {
            assert_eq!(
                is_commit_file(OsStr::new(name), INBOUND_DB),
                commit,
                "{name}"
            );
        }
    }

    #[test]
    fn layout_matches_the_design() {
        let p = SessionPaths::for_session(Path::new("/data/sessions"), "default", "s1").unwrap();
        assert_eq!(
            p.inbound_db(),
            Path::new("/data/sessions/default/s1/inbound/inbound.db")
        );
        assert_eq!(
            p.outbound_db(),
            Path::new("/data/sessions/default/s1/outbound/outbound.db")
        );
        assert_eq!(
            p.heartbeat(),
            Path::new("/data/sessions/default/s1/outbound/heartbeat")
        );
        assert_eq!(
            p.workspace,
            Path::new("/data/sessions/default/s1/workspace")
        );
    }
}
