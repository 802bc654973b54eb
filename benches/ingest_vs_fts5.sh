#!/usr/bin/env bash
# Cold ingest of a folder by the release daemon, against a SQLite FTS5-only baseline over the
# same Markdown files, in the same run. Prints five figures:
#   1. seconds until the folder is searchable by words (the ingest answered, the text index has
#      caught up with the store: daemon.status search.index_seq == search.outbox_head, the
#      watcher's queue empty), and that as a multiple of FTS5's time;
#   2. the daemon's peak RSS (VmHWM) during that ingest;
#   3. store + WAL + text index bytes after it, as a multiple of the Markdown files' bytes;
#   4. the same bytes after `brain watch remove FOLDER --purge` and `brain compact`, as a
#      percentage of 3;
#   5. the daemon's resident memory (VmRSS) once idle after the ingest: when it has given memory
#      back (daemon.status memory.releases >= 1) or after 10 s of quiet.
# And a floor: the graph rows the daemon wrote, copied by SQLite alone into an empty store with
# the same schema, triggers and foreign keys in one transaction (no parsing, no lookups, no
# index): what storing this graph costs before any of brain's own work. And a lean floor: the
# same graph (nodes, edges, span citations, link names) in the leanest layout that can still
# serve its queries (integer keys and references, kinds and types as small integers, no per-row
# timestamps or owner, no foreign keys or triggers, only the indexes lookups and re-ingest
# need), copied the same way: what any layout of this graph costs SQLite.
#   usage: benches/ingest_vs_fts5.sh [FOLDER] [BIN]
#   (defaults ../shared/data/vaults/obsidian-hub and target/release/brain, built first when BIN
#   is not given)
set -euo pipefail
cd "$(dirname "$0")/.."
vault=$(realpath "${1:-../shared/data/vaults/obsidian-hub}")
[ -d "$vault" ] || { echo "no folder at $vault" >&2; exit 1; }
if [ -n "${2:-}" ]; then
  bin=$(realpath "$2")
else
  cargo build --release --locked --quiet
  bin=$PWD/target/release/brain
fi
[ -x "$bin" ] || { echo "no brain binary at $bin" >&2; exit 1; }
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
# Purging and compacting a large store answer after minutes, not within the daemon's default
# 20 s per request or the CLI's 30 s.
printf '[daemon]\nrequest_timeout_secs = 3600\n' >"$work/config.toml"
export BRAIN_CONFIG=$work/config.toml BRAIN_DATA_DIR=$work/data BRAIN_SOCKET=$work/brain.sock BRAIN_LOG=warn
brain() { "$bin" --timeout 3600 "$@"; }
status() { brain status --json; }
# The ingest is over and searchable: the text index reflects the newest store change and the
# watcher has nothing queued or running.
caught_up() {
  status | jq -e '.search.index_state == "ready" and .search.index_seq == .search.outbox_head
    and .watcher.queue_depth == 0 and (.watcher.busy | not)' >/dev/null
}
wait_caught_up() {
  until caught_up; do kill -0 $pid 2>/dev/null || { echo "the daemon exited" >&2; exit 1; }; sleep "$1"; done
}
# Bytes of the store, its WAL and the text index, as "store wal index".
data_bytes() {
  local d=$work/data
  echo "$(stat -c %s "$d/brain.db") $(stat -c %s "$d/brain.db-wal" 2>/dev/null || echo 0)" \
    "$(find "$d/index" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
}
kib() { awk -v k="$1:" '$1 == k {print $2}' /proc/$pid/status; }
now() { date +%s.%N; }

"$bin" daemon & pid=$!
until "$bin" status >/dev/null 2>&1; do sleep 0.1; done
t0=$(now)
report=$(brain ingest "$vault" --json | tail -1)
wait_caught_up 0.02
searchable=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}')
hwm=$(kib VmHWM)
read -r db wal idx < <(data_bytes)

# 5: idle after the burst, measured before anything else runs.
t1=$(now)
until [ "$(status | jq .memory.releases)" -ge 1 ] \
  || awk -v a="$t1" -v b="$(now)" 'BEGIN {exit !(b - a >= 10)}'; do sleep 0.2; done
idle=$(kib VmRSS) releases=$(status | jq .memory.releases)
waited=$(awk -v a="$t1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')

# 1-3 with the baseline and floors; these read the store before it is purged.
TMPDIR=$work python3 - "$vault" "$report" "$hwm" "$searchable" "$db" "$wal" "$idx" <<'PY'
import json, os, resource, sqlite3, sys, tempfile, time
vault, report, rss, searchable = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
db_b, wal_b, idx_b = map(int, sys.argv[5:8])
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
fts_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
on_disk = lambda: sum(os.path.getsize(db + x) for x in ("", "-wal") if os.path.exists(db + x))
fts_bytes = on_disk()
c.close()
fts_closed = on_disk()
brain_s = searchable
store = os.path.join(os.environ["BRAIN_DATA_DIR"], "brain.db")
floor_db = os.path.join(tempfile.mkdtemp(), "floor.db")
f = sqlite3.connect(floor_db, isolation_level=None)
f.execute("PRAGMA journal_mode=WAL")
f.execute("PRAGMA synchronous=NORMAL")
f.execute("PRAGMA foreign_keys=ON")
f.execute("ATTACH ? AS o", (store,))
schema = f.execute("SELECT type, sql FROM o.sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'").fetchall()
order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
for _, sql in sorted(schema, key=lambda r: order[r[0]]):
    f.execute(sql)
# `edges` is a view over `edge_rows` (schema 0015).
tables = ["roots", "sources", "source_versions", "nodes", "edge_rows", "provenance", "note_names", "link_refs"]
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
CREATE TABLE note_names AS SELECT root_id, name, how, node, depth, rel_path FROM o.note_names;
CREATE TABLE link_refs AS SELECT root_id, name, src FROM o.link_refs;
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
mb = lambda b: f"{b/1e6:.1f} MB"
disk = db_b + wal_b + idx_b
print(f"brain  : {report['indexed']} files, {report['bytes']/1e6:.1f} MB searchable in {brain_s:.2f} s "
      f"(ingest answered in {report['elapsed_ms']/1000:.2f} s) = {report['indexed']/brain_s:.0f} files/s, "
      f"{report['bytes']/1e6/brain_s:.1f} MB/s, {brain_s/dt:.1f}x FTS5; daemon peak RSS {rss/1024:.0f} MiB")
print(f"fts5   : {len(files)} files, {size/1e6:.1f} MB in {dt:.2f} s = {len(files)/dt:.0f} files/s, "
      f"{size/1e6/dt:.1f} MB/s, peak RSS {fts_rss/1024:.0f} MiB, {mb(fts_bytes)} on disk with its WAL = {fts_bytes/size:.1f}x the input, "
      f"{mb(fts_closed)} once closed = {fts_closed/size:.1f}x")
print(f"floor  : {rows} graph rows copied by SQLite alone in {floor_s:.2f} s = "
      f"{report['indexed']/floor_s:.0f} files/s")
print(f"lean   : the same graph in the leanest layout, copied by SQLite alone in {lean_s:.2f} s = "
      f"{report['indexed']/lean_s:.0f} files/s")
print(f"disk   : {mb(disk)} after ingest (store {mb(db_b)} + WAL {mb(wal_b)} + index {mb(idx_b)}) "
      f"= {disk/size:.1f}x the {mb(size)} of Markdown")
PY

echo "idle   : daemon RSS $((idle / 1024)) MiB once idle after the ingest, $waited s after it was searchable" \
  "(memory given back $releases times)"

# 4: purge the folder's facts and text, compact, and let the index catch up with the deletions.
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
before=$((db + wal + idx))
t2=$(now)
if brain watch remove "$vault" --purge >/dev/null && t3=$(now) && brain compact >/dev/null; then
  t4=$(now)
  wait_caught_up 0.1
  read -r db wal idx < <(data_bytes)
  after=$((db + wal + idx))
  awk -v a="$after" -v b="$before" -v s="$db" -v w="$wal" -v i="$idx" 'BEGIN {
    printf "purged : %.1f MB (store %.1f MB + WAL %.1f MB + index %.1f MB) = %.1f%% of after ingest",
      a / 1e6, s / 1e6, w / 1e6, i / 1e6, 100 * a / b }'
  echo "; watch remove --purge $(secs "$t2" "$t3") s, compact $(secs "$t3" "$t4") s"
else
  echo "purged : not measured: watch remove --purge or compact failed"
fi
brain stop >/dev/null
wait $pid 2>/dev/null || true
pid=
