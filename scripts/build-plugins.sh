#!/usr/bin/env bash
# Builds every Rust plugin under plugins/ as a WebAssembly component
# (wasm32-wasip2) and copies each one beside its plugin.toml, under the name
# that plugin.toml's `wasm` field gives.
#
# A Rust plugin is a folder plugins/<name>/ holding both Cargo.toml and plugin.toml.
# Every other folder with a plugin.toml (Python, JavaScript, C) is built by
# scripts/build-guest.sh, which skips those whose sources have not changed.
# Usage: scripts/build-plugins.sh   (from any directory; honours CARGO_TARGET_DIR)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target=wasm32-wasip2

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "installing Rust target $target" >&2
        rustup target add "$target"
    fi
fi

# toml_field SECTION KEY FILE: the string value of KEY in [SECTION] of a TOML
# file ("" for the top level, before any table). Enough for plugin.toml and the
# [package] table of a Cargo.toml; not a TOML parser.
toml_field() {
    awk -v sec="$1" -v key="$2" '
        /^[[:space:]]*\[/ {
            cur = $0
            gsub(/^[[:space:]]*\[+[[:space:]]*|[[:space:]]*\]+.*$/, "", cur)
            next
        }
        cur == sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            v = $0
            sub(/^[^=]*=[[:space:]]*"/, "", v)
            sub(/".*$/, "", v)
            print v
            exit
        }
    ' "$3"
}

dirs=()
crates=()
for manifest in plugins/*/Cargo.toml; do
    dir="$(dirname "$manifest")"
    [[ -f "$dir/plugin.toml" ]] || continue
    crate="$(toml_field package name "$manifest")"
    if [[ -z "$crate" ]]; then
        echo "error: no package name in $manifest" >&2
        exit 1
    fi
    dirs+=("$dir")
    crates+=("$crate")
done

if [[ ${#crates[@]} -eq 0 ]]; then
    echo "no Rust plugins found under plugins/" >&2
    exit 0
fi

args=()
for crate in "${crates[@]}"; do
    args+=(-p "$crate")
done
cargo build --release --target "$target" "${args[@]}"

# Where cargo put it: honours CARGO_TARGET_DIR and build.target-dir.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target_dir="${target_dir:-${CARGO_TARGET_DIR:-$root/target}}"
out_dir="$target_dir/$target/release"

for i in "${!crates[@]}"; do
    dir="${dirs[$i]}"
    crate="${crates[$i]}"
    wasm="$(toml_field "" wasm "$dir/plugin.toml")"
    if [[ -z "$wasm" ]]; then
        echo "error: no wasm field in $dir/plugin.toml" >&2
        exit 1
    fi
    built="$out_dir/${crate//-/_}.wasm"
    if [[ ! -f "$built" ]]; then
        echo "error: $built was not built" >&2
        exit 1
    fi
    cp "$built" "$dir/$wasm"
    size="$(wc -c <"$dir/$wasm" | tr -d ' ')"
    printf '%-18s %-50s %8d bytes\n' "$(basename "$dir")" "$dir/$wasm" "$size"
done

# Python, JavaScript and C plugins: every plugin folder without a Cargo.toml.
guests=()
for manifest in plugins/*/plugin.toml; do
    dir="$(dirname "$manifest")"
    [[ -f "$dir/Cargo.toml" ]] || guests+=("$dir")
done
if [[ ${#guests[@]} -gt 0 ]]; then
    scripts/build-guest.sh "${guests[@]}"
fi
