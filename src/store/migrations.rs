//! Schema migrations: plain SQL files in `schema/`, embedded at build time, applied in order.
//!
//! The version lives in `PRAGMA user_version`. All pending migrations run inside one
//! exclusive transaction, so a store is either at the old version or the new one, never between.
//! Architecture Invariant: migrations are append-only; a shipped file is never edited.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Every migration, in order. A file's number is the `user_version` after it has run; numbers
/// increase but may skip one that another branch reserved.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../schema/0001_initial.sql"),
    ),
    (
        "0002_link_resolution.sql",
        include_str!("../../schema/0002_link_resolution.sql"),
    ),
    (
        "0003_search.sql",
        include_str!("../../schema/0003_search.sql"),
    ),
    (
        "0004_workflows.sql",
        include_str!("../../schema/0004_workflows.sql"),
    ),
    (
        "0005_retired_file_nodes.sql",
        include_str!("../../schema/0005_retired_file_nodes.sql"),
    ),
    (
        "0006_leaner_indexes.sql",
        include_str!("../../schema/0006_leaner_indexes.sql"),
    ),
    (
        "0007_inline_citations.sql",
        include_str!("../../schema/0007_inline_citations.sql"),
    ),
    (
        "0008_ingest_in_flight.sql",
        include_str!("../../schema/0008_ingest_in_flight.sql"),
    ),
    (
        "0009_retired_text.sql",
        include_str!("../../schema/0009_retired_text.sql"),
    ),
    (
        "0010_note_parts.sql",
        include_str!("../../schema/0010_note_parts.sql"),
    ),
    (
        "0011_lean_rows.sql",
        include_str!("../../schema/0011_lean_rows.sql"),
    ),
    (
        "0012_node_revisions.sql",
        include_str!("../../schema/0012_node_revisions.sql"),
    ),
    (
        "0013_compact_part_keys.sql",
        include_str!("../../schema/0013_compact_part_keys.sql"),
    ),
    (
        "0014_lean_edges.sql",
        include_str!("../../schema/0014_lean_edges.sql"),
    ),
    (
        "0015_integer_refs.sql",
        include_str!("../../schema/0015_integer_refs.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |(name, _)| number(name))
}

/// The number a migration file starts with (`0004_x.sql` → 4).
fn number(name: &str) -> u32 {
    // The names are our own constants, checked by `migration_files_are_numbered_in_order`.
    name.get(..4).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Brings `conn` up to [`latest_version`]. Refuses a store written by a newer build.
pub fn apply(conn: &mut Connection) -> Result<u32, StoreError> {
    // A migration that moves rows between tables passes through states a foreign key would
    // refuse (SQLite's documented way to reshape tables; `PRAGMA foreign_keys` is a no-op
    // inside a transaction). Each migration leaves every reference whole; the compatibility
    // tests run `PRAGMA foreign_key_check` on what they migrate.
    conn.pragma_update(None, "foreign_keys", false)?;
    let applied = apply_unchecked(conn);
    conn.pragma_update(None, "foreign_keys", true)?;
    applied
}

fn apply_unchecked(conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::TooNew {
            found: current,
            supported: latest,
        });
    }
    for (name, sql) in MIGRATIONS.iter().filter(|(name, _)| number(name) > current) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                name: (*name).to_owned(),
                source,
            })?;
        // user_version cannot be bound as a parameter; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", number(name)))?;
    }
    tx.commit()?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory store migrated up to schema `version`, as a release of then left it.
    fn store_at(version: u32) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for (name, sql) in MIGRATIONS.iter().filter(|(n, _)| number(n) <= version) {
            conn.execute_batch(sql).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {}", number(name)))
                .unwrap();
        }
        conn
    }

    /// The first column of every row `sql` answers, as text.
    fn strings(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Tables and views: `sections` (0013) and `edges` (0015) are views over their rows.
    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn applies_all_migrations_to_an_empty_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        let names = tables(&conn);
        for t in [
            "meta",
            "users",
            "roots",
            "sources",
            "nodes",
            "edges",
            "provenance",
            "section_rows",
            "chunks",
            "chunk_vectors",
            "workflow_runs",
            "workflow_events",
        ] {
            assert!(names.iter().any(|n| n == t), "missing table {t}: {names:?}");
        }
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        let before = tables(&conn);
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        assert_eq!(tables(&conn), before);
    }

    #[test]
    fn refuses_a_newer_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        let err = apply(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn migration_files_are_numbered_in_order() {
        let mut last = 0;
        for (name, sql) in MIGRATIONS {
            let n = number(name);
            assert!(n > last && name.as_bytes().get(4) == Some(&b'_'), "{name}");
            last = n;
            assert!(
                sql.trim_start().starts_with("--"),
                "{name} must open with a why-comment"
            );
        }
    }

    /// A store at schema 9 whose note has a section and a chunk as nodes (the chunk cited by a
    /// provenance row, as before schema 7), with their edges, a vector and a workflow's link to
    /// the chunk: 0010 moves them into their own tables keeping ids, citations and the vector.
    #[test]
    fn note_parts_move_out_of_the_graph_keeping_ids_citations_and_vectors() {
        let mut conn = store_at(9);
        conn.execute_batch(
            "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
                 VALUES (1, 1, 'h1', 'x', '1', 'u', '2026-01-01T00:00:00.000Z');
             INSERT INTO nodes(id, kind, key, owner_id, source_id, valid_from, created_at, updated_at)
                 VALUES ('n', 'note', 'source:1', 'u', 1, 't', 't', 't'),
                        ('w', 'topic', 'w', 'u', NULL, 't', 't', 't');
             INSERT INTO nodes(id, kind, key, title, props, source_id, parent_id, owner_id, valid_from,
                               created_at, updated_at, cite_version, cite_byte_start, cite_byte_end,
                               cite_line_start, cite_line_end)
                 VALUES ('s', 'section', 'n/h/[\"Top\"]#1', 'Top', '{\"level\":2,\"heading_path\":[\"Top\"]}',
                         1, 'n', 'u', '2026-01-01T00:00:00.000Z', 't', 't', 1, 0, 6, 1, 1);
             INSERT INTO nodes(id, kind, key, title, props, content, source_id, parent_id, owner_id,
                               valid_from, created_at, updated_at)
                 VALUES ('c', 'chunk', 'n/c/abc#1', 'Top', '{\"heading_path\":[\"Top\"]}', 'text', 1, 'n',
                         'u', '2026-01-01T00:00:01.000Z', 't', 't');
             INSERT INTO provenance(node_id, source_id, byte_start, byte_end, line_start, line_end,
                                    content_hash, extractor, extractor_version, actor_id, recorded_at)
                 VALUES ('c', 1, 7, 11, 2, 2, 'h0', 'x', '0', 'u', '2025-01-01T00:00:00.000Z');
             INSERT INTO edges(id, src_id, dst_id, type, created_by, valid_from, created_at) VALUES
                 ('es', 'n', 's', 'has_section', 'u', 't', 't'),
                 ('ec', 'n', 'c', 'has_chunk', 'u', 't', 't'),
                 ('ew', 'w', 'c', 'mentions', 'u', 't', 't');
             INSERT INTO provenance(edge_id, actor_id, extractor, extractor_version, recorded_at)
                 VALUES ('ec', 'u', 'x', '1', 't');
             INSERT INTO embeddings(node_id, model_id, dim, vector, content_hash, created_at)
                 VALUES ('c', 'm', 1, x'0000803f', 'h', 't');",
        )
        .unwrap();
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        let section: (String, i64, String, i64, i64, Option<String>) = conn
            .query_row(
                "SELECT key, level, s.legacy_id, cite_version, valid_from, edge_id FROM sections s",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            section,
            (
                "[\"Top\"]#1".into(),
                2,
                "s".into(),
                1,
                1_767_225_600_000,
                Some("es".into())
            )
        );
        type ChunkRow = (
            String,
            String,
            Option<String>,
            (i64, i64, i64, i64),
            String,
            String,
        );
        let chunk: ChunkRow = conn
            .query_row(
                "SELECT c.key, coalesce(c.heading_path, (SELECT s.path FROM sections s
                                WHERE s.source_id = c.source_id AND s.ordinal = c.section)),
                        c.content, c.byte_start, c.byte_end, c.line_start,
                        c.line_end, v.content_hash, c.edge_id
                 FROM chunks c JOIN source_versions v ON v.id = c.cite_version",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            chunk,
            (
                "abc#1".into(),
                "[\"Top\"]".into(),
                Some("text".into()),
                (7, 11, 2, 2),
                "h0".into(),
                "ec".into()
            )
        );
        let left: (i64, i64, i64, String) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM nodes WHERE kind IN ('section', 'chunk')),
                        (SELECT count(*) FROM edges WHERE type IN ('has_section', 'has_chunk')),
                        (SELECT count(*) FROM chunk_vectors v JOIN chunks c ON c.rid = v.chunk_rid
                         WHERE c.legacy_id = 'c'),
                        (SELECT dst_id FROM edges WHERE id = 'ew')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(left, (0, 0, 1, "n".into()));
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys are on again after migrating");
    }

    /// A store at schema 10: 0011 leaves empty aliases and props absent, keeps every row, id,
    /// reference and trigger, and writes a chunk's heading path only where its section's
    /// differs (or the chunk is retired).
    #[test]
    fn lean_rows_keep_every_fact_and_drop_only_what_readers_derive() {
        let mut conn = store_at(10);
        conn.execute_batch(
            r#"INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO nodes(id, kind, key, title, aliases, props, owner_id, source_id, valid_from,
                               created_at, updated_at)
                 VALUES ('n', 'note', 'source:1', 'A', '["Al"]', '{"k":1}', 'u', 1, 't', 't', 't'),
                        ('u', 'url', 'https://x', 'x', '[]', '{}', 'u', NULL, 't', 't', 't');
             INSERT INTO edges(id, src_id, dst_id, type, key, props, created_by, valid_from, created_at)
                 VALUES ('e', 'n', 'u', 'links_to', 'links_to|external|null|x#1', '{"kind":"external"}',
                         'u', 't', 't'),
                        ('t', 'n', 'u', 'mentions', '', '{}', 'u', 't', 't');
             INSERT INTO provenance(edge_id, actor_id, extractor, extractor_version, recorded_at)
                 VALUES ('t', 'u', 'x', '1', 't');
             INSERT INTO sections(source_id, ordinal, key, level, byte_start, valid_from)
                 VALUES (1, 0, '["A"]#1', 1, 0, 0), (1, 1, '["A","B #2"]#12', 2, 10, 0);
             INSERT INTO chunks(source_id, ordinal, key, heading_path, content, byte_start, valid_from, valid_to)
                 VALUES (1, 0, 'h0#1', NULL, 'intro', 0, 0, NULL),
                        (1, 1, 'h1#1', '["A"]', 'one', 5, 0, NULL),
                        (1, 2, 'h2#1', '["A","B #2"]', 'two', 20, 0, NULL),
                        (1, 3, 'h3#1', '["Other"]', 'odd', 30, 0, NULL),
                        (1, 4, 'h4#1', '["A"]', 'old', 5, 0, 9);"#,
        )
        .unwrap();
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        let rows = |sql: &str| strings(&conn, sql);
        assert_eq!(
            rows(
                "SELECT id || ' ' || coalesce(aliases, '-') || ' ' || coalesce(props, '-') FROM nodes ORDER BY id"
            ),
            ["n [\"Al\"] {\"k\":1}", "u - -"]
        );
        assert_eq!(
            rows("SELECT id || ' ' || key || ' ' || coalesce(props, '-') FROM edges ORDER BY id"),
            [
                "e links_to|external|null|x#1 {\"kind\":\"external\"}",
                "t  -"
            ]
        );
        assert_eq!(
            rows(
                "SELECT content || ' ' || coalesce(heading_path, '-') || ' ' || coalesce(section, '-') || ' '
                        || coalesce(heading_path, (SELECT s.path FROM sections s
                             WHERE s.source_id = c.source_id AND s.ordinal = c.section), '[]')
                 FROM chunks c ORDER BY ordinal"
            ),
            [
                "intro - - []",
                "one - 0 [\"A\"]",
                "two - 1 [\"A\",\"B #2\"]",
                "odd [\"Other\"] 1 [\"Other\"]",
                "old [\"A\"] - [\"A\"]",
            ]
        );
        // The rebuilt tables keep their indexes and the search triggers.
        let names = rows(
            "SELECT name FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name IN
                 ('nodes', 'edges', 'edge_rows', 'chunks', 'sources') AND sql IS NOT NULL
             ORDER BY name",
        );
        for want in [
            "edges_current",
            "edges_dst",
            "nodes_current_key",
            "nodes_retired_files",
            "nodes_title",
            "search_chunk_insert",
            "search_chunk_update",
            "search_node_update",
            "search_source_update",
            "search_tag_insert",
            "search_tag_update",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
        let queued = || -> i64 {
            conn.query_row(
                "SELECT count(*) FROM search_outbox WHERE note_id = 'n'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let before = queued();
        conn.execute_batch("UPDATE nodes SET title = 'B' WHERE id = 'n'")
            .unwrap();
        assert_eq!(queued(), before + 1, "the nodes trigger is back");
    }
    /// A store at schema 11: 0013 stores each section's last heading and its parent's row,
    /// and the `sections` view answers every key and path as the table did, for current and
    /// retired rows, paths deeper than the view follows and parents that cannot be found; a
    /// chunk's key is stored as bytes and read back as the same text.
    #[test]
    fn section_paths_are_rebuilt_from_parents_exactly_as_they_were() {
        let mut conn = store_at(11);
        conn.execute_batch(
            r#"INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't'),
                        (2, 1, 'b.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO sections(legacy_id, source_id, ordinal, key, level, byte_start, valid_from, valid_to, edge_id)
                 VALUES ('old', 1, 0, '["A"]#1', 1, 0, 0, NULL, 'e1'),
                        (NULL, 1, 1, '["A","B, \"q\" #2"]#12', 2, 10, 0, NULL, NULL),
                        (NULL, 1, 2, '["A","B, \"q\" #2","C"]#1', 3, 20, 0, NULL, NULL),
                        (NULL, 1, 0, '["A","Gone"]#1', 2, 5, 0, 7, NULL),
                        (NULL, 1, 3, '["Orphan","D"]#2', 2, 30, 0, NULL, NULL),
                        (NULL, 2, 0, '["1"]#1', 1, 0, 0, NULL, NULL),
                        (NULL, 2, 1, '["1","2"]#1', 2, 1, 0, NULL, NULL),
                        (NULL, 2, 2, '["1","2","3"]#1', 3, 2, 0, NULL, NULL),
                        (NULL, 2, 3, '["1","2","3","4"]#1', 4, 3, 0, NULL, NULL),
                        (NULL, 2, 4, '["1","2","3","4","5"]#1', 5, 4, 0, NULL, NULL),
                        (NULL, 2, 5, '["1","2","3","4","5","6"]#1', 6, 5, 0, NULL, NULL),
                        (NULL, 2, 6, '["1","2","3","4","5","6","7"]#1', 7, 6, 0, NULL, NULL),
                        (NULL, 2, 7, '["1","2","3","4","5","6","7","8"]#3', 8, 7, 0, NULL, NULL);
             INSERT INTO chunks(source_id, ordinal, key, content, valid_from)
                 VALUES (1, 0, '0123456789abcdef0123456789abcdef#12', 'x', 0),
                        (1, 1, '0123456789ABCDEF0123456789abcdef#1', 'y', 0),
                        (1, 2, 'h#1', 'z', 0);"#,
        )
        .unwrap();
        let rows = strings;
        let every = "SELECT rid || ' ' || coalesce(legacy_id, '-') || ' ' || source_id || ' '
                            || ordinal || ' ' || key || ' ' || path || ' ' || level || ' '
                            || coalesce(valid_to, '-') || ' ' || coalesce(edge_id, '-')
                     FROM sections ORDER BY rid";
        let before = rows(&conn, every);
        let chunk_keys = format!(
            "SELECT typeof(key) || ' ' || {} FROM chunks ORDER BY rid",
            crate::store::part_id::chunk_key_text("key")
        );
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        assert_eq!(rows(&conn, every), before);
        // A chunk key of today's shape is stored as 16 bytes and digits, any other as it was.
        assert_eq!(
            rows(&conn, &chunk_keys),
            [
                "blob 0123456789abcdef0123456789abcdef#12",
                "text 0123456789ABCDEF0123456789abcdef#1",
                "text h#1",
            ]
        );
        let stored: i64 = conn
            .query_row("SELECT length(key) FROM chunks WHERE rid = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, 18);
        // What is stored: the last heading under a parent row, the whole path without one.
        assert_eq!(
            rows(
                &conn,
                "SELECT heading || ' ' || coalesce(parent, '-') || ' ' || occurrence
                 FROM section_rows WHERE source_id = 1 ORDER BY rid"
            ),
            [
                r#""A" - 1"#,
                r#""B, \"q\" #2" 1 12"#,
                r#""C" 2 1"#,
                r#""Gone" 1 1"#,
                r#""Orphan","D" - 2"#,
            ]
        );
        let deep: Vec<String> = rows(
            &conn,
            "SELECT coalesce(CAST(parent AS TEXT), '-') FROM section_rows WHERE source_id = 2 ORDER BY rid",
        );
        assert_eq!(deep, ["-", "6", "7", "8", "9", "10", "-", "-"]);
        // The view takes the statements the table took.
        conn.execute_batch(
            r#"UPDATE sections SET valid_to = 9, ordinal = 4 WHERE rid = 3;
             DELETE FROM sections WHERE rid = 4;
             INSERT INTO sections(source_id, ordinal, key, level, valid_from)
                 VALUES (1, 5, '["X","Y"]#3', 2, 0);"#,
        )
        .unwrap();
        assert_eq!(
            rows(
                &conn,
                "SELECT key || ' ' || path || ' ' || ordinal || ' ' || coalesce(valid_to, '-')
                 FROM sections WHERE rid >= 3 ORDER BY rid"
            ),
            [
                r#"["A","B, \"q\" #2","C"]#1 ["A","B, \"q\" #2","C"] 4 9"#,
                r#"["Orphan","D"]#2 ["Orphan","D"] 3 -"#,
                r#"["1"]#1 ["1"] 0 -"#,
                r#"["1","2"]#1 ["1","2"] 1 -"#,
                r#"["1","2","3"]#1 ["1","2","3"] 2 -"#,
                r#"["1","2","3","4"]#1 ["1","2","3","4"] 3 -"#,
                r#"["1","2","3","4","5"]#1 ["1","2","3","4","5"] 4 -"#,
                r#"["1","2","3","4","5","6"]#1 ["1","2","3","4","5","6"] 5 -"#,
                r#"["1","2","3","4","5","6","7"]#1 ["1","2","3","4","5","6","7"] 6 -"#,
                r#"["1","2","3","4","5","6","7","8"]#3 ["1","2","3","4","5","6","7","8"] 7 -"#,
                r#"["X","Y"]#3 ["X","Y"] 5 -"#,
            ]
        );
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
    }

    /// A store at schema 13: 0014 leaves out what an edge's cited file version already says
    /// (its acting user), a `created_at` equal to `valid_from`, and the names of a link's props,
    /// and the readers answer every edge as before.
    #[test]
    fn lean_edges_answer_every_edge_as_before() {
        let mut conn = store_at(13);
        conn.execute_batch(
            r#"INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
                 VALUES (1, 1, 'h1', 'md', '1', 'user:a', 't1'), (2, 1, 'h2', 'md', '1', 'user:b', 't2');
             INSERT INTO nodes(id, kind, key, owner_id, source_id, valid_from, created_at, updated_at)
                 VALUES ('n', 'note', 'source:1', 'user:a', 1, 't1', 't1', 't1'),
                        ('m', 'url', 'https://x', 'user:a', NULL, 't1', 't1', 't1');
             INSERT INTO edges(id, src_id, dst_id, type, key, props, created_by, valid_from, valid_to,
                               created_at, cite_version, cite_byte_start, cite_byte_end)
                 VALUES ('l', 'n', 'm', 'links_to', 'k#1',
                         '{"kind":"external","syntax":"external","target":"https://x","subpath":null,"display":"X \"q\""}',
                         'user:a', 't1', NULL, 't1', 1, 0, 9),
                        ('h', 'n', 'n', 'links_to', 'k#2',
                         '{"kind":"heading","syntax":"wikilink","target":"a","subpath":{"heading":"H"},"display":null}',
                         'user:a', 't1', NULL, 't1', 2, 10, 19),
                        ('r', 'n', 'm', 'links_to', 'k#3',
                         '{"syntax":"external","kind":"external","target":"https://x","subpath":null,"display":null}',
                         'user:a', 't1', 't2', 't1', 1, 20, 29),
                        ('w', 'n', 'm', 'mentions', '', '{"why":1}', 'user:w', 't1', NULL, 't0', NULL, NULL, NULL),
                        ('t', 'm', 'n', 'mentions', '', NULL, 'user:w', 't1', NULL, 't1', NULL, NULL, NULL);"#,
        )
        .unwrap();
        // (id, acting user, props as read) for every edge.
        let answers = |conn: &Connection, sql: &str| -> Vec<(String, String, serde_json::Value)> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(5)?,
                        crate::store::edge_props::read(r.get_ref(4)?),
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = answers(
            &conn,
            "SELECT e.id, e.src_id, e.dst_id, e.type, e.props, e.created_by FROM edges e ORDER BY e.id",
        );
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        let read = format!(
            "SELECT {} FROM edges e ORDER BY e.id",
            crate::graph::edge_columns!()
        );
        assert_eq!(answers(&conn, &read), before);
        let stored = |sql: &str| strings(&conn, sql);
        // The user is left out where the cited version says it; a user other than the
        // version's (edge `h`, cited again by another user's version) and an edge without a
        // citation keep theirs.
        assert_eq!(
            stored(
                "SELECT id || ' ' || coalesce(created_by, '-') || ' ' || coalesce(created_at, '-')
                        || ' ' || typeof(props) FROM edges ORDER BY id"
            ),
            [
                "h user:a - blob",
                "l - - blob",
                "r - - text",
                "t user:w - null",
                "w user:w t0 text",
            ]
        );
        // The rebuilt table keeps its indexes and the search triggers (on the rows under the
        // `edges` view since 0015).
        let names = stored(
            "SELECT name FROM sqlite_master WHERE type IN ('index', 'trigger')
                 AND tbl_name IN ('edges', 'edge_rows') AND sql IS NOT NULL ORDER BY name",
        );
        for want in [
            "edges_current",
            "edges_dst",
            "edges_retired",
            "search_tag_insert",
            "search_tag_update",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
        let queued = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM search_outbox", [], |r| r.get(0))
                .unwrap()
        };
        let before = queued(&conn);
        conn.execute_batch(
            "INSERT INTO edges(id, src_id, dst_id, type, created_by, valid_from)
                 VALUES ('g', 'n', 'm', 'tagged', 'user:a', 't3');",
        )
        .unwrap();
        assert_eq!(queued(&conn), before + 1, "the edges trigger is back");
    }
    /// A store at schema 14: after 0015 edges, names and link references name their nodes by
    /// row, and every one of them still reads as the same node ids; a provenance row keeps its
    /// edge; the edges view takes writes and refuses an end that names no node.
    #[test]
    fn integer_refs_name_the_same_nodes() {
        let mut conn = store_at(14);
        conn.execute_batch(
            "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO nodes(id, kind, key, owner_id, source_id, valid_from, created_at, updated_at)
                 VALUES ('z', 'tag', 'tag:z', 'user:a', NULL, 't1', 't1', 't1'),
                        ('n', 'note', 'source:1', 'user:a', 1, 't1', 't1', 't1'),
                        ('m', 'url', 'https://x', 'user:a', NULL, 't1', 't1', 't1');
             INSERT INTO edges(id, src_id, dst_id, type, key, created_by, valid_from, valid_to)
                 VALUES ('l', 'n', 'm', 'links_to', 'k#1', 'user:a', 't1', NULL),
                        ('r', 'n', 'z', 'tagged', '', 'user:a', 't1', 't2'),
                        ('c', 'z', 'n', 'mentions', '', 'user:w', 't1', NULL);
             INSERT INTO provenance(edge_id, extractor, extractor_version, actor_id, recorded_at)
                 VALUES ('c', 'workflow', '1', 'user:w', 't1');
             INSERT INTO note_names(root_id, name, how, node_id, depth, rel_path)
                 VALUES (1, 'a', 'stem', 'n', 0, 'a.md'), (1, 'zed', 'alias', 'n', 0, 'a.md');
             INSERT INTO link_refs(root_id, name, src_node_id) VALUES (1, 'b', 'n'), (1, 'z', 'z');",
        )
        .unwrap();
        let edges = "SELECT id || ' ' || src_id || ' ' || dst_id || ' ' || type || ' '
                            || coalesce(valid_to, '-') FROM edges ORDER BY id";
        let before = strings(&conn, edges);
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        assert_eq!(strings(&conn, edges), before);
        assert_eq!(
            strings(
                &conn,
                "SELECT nn.name || ' ' || n.id FROM note_names nn JOIN nodes n ON n.rid = nn.node
                 ORDER BY nn.name"
            ),
            ["a n", "zed n"]
        );
        assert_eq!(
            strings(
                &conn,
                "SELECT r.name || ' ' || n.id FROM link_refs r JOIN nodes n ON n.rid = r.src
                 ORDER BY r.name"
            ),
            ["b n", "z z"]
        );
        assert_eq!(
            strings(&conn, "SELECT edge_id FROM provenance"),
            ["c"],
            "a citation keeps its edge"
        );
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);

        // The view takes writes, each to the row under it.
        conn.execute_batch(
            "INSERT INTO edges(id, src_id, dst_id, type, created_by, valid_from)
                 VALUES ('new', 'm', 'z', 'mentions', 'user:w', 't3');
             UPDATE edges SET valid_to = 't4' WHERE id = 'l';
             DELETE FROM edges WHERE id = 'r';",
        )
        .unwrap();
        assert_eq!(
            strings(&conn, edges),
            [
                "c z n mentions -",
                "l n m links_to t4",
                "new m z mentions -"
            ]
        );
        let refused = conn.execute(
            "INSERT INTO edges(id, src_id, dst_id, type, created_by, valid_from)
                 VALUES ('bad', 'nowhere', 'z', 'mentions', 'user:w', 't3')",
            [],
        );
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("FOREIGN KEY")),
            "{refused:?}"
        );
    }
}
