#!/usr/bin/env bash
# Builds the Go programs the Istio compatibility tests (test/compat) need, or reuses them:
#   ISTIOCLIENT  test/compat/go/istioclient: Istio's own CA client (pilot-agent's CSR path) as a library;
#   ISTIOCA      bench/go/istioca: Istio's own CA server, built by scripts/provision-bench.sh (called here).
# istioclient is cached outside the repo in $CACHE/compat-<hash>/, keyed by a hash of every file under
# test/compat/go plus the Go version, so a warm run only hashes. A cold build downloads the istio.io/istio
# module and what it needs (shared with bench/go/istioca through the Go module cache) and prints a
# heartbeat meanwhile. Measured on the 2-core dev machine (shared, load ~6): istioclient alone from empty
# module and build caches 2 min 26 s (download 6 s); istioca on top of that 5 min 40 s more (bench's own
# build, shared caches); warm 0.1 s. Prints ISTIOCLIENT=... and ISTIOCA=... on stdout (progress goes to stderr) and
# writes them to compat.env there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CITADEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citadel}"
say() { printf '[provision-compat] %s\n' "$*" >&2; }
die() { printf '[provision-compat] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "go is required: install Go 1.26+ (https://go.dev/doc/install)"

hash=$(
  cd "$ROOT" &&
    { go version; find test/compat/go -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print | LC_ALL=C sort |
      while read -r f; do printf '%s ' "$f"; sha256sum <"$f"; done; } | sha256sum | cut -c1-16
)
dir="$CACHE/compat-$hash"
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
  say "building $name from test/compat/go/$name (cold: downloads its Go modules first)"
  (cd "$ROOT/test/compat/go/$name" && go mod download && go build -trimpath -o "$dir/$name.tmp" . && mv "$dir/$name.tmp" "$dir/$name")
}

if [ -x "$dir/istioclient" ]; then
  say "istioclient: cached ($dir/istioclient)"
else
  with_progress "istioclient (Istio's CA client as a library; cold: a few minutes)" build istioclient
fi

# Istio's CA server: the benchmark's anchor binary, reused as it is (its own cache and heartbeat).
istioca=$(bash "$ROOT/scripts/provision-bench.sh" | sed -n 's/^ISTIOCA=//p')
[ -x "$istioca" ] || die "scripts/provision-bench.sh did not name a runnable ISTIOCA"

cat >"$dir/compat.env" <<ENV
ISTIOCLIENT=$dir/istioclient
ISTIOCA=$istioca
GO_VERSION=$(go env GOVERSION)
ENV
say "compat tools ready ($dir)"
cat "$dir/compat.env"
