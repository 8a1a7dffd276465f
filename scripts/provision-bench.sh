#!/usr/bin/env bash
# Builds the benchmark's Go programs (bench/go/loadgen, bench/go/istioca) or reuses them.
# The binaries are cached outside the repo in $CACHE/bench-<hash>/, keyed by a hash of every file under
# bench/go plus the Go version, so a warm run only hashes. istioca depends on the istio.io/istio module:
# a cold build downloads and compiles it (several minutes on 2 cores) and prints a heartbeat meanwhile.
# Prints LOADGEN=... and ISTIOCA=... on stdout (progress goes to stderr) and writes them to bench.env there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_TAG=provision-bench
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
need go "install Go 1.26+ (https://go.dev/doc/install)"

hash=$(go_sources_hash bench/go)
dir="$CACHE/bench-$hash"
mkdir -p "$dir"


build() { go_build_program bench/go "$1" "$dir"; }

for name in loadgen istioca; do
  if [ -x "$dir/$name" ]; then
    say "$name: cached ($dir/$name)"
  elif [ "$name" = istioca ]; then
    with_progress "istioca (Istio's CA server as a library; cold: 5-10 minutes)" build istioca
  else
    with_progress "$name" build "$name"
  fi
done

cat >"$dir/bench.env" <<ENV
LOADGEN=$dir/loadgen
ISTIOCA=$dir/istioca
ISTIO_MODULE=$(cd "$ROOT/bench/go/istioca" && sed -n 's/^\s*istio.io\/istio \(v[^ ]*\).*/\1/p' go.mod | head -1)
GO_VERSION=$(go env GOVERSION)
ENV
say "bench tools ready ($dir)"
cat "$dir/bench.env"
