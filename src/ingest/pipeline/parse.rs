//! The parsing stage: a thread that takes write batches, reads and parses each batch's files on
//! every core, and hands the batch on. Parsing needs no store, so it runs while the writing
//! stage writes the batch before.

use std::sync::mpsc::{Receiver, SyncSender};

use rayon::prelude::*;

use super::batches::Batch;

/// Parses the files of batches, in the order they come.
pub struct Parser<'a> {
    pub max_file_bytes: u64,
    /// The relative path `BRAIN_FAILPOINT=ingest_file:REL` names, if set.
    pub failpoint: Option<&'a str>,
}

impl Parser<'_> {
    /// Parses what `input` brings and sends it to `output`, until either is closed.
    pub fn run(&self, input: Receiver<Batch>, output: SyncSender<Batch>) {
        for mut batch in input {
            self.parse(&mut batch);
            if output.send(batch).is_err() {
                return;
            }
        }
    }

    /// Parses one batch on every core.
    pub fn parse(&self, batch: &mut Batch) {
        batch
            .par_iter_mut()
            .for_each(|item| item.job.parse(self.max_file_bytes, self.failpoint));
    }
}
