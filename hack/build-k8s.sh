#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy into a machine-wide cache
# keyed by version. Binaries already in the cache are skipped, so every run after the
# first returns in a second. Prints the bin directory on its last line.
#
# Kubernetes' own go.mod replaces its staging modules with ./staging paths, so
# `go install k8s.io/kubernetes/cmd/...@v` refuses; a small wrapper module that
# requires k8s.io/kubernetes and pins every staging module to its published v0.x
# tag builds the same commands. etcd gets the same treatment.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
CACHE_ROOT="${REBALANCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rebalancer}"
DIR="$CACHE_ROOT/k8s-v${K8S_VERSION}"
BIN="$DIR/bin"
SRC="$DIR/src"
mkdir -p "$BIN" "$SRC"

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[build-k8s] FAILED: %s\n' "$*" >&2; exit 1; }

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
staging_minor="${K8S_VERSION#*.}"   # 37.2
staging_version="v0.${staging_minor}"
major="${K8S_VERSION%%.*}"
minor="${staging_minor%%.*}"

build_etcd() {
  [ -x "$BIN/etcd" ] && return 0
  log "building etcd v${ETCD_VERSION} (about 75 s cold)"
  local w="$SRC/etcd-wrapper"
  mkdir -p "$w"
  cat >"$w/go.mod" <<MOD
module rebalancer.local/etcdwrapper

go 1.26

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v${ETCD_VERSION}
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v${ETCD_VERSION}
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v${ETCD_VERSION}
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 v${ETCD_VERSION}
)
MOD
  (cd "$w" && go build -trimpath -ldflags '-s -w' -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3) \
    || fail "etcd v${ETCD_VERSION}: go build in $w failed (see the compiler output above)"
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_kwok() {
  [ -x "$BIN/kwok" ] && return 0
  log "building kwok v${KWOK_VERSION} (about 3 min cold)"
  GOBIN="$SRC/kwok-bin" GOFLAGS= go install -trimpath -ldflags '-s -w' "sigs.k8s.io/kwok/cmd/kwok@v${KWOK_VERSION}" \
    || fail "kwok v${KWOK_VERSION}: go install failed (see the compiler output above)"
  mv "$SRC/kwok-bin/kwok" "$BIN/kwok"
  # The stage files ship in the module; keep a copy beside the binary for reference.
  local mod
  mod="$(GOFLAGS= go env GOMODCACHE)/sigs.k8s.io/kwok@v${KWOK_VERSION}"
  if [ -d "$mod/kustomize/stage" ]; then
    rm -rf "$DIR/kwok-stage" && cp -r "$mod/kustomize/stage" "$DIR/kwok-stage" && chmod -R u+w "$DIR/kwok-stage"
  fi
}

build_kube() {
  local want=() c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$c" ] || want+=("$c")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  log "building ${want[*]} v${K8S_VERSION} (15-25 min cold on 2 cores; about 4 GB of Go build cache)"
  local w="$SRC/kube-wrapper"
  mkdir -p "$w"
  if [ ! -f "$w/go.mod" ]; then
    log "reading the staging module list from k8s.io/kubernetes v${K8S_VERSION}'s go.mod"
    local gomod
    gomod="$(cd "$w" && GOFLAGS= go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    [ -f "$gomod" ] || fail "k8s.io/kubernetes v${K8S_VERSION}: could not download its go.mod from the module proxy"
    {
      printf 'module rebalancer.local/kubewrapper\n\ngo 1.26\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_version" '{printf "\t%s => %s %s\n", $1, $1, v}'
      printf ')\n'
    } >"$w/go.mod.tmp"
    grep -q 'k8s.io/api => k8s.io/api' "$w/go.mod.tmp" || fail "no staging replaces found in $gomod"
    mv "$w/go.mod.tmp" "$w/go.mod"
  fi
  local ld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v${K8S_VERSION} -X $p.gitMajor=${major} -X $p.gitMinor=${minor} -X $p.gitTreeState=clean"
  done
  local pkgs=()
  for c in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$SRC/kube-out"
  (cd "$w" && go build -trimpath -ldflags "$ld" -o "$SRC/kube-out/" "${pkgs[@]}") \
    || fail "kubernetes v${K8S_VERSION} (${want[*]}): go build in $w failed (see the compiler output above)"
  for c in "${want[@]}"; do mv "$SRC/kube-out/$c" "$BIN/$c"; done
}

start=$(date +%s)
build_etcd
build_kwok
build_kube
log "all binaries present in $BIN ($(( $(date +%s) - start )) s)"
echo "$BIN"
