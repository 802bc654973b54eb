//! The embedding lifecycle: the active model and its vectors, the embedding worker, and the
//! text a chunk is embedded as. Must not answer queries.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::params;
use tracing::{info, warn};

use super::vectors::{self, Vectors};
use super::{Embed, Model, Search, SearchError, index, lower_thread_priority};
use crate::clock;
use crate::store::part_id::{self, PartKind};

/// Chunks embedded per batch; each batch is one store transaction and one call into the
/// embedder, which packs them into forward passes of its own size. Choosing the batch orders
/// every pending chunk (newest note first), a scan of all current chunks: at this size the
/// scan is a few per cent of the batch's embedding time even at 100k chunks, and a note
/// changed meanwhile waits for at most one batch before it goes first.
pub const EMBED_BATCH: usize = 256;
/// Test hook (`BRAIN_FAILPOINT`): the worker embeds the first pending chunk and then nothing
/// more, so a test can see which chunk goes first and how the daemon answers mid-way.
const FAILPOINT_HOLD_AFTER_ONE: &str = "embed_hold_after_one";

impl Search {
    /// Makes `embedder` the active model: loads its stored vectors and lets the worker embed
    /// what is missing.
    pub fn set_model(&self, embedder: Arc<dyn Embed>) -> Result<(), SearchError> {
        let vectors = self
            .store
            .read(|c| Vectors::load(c, embedder.model_id(), embedder.dim()))?;
        info!(
            model = embedder.model_id(),
            vectors = vectors.len(),
            "embedding model active"
        );
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Some(Model { embedder, vectors });
        *self.model_state.lock().unwrap_or_else(|p| p.into_inner()) = "ready".into();
        self.kick_embedder();
        Ok(())
    }

    pub fn set_model_state(&self, s: &str) {
        *self.model_state.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    pub fn has_vectors(&self) -> bool {
        self.model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|m| !m.vectors.is_empty())
    }

    pub(super) fn kick_embedder(&self) {
        let (lock, cv) = &self.embed_signal;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// The embedding worker: sleeps until kicked, then embeds every current chunk that has no
    /// vector for the active model, a batch per transaction, and sleeps again. Resumable by
    /// construction: what is done is in the store.
    pub(super) fn embed_loop(&self) {
        lower_thread_priority();
        let pool = match crate::embed::worker_pool(crate::embed::worker_threads()) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot start the embedding pool");
                self.set_model_state(&format!("error: {e}"));
                return;
            }
        };
        // A start after a panic picks up what the last run left undone, without waiting for
        // the next change.
        self.kick_embedder();
        loop {
            {
                let (lock, cv) = &self.embed_signal;
                let mut kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*kicked {
                    kicked = cv.wait(kicked).unwrap_or_else(|p| p.into_inner());
                }
                *kicked = false;
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.failpoint.as_deref() == Some(FAILPOINT_HOLD_AFTER_ONE) {
                if !self.failpoint_fired.load(Ordering::SeqCst) {
                    match pool.install(|| self.embed_batch(1)) {
                        Ok(0) => {}
                        Ok(_) => self.failpoint_fired.store(true, Ordering::SeqCst),
                        Err(e) => warn!(error = %e, "embedding failed"),
                    }
                }
                continue;
            }
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                match pool.install(|| self.embed_batch(EMBED_BATCH)) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "embedding failed; will retry on the next change");
                        self.set_model_state(&format!("error: {e}"));
                        break;
                    }
                }
            }
        }
    }

    /// Embeds up to `n` chunks lacking a vector, those of the most recently modified notes
    /// first (file modification time, newest first), so what the user is working on is
    /// searchable by meaning before the rest. Returns how many were embedded.
    pub fn embed_batch(&self, n: usize) -> Result<usize, SearchError> {
        let Some(embedder) = self
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.embedder.clone())
        else {
            return Ok(0);
        };
        let model_id = embedder.model_id().to_owned();
        // (chunk id, note id, text to embed, chunk row)
        let todo: Vec<(String, String, String, i64)> = self.store.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.legacy_id, n.id, COALESCE(n.title, ''), coalesce(c.heading_path, (SELECT s0.path FROM sections s0 WHERE s0.source_id = c.source_id AND s0.ordinal = c.section AND s0.valid_to IS NULL)), COALESCE(c.content, ''), c.rid
                 FROM chunks c
                 JOIN sources s ON s.id = c.source_id
                 JOIN nodes n ON n.kind IN ('note', 'file') AND n.key = 'source:' || c.source_id
                             AND n.valid_to IS NULL
                 WHERE c.valid_to IS NULL
                   AND NOT EXISTS (SELECT 1 FROM chunk_vectors e WHERE e.chunk_rid = c.rid AND e.model_id = ?1)
                 ORDER BY s.mtime_ns DESC, c.source_id, c.ordinal
                 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![model_id, n as i64], |r| {
                let heading: Option<String> = r.get(3)?;
                let text = embed_text(
                    &r.get::<_, String>(2)?,
                    heading.as_deref(),
                    &r.get::<_, String>(4)?,
                );
                let rid: i64 = r.get(5)?;
                Ok((part_id::of_row(PartKind::Chunk, rid, r.get(0)?), r.get(1)?, text, rid))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        if todo.is_empty() {
            return Ok(0);
        }
        if self.failpoint.as_deref() == Some("embed_panic")
            && !self.failpoint_fired.swap(true, Ordering::SeqCst)
        {
            panic!("failpoint embed_panic");
        }
        let texts: Vec<&str> = todo.iter().map(|t| t.2.as_str()).collect();
        let vecs = embedder
            .embed_passages(&texts)
            .map_err(SearchError::Embed)?;
        let now = clock::now();
        let dim = embedder.dim();
        self.store.write(|tx| {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO chunk_vectors(chunk_rid, model_id, dim, vector, content_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for ((_, _, text, rid), v) in todo.iter().zip(&vecs) {
                let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
                ins.execute(params![rid, model_id, dim as i64, vectors::encode(v), hash, now])?;
            }
            Ok::<_, rusqlite::Error>(())
        })?;
        if let Some(m) = self
            .model
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            && m.embedder.model_id() == model_id
        {
            for ((id, note, _, _), v) in todo.iter().zip(&vecs) {
                m.vectors.insert(id.clone(), note.clone(), v);
            }
        }
        Ok(todo.len())
    }
}

/// The text a chunk is embedded as: its note's title and heading path give it context.
pub fn embed_text(title: &str, heading_path: Option<&str>, content: &str) -> String {
    let heading = index::heading_path(heading_path);
    let mut s = String::with_capacity(title.len() + content.len() + 8);
    s.push_str(title);
    for h in heading {
        if h != title {
            s.push_str(" / ");
            s.push_str(&h);
        }
    }
    s.push('\n');
    s.push_str(content);
    s
}
