#!/bin/sh
# Builds the worker to wasm with the pinned tools installed by `make setup`.
# worker-build does not look on PATH: without these variables it tries to
# download its tools from GitHub, which is unreachable here. Check first.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
export WASM_BINDGEN_BIN="$root/.tools/bin/wasm-bindgen"
export ESBUILD_BIN="$root/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
for tool in "$root/.tools/bin/worker-build" "$WASM_BINDGEN_BIN" "$ESBUILD_BIN" "$WASM_OPT_BIN"; do
  if [ ! -x "$tool" ]; then
    echo "edge/build.sh: missing $tool; run 'make setup' first" >&2
    exit 1
  fi
done
cd "$root/edge"
"$root/.tools/bin/worker-build" --profile wasm-release
# worker-build keeps the wasm names section (function names in stack traces,
# about 185 KB); the module we run and deploy drops it to stay under 1 MB.
# Same feature set as worker-build's own wasm-opt run.
"$WASM_OPT_BIN" --strip-debug --enable-mutable-globals --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-bulk-memory --enable-multivalue \
  --enable-reference-types --enable-exception-handling \
  "$root/edge/build/index_bg.wasm" -o "$root/edge/build/index_bg.wasm"
