#!/usr/bin/env bash
# Installs the pinned toolchain into the project, idempotently:
#  - the wasm32 target (rustup)
#  - worker-build and wasm-bindgen-cli, compiled once into a per-user cache keyed
#    by version (~/.cache/ptrack/<tool>-<version>) and linked into .tools/bin
#  - wrangler (with workerd, esbuild) and binaryen from package-lock.json
#  - .dev.vars from .dev.vars.example when absent
# A second run only checks and takes a couple of seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${PTRACK_CACHE:-$HOME/.cache/ptrack}"
WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=0.2.130
WRANGLER_VERSION=4.86.0
BINARYEN_VERSION=132.0.0

step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

install_tool() { # crate version binary
  local crate=$1 version=$2 bin=$3 dir="$cache/$1-$2"
  if [ ! -x "$dir/bin/$bin" ] || ! "$dir/bin/$bin" --version 2>/dev/null | grep -q "$version"; then
    step "building $crate $version into $dir (a few minutes, once per machine)"
    mkdir -p "$dir"
    cargo install "$crate" --version "$version" --root "$dir" --force --quiet
  fi
  mkdir -p .tools/bin
  ln -sfn "$dir/bin/$bin" ".tools/bin/$bin"
}
install_tool worker-build "$WORKER_BUILD_VERSION" worker-build
install_tool wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen

pkg_version() { node -p "require('./node_modules/$1/package.json').version" 2>/dev/null || true; }
if [ "$(pkg_version wrangler)" != "$WRANGLER_VERSION" ] || [ "$(pkg_version binaryen)" != "$BINARYEN_VERSION" ]; then
  step "installing wrangler $WRANGLER_VERSION and binaryen $BINARYEN_VERSION (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ ! -f .dev.vars ]; then
  step "creating .dev.vars from .dev.vars.example"
  cp .dev.vars.example .dev.vars
fi
step "toolchain ready"
