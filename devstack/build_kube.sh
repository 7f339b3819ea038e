#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager 1.20.2 for the test control plane.
#
# Why from Debian source: the only network this project's CI and dev machines may use is
# apt, so the binaries come from Debian's `kubernetes` source package (bookworm,
# 1.20.5+really1.20.2-1.1+deb12u1) built with Debian's Go 1.19 and its vendored modules.
# The vendored github.com/modern-go/reflect2 1.0.1 crashes the API server on the first
# custom-resource write under Go >= 1.18, so it is replaced by Debian's reflect2 1.0.2.
#
# Idempotent: when both binaries are already in the cache it exits immediately. Needs root
# only when Debian packages are missing (apt-get install) or the source must be fetched.
#
# Result: ${DNA_HUB_CACHE_DIR:-$HOME/.cache/dna-hub}/kube-1.20.2/bin/{kube-apiserver,kube-controller-manager}
set -euo pipefail

KUBE_VERSION="1.20.2"
DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
PACKAGES=(etcd-server golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev rsync dpkg-dev)
REFLECT2_SRC="/usr/share/gocode/src/github.com/modern-go/reflect2"
GO_BIN="/usr/lib/go-1.19/bin"
SRC_LIST="/etc/apt/sources.list.d/dna-hub-src.sources"

CACHE_DIR="${DNA_HUB_CACHE_DIR:-$HOME/.cache/dna-hub}"
PREFIX="$CACHE_DIR/kube-$KUBE_VERSION"
BIN_DIR="$PREFIX/bin"
WORK_DIR="$PREFIX/work"
BINARIES=(kube-apiserver kube-controller-manager)

log() { printf '[build_kube %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        [[ -x "$BIN_DIR/$b" ]] || return 1
    done
    # etcd is a runtime prerequisite too; the fast path must not hide its absence.
    command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]] || return 1
}

if have_binaries; then
    log "binaries present in $BIN_DIR; nothing to do"
    exit 0
fi

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "$1 requires root (run: sudo $0)"
}

# One build at a time (parallel test runs may all find the binaries missing).
mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
if ! flock -n 9; then
    log "another build is running; waiting for it"
    flock 9
fi
if have_binaries; then
    log "binaries present in $BIN_DIR (built by another run); nothing to do"
    exit 0
fi

# --- 1. Debian packages -------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    need_root "installing ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[[ -d "$REFLECT2_SRC" ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
[[ -x "$GO_BIN/go" ]] || die "$GO_BIN/go missing (golang-1.19-go)"

# If only etcd was missing, we are done now.
if have_binaries; then
    log "binaries present in $BIN_DIR; nothing to do"
    exit 0
fi

# --- 2. deb-src for bookworm ---------------------------------------------------------------
fetch_source() {
    if [[ ! -f "$SRC_LIST" ]]; then
        need_root "enabling deb-src ($SRC_LIST)"
        log "enabling bookworm deb-src in $SRC_LIST"
        cat >"$SRC_LIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update -q
    fi
    if ! apt-cache showsrc "kubernetes=$DEB_VERSION" 2>/dev/null | grep -q "^Version: $DEB_VERSION\$"; then
        need_root "apt-get update (source index for kubernetes $DEB_VERSION)"
        apt-get update -q
    fi
    rm -rf "$WORK_DIR"
    mkdir -p "$WORK_DIR"
    log "fetching Debian source package kubernetes=$DEB_VERSION"
    (cd "$WORK_DIR" && apt-get source -q "kubernetes=$DEB_VERSION")
}

# --- 3. source tree with reflect2 1.0.2 ----------------------------------------------------
tree=""
if [[ -f "$WORK_DIR/.prepared" ]]; then
    tree="$(cat "$WORK_DIR/.prepared")"
    [[ -d "$tree/vendor" ]] || tree=""
fi
if [[ -z "$tree" ]]; then
    fetch_source
    tree="$(find "$WORK_DIR" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
    [[ -n "$tree" && -d "$tree/vendor" ]] || die "no unpacked kubernetes tree with vendor/ in $WORK_DIR"
    log "replacing vendored reflect2 with Debian's $(basename "$REFLECT2_SRC") from $REFLECT2_SRC"
    rsync -a --delete --exclude '.git' "$REFLECT2_SRC/" "$tree/vendor/github.com/modern-go/reflect2/"
    sed -i 's|^# github.com/modern-go/reflect2 v1\.0\.1$|# github.com/modern-go/reflect2 v1.0.2|' \
        "$tree/vendor/modules.txt"
    echo "$tree" >"$WORK_DIR/.prepared"
fi

# --- 4. build --------------------------------------------------------------------------------
export PATH="$GO_BIN:$PATH"
export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on
# Keep the Go build cache inside the work dir so deleting the tree frees all of it.
export GOCACHE="$WORK_DIR/gocache" GOPATH="$WORK_DIR/gopath"
log "Go: $(go version)"
for b in "${BINARIES[@]}"; do
    log "building cmd/$b (about 5 minutes on 2 cores)"
    start=$SECONDS
    (cd "$tree" && make WHAT="cmd/$b")
    log "built cmd/$b in $((SECONDS - start))s"
done

mkdir -p "$BIN_DIR"
for b in "${BINARIES[@]}"; do
    built="$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -n1)"
    [[ -n "$built" ]] || die "built $b not found under $tree/_output"
    install -m 0755 "$built" "$BIN_DIR/$b.tmp"
    mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    log "installed $BIN_DIR/$b ($("$BIN_DIR/$b" --version 2>/dev/null || echo '?'))"
done

log "removing source tree and build cache $WORK_DIR"
chmod -R u+w "$WORK_DIR" 2>/dev/null || true
rm -rf "$WORK_DIR"
log "done"
