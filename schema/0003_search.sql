-- The search index (tantivy, on disk beside the store) is derived from SQLite. Every write that
-- changes what a note's chunks look like to search leaves the note's id here, in the same
-- transaction, by trigger; the indexer applies the outbox in order and records in the index's
-- commit payload the last sequence number it reflects. Triggers catch every writer (ingest,
-- workflows, repairs) without each having to remember.
CREATE TABLE search_outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    note_id TEXT NOT NULL
) STRICT;

-- A chunk appears: its note needs reindexing.
CREATE TRIGGER search_node_insert AFTER INSERT ON nodes
WHEN NEW.kind = 'chunk' AND NEW.parent_id IS NOT NULL
BEGIN
    INSERT INTO search_outbox(note_id) VALUES (NEW.parent_id);
END;

-- A chunk retires, or a note's title, aliases, properties, kind or validity change.
CREATE TRIGGER search_node_update AFTER UPDATE OF valid_to, title, aliases, props, kind ON nodes
WHEN NEW.kind IN ('chunk', 'note', 'file')
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT CASE WHEN NEW.kind = 'chunk' THEN NEW.parent_id ELSE NEW.id END
    WHERE NEW.kind <> 'chunk' OR NEW.parent_id IS NOT NULL;
END;

-- A file moves or is touched: path and modification time are indexed.
CREATE TRIGGER search_source_update AFTER UPDATE OF rel_path, mtime_ns ON sources
BEGIN
    INSERT INTO search_outbox(note_id)
    SELECT id FROM nodes WHERE source_id = NEW.id AND kind IN ('note', 'file') AND valid_to IS NULL;
END;

-- Tags are indexed with the note's chunks.
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

-- Embeddings are looked up by model.
CREATE INDEX embeddings_model ON embeddings(model_id);

-- Edges retired by one sync share its timestamp; garbage collection looks them up by it.
CREATE INDEX edges_retired ON edges(valid_to) WHERE valid_to IS NOT NULL;
