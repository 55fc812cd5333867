#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is missing, build
# every plugin from plugins/, then run the unit, integration and doc tests.
# Integration tests start their own nats-server per test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
cargo test -p weir-host -p weir-sdk "$@"
