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

/// Whether a file event may be a commit to database `db` (`INBOUND_DB` or `OUTBOUND_DB`),
/// for the side that watches the other side's directory:
///
/// - a change of the database itself or its rollback journal (creation, removal, writes);
/// - in WAL mode, a write to its `-wal`, or the change of the `-wal`'s modification time with
///   which the writer announces a finished commit (`sql.rs`, `announce_commit`): the frames are
///   written before the commit is visible, so the announcement is the event that counts.
///
/// Not the `-shm` index (readers write to it too, so a side watching it would wake itself), and
/// not access or open events or other attribute changes (reads cause those).
pub fn is_commit_event(event: &notify::Event, db: &str) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    event.paths.iter().any(|path| {
        let Some(rest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(db))
        else {
            return false;
        };
        match (rest, &event.kind) {
            ("" | "-journal" | "-wal", EventKind::Create(_) | EventKind::Remove(_)) => true,
            ("-wal", EventKind::Modify(ModifyKind::Metadata(_))) => true,
            (_, EventKind::Modify(ModifyKind::Metadata(_))) => false,
            ("" | "-journal" | "-wal", EventKind::Modify(_)) => true,
            _ => false,
        }
    })
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

    /// Creates the three directories (host side, before the first container starts), private
    /// to their owner (0700, [`crate::private`]) like the session directory above them.
    pub fn create_dirs(&self) -> Result<()> {
        for dir in [&self.inbound_dir, &self.outbound_dir, &self.workspace] {
            crate::private::create_dir_all(dir).map_err(|source| Error::Io {
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
        use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, ModifyKind};
        use notify::{Event, EventKind};
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let times = EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime));
        let access = EventKind::Access(AccessKind::Any);
        let create = EventKind::Create(CreateKind::File);
        for (name, kind, commit) in [
            ("inbound.db", write, true),
            ("inbound.db", times, false),
            ("inbound.db", access, false),
            ("inbound.db-journal", create, true),
            ("inbound.db-wal", write, true),
            ("inbound.db-wal", times, true),
            ("inbound.db-wal", access, false),
            ("inbound.db-shm", write, false),
            ("inbound.db-shm", times, false),
            ("outbound.db-wal", times, false),
            ("inbound.dbx", write, false),
            ("heartbeat", times, false),
        ] {
            let event = Event::new(kind).add_path(PathBuf::from("/m/inbound").join(name));
            assert_eq!(
                is_commit_event(&event, INBOUND_DB),
                commit,
                "{name} {kind:?}"
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
