-- 0009: finding retired chunk text past its retention without reading every node.
--
-- The text of a chunk retired longer ago than `[store] retired_text_days` is set NULL by the
-- daemon's housekeeping (its row and citation stay). That runs at every start and hourly after
-- syncs; without this index each run would scan the whole nodes table. Only retired chunks
-- that still have text are in it, so it stays the size of the history not yet purged.
CREATE INDEX nodes_retired_text ON nodes(valid_to)
    WHERE kind = 'chunk' AND valid_to IS NOT NULL AND content IS NOT NULL;
