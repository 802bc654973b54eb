-- 0002: lookup tables for Obsidian-style link resolution.
--
-- Resolving `[[Name]]` needs "which current files can be called Name" (by file name, by path,
-- by alias) and, when that set changes, "which notes link by Name" so they can be re-resolved.
-- Both are derived from the current graph and rewritten with each file's ingest.

CREATE TABLE note_names (
    root_id  INTEGER NOT NULL REFERENCES roots(id),
    name     TEXT NOT NULL,      -- lowercased: file stem, vault path without .md, or alias
    how      TEXT NOT NULL CHECK (how IN ('stem', 'path', 'alias')),
    node_id  TEXT NOT NULL REFERENCES nodes(id),
    depth    INTEGER NOT NULL,   -- folder depth below the root: closest to the root wins
    rel_path TEXT NOT NULL
) STRICT;
CREATE INDEX note_names_lookup ON note_names(root_id, name);
CREATE INDEX note_names_node ON note_names(node_id);

CREATE TABLE link_refs (
    root_id     INTEGER NOT NULL REFERENCES roots(id),
    name        TEXT NOT NULL,   -- the lowercased names the link could resolve by
    src_node_id TEXT NOT NULL REFERENCES nodes(id)
) STRICT;
CREATE INDEX link_refs_lookup ON link_refs(root_id, name);
CREATE INDEX link_refs_src ON link_refs(src_node_id);
