//! Every index of the schema earns its keep: a statement the code really runs uses it.
//!
//! An index costs a B-tree insert per row written and its pages on disk, so one that no
//! statement reads is dropped (schema 0011 dropped `provenance_run`: nothing looks citations
//! up by run).
//! The test below opens an empty store at the latest schema and, for each index, asks SQLite
//! (`EXPLAIN QUERY PLAN`) how it would run the statement listed beside it, copied from the
//! code; a new index needs a line here, and a statement that stops using its index fails the
//! test. Indexes SQLite makes for PRIMARY KEY and UNIQUE constraints are not listed: they
//! enforce the constraint whether or not a query reads them.

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::store::migrations;

    /// (index, where the statement lives, the statement as the code runs it)
    const USES: &[(&str, &str, &str)] = &[
        (
            "chunk_vectors_model",
            "search::vectors (loading a model's vectors)",
            "SELECT c.rid, c.legacy_id, n.id, e.vector FROM chunk_vectors e
             JOIN chunks c ON c.rid = e.chunk_rid AND c.valid_to IS NULL
             JOIN nodes n ON n.kind IN ('note', 'file') AND n.key = 'source:' || c.source_id
                         AND n.valid_to IS NULL
             WHERE e.model_id = ?1 AND e.dim = ?2",
        ),
        (
            "chunks_current",
            "ingest::parts::write_kind",
            "SELECT rid, key FROM chunks WHERE source_id = ?1 AND valid_to IS NULL",
        ),
        (
            "chunks_legacy_id",
            "graph::parts::by_id, search::query::hydrate",
            "SELECT rid FROM chunks p WHERE p.legacy_id = ?1 AND p.valid_to IS NULL",
        ),
        (
            "chunks_retired_text",
            "store::history (retired text past its retention)",
            "SELECT rid FROM chunks
             WHERE valid_to IS NOT NULL AND content IS NOT NULL AND valid_to <= ?1
             LIMIT ?2",
        ),
        (
            "edges_current",
            "ingest::facts::write_edges",
            "SELECT rid, dst, type, key FROM edge_rows WHERE src = ?1 AND valid_to IS NULL",
        ),
        (
            "edges_dst",
            "graph::backlinks",
            "SELECT e.id FROM edges e WHERE e.dst_id = ?1 AND e.valid_to IS NULL
               AND e.type NOT IN ('has_section', 'has_chunk', 'tagged', 'child_of')",
        ),
        (
            "edges_retired",
            "ingest::facts::collect_garbage",
            "SELECT DISTINCT d.id FROM edge_rows r JOIN nodes d ON d.rid = r.dst
             WHERE r.valid_to = ?1 AND d.kind IN ('placeholder', 'url', 'tag')
               AND d.valid_to IS NULL
               AND NOT EXISTS (SELECT 1 FROM edge_rows e WHERE e.dst = d.rid AND e.valid_to IS NULL)",
        ),
        (
            "link_refs_lookup",
            "ingest (notes whose links may resolve elsewhere)",
            "SELECT src FROM link_refs WHERE root_id = ?1 AND name = ?2",
        ),
        (
            "link_refs_src",
            "ingest::facts::write_document",
            "DELETE FROM link_refs WHERE src = ?1",
        ),
        (
            "node_revisions_node",
            "graph::history::revisions",
            "SELECT title, aliases, props, rel_path, cite_version, cite_byte_start, cite_byte_end,
                    cite_line_start, cite_line_end, valid_to, resumed_at
             FROM node_revisions WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
        ),
        (
            "nodes_current_key",
            "ingest::facts::shared_node",
            "SELECT id FROM nodes WHERE kind = ?1 AND key = ?2 AND valid_to IS NULL",
        ),
        (
            "nodes_retired_files",
            "ingest::facts::ensure_file_node",
            "SELECT id, kind FROM nodes
             WHERE key = ?1 AND valid_to IS NOT NULL AND kind IN ('note', 'file')
             ORDER BY valid_to DESC LIMIT 1",
        ),
        (
            "nodes_source",
            "ingest::facts::retire_file",
            "SELECT id FROM nodes WHERE source_id = ?1 AND valid_to IS NULL",
        ),
        (
            "nodes_title",
            "graph (a node by title)",
            "SELECT n.id FROM nodes n LEFT JOIN sources s ON s.id = n.source_id
             WHERE n.title = ?1 COLLATE NOCASE AND n.kind IN ('note', 'file')
               AND n.valid_to IS NULL",
        ),
        (
            "note_names_lookup",
            "ingest::resolve::resolve",
            "SELECT node FROM note_names WHERE root_id = ?1 AND name = ?2 AND how = ?3
             ORDER BY depth, rel_path LIMIT 1",
        ),
        (
            "note_names_node",
            "ingest::facts::names_of",
            "SELECT name, how FROM note_names WHERE node = (SELECT rid FROM nodes WHERE id = ?1)",
        ),
        (
            "provenance_edge",
            "graph (an edge's citations)",
            "SELECT id FROM provenance WHERE edge_id = ?1 AND valid_to IS NULL",
        ),
        (
            "provenance_node",
            "graph (a node's citations)",
            "SELECT id FROM provenance WHERE node_id = ?1 AND valid_to IS NULL",
        ),
        (
            "provenance_source",
            "ingest::facts::write_document",
            "UPDATE provenance SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
        ),
        (
            "sections_current",
            "ingest::parts::write_kind",
            "SELECT rid, key FROM sections WHERE source_id = ?1 AND valid_to IS NULL",
        ),
        (
            "sections_legacy_id",
            "graph::parts::by_id",
            "SELECT rid FROM sections p WHERE p.legacy_id = ?1 AND p.valid_to IS NULL",
        ),
        (
            "sources_hash",
            "ingest (pairing a new file with one deleted lately: a move)",
            "SELECT id FROM sources
             WHERE content_hash = ?1 AND root_id = ?2 AND deleted_at >= ?3
             ORDER BY deleted_at DESC",
        ),
        (
            "sources_live_path",
            "ingest (is the path still taken)",
            "SELECT 1 FROM sources WHERE root_id = ?1 AND rel_path = ?2 AND deleted_at IS NULL",
        ),
        (
            "sources_status",
            "store (the coverage counts of daemon.status)",
            "SELECT status, count(*) FROM sources WHERE deleted_at IS NULL GROUP BY status",
        ),
        (
            "workflow_runs_created",
            "workflow::journal::runs",
            "SELECT r.id FROM workflow_runs r JOIN workflow_definitions d ON d.hash = r.definition_hash
             WHERE ?1 IS NULL OR r.status = ?1 ORDER BY r.created_at DESC, r.id LIMIT ?2",
        ),
        (
            "workflow_runs_status",
            "workflow::journal::run_ids_with_status",
            "SELECT id FROM workflow_runs WHERE status = ?1 ORDER BY created_at",
        ),
        (
            "workflow_waits_expiry",
            "workflow::journal (waits past their expiry)",
            "SELECT id FROM workflow_waits WHERE status = 'open' AND expires_at <= ?1",
        ),
        (
            "workflow_waits_open",
            "workflow::journal (open waits of a run)",
            "SELECT count(*) FROM workflow_waits WHERE run_id = ?1 AND status = 'open'",
        ),
    ];

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        // The plan does not depend on the values; NULL stands in for each.
        let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_index_is_used_by_a_statement_the_code_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::apply(&mut conn).unwrap();
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master
                 WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let listed: Vec<&str> = USES.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(
            indexes, listed,
            "every index has one statement here, in name order"
        );
        for (name, site, sql) in USES {
            let steps = plan(&conn, sql);
            let uses = steps.iter().any(|s| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| w[0] == "INDEX" && w[1] == *name)
            });
            assert!(
                uses,
                "{name} is not used by the statement of {site}: {steps:?}"
            );
        }
    }
}
