#!/bin/sh
# Side-by-side benchmarks of petrel against HAProxy (and nginx for HTTP); see bench/README.md.
#   bench/run.sh [tcp|http|tls|resilience|abuse|h2|instr|tracing|all]...  (default: all = tcp
#       http tls resilience abuse; `make bench` runs this; h2 = HTTP/2 and gRPC, needs h2load;
#       instr = callgrind/strace counts, needs valgrind; tracing = tracing off/1%/100%)
# Environment: BENCH_DURATION (s per measurement, default 10), BENCH_REPS (default 3),
#   BENCH_RATE (latency test req/s, default 2000), BENCH_IDLE_CONNS (default 10000),
#   BENCH_ABUSE_SECONDS (length of each attack in the abuse suite, default 5),
#   BENCH_H2_IDLE_CONNS (idle h2 connections per proxy in the h2 suite, default 2000),
#   BENCH_PIN (1/0, default 1 on >= 2 CPUs), BENCH_NICE (e.g. -10; default off),
#   PETREL_BIN (default build/petrel), BENCH_KEEP=1 (keep configs and logs).
# Prints a table per suite and writes bench/results/<date>-<suite>.md (raw numbers in
# bench/results/raw/, which git ignores). Everything it starts is stopped on exit.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

for a in "$@"; do
  case "$a" in
    tcp|http|tls|resilience|abuse|h2|instr|tracing|all) ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/run.sh [tcp|http|tls|resilience|abuse|h2|instr|tracing|all]..." >&2; exit 2 ;;
  esac
done

missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $1${2:+ ($2)}"; }
need python3
need cc "build-essential"
need wrk
need nginx
need haproxy
need iperf3
need taskset "util-linux"
need h2load "nghttp2-client"
if [ -n "$missing" ]; then
  echo "bench: missing tools:$missing" >&2
  echo "bench: install them with: make deps-bench (or apt-get install haproxy nginx wrk iperf3 nghttp2-client build-essential)" >&2
  exit 1
fi
case "${BENCH_DURATION:-10}" in ''|*[!0-9]*|0) echo "bench: BENCH_DURATION must be a positive integer" >&2; exit 2 ;; esac
case "${BENCH_REPS:-3}" in ''|*[!0-9]*|0) echo "bench: BENCH_REPS must be a positive integer" >&2; exit 2 ;; esac

petrel=${PETREL_BIN:-$root/build/petrel}
if [ ! -x "$petrel" ]; then
  echo "bench: $petrel not found; build it first: cmake -S . -B build -DPT_WERROR=ON && cmake --build build -j2" >&2
  echo "bench: (or point PETREL_BIN at a petrel binary)" >&2
  exit 1
fi
export PETREL_BIN="$petrel"

# 10k idle connections need ~10k fds in the client and in each proxy: raise the soft limit to
# the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $(( ${BENCH_IDLE_CONNS:-10000} + 2000 )) ]; then
  echo "bench: open-file limit $(ulimit -n) is too low for ${BENCH_IDLE_CONNS:-10000} idle connections;" >&2
  echo "bench: raise it (ulimit -Hn) or set BENCH_IDLE_CONNS lower" >&2
  exit 1
fi

# bench.py stops what it starts (its long-lived children also get PDEATHSIG); this trap is the
# second line of defence: any pid recorded in our temp dir that still runs is killed.
tmp=$(mktemp -d /tmp/petrel-bench-XXXXXX)
chmod 755 "$tmp"
export BENCH_TMP="$tmp"
py=""
cleanup() {
  if [ -n "$py" ]; then kill "$py" 2>/dev/null || true; wait "$py" 2>/dev/null || true; fi
  if [ -f "$tmp/pids" ]; then
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$tmp/pids"
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$root"
python3 "$here/bench.py" "$@" &
py=$!
rc=0
wait "$py" || rc=$?
py=""
exit $rc
