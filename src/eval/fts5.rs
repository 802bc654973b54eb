//! The baseline every note tool can have for free: SQLite FTS5 with the porter stemmer, one row
//! per note (its file name as title, its whole text as body), ranked by FTS5's own `bm25()`.
//! A question is asked as its words joined by OR, since FTS5 reads bare words as AND and a
//! sentence as a user types it would then match nothing.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, params};

use crate::ingest::DEFAULT_MAX_FILE_BYTES;
use crate::ingest::walk::read_regular;

pub struct Fts5 {
    conn: Connection,
}

impl Fts5 {
    /// Indexes the notes of `root` given by their paths relative to it.
    pub fn build(root: &Path, notes: &[String]) -> anyhow::Result<Fts5> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE VIRTUAL TABLE notes USING fts5(
                 path UNINDEXED, title, body, tokenize = 'porter unicode61')",
        )?;
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT INTO notes (path, title, body) VALUES (?1, ?2, ?3)")?;
            for rel in notes {
                let path = root.join(rel);
                // Read as brain's ingest reads it: a regular file, within the same size cap.
                let bytes = read_regular(&path, DEFAULT_MAX_FILE_BYTES)
                    .with_context(|| format!("reading {}", path.display()))?;
                let title = Path::new(rel)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                insert.execute(params![rel, title, String::from_utf8_lossy(&bytes)])?;
            }
        }
        tx.commit()?;
        Ok(Fts5 { conn })
    }

    /// The paths of the best `k` notes for `question`, best first.
    pub fn search(&self, question: &str, k: usize) -> anyhow::Result<Vec<String>> {
        let words: Vec<String> = question
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| format!("\"{w}\""))
            .collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT path FROM notes WHERE notes MATCH ?1 ORDER BY bm25(notes) LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![words.join(" OR "), k as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
