#!/usr/bin/env bash
# Short fuzz smoke run of every netron-codec fuzz target on its committed seed corpus.
#
#   bash .ci/fuzz-smoke.sh            # every target, FUZZ_SECONDS (default 8) each
#   FUZZ_SECONDS=60 bash .ci/fuzz-smoke.sh roundtrip header_sequence
#
# Stable toolchain, no sanitizer (`-s none`: the instrumentation flags cargo-fuzz passes are
# stable `-C` options; the default ASan build would need RUSTC_BOOTSTRAP=1). Each target runs
# on a temporary COPY of fuzz/corpus/<target>, so the tree stays clean; crashes land in
# fuzz/artifacts/<target>/ (git-ignored) and fail the run. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
seconds=${FUZZ_SECONDS:-8}
start=$(date +%s)
step() { echo; echo "=== [fuzz $(( $(date +%s) - start ))s] $*"; }

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

step "build ${#targets[@]} targets (-s none)"
cargo fuzz build -s none

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()
for t in "${targets[@]}"; do
    step "$t: ${seconds}s on $(find "fuzz/corpus/$t" -type f | wc -l) seeds"
    mkdir -p "$tmp/$t"
    cp -R "fuzz/corpus/$t/." "$tmp/$t/"
    # -s none builds are reused from the step above. rss_limit guards against runaway
    # allocations (a finding too); a crash, leak or timeout exits non-zero.
    if ! cargo fuzz run -s none "$t" "$tmp/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$tmp/$t.log" 2>&1; then
        failed+=("$t")
        tail -n 60 "$tmp/$t.log"
    else
        grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)" "$tmp/$t.log" || true
    fi
done

step "done"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz smoke passed: ${targets[*]}"
