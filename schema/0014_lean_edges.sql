-- 0014: an edge says only what its file version does not.
--
-- Measured with the dbstat table on a store of a 14k-file docs folder (247 MB store for 94 MB of
-- Markdown, 91k link edges, edges 37.5 MB): every link edge spelt out its acting user (41
-- bytes, 3.7 MB), which its cited file version already records; its `created_at` (24 bytes,
-- 2.2 MB), which always equals `valid_from` and which no reader reads; and the names of a
-- link's five props (`kind`, `syntax`, `target`, `subpath`, `display`: about 45 bytes, 4 MB).
-- Here:
--
-- * `created_by` is absent (NULL) on an edge that cites a file version whose `actor_id` is that
--   user; readers take `coalesce(created_by, <the cited version's actor_id>)`. The ingester
--   writes it back when it cites the edge under a version another user recorded.
-- * `created_at` is absent when it equals `valid_from`.
-- * `props` may be a BLOB: a link's props packed as a JSON array of those five values in that
--   order, trailing nulls left out (`store::edge_props`). Text stays a JSON object; no writer
--   writes any other BLOB there, so `props` is ANY.
--
-- SQLite cannot drop a NOT NULL constraint or change a type in place, so `edges` is rebuilt
-- (a new table, a copy, the old one dropped and the new one renamed) with every index and
-- trigger it had (0001, 0006, 0011). Times stay text: every `as_of` comparison and retirement
-- is written against them, and they cost 2 MB of the 37.

CREATE TABLE edges_0014 (
    id              TEXT PRIMARY KEY,
    src_id          TEXT NOT NULL REFERENCES nodes(id),
    dst_id          TEXT NOT NULL REFERENCES nodes(id),
    type            TEXT NOT NULL,
    key             TEXT NOT NULL DEFAULT '',
    props           ANY,                     -- JSON object, or a link's packed BLOB (above)
    created_by      TEXT,                    -- absent when the cited version's actor
    valid_from      TEXT NOT NULL,
    valid_to        TEXT,
    created_at      TEXT,                    -- absent when equal to valid_from
    cite_version    INTEGER REFERENCES source_versions(id),
    cite_byte_start INTEGER,
    cite_byte_end   INTEGER,
    cite_line_start INTEGER,
    cite_line_end   INTEGER
) STRICT;
INSERT INTO edges_0014
SELECT e.id, e.src_id, e.dst_id, e.type, e.key,
       -- exactly those five keys in that order: the object rebuilt from them is the same text
       CASE WHEN json_valid(e.props)
                 AND json(e.props) = json_object('kind', e.props -> '$.kind',
                         'syntax', e.props -> '$.syntax', 'target', e.props -> '$.target',
                         'subpath', e.props -> '$.subpath', 'display', e.props -> '$.display')
            THEN CAST(json_array(e.props -> '$.kind', e.props -> '$.syntax', e.props -> '$.target',
                                 e.props -> '$.subpath', e.props -> '$.display') AS BLOB)
            ELSE e.props END,
       CASE WHEN e.created_by = (SELECT v.actor_id FROM source_versions v WHERE v.id = e.cite_version)
            THEN NULL ELSE e.created_by END,
       e.valid_from, e.valid_to, nullif(e.created_at, e.valid_from), e.cite_version,
       e.cite_byte_start, e.cite_byte_end, e.cite_line_start, e.cite_line_end
FROM edges e ORDER BY e.rowid;
DROP TABLE edges;
ALTER TABLE edges_0014 RENAME TO edges;
CREATE UNIQUE INDEX edges_current ON edges(src_id, dst_id, type, key) WHERE valid_to IS NULL;
CREATE INDEX edges_dst ON edges(dst_id, type) WHERE valid_to IS NULL;
CREATE INDEX edges_retired ON edges(valid_to) WHERE valid_to IS NOT NULL;

-- The triggers of 0003, as they were.
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
