-- 0011: rows say only what nothing else already says.
--
-- Measured with the dbstat table on a store of a 14k-file docs folder (291 MB for 94 MB of
-- Markdown): a chunk's heading path (18 MB) repeats its section's, which the section's key
-- already spells out; most notes, URLs, tags and placeholders carried an empty '[]' of
-- aliases and '{}' of props. Here:
--
-- * `props` and `aliases` of nodes and edges may be absent (NULL), which readers take as
--   empty; an empty object or list is no longer written. SQLite cannot drop a NOT NULL
--   constraint in place, so both tables are rebuilt (the documented way: a new table, a copy,
--   the old one dropped and the new one renamed), with every index and trigger they had.
-- * A section's heading path is a virtual column (`path`, computed from `key` when read,
--   never stored). A chunk names the section it sits in (`section`, that section's ordinal
--   among the file's current sections) and keeps `heading_path` only when it differs from that
--   section's path (never, for what today's parser writes); readers take
--   `coalesce(heading_path, <the section's path>)`. A chunk retired keeps its heading path
--   written out, since its section's ordinal means nothing once the file changes again.
--
-- Link edge keys are shortened by the ingester (`ingest::facts::link_key`) as each file is
-- next ingested; their ids stay. Nothing is lost: every value dropped here is derived again
-- by the readers.

-- Triggers on other tables that name `nodes` would stop the rename below.
DROP TRIGGER search_chunk_insert;
DROP TRIGGER search_chunk_update;
DROP TRIGGER search_source_update;

CREATE TABLE nodes_0011 (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    key             TEXT NOT NULL,
    title           TEXT,
    aliases         TEXT,                    -- JSON array; absent when there are none
    props           TEXT,                    -- JSON object; absent when empty
    content         TEXT,
    source_id       INTEGER REFERENCES sources(id),
    parent_id       TEXT REFERENCES nodes(id),
    owner_id        TEXT NOT NULL,
    valid_from      TEXT NOT NULL,
    valid_to        TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    cite_version    INTEGER REFERENCES source_versions(id),
    cite_byte_start INTEGER,
    cite_byte_end   INTEGER,                 -- exclusive
    cite_line_start INTEGER,                 -- 1-based, inclusive
    cite_line_end   INTEGER                  -- 1-based, inclusive
) STRICT;
INSERT INTO nodes_0011
SELECT id, kind, key, title, nullif(nullif(aliases, '[]'), ''), nullif(nullif(props, '{}'), ''),
       content, source_id, parent_id, owner_id, valid_from, valid_to, created_at, updated_at,
       cite_version, cite_byte_start, cite_byte_end, cite_line_start, cite_line_end
FROM nodes ORDER BY rowid;
DROP TABLE nodes;
ALTER TABLE nodes_0011 RENAME TO nodes;
CREATE UNIQUE INDEX nodes_current_key ON nodes(kind, key) WHERE valid_to IS NULL;
CREATE INDEX nodes_title ON nodes(title COLLATE NOCASE)
    WHERE valid_to IS NULL AND kind IN ('note', 'file');
CREATE INDEX nodes_source ON nodes(source_id)
    WHERE valid_to IS NULL AND source_id IS NOT NULL;
CREATE INDEX nodes_retired_files ON nodes(key, valid_to)
    WHERE valid_to IS NOT NULL AND kind IN ('note', 'file');

CREATE TABLE edges_0011 (
    id              TEXT PRIMARY KEY,
    src_id          TEXT NOT NULL REFERENCES nodes(id),
    dst_id          TEXT NOT NULL REFERENCES nodes(id),
    type            TEXT NOT NULL,
    key             TEXT NOT NULL DEFAULT '',
    props           TEXT,                    -- JSON object; absent when empty
    created_by      TEXT NOT NULL,
    valid_from      TEXT NOT NULL,
    valid_to        TEXT,
    created_at      TEXT NOT NULL,
    cite_version    INTEGER REFERENCES source_versions(id),
    cite_byte_start INTEGER,
    cite_byte_end   INTEGER,
    cite_line_start INTEGER,
    cite_line_end   INTEGER
) STRICT;
INSERT INTO edges_0011
SELECT id, src_id, dst_id, type, key, nullif(nullif(props, '{}'), ''), created_by, valid_from,
       valid_to, created_at, cite_version, cite_byte_start, cite_byte_end, cite_line_start,
       cite_line_end
FROM edges ORDER BY rowid;
DROP TABLE edges;
ALTER TABLE edges_0011 RENAME TO edges;
CREATE UNIQUE INDEX edges_current ON edges(src_id, dst_id, type, key) WHERE valid_to IS NULL;
CREATE INDEX edges_dst ON edges(dst_id, type) WHERE valid_to IS NULL;
CREATE INDEX edges_retired ON edges(valid_to) WHERE valid_to IS NOT NULL;

-- The triggers of 0003 and 0010, as they were.
CREATE TRIGGER search_node_update AFTER UPDATE OF valid_to, title, aliases, props, kind ON nodes
WHEN NEW.kind IN ('chunk', 'note', 'file')
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT CASE WHEN NEW.kind = 'chunk' THEN NEW.parent_id ELSE NEW.id END
    WHERE NEW.kind <> 'chunk' OR NEW.parent_id IS NOT NULL;
END;
CREATE TRIGGER search_source_update AFTER UPDATE OF rel_path, mtime_ns ON sources
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT id FROM nodes WHERE source_id = NEW.id AND kind IN ('note', 'file') AND valid_to IS NULL;
END;
CREATE TRIGGER search_tag_insert AFTER INSERT ON edges
WHEN NEW.type = 'tagged'
BEGIN
    INSERT INTO search_outbox(note_id) VALUES (NEW.src_id);
END;
CREATE TRIGGER search_tag_update AFTER UPDATE OF valid_to ON edges
WHEN NEW.type = 'tagged'
BEGIN
    INSERT INTO search_outbox(note_id) VALUES (NEW.src_id);
END;
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

-- A section's key is its heading path as JSON, '#', and its occurrence: the path is the key
-- without the trailing digits and '#' (a JSON array ends in ']', never in a digit).
ALTER TABLE sections ADD COLUMN path TEXT
    GENERATED ALWAYS AS (substr(rtrim(key, '0123456789'), 1, length(rtrim(key, '0123456789')) - 1))
    VIRTUAL;

ALTER TABLE chunks ADD COLUMN section INTEGER;  -- ordinal of its section among the current ones
UPDATE chunks SET section = (
    SELECT max(s.ordinal) FROM sections s
    WHERE s.source_id = chunks.source_id AND s.valid_to IS NULL
      AND s.byte_start <= chunks.byte_start)
WHERE valid_to IS NULL AND heading_path IS NOT NULL;
UPDATE chunks SET heading_path = NULL
WHERE valid_to IS NULL AND heading_path IS NOT NULL AND heading_path = (
    SELECT s.path FROM sections s
    WHERE s.source_id = chunks.source_id AND s.ordinal = chunks.section AND s.valid_to IS NULL);

-- No statement looks citations up by workflow run (store::index_audit lists the statement
-- that uses each index); the index cost an entry per workflow citation.
DROP INDEX provenance_run;
