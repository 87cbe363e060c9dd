#!/usr/bin/env bash
# Runs every benchmark scenario of docs/BENCHMARKS.md three times, one after another,
# appending one JSON object per run to $OUT (default: bench-results.jsonl), and prints a
# summary with the median, min and max of every figure. About 8–10 minutes on 2 cores.
# Run it on an otherwise idle machine: figures include the generator's own CPU use.
#
#   scripts/bench_all.sh            # everything
#   scripts/bench_all.sh write      # one group: write | fanout | connections | catchup | client
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sync-bench -p sync-server
B=./target/release/sync-bench
OUT=${OUT:-bench-results.jsonl}
run() { for i in 1 2 3; do echo ">> $* (run $i)"; timeout 300 "$B" "$@" --json "$OUT"; done; }
case "${1:-all}" in
  write|all)
    run write --spawn sqlite --writers 100 --seconds 8 --warmup 2
    run write --spawn postgres --writers 100 --seconds 8 --warmup 2
    run write --spawn postgres --servers 2 --writers 100 --seconds 8 --warmup 2
    run write --spawn sqlite --hot --writers 100 --seconds 8 --warmup 2
    run write --spawn postgres --hot --writers 100 --seconds 8 --warmup 2
    run write --spawn sqlite --hot --writers 10 --seconds 8 --warmup 2
    run write --spawn postgres --hot --writers 10 --seconds 8 --warmup 2
    ;;&
  fanout|all)
    run fanout --spawn sqlite --subscribers 10000 --rate 30 --seconds 10 --warmup 2
    run fanout --spawn sqlite --subscribers 1000 --rate 300 --seconds 10 --warmup 2
    ;;&
  connections|all)
    run connections --spawn sqlite --connections 19000
    ;;&
  catchup|all)
    run catchup --spawn sqlite --documents 100000
    run catchup --spawn postgres --documents 100000
    ;;&
  client|all)
    run offline --spawn sqlite --documents 1000 --edits 4
    run client-write --writes 20000 --documents 200
    ;;
  write|fanout|connections|catchup) ;;
  *) echo "unknown group: $1" >&2; exit 2 ;;
esac

python3 - "$OUT" <<'PY'
import collections, json, statistics, sys
groups = collections.OrderedDict()
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        key = (r["scenario"], r["backend"], json.dumps(r["parameters"], sort_keys=True))
        # The host's speed at the start of the run (sync-bench's calibrate.rs) is listed
        # with the figures: a slow hour shows as higher times there.
        groups.setdefault(key, []).append({**r["figures"], "host_speed": r.get("host_speed") or {}})
def flat(figures, prefix=""):
    out = {}
    for k, v in figures.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + k + "."))
        elif isinstance(v, (int, float)):
            out[prefix + k] = v
    return out
for (scenario, backend, params), runs in groups.items():
    print(f"\n## {scenario} [{backend}] {params}  runs={len(runs)}")
    runs = [flat(f) for f in runs]
    for name in runs[0]:
        values = [r[name] for r in runs if name in r]
        print(f"   {name:40s} median={statistics.median(values):.3f}  min={min(values):.3f}  max={max(values):.3f}")
PY
