//! Ingestion: files on disk become nodes, edges and provenance in the store.
//!
//! [`Ingestor::sync`] brings the store in step with the disk for a whole root or for some
//! paths in it, as the composition of the [`pipeline`] stages: it walks, compares with the
//! sources table (size + mtime, then content hash), detects moves (by rename events or equal
//! content), then writes in two phases — first every file's own node and link names (front
//! matter aliases included), then each file's facts, parsed on every core while the one writer
//! writes the batch before — so links between files of one sync resolve on the first pass.
//! Notes whose links may now resolve differently are redone.
//! Architecture Invariant: one file's facts are written in one transaction; a crash leaves the
//! previous version, and a file left `pending` is redone on the next sync. No tokio here.

pub mod facts;
pub mod parse;
pub mod parts;
pub(crate) mod pipeline;
pub mod purge;
pub mod resolve;
pub mod rules;
pub mod status;
pub mod walk;
pub mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rusqlite::{OptionalExtension, Transaction, params};

use tracing::{info, warn};

use crate::clock;
use crate::store::Store;
use facts::Ctx;
use pipeline::job::Outcome;
pub use pipeline::job::SkipReason;
use pipeline::moves::Moves;
use pipeline::parse::Parser;
use pipeline::relink::Relinker;
use pipeline::write::Writer;
use pipeline::{StageClock, batches, compare, discover, register};
use rules::Rules;
pub use status::SourceStatus;

/// Files above this size are recorded as skipped (`too_large`) and not read past it (the
/// `[ingest] max_file_bytes` setting): a whole file is held in memory while it is hashed and
/// parsed, two batches of files at a time, and notes are rarely more than a few hundred KiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The reason recorded on a file quarantined after aborted ingests (`pipeline::batches`).
pub const INGEST_ABORTED: &str = "ingest_aborted";
/// `BRAIN_FAILPOINT=ingest_file:REL` aborts the process while the file at REL is in flight
/// (crash tests).
const FAILPOINT_PREFIX: &str = "ingest_file:";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {message}")]
    BadRoot { path: PathBuf, message: String },
    #[error("{} is not inside a known root", .0.display())]
    NotInRoot(PathBuf),
    #[error("no watch on {}", .0.display())]
    NoSuchWatch(PathBuf),
    #[error("the ingest worker has stopped")]
    Stopped,
    #[error(
        "{} is inside {}, which brain already {}; watch that folder instead, or take it away \
         first with `brain watch remove {}`",
        path.display(),
        root.display(),
        if *watched { "watches" } else { "indexes (from `brain ingest`)" },
        root.display()
    )]
    InsideRoot {
        path: PathBuf,
        root: PathBuf,
        watched: bool,
    },
    #[error("root {} is missing on disk; its notes are kept until it is back", .0.display())]
    RootMissing(PathBuf),
    #[error("root {0} was removed or folded into another while it was being synced")]
    RootRemoved(i64),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl From<IngestError> for crate::error::Error {
    fn from(e: IngestError) -> Self {
        use crate::error::{Error, Kind};
        let kind = match &e {
            IngestError::BadRoot { .. } | IngestError::InsideRoot { .. } => Kind::InvalidParams,
            IngestError::RootMissing(_) | IngestError::RootRemoved(_) => Kind::NotFound,
            IngestError::NotInRoot(_) | IngestError::NoSuchWatch(_) => Kind::NotFound,
            IngestError::Stopped => Kind::ShuttingDown,
            IngestError::Sqlite(_) => Kind::StoreError,
        };
        Error::new(kind, e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    pub id: i64,
    pub path: PathBuf,
    pub watched: bool,
    pub added_at: String,
}

/// A root [`Ingestor::add_root`] registered, and the roots inside it that were folded into it.
#[derive(Debug, Clone)]
pub struct AddedRoot {
    pub root: RootInfo,
    pub folded: Vec<PathBuf>,
}

impl IngestError {
    /// The store or the disk ran out of space: worth retrying once some is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, IngestError::Sqlite(e)
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

/// What a sync covers.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    /// These paths (files or folders, present or gone) and renames seen by the watcher.
    Paths {
        paths: Vec<PathBuf>,
        renames: Vec<(PathBuf, PathBuf)>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub seen: u64,
    pub indexed: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub deleted: u64,
    pub moved: u64,
    pub reresolved: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
    pub path: &'a str,
}

pub struct Ingestor {
    store: Arc<Store>,
    user: String,
    max_file_bytes: u64,
    /// Called after a sync's writes commit so derived indexes catch up before it returns.
    after_write: Option<AfterWrite>,
    /// Called after each write batch of a long sync; must not block (it wakes whoever keeps
    /// derived indexes, so they catch up while the sync goes on).
    after_batch: Option<AfterWrite>,
    on_change: std::sync::Mutex<Option<ChangeHook>>,
    /// The relative path `BRAIN_FAILPOINT=ingest_file:REL` names, if set.
    failpoint: Option<String>,
}

pub type AfterWrite = Box<dyn Fn() + Send + Sync>;

/// A file a sync indexed because it is new or its content changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the root, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    /// New to the store (else changed).
    pub created: bool,
    /// When the sync that indexed it began: facts it wrote have `valid_from` at or after this.
    pub sync_started_at: String,
}

/// Told about indexed files after each successful sync (workflow triggers listen here).
pub type ChangeHook = Arc<dyn Fn(&RootInfo, &[FileChange]) + Send + Sync>;

/// A live source row.
#[derive(Debug, Clone)]
pub(crate) struct SourceRow {
    pub(crate) id: i64,
    pub(crate) rel: String,
    pub(crate) hash: Option<String>,
    pub(crate) size: Option<i64>,
    pub(crate) mtime_ns: Option<i64>,
    pub(crate) status: SourceStatus,
    pub(crate) reason: Option<String>,
}

impl Ingestor {
    pub fn new(store: Arc<Store>, user: &str, max_file_bytes: u64) -> Ingestor {
        Ingestor {
            store,
            user: user.to_owned(),
            max_file_bytes,
            after_write: None,
            after_batch: None,
            on_change: std::sync::Mutex::new(None),
            failpoint: std::env::var("BRAIN_FAILPOINT")
                .ok()
                .and_then(|f| f.strip_prefix(FAILPOINT_PREFIX).map(str::to_owned)),
        }
    }

    /// Sets the hook run after writes commit.
    pub fn with_after_write(mut self, f: AfterWrite) -> Ingestor {
        self.after_write = Some(f);
        self
    }

    /// Sets the hook run after each write batch of a long sync.
    pub fn with_after_batch(mut self, f: AfterWrite) -> Ingestor {
        self.after_batch = Some(f);
        self
    }

    fn after_write(&self) {
        if let Some(f) = &self.after_write {
            f();
        }
    }

    /// Registers a folder as a root (watched or not). An existing root keeps its id; asking to
    /// watch a one-off root turns it into a watched one.
    ///
    /// The roots are a set of disjoint folders, so no file is indexed twice: a folder inside a
    /// live root is refused, naming that root, and live roots inside the new folder are folded
    /// into it (their files keep their source rows and note ids, and are parsed again as part of
    /// the new root, whose links resolve against the whole of it).
    pub fn add_root(&self, path: &Path, watched: bool) -> Result<RootInfo, IngestError> {
        Ok(self.register_root(path, watched)?.root)
    }

    /// [`Ingestor::add_root`], also saying which roots were folded into the new one.
    pub fn register_root(&self, path: &Path, watched: bool) -> Result<AddedRoot, IngestError> {
        let canonical = std::fs::canonicalize(path).map_err(|e| IngestError::BadRoot {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !canonical.is_dir() {
            return Err(IngestError::BadRoot {
                path: path.to_owned(),
                message: "not a directory".into(),
            });
        }
        let Some(text) = canonical.to_str() else {
            return Err(IngestError::BadRoot {
                path: path.to_owned(),
                message: "path is not UTF-8".into(),
            });
        };
        // The store, its log and the text index change with every write: a root holding them
        // would sync itself for ever.
        if let Some(data_dir) = self
            .store
            .path()
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .filter(|d| d.starts_with(&canonical))
        {
            return Err(IngestError::BadRoot {
                path: path.to_owned(),
                message: format!(
                    "holds brain's data directory {}; brain would index its own files",
                    data_dir.display()
                ),
            });
        }
        let now = clock::now();
        let folded = self.store.write(|tx| {
            // Checked in the transaction that adds the root, so two folders added at once
            // cannot both pass.
            let outer = tx
                .prepare("SELECT id, path, watched, added_at FROM roots WHERE removed_at IS NULL")?
                .query_map([], row_to_root)?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .find(|r| canonical != r.path && canonical.starts_with(&r.path));
            if let Some(outer) = outer {
                return Err(IngestError::InsideRoot {
                    path: canonical.clone(),
                    root: outer.path,
                    watched: outer.watched,
                });
            }
            tx.execute(
                "INSERT INTO roots(path, watched, added_by, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(path) DO UPDATE SET
                   watched = CASE WHEN roots.removed_at IS NULL THEN max(roots.watched, excluded.watched)
                                  ELSE excluded.watched END,
                   removed_at = NULL",
                params![text, watched, self.user, now],
            )?;
            let id: i64 =
                tx.query_row("SELECT id FROM roots WHERE path = ?1", [text], |r| r.get(0))?;
            fold_inner_roots(tx, &Ctx::new(&now, &self.user, id), &canonical)
        })?;
        if !folded.is_empty() {
            info!(root = %canonical.display(), folded = ?folded, "folded roots inside the new root into it");
            self.after_write();
        }
        let root = self
            .root_by_path(&canonical)?
            .ok_or_else(|| IngestError::NotInRoot(canonical.clone()))?;
        Ok(AddedRoot { root, folded })
    }

    /// Folds roots that overlap another (stores written before roots were kept disjoint) into
    /// the outermost one. Returns the folded roots' paths.
    pub fn fold_overlapping_roots(&self) -> Result<Vec<PathBuf>, IngestError> {
        let roots = self.roots(false)?;
        let outers: Vec<&RootInfo> = roots
            .iter()
            .filter(|r| {
                !roots
                    .iter()
                    .any(|o| o.path != r.path && r.path.starts_with(&o.path))
            })
            .collect();
        let mut folded = Vec::new();
        for outer in outers {
            if !roots
                .iter()
                .any(|r| r.path != outer.path && r.path.starts_with(&outer.path))
            {
                continue;
            }
            let now = clock::now();
            folded.extend(self.store.write(|tx| {
                fold_inner_roots(tx, &Ctx::new(&now, &self.user, outer.id), &outer.path)
            })?);
        }
        if !folded.is_empty() {
            warn!(folded = ?folded, "roots inside other roots were folded into them");
            self.after_write();
        }
        Ok(folded)
    }

    fn root_by_path(&self, canonical: &Path) -> Result<Option<RootInfo>, IngestError> {
        let text = canonical.to_string_lossy().into_owned();
        Ok(self.store.read(|c| {
            c.query_row(
                "SELECT id, path, watched, added_at FROM roots WHERE path = ?1 AND removed_at IS NULL",
                [text],
                row_to_root,
            )
            .optional()
        })?)
    }

    /// Live roots, watched ones only when asked.
    pub fn roots(&self, watched_only: bool) -> Result<Vec<RootInfo>, IngestError> {
        Ok(self.store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, path, watched, added_at FROM roots
                 WHERE removed_at IS NULL AND (?1 = 0 OR watched = 1) ORDER BY path",
            )?;
            let rows = stmt.query_map([watched_only], row_to_root)?;
            rows.collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// The live root containing `abs` (the deepest one when roots nest).
    pub fn root_for(&self, abs: &Path) -> Result<Option<RootInfo>, IngestError> {
        Ok(self
            .roots(false)?
            .into_iter()
            .filter(|r| abs.starts_with(&r.path))
            .max_by_key(|r| r.path.as_os_str().len()))
    }

    /// The files of a root that are still `pending` (a crash or a stop interrupted their
    /// ingest), as absolute paths.
    pub fn pending_files(&self, root: &RootInfo) -> Result<Vec<PathBuf>, IngestError> {
        Ok(self.store.read(|c| {
            c.prepare(
                "SELECT rel_path FROM sources
                 WHERE root_id = ?1 AND deleted_at IS NULL AND status = 'pending'",
            )?
            .query_map([root.id], |r| r.get::<_, String>(0))?
            .map(|rel| rel.map(|rel| walk::abs_path(&root.path, &rel)))
            .collect::<Result<Vec<_>, rusqlite::Error>>()
        })?)
    }

    /// Stops watching a root (or forgets a folder `brain ingest` made one) and retires
    /// everything its files said.
    pub fn remove_root(&self, path: &Path) -> Result<RootInfo, IngestError> {
        // The path as given first: a root's folder may now be a symlink to another root's,
        // and removing the one must not resolve to the other.
        let root = match self.root_by_path(path)? {
            Some(root) => root,
            None => {
                let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
                self.root_by_path(&canonical)?
                    .ok_or_else(|| IngestError::NoSuchWatch(path.to_owned()))?
            }
        };
        let now = clock::now();
        let ctx = Ctx::new(&now, &self.user, root.id);
        write_with(&self.store, &ctx, Checks::Store, |tx| {
            let ids: Vec<i64> = tx
                .prepare("SELECT id FROM sources WHERE root_id = ?1 AND deleted_at IS NULL")?
                .query_map([root.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                facts::retire_file(tx, &ctx, id)?;
                tx.execute(
                    "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
            }
            tx.execute(
                "UPDATE roots SET removed_at = ?2, watched = 0 WHERE id = ?1",
                params![root.id, now],
            )?;
            facts::collect_garbage(tx, &ctx)?;
            Ok::<_, IngestError>(())
        })?;
        self.after_write();
        Ok(root)
    }

    /// Sets the hook told about indexed files after each successful sync.
    pub fn set_change_hook(&self, hook: ChangeHook) {
        *self.on_change.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Brings the store in step with the disk for `scope` under `root`.
    pub fn sync(
        &self,
        root: &RootInfo,
        scope: &Scope,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<SyncReport, IngestError> {
        self.sync_cancellable(root, scope, progress, &AtomicBool::new(false))
    }

    /// [`Ingestor::sync`] that stops between write batches once `cancel` is set; files not
    /// written yet stay as they were (or `pending`) and are redone by the next sync.
    ///
    /// The composition of the [`pipeline`] stages; each stage's time is logged at `debug`.
    pub fn sync_cancellable(
        &self,
        root: &RootInfo,
        scope: &Scope,
        progress: &mut dyn FnMut(&Progress<'_>),
        cancel: &AtomicBool,
    ) -> Result<SyncReport, IngestError> {
        // A root that is gone (moved away, an unmounted drive) must not read as every file
        // deleted: its notes stay as they are until it is back.
        if !walk::root_present(&root.path) {
            return Err(IngestError::RootMissing(root.path.clone()));
        }
        let started = Instant::now();
        let started_at = clock::now();
        let mut report = SyncReport::default();
        let mut stage = StageClock::new();
        let rules = Rules::new(&root.path);
        let canonical_root =
            std::fs::canonicalize(&root.path).unwrap_or_else(|_| root.path.clone());

        let (found, scope_rels) = discover::discover(root, &canonical_root, &rules, scope);
        let sources = discover::live_sources(&self.store, root.id, scope_rels.as_deref())?;
        stage.lap("walk");
        let mut work = compare::compare(found, sources, self.max_file_bytes, &mut report);
        stage.lap("read and hash");
        let moves = Moves {
            store: &self.store,
            root,
            max_file_bytes: self.max_file_bytes,
        };
        let superseded = moves.pair(scope, &mut work.jobs, &mut work.gone, &mut report.moved)?;
        stage.lap("moves");

        let now = clock::now();
        let ctx = Ctx::new(&now, &self.user, root.id);
        let registered = register::register(
            &self.store,
            &ctx,
            root,
            &started_at,
            &mut work,
            &superseded,
            &mut report,
        )?;
        stage.lap("register");
        let mut changes = registered.changes;
        let batches = batches::plan(&self.store, work.jobs, registered.note_ids)?;
        // A quarantined file is no change to tell listeners about.
        let quarantined: HashSet<&str> = batches
            .iter()
            .flatten()
            .filter(|i| matches!(&i.job.outcome, Outcome::Fail(m) if m == INGEST_ABORTED))
            .map(|i| i.job.file.rel.as_str())
            .collect();
        if !quarantined.is_empty() {
            changes.retain(|c| !quarantined.contains(c.rel.as_str()));
        }
        let writer = Writer {
            store: &self.store,
            ctx: &ctx,
            parser: Parser {
                max_file_bytes: self.max_file_bytes,
                failpoint: self.failpoint.as_deref(),
            },
            cancel,
            after_batch: self.after_batch.as_ref(),
        };
        let written = writer.run(batches, &mut report, progress)?;
        stage.lap("parse and write");
        if written.cancelled {
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        let relinker = Relinker {
            store: &self.store,
            root,
            max_file_bytes: self.max_file_bytes,
        };
        let mut redo = relinker.referrers(&registered.changed_names)?;
        redo.retain(|id| !written.processed.contains(id));
        redo.extend(relinker.referrers(&written.late_names)?);
        if !redo.is_empty() {
            report.reresolved = relinker.relink(&ctx, &redo)?;
        }
        write_with(&self.store, &ctx, Checks::Store, |tx| {
            facts::collect_garbage(tx, &ctx).map_err(IngestError::from)
        })?;
        stage.lap("relink");
        // What was written is searchable by words when this returns.
        self.after_write();
        stage.lap("searchable");
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let hook = self
            .on_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook.filter(|_| !changes.is_empty()) {
            hook(root, &changes);
        }
        Ok(report)
    }
}

/// Who does what the store's triggers and foreign keys do, in a write.
#[derive(Clone, Copy)]
pub(crate) enum Checks {
    /// The store ([`Store::write`]).
    Store,
    /// The writer itself ([`Store::write_bulk`]).
    Own,
}

/// Runs `f` in one store transaction, with `ctx`'s remembered lookups scoped to it: they are
/// forgotten when it begins and when it ends, committed or not.
pub(crate) fn write_with<T>(
    store: &Store,
    ctx: &Ctx<'_>,
    checks: Checks,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, IngestError>,
) -> Result<T, IngestError> {
    ctx.lookups.borrow_mut().clear();
    // A sync that was under way when its root was removed or folded into another stops at its
    // next write: what it would write belongs to a root that is no longer there.
    let f = |tx: &Transaction<'_>| {
        let live: Option<bool> = tx
            .prepare_cached("SELECT removed_at IS NULL FROM roots WHERE id = ?1")?
            .query_row([ctx.root_id], |r| r.get(0))
            .optional()?;
        if live != Some(true) {
            return Err(IngestError::RootRemoved(ctx.root_id));
        }
        f(tx)
    };
    let out = match checks {
        Checks::Store => store.write(f),
        Checks::Own => store.write_bulk(f),
    };
    ctx.lookups.borrow_mut().clear();
    out
}

/// Moves every live root strictly inside `outer` (the root of `ctx`) into it: their source
/// rows take the outer root and a path relative to it, and forget their hash so the outer
/// root's next sync parses them again (same source row, same note id) and rewrites their names
/// and links; a file the outer root already has a live row for keeps that row, and the inner
/// copy is retired. The inner roots are marked removed. Returns their paths.
fn fold_inner_roots(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    outer: &Path,
) -> Result<Vec<PathBuf>, IngestError> {
    let inner: Vec<RootInfo> = tx
        .prepare("SELECT id, path, watched, added_at FROM roots WHERE removed_at IS NULL")?
        .query_map([], row_to_root)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|r| r.path != outer && r.path.starts_with(outer))
        .collect();
    let mut folded = Vec::new();
    for root in inner {
        let Some(prefix) = walk::rel_path(outer, &root.path) else {
            continue;
        };
        let rows: Vec<(i64, String, bool)> = tx
            .prepare("SELECT id, rel_path, deleted_at IS NULL FROM sources WHERE root_id = ?1")?
            .query_map([root.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (id, rel, live) in rows {
            let rel = format!("{prefix}/{rel}");
            let taken = live
                && tx
                    .prepare_cached(
                        "SELECT 1 FROM sources WHERE root_id = ?1 AND rel_path = ?2 AND deleted_at IS NULL",
                    )?
                    .exists(params![ctx.root_id, rel])?;
            if taken {
                facts::retire_file(tx, ctx, id)?;
                tx.execute(
                    "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
                    params![id, ctx.now],
                )?;
            }
            tx.prepare_cached(
                "UPDATE sources SET root_id = ?2, rel_path = ?3, content_hash = NULL, mtime_ns = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, ctx.root_id, rel])?;
        }
        tx.execute(
            "UPDATE note_names SET root_id = ?2 WHERE root_id = ?1",
            params![root.id, ctx.root_id],
        )?;
        tx.execute(
            "UPDATE link_refs SET root_id = ?2 WHERE root_id = ?1",
            params![root.id, ctx.root_id],
        )?;
        tx.execute(
            "UPDATE roots SET removed_at = ?2, watched = 0 WHERE id = ?1",
            params![root.id, ctx.now],
        )?;
        if root.watched {
            tx.execute("UPDATE roots SET watched = 1 WHERE id = ?1", [ctx.root_id])?;
        }
        folded.push(root.path);
    }
    Ok(folded)
}

fn row_to_root(r: &rusqlite::Row<'_>) -> rusqlite::Result<RootInfo> {
    Ok(RootInfo {
        id: r.get(0)?,
        path: PathBuf::from(r.get::<_, String>(1)?),
        watched: r.get(2)?,
        added_at: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::job::Job;
    use walk::DiskFile;

    /// A file rewritten between the read that hashed it and the read that parses it: what is
    /// written cites the bytes parsed, and a file gone by then fails instead of vanishing.
    #[test]
    fn a_job_parses_and_cites_the_bytes_it_reads_last() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("n.md");
        std::fs::write(&abs, "---\naliases: [First]\n---\none\n").unwrap();
        let disk = |abs: &Path| DiskFile {
            rel: "n.md".into(),
            abs: abs.to_owned(),
            size: std::fs::metadata(abs).unwrap().len(),
            mtime_ns: 0,
        };
        let mut job = Job::read(None, disk(&abs), DEFAULT_MAX_FILE_BYTES);
        assert_eq!(job.aliases, ["First"]);
        let first_hash = job.hash.clone();

        let second = "# Two\n\nline\nline\n";
        std::fs::write(&abs, second).unwrap();
        job.parse(DEFAULT_MAX_FILE_BYTES, None);
        assert_ne!(job.hash, first_hash);
        assert_eq!(
            job.hash.as_deref(),
            Some(blake3::hash(second.as_bytes()).to_hex().as_str())
        );
        assert_eq!(job.file.size, second.len() as u64);
        assert_eq!(job.lines, 5);
        assert_eq!(job.doc.as_ref().unwrap().doc.title.as_deref(), Some("Two"));

        let mut gone = Job::read(None, disk(&abs), DEFAULT_MAX_FILE_BYTES);
        std::fs::remove_file(&abs).unwrap();
        gone.parse(DEFAULT_MAX_FILE_BYTES, None);
        assert!(
            matches!(&gone.outcome, Outcome::Fail(m) if m.starts_with("cannot read")),
            "{:?}",
            gone.outcome
        );
        assert!(gone.doc.is_none());
    }

    /// A file still marked in flight from a process that died is retried; one marked after
    /// its retry is quarantined as `failed: ingest_aborted` and left alone while unchanged;
    /// the files beside it are indexed and nothing stays marked.
    #[test]
    fn files_left_in_flight_are_retried_once_then_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        for name in ["bad.md", "good.md", "retried.md"] {
            std::fs::write(vault.join(name), format!("# {name}\n")).unwrap();
        }
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store.clone(), "user:test", DEFAULT_MAX_FILE_BYTES);
        let root = ingestor.add_root(&vault, false).unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        // What a crash leaves: the files edited, their rows pending, marks not cleared.
        for name in ["bad.md", "good.md", "retried.md"] {
            std::fs::write(vault.join(name), format!("# {name}\n\nedited\n")).unwrap();
        }
        store
            .write(|tx| {
                tx.execute_batch(
                    "UPDATE sources SET status = 'pending';
                     INSERT INTO ingest_in_flight(source_id, attempts, started_at)
                     SELECT id, CASE rel_path WHEN 'bad.md' THEN 2 ELSE 1 END, 'then'
                     FROM sources WHERE rel_path IN ('bad.md', 'retried.md')",
                )
            })
            .unwrap();
        let report = ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        assert_eq!((report.indexed, report.failed), (2, 1), "{report:?}");
        let rows = |store: &Store| -> Vec<(String, String, Option<String>)> {
            store
                .read(|c| {
                    c.prepare("SELECT rel_path, status, reason FROM sources ORDER BY rel_path")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap()
        };
        let expected = vec![
            (
                "bad.md".into(),
                "failed".into(),
                Some(INGEST_ABORTED.into()),
            ),
            ("good.md".into(), "indexed".into(), None),
            ("retried.md".into(), "indexed".into(), None),
        ];
        assert_eq!(rows(&store), expected);
        let marked: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM ingest_in_flight", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(marked, 0);
        // Unchanged, the quarantined file is not read again.
        let report = ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        assert_eq!((report.unchanged, report.failed), (3, 0), "{report:?}");
        assert_eq!(rows(&store), expected);
    }

    /// A batch of files is written with the store's triggers and foreign-key checks off
    /// ([`Store::write_bulk`]): each file queues its note for the search index itself, exactly
    /// once (the triggers would have queued it once per chunk, tag and title change), every
    /// reference it writes holds, and both checks are on again for every other writer.
    #[test]
    fn a_batch_does_what_the_store_checks_would_and_leaves_them_on_for_other_writers() {
        use rusqlite::config::DbConfig;
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let text = "# One

first #garden

# Two

second #kitchen
";
        std::fs::write(vault.join("a.md"), text).unwrap();
        std::fs::write(vault.join("b.md"), text).unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store.clone(), "user:test", DEFAULT_MAX_FILE_BYTES);
        let root = ingestor.add_root(&vault, false).unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();

        // Rows queued per note, fewest first.
        let queued = |store: &Store| -> Vec<(String, i64)> {
            store
                .read(|c| {
                    c.prepare(
                        "SELECT n.title, count(*) AS k FROM search_outbox o
                         JOIN nodes n ON n.id = o.note_id GROUP BY o.note_id ORDER BY k, n.title",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap()
        };
        let one = |k: i64| ("One".to_owned(), k);
        assert_eq!(queued(&store), [one(1), one(1)]);
        let chunks: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(chunks, 4);

        // Every reference the batch wrote points at a row.
        let dangling: Vec<String> = store
            .read(|c| {
                c.prepare("PRAGMA foreign_key_check")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        assert_eq!(dangling, Vec::<String>::new());

        // Other writers are checked again: a dangling edge is refused...
        let refused = store.write(|tx| {
            tx.execute(
                "INSERT INTO edges(id, src_id, dst_id, type, created_by, valid_from, created_at)
                 VALUES ('e', 'nowhere', 'nowhere', 'links_to', 'user:test', 'now', 'now')",
                [],
            )
        });
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("FOREIGN KEY")),
            "{refused:?}"
        );
        // ...and the triggers catch what they write.
        store
            .write(|tx| {
                assert!(tx.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)?);
                tx.execute(
                    "UPDATE nodes SET title = 'Renamed' WHERE kind = 'note'
                       AND id = (SELECT min(id) FROM nodes WHERE kind = 'note')",
                    [],
                )
            })
            .unwrap();
        assert_eq!(queued(&store), [one(1), ("Renamed".to_owned(), 2)]);
    }

    /// A chunk whose text an edit left alone keeps its row (its id and vector) and takes the
    /// headings it now sits under; a section whose heading path changed is a new section.
    #[test]
    fn a_kept_chunk_takes_its_new_headings_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let note = vault.join("n.md");
        std::fs::write(&note, "# A\n\n## S\n\nthe same words\n").unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store.clone(), "user:test", DEFAULT_MAX_FILE_BYTES);
        let root = ingestor.add_root(&vault, false).unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        let chunk = |store: &Store| -> (i64, Option<String>, i64) {
            store
                .read(|c| {
                    c.query_row(
                        "SELECT rid, coalesce(chunks.heading_path, (SELECT s0.path FROM sections s0 WHERE s0.source_id = chunks.source_id AND s0.ordinal = chunks.section AND s0.valid_to IS NULL)), ordinal FROM chunks
                         WHERE valid_to IS NULL AND content LIKE '%the same words%'",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                })
                .unwrap()
        };
        let before = chunk(&store);
        assert_eq!(before.1.as_deref(), Some(r#"["A","S"]"#));
        std::fs::write(&note, "intro\n\n# B\n\n## S\n\nthe same words\n").unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        let after = chunk(&store);
        assert_eq!(after.0, before.0, "the chunk kept its row");
        assert_eq!(after.1.as_deref(), Some(r#"["B","S"]"#));
        assert!(after.2 > before.2, "{after:?} {before:?}");
        let sections: Vec<(String, Option<i64>)> = store
            .read(|c| {
                c.prepare("SELECT key, valid_to FROM sections ORDER BY rid")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .unwrap();
        let current: Vec<&str> = sections
            .iter()
            .filter(|(_, to)| to.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(current, [r#"["B"]#1"#, r#"["B","S"]#1"#]);
        assert_eq!(sections.iter().filter(|(_, to)| to.is_some()).count(), 2);
    }

    /// A store ingested before citations moved onto facts (schema/0007) holds them as
    /// provenance rows: they still answer, and the file's next ingest retires them and cites
    /// its facts in place, so nothing is cited twice.
    #[test]
    fn citations_from_before_0007_answer_and_move_onto_the_facts_on_the_next_ingest() {
        use crate::graph::{NodeRef, node_get};
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        std::fs::write(vault.join("n.md"), "# Top\n\nSee [[m]].\n").unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store.clone(), "user:test", DEFAULT_MAX_FILE_BYTES);
        let root = ingestor.add_root(&vault, false).unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        let note = |store: &Store| {
            store
                .read(|c| node_get(c, &NodeRef::Path(vault.join("n.md"))))
                .unwrap()
        };
        let before = note(&store);

        // What 0006 and earlier wrote: one provenance row per fact, nothing on the facts; and
        // every edge then stored its id (0015 derives a link's from its row).
        store
            .write(|tx| {
                tx.execute_batch(&format!(
                    "UPDATE edge_rows SET id = {} WHERE id IS NULL",
                    crate::store::edge_id::sql_id("rid")
                ))?;
                for table in ["nodes", "edges"] {
                    let id_column = if table == "nodes" { "node_id" } else { "edge_id" };
                    tx.execute_batch(&format!(
                        "INSERT INTO provenance({id_column}, source_id, byte_start, byte_end, line_start,
                                                line_end, content_hash, extractor, extractor_version,
                                                actor_id, recorded_at)
                         SELECT f.id, v.source_id, f.cite_byte_start, f.cite_byte_end,
                                f.cite_line_start, f.cite_line_end, v.content_hash, v.extractor,
                                v.extractor_version, v.actor_id, v.recorded_at
                         FROM {table} f JOIN source_versions v ON v.id = f.cite_version;
                         UPDATE {table} SET cite_version = NULL, cite_byte_start = NULL,
                             cite_byte_end = NULL, cite_line_start = NULL, cite_line_end = NULL;"
                    ))?;
                }
                tx.execute_batch(
                    "UPDATE sections SET cite_version = NULL;
                     UPDATE chunks SET cite_version = NULL;
                     DELETE FROM source_versions;",
                )
            })
            .unwrap();
        assert_eq!(note(&store).provenance, before.provenance);

        std::fs::write(vault.join("n.md"), "intro\n# Top\n\nSee [[m]].\n").unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        let after = note(&store);
        assert_eq!(after.id, before.id);
        assert_eq!(after.provenance.len(), 1, "{:?}", after.provenance);
        assert_eq!(after.provenance[0].lines, Some((1, 5)));
        let counts: (i64, i64, i64) = store
            .read(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM provenance WHERE valid_to IS NULL),
                            (SELECT count(*) FROM nodes
                             WHERE source_id IS NOT NULL AND valid_to IS NULL AND cite_version IS NULL),
                            (SELECT count(*) FROM edges WHERE valid_to IS NULL AND cite_version IS NULL)
                          + (SELECT count(*) FROM chunks WHERE valid_to IS NULL AND cite_version IS NULL)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .unwrap();
        // No provenance row is current, and every current fact of the file is cited in place.
        assert_eq!(counts, (0, 0, 0));
    }
}
