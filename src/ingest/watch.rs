//! The ingest worker: one thread that owns every sync, fed by the file watcher and by requests.
//!
//! The watcher is notify's native backend (inotify on Linux), which wakes us only when
//! something changes. Debouncing is done here rather than with notify-debouncer-full, whose
//! timer thread ticks several times a second even when nothing happens; an idle daemon must not
//! wake up at all. After the first event the worker keeps collecting until the folder has been
//! quiet for [`DEBOUNCE`], then syncs just the touched paths: atomic saves (write temp, rename
//! over) and moves arrive together and are seen as what they are. Renames paired by the
//! kernel (`Name(Both)`) are passed on so a moved-and-edited file keeps its identity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tracing::{debug, info, info_span, warn};

use super::{IngestError, Ingestor, Progress, RootInfo, Scope, SyncReport};

/// Quiet time after the last event before a batch is synced.
pub const DEBOUNCE: Duration = Duration::from_millis(120);
/// A steady stream of events is still synced at least this often.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(2);

pub type ProgressFn = Box<dyn FnMut(&Progress<'_>) + Send>;
pub type Reply<T> = Sender<Result<T, IngestError>>;

enum Work {
    Sync {
        root: RootInfo,
        scope: Scope,
        progress: Option<ProgressFn>,
        reply: Option<Reply<SyncReport>>,
    },
    Remove {
        path: PathBuf,
        reply: Reply<RootInfo>,
    },
    Events(Vec<notify::Event>),
    Stop,
}

/// What `daemon.status` shows about the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    pub watching: Vec<PathBuf>,
    pub queue_depth: usize,
    pub busy: bool,
    pub watcher_error: Option<String>,
}

pub struct Worker {
    tx: Sender<Work>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    watcher: Mutex<Option<RecommendedWatcher>>,
    watching: Mutex<Vec<PathBuf>>,
    watcher_error: Mutex<Option<String>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    pub fn start(ingestor: Arc<Ingestor>) -> Arc<Worker> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(AtomicBool::new(false));
        let events_tx = tx.clone();
        let events_queued = queued.clone();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                // Reads (open, close without writing) change nothing; inotify reports them for
                // every process that opens a note, our own reads included. Dropping them here
                // keeps the ingest thread asleep and the debounce window short.
                Ok(ev) if is_read_only(&ev.kind) => {}
                Ok(ev) => {
                    events_queued.fetch_add(1, Ordering::Relaxed);
                    let _ = events_tx.send(Work::Events(vec![ev]));
                }
                Err(e) => warn!(error = %e, "watcher error"),
            });
        let (watcher, watcher_error) = match watcher {
            Ok(w) => (Some(w), None),
            Err(e) => {
                warn!(error = %e, "file watching unavailable; changes are picked up on restart");
                (None, Some(e.to_string()))
            }
        };
        let thread = {
            let (queued, busy, cancel) = (queued.clone(), busy.clone(), cancel.clone());
            std::thread::Builder::new()
                .name("brain-ingest".into())
                .spawn(move || run(ingestor, rx, queued, busy, cancel))
                .ok()
        };
        Arc::new(Worker {
            tx,
            queued,
            busy,
            cancel,
            watcher: Mutex::new(watcher),
            watching: Mutex::new(Vec::new()),
            watcher_error: Mutex::new(watcher_error),
            thread: Mutex::new(thread),
        })
    }

    /// Starts watching a root's folder (idempotent).
    pub fn watch(&self, path: &Path) {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        if watching.iter().any(|p| p == path) {
            return;
        }
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watcher.as_mut()
            && let Err(e) = w.watch(path, RecursiveMode::Recursive)
        {
            warn!(path = %path.display(), error = %e, "cannot watch");
            *self.watcher_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            return;
        }
        watching.push(path.to_owned());
    }

    pub fn unwatch(&self, path: &Path) {
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        watching.retain(|p| p != path);
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let _ = w.unwatch(path);
        }
    }

    /// Queues a sync; returns at once.
    pub fn enqueue(&self, root: RootInfo, scope: Scope) {
        self.send(Work::Sync {
            root,
            scope,
            progress: None,
            reply: None,
        });
    }

    /// Queues a sync and waits for its report.
    pub fn sync_wait(
        &self,
        root: RootInfo,
        scope: Scope,
        progress: Option<ProgressFn>,
    ) -> Result<SyncReport, IngestError> {
        let (tx, rx) = mpsc::channel();
        self.send(Work::Sync {
            root,
            scope,
            progress,
            reply: Some(tx),
        });
        rx.recv().unwrap_or_else(|_| Err(IngestError::Stopped))
    }

    /// Removes a watched root, after any sync of it already queued.
    pub fn remove_wait(&self, path: &Path) -> Result<RootInfo, IngestError> {
        let (tx, rx) = mpsc::channel();
        self.send(Work::Remove {
            path: path.to_owned(),
            reply: tx,
        });
        let root = rx.recv().unwrap_or_else(|_| Err(IngestError::Stopped))?;
        self.unwatch(&root.path);
        Ok(root)
    }

    fn send(&self, w: Work) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(w).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn state(&self) -> WorkerState {
        WorkerState {
            watching: self
                .watching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            queue_depth: self.queued.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            watcher_error: self
                .watcher_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops watching, interrupts a long sync between batches (what is left is redone on the
    /// next start) and waits for the worker thread.
    pub fn stop(&self) {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Work::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(
    ingestor: Arc<Ingestor>,
    rx: Receiver<Work>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
) {
    let mut deferred: Vec<Work> = Vec::new();
    loop {
        let work = match deferred.pop() {
            Some(w) => w,
            None => match rx.recv() {
                Ok(w) => w,
                Err(_) => return,
            },
        };
        queued.fetch_sub(1, Ordering::Relaxed);
        busy.store(true, Ordering::Relaxed);
        match work {
            Work::Stop => return,
            Work::Sync {
                root,
                scope,
                mut progress,
                reply,
            } => {
                let _span = info_span!("ingest", root = %root.path.display()).entered();
                let mut noop = |_: &Progress<'_>| {};
                let cb: &mut dyn FnMut(&Progress<'_>) = match progress.as_mut() {
                    Some(p) => p.as_mut(),
                    None => &mut noop,
                };
                let r = ingestor.sync_cancellable(&root, &scope, cb, &cancel);
                match &r {
                    Ok(rep) => info!(
                        indexed = rep.indexed,
                        unchanged = rep.unchanged,
                        deleted = rep.deleted,
                        moved = rep.moved,
                        ms = rep.elapsed_ms,
                        "sync done"
                    ),
                    Err(e) => warn!(error = %e, "sync failed"),
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Work::Remove { path, reply } => {
                let _ = reply.send(ingestor.remove_root(&path));
            }
            Work::Events(first) => {
                let mut events = first;
                let started = Instant::now();
                loop {
                    if started.elapsed() > MAX_BATCH_WAIT {
                        break;
                    }
                    match rx.recv_timeout(DEBOUNCE) {
                        Ok(Work::Events(more)) => {
                            queued.fetch_sub(1, Ordering::Relaxed);
                            events.extend(more);
                        }
                        Ok(other) => deferred.insert(0, other),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                apply_events(&ingestor, events, &cancel);
            }
        }
        busy.store(false, Ordering::Relaxed);
        if cancel.load(Ordering::Relaxed) {
            return;
        }
    }
}

fn is_read_only(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

fn hidden(p: &Path) -> bool {
    p.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.starts_with('.') && s.len() > 1 && s != "..")
    })
}

/// A root, the paths touched under it, and the renames seen.
type RootChanges = (RootInfo, Vec<PathBuf>, Vec<(PathBuf, PathBuf)>);

/// Groups a batch of events by root and syncs the touched paths.
fn apply_events(ingestor: &Ingestor, events: Vec<notify::Event>, cancel: &AtomicBool) {
    let roots = match ingestor.roots(true) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot list roots");
            return;
        }
    };
    let mut per_root: HashMap<i64, RootChanges> = HashMap::new();
    for ev in events {
        if matches!(ev.kind, EventKind::Access(_)) {
            continue;
        }
        let rename = matches!(
            ev.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both))
        ) && ev.paths.len() == 2;
        for p in &ev.paths {
            let Some(root) = roots
                .iter()
                .filter(|r| p.starts_with(&r.path))
                .max_by_key(|r| r.path.as_os_str().len())
            else {
                continue;
            };
            let rel = p.strip_prefix(&root.path).unwrap_or(p);
            if hidden(rel)
                && !p
                    .file_name()
                    .is_some_and(|n| super::rules::IGNORE_FILES.iter().any(|f| n == *f))
            {
                continue;
            }
            let entry = per_root
                .entry(root.id)
                .or_insert_with(|| (root.clone(), Vec::new(), Vec::new()));
            entry.1.push(p.clone());
        }
        if rename {
            let (from, to) = (&ev.paths[0], &ev.paths[1]);
            if let Some(root) = roots
                .iter()
                .find(|r| from.starts_with(&r.path) && to.starts_with(&r.path))
                && let Some(entry) = per_root.get_mut(&root.id)
            {
                entry.2.push((from.clone(), to.clone()));
            }
        }
    }
    for (_, (root, mut paths, renames)) in per_root {
        paths.sort();
        paths.dedup();
        // An ignore file changed: its rules may hide or reveal anything below, so redo the root.
        let scope = if paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| super::rules::IGNORE_FILES.iter().any(|f| n == *f))
        }) {
            Scope::All
        } else {
            Scope::Paths { paths, renames }
        };
        debug!(root = %root.path.display(), ?scope, "applying changes");
        if let Err(e) = ingestor.sync_cancellable(&root, &scope, &mut |_| {}, cancel) {
            warn!(error = %e, "sync of changes failed");
        }
    }
}
