#!/usr/bin/env bash
# Builds and runs the native unit tests of plugins/batch-c (any C compiler;
# CC=clang-19 by default) against sdk/c's in-process stand-ins for the host.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../../.."
cc="${CC:-clang-19}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$cc" -std=gnu17 -O1 -g -Wall -Wextra -Wno-unused-parameter -fsanitize=address,undefined \
    -I "$root/sdk/c" "$root/sdk/c/weir.c" "$root/sdk/c/weir_json.c" "$here/../batch.c" "$here/native.c" -lm -o "$out"
"$out"
