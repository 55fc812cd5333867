#!/usr/bin/env bash
# Issue 16's check: RUNS runs (default 50) per isolation mode (event, reuse)
# of a release `weir up` relaying 20,000 preloaded JetStream events of 128 B
# (stream IN, `in.>`, through plugins/relay to stream OUT, `out.>`,
# max_in_flight 64), each against its own nats-server ($WEIR_NATS_SERVER, else the pinned one
# scripts/setup.sh installs, a store dir of its own). Prints each run's longest window without a new output
# and exits 1 if any reaches 3 s. Sequential: one server and one host at once.
#
# Usage: scripts/stall-check.sh [RUNS] [more stall-check options, e.g.
#        --modes reuse --keep-logs DIR]
# Needs scripts/setup.sh and scripts/build-plugins.sh run first.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-50}"
shift || true

target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
test -f plugins/relay/relay.wasm || {
    echo "plugins/relay/relay.wasm is missing: run scripts/build-plugins.sh" >&2
    exit 2
}
if [ -z "${WEIR_NATS_SERVER:-}" ] && [ -x target/nats-server/bin/nats-server ]; then
    export WEIR_NATS_SERVER="$PWD/target/nats-server/bin/nats-server"
fi
# Two builds, so the host binary is built with exactly its own features.
cargo build --release -p weir-host --bin weir
cargo build --release -p weir-stall-check
exec "$target_dir/release/stall-check" --weir "$target_dir/release/weir" --runs "$runs" "$@"
