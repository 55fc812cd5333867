#!/usr/bin/env bash
# Native unit tests of the C SDK (sdk/c/weir.c off wasm: the in-process host
# stand-ins and the weir_test_* runners). CC=clang-19 by default.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cc="${CC:-clang-19}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for test in "$here"/*_test.c; do
    "$cc" -std=gnu17 -O1 -g -Wall -Wextra -Wno-unused-parameter -fsanitize=address,undefined \
        -I "$here/.." "$here/../weir.c" "$here/../weir_json.c" "$test" -lm -o "$scratch/test"
    "$scratch/test"
done
