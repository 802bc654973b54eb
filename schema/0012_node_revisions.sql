-- 0012: a node's earlier versions, so a client can read its history and the graph as of a time.
--
-- A node's title, aliases, props and citation are updated in place; before this, what a note
-- said before an edit was gone. Each row here is one earlier version of a node: the values it
-- held and the time they stopped holding (`valid_to`). The current version is the node row
-- itself; a version's start is the end of the one before it (or the node's `valid_from`), so
-- no row stores both ends. `resumed_at` is set on the last version before a retired node came
-- back (a file moved in two steps): between `valid_to` and `resumed_at` the node did not exist.
--
-- Two triggers fill it, so no writer has to know:
-- * on `nodes`, for every writer whose transaction keeps the triggers on (API writes, workflow
--   steps, a file node coming back);
-- * on `sources`, when a file's content hash or path changes. An ingest writes a file's new
--   facts with the triggers off (`Store::write_bulk`), but it records the file's new hash first,
--   in a transaction with them on; at that moment the note's row still holds the old version.
--
-- No foreign keys: `watch remove --purge` deletes nodes and file versions with the checks off,
-- and a leftover revision of a purged node is never read (every read starts at the node row).

CREATE TABLE node_revisions (
    id              INTEGER PRIMARY KEY,
    node_id         TEXT NOT NULL,
    title           TEXT,
    aliases         TEXT,                    -- NULL when empty, as on nodes
    props           TEXT,                    -- NULL when empty, as on nodes
    rel_path        TEXT,                    -- the file's path then, for a file's node
    cite_version    INTEGER,                 -- source_versions row of the citation then
    cite_byte_start INTEGER,
    cite_byte_end   INTEGER,                 -- exclusive
    cite_line_start INTEGER,
    cite_line_end   INTEGER,
    valid_to        TEXT NOT NULL,           -- when these values stopped holding
    resumed_at      TEXT                     -- when a node retired at valid_to came back
) STRICT;
CREATE INDEX node_revisions_node ON node_revisions(node_id, id);

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
