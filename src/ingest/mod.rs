//! Ingestion: files on disk become nodes, edges and provenance in the store.
//!
//! [`Ingestor::sync`] brings the store in step with the disk for a whole root or for some
//! paths in it: it walks, compares with the sources table (size + mtime, then content hash),
//! detects moves (by rename events or equal content), then writes in two phases — first every
//! file's own node and link names (front matter aliases included), then each file's facts — so
//! links between files of one sync resolve on the first pass. Notes whose links may now resolve differently are redone.
//! Architecture Invariant: one file's facts are written in one transaction; a crash leaves the
//! previous version, and a file left `pending` is redone on the next sync. No tokio here.

pub mod facts;
pub mod parse;
pub mod parts;
pub mod purge;
pub mod resolve;
pub mod rules;
pub mod status;
pub mod walk;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;
use rusqlite::{OptionalExtension, Transaction, params};

use tracing::{info, warn};

use crate::clock;
use crate::store::Store;
use facts::{Ctx, FileVersion};
use parse::FileType;
use rules::Rules;
pub use status::SourceStatus;
use walk::{DiskFile, Found};

/// A new file with the same bytes as one a sync deleted this recently takes over its source
/// row and note id: it was moved.
const MOVE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Files above this size are recorded as skipped (`too_large`) and not read past it (the
/// `[ingest] max_file_bytes` setting): a whole file is held in memory while it is hashed and
/// parsed, two batches of files at a time, and notes are rarely more than a few hundred KiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Files whose first bytes hold a NUL are binary.
const BINARY_SNIFF_BYTES: usize = 8000;
/// Files written per transaction in a large sync: big enough to amortize commits, small enough
/// that a crash redoes little and a batch's parsed documents stay small (on obsidian-hub, 1,024
/// was no faster and kept ~15 MiB more resident).
const WRITE_BATCH: usize = 256;
/// Ingests of one file that may begin and never finish (the process died) before it is
/// quarantined: the first may have died for something else in its batch, so it is retried
/// once, alone.
const MAX_INGEST_ATTEMPTS: i64 = 2;
/// The reason recorded on a file quarantined after [`MAX_INGEST_ATTEMPTS`].
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
struct SourceRow {
    id: i64,
    rel: String,
    hash: Option<String>,
    size: Option<i64>,
    mtime_ns: Option<i64>,
    status: SourceStatus,
    reason: Option<String>,
}

impl SourceRow {
    /// Whether the row is final for the bytes it records, so the same bytes need no ingest:
    /// indexed, skipped, or quarantined after aborted ingests.
    fn settled(&self) -> bool {
        match self.status {
            SourceStatus::Indexed | SourceStatus::Skipped => true,
            SourceStatus::Failed => self.reason.as_deref() == Some(INGEST_ABORTED),
            SourceStatus::Pending => false,
        }
    }
}

/// A file that is recorded without being read: skipped or failed, with why.
struct Mark {
    source_id: Option<i64>,
    rel: String,
    status: SourceStatus,
    reason: String,
}

/// A file to (re)write.
struct Job {
    source_id: Option<i64>,
    file: DiskFile,
    outcome: Outcome,
    hash: Option<String>,
    /// Lines in the file as read.
    lines: u32,
    /// Front matter aliases, read with the hash so that phase one can register them before
    /// any link is written, and every link then resolves against the final names the first
    /// time.
    aliases: Vec<String>,
    /// What the parser made of the file, read again for its write batch. Bytes are not kept
    /// between the two reads: a sync over a large folder holds two batches of files in memory,
    /// not the folder.
    doc: Option<parse::Document>,
}

impl Job {
    /// Reads a parseable file again and parses it. The file may have changed since it was
    /// hashed; what is written then cites the bytes actually parsed (and the watcher brings
    /// the rest of the change).
    fn parse(&mut self, max_file_bytes: u64, failpoint: Option<&str>) {
        let Outcome::Parse(t) = self.outcome else {
            return;
        };
        match walk::read_regular(&self.file.abs, max_file_bytes) {
            Err(e) => self.outcome = Outcome::unread(e),
            Ok(bytes) => {
                if failpoint == Some(self.file.rel.as_str()) {
                    tracing::error!(path = %self.file.rel, "failpoint: aborting");
                    std::process::abort();
                }
                self.hash = Some(blake3::hash(&bytes).to_hex().to_string());
                self.file.size = bytes.len() as u64;
                self.lines = line_count(&bytes);
                self.doc = Some(parse::parse(&bytes, t));
            }
        }
    }
}

/// Parses a write batch on every core.
fn parse_batch(
    mut batch: Vec<(Job, String)>,
    max_file_bytes: u64,
    failpoint: Option<&str>,
) -> Vec<(Job, String)> {
    batch
        .par_iter_mut()
        .for_each(|(job, _)| job.parse(max_file_bytes, failpoint));
    batch
}

/// Lines as the parser counts them: one more than the newlines.
fn line_count(bytes: &[u8]) -> u32 {
    bytes.iter().filter(|&&c| c == b'\n').count() as u32 + 1
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Parse(FileType),
    Skip(SkipReason),
    Fail(String),
}

/// Why a file under a root is recorded as `skipped`; [`SkipReason::as_str`] is what
/// `sources.reason` holds and users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Ignored,
    /// A symlink, to a file or a folder, whose target is outside the root.
    SymlinkLeavesRoot,
    /// A symlink to a folder inside the root, whose files are indexed at their real paths.
    SymlinkedFolder,
    /// A FIFO, socket or device, never opened.
    NotARegularFile,
    TooLarge,
    Binary,
    UnsupportedType,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Ignored => "ignored",
            SkipReason::SymlinkLeavesRoot => "symlink leaves the root",
            SkipReason::SymlinkedFolder => "symlinked_folder",
            SkipReason::NotARegularFile => "not_a_regular_file",
            SkipReason::TooLarge => "too_large",
            SkipReason::Binary => "binary",
            SkipReason::UnsupportedType => "unsupported_type",
        }
    }
}

impl Outcome {
    /// What a refused read makes of a file.
    fn unread(e: walk::ReadError) -> Outcome {
        match e {
            walk::ReadError::NotRegular => Outcome::Skip(SkipReason::NotARegularFile),
            walk::ReadError::TooLarge { .. } => Outcome::Skip(SkipReason::TooLarge),
            walk::ReadError::Io(e) => Outcome::Fail(format!("cannot read: {e}")),
        }
    }
}

fn file_type_name(t: Option<FileType>) -> &'static str {
    match t {
        Some(FileType::Markdown) => "markdown",
        Some(FileType::Text) => "text",
        Some(FileType::Code) => "code",
        Some(FileType::Html) => "html",
        None => "other",
    }
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
        let rules = Rules::new(&root.path);
        let canonical_root =
            std::fs::canonicalize(&root.path).unwrap_or_else(|_| root.path.clone());

        // 1. What is on disk, and what the store believes, for the scope.
        let (found, scope_rels) = self.discover(root, &canonical_root, &rules, scope);
        let mut sources = self.live_sources(root.id, scope_rels.as_deref())?;

        // 2. Compare.
        let mut changes: Vec<FileChange> = Vec::new();
        let mut jobs: Vec<Job> = Vec::new();
        let mut touch: Vec<(i64, u64, i64)> = Vec::new();
        let mut marks: Vec<Mark> = Vec::new();
        // Files whose size or mtime moved, to be read and hashed (on every core).
        let mut to_read: Vec<(Option<SourceRow>, DiskFile)> = Vec::new();
        for f in found {
            report.seen += 1;
            let (rel, status, reason) = match f {
                Found::File(file) => {
                    let existing = sources.remove(&file.rel);
                    if let Some(src) = &existing
                        && src.size == Some(file.size as i64)
                        && src.mtime_ns == Some(file.mtime_ns)
                        && src.settled()
                    {
                        report.unchanged += 1;
                    } else {
                        to_read.push((existing, file));
                    }
                    continue;
                }
                Found::Ignored { rel } => (rel, SourceStatus::Skipped, SkipReason::Ignored),
                Found::OutsideRoot { rel } => {
                    (rel, SourceStatus::Skipped, SkipReason::SymlinkLeavesRoot)
                }
                Found::LinkedFolder { rel } => {
                    (rel, SourceStatus::Skipped, SkipReason::SymlinkedFolder)
                }
                Found::NotRegular { rel } => {
                    (rel, SourceStatus::Skipped, SkipReason::NotARegularFile)
                }
                Found::Error { rel, message } => {
                    marks.push(Mark {
                        source_id: sources.remove(&rel).map(|s| s.id),
                        rel,
                        status: SourceStatus::Failed,
                        reason: message,
                    });
                    continue;
                }
            };
            marks.push(Mark {
                source_id: sources.remove(&rel).map(|s| s.id),
                rel,
                status,
                reason: reason.as_str().into(),
            });
        }
        let read: Vec<(Option<SourceRow>, Job)> = to_read
            .into_par_iter()
            .map(|(existing, file)| {
                let job = self.prepare(existing.as_ref().map(|s| s.id), file);
                (existing, job)
            })
            .collect();
        for (existing, job) in read {
            if let (Some(src), Some(h)) = (&existing, &job.hash)
                && src.hash.as_deref() == Some(h)
                && src.settled()
            {
                touch.push((src.id, job.file.size, job.file.mtime_ns));
                report.unchanged += 1;
                continue;
            }
            jobs.push(job);
        }
        // What remains in `sources` is gone from disk.
        let mut gone: Vec<SourceRow> = sources.into_values().collect();

        // 3. Moves: rename events first, then equal content.
        if let Scope::Paths { renames, .. } = scope {
            for (from, to) in renames {
                let (Some(from), Some(to)) = (
                    walk::rel_path(&root.path, from),
                    walk::rel_path(&root.path, to),
                ) else {
                    continue;
                };
                let Some(gi) = gone.iter().position(|g| g.rel == from) else {
                    continue;
                };
                if let Some(job) = jobs
                    .iter_mut()
                    .find(|j| j.source_id.is_none() && j.file.rel == to)
                {
                    job.source_id = Some(gone.remove(gi).id);
                    report.moved += 1;
                }
            }
        }
        for job in jobs.iter_mut().filter(|j| j.source_id.is_none()) {
            let Some(h) = &job.hash else { continue };
            if let Some(gi) = gone.iter().position(|g| g.hash.as_deref() == Some(h)) {
                job.source_id = Some(gone.remove(gi).id);
                report.moved += 1;
            }
        }
        // Then across syncs, within [`MOVE_WINDOW`]: a move by something that deletes first and
        // creates later (a copy across devices, a sync tool) can land in two syncs, either way
        // round.
        let since = clock::format(SystemTime::now() - MOVE_WINDOW);
        report.moved += self.pair_recent_deletions(root, &since, &mut jobs)?;
        // And the other order: the copy appeared in a recent sync and the original goes now.
        // The copy takes over the original's source row and note id; the node it got when it
        // appeared is retired with its source row.
        let superseded = self.pair_earlier_copies(root, &since, &mut gone, &mut jobs)?;
        report.moved += superseded.len() as u64;

        // 4. Phase one: source rows, file nodes, names; deletions and marks.
        let now = clock::now();
        let ctx = Ctx::new(&now, &self.user, root.id);
        let mut changed_names: HashSet<String> = HashSet::new();
        let mut note_ids: Vec<String> = Vec::with_capacity(jobs.len());
        write_with(&self.store, &ctx, Checks::Store, |tx| {
            for (id, size, mtime) in &touch {
                tx.prepare_cached(
                    "UPDATE sources SET size = ?2, mtime_ns = ?3, last_seen_at = ?4 WHERE id = ?1",
                )?
                .execute(params![id, *size as i64, mtime, now])?;
            }
            // Before any source takes over a superseded copy's path.
            for id in &superseded {
                changed_names.extend(facts::retire_file(tx, &ctx, *id)?);
                tx.execute(
                    "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
            }
            for g in &gone {
                changed_names.extend(facts::retire_file(tx, &ctx, g.id)?);
                tx.execute(
                    "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
                    params![g.id, now],
                )?;
                report.deleted += 1;
            }
            for Mark {
                source_id: id,
                rel,
                status,
                reason,
            } in &marks
            {
                if let Some(id) = id {
                    changed_names.extend(facts::retire_file(tx, &ctx, *id)?);
                }
                upsert_source(
                    tx,
                    &ctx,
                    *id,
                    rel,
                    "other",
                    None,
                    None,
                    None,
                    *status,
                    Some(reason),
                )?;
                if *status == SourceStatus::Failed {
                    report.failed += 1;
                } else {
                    report.skipped += 1;
                }
            }
            for job in jobs.iter_mut() {
                if matches!(job.outcome, Outcome::Parse(_)) {
                    changes.push(FileChange {
                        rel: job.file.rel.clone(),
                        abs: walk::abs_path(&root.path, &job.file.rel),
                        created: job.source_id.is_none(),
                        sync_started_at: started_at.clone(),
                    });
                }
                let (status, reason, kind) = match &job.outcome {
                    Outcome::Parse(_) => (SourceStatus::Pending, None, "note"),
                    Outcome::Skip(r) => {
                        (SourceStatus::Pending, Some(r.as_str().to_owned()), "file")
                    }
                    Outcome::Fail(m) => (SourceStatus::Failed, Some(m.clone()), "file"),
                };
                let ft = match &job.outcome {
                    Outcome::Parse(t) => file_type_name(Some(*t)),
                    _ => file_type_name(FileType::from_path(Path::new(&job.file.rel))),
                };
                let id = upsert_source(
                    tx,
                    &ctx,
                    job.source_id,
                    &job.file.rel,
                    ft,
                    job.hash.as_deref(),
                    Some(job.file.size),
                    Some(job.file.mtime_ns),
                    status,
                    reason.as_deref(),
                )?;
                job.source_id = Some(id);
                let is_md = job.outcome == Outcome::Parse(FileType::Markdown);
                let (nid, names) =
                    facts::ensure_file_node(tx, &ctx, id, &job.file.rel, kind, is_md)?;
                changed_names.extend(names);
                changed_names.extend(facts::write_aliases(
                    tx,
                    &ctx,
                    &nid,
                    &job.file.rel,
                    &job.aliases,
                )?);
                note_ids.push(nid);
            }
            Ok::<_, IngestError>(())
        })?;

        // 5. Phase two: each file's facts, a batch of files per transaction.
        let total = jobs.len() as u64;
        let mut processed: HashSet<String> = HashSet::new();
        // Names that changed in phase two (none, as phase one registered them all) would
        // matter to every referrer, this sync's included.
        let mut late_names: HashSet<String> = HashSet::new();
        let mut done = 0u64;
        let mut batches = self.plan_batches(jobs, note_ids)?;
        // A quarantined file is no change to tell listeners about.
        let quarantined: HashSet<&str> = batches
            .iter()
            .flatten()
            .filter(|(j, _)| matches!(&j.outcome, Outcome::Fail(m) if m == INGEST_ABORTED))
            .map(|(j, _)| j.file.rel.as_str())
            .collect();
        if !quarantined.is_empty() {
            changes.retain(|c| !quarantined.contains(c.rel.as_str()));
        }
        // Parsing needs no store, so it runs on every core, and the next batch is parsed
        // while this one is written. A batch is marked in flight before it is parsed.
        let (cap, failpoint) = (self.max_file_bytes, self.failpoint.as_deref());
        let mut parsed = match batches.pop_front() {
            Some(b) => {
                self.mark_in_flight(&b)?;
                Some(parse_batch(b, cap, failpoint))
            }
            None => None,
        };
        while let Some(batch) = parsed.take() {
            if cancel.load(Ordering::Relaxed) {
                self.unmark_in_flight(&batch)?;
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
            let upcoming = batches.pop_front();
            if let Some(b) = &upcoming
                && let Err(e) = self.mark_in_flight(b)
            {
                self.unmark_in_flight(&batch)?;
                return Err(e);
            }
            let written = std::thread::scope(|scope| {
                let parsing = scope.spawn(|| upcoming.map(|b| parse_batch(b, cap, failpoint)));
                // Each file queues its own note for search, and refers only to rows written or
                // read in this transaction: the store's checks are left to it.
                let written = write_with(&self.store, &ctx, Checks::Own, |tx| {
                    for (job, nid) in &batch {
                        late_names.extend(write_job(tx, &ctx, job, nid, job.doc.as_ref())?);
                        processed.insert(nid.clone());
                        match &job.outcome {
                            Outcome::Parse(_) => report.indexed += 1,
                            Outcome::Skip(_) => report.skipped += 1,
                            Outcome::Fail(_) => report.failed += 1,
                        }
                        report.bytes += job.file.size;
                    }
                    Ok::<_, IngestError>(())
                });
                parsed = parsing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                written
            });
            if let Err(e) = written {
                // Not a crash: what was marked is no suspect at the next ingest.
                self.unmark_in_flight(&batch)?;
                if let Some(next) = &parsed {
                    self.unmark_in_flight(next)?;
                }
                return Err(e);
            }
            if let Some(f) = &self.after_batch {
                f();
            }
            for (job, _) in &batch {
                done += 1;
                progress(&Progress {
                    done,
                    total,
                    bytes: report.bytes,
                    path: &job.file.rel,
                });
            }
        }

        // 6. Links elsewhere that may now resolve differently.
        let mut redo: HashSet<String> = self.referrers(root.id, &changed_names)?;
        redo.retain(|id| !processed.contains(id));
        redo.extend(self.referrers(root.id, &late_names)?);
        if !redo.is_empty() {
            report.reresolved = self.reresolve(root, &ctx, &redo)?;
        }
        write_with(&self.store, &ctx, Checks::Store, |tx| {
            facts::collect_garbage(tx, &ctx).map_err(IngestError::from)
        })?;
        self.after_write();
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

    /// Orders phase two's files into write batches. A file still marked in flight was being
    /// ingested when the process died: it is retried alone, after the others, so that if it
    /// kills the process again nothing beside it is held back; one marked after its retry is
    /// quarantined instead of read.
    fn plan_batches(
        &self,
        jobs: Vec<Job>,
        note_ids: Vec<String>,
    ) -> Result<VecDeque<Vec<(Job, String)>>, IngestError> {
        let ids: Vec<i64> = jobs.iter().filter_map(|j| j.source_id).collect();
        let attempts: HashMap<i64, i64> = self.store.read(|c| {
            c.prepare_cached(
                "SELECT source_id, attempts FROM ingest_in_flight
                 WHERE source_id IN (SELECT value FROM json_each(?1))",
            )?
            .query_map([serde_json::to_string(&ids).unwrap_or_default()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })?;
        let mut batches: VecDeque<Vec<(Job, String)>> = VecDeque::new();
        let mut suspects: Vec<(Job, String)> = Vec::new();
        let mut current: Vec<(Job, String)> = Vec::new();
        for (mut job, nid) in jobs.into_iter().zip(note_ids) {
            match job.source_id.and_then(|id| attempts.get(&id)) {
                Some(&n) if n >= MAX_INGEST_ATTEMPTS => {
                    tracing::warn!(path = %job.file.rel, attempts = n, "quarantined: ingest aborted");
                    job.outcome = Outcome::Fail(INGEST_ABORTED.to_owned());
                }
                Some(_) if matches!(job.outcome, Outcome::Parse(_)) => {
                    suspects.push((job, nid));
                    continue;
                }
                _ => {}
            }
            current.push((job, nid));
            if current.len() == WRITE_BATCH {
                batches.push_back(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            batches.push_back(current);
        }
        batches.extend(suspects.into_iter().map(|one| vec![one]));
        Ok(batches)
    }

    /// Records a batch's files as in flight, in one statement committed before any of them is
    /// read; the batch's own transaction clears them ([`write_job`]).
    fn mark_in_flight(&self, batch: &[(Job, String)]) -> Result<(), IngestError> {
        let ids = batch_ids(batch);
        let now = clock::now();
        self.store.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO ingest_in_flight(source_id, attempts, started_at)
                 SELECT value, 1, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT(source_id) DO UPDATE SET attempts = attempts + 1,
                                                      started_at = excluded.started_at",
            )?
            .execute(params![ids, now])?;
            Ok::<_, IngestError>(())
        })
    }

    /// Takes back [`Ingestor::mark_in_flight`] for a batch that was not written for a reason
    /// other than a crash (shutdown, a store error), so it counts no attempt.
    fn unmark_in_flight(&self, batch: &[(Job, String)]) -> Result<(), IngestError> {
        let ids = batch_ids(batch);
        self.store.write(|tx| {
            tx.execute(
                "UPDATE ingest_in_flight SET attempts = attempts - 1
                 WHERE source_id IN (SELECT value FROM json_each(?1))",
                [&ids],
            )?;
            tx.execute("DELETE FROM ingest_in_flight WHERE attempts <= 0", [])?;
            Ok::<_, IngestError>(())
        })
    }

    /// Each new non-empty file takes over the source row (and so the note id) of a file with its
    /// bytes that a sync deleted since `since`; empty files are all alike and never paired.
    /// Returns how many were paired.
    fn pair_recent_deletions(
        &self,
        root: &RootInfo,
        since: &str,
        jobs: &mut [Job],
    ) -> Result<u64, IngestError> {
        let any_deleted: bool = self.store.read(|c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM sources WHERE root_id = ?1 AND deleted_at >= ?2)",
                params![root.id, since],
                |r| r.get(0),
            )
        })?;
        if !any_deleted {
            return Ok(0);
        }
        let mut taken: HashSet<i64> = HashSet::new();
        for job in jobs
            .iter_mut()
            .filter(|j| j.source_id.is_none() && j.file.size > 0)
        {
            let Some(h) = &job.hash else { continue };
            let found: Vec<i64> = self.store.read(|c| {
                c.prepare_cached(
                    "SELECT id FROM sources
                     WHERE content_hash = ?1 AND root_id = ?2 AND deleted_at >= ?3
                     ORDER BY deleted_at DESC",
                )?
                .query_map(params![h, root.id, since], |r| r.get(0))?
                .collect::<Result<_, _>>()
            })?;
            if let Some(id) = found.into_iter().find(|id| !taken.contains(id)) {
                taken.insert(id);
                job.source_id = Some(id);
            }
        }
        Ok(taken.len() as u64)
    }

    /// For each file gone from disk, a live non-empty file with its bytes that a sync first saw
    /// within [`MOVE_WINDOW`] is taken as its move: it becomes a job rewriting the gone file's
    /// source row at the copy's path, and the gone file leaves `gone`. Returns the copies'
    /// own source ids, to be retired.
    fn pair_earlier_copies(
        &self,
        root: &RootInfo,
        since: &str,
        gone: &mut Vec<SourceRow>,
        jobs: &mut Vec<Job>,
    ) -> Result<Vec<i64>, IngestError> {
        let mut superseded: Vec<i64> = Vec::new();
        let mut i = 0;
        while i < gone.len() {
            let g = &gone[i];
            let copy: Option<(i64, String)> = match &g.hash {
                Some(h) if g.size.unwrap_or(0) > 0 => self.store.read(|c| {
                    c.prepare_cached(
                        "SELECT id, rel_path FROM sources
                         WHERE content_hash = ?1 AND root_id = ?2 AND deleted_at IS NULL
                           AND first_seen_at >= ?3 AND id <> ?4 AND status = 'indexed'
                         ORDER BY first_seen_at DESC LIMIT 1",
                    )?
                    .query_row(params![h, root.id, since, g.id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })?,
                _ => None,
            };
            let Some((copy_id, rel)) = copy.filter(|(id, rel)| {
                !superseded.contains(id)
                    && !gone.iter().any(|x| x.id == *id)
                    && !jobs
                        .iter()
                        .any(|j| j.source_id == Some(*id) || j.file.rel == *rel)
            }) else {
                i += 1;
                continue;
            };
            let abs = walk::abs_path(&root.path, &rel);
            let Ok((size, mtime_ns, _)) = walk::stat(&abs) else {
                i += 1;
                continue;
            };
            let job = self.prepare(
                Some(g.id),
                DiskFile {
                    rel,
                    abs,
                    size,
                    mtime_ns,
                },
            );
            if job.hash != g.hash {
                i += 1;
                continue;
            }
            superseded.push(copy_id);
            jobs.push(job);
            gone.remove(i);
        }
        Ok(superseded)
    }

    /// Walks the scope. Returns what was found and, for a partial scope, the relative paths it
    /// covers (a path covers itself and everything below it).
    fn discover(
        &self,
        root: &RootInfo,
        canonical_root: &Path,
        rules: &Rules,
        scope: &Scope,
    ) -> (Vec<Found>, Option<Vec<String>>) {
        match scope {
            Scope::All => (
                walk::walk(&root.path, canonical_root, rules, &root.path),
                None,
            ),
            Scope::Paths { paths, renames } => {
                let mut all: Vec<PathBuf> = paths.clone();
                for (a, b) in renames {
                    all.push(a.clone());
                    all.push(b.clone());
                }
                all.sort();
                all.dedup();
                let mut found = Vec::new();
                let mut rels = Vec::new();
                for p in all {
                    let Some(rel) = walk::rel_path(&root.path, &p) else {
                        continue;
                    };
                    if p.file_name()
                        .is_some_and(|n| rules::IGNORE_FILES.iter().any(|f| n == *f))
                        && let Some(dir) = p.parent()
                    {
                        rules.invalidate(dir);
                    }
                    rels.push(rel.clone());
                    match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => {
                            if !rules.is_ignored(&p, true) {
                                found.extend(walk::walk(&root.path, canonical_root, rules, &p));
                            }
                        }
                        Ok(_) => {
                            let one = walk::walk(&root.path, canonical_root, rules, &p);
                            found.extend(one.into_iter().filter(|f| f.rel() == rel));
                        }
                        Err(_) => {}
                    }
                }
                let mut seen = HashSet::new();
                found.retain(|f| seen.insert(f.rel().to_owned()));
                (found, Some(rels))
            }
        }
    }

    fn live_sources(
        &self,
        root_id: i64,
        scope: Option<&[String]>,
    ) -> Result<BTreeMap<String, SourceRow>, IngestError> {
        Ok(self.store.read(|c| {
            let mut out = BTreeMap::new();
            let mut stmt = c.prepare_cached(
                "SELECT id, rel_path, content_hash, size, mtime_ns, status, reason FROM sources
                 WHERE root_id = ?1 AND deleted_at IS NULL
                   AND (?2 IS NULL OR rel_path = ?2 OR substr(rel_path, 1, length(?2) + 1) = ?2 || '/')",
            )?;
            let mut run = |prefix: Option<&str>| -> rusqlite::Result<()> {
                let rows = stmt.query_map(params![root_id, prefix], |r| {
                    Ok(SourceRow {
                        id: r.get(0)?,
                        rel: r.get(1)?,
                        hash: r.get(2)?,
                        size: r.get(3)?,
                        mtime_ns: r.get(4)?,
                        status: r.get(5)?,
                        reason: r.get(6)?,
                    })
                })?;
                for row in rows {
                    let row = row?;
                    out.insert(row.rel.clone(), row);
                }
                Ok(())
            };
            match scope {
                None => run(None)?,
                Some(rels) => {
                    for rel in rels {
                        run(Some(rel))?;
                    }
                }
            }
            Ok::<_, rusqlite::Error>(out)
        })?)
    }

    /// Reads and classifies one file.
    fn prepare(&self, source_id: Option<i64>, file: DiskFile) -> Job {
        let file_type = FileType::from_path(Path::new(&file.rel));
        if file.size > self.max_file_bytes {
            return Job {
                source_id,
                file,
                outcome: Outcome::Skip(SkipReason::TooLarge),
                hash: None,
                lines: 1,
                aliases: Vec::new(),
                doc: None,
            };
        }
        match walk::read_regular(&file.abs, self.max_file_bytes) {
            Err(e) => Job {
                source_id,
                file,
                outcome: Outcome::unread(e),
                hash: None,
                lines: 1,
                aliases: Vec::new(),
                doc: None,
            },
            Ok(bytes) => {
                let hash = blake3::hash(&bytes).to_hex().to_string();
                let sniff = &bytes[..bytes.len().min(BINARY_SNIFF_BYTES)];
                let outcome = if sniff.contains(&0) {
                    Outcome::Skip(SkipReason::Binary)
                } else {
                    match file_type {
                        Some(t) => Outcome::Parse(t),
                        None => Outcome::Skip(SkipReason::UnsupportedType),
                    }
                };
                let mut file = file;
                file.size = bytes.len() as u64;
                let aliases = match outcome {
                    Outcome::Parse(t) => parse::aliases(&bytes, t),
                    _ => Vec::new(),
                };
                Job {
                    source_id,
                    file,
                    outcome,
                    hash: Some(hash),
                    lines: line_count(&bytes),
                    aliases,
                    doc: None,
                }
            }
        }
    }

    fn referrers(
        &self,
        root_id: i64,
        names: &HashSet<String>,
    ) -> Result<HashSet<String>, IngestError> {
        if names.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(self.store.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT src_node_id FROM link_refs WHERE root_id = ?1 AND name = ?2",
            )?;
            let mut out = HashSet::new();
            for n in names {
                for id in stmt.query_map(params![root_id, n], |r| r.get::<_, String>(0))? {
                    out.insert(id?);
                }
            }
            Ok::<_, rusqlite::Error>(out)
        })?)
    }

    /// Re-reads and rewrites the given notes so their links resolve against the current names.
    fn reresolve(
        &self,
        root: &RootInfo,
        ctx: &Ctx<'_>,
        ids: &HashSet<String>,
    ) -> Result<u64, IngestError> {
        let mut n = 0;
        for id in ids {
            let row: Option<(i64, String)> = self.store.read(|c| {
                c.query_row(
                    "SELECT s.id, s.rel_path FROM nodes n JOIN sources s ON s.id = n.source_id
                     WHERE n.id = ?1 AND n.valid_to IS NULL AND s.deleted_at IS NULL",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })?;
            let Some((sid, rel)) = row else { continue };
            let abs = walk::abs_path(&root.path, &rel);
            let Ok((size, mtime_ns, _)) = walk::stat(&abs) else {
                continue;
            };
            let mut job = self.prepare(
                Some(sid),
                DiskFile {
                    rel,
                    abs,
                    size,
                    mtime_ns,
                },
            );
            job.parse(self.max_file_bytes, None);
            write_with(&self.store, ctx, Checks::Store, |tx| {
                write_job(tx, ctx, &job, id, job.doc.as_ref())?;
                Ok::<_, IngestError>(())
            })?;
            n += 1;
        }
        Ok(n)
    }
}

/// Who does what the store's triggers and foreign keys do, in a write.
#[derive(Clone, Copy)]
enum Checks {
    /// The store ([`Store::write`]).
    Store,
    /// The writer itself ([`Store::write_bulk`]).
    Own,
}

/// Runs `f` in one store transaction, with `ctx`'s remembered lookups scoped to it: they are
/// forgotten when it begins and when it ends, committed or not.
fn write_with<T>(
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

/// A batch's source ids as a JSON array, for `json_each`.
fn batch_ids(batch: &[(Job, String)]) -> String {
    let ids: Vec<i64> = batch.iter().filter_map(|(j, _)| j.source_id).collect();
    serde_json::Value::from(ids).to_string()
}

/// Writes one prepared file: its facts and its final source status.
fn write_job(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    job: &Job,
    note_id: &str,
    doc: Option<&parse::Document>,
) -> Result<Vec<String>, IngestError> {
    let Some(source_id) = job.source_id else {
        return Ok(Vec::new());
    };
    let fv = FileVersion {
        source_id,
        rel_path: &job.file.rel,
        content_hash: job.hash.as_deref().unwrap_or(""),
        size: job.file.size,
        lines: job.lines,
    };
    let names = facts::write_document(tx, ctx, note_id, &fv, doc)?;
    // Whatever the file did, it is no longer in flight once this commits.
    tx.prepare_cached("DELETE FROM ingest_in_flight WHERE source_id = ?1")?
        .execute([source_id])?;
    let (status, reason) = match &job.outcome {
        Outcome::Parse(_) => (SourceStatus::Indexed, None),
        Outcome::Skip(r) => (SourceStatus::Skipped, Some(r.as_str().to_owned())),
        Outcome::Fail(m) => (SourceStatus::Failed, Some(m.clone())),
    };
    let diagnostics: Vec<serde_json::Value> = doc
        .map(|d| {
            d.diagnostics
                .iter()
                .map(|x| serde_json::json!({ "message": x.message, "lines": x.span.map(|s| [s.line_start, s.line_end]) }))
                .collect()
        })
        .unwrap_or_default();
    tx.prepare_cached(
        "UPDATE sources SET status = ?2, reason = ?3, diagnostics = ?4, indexed_at = ?5, last_seen_at = ?5,
                content_hash = coalesce(?6, content_hash), size = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        source_id,
        status,
        reason,
        serde_json::Value::from(diagnostics).to_string(),
        ctx.now,
        job.hash,
        job.file.size as i64
    ])?;
    Ok(names)
}

/// Inserts or updates a live source row; returns its id.
#[allow(clippy::too_many_arguments)]
fn upsert_source(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    id: Option<i64>,
    rel: &str,
    file_type: &str,
    hash: Option<&str>,
    size: Option<u64>,
    mtime_ns: Option<i64>,
    status: SourceStatus,
    reason: Option<&str>,
) -> rusqlite::Result<i64> {
    let size = size.map(|s| s as i64);
    if let Some(id) = id {
        tx.prepare_cached(
            "UPDATE sources SET rel_path = ?2, file_type = ?3, content_hash = ?4, size = ?5, mtime_ns = ?6,
                    status = ?7, reason = ?8, last_seen_at = ?9, deleted_at = NULL WHERE id = ?1",
        )?
        .execute(params![id, rel, file_type, hash, size, mtime_ns, status, reason, ctx.now])?;
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO sources(root_id, rel_path, file_type, content_hash, size, mtime_ns, status, reason,
                             first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![ctx.root_id, rel, file_type, hash, size, mtime_ns, status, reason, ctx.now])?;
    Ok(tx.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten between the read that hashed it and the read that parses it: what is
    /// written cites the bytes parsed, and a file gone by then fails instead of vanishing.
    #[test]
    fn a_job_parses_and_cites_the_bytes_it_reads_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store, "user:test", DEFAULT_MAX_FILE_BYTES);
        let abs = dir.path().join("n.md");
        std::fs::write(&abs, "---\naliases: [First]\n---\none\n").unwrap();
        let disk = |abs: &Path| DiskFile {
            rel: "n.md".into(),
            abs: abs.to_owned(),
            size: std::fs::metadata(abs).unwrap().len(),
            mtime_ns: 0,
        };
        let mut job = ingestor.prepare(None, disk(&abs));
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
        assert_eq!(job.doc.as_ref().unwrap().title.as_deref(), Some("Two"));

        let mut gone = ingestor.prepare(None, disk(&abs));
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

        // What 0006 and earlier wrote: one provenance row per fact, nothing on the facts.
        store
            .write(|tx| {
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
