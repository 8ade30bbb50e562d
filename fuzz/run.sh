#!/usr/bin/env bash
# Runs fuzz targets (fuzz/fuzz_targets/) for SECONDS each: `make fuzz`, `make fuzz-smoke`.
#   fuzz/run.sh SECONDS [TARGET ...]     (every target when none is named)
# Each corpus (fuzz/corpus/<target>/) is seeded first (fuzz/seed.py); the
# inputs that once failed (fuzz/regressions/<target>/) are run before fuzzing,
# and a target's dictionary (fuzz/dicts/<target>.dict) guides it when there is one.
# A target fails on a panic, a hang over 1 s or an allocation over 64 MB for
# one input; its reproducer lands in fuzz/artifacts/<target>/. Prints, per
# target, the inputs executed and the corpus size; exits 1 when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET ...]}
shift
# libFuzzer's flags run on the stable toolchain: cargo-fuzz needs -Z flags.
export RUSTC_BOOTSTRAP=1
# One build for every target; `make fuzz` and `make fuzz-smoke` share it (fuzz/target/).
# FUZZ_PROFILE=-D (no optimisation), FUZZ_SANITIZER=none, FUZZ_CODEGEN_UNITS trade run speed for build time.
build_flags=("${FUZZ_PROFILE:--O}" --codegen-units "${FUZZ_CODEGEN_UNITS:-16}" --sanitizer "${FUZZ_SANITIZER:-address}")
limits=(-timeout=1 -malloc_limit_mb=64 -rss_limit_mb=2048)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

python3 fuzz/seed.py >/dev/null
step=$SECONDS
cargo fuzz build "${build_flags[@]}" || exit 1
echo "built ${#targets[@]} fuzz targets in $((SECONDS - step)) s"
profile=release
[ "${FUZZ_PROFILE:--O}" = -D ] && profile=debug
bin=fuzz/target/x86_64-unknown-linux-gnu/$profile
mkdir -p fuzz/artifacts target
failed=()
printf '%-18s %12s %10s %8s  %s\n' target executed exec/s corpus result
for target in "${targets[@]}"; do
  log=target/fuzz-$target.log
  mkdir -p "fuzz/artifacts/$target" "fuzz/corpus/$target"
  result=ok
  if [ -d "fuzz/regressions/$target" ] && [ -n "$(ls -A "fuzz/regressions/$target")" ]; then
    "$bin/$target" "${limits[@]}" "fuzz/regressions/$target"/* >"$log.regressions" 2>&1 || result="regression failed (see $log.regressions)"
  fi
  if [ "$result" = ok ]; then
    dict=()
    [ -f "fuzz/dicts/$target.dict" ] && dict=(-dict="fuzz/dicts/$target.dict")
    "$bin/$target" "${limits[@]}" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$target/" "fuzz/corpus/$target" >"$log" 2>&1 ||
      result="FAILED: $(grep -m1 -E '^==[0-9]+==|panicked at|ERROR: libFuzzer' "$log" | cut -c1-120) (see $log)"
  fi
  executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" 2>/dev/null | tail -1 | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" 2>/dev/null | tail -1 | grep -o '[0-9]*$')
  printf '%-18s %12s %10s %8s  %s\n' "$target" "${executed:--}" "${rate:--}" "$(ls "fuzz/corpus/$target" | wc -l)" "$result"
  [ "$result" = ok ] || failed+=("$target")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]}" >&2
  exit 1
fi
