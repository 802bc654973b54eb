//! The ingest worker: one thread that owns every sync, fed by the file watcher and by requests.
//!
//! The watcher is notify's native backend (inotify on Linux), which wakes us only when
//! something changes. Debouncing is done here rather than with notify-debouncer-full, whose
//! timer thread ticks several times a second even when nothing happens; an idle daemon must not
//! wake up at all. After the first event the worker keeps collecting until the folder has been
//! quiet for [`DEBOUNCE`], then syncs just the touched paths: atomic saves (write temp, rename
//! over) and moves arrive together and are seen as what they are. Renames paired by the
//! kernel (`Name(Both)`) are passed on so a moved-and-edited file keeps its identity.
//!
//! A root that disappears (moved away, unmounted) is reported as missing and left as it was in
//! the store; its nearest existing ancestor is watched (events there that do not concern a
//! root are dropped in the watcher's own thread, so the worker stays asleep), and when the root
//! is back it is watched again and reconciled. A sync that fails for lack of space is reported
//! and retried with backoff until it succeeds.
//!
//! A recursive watch is all or nothing: one folder that cannot be watched (no permission, gone
//! mid-walk, out of inotify watches) fails it whole. Such a root is then watched folder by
//! folder instead; the folders that could not be watched are reported, a folder created (or
//! moved in) later is watched when its event arrives, and an event on an unwatched folder (its
//! permissions fixed, say) tries it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
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
/// First and longest wait before a sync that failed for lack of space is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

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
    /// Watched roots that are not on disk now.
    pub missing: Vec<PathBuf>,
    pub queue_depth: usize,
    pub busy: bool,
    pub watcher_error: Option<String>,
    /// Folders inside watched roots that could not be watched, so changes there go unseen.
    pub unwatched: Vec<PathBuf>,
    /// Why the last sync failed, while it is being retried.
    pub sync_error: Option<String>,
}

/// What the worker, its thread and the watcher's callback share.
#[derive(Default)]
struct Shared {
    watcher: Mutex<Option<RecommendedWatcher>>,
    paths: Mutex<Paths>,
    /// What the watcher's callback reads to drop foreign events: a copy of `paths`' roots,
    /// published after each change. The callback runs on notify's event thread, which is also
    /// the thread that carries out `watch`/`unwatch`; those are called with `paths` held, so
    /// the callback must never wait for `paths`, only for this lock, which is held for a copy.
    filter: Mutex<Filter>,
    watcher_error: Mutex<Option<String>>,
    sync_error: Mutex<Option<String>>,
}

/// The folders the worker cares about, read by the watcher's callback to drop foreign events.
#[derive(Default)]
struct Paths {
    watching: Vec<PathBuf>,
    /// A missing root and the ancestor watched (non-recursively) until it comes back, if any.
    missing: Vec<(PathBuf, Option<PathBuf>)>,
    /// Roots a recursive watch failed for, with the folders watched one by one under each.
    by_folder: HashMap<PathBuf, Vec<PathBuf>>,
    /// Folders under those roots that could not be watched, with why.
    unwatched: Vec<(PathBuf, String)>,
}

/// The roots the watcher's callback lets events through for.
#[derive(Default)]
struct Filter {
    watching: Vec<PathBuf>,
    missing: Vec<PathBuf>,
}

impl Filter {
    /// An event matters if it is under a watched root, or on the way to a missing one.
    fn concerns(&self, p: &Path) -> bool {
        self.watching.iter().any(|w| p.starts_with(w))
            || self.missing.iter().any(|m| m.starts_with(p))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Copies the roots the callback filters on; called with `paths` held, after a change.
    fn publish(&self, paths: &Paths) {
        *lock(&self.filter) = Filter {
            watching: paths.watching.clone(),
            missing: paths.missing.iter().map(|(m, _)| m.clone()).collect(),
        };
    }

    /// Starts watching a root's folder (idempotent); a folder not on disk is recorded missing.
    /// When the recursive watch fails, the root is watched folder by folder
    /// ([`Shared::watch_folders`]) and still counts as watched.
    fn watch(&self, path: &Path) {
        // The same test a sync makes: a root that is now a symlink would share its target's
        // inotify watch, and unwatching one would unwatch the other.
        if !super::walk::root_present(path) {
            self.mark_missing(path);
            return;
        }
        let mut paths = lock(&self.paths);
        if paths.watching.iter().any(|p| p == path) {
            return;
        }
        let mut watcher = lock(&self.watcher);
        let Some(w) = watcher.as_mut() else {
            // No watcher at all: `watcher_error` says so already.
            paths.watching.push(path.to_owned());
            self.publish(&paths);
            return;
        };
        // Left from an earlier time this root was watched (before it went missing, say).
        forget_folders(&mut paths, w, path);
        if let Err(e) = w.watch(path, RecursiveMode::Recursive) {
            warn!(path = %path.display(), error = %e, "cannot watch the whole root; watching it folder by folder");
            // What the failed recursive watch added before it stopped.
            let _ = w.unwatch(path);
            paths.by_folder.insert(path.to_owned(), Vec::new());
            watch_folders(&mut paths, w, path, path);
        }
        paths.watching.push(path.to_owned());
        self.publish(&paths);
    }

    fn unwatch(&self, path: &Path) {
        let mut paths = lock(&self.paths);
        let mut watcher = lock(&self.watcher);
        if let Some(pos) = paths.watching.iter().position(|p| p == path) {
            paths.watching.remove(pos);
            if let Some(w) = watcher.as_mut() {
                let _ = w.unwatch(path);
                forget_folders(&mut paths, w, path);
            }
        }
        if let Some(pos) = paths.missing.iter().position(|(m, _)| m == path) {
            let (_, ancestor) = paths.missing.remove(pos);
            release_ancestor(&mut paths, &mut watcher, ancestor);
        }
        self.publish(&paths);
    }

    /// Watches the folders a batch of events names under roots watched folder by folder: new
    /// ones (created or moved in) and ones that could not be watched before. Runs before the
    /// batch is synced, so what a new folder holds is found by that sync.
    fn watch_new_folders(&self, events: &[notify::Event]) {
        let mut paths = lock(&self.paths);
        if paths.by_folder.is_empty() {
            return;
        }
        let mut watcher = lock(&self.watcher);
        let Some(w) = watcher.as_mut() else {
            return;
        };
        // A folder removed since is no longer a blind spot.
        paths.unwatched.retain(|(u, _)| u.is_dir());
        for p in events.iter().flat_map(|ev| &ev.paths) {
            let Some(root) = paths.by_folder.keys().find(|r| p.starts_with(r)).cloned() else {
                continue;
            };
            // Watched again even if it was before: a folder removed and made anew has lost its
            // watch, and watching a watched folder again changes nothing.
            let rel = p.strip_prefix(&root).unwrap_or(p);
            if hidden(rel) || !p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                continue;
            }
            watch_folders(&mut paths, w, &root, p);
        }
    }
    /// Records a root as missing: its watches go, and its nearest existing ancestor is watched
    /// so its return is noticed without polling.
    fn mark_missing(&self, root: &Path) {
        let mut paths = lock(&self.paths);
        if paths.missing.iter().any(|(m, _)| m == root) {
            return;
        }
        let mut watcher = lock(&self.watcher);
        if let Some(pos) = paths.watching.iter().position(|p| p == root) {
            paths.watching.remove(pos);
            if let Some(w) = watcher.as_mut() {
                let _ = w.unwatch(root);
            }
        }
        let ancestor = root
            .ancestors()
            .skip(1)
            .find(|a| a.is_dir())
            .map(Path::to_owned);
        // An ancestor inside a watched root is seen already; one watched for another missing
        // root is shared.
        let ancestor = ancestor.filter(|a| !paths.watching.iter().any(|w| a.starts_with(w)));
        let shared = ancestor
            .as_ref()
            .is_some_and(|a| paths.missing.iter().any(|(_, b)| b.as_ref() == Some(a)));
        let ancestor = match ancestor {
            Some(a) if !shared => match watcher
                .as_mut()
                .map(|w| w.watch(&a, RecursiveMode::NonRecursive))
            {
                Some(Err(e)) => {
                    warn!(path = %a.display(), error = %e, "cannot watch the folder of a missing root");
                    None
                }
                Some(Ok(())) => Some(a),
                None => None,
            },
            other => other,
        };
        warn!(root = %root.display(), "watched root is missing; its notes are kept until it is back");
        paths.missing.push((root.to_owned(), ancestor));
        self.publish(&paths);
    }

    /// Missing roots that are back on disk, no longer recorded missing.
    fn take_returned(&self) -> Vec<PathBuf> {
        let mut paths = lock(&self.paths);
        let mut watcher = lock(&self.watcher);
        let mut back = Vec::new();
        let mut i = 0;
        while i < paths.missing.len() {
            if super::walk::root_present(&paths.missing[i].0) {
                let (root, ancestor) = paths.missing.remove(i);
                release_ancestor(&mut paths, &mut watcher, ancestor);
                back.push(root);
            } else {
                i += 1;
            }
        }
        self.publish(&paths);
        back
    }

    fn set_sync_error(&self, e: Option<String>) {
        *lock(&self.sync_error) = e;
    }
}

/// Watches `top` and every folder below it (hidden ones aside: their events are dropped) one
/// by one, for `root`. A folder that cannot be watched is recorded in `unwatched`, and so is
/// one that cannot be listed; one that can is taken off that list.
fn watch_folders(paths: &mut Paths, w: &mut RecommendedWatcher, root: &Path, top: &Path) {
    let mut stack = vec![top.to_owned()];
    while let Some(dir) = stack.pop() {
        paths.unwatched.retain(|(u, _)| *u != dir);
        if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
            warn!(path = %dir.display(), error = %e, "cannot watch folder; changes in it go unseen");
            paths.unwatched.push((dir, e.to_string()));
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(path = %dir.display(), error = %e, "cannot list folder; its subfolders go unwatched");
                paths.unwatched.push((dir.clone(), e.to_string()));
                let folders = paths.by_folder.entry(root.to_owned()).or_default();
                if !folders.contains(&dir) {
                    folders.push(dir);
                }
                continue;
            }
        };
        for e in entries.flatten() {
            let hidden = e.file_name().to_str().is_some_and(|n| n.starts_with('.'));
            if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        let folders = paths.by_folder.entry(root.to_owned()).or_default();
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }
}

/// Drops the folder-by-folder watches of `root`, if it had any, and what was unwatched in it.
fn forget_folders(paths: &mut Paths, w: &mut RecommendedWatcher, root: &Path) {
    for f in paths.by_folder.remove(root).unwrap_or_default() {
        let _ = w.unwatch(&f);
    }
    paths.unwatched.retain(|(u, _)| !u.starts_with(root));
}

/// Stops watching a missing root's ancestor unless another missing root still needs it.
fn release_ancestor(
    paths: &mut Paths,
    watcher: &mut Option<RecommendedWatcher>,
    ancestor: Option<PathBuf>,
) {
    if let Some(a) = ancestor
        && !paths.missing.iter().any(|(_, b)| b.as_ref() == Some(&a))
        && let Some(w) = watcher.as_mut()
    {
        let _ = w.unwatch(&a);
    }
}

pub struct Worker {
    tx: Sender<Work>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    pub fn start(ingestor: Arc<Ingestor>) -> Arc<Worker> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let events_tx = tx.clone();
        let events_queued = queued.clone();
        // The callback holds the shared state weakly: the watcher lives inside it.
        let events_shared = Arc::downgrade(&shared);
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                // Reads (open, close without writing) change nothing; inotify reports them for
                // every process that opens a note, our own reads included. Dropping them here
                // keeps the ingest thread asleep and the debounce window short.
                Ok(ev) if is_read_only(&ev.kind) => {}
                Ok(ev) => {
                    let Some(shared) = events_shared.upgrade() else {
                        return;
                    };
                    // Events beside a missing root, in the folder watched for its return.
                    if !ev.paths.iter().any(|p| lock(&shared.filter).concerns(p)) {
                        return;
                    }
                    events_queued.fetch_add(1, Ordering::Relaxed);
                    let _ = events_tx.send(Work::Events(vec![ev]));
                }
                Err(e) => warn!(error = %e, "watcher error"),
            });
        match watcher {
            Ok(w) => *lock(&shared.watcher) = Some(w),
            Err(e) => {
                warn!(error = %e, "file watching unavailable; changes are picked up on restart");
                *lock(&shared.watcher_error) = Some(e.to_string());
            }
        }
        let thread = {
            let (queued, busy, cancel, shared) =
                (queued.clone(), busy.clone(), cancel.clone(), shared.clone());
            // `BRAIN_FAILPOINT=ingest_panic` panics in the first sync once (crash tests).
            let mut failpoint = std::env::var("BRAIN_FAILPOINT").is_ok_and(|f| f == "ingest_panic");
            let mut restarted = false;
            // Supervised: a panic in a sync is reported and the worker starts again with the
            // same queue; what the panicking sync did not commit is redone by the next one.
            crate::supervise::spawn("brain-ingest", move || {
                busy.store(false, Ordering::Relaxed);
                let reconcile = std::mem::replace(&mut restarted, true);
                run(
                    &ingestor,
                    &rx,
                    &queued,
                    &busy,
                    &cancel,
                    &shared,
                    Start {
                        panic_once: std::mem::take(&mut failpoint),
                        reconcile,
                    },
                )
            })
            .ok()
        };
        Arc::new(Worker {
            tx,
            queued,
            busy,
            cancel,
            shared,
            thread: Mutex::new(thread),
        })
    }

    /// Starts watching a root's folder (idempotent).
    pub fn watch(&self, path: &Path) {
        self.shared.watch(path);
    }

    pub fn unwatch(&self, path: &Path) {
        self.shared.unwatch(path);
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
        let paths = lock(&self.shared.paths);
        WorkerState {
            watching: paths.watching.clone(),
            missing: paths.missing.iter().map(|(m, _)| m.clone()).collect(),
            queue_depth: self.queued.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            watcher_error: lock(&self.shared.watcher_error).clone(),
            unwatched: paths.unwatched.iter().map(|(u, _)| u.clone()).collect(),
            sync_error: lock(&self.shared.sync_error).clone(),
        }
    }

    /// Stops watching, interrupts a long sync between batches (what is left is redone on the
    /// next start) and waits for the worker thread.
    pub fn stop(&self) {
        lock(&self.shared.watcher).take();
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Work::Stop);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

/// How a run of the worker's loop begins.
struct Start {
    /// Panic in the first sync (the `ingest_panic` failpoint).
    panic_once: bool,
    /// A run after a panic: reconcile every watched root first.
    reconcile: bool,
}

/// Syncs that failed for lack of space, by root id, waiting to be tried again.
#[derive(Default)]
struct Retries(HashMap<i64, (RootInfo, Instant, Duration)>);

impl Retries {
    fn next_due(&self) -> Option<Instant> {
        self.0.values().map(|(_, due, _)| *due).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<(RootInfo, Duration)> {
        let due: Vec<i64> = self
            .0
            .iter()
            .filter(|(_, (_, at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.0.remove(&id).map(|(root, _, wait)| (root, wait)))
            .collect()
    }
}

/// What the worker thread owns besides its queue.
struct Runner {
    ingestor: Arc<Ingestor>,
    shared: Arc<Shared>,
    cancel: Arc<AtomicBool>,
    retries: Retries,
    /// The wait before the next retry of a root, grown on each failure.
    backoff: HashMap<i64, Duration>,
}

impl Runner {
    fn sync(
        &mut self,
        root: &RootInfo,
        scope: &Scope,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<SyncReport, IngestError> {
        let r = self
            .ingestor
            .sync_cancellable(root, scope, progress, &self.cancel);
        self.settle(root, scope, &r);
        r
    }

    /// Records how a sync of `root` ended: a missing root is reported and watched for, a
    /// failure for lack of space is reported and retried, a success clears both.
    fn settle(&mut self, root: &RootInfo, scope: &Scope, r: &Result<SyncReport, IngestError>) {
        match r {
            // Full syncs are lifecycle; the small syncs of watched changes are not.
            Ok(rep) if matches!(scope, Scope::All) => {
                info!(
                    indexed = rep.indexed,
                    unchanged = rep.unchanged,
                    deleted = rep.deleted,
                    moved = rep.moved,
                    ms = rep.elapsed_ms,
                    "sync done"
                );
                self.succeeded(root);
            }
            Ok(_) => self.succeeded(root),
            Err(IngestError::RootMissing(path)) => {
                if root.watched {
                    self.shared.mark_missing(path);
                }
            }
            Err(e) if e.is_disk_full() => {
                let wait = self
                    .backoff
                    .get(&root.id)
                    .map_or(RETRY_FIRST, |w| (*w * 2).min(RETRY_MAX));
                self.backoff.insert(root.id, wait);
                warn!(root = %root.path.display(), error = %e, retry_in_s = wait.as_secs(), "sync failed for lack of space");
                self.shared.set_sync_error(Some(format!(
                    "sync of {} failed: {e}; free some space, it is retried every {} s at most",
                    root.path.display(),
                    RETRY_MAX.as_secs()
                )));
                self.retries
                    .0
                    .insert(root.id, (root.clone(), Instant::now() + wait, wait));
            }
            Err(e @ IngestError::RootRemoved(_)) => debug!(error = %e, "sync stopped"),
            Err(e) => warn!(error = %e, "sync failed"),
        }
    }

    /// A sync of `root` succeeded: a failure it was being retried for is over.
    fn succeeded(&mut self, root: &RootInfo) {
        if self.backoff.remove(&root.id).is_some() {
            info!(root = %root.path.display(), "sync succeeded after failing for lack of space");
        }
        if self.backoff.is_empty() {
            self.shared.set_sync_error(None);
        }
    }

    /// Missing roots that came back are watched again and reconciled.
    fn bring_back_returned(&mut self) {
        for path in self.shared.take_returned() {
            info!(root = %path.display(), "watched root is back; reconciling");
            self.shared.watch(&path);
            let root = match self.ingestor.roots(true) {
                Ok(roots) => roots.into_iter().find(|r| r.path == path),
                Err(e) => {
                    warn!(error = %e, "cannot list roots");
                    None
                }
            };
            if let Some(root) = root {
                let _ = self.sync(&root, &Scope::All, &mut |_| {});
            }
        }
    }

    fn retry_due(&mut self) {
        for (root, _) in self.retries.take_due(Instant::now()) {
            let _span = info_span!("ingest", root = %root.path.display()).entered();
            info!("retrying a sync that failed for lack of space");
            let _ = self.sync(&root, &Scope::All, &mut |_| {});
        }
    }
}

fn run(
    ingestor: &Arc<Ingestor>,
    rx: &Receiver<Work>,
    queued: &AtomicUsize,
    busy: &AtomicBool,
    cancel: &Arc<AtomicBool>,
    shared: &Arc<Shared>,
    start: Start,
) {
    let mut runner = Runner {
        ingestor: ingestor.clone(),
        shared: shared.clone(),
        cancel: cancel.clone(),
        retries: Retries::default(),
        backoff: HashMap::new(),
    };
    // After a panic, the sync it broke off (and any reply it owed) is gone: every watched root
    // is reconciled instead, which redoes whatever it left undone.
    if start.reconcile {
        busy.store(true, Ordering::Relaxed);
        match runner.ingestor.roots(true) {
            Ok(roots) => {
                for root in roots {
                    let _span = info_span!("ingest", root = %root.path.display()).entered();
                    let _ = runner.sync(&root, &Scope::All, &mut |_| {});
                }
            }
            Err(e) => warn!(error = %e, "cannot list roots"),
        }
        busy.store(false, Ordering::Relaxed);
    }
    let mut deferred: Vec<Work> = Vec::new();
    loop {
        let work = match deferred.pop() {
            Some(w) => w,
            // Asleep until work arrives, or until a retry is due: no timer runs otherwise.
            None => match runner.retries.next_due() {
                None => match rx.recv() {
                    Ok(w) => w,
                    Err(_) => return,
                },
                Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => {
                        busy.store(true, Ordering::Relaxed);
                        runner.retry_due();
                        busy.store(false, Ordering::Relaxed);
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
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
                if start.panic_once {
                    panic!("failpoint ingest_panic");
                }
                let mut noop = |_: &Progress<'_>| {};
                let cb: &mut dyn FnMut(&Progress<'_>) = match progress.as_mut() {
                    Some(p) => p.as_mut(),
                    None => &mut noop,
                };
                let r = runner.sync(&root, &scope, cb);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Work::Remove { path, reply } => {
                let r = runner.ingestor.remove_root(&path);
                if let Ok(root) = &r {
                    runner.retries.0.remove(&root.id);
                    runner.backoff.remove(&root.id);
                    if runner.backoff.is_empty() {
                        runner.shared.set_sync_error(None);
                    }
                }
                let _ = reply.send(r);
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
                runner.bring_back_returned();
                runner.shared.watch_new_folders(&events);
                apply_events(&mut runner, events);
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
fn apply_events(runner: &mut Runner, events: Vec<notify::Event>) {
    let roots = match runner.ingestor.roots(true) {
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
        let _ = runner.sync(&root, &scope, &mut |_| {});
    }
}
