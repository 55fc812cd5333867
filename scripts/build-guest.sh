#!/usr/bin/env bash
# Builds Python, JavaScript and C plugin folders into WebAssembly components,
# each written beside its plugin.toml under the name its `wasm` field gives.
#
#   scripts/build-guest.sh [--force] DIR...
#
# The language is told by the folder's files:
#   app.py  Python      componentize-py (PyPI, pinned), with sdk/python (weir_sdk)
#   app.js  JavaScript  componentize-js (npm, pinned; sdk/js/tools), with sdk/js/weir.js
#   *.c     C           clang-19 + wasi-libc (Debian), bindings and the component
#                       wrapper from tools/guest-tool, with sdk/c (weir.h, weir.c, weir_json.c)
# Missing toolchains are installed first (scripts/setup.sh LANG). A folder whose
# inputs (its sources, the SDK, wit/, the toolchain version) have not changed
# since its last build is skipped; --force rebuilds anyway.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# scripts/setup.sh installs the pinned toolchains; componentize-py lives here.
py_tools="$root/target/guest-tools/python"

force=0
dirs=()
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    -h | --help)
        sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) dirs+=("$arg") ;;
    esac
done
if [[ ${#dirs[@]} -eq 0 ]]; then
    echo "usage: scripts/build-guest.sh [--force] DIR..." >&2
    exit 2
fi

# The string value of a top-level KEY in a plugin.toml (before any table).
manifest_field() {
    awk -v key="$2" '
        /^[[:space:]]*\[/ { exit }
        $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            v = $0
            sub(/^[^=]*=[[:space:]]*"/, "", v)
            sub(/".*$/, "", v)
            print v
            exit
        }
    ' "$1"
}

language_of() {
    local dir="$1"
    if [[ -f "$dir/app.py" ]]; then
        echo python
    elif [[ -f "$dir/app.js" ]]; then
        echo js
    elif compgen -G "$dir/*.c" >/dev/null; then
        echo c
    else
        echo unknown
    fi
}

# A hash of everything a build reads: the folder's sources, the SDK, wit/,
# this script and scripts/setup.sh (which pins the toolchains).
inputs_hash() {
    local dir="$1" lang="$2" sdk
    case "$lang" in
    python) sdk="$root/sdk/python" ;;
    js) sdk="$root/sdk/js" ;;
    c) sdk="$root/sdk/c" ;;
    esac
    {
        echo "$lang"
        find "$dir" "$sdk" "$root/wit" -type f \
            \( -name '*.py' -o -name '*.js' -o -name '*.mjs' -o -name '*.c' -o -name '*.h' \
            -o -name '*.wit' -o -name 'package-lock.json' \) \
            -not -path '*/node_modules/*' -not -path '*/__pycache__/*' \
            -not -name '*.test.js' -not -name '*.test.mjs' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
        sha256sum "${BASH_SOURCE[0]}" "$root/scripts/setup.sh"
    } | sha256sum | cut -d' ' -f1
}

# The build tools run without RUST_BACKTRACE: componentize-py and wizer are
# Rust, and a backtrace would bury the one line that says what is wrong. Each
# wrapper prints a failure as `<file>:<line>:<col>: ...` and exits 1.
build_python() {
    local dir="$1" out="$2"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
        PYTHONPATH="$py_tools${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
        python3 "$root/sdk/python/tools/componentize.py" "$root/wit" "$dir" "$root/sdk/python" "$out" \
        >/dev/null
}

build_js() {
    local dir="$1" out="$2"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
        node "$root/sdk/js/tools/componentize.mjs" "$root/wit" "$dir" "$out"
}

# A C plugin defines weir_handle, weir_handle_batch or both. The compiled
# objects tell which: with weir_handle_batch the component has world
# handler-and-batch (weir.c built with -DWEIR_BATCH derives `handle` when
# weir_handle is missing), without it world handler, as before batches.
build_c() {
    local dir="$1" out="$2" tool="$root/target/release/weir-guest-tool"
    local gen="$root/target/guest-tools/c-bindings" scratch nm world src n=0
    local cflags=(--target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -Wno-unused-parameter)
    local objects=() batch=()
    scratch="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$scratch'" RETURN
    for src in "$dir"/*.c; do
        objects+=("$scratch/plugin$n.o")
        clang-19 "${cflags[@]}" -I "$root/sdk/c" -c "$src" -o "$scratch/plugin$n.o"
        n=$((n + 1))
    done
    nm="$(command -v llvm-nm-19 || command -v /usr/lib/llvm-19/bin/llvm-nm || true)"
    if [[ -z "$nm" ]]; then
        echo "error: $dir: llvm-nm-19 not found (Debian package llvm-19)" >&2
        return 1
    fi
    local defined
    defined="$("$nm" --defined-only --extern-only --just-symbol-name "${objects[@]}")"
    if grep -qx weir_handle_batch <<<"$defined"; then
        world=handler-and-batch
        batch=(-DWEIR_BATCH)
    elif grep -qx weir_handle <<<"$defined"; then
        world=handler
    else
        echo "error: $dir: no .c file defines weir_handle or weir_handle_batch (see sdk/c/weir.h)" >&2
        return 1
    fi
    "$tool" bindgen-c "$root/wit" "$world" "$gen"
    local base="${world//-/_}"
    # --strip-all: no name section (130 KB of the 180 KB); the component
    # type section the bindings' object file carries is kept.
    clang-19 "${cflags[@]}" "${batch[@]}" -mexec-model=reactor -Wl,--strip-all \
        -I "$gen" -I "$root/sdk/c" \
        "$gen/$base.c" "$root/sdk/c/weir.c" "$root/sdk/c/weir_json.c" "${objects[@]}" "$gen/${base}_component_type.o" \
        -o "$scratch/core.wasm"
    "$tool" component-new "$scratch/core.wasm" "$out"
}

# Toolchains: install what the requested languages need and this machine lacks.
langs=()
for dir in "${dirs[@]}"; do
    if [[ ! -f "$dir/plugin.toml" ]]; then
        echo "error: $dir has no plugin.toml" >&2
        exit 1
    fi
    lang="$(language_of "$dir")"
    if [[ "$lang" == unknown ]]; then
        echo "error: $dir: no app.py, app.js or *.c: not a Python, JavaScript or C plugin" >&2
        exit 1
    fi
    langs+=("$lang")
done
mapfile -t needed < <(printf '%s\n' "${langs[@]}" | sort -u)
"$root/scripts/setup.sh" "${needed[@]}"

stamps="$root/target/guest-builds"
mkdir -p "$stamps"
for i in "${!dirs[@]}"; do
    dir="$(cd "${dirs[$i]}" && pwd)"
    lang="${langs[$i]}"
    wasm="$(manifest_field "$dir/plugin.toml" wasm)"
    if [[ -z "$wasm" ]]; then
        echo "error: no wasm field in $dir/plugin.toml" >&2
        exit 1
    fi
    out="$dir/$wasm"
    stamp="$stamps/$(printf '%s' "$dir" | sha256sum | cut -c1-16).stamp"
    hash="$(inputs_hash "$dir" "$lang")"
    if [[ $force -eq 0 && -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
        printf '%-22s %-6s up to date\n' "$(basename "$dir")" "$lang"
        continue
    fi
    start=$SECONDS
    rm -f "$stamp"
    "build_$lang" "$dir" "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$hash" >"$stamp"
    size="$(wc -c <"$out" | tr -d ' ')"
    printf '%-22s %-6s %-48s %9d bytes  %3ds\n' "$(basename "$dir")" "$lang" "${out#"$root"/}" "$size" $((SECONDS - start))
done
