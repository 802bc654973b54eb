#!/usr/bin/env bash
# Cold ingest of a folder by the release daemon, against a SQLite FTS5-only baseline over the
# same Markdown files, in the same run. Prints files/s, MB/s and peak RSS for both, and a floor:
# the graph rows the daemon wrote, copied by SQLite alone into an empty store with the same
# schema, triggers and foreign keys in one transaction (no parsing, no lookups, no index): what
# storing this graph costs before any of brain's own work. And a lean floor: the same graph
# (nodes, edges, span citations, link names) in the leanest layout that can still serve its
# queries (integer keys and references, kinds and types as small integers, no per-row
# timestamps or owner, no foreign keys or triggers, only the indexes lookups and re-ingest
# need), copied the same way: what any layout of this graph costs SQLite.
#   usage: benches/ingest_vs_fts5.sh [FOLDER]   (default ../shared/data/vaults/obsidian-hub)
set -euo pipefail
cd "$(dirname "$0")/.."
vault=$(realpath "${1:-../shared/data/vaults/obsidian-hub}")
[ -d "$vault" ] || { echo "no folder at $vault" >&2; exit 1; }
cargo build --release --locked --quiet
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
export BRAIN_DATA_DIR=$work/data BRAIN_SOCKET=$work/brain.sock BRAIN_LOG=warn
target/release/brain daemon & pid=$!
until target/release/brain status >/dev/null 2>&1; do sleep 0.1; done
report=$(target/release/brain ingest "$vault" --json | tail -1)
rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
target/release/brain stop >/dev/null
wait $pid 2>/dev/null || true
python3 - "$vault" "$report" "$rss" <<'PY'
import json, os, resource, sqlite3, sys, tempfile, time
vault, report, rss = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
files = [os.path.join(d, f) for d, _, fs in os.walk(vault) for f in fs if f.endswith(".md")]
db = os.path.join(tempfile.mkdtemp(), "fts.db")
t = time.perf_counter()
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE VIRTUAL TABLE docs USING fts5(path, body)")
size = 0
with c:
    for p in files:
        b = open(p, "rb").read(); size += len(b)
        c.execute("INSERT INTO docs VALUES (?, ?)", (p, b.decode("utf-8", "replace")))
dt = time.perf_counter() - t
brain_s = report["elapsed_ms"] / 1000
store = os.path.join(os.environ["BRAIN_DATA_DIR"], "brain.db")
floor_db = os.path.join(tempfile.mkdtemp(), "floor.db")
f = sqlite3.connect(floor_db, isolation_level=None)
f.execute("PRAGMA journal_mode=WAL")
f.execute("PRAGMA synchronous=NORMAL")
f.execute("PRAGMA foreign_keys=ON")
f.execute("ATTACH ? AS o", (store,))
schema = f.execute("SELECT type, sql FROM o.sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'").fetchall()
order = {"table": 0, "index": 1, "trigger": 2, "view": 3}
for _, sql in sorted(schema, key=lambda r: order[r[0]]):
    f.execute(sql)
tables = ["roots", "sources", "source_versions", "nodes", "edges", "provenance", "note_names", "link_refs"]
rows = sum(f.execute(f"SELECT COUNT(*) FROM o.{t}").fetchone()[0] for t in tables)
t = time.perf_counter()
f.execute("BEGIN")
for tbl in tables:
    f.execute(f"INSERT INTO main.{tbl} SELECT * FROM o.{tbl}")
f.execute("COMMIT")
floor_s = time.perf_counter() - t
# The lean layout's rows are made from the store's (untimed), then copied into an empty lean
# store (timed), as for the floor.
lean_src = os.path.join(tempfile.mkdtemp(), "lean-src.db")
s = sqlite3.connect(lean_src, isolation_level=None)
s.execute("ATTACH ? AS o", (store,))
s.executescript("""
CREATE TABLE nid AS SELECT rowid AS n, id FROM o.nodes; CREATE UNIQUE INDEX nid_id ON nid(id);
CREATE TABLE kinds AS SELECT DISTINCT kind FROM o.nodes; CREATE TABLE types AS SELECT DISTINCT type FROM o.edges;
CREATE TABLE nodes AS SELECT n.rowid, (SELECT rowid FROM kinds k WHERE k.kind = n.kind),
  coalesce(replace(n.key, n.parent_id, (SELECT p.n FROM nid p WHERE p.id = n.parent_id)), n.key),
  n.title, n.props, n.content, n.source_id, (SELECT p.n FROM nid p WHERE p.id = n.parent_id),
  n.cite_version, n.cite_byte_start, n.cite_byte_end, n.cite_line_start, n.cite_line_end, NULL
  FROM o.nodes n;
CREATE TABLE edges AS SELECT e.rowid, (SELECT a.n FROM nid a WHERE a.id = e.src_id),
  (SELECT b.n FROM nid b WHERE b.id = e.dst_id), (SELECT rowid FROM types t WHERE t.type = e.type),
  e.key, e.props, e.cite_version, e.cite_byte_start, e.cite_byte_end, e.cite_line_start, e.cite_line_end, NULL
  FROM o.edges e;
CREATE TABLE note_names AS SELECT root_id, name, how, (SELECT n FROM nid WHERE nid.id = node_id), depth, rel_path
  FROM o.note_names;
CREATE TABLE link_refs AS SELECT root_id, name, (SELECT n FROM nid WHERE nid.id = src_node_id) FROM o.link_refs;
CREATE TABLE source_versions AS SELECT id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at
  FROM o.source_versions;
CREATE TABLE sources AS SELECT * FROM o.sources;
""")
s.close()
lean = sqlite3.connect(os.path.join(tempfile.mkdtemp(), "lean.db"), isolation_level=None)
lean.execute("PRAGMA journal_mode=WAL")
lean.execute("PRAGMA synchronous=NORMAL")
lean.executescript("""
CREATE TABLE sources (id INTEGER PRIMARY KEY, root_id INT, rel_path TEXT, file_type TEXT, content_hash TEXT,
  size INT, mtime_ns INT, status TEXT, reason TEXT, diagnostics TEXT, first_seen_at TEXT, last_seen_at TEXT,
  indexed_at TEXT, deleted_at TEXT);
CREATE UNIQUE INDEX sources_live_path ON sources(root_id, rel_path) WHERE deleted_at IS NULL;
CREATE TABLE source_versions (id INTEGER PRIMARY KEY, source_id INT, content_hash TEXT, extractor TEXT,
  extractor_version TEXT, actor_id TEXT, recorded_at TEXT);
CREATE TABLE nodes (id INTEGER PRIMARY KEY, kind INT, key TEXT, title TEXT, props TEXT, content TEXT,
  source_id INT, parent INT, version INT, byte_start INT, byte_end INT, line_start INT, line_end INT, valid_to INT);
CREATE UNIQUE INDEX nodes_key ON nodes(kind, key) WHERE valid_to IS NULL;
CREATE INDEX nodes_parent ON nodes(parent) WHERE valid_to IS NULL AND parent IS NOT NULL;
CREATE TABLE edges (id INTEGER PRIMARY KEY, src INT, dst INT, type INT, key TEXT, props TEXT, version INT,
  byte_start INT, byte_end INT, line_start INT, line_end INT, valid_to INT);
CREATE UNIQUE INDEX edges_current ON edges(src, dst, type, key) WHERE valid_to IS NULL;
CREATE INDEX edges_dst ON edges(dst, type) WHERE valid_to IS NULL;
CREATE TABLE note_names (root_id INT, name TEXT, how TEXT, node INT, depth INT, rel_path TEXT);
CREATE INDEX note_names_lookup ON note_names(root_id, name);
CREATE TABLE link_refs (root_id INT, name TEXT, src INT);
CREATE INDEX link_refs_lookup ON link_refs(root_id, name);
""")
lean.execute("ATTACH ? AS s", (lean_src,))
t = time.perf_counter()
lean.execute("BEGIN")
for tbl in ["sources", "source_versions", "nodes", "edges", "note_names", "link_refs"]:
    lean.execute(f"INSERT INTO main.{tbl} SELECT * FROM s.{tbl}")
lean.execute("COMMIT")
lean_s = time.perf_counter() - t
print(f"brain  : {report['indexed']} files, {report['bytes']/1e6:.1f} MB in {brain_s:.2f} s = "
      f"{report['indexed']/brain_s:.0f} files/s, {report['bytes']/1e6/brain_s:.1f} MB/s, daemon peak RSS {rss/1024:.0f} MiB")
print(f"floor  : {rows} graph rows copied by SQLite alone in {floor_s:.2f} s = "
      f"{report['indexed']/floor_s:.0f} files/s")
print(f"lean   : the same graph in the leanest layout, copied by SQLite alone in {lean_s:.2f} s = "
      f"{report['indexed']/lean_s:.0f} files/s")
print(f"fts5   : {len(files)} files, {size/1e6:.1f} MB in {dt:.2f} s = {len(files)/dt:.0f} files/s, "
      f"{size/1e6/dt:.1f} MB/s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB")
PY
