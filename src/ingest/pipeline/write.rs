//! The writing stage: the one writer. It marks each batch in flight and hands it to the parsing
//! stage, then writes the batch parsed before it in one transaction, so that parsing and
//! writing overlap while at most two batches are marked and alive (one being parsed, one being
//! written); a batch once written is dropped on a thread of its own, which takes one at a time
//! with one waiting. After each batch it wakes whoever keeps derived indexes (the text index's own
//! thread), so they catch up while the sync goes on.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use rusqlite::{Transaction, params};

use super::batches::{self, Batch, Item};
use super::job::Outcome;
use super::parse::Parser;
use crate::ingest::facts::{self, Ctx, FileVersion};
use crate::ingest::{AfterWrite, Checks, IngestError, Progress, SyncReport, write_with};
use crate::store::Store;

/// Batches that may wait between the stages, each way: with one being parsed and one being
/// written, the writer never waits for a batch the parser has finished.
const QUEUED_BATCHES: usize = 1;

/// The thread that frees written batches.
const FREE_THREAD: &str = "ingest-free";

/// The writing stage of one sync.
pub struct Writer<'a> {
    pub store: &'a Store,
    pub ctx: &'a Ctx<'a>,
    pub parser: Parser<'a>,
    pub cancel: &'a AtomicBool,
    /// Run after each batch commits; must not block.
    pub after_batch: Option<&'a AfterWrite>,
}

/// What writing left for the stages after it.
#[derive(Default)]
pub struct Written {
    /// Notes whose facts were written.
    pub processed: HashSet<String>,
    /// Names that changed while writing (aliases, which registering already wrote, so none
    /// in practice): every note using them is redone, this sync's included.
    pub late_names: HashSet<String>,
    /// The sync was cancelled; what was not written stays as it was, or `pending`.
    pub cancelled: bool,
}

impl Writer<'_> {
    /// Parses and writes `batches` in order, counting into `report` and telling `progress`.
    pub fn run(
        &self,
        mut batches: VecDeque<Batch>,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<Written, IngestError> {
        let total = batches.iter().map(Vec::len).sum::<usize>() as u64;
        let mut out = Written::default();
        let Some(first) = batches.pop_front() else {
            return Ok(out);
        };
        batches::mark_in_flight(self.store, &first)?;
        std::thread::scope(|scope| {
            let (to_parse, parse_rx) = sync_channel::<Batch>(QUEUED_BATCHES);
            let (parsed_tx, parsed) = sync_channel::<Batch>(QUEUED_BATCHES);
            let parser = &self.parser;
            scope.spawn(move || parser.run(parse_rx, parsed_tx));
            // Freeing a written batch's documents is a few percent of the writer's time: another
            // thread does it, one batch at a time, so memory stays bounded. A sync of one batch
            // (an edit) has nothing to overlap it with; without that thread (it could not be
            // started) the writer frees them itself.
            let to_free = (!batches.is_empty())
                .then(|| {
                    let (written_tx, written_rx) = sync_channel::<Batch>(QUEUED_BATCHES);
                    std::thread::Builder::new()
                        .name(FREE_THREAD.to_owned())
                        .spawn_scoped(scope, move || written_rx.into_iter().for_each(drop))
                        .ok()
                        .map(|_| written_tx)
                })
                .flatten();
            // Never fails: the parser holds its receiver until this sender is dropped.
            let _ = to_parse.send(first);
            let mut to_parse = Some(to_parse);
            let mut done = 0u64;
            while let Ok(batch) = parsed.recv() {
                if self.cancel.load(Ordering::Relaxed) {
                    batches::unmark_in_flight(self.store, &batch)?;
                    self.drain(to_parse.take(), &parsed)?;
                    out.cancelled = true;
                    return Ok(out);
                }
                match batches.pop_front() {
                    Some(next) => {
                        if let Err(e) = batches::mark_in_flight(self.store, &next) {
                            batches::unmark_in_flight(self.store, &batch)?;
                            self.drain(to_parse.take(), &parsed)?;
                            return Err(e);
                        }
                        if let Some(tx) = &to_parse {
                            let _ = tx.send(next);
                        }
                    }
                    // The parser ends once it has parsed what it holds.
                    None => drop(to_parse.take()),
                }
                if let Err(e) = self.write(&batch, &mut out, report) {
                    // Not a crash: what was marked is no suspect at the next ingest.
                    batches::unmark_in_flight(self.store, &batch)?;
                    self.drain(to_parse.take(), &parsed)?;
                    return Err(e);
                }
                if let Some(f) = self.after_batch {
                    f();
                }
                for item in &batch {
                    done += 1;
                    progress(&Progress {
                        done,
                        total,
                        bytes: report.bytes,
                        path: &item.job.file.rel,
                    });
                }
                if let Some(tx) = &to_free {
                    // A batch the thread did not take is freed here.
                    let _ = tx.send(batch);
                }
            }
            Ok(out)
        })
    }

    /// Stops the parser and takes back the in-flight marks of what it still held.
    fn drain(
        &self,
        to_parse: Option<std::sync::mpsc::SyncSender<Batch>>,
        parsed: &Receiver<Batch>,
    ) -> Result<(), IngestError> {
        drop(to_parse);
        for batch in parsed.iter() {
            batches::unmark_in_flight(self.store, &batch)?;
        }
        Ok(())
    }

    /// Writes one parsed batch in one transaction. Each file queues its own note for search,
    /// and refers only to rows written or read in this transaction: the store's checks are
    /// left to it.
    fn write(
        &self,
        batch: &[Item],
        out: &mut Written,
        report: &mut SyncReport,
    ) -> Result<(), IngestError> {
        let mut counts = SyncReport::default();
        let mut names = Vec::new();
        write_with(self.store, self.ctx, Checks::Own, |tx| {
            for item in batch {
                names.extend(write_job(tx, self.ctx, item)?);
                match &item.job.outcome {
                    Outcome::Parse(_) => counts.indexed += 1,
                    Outcome::Skip(_) => counts.skipped += 1,
                    Outcome::Fail(_) => counts.failed += 1,
                }
                counts.bytes += item.job.file.size;
            }
            Ok::<_, IngestError>(())
        })?;
        // Counted once committed, so a failed batch counts nothing.
        report.indexed += counts.indexed;
        report.skipped += counts.skipped;
        report.failed += counts.failed;
        report.bytes += counts.bytes;
        out.late_names.extend(names);
        out.processed
            .extend(batch.iter().map(|item| item.note_id.clone()));
        Ok(())
    }
}

/// Writes one file: its facts and its final source status. Returns the names it changed.
pub fn write_job(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    item: &Item,
) -> Result<Vec<String>, IngestError> {
    let job = &item.job;
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
    let doc = job.doc.as_ref();
    let names = facts::write_document(tx, ctx, &item.note_id, &fv, doc)?;
    // Whatever the file did, it is no longer in flight once this commits.
    tx.prepare_cached("DELETE FROM ingest_in_flight WHERE source_id = ?1")?
        .execute([source_id])?;
    let (status, reason) = job.outcome.final_status();
    // What a file without a document has: none.
    let diagnostics = doc.map_or("[]", |d| d.diagnostics.as_str());
    tx.prepare_cached(
        "UPDATE sources SET status = ?2, reason = ?3, diagnostics = ?4, indexed_at = ?5, last_seen_at = ?5,
                content_hash = coalesce(?6, content_hash), size = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        source_id,
        status,
        reason,
        diagnostics,
        ctx.now,
        job.hash,
        job.file.size as i64
    ])?;
    Ok(names)
}
