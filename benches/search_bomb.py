#!/usr/bin/env python3
"""Hostile search requests against a real daemon: time to answer and peak RSS for each.

Starts BRAIN (default target/release/brain) on a throwaway data dir and socket, ingests VAULT
(default ../shared/data/vaults/obsidian-help), then sends each request below once on its own
connection and prints: what was sent, its size, the answer (hits or error kind), the wall time
to the answer, and the daemon's peak RSS (VmHWM) before and after. A bench, not a test: the
targets are an answer in < 100 ms and a peak RSS <= 256 MiB.
    usage: benches/search_bomb.py [VAULT] [BRAIN]
"""
import json, os, socket, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
vault = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "../shared/data/vaults/obsidian-help"))
brain = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "target/release/brain"))
if not os.access(brain, os.X_OK):
    sys.exit(f"no brain binary at {brain}")

work = tempfile.mkdtemp()
env = dict(os.environ, BRAIN_DATA_DIR=f"{work}/data", BRAIN_SOCKET=f"{work}/brain.sock",
           BRAIN_LOG="warn", XDG_CONFIG_HOME=f"{work}/no-config")
env.pop("BRAIN_CONFIG", None)
daemon = subprocess.Popen([brain, "daemon"], env=env, stdin=subprocess.DEVNULL)


def call(method, params):
    s = socket.socket(socket.AF_UNIX)
    s.connect(env["BRAIN_SOCKET"])
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    for line in buf.splitlines():
        msg = json.loads(line)
        if msg.get("id") == 1:
            return msg


def hwm():
    with open(f"/proc/{daemon.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024


try:
    deadline = time.time() + 30
    while True:
        try:
            call("daemon.status", {})
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("daemon did not start")
            time.sleep(0.05)
    call("ingest.path", {"path": vault})
    while True:
        st = call("daemon.status", {})["result"]["search"]
        if st["index_state"] == "ready" and st["index_seq"] == st["outbox_head"]:
            break
        time.sleep(0.05)
    requests = [
        ("search.query", "5,000 x `a*` (15 KB)", {"query": " ".join(["a*"] * 5000)}),
        ("search.query", "200,000 x `a*`", {"query": " ".join(["a*"] * 200000)}),
        ("search.query", "8 x `a*` (the prefix limit)", {"query": " ".join(["a*"] * 8)}),
        ("search.query", "128 words (the term limit)", {"query": " ".join(["note"] * 128)}),
        ("search.query", "4 KB single word", {"query": "a" * 4096}),
        ("search.query", "128-word phrase", {"query": '"' + " ".join(["note"] * 128) + '"'}),
        ("search.query", "range over every body term", {"query": "body:[a TO zzzz]"}),
        ("search.query", "8 x `a*`, graph, per chunk, k 200", {"query": " ".join(["a*"] * 8), "graph": True, "group": "chunk", "k": 200}),
        ("search.query", "16 nested parentheses (the limit)", {"query": "(" * 16 + "note" + ")" * 16}),
        ("node.search_title", "1 KB title query (the limit)", {"query": "ab" * 512, "limit": 200}),
        ("node.search_title", "1 MB title query", {"query": "x" * (1 << 20)}),
    ]
    print(f"vault {vault} ({sum(len(f) for _, _, f in os.walk(vault))} files), binary {brain}")
    print(f"{'request':34} {'answer':40} {'ms':>8} {'peak RSS MiB before -> after':>30}")
    for method, what, params in requests:
        before = hwm()
        t = time.perf_counter()
        r = call(method, params)
        ms = (time.perf_counter() - t) * 1000
        after = hwm()
        if "error" in r:
            ans = "error " + r["error"].get("data", {}).get("kind", "?")
        else:
            ans = f"{len(r['result']['hits'])} hits"
        print(f"{what:34} {ans:40} {ms:8.1f} {before:>20} -> {after}")
finally:
    daemon.terminate()
    daemon.wait()
    subprocess.run(["rm", "-rf", work])
