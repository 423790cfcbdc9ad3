#!/usr/bin/env bash
# Instructions the C ABI adds per unary call on a caller-driven core (docs/benchmarks.md
# "C ABI"): a C client makes N calls through ntr_core_call, then through
# ntr_core_call_prepared, to the C example server in another process, under
# `valgrind --tool=callgrind` (epoll driver: valgrind does not follow io_uring); prints each
# function's inclusive cost minus that of the Core::call inside it, per call.
# Needs valgrind, cc and the Rust toolchain. Run from anywhere: engine/ffi/scripts/callgrind.sh [N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ffi="$(dirname "$here")"
root="$(cd "$ffi/../.." && pwd)"
n="${1:-2000}"
cd "$root"
cargo build --release -p netron-ffi
lib="$root/target/release/libnetron.a"
out="$root/target/ffi-callgrind"
mkdir -p "$out"
native=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
cflags=(-std=c11 -O2 -g -pthread -I "$ffi/include")
cc "${cflags[@]}" "$here/callgrind_client.c" "$lib" "${native[@]}" -o "$out/client"
cc "${cflags[@]}" "$ffi/examples/c/server.c" "$lib" "${native[@]}" -o "$out/server"

fifo="$out/server.stdin"
rm -f "$fifo"
mkfifo "$fifo"
"$out/server" <"$fifo" >"$out/server.out" &
server=$!
exec 9>"$fifo" # keeps the server's stdin open until we close it
trap 'exec 9>&-; wait "$server" || true; rm -f "$fifo"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$out/server.out" 2>/dev/null && break
  sleep 0.1
done
endpoint=$(sed -n 's/^listening on //p' "$out/server.out")
[ -n "$endpoint" ] || { echo "the server printed no endpoint"; exit 1; }

# The inclusive cost of function $2 in profile $1: the largest of the listing's entries for
# it (callgrind_annotate may list a function under two spellings of its file, absolute and
# relative, one of them holding only part of its cost).
inclusive() {
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
    awk -v f="$2" '
      $1 ~ /^[0-9,]+$/ && (index($0, ":" f " [") || substr($0, length($0) - length(f)) == ":" f) {
        v = $1; gsub(",", "", v); if (v + 0 > max) max = v + 0
      }
      END { print max + 0 }'
}
for variant in plain prepared; do
  NETRON_DRIVER=epoll valgrind --tool=callgrind --callgrind-out-file="$out/$variant.out" \
    "$out/client" "$endpoint" "$variant" "$n" 2>/dev/null
  case $variant in
    plain) f=ntr_core_call ;;
    prepared) f=ntr_core_call_prepared ;;
  esac
  outer=$(inclusive "$out/$variant.out" "$f")
  inner=$(inclusive "$out/$variant.out" 'netron_engine::core::caller::<impl netron_engine::core::Core>::call')
  echo "$f: $(((outer - inner) / n)) instructions per call on top of Core::call ($n calls: $outer - $inner inclusive)"
done
