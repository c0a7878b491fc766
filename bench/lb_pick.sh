#!/bin/sh
# Instructions per pick of RING_HASH and MAGLEV at HOSTS hosts (default 10000), counted by
# callgrind around the pick loop only (bench/lb_pick.c). Needs valgrind and a build
# (cmake --build build). Goal: under 200 instructions per pick.
set -eu
HOSTS=${1:-10000}
PICKS=${PICKS:-100000}
BIN=${PT_BENCH_LB_PICK:-build/tests/pt_bench_lb_pick}
[ -x "$BIN" ] || { echo "no $BIN: build first (cmake --build build)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for policy in ring maglev; do
    "$BIN" "$policy" "$HOSTS" "$PICKS"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/$policy.out" \
        "$BIN" "$policy" "$HOSTS" "$PICKS" >/dev/null 2>"$tmp/$policy.log"
    ir=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$tmp/$policy.out")
    echo "$policy: $HOSTS hosts: $ir instructions for $PICKS picks = $((ir / PICKS)) per pick"
done
