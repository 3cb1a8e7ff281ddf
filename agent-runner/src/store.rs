//! The runner's SQLite handles (`inbound.db` read-only, `outbound.db` read-write), owned by one
//! dedicated thread so that no SQLite call ever blocks a tokio worker. Async code sends it
//! closures and awaits their results. What the closures do is the business of `runner.rs` and
//! `turn.rs`.

use std::sync::mpsc;

use mailbox::{InboundReader, OutboundDb, SessionPaths};
use tokio::sync::oneshot;

/// The two databases of one session, as seen by the runner.
pub struct Dbs {
    pub inbound: InboundReader,
    pub outbound: OutboundDb,
}

/// The store could not be used. The runner stops: without its mailbox it can neither claim nor
/// answer, and the host re-queues whatever it had claimed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A mailbox operation failed (locked past the busy timeout, disk full, corrupt file).
    #[error(transparent)]
    Mailbox(#[from] mailbox::Error),
    /// The store thread could not be started (out of threads or memory).
    #[error("cannot start the mailbox thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The store thread is gone (it panicked).
    #[error("the mailbox thread stopped")]
    Closed,
}

type Job = Box<dyn FnOnce(&mut Dbs) + Send>;

/// Handle on the store thread. Cheap to clone; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
}

impl Store {
    /// Opens both databases on a new thread. `inbound.db` must exist (the host creates it before
    /// starting the runner); `outbound.db` is created and migrated if needed.
    pub async fn open(paths: SessionPaths) -> Result<Store, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, wait_opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("mailbox".to_owned())
            .spawn(move || {
                let dbs = InboundReader::open(&paths.inbound_db()).and_then(|inbound| {
                    Ok(Dbs {
                        inbound,
                        outbound: OutboundDb::open(&paths)?,
                    })
                });
                let mut dbs = match dbs {
                    Ok(dbs) => {
                        // The receiver only disappears if `open` was abandoned; then nobody
                        // will send jobs either and the loop below ends at once.
                        let _ = opened.send(Ok(()));
                        dbs
                    }
                    Err(err) => {
                        let _ = opened.send(Err(err));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut dbs);
                }
            })
            .map_err(StoreError::Thread)?;
        wait_opened.await.map_err(|_| StoreError::Closed)??;
        Ok(Store { jobs })
    }

    /// Runs `f` on the store thread and returns its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Dbs) -> Result<T, mailbox::Error> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |dbs| {
            // The caller may have gone away (cancelled); the work is done either way.
            let _ = done.send(f(dbs));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(result.await.map_err(|_| StoreError::Closed)??)
    }
}
