#!/usr/bin/env bash
# Cold ingest of a folder by the release daemon, against a SQLite FTS5-only baseline over the
# same Markdown files, in the same run. Prints files/s, MB/s and peak RSS for both, and a floor:
# the graph rows the daemon wrote, copied by SQLite alone into an empty store with the same
# schema, triggers and foreign keys in one transaction (no parsing, no lookups, no index): what
# storing this graph costs before any of brain's own work.
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
print(f"brain  : {report['indexed']} files, {report['bytes']/1e6:.1f} MB in {brain_s:.2f} s = "
      f"{report['indexed']/brain_s:.0f} files/s, {report['bytes']/1e6/brain_s:.1f} MB/s, daemon peak RSS {rss/1024:.0f} MiB")
print(f"floor  : {rows} graph rows copied by SQLite alone in {floor_s:.2f} s = "
      f"{report['indexed']/floor_s:.0f} files/s")
print(f"fts5   : {len(files)} files, {size/1e6:.1f} MB in {dt:.2f} s = {len(files)/dt:.0f} files/s, "
      f"{size/1e6/dt:.1f} MB/s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB")
PY
