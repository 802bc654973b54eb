-- 0010: a note's sections and chunks are the note's structure, kept in their own tables.
--
-- Before this, each section and chunk was a generic `nodes` row (a UUID key, kind, key, owner,
-- four text timestamps, '{}' props and '[]' aliases) plus a `has_section`/`has_chunk` edge
-- row of its own: on a 14k-file docs folder, 700k of the store's 800k nodes and 690k of its
-- 835k edges, about two thirds of a store ten times the size of the files. Here a section or
-- chunk is one row keyed by its file (`source_id`, the integer the note's node is keyed by)
-- and its position, with its span, its citation's file version (which holds the acting user
-- and the extractor once per version) and integer times. The `has_section`/`has_chunk` edges
-- are derived from these rows when a client asks for them.
--
-- Ids clients received stay: a row carried over keeps the public id its node had
-- (`legacy_id`) and the id of its structural edge (`edge_id`). A row written after this has
-- neither: its public id is derived from its `rid` (which VACUUM never renumbers, see
-- `store::part_id`), its edge's id from that, so no id column or id index is paid per row.
-- Identity within a file is `key`: for a section, its heading path (JSON) and occurrence
-- `#n`; for a chunk, a hash of its text and occurrence, so a chunk an edit did not change keeps
-- its id and its vector. Times are milliseconds since the Unix epoch.

CREATE TABLE sections (
    rid          INTEGER PRIMARY KEY,
    legacy_id    TEXT,                        -- the node id it had, in stores before 0010
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    ordinal      INTEGER NOT NULL,            -- position among the file's sections
    key          TEXT NOT NULL,               -- heading path as JSON, '#', occurrence
    level        INTEGER NOT NULL,
    cite_version INTEGER REFERENCES source_versions(id),
    byte_start   INTEGER,
    byte_end     INTEGER,                     -- exclusive
    line_start   INTEGER,                     -- 1-based, inclusive
    line_end     INTEGER,                     -- 1-based, inclusive
    valid_from   INTEGER NOT NULL,
    valid_to     INTEGER,
    edge_id      TEXT                         -- the has_section edge's id, in stores before 0010
) STRICT;
CREATE UNIQUE INDEX sections_legacy_id ON sections(legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX sections_current ON sections(source_id, ordinal) WHERE valid_to IS NULL;

CREATE TABLE chunks (
    rid          INTEGER PRIMARY KEY,
    legacy_id    TEXT,                        -- the node id it had, in stores before 0010
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    ordinal      INTEGER NOT NULL,            -- position among the file's chunks
    key          TEXT NOT NULL,               -- hash of the text, '#', occurrence
    heading_path TEXT,                        -- JSON array of the headings it is under; absent when none
    content      TEXT,                        -- NULL once retired past `[store] retired_text_days`
    cite_version INTEGER REFERENCES source_versions(id),
    byte_start   INTEGER,
    byte_end     INTEGER,
    line_start   INTEGER,
    line_end     INTEGER,
    valid_from   INTEGER NOT NULL,
    valid_to     INTEGER,
    edge_id      TEXT                         -- the has_chunk edge's id, in stores before 0010
) STRICT;
CREATE UNIQUE INDEX chunks_legacy_id ON chunks(legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX chunks_current ON chunks(source_id, ordinal) WHERE valid_to IS NULL;
-- Retired chunks that still have text, for the retention purge (see 0009).
CREATE INDEX chunks_retired_text ON chunks(valid_to)
    WHERE valid_to IS NOT NULL AND content IS NOT NULL;

-- Citations recorded before 0007 lived in provenance rows; a part without an inline citation
-- takes its newest one, through a file version made for it.
INSERT INTO source_versions(source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
SELECT DISTINCT p.source_id, coalesce(p.content_hash, ''), p.extractor, p.extractor_version,
       p.actor_id, p.recorded_at
FROM nodes n JOIN provenance p ON p.node_id = n.id AND p.source_id IS NOT NULL
WHERE n.kind IN ('section', 'chunk') AND n.cite_version IS NULL AND n.source_id IS NOT NULL;

CREATE TEMP TABLE part_cites AS
SELECT n.id AS node_id, v.id AS version, p.byte_start, p.byte_end, p.line_start, p.line_end
FROM nodes n
JOIN provenance p ON p.id = (SELECT max(q.id) FROM provenance q WHERE q.node_id = n.id AND q.source_id IS NOT NULL)
JOIN source_versions v ON v.id = (
    SELECT max(w.id) FROM source_versions w
    WHERE w.source_id = p.source_id AND w.content_hash = coalesce(p.content_hash, '')
      AND w.recorded_at = p.recorded_at)
WHERE n.kind IN ('section', 'chunk') AND n.cite_version IS NULL AND n.source_id IS NOT NULL;

INSERT INTO sections(legacy_id, source_id, ordinal, key, level, cite_version, byte_start, byte_end,
                     line_start, line_end, valid_from, valid_to, edge_id)
SELECT n.id, n.source_id,
       row_number() OVER (PARTITION BY n.source_id, n.valid_to IS NULL
                          ORDER BY coalesce(n.cite_byte_start, c.byte_start), n.id) - 1,
       substr(n.key, length(n.parent_id) + 4),
       coalesce(json_extract(n.props, '$.level'), 1),
       coalesce(n.cite_version, c.version),
       coalesce(n.cite_byte_start, c.byte_start), coalesce(n.cite_byte_end, c.byte_end),
       coalesce(n.cite_line_start, c.line_start), coalesce(n.cite_line_end, c.line_end),
       coalesce(CAST(round((julianday(n.valid_from) - 2440587.5) * 86400000) AS INTEGER), 0),
       CAST(round((julianday(n.valid_to) - 2440587.5) * 86400000) AS INTEGER),
       (SELECT e.id FROM edges e WHERE e.dst_id = n.id AND e.type = 'has_section'
        ORDER BY e.valid_to IS NULL DESC, e.rowid DESC LIMIT 1)
FROM nodes n LEFT JOIN part_cites c ON c.node_id = n.id
WHERE n.kind = 'section' AND n.source_id IS NOT NULL AND n.parent_id IS NOT NULL;

INSERT INTO chunks(legacy_id, source_id, ordinal, key, heading_path, content, cite_version, byte_start,
                   byte_end, line_start, line_end, valid_from, valid_to, edge_id)
SELECT n.id, n.source_id,
       row_number() OVER (PARTITION BY n.source_id, n.valid_to IS NULL
                          ORDER BY coalesce(n.cite_byte_start, c.byte_start), n.id) - 1,
       substr(n.key, length(n.parent_id) + 4),
       CASE WHEN json_array_length(n.props, '$.heading_path') > 0
            THEN json_extract(n.props, '$.heading_path') END,
       n.content,
       coalesce(n.cite_version, c.version),
       coalesce(n.cite_byte_start, c.byte_start), coalesce(n.cite_byte_end, c.byte_end),
       coalesce(n.cite_line_start, c.line_start), coalesce(n.cite_line_end, c.line_end),
       coalesce(CAST(round((julianday(n.valid_from) - 2440587.5) * 86400000) AS INTEGER), 0),
       CAST(round((julianday(n.valid_to) - 2440587.5) * 86400000) AS INTEGER),
       (SELECT e.id FROM edges e WHERE e.dst_id = n.id AND e.type = 'has_chunk'
        ORDER BY e.valid_to IS NULL DESC, e.rowid DESC LIMIT 1)
FROM nodes n LEFT JOIN part_cites c ON c.node_id = n.id
WHERE n.kind = 'chunk' AND n.source_id IS NOT NULL AND n.parent_id IS NOT NULL;

DROP TABLE part_cites;

-- Vectors belong to a chunk row now.
CREATE TABLE chunk_vectors (
    chunk_rid    INTEGER NOT NULL REFERENCES chunks(rid),
    model_id     TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,               -- little-endian f32 x dim
    content_hash TEXT NOT NULL,               -- blake3 of the embedded text
    created_at   TEXT NOT NULL,
    PRIMARY KEY (chunk_rid, model_id)
) STRICT;
INSERT INTO chunk_vectors(chunk_rid, model_id, dim, vector, content_hash, created_at)
SELECT c.rid, e.model_id, e.dim, e.vector, e.content_hash, e.created_at
FROM embeddings e JOIN chunks c ON c.legacy_id = e.node_id;
DROP TABLE embeddings;
CREATE INDEX chunk_vectors_model ON chunk_vectors(model_id);

-- An edge a workflow drew to or from a section or chunk now joins the note it belongs to.
UPDATE edges SET dst_id = (SELECT n.parent_id FROM nodes n WHERE n.id = edges.dst_id)
WHERE type NOT IN ('has_section', 'has_chunk')
  AND dst_id IN (SELECT id FROM nodes WHERE kind IN ('section', 'chunk') AND parent_id IS NOT NULL);
UPDATE edges SET src_id = (SELECT n.parent_id FROM nodes n WHERE n.id = edges.src_id)
WHERE type NOT IN ('has_section', 'has_chunk')
  AND src_id IN (SELECT id FROM nodes WHERE kind IN ('section', 'chunk') AND parent_id IS NOT NULL);

DELETE FROM provenance WHERE edge_id IN (SELECT id FROM edges WHERE type IN ('has_section', 'has_chunk'));
DELETE FROM edges WHERE type IN ('has_section', 'has_chunk');
DELETE FROM provenance WHERE node_id IN
    (SELECT id FROM nodes WHERE kind IN ('section', 'chunk') AND parent_id IS NOT NULL AND source_id IS NOT NULL);
DELETE FROM nodes WHERE kind IN ('section', 'chunk') AND parent_id IS NOT NULL AND source_id IS NOT NULL;

DROP INDEX nodes_retired_text;
DROP INDEX nodes_parent;

-- A note's chunks changed: queue the note (the nodes triggers of 0003 saw chunk rows).
DROP TRIGGER search_node_insert;
CREATE TRIGGER search_chunk_insert AFTER INSERT ON chunks
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT id FROM nodes WHERE kind IN ('note', 'file') AND key = 'source:' || NEW.source_id
      AND valid_to IS NULL;
END;
CREATE TRIGGER search_chunk_update AFTER UPDATE OF valid_to ON chunks
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT id FROM nodes WHERE kind IN ('note', 'file') AND key = 'source:' || NEW.source_id
      AND valid_to IS NULL;
END;
