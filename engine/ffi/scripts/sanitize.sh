#!/usr/bin/env bash
# The C tests under AddressSanitizer and LeakSanitizer: the bad-calls test, the streams,
# events and poll tests, then the C client against the C server. The C code is instrumented; libnetron.a (Rust) is not, but its heap
# goes through the intercepted malloc, so leaks and C-side invalid accesses of library memory
# are caught. Needs only gcc and the Rust toolchain. Run from anywhere: engine/ffi/scripts/sanitize.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ffi="$(dirname "$here")"
root="$(cd "$ffi/../.." && pwd)"
cd "$root"
cargo build -p netron-ffi
lib="$root/target/debug/libnetron.a"
out="$root/target/ffi-asan"
mkdir -p "$out"
# The libraries a program linking libnetron.a needs (see netron.pc).
native=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
cflags=(-std=c11 -g -O1 -fsanitize=address -fno-omit-frame-pointer -pthread -I "$ffi/include")
cc "${cflags[@]}" "$ffi/tests/c/bad_calls.c" "$lib" "${native[@]}" -o "$out/bad_calls"
cc "${cflags[@]}" "$ffi/tests/c/streams.c" "$lib" "${native[@]}" -o "$out/streams"
cc "${cflags[@]}" "$ffi/tests/c/events.c" "$lib" "${native[@]}" -o "$out/events"
cc "${cflags[@]}" "$ffi/tests/c/poll.c" "$lib" "${native[@]}" -o "$out/poll"
cc "${cflags[@]}" "$ffi/examples/c/server.c" "$lib" "${native[@]}" -o "$out/server"
cc "${cflags[@]}" "$ffi/examples/c/client.c" "$lib" "${native[@]}" -o "$out/client"
# fast_unwind_on_malloc=0: full stacks through the Rust frames (built without frame
# pointers), so the suppression can match; exitcode 23 on any report.
export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:exitcode=23:abort_on_error=0"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"

echo "--- bad_calls under ASan+LSan"
"$out/bad_calls"

echo "--- streams (C against C) under ASan+LSan"
"$out/streams" | tail -1

echo "--- events under ASan+LSan"
"$out/events" | tail -1

echo "--- a core driven from poll(2) under ASan+LSan"
"$out/poll" | tail -1

echo "--- C client against C server under ASan+LSan"
fifo="$out/server.stdin"
rm -f "$fifo"
mkfifo "$fifo"
"$out/server" <"$fifo" >"$out/server.out" &
server=$!
exec 9>"$fifo" # keeps the server's stdin open until we close it
for _ in $(seq 100); do
  grep -q "listening on" "$out/server.out" 2>/dev/null && break
  sleep 0.1
done
endpoint=$(sed -n 's/^listening on //p' "$out/server.out")
[ -n "$endpoint" ] || { echo "the server printed no endpoint"; kill "$server"; exit 1; }
"$out/client" "$endpoint"
exec 9>&- # the server shuts down
wait "$server"
cat "$out/server.out"
rm -f "$fifo"
echo "sanitizers: 5 passed, 0 failed"
