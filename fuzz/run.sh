#!/usr/bin/env bash
# Runs every fuzz target in turn, one process (one core) at a time, and prints libFuzzer's final
# stats for each. Usage, from the repository root:
#   fuzz/run.sh [RUNS] [SECONDS] [TARGET...]   (defaults: 10000000 runs, at most 330 s per target)
# New inputs go to fuzz/corpus/<target>/; crashes to fuzz/artifacts/<target>/. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
secs=${2:-330}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir .)
# The server decodes on tokio worker threads, whose stacks are 2 MiB: fuzz on no more, so that
# deep recursion crashes here rather than there.
ulimit -s 2048
for t in "${targets[@]}"; do
  echo "== $t"
  cargo +nightly fuzz run --fuzz-dir . -s none -a "$t" "corpus/$t" -- \
    -runs="$runs" -max_total_time="$secs" -print_final_stats=1 2>&1 |
    grep -E '^(stat::|Done|==|INFO: (seed|Loaded))|panicked|SUMMARY|crash-|deadly' || true
  echo "corpus/$t: $(ls "corpus/$t" | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KB"
done
