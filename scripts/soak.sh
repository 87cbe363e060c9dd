#!/usr/bin/env bash
# Soak: kill -9 / restart cycles of a release sync-server (SQLite) under write load, for
# SOAK_SECONDS (default 120). After every restart the change log is read back: the run
# fails unless sequences and each document's revisions are gap-free and every
# acknowledged change is there as acknowledged. A manual tool, not part of CI; the
# figures of the last run are in docs/RELIABILITY.md.
#
#   scripts/soak.sh                               # 120 s
#   SOAK_SECONDS=600 scripts/soak.sh --writers 16 # arguments go to `sync-bench soak`
#   scripts/soak.sh --seed 1234                   # replay the up-times of a run
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${SOAK_SECONDS:-120}"
cargo build --release --quiet -p sync-server -p sync-bench
target="${CARGO_TARGET_DIR:-target}"
# sync-bench finds the sync-server binary next to itself; the command line is printed
# so that the run can be quoted with its figures.
echo "== sync-bench soak --seconds $seconds $*"
exec "$target/release/sync-bench" soak --seconds "$seconds" "$@"
