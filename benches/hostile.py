#!/usr/bin/env python3
"""Hostile requests, files and faults against the release daemon: what each one costs.

For every case the daemon's peak resident memory is reset first (`/proc/PID/clear_refs`, 5) and
read after (VmHWM), so each figure is that case's own peak. After each case the daemon must
answer `daemon.status` within a second. Prints one line per case: what was done, what the daemon
answered (an error kind is fine), how long that took, the peak RSS, and whether it stayed up.

  requests  a prefix bomb (5,000 and 200,000 `a*` terms), a 1 MB title search, `ingest.path` and
            `workflow.run` of /dev/zero, 16 `ingest.path` of a FIFO at once, 64 idle connections
            and a 65th client, an LLM server sending an endless header
  files     a FIFO, a device node (root only), 15 MiB of headings / tags / fields / links,
            3.7 MB of headings, a symlinked folder leaving the root; each beside a good note
  faults    a truncated `.term` (daemon stopped), garbled `.store` files (daemon running), a
            full disk then space freed (data dir on a small tmpfs, `unshare -Urm`): seconds until
            search answers again with no user action
  load      200 clients connected at once, each then asking `search.query`, while obsidian-hub
            is ingested: slowest answer or refusal, answers over 1 s, hangs

  usage: benches/hostile.py [--brain BIN] [--only requests,files,faults,load]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from brain_rpc import Rpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELP = os.path.join(ROOT, "../shared/data/vaults/obsidian-help")
HUB = os.path.join(ROOT, "../shared/data/vaults/obsidian-hub")
MIB = 1024 * 1024


def outcome(msg):
    if "error" in msg:
        data = msg["error"].get("data") or {}
        return "error " + str(data.get("kind", msg["error"].get("code")))
    return "ok"


class Daemon:
    def __init__(self, brain, work, env=None, wrap=None):
        self.args = (brain, work, env, wrap)
        self.start(brain, work, env, wrap)

    def start(self, brain, work, env, wrap):
        self.work = work
        self.data = os.path.join(work, "data")
        self.sock = os.path.join(work, "brain.sock")
        os.makedirs(self.data, exist_ok=True)
        e = dict(os.environ)
        for k in ("BRAIN_CONFIG", "XDG_RUNTIME_DIR", "BRAIN_LLM_URL"):
            e.pop(k, None)
        e.update(BRAIN_DATA_DIR=self.data, BRAIN_SOCKET=self.sock, BRAIN_LOG="warn",
                 XDG_CONFIG_HOME=os.path.join(work, "no-config"))
        e.update(env or {})
        cmd = (wrap or []) + [brain, "daemon"]
        self.log = open(os.path.join(work, "daemon.log"), "ab")
        self.proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=self.log)
        self.wait_ready()

    def wait_ready(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                sys.exit(f"daemon exited with {self.proc.returncode}; see {self.log.name}")
            try:
                Rpc(self.sock, 1).call("daemon.status")
                return
            except (OSError, ConnectionError, ValueError):
                time.sleep(0.05)
        sys.exit("daemon not ready")

    def call(self, method, params=None, timeout=120):
        r = Rpc(self.sock, timeout)
        try:
            return r.call(method, params)
        finally:
            r.close()

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self):
        """Answers daemon.status within a second."""
        try:
            t = time.monotonic()
            Rpc(self.sock, 1).call("daemon.status")
            return time.monotonic() - t < 1.0
        except (OSError, ConnectionError, ValueError):
            return False

    def restart_if_down(self):
        """A case that took the daemon down is reported; the next case gets a new one."""
        if not self.alive():
            self.proc.kill()
            self.proc.wait()
            if os.path.exists(self.sock):
                os.remove(self.sock)
            self.start(*self.args)

    def idle(self, timeout=600):
        end, calm = time.monotonic() + timeout, 0
        while calm < 3 and time.monotonic() < end:
            w = self.call("daemon.status")["result"]["watcher"]
            calm = calm + 1 if w["queue_depth"] == 0 and not w["busy"] else 0
            time.sleep(0.1)

    def stop(self):
        try:
            self.call("daemon.shutdown", timeout=5)
        except (OSError, ConnectionError, ValueError):
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def row(name, answer, secs, peak, up):
    print(f"  {name:<44} {answer:<28} {secs * 1000:>9.1f} ms {peak:>8.1f} MiB  {'up' if up else 'DOWN'}",
          flush=True)


def measure(d, name, action):
    d.reset_peak()
    t = time.monotonic()
    try:
        answer = action()
    except Exception as e:  # a hang or a dropped connection is a result here
        answer = f"{type(e).__name__}: {e}"[:28]
    secs = time.monotonic() - t
    up = d.alive()
    row(name, answer, secs, d.peak_mib() if d.proc.poll() is None else float("nan"), up)
    d.restart_if_down()


def requests_cases(brain, work):
    print("requests (obsidian-help watched)")
    d = Daemon(brain, work)
    d.call("watch.add", {"path": os.path.realpath(HELP)})
    d.idle()
    for n in (5000, 200000):
        q = " ".join(["a*"] * n)
        measure(d, f"search.query {n} prefix terms ({len(q) // 1024} KiB)",
                lambda: outcome(d.call("search.query", {"query": q, "mode": "bm25"})))
    measure(d, "node.search_title 1 MB",
            lambda: outcome(d.call("node.search_title", {"query": "x" * MIB})))
    measure(d, "ingest.path /dev/zero",
            lambda: outcome(d.call("ingest.path", {"path": "/dev/zero"})))
    measure(d, "workflow.run path /dev/zero",
            lambda: outcome(d.call("workflow.run", {"path": "/dev/zero"})))
    fifo = os.path.join(work, "fifo.md")
    os.mkfifo(fifo)

    def sixteen():
        out = []

        def one():
            try:
                out.append(outcome(d.call("ingest.path", {"path": fifo}, timeout=30)))
            except (OSError, ConnectionError, ValueError) as e:
                out.append(type(e).__name__)
        ts = [threading.Thread(target=one) for _ in range(16)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return ",".join(sorted(set(out)))
    measure(d, "16 x ingest.path of a FIFO at once", sixteen)

    def idle_cap():
        idle = []
        try:
            for _ in range(64):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(d.sock)
                idle.append(s)
            return outcome(Rpc(d.sock, 10).call("daemon.status")) + " (65th)"
        finally:
            for s in idle:
                s.close()
    measure(d, "64 idle connections, then a 65th client", idle_cap)
    d.stop()

    # An LLM server that never ends its header.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                c.recv(65536)
                c.sendall(b"HTTP/1.1 200 OK\r\n")
                line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
                for _ in range(600 * MIB // len(line)):
                    c.sendall(line)
            except OSError:
                pass
            finally:
                c.close()
    threading.Thread(target=serve, daemon=True).start()
    d = Daemon(brain, work + "-llm", env={"BRAIN_LLM_URL": f"http://127.0.0.1:{port}/v1"})
    doc = {"version": "brain/1", "name": "header-bomb", "steps": [
        {"id": "LLM_x", "in": {"prompt": "hello"}, "next": "Stop_end"}, {"id": "Stop_end"}]}

    def llm():
        r = d.call("workflow.run", {"definition": doc})
        if "error" in r:
            return outcome(r)
        run = r["result"]["run_id"]
        end = time.monotonic() + 120
        while time.monotonic() < end:
            s = d.call("workflow.get", {"run_id": run})["result"]
            if s.get("status") not in ("running", "pending"):
                return f"run {s.get('status')}: {json.dumps(s.get('error'))}"[:28]
            time.sleep(0.1)
        return "run still running"
    measure(d, "LLM server with a 600 MB header", llm)
    d.stop()
    srv.close()


def files_cases(brain, work):
    print("files (each beside a good note, in a watched folder of a daemon of its own)")
    outside = os.path.join(work, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.md"), "w") as f:
        f.write("the outsider secret\n")

    def lines(fmt, size):
        out, i, n = [], 0, 0
        while n < size:
            s = fmt.format(i=i)
            out.append(s)
            n += len(s)
            i += 1
        return "".join(out)

    cases = [
        ("a FIFO x.md", lambda p: os.mkfifo(p)),
        ("a device node zero.md (c 1 5)",
         lambda p: os.mknod(p, 0o600 | 0o020000, os.makedev(1, 5)) if os.geteuid() == 0 else None),
        ("15 MiB of '# H<i>' lines", lambda p: open(p, "w").write(lines("# H{i}\n", 15 * MIB))),
        ("15 MiB of '#t<i>' tags", lambda p: open(p, "w").write(lines("#t{i} ", 15 * MIB))),
        ("15 MiB of 'k<i>:: v<i>' fields", lambda p: open(p, "w").write(lines("k{i}:: v{i}\n", 15 * MIB))),
        ("15 MiB of '[[note<i>]]' links", lambda p: open(p, "w").write(lines("[[note{i}]] ", 15 * MIB))),
        ("3.7 MB of headings", lambda p: open(p, "w").write(lines("## Heading {i}\n", 3_700_000))),
        ("a symlinked folder leaving the root", lambda p: os.symlink(outside, p[:-3])),
    ]
    for i, (name, make) in enumerate(cases):
        # A daemon per case: what one file took is not hidden by what the last one left behind.
        d = Daemon(brain, os.path.join(work, f"case{i}"))
        vault = os.path.join(d.work, "vault")
        os.makedirs(vault)
        d.call("watch.add", {"path": vault})
        d.idle()
        good = os.path.join(vault, f"good{i}.md")

        def act():
            make(os.path.join(vault, f"case{i}.md"))
            with open(good, "w") as f:
                f.write(f"good note number{i}\n")
            time.sleep(0.3)
            d.idle()
            hits = d.call("search.query", {"query": f"number{i}", "mode": "bm25"})
            ok = "error" not in hits and any(h["path"] == good for h in hits["result"]["hits"])
            return "good note found" if ok else "good note MISSING"
        measure(d, name, act)
        if "symlink" in name:
            hits = d.call("search.query", {"query": "outsider", "mode": "bm25"})["result"]["hits"]
            print(f"  outside-dir/secret.md searchable: {'YES' if hits else 'no'}")
        d.stop()


def wait_search(d, word, path, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            r = d.call("search.query", {"query": word, "mode": "bm25"}, timeout=5)
            if "result" in r and any(h["path"] == path for h in r["result"]["hits"]):
                return True
        except (OSError, ConnectionError, ValueError):
            pass
        time.sleep(0.1)
    return False


def faults_cases(brain, work):
    print("faults (seconds until search answers again with no user action)")
    vault = os.path.join(work, "vault")
    shutil.copytree(HELP, vault)
    vault = os.path.realpath(vault)
    probe = os.path.join(vault, "zz-probe.md")
    with open(probe, "w") as f:
        f.write("the wombat probe note\n")
    d = Daemon(brain, work)
    d.call("watch.add", {"path": vault})
    d.idle()
    d.stop()
    index = os.path.join(d.data, "index")
    terms = [f for f in os.listdir(index) if f.endswith(".term")]
    for t in terms:
        with open(os.path.join(index, t), "r+b") as f:
            f.truncate(os.path.getsize(f.name) // 2)
    t = time.monotonic()
    d = Daemon(brain, work)
    ok = wait_search(d, "wombat", probe)
    row("truncated .term, daemon restarted", "searchable" if ok else "NOT searchable",
        time.monotonic() - t, d.peak_mib(), d.alive())
    stores = [f for f in os.listdir(index) if f.endswith(".store") or f.endswith(".idx")]
    for s in stores:
        p = os.path.join(index, s)
        with open(p, "r+b") as f:
            n = os.path.getsize(p)
            f.seek(n // 3)
            f.write(os.urandom(min(4096, max(1, n // 3))))
    t = time.monotonic()
    ok = wait_search(d, "wombat", probe)
    row("garbled .store/.idx, daemon running", "searchable" if ok else "NOT searchable",
        time.monotonic() - t, d.peak_mib(), d.alive())
    d.stop()

    # Full disk: the data dir on a 24 MiB tmpfs in a mount namespace of the daemon's own.
    work2 = work + "-disk"
    os.makedirs(os.path.join(work2, "data"))
    wrap = ["unshare", "-Urm", "sh", "-c",
            'mount -t tmpfs -o size=24m tmpfs "$BRAIN_DATA_DIR" && exec "$0" "$@"']
    d = Daemon(brain, work2, wrap=wrap)
    inside = f"/proc/{d.proc.pid}/root" + d.data
    st = os.statvfs(inside)
    filler = os.path.join(inside, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 512 * 1024))
    d.call("watch.add", {"path": vault})
    end = time.monotonic() + 60
    state = None
    while time.monotonic() < end:
        state = d.call("daemon.status")["result"]["watcher"]["state"]
        if state == "retrying":
            break
        time.sleep(0.2)
    os.remove(filler)
    t = time.monotonic()
    ok = wait_search(d, "wombat", probe, timeout=300)
    row(f"full disk (state {state}), then space freed", "searchable" if ok else "NOT searchable",
        time.monotonic() - t, d.peak_mib(), d.alive())
    d.stop()


def load_cases(brain, work):
    print("load (200 clients connected at once, each asking search.query while obsidian-hub is ingested)")
    d = Daemon(brain, work)
    d.call("watch.add", {"path": os.path.realpath(HUB)})
    lat, errors, lock = [], {}, threading.Lock()
    # All 200 connect first, then all ask at once: 64 are served, the rest must be refused.
    together = threading.Barrier(200)

    def client():
        try:
            rpc = Rpc(d.sock, 10)
        except OSError as e:
            rpc = e
        together.wait()
        t = time.monotonic()
        try:
            if isinstance(rpc, OSError):
                raise rpc
            r = rpc.call("search.query", {"query": "obsidian plugin", "mode": "bm25"})
            key = outcome(r)
        except socket.timeout:
            key = "hang (10 s)"
        except (OSError, ConnectionError, ValueError) as e:
            key = type(e).__name__
        with lock:
            lat.append(time.monotonic() - t)
            errors[key] = errors.get(key, 0) + 1
    d.reset_peak()
    ts = [threading.Thread(target=client) for _ in range(200)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    lat.sort()
    print(f"  slowest {lat[-1] * 1000:.0f} ms, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
          f"over 1 s: {sum(1 for x in lat if x > 1)}, answers: {errors}, peak {d.peak_mib():.0f} MiB, "
          f"{'up' if d.alive() else 'DOWN'}")
    d.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brain", default=os.path.join(ROOT, "target/release/brain"))
    ap.add_argument("--only", default="requests,files,faults,load")
    a = ap.parse_args()
    brain = os.path.realpath(a.brain)
    if not os.access(brain, os.X_OK):
        sys.exit(f"no brain binary at {brain} (cargo build --release --locked)")
    for v in (HELP, HUB):
        if not os.path.isdir(v):
            sys.exit(f"no folder at {os.path.realpath(v)}; this bench needs the shared vaults")
    base = tempfile.mkdtemp(prefix="brain-hostile")
    try:
        print(f"  {'case':<44} {'answer':<28} {'time':>12} {'peak RSS':>12}")
        for part in a.only.split(","):
            {"requests": requests_cases, "files": files_cases, "faults": faults_cases,
             "load": load_cases}[part](brain, os.path.join(base, part))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
