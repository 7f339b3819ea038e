#!/usr/bin/env bash
# Build the devstack control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl; optionally kubelet and kube-proxy) from the Go module proxy,
# at the versions pinned by the go.mod/go.sum files beside this script.
#
# Usage:
#   build.sh                 build the default set (whatever of it is missing)
#   build.sh --all           default set plus the optional binaries (kubelet, kube-proxy)
#   build.sh NAME...         only the named binaries
#   build.sh kueue           Kueue's manager, into its own bin dir (its pins: kueue/go.mod)
#   build.sh --bin-dir [kueue]  print the bin dir for the current pins, build nothing
#
# Prints the bin dir (only that) on stdout; progress and timings go to stderr and to
# <prefix>/build.log. Idempotent: when every requested binary is there it exits at once
# without running go. Concurrent runs serialise on a lock (flock).
#
# Where things go (DNA_HUB_CACHE_DIR defaults to ~/.cache/dna-hub):
#   $DNA_HUB_CACHE_DIR/gobuild/<pin-hash>/bin/   the binaries
#   $DNA_HUB_CACHE_DIR/go/{mod,build}            Go module cache and build cache
# <pin-hash> covers every go.mod/go.sum/*.go here, RECIPE_REV and the Go version, so a
# change of pins or toolchain builds into a fresh directory; the shared Go build cache
# keeps that rebuild to what really changed.
#
# Needs: go >= 1.26.0 (k8s.io/kubernetes v1.37 and etcd v3.7 declare `go 1.26.0`; an older
# go fetches a newer toolchain from the module proxy by itself if GOTOOLCHAIN allows), the
# Go module proxy, flock, sha256sum. No cgo: every binary is static (CGO_ENABLED=0).
set -euo pipefail

# Bump when a change to this script must produce different binaries (flags, targets).
RECIPE_REV=1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${DNA_HUB_CACHE_DIR:-$HOME/.cache/dna-hub}"

# name | module dir (relative to HERE) | package | kind (kube, etcd, kueue) | set (default, optional, separate)
TARGETS=(
    "etcd|etcd|.|etcd|default"
    "kube-apiserver|.|k8s.io/kubernetes/cmd/kube-apiserver|kube|default"
    "kube-controller-manager|.|k8s.io/kubernetes/cmd/kube-controller-manager|kube|default"
    "kube-scheduler|.|k8s.io/kubernetes/cmd/kube-scheduler|kube|default"
    "kubectl|.|k8s.io/kubernetes/cmd/kubectl|kube|default"
    "kubelet|.|k8s.io/kubernetes/cmd/kubelet|kube|optional"
    "kube-proxy|.|k8s.io/kubernetes/cmd/kube-proxy|kube|optional"
    # Kueue (issue 28): only when asked for by name (`build.sh kueue`); its own module and
    # its own pin hash and bin dir, so a Kueue pin change never rebuilds Kubernetes
    "kueue|kueue|sigs.k8s.io/kueue/cmd/kueue|kueue|separate"
)

LOG_FILE=""
log() {
    local line
    line="$(printf '[gobuild %s] %s' "$(date +%H:%M:%S)" "$*")"
    printf '%s\n' "$line" >&2
    [[ -z "$LOG_FILE" ]] || printf '%s\n' "$line" >>"$LOG_FILE"
}
die() { log "ERROR: $*"; exit 1; }

export GOMODCACHE="$CACHE_DIR/go/mod"
export GOCACHE="$CACHE_DIR/go/build"
export GOPATH="$CACHE_DIR/go"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export CGO_ENABLED=0
export GOWORK=off

command -v go >/dev/null 2>&1 || die "go not found on PATH (need go >= 1.26.0)"
command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (coreutils)"

# --- what to build ------------------------------------------------------------------------
print_only=0
want=()
case "${1-}" in
    --bin-dir) print_only=1; shift; want=("$@") ;;
    --all) for t in "${TARGETS[@]}"; do want+=("${t%%|*}"); done ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") for t in "${TARGETS[@]}"; do [[ "$t" == *"|default" ]] && want+=("${t%%|*}"); done ;;
    *)
        for name in "$@"; do
            found=0
            for t in "${TARGETS[@]}"; do [[ "${t%%|*}" == "$name" ]] && found=1; done
            ((found)) || die "unknown binary '$name' (known: $(printf '%s ' "${TARGETS[@]%%|*}"))"
            want+=("$name")
        done
        ;;
esac
# Kueue has its own module and bin dir: never mixed with the others in one call
separate=0
for name in "${want[@]}"; do [[ "$name" == kueue ]] && separate=1; done
if ((separate)) && ((${#want[@]} != 1)); then
    die "build kueue on its own (build.sh kueue): it has its own bin dir"
fi

target_of() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ "${t%%|*}" == "$1" ]] && { printf '%s\n' "$t"; return 0; }
    done
    return 1
}

# --- where: the pin hash --------------------------------------------------------------------
go_version="$(go -C "$HERE" env GOVERSION)" || die "go env failed in $HERE"
pins_of() { # the pin files of the control plane (everything but ./kueue), or of ./kueue
    if ((separate)); then
        find ./kueue \( -name go.mod -o -name go.sum -o -name '*.go' \) -type f -print0
    else
        find . -path ./kueue -prune -o \( -name go.mod -o -name go.sum -o -name '*.go' \) -type f -print0
    fi
}
pin_hash="$(
    {
        echo "recipe $RECIPE_REV"
        echo "go $go_version"
        cd "$HERE"
        pins_of | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)"
if ((separate)); then pin_hash="kueue-$pin_hash"; fi
PREFIX="$CACHE_DIR/gobuild/$pin_hash"
BIN_DIR="$PREFIX/bin"

if ((print_only)); then
    echo "$BIN_DIR"
    exit 0
fi

missing() {
    local name
    for name in "${want[@]}"; do
        [[ -x "$BIN_DIR/$name" ]] || echo "$name"
    done
}

mapfile -t todo < <(missing)
if ((${#todo[@]} == 0)); then
    log "all of ${want[*]} present in $BIN_DIR; nothing to do"
    echo "$BIN_DIR"
    exit 0
fi

# --- one build at a time ----------------------------------------------------------------------
mkdir -p "$BIN_DIR" "$CACHE_DIR/gobuild"
lock="$CACHE_DIR/gobuild/.lock"
((separate)) && lock="$lock-kueue"
exec 9>"$lock"
if ! flock -n 9; then
    log "another build holds $lock; waiting for it"
    flock 9
fi
mapfile -t todo < <(missing)
if ((${#todo[@]} == 0)); then
    log "all of ${want[*]} present in $BIN_DIR (built by another run); nothing to do"
    echo "$BIN_DIR"
    exit 0
fi

LOG_FILE="$PREFIX/build.log"
log "pins $pin_hash ($go_version); building ${todo[*]} into $BIN_DIR (log: $LOG_FILE)"

# -X flags that make `kubectl version` and /version show the pinned release, as
# hack/lib/version.sh does for a release build (a module-proxy zip carries no git commit,
# so gitCommit stays empty and the tree state is "archive", like a `git archive` build).
kube_ldflags() {
    local info version time major minor key val flags=""
    info="$(go -C "$HERE" list -m -f '{{.Version}} {{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)" \
        || die "cannot resolve the k8s.io/kubernetes pin in $HERE/go.mod"
    read -r version time <<<"$info"
    [[ "$version" =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "unexpected k8s.io/kubernetes version '$version'"
    major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
    for kv in "gitVersion=$version" "gitMajor=$major" "gitMinor=$minor" "gitCommit=" \
        "gitTreeState=archive" "buildDate=$time"; do
        key="${kv%%=*}" val="${kv#*=}"
        flags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
    done
    printf '%s' "$flags"
}

KUBE_LDFLAGS=""
total_start=$SECONDS
for name in "${todo[@]}"; do
    IFS='|' read -r _ moddir pkg kind _ <<<"$(target_of "$name")"
    ldflags="-s -w"
    if [[ "$kind" == kube ]]; then
        [[ -n "$KUBE_LDFLAGS" ]] || KUBE_LDFLAGS="$(kube_ldflags)"
        ldflags+="$KUBE_LDFLAGS"
    fi
    tmp="$BIN_DIR/.$name.tmp.$$"
    log "building $name ($pkg in ${moddir})"
    start=$SECONDS
    set +e
    go -C "$HERE/$moddir" build -p 2 -trimpath -ldflags="$ldflags" -o "$tmp" "$pkg" 2>&1 \
        | tee -a "$LOG_FILE" >&2
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        rm -f "$tmp"
        die "building $name failed (go build $pkg in $HERE/$moddir); output above and in $LOG_FILE"
    fi
    mv -f "$tmp" "$BIN_DIR/$name"
    log "built $name in $((SECONDS - start))s"
done
log "done in $((SECONDS - total_start))s: $BIN_DIR"
echo "$BIN_DIR"
