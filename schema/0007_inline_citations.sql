-- 0007: a file's own facts carry their citation; what every citation of one file version
-- shares is written once.
--
-- A note's node, its sections and chunks, and the edges from it (links, tags, has_section,
-- has_chunk) are stated by that one file and nothing else, so each had exactly one current
-- provenance row: about 1.5 rows per fact written, each repeating the file's hash, extractor,
-- actor and time, with three index entries. Their span now sits on the node or edge itself
-- and points at a `source_versions` row holding what the version's citations share. A fact
-- kept across versions is re-cited in place; a retired fact keeps the citation of the last
-- version that stated it.
--
-- The provenance table keeps every other citation: shared nodes cited by many files (tags),
-- shared edges (child_of), and what workflows write. Stores written before this migration
-- keep their provenance rows, which stay correct; a file's rows are retired the next time it
-- is ingested, and its citations move onto its facts.
--
-- Readers of a node's or an edge's citations read both: the one on the fact itself (when
-- `cite_version` is set) and its current provenance rows.

CREATE TABLE source_versions (
    id                INTEGER PRIMARY KEY,
    source_id         INTEGER NOT NULL REFERENCES sources(id),
    content_hash      TEXT NOT NULL,           -- blake3 of the bytes the facts were read from
    extractor         TEXT NOT NULL,
    extractor_version TEXT NOT NULL,
    actor_id          TEXT NOT NULL,
    recorded_at       TEXT NOT NULL
) STRICT;

ALTER TABLE nodes ADD COLUMN cite_version INTEGER REFERENCES source_versions(id);
ALTER TABLE nodes ADD COLUMN cite_byte_start INTEGER;
ALTER TABLE nodes ADD COLUMN cite_byte_end INTEGER;    -- exclusive
ALTER TABLE nodes ADD COLUMN cite_line_start INTEGER;  -- 1-based, inclusive
ALTER TABLE nodes ADD COLUMN cite_line_end INTEGER;    -- 1-based, inclusive

ALTER TABLE edges ADD COLUMN cite_version INTEGER REFERENCES source_versions(id);
ALTER TABLE edges ADD COLUMN cite_byte_start INTEGER;
ALTER TABLE edges ADD COLUMN cite_byte_end INTEGER;
ALTER TABLE edges ADD COLUMN cite_line_start INTEGER;
ALTER TABLE edges ADD COLUMN cite_line_end INTEGER;
