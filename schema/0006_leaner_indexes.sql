-- 0006: indexes hold only the rows their queries can ask for.
--
-- Every lookup by title is among notes and files, every lookup by source or parent names one,
-- and every provenance lookup names a node or an edge. The indexes of 0001 also held the URL,
-- tag and placeholder nodes (a vault with many external links has more URLs than notes) and
-- the NULL half of provenance, and each of those entries cost a B-tree insert per fact
-- written. SQLite uses a partial index when the query's WHERE implies the index's: `x = ?`
-- implies `x IS NOT NULL`, and the title queries name the same kinds.

DROP INDEX nodes_title;
CREATE INDEX nodes_title ON nodes(title COLLATE NOCASE)
    WHERE valid_to IS NULL AND kind IN ('note', 'file');

DROP INDEX nodes_source;
CREATE INDEX nodes_source ON nodes(source_id)
    WHERE valid_to IS NULL AND source_id IS NOT NULL;

DROP INDEX nodes_parent;
CREATE INDEX nodes_parent ON nodes(parent_id)
    WHERE valid_to IS NULL AND parent_id IS NOT NULL;

DROP INDEX provenance_node;
CREATE INDEX provenance_node ON provenance(node_id) WHERE node_id IS NOT NULL;

DROP INDEX provenance_edge;
CREATE INDEX provenance_edge ON provenance(edge_id) WHERE edge_id IS NOT NULL;
