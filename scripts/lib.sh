# Shared by the provisioning scripts (sourced, not run). The caller sets LOG_TAG before sourcing.
# shellcheck shell=bash

CACHE="${CITADEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citadel}"
say() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

# Runs "$@" in the background with a heartbeat every 20 s, so a cold build is never silent.
with_progress() {
  local label=$1; shift
  local start=$SECONDS next=20
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - start)) -ge $next ] && kill -0 "$pid" 2>/dev/null; then
      say "$label: still working ($((SECONDS - start))s)"
      next=$((next + 20))
    fi
  done
  wait "$pid" || die "$label failed (see the output above)"
  say "$label: done in $((SECONDS - start))s"
}

# A short hash of the Go version and every Go source/module file under the given repo directories: the cache key
# of Go programs we build ourselves (a change to any file, or a new Go, rebuilds).
go_sources_hash() {
  (cd "$ROOT" &&
    { go version; find "$@" -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print | LC_ALL=C sort |
      while read -r f; do printf '%s ' "$f"; sha256sum <"$f"; done; } | sha256sum | cut -c1-16)
}

# Builds the Go program in $ROOT/$1/$2 into $3/$2 (atomically).
go_build_program() {
  local src=$1 name=$2 out=$3
  say "building $name from $src/$name (cold: downloads its Go modules first)"
  (cd "$ROOT/$src/$name" && go mod download && go build -trimpath -o "$out/$name.tmp" . && mv "$out/$name.tmp" "$out/$name")
}
