-- 0015: rows name a node by its row number, not by its 36-character id.
--
-- Measured with the dbstat table on a store of obsidian-hub (103 MB for 14.8 MB of notes, 74k
-- link edges, 43k URL nodes): edges and their three indexes were 41.7 MB, and each edge row and
-- each entry of `edges_current` and `edges_dst` spelled out one or two node ids in full; so did
-- each row of `note_names` and `link_refs` (4.7 and 7 MB with their indexes). Here:
--
-- * `nodes` gets an `INTEGER PRIMARY KEY` (`rid`, the row number it had, which VACUUM never
--   renumbers once it is declared) beside its public id, which stays unique and indexed.
-- * Edges live in `edge_rows`, whose `src` and `dst` are those row numbers. `edges` is now a
--   view with the columns the table had, its row number still under the name `rowid` (each
--   edge keeps the one it had) and `src` and `dst` besides, so every statement that reads
--   edges by their nodes' ids still runs. It takes INSERT, UPDATE and DELETE through triggers
--   for the writers that are not on the ingest path; the ingester, which runs with triggers
--   off, writes `edge_rows` itself.
-- * `note_names.node` and `link_refs.src` are the row numbers of the nodes they named by id.
-- * A URL link's packed props leave out its target, which is its URL node's key: the view
--   puts it back. On obsidian-hub that was the URL a third time, 4.8 MB for 51k links.
-- * A link edge the ingester writes from now on stores no id: its id is derived from its row
--   (`store::edge_id`, spelt out by the view), which saves the id and its index entry (6.5 MB
--   on obsidian-hub). Every edge already stored keeps its id, and so does every edge a
--   workflow, a tag or a tag hierarchy writes, which citations name.
-- * `provenance.edge_id` now names `edge_rows(id)`: a foreign key cannot name a view.
--
-- Nothing is lost: every edge keeps its id, nodes and times, and every node its id. The
-- triggers that named `nodes` or `edges` are recreated as they were (0003, 0011, 0012); the
-- tag ones are on `edge_rows`, and the one for updates fires only when `valid_to` changes.

-- Triggers on other tables that name `nodes` would stop the rename below.
DROP TRIGGER search_source_update;
DROP TRIGGER node_revision_on_new_file_version;
DROP TRIGGER search_chunk_insert;
DROP TRIGGER search_chunk_update;

CREATE TABLE nodes_0015 (
    rid             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
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
INSERT INTO nodes_0015
SELECT rowid, id, kind, key, title, aliases, props, content, source_id, parent_id, owner_id,
       valid_from, valid_to, created_at, updated_at, cite_version, cite_byte_start,
       cite_byte_end, cite_line_start, cite_line_end
FROM nodes ORDER BY rowid;

CREATE TABLE edge_rows (
    rid             INTEGER PRIMARY KEY,
    id              TEXT UNIQUE,             -- absent for a link read from a file (below)
    src             INTEGER NOT NULL REFERENCES nodes(rid),
    dst             INTEGER NOT NULL REFERENCES nodes(rid),
    type            TEXT NOT NULL,
    key             TEXT NOT NULL DEFAULT '',
    props           ANY,                     -- JSON object, or a link's packed BLOB (0014)
    created_by      TEXT,                    -- absent when the cited version's actor (0014)
    valid_from      TEXT NOT NULL,
    valid_to        TEXT,
    created_at      TEXT,                    -- absent when equal to valid_from (0014)
    cite_version    INTEGER REFERENCES source_versions(id),
    cite_byte_start INTEGER,
    cite_byte_end   INTEGER,
    cite_line_start INTEGER,
    cite_line_end   INTEGER
) STRICT;
INSERT INTO edge_rows(rid, id, src, dst, type, key, props, created_by, valid_from, valid_to,
                      created_at, cite_version, cite_byte_start, cite_byte_end, cite_line_start,
                      cite_line_end)
SELECT e.rowid, e.id, s.rowid, d.rowid, e.type, e.key, e.props, e.created_by, e.valid_from,
       e.valid_to, e.created_at, e.cite_version, e.cite_byte_start, e.cite_byte_end,
       e.cite_line_start, e.cite_line_end
FROM edges e JOIN nodes s ON s.id = e.src_id JOIN nodes d ON d.id = e.dst_id
ORDER BY e.rowid;

CREATE TABLE provenance_0015 (
    id                INTEGER PRIMARY KEY,
    node_id           TEXT REFERENCES nodes(id),
    edge_id           TEXT REFERENCES edge_rows(id),
    source_id         INTEGER REFERENCES sources(id),
    byte_start        INTEGER,
    byte_end          INTEGER,                 -- exclusive
    line_start        INTEGER,                 -- 1-based, inclusive
    line_end          INTEGER,                 -- 1-based, inclusive
    content_hash      TEXT,                    -- blake3 of the file version it was read from
    extractor         TEXT NOT NULL,
    extractor_version TEXT NOT NULL,
    actor_id          TEXT NOT NULL,
    run_id            TEXT,
    step_key          TEXT,
    recorded_at       TEXT NOT NULL,
    valid_to          TEXT,                    -- retired together with the fact it supports
    CHECK ((node_id IS NULL) <> (edge_id IS NULL))
) STRICT;
INSERT INTO provenance_0015 SELECT * FROM provenance ORDER BY id;

-- The names links resolve by, and the names a note's links watch, name their node the same way.
CREATE TABLE note_names_0015 (
    root_id  INTEGER NOT NULL REFERENCES roots(id),
    name     TEXT NOT NULL,      -- lowercased: file stem, vault path without .md, or alias
    how      TEXT NOT NULL CHECK (how IN ('stem', 'path', 'alias')),
    node     INTEGER NOT NULL REFERENCES nodes(rid),
    depth    INTEGER NOT NULL,   -- folder depth below the root: closest to the root wins
    rel_path TEXT NOT NULL
) STRICT;
INSERT INTO note_names_0015
SELECT nn.root_id, nn.name, nn.how, n.rowid, nn.depth, nn.rel_path
FROM note_names nn JOIN nodes n ON n.id = nn.node_id ORDER BY nn.rowid;

CREATE TABLE link_refs_0015 (
    root_id INTEGER NOT NULL REFERENCES roots(id),
    name    TEXT NOT NULL,       -- the lowercased names the link could resolve by
    src     INTEGER NOT NULL REFERENCES nodes(rid)
) STRICT;
INSERT INTO link_refs_0015
SELECT r.root_id, r.name, n.rowid
FROM link_refs r JOIN nodes n ON n.id = r.src_node_id ORDER BY r.rowid;

DROP TABLE note_names;
DROP TABLE link_refs;
DROP TABLE provenance;
DROP TABLE edges;
DROP TABLE nodes;
ALTER TABLE nodes_0015 RENAME TO nodes;
ALTER TABLE provenance_0015 RENAME TO provenance;
ALTER TABLE note_names_0015 RENAME TO note_names;
ALTER TABLE link_refs_0015 RENAME TO link_refs;

CREATE INDEX note_names_lookup ON note_names(root_id, name);
CREATE INDEX note_names_node ON note_names(node);
CREATE INDEX link_refs_lookup ON link_refs(root_id, name);
CREATE INDEX link_refs_src ON link_refs(src);

CREATE UNIQUE INDEX nodes_current_key ON nodes(kind, key) WHERE valid_to IS NULL;
CREATE INDEX nodes_title ON nodes(title COLLATE NOCASE)
    WHERE valid_to IS NULL AND kind IN ('note', 'file');
CREATE INDEX nodes_source ON nodes(source_id)
    WHERE valid_to IS NULL AND source_id IS NOT NULL;
CREATE INDEX nodes_retired_files ON nodes(key, valid_to)
    WHERE valid_to IS NOT NULL AND kind IN ('note', 'file');

CREATE UNIQUE INDEX edges_current ON edge_rows(src, dst, type, key) WHERE valid_to IS NULL;
CREATE INDEX edges_dst ON edge_rows(dst, type) WHERE valid_to IS NULL;
CREATE INDEX edges_retired ON edge_rows(valid_to) WHERE valid_to IS NOT NULL;

CREATE INDEX provenance_source ON provenance(source_id);
CREATE INDEX provenance_node ON provenance(node_id) WHERE node_id IS NOT NULL;
CREATE INDEX provenance_edge ON provenance(edge_id) WHERE edge_id IS NOT NULL;

-- An edge without a stored id answers to the one its row gives it (`store::edge_id`). A packed
-- link whose target is its destination's key (a URL link) stores `true` there
-- (`store::edge_props`); the view puts the key back.
CREATE VIEW edges AS
SELECT e.rid AS rowid,
       coalesce(e.id, printf('62656467-0000-8000-80%02d-%012d', e.rid / 1000000000000,
                             e.rid % 1000000000000)) AS id,
       s.id AS src_id, d.id AS dst_id, e.type, e.key,
       CASE WHEN typeof(e.props) = 'blob'
                 AND json_type(CAST(e.props AS TEXT), '$[2]') = 'true'
            THEN CAST(json_replace(CAST(e.props AS TEXT), '$[2]', d.key) AS BLOB)
            ELSE e.props END AS props,
       e.created_by,
       e.valid_from, e.valid_to, e.created_at, e.cite_version, e.cite_byte_start,
       e.cite_byte_end, e.cite_line_start, e.cite_line_end, e.src, e.dst
FROM edge_rows e
JOIN nodes s ON s.rid = e.src
JOIN nodes d ON d.rid = e.dst;

-- An end that names no node is refused as the foreign key on the table refused it.
CREATE TRIGGER edges_insert INSTEAD OF INSERT ON edges
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed')
    WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = NEW.src_id)
       OR NOT EXISTS (SELECT 1 FROM nodes WHERE id = NEW.dst_id);
    INSERT INTO edge_rows(id, src, dst, type, key, props, created_by, valid_from, valid_to,
                          created_at, cite_version, cite_byte_start, cite_byte_end,
                          cite_line_start, cite_line_end)
    VALUES (NEW.id, (SELECT rid FROM nodes WHERE id = NEW.src_id),
            (SELECT rid FROM nodes WHERE id = NEW.dst_id), NEW.type, coalesce(NEW.key, ''),
            NEW.props, NEW.created_by, NEW.valid_from, NEW.valid_to, NEW.created_at,
            NEW.cite_version, NEW.cite_byte_start, NEW.cite_byte_end, NEW.cite_line_start,
            NEW.cite_line_end);
END;
CREATE TRIGGER edges_update INSTEAD OF UPDATE ON edges
BEGIN
    UPDATE edge_rows SET
        id = CASE WHEN NEW.id IS OLD.id THEN id ELSE NEW.id END,
        src = CASE WHEN NEW.src_id IS OLD.src_id THEN src
                   ELSE (SELECT rid FROM nodes WHERE id = NEW.src_id) END,
        dst = CASE WHEN NEW.dst_id IS OLD.dst_id THEN dst
                   ELSE (SELECT rid FROM nodes WHERE id = NEW.dst_id) END,
        type = NEW.type, key = NEW.key, props = NEW.props, created_by = NEW.created_by,
        valid_from = NEW.valid_from, valid_to = NEW.valid_to, created_at = NEW.created_at,
        cite_version = NEW.cite_version, cite_byte_start = NEW.cite_byte_start,
        cite_byte_end = NEW.cite_byte_end, cite_line_start = NEW.cite_line_start,
        cite_line_end = NEW.cite_line_end
    WHERE rid = OLD.rowid;
END;
CREATE TRIGGER edges_delete INSTEAD OF DELETE ON edges
BEGIN
    DELETE FROM edge_rows WHERE rid = OLD.rowid;
END;

-- The triggers of 0003, 0011 and 0012, as they were; the tag ones on `edge_rows`.
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
CREATE TRIGGER search_tag_insert AFTER INSERT ON edge_rows
WHEN NEW.type = 'tagged'
BEGIN
    INSERT INTO search_outbox(note_id) SELECT id FROM nodes WHERE rid = NEW.src;
END;
CREATE TRIGGER search_tag_update AFTER UPDATE OF valid_to ON edge_rows
WHEN NEW.type = 'tagged' AND NEW.valid_to IS NOT OLD.valid_to
BEGIN
    INSERT INTO search_outbox(note_id) SELECT id FROM nodes WHERE rid = NEW.src;
END;
CREATE TRIGGER node_revision_on_update
AFTER UPDATE OF title, aliases, props, cite_version, cite_byte_start, cite_byte_end, valid_to ON nodes
WHEN (OLD.valid_to IS NULL AND NEW.valid_to IS NULL
      AND (OLD.title IS NOT NEW.title OR OLD.aliases IS NOT NEW.aliases OR OLD.props IS NOT NEW.props
           OR OLD.cite_version IS NOT NEW.cite_version OR OLD.cite_byte_start IS NOT NEW.cite_byte_start
           OR OLD.cite_byte_end IS NOT NEW.cite_byte_end))
  OR (OLD.valid_to IS NOT NULL AND NEW.valid_to IS NULL)
BEGIN
    INSERT INTO node_revisions(node_id, title, aliases, props, rel_path, cite_version,
                               cite_byte_start, cite_byte_end, cite_line_start, cite_line_end,
                               valid_to, resumed_at)
    VALUES (OLD.id, OLD.title, OLD.aliases, OLD.props,
            (SELECT rel_path FROM sources WHERE id = OLD.source_id),
            OLD.cite_version, OLD.cite_byte_start, OLD.cite_byte_end, OLD.cite_line_start,
            OLD.cite_line_end,
            -- a writer that bumps updated_at says when; otherwise it is now
            coalesce(OLD.valid_to,
                     CASE WHEN NEW.updated_at > OLD.updated_at THEN NEW.updated_at
                          ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END),
            CASE WHEN OLD.valid_to IS NOT NULL
                 THEN CASE WHEN NEW.updated_at > OLD.valid_to THEN NEW.updated_at
                           ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END END);
END;
CREATE TRIGGER node_revision_on_new_file_version
AFTER UPDATE OF content_hash, rel_path ON sources
WHEN OLD.content_hash IS NOT NEW.content_hash OR OLD.rel_path IS NOT NEW.rel_path
BEGIN
    INSERT INTO node_revisions(node_id, title, aliases, props, rel_path, cite_version,
                               cite_byte_start, cite_byte_end, cite_line_start, cite_line_end,
                               valid_to)
    SELECT n.id, n.title, n.aliases, n.props, OLD.rel_path, n.cite_version, n.cite_byte_start,
           n.cite_byte_end, n.cite_line_start, n.cite_line_end,
           -- an ingest's new file version is seen at the sync's time; other changes are now
           CASE WHEN NEW.last_seen_at > OLD.last_seen_at THEN NEW.last_seen_at
                ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END
    FROM nodes n
    WHERE n.key = 'source:' || OLD.id AND n.kind IN ('note', 'file') AND n.valid_to IS NULL
      -- a version already recorded (a batch that failed after this, and its retry) is not
      -- recorded twice
      AND NOT EXISTS (SELECT 1 FROM node_revisions r
                      WHERE r.node_id = n.id AND r.cite_version IS n.cite_version
                        AND r.title IS n.title AND r.props IS n.props AND r.aliases IS n.aliases
                        AND r.rel_path IS OLD.rel_path);
END;
