//! The index's lifecycle: the indexing worker, catch-up from the outbox, rebuilds, damage
//! found and repaired, and memory given back after a burst. Must not answer queries.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::index::{self, ChunkDoc, IndexError, Payload, TextIndex};
use super::{IndexState, Search, SearchError};
use crate::{clock, store};

/// Outbox rows applied per index commit during catch-up, at most.
const APPLY_PAGE: usize = 20_000;
/// Chunk text read per outbox page during catch-up, at most (plus one note's): what the
/// indexer holds in documents while the index writer's thread indexes the page before.
/// Measured on a 94 MB docs folder, where a cold ingest queues all 14k notes before the
/// indexer reads them: a page of every note held 290 MiB at peak.
const APPLY_BYTES: usize = 4 << 20;
/// Chunk text applied per index commit, at most (plus one page's): the index writer's memory
/// grows with what it holds uncommitted (up to its own budget, where it writes a segment
/// anyway), and each commit waits for indexing to finish and writes a segment that merges
/// later rewrite. (When each 16 MiB page was a commit, the same 94 MB folder's ingest peaked
/// 0.0 MiB higher than without indexing.)
const COMMIT_BYTES: usize = 16 << 20;
/// Notes reindexed that make a burst worth giving memory back after: a large ingest, not the
/// edits of someone typing.
const BURST_NOTES: usize = 256;
/// How long the indexer waits, after a burst, for more work before giving memory back.
const QUIET_AFTER_BURST: Duration = Duration::from_secs(3);
/// After a failed catch-up (a full disk, a damaged index being replaced) the indexer tries
/// again this soon without being asked, doubling the wait each time up to [`RETRY_MAX`]: the
/// index catches up on its own once the cause is gone.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the index writer holds that is not committed yet.
#[derive(Default)]
struct Uncommitted {
    /// Each note applied, with its chunks' ids as last applied.
    notes: HashMap<String, Vec<String>>,
    /// Chunk text applied.
    bytes: usize,
}

impl Uncommitted {
    /// Takes in a page applied to the writer: a note queued again takes its latest chunks.
    fn absorb(&mut self, notes: Vec<String>, docs: &[ChunkDoc]) {
        for n in notes {
            self.notes.insert(n, Vec::new());
        }
        for d in docs {
            self.bytes += d.body.len();
            if let Some(chunks) = self.notes.get_mut(&*d.note_id) {
                chunks.push(d.chunk_id.clone());
            }
        }
    }
}

/// Who applies the outbox, which decides whether a commit also trims it in the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Applier {
    /// A writer's own thread at the end of its work (a sync, a workflow step): nothing else
    /// is writing, so the outbox is trimmed with each commit.
    Caller,
    /// The indexing worker, woken between the write batches of a long sync: trimming would
    /// take the store's one write connection and wait for the batch being written, stalling the
    /// slowest stage of the ingest. Its commits leave the outbox as it is (pages start after
    /// `applied`, so rows at or before it are never read again) for the caller's catch-up at
    /// the sync's end, or the worker's own once the burst is over, to trim.
    Worker,
}

impl Search {
    pub(super) fn state(&self) -> IndexState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_state(&self, s: IndexState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The text index as it is now; a reader keeps its handle for the whole query even if the
    /// index is swapped meanwhile.
    pub(super) fn text(&self) -> Arc<TextIndex> {
        self.text.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A reader found `text` damaged: the indexing worker moves it aside and rebuilds. Damage
    /// found in an index already replaced is old news and ignored.
    pub(super) fn report_damage(&self, text: &Arc<TextIndex>, reason: String) {
        if !Arc::ptr_eq(text, &self.text()) {
            return;
        }
        warn!(%reason, "search index damaged; it will be rebuilt");
        let mut d = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_none() {
            *d = Some(reason);
        }
        drop(d);
        self.kick_indexer();
    }

    /// Moves the damaged index aside, puts an empty one in its place and marks it for a
    /// rebuild. The caller holds `index_lock`.
    pub(super) fn replace_damaged(&self, reason: &str) -> Result<(), SearchError> {
        let (fresh, _) = TextIndex::replace_damaged(&self.dir, reason)?;
        *self.text.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.applied.store(0, Ordering::SeqCst);
        self.rebuilding.store(true, Ordering::SeqCst);
        self.verify.store(false, Ordering::SeqCst);
        self.set_state(IndexState::Rebuilding);
        *self.last_damage.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{}: {reason}", clock::now()));
        Ok(())
    }

    /// Repairs what readers reported, and on the first run checks an index found on disk
    /// against its checksums. The caller holds `index_lock`.
    pub(super) fn repair_if_damaged(&self) -> Result<(), SearchError> {
        let reported = self.damage.lock().unwrap_or_else(|p| p.into_inner()).take();
        let reason = match reported {
            Some(r) => Some(r),
            None if self.verify.swap(false, Ordering::SeqCst) => {
                let damaged = self.text().damaged_files();
                (!damaged.is_empty())
                    .then(|| format!("checksum mismatch in {}", damaged.join(", ")))
            }
            None => None,
        };
        let Some(reason) = reason else {
            return Ok(());
        };
        self.replace_damaged(&reason).inspect_err(|_| {
            // Not repaired (no room for an empty index, say): the worker's retry tries again.
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        })
    }

    /// Asks the indexing worker to apply what the store queued, without waiting for it: a long
    /// write (a large ingest) calls this between its transactions, so indexing overlaps with
    /// writing instead of stalling it.
    pub fn kick_indexer(&self) {
        let (lock, cv) = &self.index_signal;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// The indexing worker: brings the index up to date, then again each time it is kicked.
    ///
    /// The index is the last stage of every write (ingest → store → outbox → index), so this
    /// worker is what notices a burst of work ending: once [`BURST_NOTES`] notes were reindexed
    /// (here or by a caller's catch-up, which then kicks this worker) and it has gone
    /// [`QUIET_AFTER_BURST`] without being kicked again, it gives the memory the burst used
    /// back ([`Search::release_memory`]). The wait is one timeout, not a poll: after it the
    /// worker sleeps until kicked. After a failure (a full disk, say) it tries again after
    /// [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], without waiting for a kick.
    pub(super) fn index_loop(&self) {
        let mut retry = RETRY_FIRST;
        loop {
            let failed = match self.bring_up_to_date_as(Applier::Worker) {
                Ok(()) => {
                    retry = RETRY_FIRST;
                    false
                }
                Err(e) => {
                    warn!(error = %e, "search index catch-up failed");
                    true
                }
            };
            if self.failpoint.as_deref() == Some("search_index_panic")
                && !self.failpoint_fired.swap(true, Ordering::SeqCst)
            {
                panic!("failpoint search_index_panic");
            }
            let (lock, cv) = &self.index_signal;
            let mut kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
            if failed {
                let (guard, _) = cv
                    .wait_timeout_while(kicked, retry, |k| {
                        !*k && !self.stopping.load(Ordering::SeqCst)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                kicked = guard;
                retry = (retry * 2).min(RETRY_MAX);
                *kicked = true;
            } else if self.burst.load(Ordering::SeqCst) >= BURST_NOTES {
                let (guard, _) = cv
                    .wait_timeout_while(kicked, QUIET_AFTER_BURST, |k| {
                        !*k && !self.stopping.load(Ordering::SeqCst)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                kicked = guard;
                if !*kicked && !self.stopping.load(Ordering::SeqCst) {
                    drop(kicked);
                    self.burst.store(0, Ordering::SeqCst);
                    if let Err(e) = self.trim_outbox() {
                        warn!(error = %e, "search outbox trim failed");
                    }
                    self.release_memory();
                    kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            while !*kicked && !self.stopping.load(Ordering::SeqCst) {
                kicked = cv.wait(kicked).unwrap_or_else(|p| p.into_inner());
            }
            *kicked = false;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Gives back what a burst of work left behind: the store's page caches, then whatever
    /// the allocator holds free ([`crate::memory::release`]).
    pub(super) fn release_memory(&self) {
        let started = Instant::now();
        self.store.release_memory();
        crate::memory::release();
        debug!(
            ms = started.elapsed().as_millis() as u64,
            "memory released after a burst of work"
        );
    }

    /// Repairs a damaged index, then runs a pending rebuild or catches up: the index reflects
    /// the store when it returns. A panic inside tantivy (a damaged file) is caught, reported
    /// as damage and returned as an error, so a caller's thread (an ingest) never unwinds.
    pub fn bring_up_to_date(&self) -> Result<(), SearchError> {
        self.bring_up_to_date_as(Applier::Caller)
    }

    /// [`Search::bring_up_to_date`] for `applier`.
    pub(super) fn bring_up_to_date_as(&self, applier: Applier) -> Result<(), SearchError> {
        let text = self.text();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            {
                let _lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
                self.repair_if_damaged()?;
            }
            if self.rebuilding.load(Ordering::SeqCst) {
                self.rebuild()?;
            } else {
                self.catch_up_as(applier)?;
            }
            Ok(())
        }));
        match outcome {
            Ok(r) => r,
            Err(panic) => {
                let reason = format!(
                    "panic while indexing: {}",
                    crate::supervise::panic_message(panic.as_ref())
                );
                self.report_damage(&text, reason.clone());
                Err(SearchError::Index(IndexError::Panicked(reason)))
            }
        }
    }

    /// Applies every queued change to the index and commits. Returns the notes reindexed.
    /// Whichever thread fails (the worker, or an ingest catching up at its end), the state says
    /// so until a catch-up succeeds; both are decided under the index lock, so they cannot
    /// cross.
    pub fn catch_up(&self) -> Result<usize, SearchError> {
        self.catch_up_as(Applier::Caller)
    }

    /// [`Search::catch_up`] for `applier`.
    fn catch_up_as(&self, applier: Applier) -> Result<usize, SearchError> {
        let _lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.rebuilding.load(Ordering::SeqCst) {
            // The rebuild owns the index until it is done; it applies the outbox too.
            return Ok(0);
        }
        let applied = self.apply_outbox(applier);
        // What the worker applied during a burst is trimmed by the caller that ends it.
        let applied = match (applied, applier) {
            (Ok(n), Applier::Caller) => self.trim_outbox().map(|()| n),
            (r, _) => r,
        };
        match &applied {
            Ok(_) if matches!(self.state(), IndexState::Failed(_)) => {
                self.set_state(IndexState::Ready)
            }
            Ok(_) => {}
            Err(e) => self.set_state(IndexState::Failed(e.to_string())),
        }
        applied
    }

    /// The body of [`Search::catch_up`]; the caller holds `index_lock`.
    ///
    /// Pages are read while the index writer's own thread indexes the page before, and
    /// committed every [`COMMIT_BYTES`] of text and once the queue is empty: reading the store
    /// and indexing overlap, and a commit (which waits for indexing to finish and writes a
    /// segment) comes once per few pages.
    pub(super) fn apply_outbox(&self, applier: Applier) -> Result<usize, SearchError> {
        let text = self.text();
        let mut total = 0;
        let mut after = self.applied.load(Ordering::SeqCst);
        let mut pending = Uncommitted::default();
        loop {
            let index::OutboxPage { notes, docs, head } = self
                .store
                .read(|c| index::outbox_page(c, after, APPLY_PAGE, APPLY_BYTES))?;
            let last = notes.is_empty();
            if !last {
                // A failed write (a full disk, say) drops the writer with everything it holds
                // uncommitted: the outbox still holds it, and the next catch-up applies it
                // again from the last commit with a new writer.
                text.with_writer(|writer| {
                    for n in &notes {
                        text.delete_note(writer, n);
                    }
                    for d in &docs {
                        text.add(writer, d)?;
                    }
                    Ok(())
                })
                .inspect_err(|e| self.damage_from_writer(e))?;
                after = head;
                pending.absorb(notes, &docs);
            }
            if pending.notes.is_empty() || (!last && pending.bytes < COMMIT_BYTES) {
                if last {
                    break;
                }
                continue;
            }
            text.with_writer(|writer| text.commit(writer, &self.payload(after)))
                .inspect_err(|e| self.damage_from_writer(e))?;
            self.applied.store(after, Ordering::SeqCst);
            if applier == Applier::Caller {
                self.trim_outbox()?;
            }
            let done = std::mem::take(&mut pending);
            let work = done.notes.len();
            self.after_commit(done.notes, work);
            total += work;
            if last {
                break;
            }
        }
        Ok(total)
    }

    /// A writer error that says the index on disk is damaged (not merely a full disk) is
    /// reported, so the index is moved aside and rebuilt rather than retried for ever. An
    /// index folder removed or replaced under the daemon is damage whatever tantivy said
    /// (a lock file it cannot create, a segment it cannot write).
    pub(super) fn damage_from_writer(&self, e: &IndexError) {
        use tantivy::TantivyError as T;
        let damaged = matches!(
            e,
            IndexError::Panicked(_)
                | IndexError::Tantivy(
                    T::DataCorruption(_) | T::OpenReadError(_) | T::IncompatibleIndex(_)
                )
        );
        let gone = !self.dir.join("meta.json").is_file();
        if damaged || gone {
            let reason = if gone && !damaged {
                format!("index folder gone or replaced ({e})")
            } else {
                e.to_string()
            };
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        }
    }

    /// What a commit reflecting outbox position `seq` records.
    pub(super) fn payload(&self, seq: i64) -> Payload {
        Payload {
            format: index::INDEX_FORMAT,
            store_id: self.store_id.clone(),
            seq,
        }
    }

    /// Rebuilds the index from scratch from the store's current chunks.
    pub fn rebuild(&self) -> Result<(usize, f64), SearchError> {
        let started = Instant::now();
        let lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        // An index that cannot be written at all is replaced first: `search.reindex` works
        // on a damaged index too.
        self.repair_if_damaged()?;
        self.rebuilding.store(true, Ordering::SeqCst);
        self.set_state(IndexState::Rebuilding);
        let text = self.text();
        let result = (|| {
            // One read transaction: the chunks and the outbox head are the same snapshot, so
            // nothing written meanwhile is missed (it lands in the outbox after `head`).
            // The documents go to the writer as they are read, so a rebuild holds one at a
            // time (the writer flushes at its memory budget), whatever the store's size.
            let (head, count) = self
                .store
                .read(|c| {
                    let tx = c.unchecked_transaction()?;
                    let head = index::outbox_head(&tx)?;
                    let count = text.with_writer(|writer| {
                        writer.delete_all_documents()?;
                        let mut count = 0;
                        index::each_doc(&tx, None, &mut |d| {
                            count += 1;
                            text.add(writer, &d)
                        })?;
                        text.commit(writer, &self.payload(head))?;
                        Ok(count)
                    })?;
                    tx.finish()?;
                    Ok::<_, IndexError>((head, count))
                })
                .inspect_err(|e| self.damage_from_writer(e))?;
            self.applied.store(head, Ordering::SeqCst);
            self.trim_outbox()?;
            self.after_commit(HashMap::new(), count);
            Ok::<_, SearchError>(count)
        })();
        let chunks = match result {
            Ok(c) => c,
            Err(e) => {
                // Back to the last commit (the writer was dropped with the batch); the rebuild
                // stays pending and the worker tries again.
                self.set_state(IndexState::Failed(e.to_string()));
                return Err(e);
            }
        };
        self.rebuilding.store(false, Ordering::SeqCst);
        self.set_state(IndexState::Ready);
        drop(lock);
        let secs = started.elapsed().as_secs_f64();
        info!(chunks, secs, "search index rebuilt");
        // What arrived while rebuilding.
        self.catch_up()?;
        Ok((chunks, secs))
    }

    /// Drops the outbox rows the index has committed and records its position in the store,
    /// if any are left; a store write only when there is something to trim.
    pub(super) fn trim_outbox(&self) -> Result<(), SearchError> {
        let head = self.applied.load(Ordering::SeqCst);
        let stale: bool = self.store.read(|c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM search_outbox WHERE seq <= ?1)",
                [head],
                |r| r.get(0),
            )
        })?;
        if stale {
            self.store.write(|tx| {
                tx.execute("DELETE FROM search_outbox WHERE seq <= ?1", [head])?;
                store::meta_set(tx, "search.index_seq", &head.to_string())
            })?;
        }
        Ok(())
    }

    /// After a commit: vectors of `notes`' chunks not among `docs` are dropped, the embedder is
    /// woken, and the `work` done counts towards a burst.
    pub(super) fn after_commit(&self, notes: HashMap<String, Vec<String>>, work: usize) {
        // The sets are built only when there are vectors to retire: without a model they were
        // a copy of every chunk id of a cold ingest for nothing. A model loaded meanwhile reads
        // its vectors from the store, as when it is loaded after this commit.
        let vectors = self
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if vectors && !notes.is_empty() {
            let current: HashSet<String> = notes.values().flatten().cloned().collect();
            let notes: HashSet<String> = notes.into_keys().collect();
            if let Some(m) = self
                .model
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                m.vectors.retire_missing(&notes, &current);
            }
        }
        self.kick_embedder();
        // Count the work towards a burst; crossing the mark wakes the indexing worker (this
        // commit may have been a caller's catch-up), which gives memory back once all is quiet.
        let before = self.burst.fetch_add(work, Ordering::SeqCst);
        if before < BURST_NOTES && before + work >= BURST_NOTES {
            self.kick_indexer();
        }
    }
}
