#!/usr/bin/env bash
# Builds the benchmark's Go programs (bench/go/loadgen, bench/go/istioca) or reuses them.
# The binaries are cached outside the repo in $CACHE/bench-<hash>/, keyed by a hash of every file under
# bench/go plus the Go version, so a warm run only hashes. istioca depends on the istio.io/istio module:
# a cold build downloads and compiles it (several minutes on 2 cores) and prints a heartbeat meanwhile.
# Prints LOADGEN=... and ISTIOCA=... on stdout (progress goes to stderr) and writes them to bench.env there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CITADEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citadel}"
say() { printf '[provision-bench] %s\n' "$*" >&2; }
die() { printf '[provision-bench] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "go is required: install Go 1.26+ (https://go.dev/doc/install)"

hash=$(
  cd "$ROOT" &&
    { go version; find bench/go -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print | LC_ALL=C sort |
      while read -r f; do printf '%s ' "$f"; sha256sum <"$f"; done; } | sha256sum | cut -c1-16
)
dir="$CACHE/bench-$hash"
mkdir -p "$dir"

# Runs "$@" with a heartbeat every 20 s, so a cold build is never silent.
with_progress() {
  local label=$1; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  local next=20
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if kill -0 "$pid" 2>/dev/null && (( SECONDS - start >= next )); then
      say "$label: still working ($((SECONDS - start))s)"
      next=$((next + 20))
    fi
  done
  wait "$pid" || die "$label failed"
  say "$label: done in $((SECONDS - start))s"
}

build() {
  local name=$1
  say "building $name from bench/go/$name (cold: downloads its Go modules first)"
  (cd "$ROOT/bench/go/$name" && go mod download && go build -trimpath -o "$dir/$name.tmp" . && mv "$dir/$name.tmp" "$dir/$name")
}

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
