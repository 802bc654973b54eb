//! Write batches: the registered files cut into transactions by count and by bytes, files left
//! in flight by a crash retried alone or quarantined, and the in-flight marks themselves.

use std::collections::{HashMap, VecDeque};

use rusqlite::params;

use super::job::{Job, Outcome};
use crate::clock;
use crate::ingest::{INGEST_ABORTED, IngestError};
use crate::store::Store;

/// Files written per transaction in a large sync, at most: big enough to amortize commits,
/// small enough that a crash redoes little (on obsidian-hub, 1,024 was no faster and kept
/// ~15 MiB more resident).
const WRITE_BATCH: usize = 256;
/// File bytes per write batch, at most (or one file): a batch's bytes and parsed documents are
/// what the parsing and writing stages hold, so this, not the folder, sets their memory. A few
/// batches are alive at once (one written, one parsed, one queued between them).
const WRITE_BATCH_BYTES: u64 = 4 << 20;
/// Ingests of one file that may begin and never finish (the process died) before it is
/// quarantined: the first may have died for something else in its batch, so it is retried
/// once, alone.
const MAX_INGEST_ATTEMPTS: i64 = 2;

/// A file to write and the id of its node.
pub struct Item {
    pub job: Job,
    pub note_id: String,
}

/// Files written in one transaction.
pub type Batch = Vec<Item>;

/// Orders the registered files into write batches. A file still marked in flight was being
/// ingested when the process died: it is retried alone, after the others, so that if it kills
/// the process again nothing beside it is held back; one marked after its retry is quarantined
/// instead of read.
pub fn plan(
    store: &Store,
    jobs: Vec<Job>,
    note_ids: Vec<String>,
) -> Result<VecDeque<Batch>, IngestError> {
    let ids: Vec<i64> = jobs.iter().filter_map(|j| j.source_id).collect();
    let attempts: HashMap<i64, i64> = store.read(|c| {
        c.prepare_cached(
            "SELECT source_id, attempts FROM ingest_in_flight
             WHERE source_id IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([serde_json::Value::from(ids).to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect()
    })?;
    let mut batches: VecDeque<Batch> = VecDeque::new();
    let mut suspects: Vec<Item> = Vec::new();
    let mut current: Batch = Vec::new();
    let mut bytes = 0;
    for (mut job, note_id) in jobs.into_iter().zip(note_ids) {
        match job.source_id.and_then(|id| attempts.get(&id)) {
            Some(&n) if n >= MAX_INGEST_ATTEMPTS => {
                tracing::warn!(path = %job.file.rel, attempts = n, "quarantined: ingest aborted");
                job.outcome = Outcome::Fail(INGEST_ABORTED.to_owned());
            }
            Some(_) if matches!(job.outcome, Outcome::Parse(_)) => {
                suspects.push(Item { job, note_id });
                continue;
            }
            _ => {}
        }
        if !current.is_empty()
            && (current.len() == WRITE_BATCH || bytes + job.file.size > WRITE_BATCH_BYTES)
        {
            batches.push_back(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += job.file.size;
        current.push(Item { job, note_id });
    }
    if !current.is_empty() {
        batches.push_back(current);
    }
    batches.extend(suspects.into_iter().map(|one| vec![one]));
    Ok(batches)
}

/// A batch's source ids as a JSON array, for `json_each`.
fn ids(batch: &[Item]) -> String {
    let ids: Vec<i64> = batch.iter().filter_map(|i| i.job.source_id).collect();
    serde_json::Value::from(ids).to_string()
}

/// Records a batch's files as in flight, in one statement committed before any of them is
/// read; the batch's own transaction clears them (`write::write_job`).
pub fn mark_in_flight(store: &Store, batch: &[Item]) -> Result<(), IngestError> {
    let ids = ids(batch);
    let now = clock::now();
    store.write(|tx| {
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

/// Takes back [`mark_in_flight`] for a batch that was not written for a reason other than a
/// crash (shutdown, a store error), so it counts no attempt.
pub fn unmark_in_flight(store: &Store, batch: &[Item]) -> Result<(), IngestError> {
    let ids = ids(batch);
    store.write(|tx| {
        tx.execute(
            "UPDATE ingest_in_flight SET attempts = attempts - 1
             WHERE source_id IN (SELECT value FROM json_each(?1))",
            [&ids],
        )?;
        tx.execute("DELETE FROM ingest_in_flight WHERE attempts <= 0", [])?;
        Ok::<_, IngestError>(())
    })
}
