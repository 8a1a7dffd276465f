#!/usr/bin/env bash
# `npm test`: build, provision the real components (cached), run every test, and end with one line
# "N passed, N failed" read from the test run's own JSON report.
set -uo pipefail
cd "$(dirname "$0")/.."
echo "[test] compiling TypeScript" >&2
npx tsc -p tsconfig.json || exit 1
echo "[test] bundling the agent (esbuild)" >&2
node dist/scripts/bundle.js || exit 1
echo "[test] provisioning etcd, kube-apiserver, kubectl and Envoy (cached after the first run)" >&2
bash scripts/provision.sh >/dev/null || exit 1
bash scripts/provision-compat.sh >/dev/null || exit 1
bash scripts/provision-workload-api.sh >/dev/null || exit 1
rm -f .citadel/test-results.json
npx vitest run "$@"
code=$?
node scripts/test-summary.mjs .citadel/test-results.json || code=1
exit $code
