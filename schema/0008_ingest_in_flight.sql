-- 0008: files being ingested when the daemon died are retried once, then quarantined.
--
-- A file that makes the daemon crash while it is parsed or written (a parser bug, memory the
-- kernel will not give) would otherwise be ingested again at every start and crash it again:
-- a crash loop, with the files beside it never indexed. Before a write batch is parsed, its
-- files are recorded here in one statement, committed before the work; the batch's own
-- transaction deletes them. A row found at the next ingest means the file was in flight when
-- the process died: it is retried alone, and a file found here after its retry is recorded
-- `failed` with reason `ingest_aborted` and not read again until it changes.
CREATE TABLE ingest_in_flight (
    source_id  INTEGER PRIMARY KEY,  -- sources.id; no foreign key, as the batch writes without checks
    attempts   INTEGER NOT NULL,     -- ingests of this file begun and never finished, this one included
    started_at TEXT NOT NULL
) STRICT;
