#!/usr/bin/env bash
# Builds the real SPIFFE Workload API clients the Workload API tests (test/workload-api) run against, or reuses them:
#   SPIFFECLIENT   test/workload-api/go/spiffeclient: our small program on go-spiffe v2 (X509Source, JWTSource,
#                  mTLS, bundle endpoint); cached in $CACHE/workload-api-<hash>/, keyed by a hash of its sources
#                  and the Go version;
#   SPIFFE_HELPER  spiffe-helper (github.com/spiffe/spiffe-helper/cmd/spiffe-helper) at $SPIFFE_HELPER_VERSION,
#                  cached in $CACHE/spiffe-helper-<version>/.
# The Go module proxy refuses the version list of spiffe-helper, so `go install ...@version` fails while looking
# up deprecations; a throw-away module that records the pinned version as a tool (`go get -tool`) builds it.
# Prints SPIFFECLIENT=... and SPIFFE_HELPER=... on stdout (progress goes to stderr).
set -euo pipefail

SPIFFE_HELPER_VERSION=v0.11.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_TAG=provision-workload-api
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
need go "install Go 1.26+ (https://go.dev/doc/install)"

hash=$(go_sources_hash test/workload-api/go)
dir="$CACHE/workload-api-$hash"
mkdir -p "$dir"
if [ -x "$dir/spiffeclient" ]; then
  say "spiffeclient: cached ($dir/spiffeclient)"
else
  with_progress "spiffeclient (go-spiffe v2; cold: a minute or two)" go_build_program test/workload-api/go spiffeclient "$dir"
fi

helper_dir="$CACHE/spiffe-helper-$SPIFFE_HELPER_VERSION"
build_helper() {
  mkdir -p "$helper_dir/src"
  cd "$helper_dir/src"
  [ -f go.mod ] || go mod init citadel.local/spiffe-helper >/dev/null 2>&1
  go get -tool "github.com/spiffe/spiffe-helper/cmd/spiffe-helper@$SPIFFE_HELPER_VERSION"
  go build -trimpath -o "$helper_dir/spiffe-helper.tmp" github.com/spiffe/spiffe-helper/cmd/spiffe-helper
  mv "$helper_dir/spiffe-helper.tmp" "$helper_dir/spiffe-helper"
}
if [ -x "$helper_dir/spiffe-helper" ]; then
  say "spiffe-helper $SPIFFE_HELPER_VERSION: cached ($helper_dir/spiffe-helper)"
else
  with_progress "spiffe-helper $SPIFFE_HELPER_VERSION (cold: a few minutes)" build_helper
fi

say "Workload API clients ready"
echo "SPIFFECLIENT=$dir/spiffeclient"
echo "SPIFFE_HELPER=$helper_dir/spiffe-helper"
