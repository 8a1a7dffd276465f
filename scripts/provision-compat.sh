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
LOG_TAG=provision-compat
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
need go "install Go 1.26+ (https://go.dev/doc/install)"

hash=$(go_sources_hash test/compat/go)
dir="$CACHE/compat-$hash"
mkdir -p "$dir"


build() { go_build_program test/compat/go "$1" "$dir"; }

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
