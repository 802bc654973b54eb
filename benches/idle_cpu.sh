#!/usr/bin/env bash
# CPU of the release daemon while idle with both real vaults watched. Starts it on a throwaway
# data dir and socket, watches ../shared/data/vaults/obsidian-help and obsidian-hub, waits for the
# initial ingest to finish (worker queue empty and not busy), then leaves it alone for SECS
# seconds and prints the CPU it used (utime+stime from /proc/PID/stat), the wakeups of each of
# its threads (context switches), and VmRSS / VmHWM. The vaults are watched where they are, so a
# process that opens their files meanwhile (the watcher is told of every open) shows up here;
# COPY=1 watches copies of them in the temp dir instead, out of other processes' way.
#   usage: [COPY=1] benches/idle_cpu.sh [SECS] [BRAIN_BINARY]   (default 60, target/release/brain)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
brain=$(realpath "${2:-target/release/brain}")
[ -x "$brain" ] || { echo "no brain binary at $brain (cargo build --release --locked)" >&2; exit 1; }
vaults=()
for v in ../shared/data/vaults/obsidian-help ../shared/data/vaults/obsidian-hub; do
    [ -d "$v" ] || { echo "no folder at $(realpath -m "$v"); this bench needs both vaults" >&2; exit 1; }
    vaults+=("$(realpath "$v")")
done
work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
if [ "${COPY:-0}" = 1 ]; then
    for i in "${!vaults[@]}"; do
        cp -r "${vaults[$i]}" "$work/$(basename "${vaults[$i]}")"
        vaults[$i]=$work/$(basename "${vaults[$i]}")
    done
fi
export BRAIN_DATA_DIR=$work/data BRAIN_SOCKET=$work/brain.sock BRAIN_LOG=warn
unset BRAIN_CONFIG
"$brain" daemon & pid=$!
until "$brain" status >/dev/null 2>&1; do sleep 0.1; done
start=$(date +%s.%N)
for v in "${vaults[@]}"; do "$brain" watch add "$v" >/dev/null; done

# Idle once the worker has had nothing queued and nothing running for 3 polls in a row.
calm=0 polls=0
while [ $calm -lt 3 ]; do
    sleep 1
    polls=$((polls + 1))
    [ $polls -lt 1800 ] || { echo "the initial ingest did not finish in 30 min" >&2; exit 1; }
    state=$("$brain" status --json | python3 -c '
import json, sys
w = json.load(sys.stdin)["watcher"]
print("idle" if w["queue_depth"] == 0 and not w["busy"] else "busy", w["state"], w["queue_depth"])')
    case $state in idle*) calm=$((calm + 1)) ;; *) calm=0 ;; esac
done
ingest_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
"$brain" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(f"ingested in about {float(sys.argv[1]):.0f} s:", "sources", s["counts"]["sources"],
      "notes", s["counts"]["nodes"].get("note"), "watcher", s["watcher"]["state"],
      "roots", len(s["watcher"]["roots"]))' "$ingest_s"

# Per thread: name, utime+stime ticks, voluntary+involuntary context switches.
threads() {
    for t in /proc/$pid/task/*; do
        [ -r "$t/stat" ] || continue
        ticks=$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')
        cs=$(awk '/ctxt_switches/ {n += $2} END {print n}' "$t/status")
        echo "${t##*/} $(cat "$t/comm" | tr ' ' '_') $ticks $cs"
    done
}
proc_ticks() { sed 's/.*) //' /proc/$pid/stat | awk '{print $12 + $13}'; }

before_ticks=$(proc_ticks); threads >"$work/before"
sleep "$secs"
after_ticks=$(proc_ticks); threads >"$work/after"

hz=$(getconf CLK_TCK)
ticks=$((after_ticks - before_ticks))
awk -v t="$ticks" -v hz="$hz" -v s="$secs" \
    'BEGIN {printf "idle %d s: %d ticks (CLK_TCK %d) = %.2f %% CPU\n", s, t, hz, 100 * t / hz / s}'
echo "wakeups per thread over the ${secs} s (context switches, ticks):"
awk 'NR == FNR {t[$1] = $3; c[$1] = $4; next}
     {printf "  %-16s %6d switches %4d ticks\n", $2, $4 - c[$1], $3 - t[$1]}' "$work/before" "$work/after"
awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB\n", $1, $2 / 1024}' /proc/$pid/status
"$brain" stop >/dev/null
wait $pid 2>/dev/null || true
