//! Forgetting a removed root: its files' facts and text are deleted, not retired.
//!
//! `watch remove` retires what a root's files said, as any deletion does; a user who wants the
//! history gone as well asks for `--purge`, and this deletes every row those files are behind:
//! nodes (current and retired) with their earlier versions and their edges in either
//! direction, citations, vectors, link names, file versions, sources and the root itself.
//! Shared nodes (tags, placeholders, URLs) go only when nothing else points at them or cites
//! them, so another root's notes keep their tags. The search index hears of the notes through
//! the outbox. It must not touch a watched root: the caller removes it first, so the watcher
//! does not write to it meanwhile.
//!
//! The work is split into transactions of [`PURGE_BATCH`] rows, so the writer is never held for
//! long and the log stays small. If the daemon stops halfway, asking again finishes the job: a
//! removed root stays purgeable until its row is gone.

use std::path::Path;

use rusqlite::Transaction;

use super::{IngestError, Ingestor, RootInfo, row_to_root};

/// Rows deleted per transaction: a burst of work others wait behind for well under a second.
pub const PURGE_BATCH: usize = 2_000;

/// What a purge deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub nodes: u64,
    pub edges: u64,
    pub sources: u64,
}

impl Ingestor {
    /// Deletes everything the roots at `path` said that are removed or were only ingested once
    /// (never watched, so no watcher writes to them). Fails with `NoSuchWatch` when there is no
    /// such root (a watched root must be removed first).
    pub fn purge_root(&self, path: &Path) -> Result<(RootInfo, Purged), IngestError> {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let roots: Vec<RootInfo> = self.store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, path, watched, added_at FROM roots
                 WHERE (removed_at IS NOT NULL OR watched = 0) AND path IN (?1, ?2)",
            )?;
            let rows = stmt.query_map(
                [canonical.to_string_lossy(), path.to_string_lossy()],
                row_to_root,
            )?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        let Some(first) = roots.first().cloned() else {
            return Err(IngestError::NoSuchWatch(path.to_owned()));
        };
        let mut total = Purged::default();
        for root in &roots {
            let p = self.purge_root_rows(root)?;
            total.nodes += p.nodes;
            total.edges += p.edges;
            total.sources += p.sources;
        }
        tracing::info!(
            root = %first.path.display(),
            nodes = total.nodes,
            edges = total.edges,
            "purged a removed root"
        );
        self.after_write();
        if let Err(e) = self.store.reclaim() {
            tracing::warn!(error = %e, "could not give freed pages back after a purge");
        }
        Ok((first, total))
    }

    fn purge_root_rows(&self, root: &RootInfo) -> Result<Purged, IngestError> {
        let root_id = root.id;
        let mut purged = Purged::default();
        // Which rows go is decided once, by rowid (a few bytes each, in the connection's
        // temporary store): the retired rows a removed root leaves are in no index by source.
        self.store.write(|tx| collect(tx, root_id))?;
        // Foreign-key checks are off for the deletions (`Store::write_bulk`): SQLite checks a
        // deleted parent's children by index, and the indexes on `parent_id`, `src_id`,
        // `dst_id` and `source_id` are partial, which it cannot use for that, so every deleted
        // row cost a scan of the graph (obsidian-hub, 6,571 notes, had not finished after 40 s;
        // now 8 s in a debug build). Children go before their parents by construction: every
        // edge touching the root's nodes first, then sections and chunks, then notes; `finish`
        // checks that nothing still refers to the root's sources before it deletes them.
        loop {
            let n = self.store.write_bulk(delete_edges)?;
            purged.edges += n as u64;
            if n < PURGE_BATCH {
                break;
            }
        }
        loop {
            let n = self.store.write_bulk(delete_parts)?;
            purged.nodes += n as u64;
            if n < PURGE_BATCH {
                break;
            }
        }
        loop {
            let n = self.store.write_bulk(delete_nodes)?;
            purged.nodes += n as u64;
            if n < PURGE_BATCH {
                break;
            }
        }
        let (sources, shared) = self.store.write_bulk(|tx| finish(tx, root))?;
        purged.sources = sources;
        purged.nodes += shared;
        Ok(purged)
    }
}

/// Fills the purge tables: the root's nodes, the edges touching them, the shared nodes those
/// edges point at; and queues the root's notes for the search index.
fn collect(tx: &Transaction<'_>, root_id: i64) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS purge_nodes(rid INTEGER PRIMARY KEY, leaf INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS temp.purge_nodes_leaf ON purge_nodes(leaf);
         CREATE TEMP TABLE IF NOT EXISTS purge_edges(rid INTEGER PRIMARY KEY);
         CREATE TEMP TABLE IF NOT EXISTS purge_shared(id TEXT PRIMARY KEY);
         CREATE TEMP TABLE IF NOT EXISTS purge_sections(rid INTEGER PRIMARY KEY);
         CREATE TEMP TABLE IF NOT EXISTS purge_chunks(rid INTEGER PRIMARY KEY);
         DELETE FROM purge_nodes; DELETE FROM purge_edges; DELETE FROM purge_shared;
         DELETE FROM purge_sections; DELETE FROM purge_chunks;",
    )?;
    // One pass over each table: only current parts are indexed by source.
    tx.execute(
        "INSERT INTO purge_sections(rid)
         SELECT rid FROM sections WHERE source_id IN (SELECT id FROM sources WHERE root_id = ?1)",
        [root_id],
    )?;
    tx.execute(
        "INSERT INTO purge_chunks(rid)
         SELECT rid FROM chunks WHERE source_id IN (SELECT id FROM sources WHERE root_id = ?1)",
        [root_id],
    )?;
    tx.execute(
        "INSERT INTO purge_nodes(rid, leaf)
         SELECT rowid, parent_id IS NOT NULL FROM nodes
         WHERE source_id IN (SELECT id FROM sources WHERE root_id = ?1)",
        [root_id],
    )?;
    tx.execute_batch(
        "INSERT INTO purge_edges(rid)
         SELECT rid FROM edge_rows
         WHERE src IN (SELECT rid FROM purge_nodes) OR dst IN (SELECT rid FROM purge_nodes);
         INSERT OR IGNORE INTO purge_shared(id)
         SELECT d.id FROM purge_edges p JOIN edges e ON e.rowid = p.rid JOIN nodes d ON d.id = e.dst_id
         WHERE d.kind IN ('tag', 'placeholder', 'url') AND d.source_id IS NULL;
         INSERT INTO search_outbox(note_id)
         SELECT n.id FROM purge_nodes p JOIN nodes n ON n.rowid = p.rid WHERE n.kind IN ('note', 'file');",
    )?;
    Ok(())
}

fn delete_edges(tx: &Transaction<'_>) -> rusqlite::Result<usize> {
    let rids: Vec<i64> = tx
        .prepare_cached("SELECT rid FROM purge_edges LIMIT ?1")?
        .query_map([PURGE_BATCH as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut cites = tx.prepare_cached(
        "DELETE FROM provenance WHERE edge_id = (SELECT id FROM edge_rows WHERE rid = ?1)",
    )?;
    // Triggers are off here: the rows under the `edges` view.
    let mut edge = tx.prepare_cached("DELETE FROM edge_rows WHERE rid = ?1")?;
    let mut done = tx.prepare_cached("DELETE FROM purge_edges WHERE rid = ?1")?;
    for rid in &rids {
        cites.execute([rid])?;
        edge.execute([rid])?;
        done.execute([rid])?;
    }
    Ok(rids.len())
}

/// Deletes a batch of the root's sections and chunks, with the chunks' vectors.
fn delete_parts(tx: &Transaction<'_>) -> rusqlite::Result<usize> {
    let limit = PURGE_BATCH as i64;
    let sections = tx
        .prepare_cached(
            "DELETE FROM section_rows WHERE rid IN (SELECT rid FROM purge_sections LIMIT ?1)",
        )?
        .execute([limit])?;
    tx.prepare_cached(
        "DELETE FROM purge_sections WHERE rid IN (SELECT rid FROM purge_sections LIMIT ?1)",
    )?
    .execute([limit])?;
    let room = (PURGE_BATCH - sections) as i64;
    tx.prepare_cached(
        "DELETE FROM chunk_vectors WHERE chunk_rid IN (SELECT rid FROM purge_chunks LIMIT ?1)",
    )?
    .execute([room])?;
    let chunks = tx
        .prepare_cached("DELETE FROM chunks WHERE rid IN (SELECT rid FROM purge_chunks LIMIT ?1)")?
        .execute([room])?;
    tx.prepare_cached(
        "DELETE FROM purge_chunks WHERE rid IN (SELECT rid FROM purge_chunks LIMIT ?1)",
    )?
    .execute([room])?;
    Ok(sections + chunks)
}

fn delete_nodes(tx: &Transaction<'_>) -> rusqlite::Result<usize> {
    // Sections and chunks before the notes they belong to (`parent_id`).
    let rids: Vec<i64> = tx
        .prepare_cached("SELECT rid FROM purge_nodes ORDER BY leaf DESC LIMIT ?1")?
        .query_map([PURGE_BATCH as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for rid in &rids {
        delete_node(tx, "(SELECT id FROM nodes WHERE rowid = ?1)", rid)?;
        tx.prepare_cached("DELETE FROM nodes WHERE rowid = ?1")?
            .execute([rid])?;
        tx.prepare_cached("DELETE FROM purge_nodes WHERE rid = ?1")?
            .execute([rid])?;
    }
    Ok(rids.len())
}

/// Deletes what refers to the node `id_sql` names (bound to `arg`), except edges.
fn delete_node(
    tx: &Transaction<'_>,
    id_sql: &str,
    arg: &dyn rusqlite::ToSql,
) -> rusqlite::Result<()> {
    for delete in [
        "DELETE FROM provenance WHERE node_id = {id}",
        "DELETE FROM note_names WHERE node = (SELECT rid FROM nodes WHERE id = {id})",
        "DELETE FROM link_refs WHERE src = (SELECT rid FROM nodes WHERE id = {id})",
        "DELETE FROM node_revisions WHERE node_id = {id}",
    ] {
        tx.prepare_cached(&delete.replace("{id}", id_sql))?
            .execute([arg])?;
    }
    Ok(())
}

/// Deletes the root's remaining rows (citations of shared facts, file versions, link names,
/// sources, the root) and the shared nodes left without a reference. Returns (sources, shared
/// nodes deleted).
fn finish(tx: &Transaction<'_>, root: &RootInfo) -> Result<(u64, u64), IngestError> {
    let root_id = root.id;
    let of_root = "(SELECT id FROM sources WHERE root_id = ?1)";
    // What the deletions above left referring to the root's files: nothing, unless a sync
    // wrote to the root meanwhile; then this stops short of the sources, and a second purge
    // deletes the rest.
    let left: i64 = tx.query_row(
        &format!(
            "SELECT (SELECT count(*) FROM nodes WHERE source_id IN {of_root}
                       OR cite_version IN (SELECT id FROM source_versions WHERE source_id IN {of_root}))
                  + (SELECT count(*) FROM edges
                     WHERE cite_version IN (SELECT id FROM source_versions WHERE source_id IN {of_root}))
                  + (SELECT count(*) FROM sections WHERE source_id IN {of_root})
                  + (SELECT count(*) FROM chunks WHERE source_id IN {of_root})"
        ),
        [root_id],
        |r| r.get(0),
    )?;
    if left > 0 {
        return Err(IngestError::BadRoot {
            path: root.path.clone(),
            message: format!("{left} facts were written to it during the purge; purge it again"),
        });
    }
    for sql in [
        format!("DELETE FROM provenance WHERE source_id IN {of_root}"),
        format!("DELETE FROM source_versions WHERE source_id IN {of_root}"),
        "DELETE FROM note_names WHERE root_id = ?1".to_owned(),
        "DELETE FROM link_refs WHERE root_id = ?1".to_owned(),
    ] {
        tx.execute(&sql, [root_id])?;
    }
    let sources = tx.execute("DELETE FROM sources WHERE root_id = ?1", [root_id])? as u64;
    tx.execute("DELETE FROM roots WHERE id = ?1", [root_id])?;
    // A shared node goes when no edge points at it and nothing cites it any more (another
    // root's file, a workflow). Deleting a nested tag's `child_of` edge can orphan its parent,
    // so this repeats; each round is one pass over the edges, and nesting is shallow.
    let mut shared = 0;
    loop {
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS purge_dead(id TEXT PRIMARY KEY);
             DELETE FROM purge_dead;
             INSERT INTO purge_dead(id)
             SELECT s.id FROM purge_shared s
             WHERE s.id NOT IN (SELECT dst_id FROM edges WHERE dst_id IN purge_shared)
               AND NOT EXISTS (SELECT 1 FROM provenance p WHERE p.node_id = s.id);
             DELETE FROM purge_shared;",
        )?;
        let dead: Vec<String> = tx
            .prepare_cached("SELECT id FROM purge_dead")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if dead.is_empty() {
            return Ok((sources, shared));
        }
        // Their own edges (a tag's `child_of`) go first; what those pointed at is checked in
        // the next round.
        tx.execute_batch(
            "INSERT OR IGNORE INTO purge_shared(id)
             SELECT d.id FROM edges e JOIN nodes d ON d.id = e.dst_id
             WHERE e.src_id IN purge_dead AND d.kind IN ('tag', 'placeholder', 'url')
               AND d.source_id IS NULL AND d.id NOT IN purge_dead;
             DELETE FROM provenance WHERE edge_id IN (SELECT id FROM edges WHERE src_id IN purge_dead);
             DELETE FROM edge_rows WHERE src IN (SELECT rid FROM nodes WHERE id IN purge_dead);",
        )?;
        for id in &dead {
            delete_node(tx, "?1", id)?;
            tx.prepare_cached("DELETE FROM nodes WHERE id = ?1")?
                .execute([id])?;
        }
        shared += dead.len() as u64;
    }
}
