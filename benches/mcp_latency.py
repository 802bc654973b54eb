#!/usr/bin/env python3
"""MCP tool call round trip through `brain mcp` against `search.query` on the socket, same run.

Starts the release daemon on a throwaway data dir and socket, ingests a vault (obsidian-hub by
default), then times N searches (k 10, queries cycled from the vault's note titles) two ways:
`search_notes` through `brain mcp` driven by the Python MCP SDK over stdio, and `search.query`
on one socket connection; then 100 calls of `recent_changes` (limit 20) against `graph.recent`
likewise. Prints p50 and p95 of each, in ms.

Needs the SDK (`.venv-mcp`, made by .ci/run): run it with .venv-mcp/bin/python.

  usage: .venv-mcp/bin/python benches/mcp_latency.py [--brain BIN] [--vault DIR] [--n N]
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

from brain_rpc import connect_when_up
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Calls of the recent-changes tool and method timed: a page of 20 is one sorted scan of the nodes,
# the same work every time, so fewer calls than searches tell its latency.
RECENT_CALLS = 100


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def queries(vault, n):
    titles = []
    for dirpath, _, files in os.walk(vault):
        titles += [f[:-3] for f in files if f.endswith(".md")]
    titles.sort()
    return [titles[i % len(titles)] for i in range(n)]


async def through_mcp(brain, env, qs):
    params = StdioServerParameters(command=brain, args=["mcp"], env=env)
    lat = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()
            await session.call_tool("search_notes", {"query": qs[0], "k": 10})  # warm
            for q in qs:
                t0 = time.perf_counter()
                r = await session.call_tool("search_notes", {"query": q, "k": 10})
                lat.append((time.perf_counter() - t0) * 1000)
                if r.is_error:
                    sys.exit(f"search_notes failed: {r.content}")
            recent = []
            for _ in range(RECENT_CALLS):
                t0 = time.perf_counter()
                r = await session.call_tool("recent_changes", {"limit": 20})
                recent.append((time.perf_counter() - t0) * 1000)
                if r.is_error:
                    sys.exit(f"recent_changes failed: {r.content}")
    return lat, recent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brain", default=os.path.join(ROOT, "target/release/brain"))
    ap.add_argument("--vault", default=os.path.join(ROOT, "../shared/data/vaults/obsidian-hub"))
    ap.add_argument("--n", type=int, default=500)
    a = ap.parse_args()
    if not os.access(a.brain, os.X_OK):
        sys.exit(f"no brain binary at {a.brain} (cargo build --release --locked)")
    if not os.path.isdir(a.vault):
        sys.exit(f"no folder at {a.vault}")
    work = tempfile.mkdtemp(prefix="brain-mcp-bench-")
    vault = os.path.realpath(a.vault)
    sock = os.path.join(work, "brain.sock")
    env = dict(os.environ, BRAIN_DATA_DIR=os.path.join(work, "data"), BRAIN_SOCKET=sock,
               BRAIN_LOG="warn", XDG_CONFIG_HOME=os.path.join(work, "no-config"))
    env.pop("BRAIN_CONFIG", None)
    daemon = subprocess.Popen([a.brain, "daemon"], env=env)
    try:
        rpc = connect_when_up(sock, daemon)
        t0 = time.monotonic()
        res = rpc.call("ingest.path", {"path": vault})
        if "error" in res:
            sys.exit(f"ingest failed: {res['error']}")
        print(f"ingested {vault}: {res['result']['indexed']} files in "
              f"{time.monotonic() - t0:.1f} s")
        qs = queries(vault, a.n)
        mcp, mcp_recent = asyncio.run(through_mcp(a.brain, env, qs))
        sock_lat = []
        for q in qs:
            t0 = time.perf_counter()
            r = rpc.call("search.query", {"query": q, "k": 10})
            sock_lat.append((time.perf_counter() - t0) * 1000)
            if "error" in r:
                sys.exit(f"search.query failed: {r['error']}")
        sock_recent = []
        for _ in range(RECENT_CALLS):
            t0 = time.perf_counter()
            r = rpc.call("graph.recent", {"limit": 20})
            sock_recent.append((time.perf_counter() - t0) * 1000)
            if "error" in r:
                sys.exit(f"graph.recent failed: {r['error']}")
        for name, lat in [("mcp search_notes", mcp), ("socket search.query", sock_lat),
                          ("mcp recent_changes", mcp_recent),
                          ("socket graph.recent", sock_recent)]:
            print(f"{name:<20} n={len(lat)}  p50 {pct(lat, 50):.2f} ms  p95 {pct(lat, 95):.2f} ms")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
