-- 0013: a section stores its own heading and a reference to its parent section, not its
-- whole heading path.
--
-- On a 14k-file docs folder the sections' keys (the heading path as JSON, '#', occurrence)
-- were 19 MB of a 301 MB store: every section spelt out the headings of all the sections it
-- sits in. Here a section's row (`section_rows`) keeps only its last heading as a JSON string
-- (`heading`), its parent section's `rid` (`parent`, which VACUUM never renumbers and which
-- stays valid once either is retired) and its occurrence. `sections` is now a view with the
-- columns it had, `key` and `path` included, rebuilt by following `parent`: a heading path is
-- at most six deep (heading levels 1 to 6 nest at most six times), so the view joins the row to
-- at most five ancestors. A row whose chain would be deeper, or whose parent cannot be found,
-- keeps in `heading` the whole JSON text of its path inside the brackets, with no parent.
--
-- `parent` declares no foreign key: purging a root deletes its rows in batches by rid, and a
-- batch may take a parent before its children.
--
-- The view takes UPDATE, DELETE and INSERT (for which `key` is stored as one heading
-- fragment, with no parent), so statements written against the old table still run.

CREATE TABLE section_rows (
    rid          INTEGER PRIMARY KEY,
    legacy_id    TEXT,                        -- the node id it had, in stores before 0010
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    ordinal      INTEGER NOT NULL,            -- position among the file's sections
    parent       INTEGER,                     -- rid of the section it sits in; absent at the top
    heading      TEXT NOT NULL,               -- its heading as a JSON string (see above)
    occurrence   INTEGER NOT NULL,            -- the n of '#n': which of the file's same paths
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

-- A parent is any section of the same file whose path is this one's without its last heading:
-- the path text is all a child takes from it.
CREATE TEMP TABLE section_paths AS
SELECT rid, source_id, path, json_array_length(path) AS depth FROM sections;
CREATE INDEX temp.section_paths_source ON section_paths(source_id, depth);

INSERT INTO section_rows(rid, legacy_id, source_id, ordinal, parent, heading, occurrence, level,
                         cite_version, byte_start, byte_end, line_start, line_end, valid_from,
                         valid_to, edge_id)
SELECT s.rid, s.legacy_id, s.source_id, s.ordinal, p.rid,
       CASE WHEN p.rid IS NULL THEN substr(s.path, 2, length(s.path) - 2)
            ELSE substr(s.path, length(p.path) + 1, length(s.path) - length(p.path) - 1) END,
       CAST(substr(s.key, length(s.path) + 2) AS INTEGER),
       s.level, s.cite_version, s.byte_start, s.byte_end, s.line_start, s.line_end, s.valid_from,
       s.valid_to, s.edge_id
FROM sections s
LEFT JOIN section_paths p ON p.rid = (
    SELECT max(q.rid) FROM section_paths q
    WHERE q.source_id = s.source_id AND q.depth = json_array_length(s.path) - 1
      AND json_array_length(s.path) BETWEEN 2 AND 6
      AND substr(s.path, 1, length(q.path)) = substr(q.path, 1, length(q.path) - 1) || ',')
ORDER BY s.rid;
DROP TABLE section_paths;

DROP TABLE sections;
CREATE UNIQUE INDEX sections_legacy_id ON section_rows(legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX sections_current ON section_rows(source_id, ordinal) WHERE valid_to IS NULL;

CREATE VIEW sections AS
SELECT s.rid, s.legacy_id, s.source_id, s.ordinal,
       '[' || coalesce(a5.heading || ',', '') || coalesce(a4.heading || ',', '')
           || coalesce(a3.heading || ',', '') || coalesce(a2.heading || ',', '')
           || coalesce(a1.heading || ',', '') || s.heading || ']#' || s.occurrence AS key,
       s.level, s.cite_version, s.byte_start, s.byte_end, s.line_start, s.line_end,
       s.valid_from, s.valid_to, s.edge_id,
       '[' || coalesce(a5.heading || ',', '') || coalesce(a4.heading || ',', '')
           || coalesce(a3.heading || ',', '') || coalesce(a2.heading || ',', '')
           || coalesce(a1.heading || ',', '') || s.heading || ']' AS path,
       s.parent, s.heading, s.occurrence
FROM section_rows s
LEFT JOIN section_rows a1 ON a1.rid = s.parent
LEFT JOIN section_rows a2 ON a2.rid = a1.parent
LEFT JOIN section_rows a3 ON a3.rid = a2.parent
LEFT JOIN section_rows a4 ON a4.rid = a3.parent
LEFT JOIN section_rows a5 ON a5.rid = a4.parent;

CREATE TRIGGER sections_update INSTEAD OF UPDATE ON sections
BEGIN
    UPDATE section_rows SET legacy_id = NEW.legacy_id, source_id = NEW.source_id,
        ordinal = NEW.ordinal, parent = NEW.parent, level = NEW.level,
        cite_version = NEW.cite_version, byte_start = NEW.byte_start, byte_end = NEW.byte_end,
        line_start = NEW.line_start, line_end = NEW.line_end, valid_from = NEW.valid_from,
        valid_to = NEW.valid_to, edge_id = NEW.edge_id
    WHERE rid = OLD.rid;
END;
CREATE TRIGGER sections_delete INSTEAD OF DELETE ON sections
BEGIN
    DELETE FROM section_rows WHERE rid = OLD.rid;
END;
CREATE TRIGGER sections_insert INSTEAD OF INSERT ON sections
BEGIN
    INSERT INTO section_rows(rid, legacy_id, source_id, ordinal, parent, heading, occurrence,
                             level, cite_version, byte_start, byte_end, line_start, line_end,
                             valid_from, valid_to, edge_id)
    VALUES (NEW.rid, NEW.legacy_id, NEW.source_id, NEW.ordinal, NULL,
            substr(rtrim(NEW.key, '0123456789'), 2, length(rtrim(NEW.key, '0123456789')) - 3),
            CAST(substr(NEW.key, length(rtrim(NEW.key, '0123456789')) + 1) AS INTEGER),
            NEW.level, NEW.cite_version, NEW.byte_start, NEW.byte_end, NEW.line_start,
            NEW.line_end, NEW.valid_from, NEW.valid_to, NEW.edge_id);
END;

-- A chunk's key, the first 128 bits of its text's blake3 in hex, '#' and its occurrence (35
-- bytes, a tenth of a chunk row on a docs folder), is stored as those 16 bytes followed by
-- the occurrence's digits: a BLOB of 17 or so bytes. Readers spell the text out again
-- (`store::part_id::chunk_key_text`). A key of any other shape (written by an older parser)
-- stays text, so `key` is ANY; the table is rebuilt for that (SQLite cannot change a column's
-- type in place) with its indexes and triggers.
CREATE TABLE chunks_0013 (
    rid          INTEGER PRIMARY KEY,
    legacy_id    TEXT,                        -- the node id it had, in stores before 0010
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    ordinal      INTEGER NOT NULL,            -- position among the file's chunks
    key          ANY NOT NULL,                -- see above
    heading_path TEXT,                        -- JSON array; absent when its section's (0011)
    content      TEXT,                        -- NULL once retired past `[store] retired_text_days`
    cite_version INTEGER REFERENCES source_versions(id),
    byte_start   INTEGER,
    byte_end     INTEGER,
    line_start   INTEGER,
    line_end     INTEGER,
    valid_from   INTEGER NOT NULL,
    valid_to     INTEGER,
    edge_id      TEXT,                        -- the has_chunk edge's id, in stores before 0010
    section      INTEGER                      -- ordinal of its section among the current ones
) STRICT;
INSERT INTO chunks_0013
SELECT rid, legacy_id, source_id, ordinal,
       CASE WHEN length(key) > 33 AND substr(key, 33, 1) = '#'
                 AND substr(key, 1, 32) NOT GLOB '*[^0-9a-f]*'
                 AND substr(key, 34) NOT GLOB '*[^0-9]*' AND substr(key, 34) NOT GLOB '0*'
            THEN unhex(substr(key, 1, 32) || hex(substr(key, 34)))
            ELSE key END,
       heading_path, content, cite_version, byte_start, byte_end, line_start, line_end,
       valid_from, valid_to, edge_id, section
FROM chunks ORDER BY rid;
DROP TABLE chunks;
ALTER TABLE chunks_0013 RENAME TO chunks;
CREATE UNIQUE INDEX chunks_legacy_id ON chunks(legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX chunks_current ON chunks(source_id, ordinal) WHERE valid_to IS NULL;
CREATE INDEX chunks_retired_text ON chunks(valid_to)
    WHERE valid_to IS NOT NULL AND content IS NOT NULL;
-- The triggers of 0010, as they were.
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
