//! The moves stage: a new file that is a file gone from disk takes over its source row, and so
//! its note id. Rename events are believed first, then equal content in this sync, then equal
//! content across syncs within [`MOVE_WINDOW`], either way round.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension, params};

use super::job::Job;
use crate::clock;
use crate::ingest::walk::{self, DiskFile};
use crate::ingest::{IngestError, RootInfo, Scope, SourceRow};
use crate::store::Store;

/// A new file with the same bytes as one a sync deleted this recently takes over its source
/// row and note id: it was moved.
const MOVE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Pairs moved files for one sync of a root.
pub struct Moves<'a> {
    pub store: &'a Store,
    pub root: &'a RootInfo,
    pub max_file_bytes: u64,
}

impl Moves<'_> {
    /// Pairs `jobs` with `gone` files (which leave `gone` when paired) and counts the moves.
    /// Returns the source ids of copies that a gone original supersedes, to be retired.
    pub fn pair(
        &self,
        scope: &Scope,
        jobs: &mut Vec<Job>,
        gone: &mut Vec<SourceRow>,
        moved: &mut u64,
    ) -> Result<Vec<i64>, IngestError> {
        if let Scope::Paths { renames, .. } = scope {
            for (from, to) in renames {
                let (Some(from), Some(to)) = (
                    walk::rel_path(&self.root.path, from),
                    walk::rel_path(&self.root.path, to),
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
                    *moved += 1;
                }
            }
        }
        for job in jobs.iter_mut().filter(|j| j.source_id.is_none()) {
            let Some(h) = &job.hash else { continue };
            if let Some(gi) = gone.iter().position(|g| g.hash.as_deref() == Some(h)) {
                job.source_id = Some(gone.remove(gi).id);
                *moved += 1;
            }
        }
        // Then across syncs: a move by something that deletes first and creates later (a copy
        // across devices, a sync tool) can land in two syncs, either way round.
        let since = clock::format(SystemTime::now() - MOVE_WINDOW);
        *moved += self.pair_recent_deletions(&since, jobs)?;
        // And the other order: the copy appeared in a recent sync and the original goes now.
        // The copy takes over the original's source row and note id; the node it got when it
        // appeared is retired with its source row.
        let superseded = self.pair_earlier_copies(&since, gone, jobs)?;
        *moved += superseded.len() as u64;
        Ok(superseded)
    }

    /// Each new non-empty file takes over the source row (and so the note id) of a file with its
    /// bytes that a sync deleted since `since`; empty files are all alike and never paired.
    /// Returns how many were paired.
    fn pair_recent_deletions(&self, since: &str, jobs: &mut [Job]) -> Result<u64, IngestError> {
        let root_id = self.root.id;
        let any_deleted: bool = self.store.read(|c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM sources WHERE root_id = ?1 AND deleted_at >= ?2)",
                params![root_id, since],
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
                .query_map(params![h, root_id, since], |r| r.get(0))?
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
                    .query_row(params![h, self.root.id, since, g.id], |r| {
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
            let Ok(file) = DiskFile::at(&self.root.path, rel) else {
                i += 1;
                continue;
            };
            let job = Job::read(Some(g.id), file, self.max_file_bytes);
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
}
