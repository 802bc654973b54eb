//! The registering stage, in one transaction before any file's facts are written: source rows
//! touched, files gone retired, marks recorded, and every file to write given its source row,
//! its own node and the names links can use for it (front matter aliases included), so that
//! links between files of one sync resolve on the first pass.

use std::collections::HashSet;

use rusqlite::{Transaction, params};

use super::compare::Compared;
use super::job::Outcome;
use crate::ingest::facts::{self, Ctx};
use crate::ingest::parse::FileType;
use crate::ingest::status::SourceStatus;
use crate::ingest::{Checks, FileChange, IngestError, RootInfo, SyncReport, walk, write_with};
use crate::store::Store;

/// What registering leaves for the writing stage.
pub struct Registered {
    /// The node of each of `Compared::jobs`, in order.
    pub note_ids: Vec<String>,
    /// Link names gained or lost: notes elsewhere that use them may resolve differently.
    pub changed_names: HashSet<String>,
    /// Files new or changed, for the change hook.
    pub changes: Vec<FileChange>,
}

/// Registers `work` (and retires `superseded` copies) in one transaction.
pub fn register(
    store: &Store,
    ctx: &Ctx<'_>,
    root: &RootInfo,
    sync_started_at: &str,
    work: &mut Compared,
    superseded: &[i64],
    report: &mut SyncReport,
) -> Result<Registered, IngestError> {
    let mut out = Registered {
        note_ids: Vec::with_capacity(work.jobs.len()),
        changed_names: HashSet::new(),
        changes: Vec::new(),
    };
    let now = ctx.now;
    write_with(store, ctx, Checks::Store, |tx| {
        for t in &work.touch {
            tx.prepare_cached(
                "UPDATE sources SET size = ?2, mtime_ns = ?3, last_seen_at = ?4 WHERE id = ?1",
            )?
            .execute(params![t.source_id, t.size as i64, t.mtime_ns, now])?;
        }
        // Before any source takes over a superseded copy's path.
        for id in superseded {
            out.changed_names.extend(retire_source(tx, ctx, *id)?);
        }
        for g in &work.gone {
            out.changed_names.extend(retire_source(tx, ctx, g.id)?);
            report.deleted += 1;
        }
        for m in &work.marks {
            if let Some(id) = m.source_id {
                out.changed_names.extend(facts::retire_file(tx, ctx, id)?);
            }
            upsert_source(
                tx,
                ctx,
                m.source_id,
                &SourceFields {
                    rel: &m.rel,
                    file_type: super::job::file_type_name(None),
                    hash: None,
                    size: None,
                    mtime_ns: None,
                    status: m.status,
                    reason: Some(&m.reason),
                },
            )?;
            if m.status == SourceStatus::Failed {
                report.failed += 1;
            } else {
                report.skipped += 1;
            }
        }
        for job in work.jobs.iter_mut() {
            if matches!(job.outcome, Outcome::Parse(_)) {
                out.changes.push(FileChange {
                    rel: job.file.rel.clone(),
                    abs: walk::abs_path(&root.path, &job.file.rel),
                    created: job.source_id.is_none(),
                    sync_started_at: sync_started_at.to_owned(),
                });
            }
            // Pending until its facts are written; a skip keeps its reason meanwhile.
            let (status, reason) = match &job.outcome {
                Outcome::Parse(_) => (SourceStatus::Pending, None),
                Outcome::Skip(r) => (SourceStatus::Pending, Some(r.as_str().to_owned())),
                Outcome::Fail(m) => (SourceStatus::Failed, Some(m.clone())),
            };
            let id = upsert_source(
                tx,
                ctx,
                job.source_id,
                &SourceFields {
                    rel: &job.file.rel,
                    file_type: job.file_type_name(),
                    hash: job.hash.as_deref(),
                    size: Some(job.file.size),
                    mtime_ns: Some(job.file.mtime_ns),
                    status,
                    reason: reason.as_deref(),
                },
            )?;
            job.source_id = Some(id);
            let is_md = job.outcome == Outcome::Parse(FileType::Markdown);
            let mut node = facts::ensure_file_node(
                tx,
                ctx,
                id,
                &job.file.rel,
                job.outcome.node_kind().as_str(),
                is_md,
            )?;
            out.changed_names.extend(std::mem::take(&mut node.changed));
            out.changed_names.extend(facts::write_file_node_aliases(
                tx,
                ctx,
                &node,
                &job.file.rel,
                &job.aliases,
            )?);
            out.note_ids.push(node.id);
        }
        Ok::<_, IngestError>(())
    })?;
    Ok(out)
}

/// Retires what a source's file said and the source row itself; returns the names it lost.
fn retire_source(tx: &Transaction<'_>, ctx: &Ctx<'_>, id: i64) -> rusqlite::Result<Vec<String>> {
    let names = facts::retire_file(tx, ctx, id)?;
    tx.execute(
        "UPDATE sources SET deleted_at = ?2 WHERE id = ?1",
        params![id, ctx.now],
    )?;
    Ok(names)
}

/// The columns of a live source row a sync writes.
struct SourceFields<'a> {
    rel: &'a str,
    file_type: &'static str,
    hash: Option<&'a str>,
    size: Option<u64>,
    mtime_ns: Option<i64>,
    status: SourceStatus,
    reason: Option<&'a str>,
}

/// Inserts or updates a live source row; returns its id.
fn upsert_source(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    id: Option<i64>,
    f: &SourceFields<'_>,
) -> rusqlite::Result<i64> {
    let size = f.size.map(|s| s as i64);
    if let Some(id) = id {
        tx.prepare_cached(
            "UPDATE sources SET rel_path = ?2, file_type = ?3, content_hash = ?4, size = ?5, mtime_ns = ?6,
                    status = ?7, reason = ?8, last_seen_at = ?9, deleted_at = NULL WHERE id = ?1",
        )?
        .execute(params![
            id,
            f.rel,
            f.file_type,
            f.hash,
            size,
            f.mtime_ns,
            f.status,
            f.reason,
            ctx.now
        ])?;
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO sources(root_id, rel_path, file_type, content_hash, size, mtime_ns, status, reason,
                             first_seen_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![
        ctx.root_id,
        f.rel,
        f.file_type,
        f.hash,
        size,
        f.mtime_ns,
        f.status,
        f.reason,
        ctx.now
    ])?;
    Ok(tx.last_insert_rowid())
}
