#!/bin/sh
# Instructions per route match (pt_route_match) for a request to the last of ROUTES + 1
# routes (default 10000 + the catch-all "/"), with the virtual host's route index and with
# the ordered scan it replaced, counted by callgrind inside measured_matches only
# (bench/route_match_cost.c). Needs valgrind and a build (cmake --build build).
set -eu
ROUTES=${1:-10000}
MATCHES=${MATCHES:-200}
BIN=${PT_ROUTE_MATCH_COST:-build/route_match_cost}
[ -x "$BIN" ] || { echo "no $BIN: build first (cmake --build build)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for shape in prefixes regexes; do
    for mode in index scan; do
        out="$tmp/$shape.$mode.out"
        valgrind --tool=callgrind --toggle-collect=measured_matches --callgrind-out-file="$out" \
            "$BIN" "$mode" "$shape" "$ROUTES" "$MATCHES" >"$tmp/stdout" 2>"$tmp/log"
        ir=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$out")
        echo "$shape $mode: $(cat "$tmp/stdout"); $((ir / MATCHES)) instructions per match"
    done
done
