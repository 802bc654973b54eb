//! The comparing stage: what the walk found against what the sources table says, then the
//! files whose size or mtime moved read and hashed on every core. What comes out is the work
//! of the sync: files to write, files to record without reading, rows only to touch, and rows
//! whose files are gone.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::job::{Job, Mark, SkipReason};
use crate::ingest::SyncReport;
use crate::ingest::status::SourceStatus;
use crate::ingest::walk::{DiskFile, Found};
use crate::ingest::{INGEST_ABORTED, SourceRow};

/// A source row whose file is byte-for-byte what it records, at a new size or mtime.
pub struct Touch {
    pub source_id: i64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What a sync has to do, once compared.
pub struct Compared {
    pub jobs: Vec<Job>,
    pub marks: Vec<Mark>,
    pub touch: Vec<Touch>,
    /// Live rows whose files are no longer on disk.
    pub gone: Vec<SourceRow>,
}

impl SourceRow {
    /// Whether the row is final for the bytes it records, so the same bytes need no ingest:
    /// indexed, skipped, or quarantined after aborted ingests.
    pub(crate) fn settled(&self) -> bool {
        match self.status {
            SourceStatus::Indexed | SourceStatus::Skipped => true,
            SourceStatus::Failed => self.reason.as_deref() == Some(INGEST_ABORTED),
            SourceStatus::Pending => false,
        }
    }
}

/// Compares `found` with the live `sources` of the scope, counting into `report`. Files are
/// read (on every core) only when their size or mtime moved, and written only when their bytes
/// did.
pub fn compare(
    found: Vec<Found>,
    mut sources: BTreeMap<String, SourceRow>,
    max_file_bytes: u64,
    report: &mut SyncReport,
) -> Compared {
    let mut marks: Vec<Mark> = Vec::new();
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
            Found::Ignored { rel } => (rel, SourceStatus::Skipped, SkipReason::Ignored.as_str()),
            Found::OutsideRoot { rel } => (
                rel,
                SourceStatus::Skipped,
                SkipReason::SymlinkLeavesRoot.as_str(),
            ),
            Found::LinkedFolder { rel } => (
                rel,
                SourceStatus::Skipped,
                SkipReason::SymlinkedFolder.as_str(),
            ),
            Found::NotRegular { rel } => (
                rel,
                SourceStatus::Skipped,
                SkipReason::NotARegularFile.as_str(),
            ),
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
            reason: reason.into(),
        });
    }
    let read: Vec<(Option<SourceRow>, Job)> = to_read
        .into_par_iter()
        .map(|(existing, file)| {
            let job = Job::read(existing.as_ref().map(|s| s.id), file, max_file_bytes);
            (existing, job)
        })
        .collect();
    let mut jobs = Vec::new();
    let mut touch = Vec::new();
    for (existing, job) in read {
        if let (Some(src), Some(h)) = (&existing, &job.hash)
            && src.hash.as_deref() == Some(h)
            && src.settled()
        {
            touch.push(Touch {
                source_id: src.id,
                size: job.file.size,
                mtime_ns: job.file.mtime_ns,
            });
            report.unchanged += 1;
            continue;
        }
        jobs.push(job);
    }
    Compared {
        jobs,
        marks,
        touch,
        gone: sources.into_values().collect(),
    }
}
