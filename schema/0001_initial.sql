-- 0001: the whole data model in one go, so later features fill tables instead of reshaping them.
--
-- Conventions: timestamps are RFC 3339 UTC text with milliseconds (`*_at`), which sorts as time;
-- JSON columns hold objects or arrays as text; "current" facts have `valid_to IS NULL`.
-- Identity columns (owner_id, created_by, actor_id, added_by, ...) hold `user:<uuid>` ids.
-- They deliberately carry no foreign key to `users`: older stores and imports may still hold
-- e-mail addresses there until `brain identity migrate` rewrites them, and a foreign key would
-- make such a store unopenable instead of repairable.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id           TEXT PRIMARY KEY,           -- user:<uuid v5 of the normalized email>
    email        TEXT NOT NULL UNIQUE,       -- trimmed and lowercased
    display_name TEXT,
    props        TEXT NOT NULL DEFAULT '{}', -- other fields of the users file (JSON object)
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;

-- Folders the daemon knows about: watched roots, and roots of one-off ingests.
CREATE TABLE roots (
    id         INTEGER PRIMARY KEY,
    path       TEXT NOT NULL UNIQUE,         -- absolute, canonical
    watched    INTEGER NOT NULL DEFAULT 1 CHECK (watched IN (0, 1)),
    added_by   TEXT NOT NULL,
    added_at   TEXT NOT NULL,
    removed_at TEXT
) STRICT;

-- Every file ever seen under a root: the coverage report.
CREATE TABLE sources (
    id            INTEGER PRIMARY KEY,
    root_id       INTEGER NOT NULL REFERENCES roots(id),
    rel_path      TEXT NOT NULL,              -- relative to the root, '/'-separated
    file_type     TEXT NOT NULL,              -- markdown | text | code | html | other
    content_hash  TEXT,                       -- blake3 hex of the bytes last read
    size          INTEGER,
    mtime_ns      INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'indexed', 'skipped', 'failed')),
    reason        TEXT,                       -- skip reason or error message
    diagnostics   TEXT NOT NULL DEFAULT '[]', -- parser diagnostics (JSON array)
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    indexed_at    TEXT,
    deleted_at    TEXT                        -- set when the file is gone; the row stays
) STRICT;
CREATE UNIQUE INDEX sources_live_path ON sources(root_id, rel_path) WHERE deleted_at IS NULL;
CREATE INDEX sources_status ON sources(status) WHERE deleted_at IS NULL;
CREATE INDEX sources_hash ON sources(content_hash);

-- Nodes: notes, sections, chunks, tags, placeholders, property values, and what workflows write.
-- `key` is the natural key within a kind; among current nodes (kind, key) is unique, which is
-- what makes re-ingest and workflow upserts idempotent.
CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    title      TEXT,
    aliases    TEXT NOT NULL DEFAULT '[]',
    props      TEXT NOT NULL DEFAULT '{}',
    content    TEXT,                          -- chunk text; SQLite is the text's ground truth
    source_id  INTEGER REFERENCES sources(id),
    parent_id  TEXT REFERENCES nodes(id),     -- the note a section or chunk belongs to
    owner_id   TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_to   TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX nodes_current_key ON nodes(kind, key) WHERE valid_to IS NULL;
CREATE INDEX nodes_source ON nodes(source_id) WHERE valid_to IS NULL;
CREATE INDEX nodes_parent ON nodes(parent_id) WHERE valid_to IS NULL;
CREATE INDEX nodes_title ON nodes(title COLLATE NOCASE) WHERE valid_to IS NULL;

-- Typed, directed edges. `key` tells apart several edges of one type between the same nodes
-- (two links from one note to another, say); empty when there is only ever one.
CREATE TABLE edges (
    id         TEXT PRIMARY KEY,
    src_id     TEXT NOT NULL REFERENCES nodes(id),
    dst_id     TEXT NOT NULL REFERENCES nodes(id),
    type       TEXT NOT NULL,
    key        TEXT NOT NULL DEFAULT '',
    props      TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_to   TEXT,
    created_at TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX edges_current ON edges(src_id, dst_id, type, key) WHERE valid_to IS NULL;
CREATE INDEX edges_dst ON edges(dst_id, type) WHERE valid_to IS NULL;

-- Where each node or edge came from: a span of a file version, or a workflow step.
CREATE TABLE provenance (
    id                INTEGER PRIMARY KEY,
    node_id           TEXT REFERENCES nodes(id),
    edge_id           TEXT REFERENCES edges(id),
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
CREATE INDEX provenance_node ON provenance(node_id);
CREATE INDEX provenance_edge ON provenance(edge_id);
CREATE INDEX provenance_source ON provenance(source_id);
CREATE INDEX provenance_run ON provenance(run_id) WHERE run_id IS NOT NULL;

-- Dense vectors, derived from chunk text. One row per chunk and model.
CREATE TABLE embeddings (
    node_id      TEXT NOT NULL REFERENCES nodes(id),
    model_id     TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,                -- little-endian f32 x dim
    content_hash TEXT NOT NULL,                -- blake3 of the embedded text
    created_at   TEXT NOT NULL,
    PRIMARY KEY (node_id, model_id)
) STRICT;

-- Workflow state lives beside the graph so a step and its graph writes commit together.
CREATE TABLE workflow_definitions (
    hash       TEXT PRIMARY KEY,               -- blake3 of the canonical JSON
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE workflow_runs (
    id              TEXT PRIMARY KEY,
    definition_hash TEXT NOT NULL REFERENCES workflow_definitions(hash),
    status          TEXT NOT NULL CHECK (status IN
                      ('running', 'paused', 'completed', 'completed_partial', 'failed', 'cancelled')),
    params          TEXT NOT NULL DEFAULT '{}',
    vars            TEXT NOT NULL DEFAULT '{}',
    workspace       TEXT NOT NULL,
    dry_run         INTEGER NOT NULL DEFAULT 0,
    trigger         TEXT,                      -- JSON: what started it, when not a person
    actor_id        TEXT NOT NULL,
    error           TEXT,                      -- JSON {kind, message} when failed
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
) STRICT;
CREATE INDEX workflow_runs_status ON workflow_runs(status);

CREATE TABLE workflow_steps (
    run_id      TEXT NOT NULL REFERENCES workflow_runs(id),
    step_key    TEXT NOT NULL,                 -- step id plus loop indices: Set_x[3]
    step_id     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('started', 'done', 'skipped', 'failed')),
    attempt     INTEGER NOT NULL DEFAULT 1,
    output      TEXT,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, step_key)
) STRICT;

CREATE TABLE workflow_waits (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES workflow_runs(id),
    step_key    TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    reason      TEXT,
    preview     TEXT,
    token_hash  TEXT NOT NULL,                 -- blake3 of the token; the token itself is never stored
    status      TEXT NOT NULL CHECK (status IN ('open', 'resumed', 'rejected', 'timed_out', 'cancelled')),
    expires_at  TEXT,
    request_id  TEXT,
    resolution  TEXT,                          -- JSON outcome returned to a repeated request_id
    resolved_by TEXT,
    created_at  TEXT NOT NULL,
    resolved_at TEXT
) STRICT;
CREATE INDEX workflow_waits_open ON workflow_waits(run_id) WHERE status = 'open';

CREATE TABLE workflow_events (
    run_id   TEXT NOT NULL REFERENCES workflow_runs(id),
    seq      INTEGER NOT NULL,
    ts       TEXT NOT NULL,
    type     TEXT NOT NULL,
    step_id  TEXT,
    step_key TEXT,
    payload  TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
) STRICT;

CREATE TABLE workflow_triggers (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    definition_hash TEXT NOT NULL REFERENCES workflow_definitions(hash),
    event           TEXT NOT NULL CHECK (event IN ('file_created', 'file_changed', 'tag_added', 'schedule')),
    pattern         TEXT NOT NULL,             -- glob for file events, tag, or schedule expression
    params          TEXT NOT NULL DEFAULT '{}',
    enabled         INTEGER NOT NULL DEFAULT 1,
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_fired_at   TEXT
) STRICT;
