#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need and a fresh
# machine may lack. This is the README's test command; `.ci/run` calls it too.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p sync-core    # arguments go to `cargo test`
#
# What the tests need beyond Rust:
#   - PostgreSQL 14+ binaries (initdb, postgres): the PostgreSQL backend's tests start a
#     private server; SYNC_REQUIRE_POSTGRES=1 makes their absence a failure, not a skip;
#   - gcc, g++, make, cmake, valgrind: the C/C++ SDK tests build and run the examples;
#   - tmux: the interactive client's test drives it in a terminal;
#   - node (20+): the topics test runs the older JavaScript client's shapes in Node.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
# Node.js 20+ runs the older JavaScript client's script against the server (its global
# WebSocket); Debian's own nodejs is older, so a machine without Node gets it from there
# and that test says which version it needs.
command -v node >/dev/null 2>&1 || need+=(nodejs)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The PostgreSQL tests must run, not be skipped for want of a server.
export SYNC_REQUIRE_POSTGRES="${SYNC_REQUIRE_POSTGRES:-1}"
cargo test --workspace "$@"
