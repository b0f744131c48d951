#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) with libFuzzer through
# cargo-fuzz, on the stable toolchain (RUSTC_BOOTSTRAP=1, no sanitizer: the
# targets check their own invariants). A crash, a timeout (-timeout=2: no
# superlinear parser) or an allocation over 2 GB fails the run and leaves
# the input in fuzz/artifacts/<target>/. Writes target/bench/fuzz.json.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-60}
cache="${PTRACK_CACHE:-$HOME/.cache/ptrack}"
CARGO_FUZZ_VERSION=0.13.1
bin="$cache/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz"
if [ ! -x "$bin" ]; then
  echo "[fuzz] building cargo-fuzz $CARGO_FUZZ_VERSION into $cache (once per machine)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$cache/cargo-fuzz-$CARGO_FUZZ_VERSION" --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^ptrack-fuzz$')
"$bin" build -s none >/dev/null
total=0
crashes=0
json=""
for t in $targets; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  status=0
  # Inputs that once crashed (fuzz/regressions/<target>/) run first, every time.
  dirs=("corpus/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  "$bin" run -s none "$t" "${dirs[@]}" -- -max_total_time="$secs" -timeout=2 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  runs=${runs:-0}
  total=$((total + runs))
  if [ "$status" -ne 0 ]; then
    crashes=$((crashes + 1))
    echo "[fuzz] $t FAILED after $runs runs:"
    tail -30 "$log"
  else
    printf '[fuzz] %-16s %10s runs in %ss, no crash\n' "$t" "$runs" "$secs"
  fi
  json="$json${json:+,}\"$t\":{\"execs\":$runs,\"crashed\":$([ "$status" -ne 0 ] && echo true || echo false)}"
  rm -f "$log"
done
mkdir -p ../target/bench
printf '{"fuzz_execs":%s,"fuzz_crashes":%s,"seconds_per_target":%s,"targets":{%s}}\n' \
  "$total" "$crashes" "$secs" "$json" > ../target/bench/fuzz.json
echo "[fuzz] $total executions, $crashes crashing targets; wrote target/bench/fuzz.json"
[ "$crashes" -eq 0 ]
