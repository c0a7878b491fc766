#!/bin/sh
# Installs the Debian 12 packages petrel needs to build, test and benchmark, skipping those
# already present. As root it installs; otherwise it lists what is missing and fails only
# when a build dependency is absent.
#   scripts/install-deps.sh [build|test|bench]   (default: test, which includes build)
set -eu
what=${1:-test}

build_pkgs="build-essential cmake pkg-config libssl-dev libnghttp2-dev libev-dev libc-ares-dev libjansson-dev libyaml-dev libre2-dev zlib1g-dev libbrotli-dev libzstd-dev"
test_pkgs="clang libclang-rt-14-dev python3 python3-h2 python3-grpcio python3-brotli python3-zstandard curl openssl prometheus iproute2 iptables procps valgrind"
# Node.js and npm (the protobuf schema check in tests/proto_schema and the test control plane,
# never the build) are wanted as commands, not as Debian's packages: a machine whose Node.js
# came from elsewhere (NodeSource's nodejs carries its own npm) must not be offered Debian's npm,
# which conflicts with it.
node_pkgs=""
command -v node >/dev/null 2>&1 || node_pkgs="nodejs"
command -v npm >/dev/null 2>&1 || node_pkgs="$node_pkgs npm"
bench_pkgs="haproxy nginx wrk iperf3 nghttp2-client"

case "$what" in
  build) pkgs="$build_pkgs" ;;
  test)  pkgs="$build_pkgs $test_pkgs $node_pkgs" ;;
  bench) pkgs="$build_pkgs $test_pkgs $node_pkgs $bench_pkgs" ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "missing Debian packages:$missing" >&2
  echo "run: sudo apt-get install$missing" >&2
  for p in $build_pkgs; do
    case "$missing" in *" $p"*) exit 1 ;; esac
  done
fi
