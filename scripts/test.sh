#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is missing, build
# every plugin from plugins/, then run the unit, integration and doc tests of
# every crate in the workspace (the host, the SDK, and the Rust plugins' own
# unit tests, natively). Integration tests start their own nats-server per test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
cargo test --workspace "$@"
