#!/usr/bin/env bash
# Workflow engine overhead through the daemon: steps/s of a 1,000-iteration serial loop of Set_,
# steps/s of a parallel loop of Search_, and the time from workflow.run to the first step.
#   usage: benches/workflow_engine.sh            (builds and uses the release binary)
#          BRAIN_BIN=target/debug/brain benches/workflow_engine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BRAIN_BIN:-target/release/brain}
if [ -z "${BRAIN_BIN:-}" ]; then cargo build --release --locked --quiet; fi
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
export BRAIN_DATA_DIR=$work/data BRAIN_SOCKET=$work/brain.sock BRAIN_LOG=warn
"$bin" daemon & pid=$!
until "$bin" status >/dev/null 2>&1; do sleep 0.1; done
"$bin" ingest "$PWD/fixtures/vault" >/dev/null
python3 - "$BRAIN_SOCKET" <<'PY'
import json, socket, statistics, sys, time

sock_path = sys.argv[1]

class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(sock_path)
        self.f = self.s.makefile("rwb")
        self.id = 0
    def send(self, method, params):
        self.id += 1
        self.f.write((json.dumps({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}) + "\n").encode())
        self.f.flush()
        return self.id
    def read(self):
        return json.loads(self.f.readline())
    def call(self, method, params):
        i = self.send(method, params)
        while True:
            m = self.read()
            if m.get("id") == i:
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m["result"]

def run_and_follow(doc):
    """Returns (seconds to answer, seconds to first step_start, seconds to the end, events)."""
    c = Conn()
    t0 = time.perf_counter()
    run_id = c.call("workflow.run", {"definition": doc})["run_id"]
    t_answer = time.perf_counter() - t0
    i = c.send("workflow.events", {"run_id": run_id, "since": 0, "follow": True})
    first_step, events = None, []
    while True:
        m = c.read()
        if m.get("method") == "workflow.event":
            events.append(m["params"])
            if first_step is None and m["params"]["type"] in ("step_start", "loop_start"):
                first_step = time.perf_counter() - t0
            continue
        if m.get("id") == i:
            return t_answer, first_step, time.perf_counter() - t0, events, m["result"]["status"]

def wf(steps, vars=()):
    return {"version": "brain/1", "name": "bench", "registry": {"vars": list(vars)}, "steps": steps}

serial = wf([
    {"id": "Loop_l", "while": "$i < 1000", "maxIterations": 1000, "mode": "serial", "children": ["Set_inc"], "next": "Stop_end"},
    {"id": "Set_inc", "target": "$i", "value": "=$i + 1", "next": "RETURN"},
    {"id": "Stop_end"},
], ["$i(INT) = 0"])
_, _, total, events, status = run_and_follow(serial)
assert status == "completed", status
steps = sum(1 for e in events if e["type"] == "step_done")
print(f"serial loop of Set_: {steps} steps in {total:.2f} s = {steps / total:.0f} steps/s")

items = ",".join(str(i) for i in range(200))
parallel = wf([
    {"id": "Loop_p", "source": f"=[{items}]", "mode": "parallel", "concurrency": 8, "children": ["Search_q"], "next": "Stop_end"},
    {"id": "Search_q", "in": {"query": "note", "k": 10}, "next": "RETURN"},
    {"id": "Stop_end"},
])
_, _, total, events, status = run_and_follow(parallel)
assert status == "completed", status
steps = sum(1 for e in events if e["type"] == "step_done" and e["step_id"] == "Search_q")
print(f"parallel loop of Search_ (concurrency 8): {steps} steps in {total:.2f} s = {steps / total:.0f} steps/s")

tiny = wf([{"id": "Noop_a", "next": "Stop_end"}, {"id": "Stop_end"}])
answers, firsts = [], []
for _ in range(30):
    a, f, _, _, _ = run_and_follow(tiny)
    answers.append(a * 1000)
    firsts.append(f * 1000)
print(f"workflow.run answered: p50 {statistics.median(answers):.1f} ms; first step_start seen by a follower: p50 {statistics.median(firsts):.1f} ms (30 runs)")
PY
"$bin" stop >/dev/null
