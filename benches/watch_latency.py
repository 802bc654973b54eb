#!/usr/bin/env python3
"""Change on disk -> visible in node.get, through the watcher of the release daemon.

Starts the daemon on a throwaway data dir and socket, copies a vault to a temp folder, watches
it, waits for the initial ingest, then edits one note N times per mode and polls node.get on one
socket connection (every ~2 ms) until the new version is in the graph. The proof that it is: the
note's provenance cites a byte range ending at the new file size, with a content hash it has not
had before (each edit appends a unique word, so every version is longer than the last).

Modes: `inplace` rewrites the file where it is; `atomic` writes `.NAME.tmp` beside it and
renames it over the original (vim, many editors). Prints p50, p95 and max per mode, and the
daemon's debounce (a compile-time constant, read from src/ingest/watch.rs).

  usage: benches/watch_latency.py [--brain BIN] [--vault DIR] [--note REL] [--edits N]
                                  [--modes inplace,atomic] [--gap MS]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from brain_rpc import connect_when_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def debounce_ms():
    try:
        src = open(os.path.join(ROOT, "src/ingest/watch.rs")).read()
        m = re.search(r"DEBOUNCE: Duration = Duration::from_millis\((\d+)\)", src)
        return f"{m.group(1)} ms" if m else "unknown"
    except OSError:
        return "unknown"


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def wait_idle(rpc, timeout=600):
    """Until the worker has nothing queued and is not busy, several times in a row."""
    deadline, calm = time.monotonic() + timeout, 0
    while calm < 3:
        if time.monotonic() > deadline:
            sys.exit("the initial ingest did not finish in time")
        w = rpc.call("daemon.status")["result"]["watcher"]
        calm = calm + 1 if w["queue_depth"] == 0 and not w["busy"] else 0
        time.sleep(0.2)


def note_version(rpc, path):
    """(byte_end of the whole-file citation, content_hash, node id) of the note, or None."""
    r = rpc.call("node.get", {"path": path}).get("result")
    if not r:
        return None
    ends = [(p["bytes"][1], p["content_hash"], r["id"]) for p in r["provenance"] if p.get("bytes")]
    return max(ends) if ends else None


def run_mode(rpc, note, mode, edits, gap, seen_hashes, node_id):
    lat, new_ids = [], 0
    # Read once: reading the note between edits would itself be seen by the watcher (open).
    with open(note, "rb") as f:
        body = f.read()
    if not body.endswith(b"\n"):
        body += b"\n"
    for i in range(edits):
        body += f"benchword{mode}{i}x{time.time_ns()}\n".encode()
        # The clock starts when the save starts: for an atomic save that is the temp file.
        t0 = time.perf_counter()
        if mode == "atomic":
            tmp = os.path.join(os.path.dirname(note), "." + os.path.basename(note) + ".tmp")
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, note)
        else:
            with open(note, "wb") as f:
                f.write(body)
        size = len(body)
        while True:
            v = note_version(rpc, note)
            if v and v[0] == size and v[1] not in seen_hashes:
                lat.append((time.perf_counter() - t0) * 1000)
                seen_hashes.add(v[1])
                new_ids += v[2] != node_id
                break
            if time.perf_counter() - t0 > 30:
                sys.exit(f"{mode} edit {i} not visible after 30 s (last seen {v})")
            time.sleep(0.002)
        time.sleep(gap / 1000)
    return lat, new_ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brain", default=os.path.join(ROOT, "target/release/brain"))
    ap.add_argument("--vault", default=os.path.join(ROOT, "fixtures/vault"))
    ap.add_argument("--note", default="Ideas.md", help="note to edit, relative to the vault")
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--modes", default="inplace,atomic")
    ap.add_argument("--gap", type=float, default=300, help="pause between edits, ms")
    a = ap.parse_args()
    if not os.access(a.brain, os.X_OK):
        sys.exit(f"no brain binary at {a.brain} (cargo build --release --locked)")
    if not os.path.isdir(a.vault):
        sys.exit(f"no folder at {a.vault}")

    work = tempfile.mkdtemp(prefix="brain-latency-")
    vault = os.path.realpath(os.path.join(work, "vault"))
    shutil.copytree(a.vault, vault, symlinks=True)
    note = os.path.join(vault, a.note)
    if not os.path.isfile(note):
        sys.exit(f"no note {a.note} in {a.vault}")
    sock = os.path.join(work, "brain.sock")
    env = dict(os.environ, BRAIN_DATA_DIR=os.path.join(work, "data"), BRAIN_SOCKET=sock,
               BRAIN_LOG="warn")
    env.pop("BRAIN_CONFIG", None)
    daemon = subprocess.Popen([a.brain, "daemon"], env=env)
    try:
        rpc = connect_when_up(sock, daemon)
        res = rpc.call("watch.add", {"path": vault})
        if "error" in res:
            sys.exit(f"watch.add failed: {res['error']}")
        wait_idle(rpc)
        first = note_version(rpc, note)
        if not first:
            sys.exit(f"{note} did not become a note with a byte-ranged citation")
        seen = {first[1]}
        print(f"daemon {a.brain} (pid {daemon.pid}), debounce {debounce_ms()}, "
              f"{a.edits} edits per mode of {a.note} in a copy of {a.vault}, {a.gap:.0f} ms apart")
        for mode in a.modes.split(","):
            lat, new_ids = run_mode(rpc, note, mode, a.edits, a.gap, seen, first[2])
            print(f"{mode:8}: p50 {pct(lat, 50):6.1f} ms  p95 {pct(lat, 95):6.1f} ms  "
                  f"max {max(lat):6.1f} ms  min {min(lat):6.1f} ms  (n={len(lat)})"
                  + (f"  NOTE ID CHANGED in {new_ids} edits" if new_ids else ""))
        rpc.call("daemon.shutdown")
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
