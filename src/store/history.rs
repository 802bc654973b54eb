//! Keeping the store small: retired text past its retention, freed pages given back.
//!
//! Facts are retired, never deleted, so a store only grows; this module bounds what the history
//! costs. The text of a retired chunk is dropped once it is older than the retention (the
//! chunk's row, its citation and its edges stay, so what cited it still says where it came
//! from); freed pages are returned to the file system by an incremental vacuum after large
//! deletions, and by [`Store::compact`] on request. It must not delete facts: that is
//! `ingest::purge`'s, and only when a user asks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::params;

use super::{Store, StoreError};
use crate::clock;

/// Chunks whose text is dropped per transaction: small enough that the writer is never held
/// for long (ingest and workflow steps queue behind it), large enough that a first run over
/// years of history takes a few hundred transactions, not millions.
pub const PURGE_BATCH: usize = 2_000;

/// Housekeeping runs when the daemon starts and then after a sync at most this often: the
/// retention is counted in days, so an hour late is never noticed, and a daemon that syncs
/// every few seconds does not pay for the check each time.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Freed pages past which the store gives them back to the file system after housekeeping or
/// a purge (4 MiB at the default 4 KiB page): below it the next writes reuse them anyway.
pub const RECLAIM_MIN_FREE_PAGES: i64 = 1_024;

/// The write-ahead log size past which a sync's end truncates it ([`Store::settle_wal`]): well
/// above what edits leave (the log is reused in place), well below what a bulk ingest grows.
pub const WAL_SETTLE_BYTES: u64 = 16 << 20;

/// What [`Store::compact`] did, in bytes of the database plus its write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// Drops the text (and the vectors, which are derived from it) of chunks retired before
    /// `cutoff` (an RFC 3339 time). The chunk's row and its citation stay. Returns how many
    /// chunks lost their text.
    pub fn purge_retired_text(&self, cutoff: &str) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                // `chunks_retired_text` (0010) holds exactly the rows this asks for.
                let ids: Vec<i64> = tx
                    .prepare_cached(
                        "SELECT rid FROM chunks
                         WHERE valid_to IS NOT NULL AND content IS NOT NULL AND valid_to <= ?1
                         LIMIT ?2",
                    )?
                    .query_map(
                        params![crate::clock::millis(cutoff), PURGE_BATCH as i64],
                        |r| r.get(0),
                    )?
                    .collect::<Result<_, _>>()?;
                let mut clear =
                    tx.prepare_cached("UPDATE chunks SET content = NULL WHERE rid = ?1")?;
                let mut unembed =
                    tx.prepare_cached("DELETE FROM chunk_vectors WHERE chunk_rid = ?1")?;
                for id in &ids {
                    clear.execute([id])?;
                    unembed.execute([id])?;
                }
                Ok::<_, StoreError>(ids.len())
            })?;
            total += n;
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Gives freed pages back to the file system when there are many: an incremental vacuum
    /// (a no-op on a store that is not yet `auto_vacuum = INCREMENTAL`, see [`Store::compact`])
    /// and a checkpoint that truncates the write-ahead log the deletions grew.
    pub fn reclaim(&self) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        if free < RECLAIM_MIN_FREE_PAGES {
            return Ok(());
        }
        // incremental_vacuum returns a row per page step; draining them runs it to the end.
        {
            let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        checkpoint_truncate(&mut conn)?;
        Ok(())
    }

    /// Truncates the write-ahead log once it has grown past [`WAL_SETTLE_BYTES`]: a burst of
    /// writes (a cold ingest) leaves a log of tens of megabytes that the automatic checkpoint
    /// copies back but never shrinks, and an idle daemon should not hold that disk. Called after
    /// each sync; a small log is left alone, so ordinary edits cost a `stat`.
    pub fn settle_wal(&self) -> Result<(), StoreError> {
        let wal = {
            let mut name = self.path().as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        let big = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_SETTLE_BYTES);
        if big {
            let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            checkpoint_truncate(&mut conn)?;
        }
        Ok(())
    }

    /// Returns every free page to the file system: checkpoints the write-ahead log, rewrites
    /// the database with `VACUUM` (which also switches a store made before schema 9 to
    /// `auto_vacuum = INCREMENTAL`, so later deletions can give pages back without this), and
    /// truncates the log again. Takes as long as copying the store once; writers wait, readers
    /// go on.
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        let bytes_before = self.size_bytes();
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Pooled readers are closed so that none holds a snapshot the checkpoint must keep.
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        checkpoint_truncate(&mut conn)?;
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
        checkpoint_truncate(&mut conn)?;
        drop(conn);
        Ok(Compaction {
            bytes_before,
            bytes_after: self.size_bytes(),
        })
    }
}

fn checkpoint_truncate(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    // The row says whether a reader kept it from finishing; a partial checkpoint is still
    // correct, the log is then truncated by a later one.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Runs the retention purge when the daemon starts and then at most once per
/// [`HOUSEKEEPING_INTERVAL`], when asked after a sync: never on a timer, so an idle daemon
/// stays idle.
pub struct Housekeeper {
    store: Arc<Store>,
    retention: Duration,
    last: Mutex<Option<Instant>>,
}

impl Housekeeper {
    pub fn new(store: Arc<Store>, retention: Duration) -> Housekeeper {
        Housekeeper {
            store,
            retention,
            last: Mutex::new(None),
        }
    }

    /// Purges retired text past the retention if the last run was long enough ago (or never
    /// in this process), then gives back the pages that freed. Errors are logged: the purge
    /// is retried on the next run, and nothing depends on it having happened.
    pub fn run_if_due(&self) {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < HOUSEKEEPING_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cutoff = clock::format(
            SystemTime::now()
                .checked_sub(self.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        match self.store.purge_retired_text(&cutoff) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    chunks = n,
                    "dropped the text of chunks retired past retention"
                );
                if let Err(e) = self.store.reclaim() {
                    tracing::warn!(error = %e, "could not give freed pages back");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not drop retired text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        (dir, store)
    }

    /// A note with one current and `retired` retired chunks, retired at `valid_to`, each cited.
    fn chunks(store: &Store, retired: usize, valid_to: &str) {
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/r', 'u', 't');
                     INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                       VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
                     INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
                       VALUES (1, 1, 'h', 'x', '1', 'u', 't');
                     INSERT INTO nodes(id, kind, key, owner_id, valid_from, created_at, updated_at)
                       VALUES ('n', 'note', 'source:1', 'u', 't', 't', 't');
                     INSERT INTO chunks(legacy_id, source_id, ordinal, key, content, cite_version, byte_start, byte_end, valid_from)
                       VALUES ('live', 1, 0, 'c', 'live text', 1, 0, 9, 0);",
                )?;
                for i in 0..retired {
                    tx.execute(
                        "INSERT INTO chunks(legacy_id, source_id, ordinal, key, content, cite_version, byte_start, byte_end, valid_from, valid_to)
                         VALUES (?1, 1, ?3, ?1, 'old text', 1, 0, 8, 0, ?2)",
                        params![format!("old{i}"), crate::clock::millis(valid_to), i as i64],
                    )?;
                    tx.execute(
                        "INSERT INTO chunk_vectors(chunk_rid, model_id, dim, vector, content_hash, created_at)
                         VALUES (last_insert_rowid(), 'm', 1, x'00000000', 'h', 't')",
                        [],
                    )?;
                }
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.read(|c| c.query_row(sql, [], |r| r.get(0))).unwrap()
    }

    #[test]
    fn retired_text_past_the_cutoff_goes_and_its_citation_stays() {
        let (_d, s) = store();
        chunks(&s, PURGE_BATCH + 3, "2020-01-01T00:00:00.000Z");
        assert_eq!(s.purge_retired_text("2019-12-31T00:00:00.000Z").unwrap(), 0);
        assert_eq!(
            s.purge_retired_text("2020-01-01T00:00:00.000Z").unwrap(),
            PURGE_BATCH + 3
        );
        assert_eq!(
            count(&s, "SELECT count(*) FROM chunks WHERE content IS NOT NULL"),
            1
        );
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM chunks WHERE valid_to IS NOT NULL AND cite_version = 1 AND byte_end = 8"
            ),
            (PURGE_BATCH + 3) as i64
        );
        assert_eq!(count(&s, "SELECT count(*) FROM chunk_vectors"), 0);
        assert_eq!(s.purge_retired_text("2030-01-01T00:00:00.000Z").unwrap(), 0);
    }

    #[test]
    fn housekeeping_runs_once_per_interval() {
        let (_d, s) = store();
        let s = Arc::new(s);
        chunks(&s, 2, "2020-01-01T00:00:00.000Z");
        let h = Housekeeper::new(s.clone(), Duration::from_secs(24 * 3600));
        h.run_if_due();
        assert_eq!(
            count(&s, "SELECT count(*) FROM chunks WHERE content IS NOT NULL"),
            1
        );
        // Retired since the last run: not purged until the interval has passed.
        s.write(|tx| {
            tx.execute(
                "UPDATE chunks SET valid_to = ?1 WHERE legacy_id = 'live'",
                [crate::clock::millis("2020-01-02T00:00:00.000Z")],
            )
        })
        .unwrap();
        h.run_if_due();
        assert_eq!(
            count(&s, "SELECT count(*) FROM chunks WHERE content IS NOT NULL"),
            1
        );
    }

    #[test]
    fn a_large_write_ahead_log_is_truncated_after_a_burst_and_a_small_one_is_left() {
        let (d, s) = store();
        let wal = d.path().join("brain.db-wal");
        let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let big = "x".repeat(1 << 20);
        for i in 0..(WAL_SETTLE_BYTES >> 20) + 4 {
            s.write(|tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                    params![format!("k{i}"), big],
                )
            })
            .unwrap();
        }
        assert!(wal_len() > WAL_SETTLE_BYTES, "{}", wal_len());
        s.settle_wal().unwrap();
        assert_eq!(wal_len(), 0);
        s.write(|tx| tx.execute("DELETE FROM meta WHERE key = 'k0'", []))
            .unwrap();
        let small = wal_len();
        assert!(small > 0);
        s.settle_wal().unwrap();
        assert_eq!(wal_len(), small, "a small log is left alone");
    }

    #[test]
    fn new_stores_vacuum_incrementally_and_compact_reports_sizes() {
        let (_d, s) = store();
        let mode: i64 = s
            .read(|c| c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, 2, "INCREMENTAL");
        chunks(&s, 5_000, "2020-01-01T00:00:00.000Z");
        s.write(|tx| tx.execute("DELETE FROM chunk_vectors", []))
            .unwrap();
        let c = s.compact().unwrap();
        assert!(c.bytes_after < c.bytes_before, "{c:?}");
        assert_eq!(c.bytes_after, s.size_bytes());
    }
}
