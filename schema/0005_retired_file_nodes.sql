-- 0005: finding the retired node of a file by its key. A file that comes back (moved by
-- something that deletes first and creates later, seen in two syncs; or ignored for a while,
-- then not) gets its old note id back instead of a new one, and looking for it must
-- not scan every node. Only retired note and file nodes are in this index.

CREATE INDEX nodes_retired_files ON nodes(key, valid_to)
    WHERE valid_to IS NOT NULL AND kind IN ('note', 'file');
