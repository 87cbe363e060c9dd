#!/usr/bin/env bash
# Builds the C/C++ distribution of sync-client:
#   dist/include   sync_client.h (generated, checked in), sync_client_events.h, sync_client.hpp
#   dist/lib       libsync_client.a, libsync_client.so, cmake/sync_client/ (package config)
#   dist/examples  C and C++ examples, a Makefile and a CMakeLists.txt
#
# Environment: PROFILE=release (default) or debug; DIST=<output dir> (default ./dist).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-release}"
dist="${DIST:-dist}"
target="${CARGO_TARGET_DIR:-target}"

case "$profile" in
  release) cargo build --release -p sync-client --lib; libdir="$target/release" ;;
  debug) cargo build -p sync-client --lib; libdir="$target/debug" ;;
  *) echo "PROFILE must be release or debug" >&2; exit 64 ;;
esac

rm -rf "$dist"
mkdir -p "$dist/include" "$dist/lib/cmake/sync_client" "$dist/examples"
cp sdk/include/sync_client.h sdk/include/sync_client_events.h sdk/include/sync_client.hpp "$dist/include/"
cp "$libdir/libsync_client.a" "$libdir/libsync_client.so" "$dist/lib/"
cp sdk/cmake/*.cmake "$dist/lib/cmake/sync_client/"
cp sdk/examples/*.c sdk/examples/*.cpp sdk/examples/Makefile sdk/examples/CMakeLists.txt "$dist/examples/"
cp sdk/README.md sdk/FRAMEWORK_INTEGRATION.md "$dist/"
echo "wrote $dist ($profile)"
