//! One inotify watcher for the whole host. Each live session registers its `outbound/`
//! directory and gets a wake-up when the runner commits to `outbound.db`; heartbeat touches and
//! other files are ignored. One watcher (one thread, one inotify descriptor) serves every
//! session, so a busy host does not grow a thread per conversation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

type Routes = Arc<Mutex<HashMap<PathBuf, mpsc::Sender<()>>>>;

pub struct OutboundWatcher {
    // std Mutexes, never held across an await.
    watcher: Mutex<RecommendedWatcher>,
    routes: Routes,
}

impl OutboundWatcher {
    pub fn new() -> notify::Result<Self> {
        let routes: Routes = Arc::default();
        let lookup = Arc::clone(&routes);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !mailbox::layout::is_commit_event(&event, mailbox::layout::OUTBOUND_DB) {
                return;
            }
            let routes = lookup.lock().unwrap_or_else(|e| e.into_inner());
            for path in &event.paths {
                if let Some(tx) = path.parent().and_then(|d| routes.get(d)) {
                    // A full channel already holds a wake-up that covers this change.
                    let _ = tx.try_send(());
                }
            }
        })?;
        Ok(OutboundWatcher {
            watcher: Mutex::new(watcher),
            routes,
        })
    }

    /// Wakes `tx` on changes to `dir/outbound.db` until the registration is dropped.
    pub fn register(
        self: &Arc<Self>,
        dir: &Path,
        tx: mpsc::Sender<()>,
    ) -> notify::Result<Registration> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_path_buf(), tx);
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Registration {
            owner: Arc::clone(self),
            dir: dir.to_path_buf(),
        })
    }
}

pub struct Registration {
    owner: Arc<OutboundWatcher>,
    dir: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.owner
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.dir);
        // The directory may be gone already; nothing to undo then.
        let _ = self
            .owner
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwatch(&self.dir);
    }
}
