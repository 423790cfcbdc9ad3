#!/usr/bin/env bash
# Builds libnetron (release) and installs it under PREFIX (default /usr/local):
#   PREFIX/include/netron.h
#   PREFIX/lib/libnetron.a
#   PREFIX/lib/libnetron.so.MAJOR.MINOR.PATCH, libnetron.so.MAJOR (the soname), libnetron.so
#   PREFIX/lib/pkgconfig/netron.pc
# Our own script rather than cargo-c: nothing to install first, and the soname comes from
# build.rs (docs/ffi.md, "Building and installing").
# Usage: engine/ffi/scripts/install.sh [PREFIX]     (DESTDIR is honoured for packaging;
# PROFILE=debug installs the debug build, as CI does to check this script quickly)
set -euo pipefail
prefix="${1:-/usr/local}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ffi="$(dirname "$here")"
root="$(cd "$ffi/../.." && pwd)"
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The ABI number of the soname (build.rs), not the crate version: docs/ffi.md, "Versioning".
major=$(sed -n 's/.*soname,libnetron\.so\.\([0-9]*\).*/\1/p' "$ffi/build.rs")
profile="${PROFILE:-release}"
cargo build --profile "$(if [ "$profile" = debug ]; then echo dev; else echo "$profile"; fi)" -p netron-ffi
target="${CARGO_TARGET_DIR:-$root/target}/$profile"
dest="${DESTDIR:-}$prefix"
install -d "$dest/include" "$dest/lib/pkgconfig"
install -m 644 "$ffi/include/netron.h" "$dest/include/netron.h"
install -m 644 "$target/libnetron.a" "$dest/lib/libnetron.a"
install -m 755 "$target/libnetron.so" "$dest/lib/libnetron.so.$version"
ln -sf "libnetron.so.$version" "$dest/lib/libnetron.so.$major"
ln -sf "libnetron.so.$major" "$dest/lib/libnetron.so"
cat >"$dest/lib/pkgconfig/netron.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: netron
Description: Netron zero-copy RPC engine, C ABI (libnetron)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lnetron
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
PC
echo "installed libnetron $version (soname libnetron.so.$major) under $dest"
