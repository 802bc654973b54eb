//! The stages of a sync, in the order [`crate::ingest::Ingestor::sync_cancellable`] runs them:
//!
//! 1. [`discover`]: the walk of the scope, and the live source rows it covers.
//! 2. [`compare`]: the two compared; files whose size or mtime moved are read and hashed on
//!    every core; only changed bytes make a [`job::Job`].
//! 3. [`moves`]: new files paired with gone ones (rename events, then equal content).
//! 4. [`register`]: one transaction registering every file's source row, node and names.
//! 5. [`batches`]: the files cut into write batches (by count and bytes), crash suspects alone.
//! 6. [`parse`] → [`write`]: a parsing thread (reading and parsing each batch on every core)
//!    feeds the one writer through bounded channels; each batch is one transaction. The text
//!    index, on its own thread, is woken after each batch and applies what the store queued in
//!    pages bounded by bytes (`search::indexer`).
//! 7. [`relink`]: notes elsewhere whose links may now resolve differently are written again.
//!
//! Architecture Invariant: memory follows the batch sizes, not the folder: what a sync holds
//! for every file is its path, hash and aliases; bytes and parsed documents live only in the
//! batches between the parsing and writing stages.

pub mod batches;
pub mod compare;
pub mod discover;
pub mod job;
pub mod moves;
pub mod parse;
pub mod register;
pub mod relink;
pub mod write;

use std::time::Instant;

/// Times the stages of one sync, for the `debug` log: where a slow sync spends its time.
pub struct StageClock {
    last: Instant,
}

impl StageClock {
    pub fn new() -> StageClock {
        StageClock {
            last: Instant::now(),
        }
    }

    /// Logs the time since the last lap as `stage`'s.
    pub fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            stage,
            ms = now.duration_since(self.last).as_millis() as u64,
            "sync stage done"
        );
        self.last = now;
    }
}
