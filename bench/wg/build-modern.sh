#!/usr/bin/env bash
# Builds a modern upstream wireguard-go (UDP GSO/GRO, TUN offloads) for
# bench/wg/run.sh, offline, with Debian bookworm's Go 1.19 and its
# golang.org/x packages, from a source snapshot kept in a cache directory
# (never in git):
#
#   bench/wg/build-modern.sh [-c CACHE] [-s SOURCE] [-r COMMIT]
#   PATH=CACHE/bin:$PATH sudo -E bench/wg/run.sh
#
# CACHE   default ${KNIT_CACHE_DIR:-/var/cache/knit}/wireguard-go
# SOURCE  where to take the snapshot from when CACHE has none: a git
#         directory (a clone or bare mirror) or a URL to clone
#         (https://git.zx2c4.com/wireguard-go); stored as
#         CACHE/wireguard-go-COMMIT.tar, whose sha256 is checked on reuse
# COMMIT  default f333402bd9cb (2025-05-22, v0.0.20250522: GSO/GRO since
#         d0bc03c, 2023-10-31)
#
# Upstream asks for Go 1.23; three mechanical shims make it build with 1.19,
# each only when needed:
#   - x/sys 0.3.0 lacks SOL_UDP, UDP_SEGMENT, UDP_GRO, TUN_F_* and
#     VIRTIO_NET_HDR_* (values from linux/udp.h, if_tun.h, virtio_net.h):
#     a copy of it gets one file defining them;
#   - binary.NativeEndian (Go 1.21) becomes binary.LittleEndian (the same on
#     the little-endian hosts this refuses to build anywhere else);
#   - errors.Join (Go 1.20) becomes a local join with fmt.Errorf("%w").
# Needs: golang-1.19-go (or golang-go), golang-golang-x-crypto-dev,
# golang-golang-x-net-dev, golang-golang-x-sys-dev, git (for SOURCE only).
# Prints the binary's path: CACHE/bin/wireguard-go-modern.
set -euo pipefail

CACHE=${KNIT_CACHE_DIR:-/var/cache/knit}/wireguard-go
SOURCE="" COMMIT=f333402bd9cbe0f3eeb02507bd14e23d7d639280
while getopts "c:s:r:h" o; do
	case $o in
	c) CACHE=$OPTARG ;;
	s) SOURCE=$OPTARG ;;
	r) COMMIT=$OPTARG ;;
	*) sed -n '2,29p' "$0"; exit 2 ;;
	esac
done
die() { echo "build-modern.sh: $*" >&2; exit 1; }

GO=$(command -v go || true)
for g in /usr/lib/go-1.19/bin/go /usr/lib/go/bin/go; do [ -n "$GO" ] || { [ -x "$g" ] && GO=$g; }; done
[ -n "$GO" ] || die "no Go toolchain (apt-get install golang-1.19-go)"
GOCODE=/usr/share/gocode/src
for p in golang.org/x/crypto golang.org/x/net golang.org/x/sys; do
	[ -d "$GOCODE/$p" ] || die "missing $GOCODE/$p (apt-get install golang-golang-x-{crypto,net,sys}-dev)"
done
case $(printf '\001\000' | od -An -tu2 | tr -d ' ') in
1) ;;
*) die "big-endian host: the binary.NativeEndian shim does not apply" ;;
esac

mkdir -p "$CACHE/bin"
TAR=$CACHE/wireguard-go-$COMMIT.tar
if [ ! -f "$TAR" ]; then
	[ -n "$SOURCE" ] || die "no snapshot $TAR: give -s GIT_DIR_OR_URL once"
	if [ -d "$SOURCE" ]; then
		git -C "$SOURCE" archive --format=tar --prefix=wireguard/ "$COMMIT" >"$TAR.part"
	else
		CLONE=$CACHE/wireguard-go.git
		[ -d "$CLONE" ] || git clone --bare --quiet "$SOURCE" "$CLONE"
		git -C "$CLONE" archive --format=tar --prefix=wireguard/ "$COMMIT" >"$TAR.part"
	fi
	mv "$TAR.part" "$TAR"
	sha256sum "$TAR" | cut -d' ' -f1 >"$TAR.sha256"
fi
[ "$(sha256sum "$TAR" | cut -d' ' -f1)" = "$(cat "$TAR.sha256")" ] || die "$TAR does not match $TAR.sha256"

WORK=$(mktemp -d /tmp/knit-wggo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src/golang.zx2c4.com/wireguard
mkdir -p "$WORK/src/golang.zx2c4.com" "$WORK/src/golang.org/x"
tar -xf "$TAR" -C "$WORK/src/golang.zx2c4.com"

# x/sys: a private copy with the constants this x/sys lacks.
UNIX=$WORK/src/golang.org/x/sys/unix
cp -r "$GOCODE/golang.org/x/sys" "$WORK/src/golang.org/x/"
shim=""
for c in SOL_UDP=0x11 UDP_SEGMENT=0x67 UDP_GRO=0x68 \
	TUN_F_CSUM=0x1 TUN_F_TSO4=0x2 TUN_F_TSO6=0x4 TUN_F_TSO_ECN=0x8 TUN_F_UFO=0x10 TUN_F_USO4=0x20 TUN_F_USO6=0x40 \
	VIRTIO_NET_HDR_F_NEEDS_CSUM=0x1 VIRTIO_NET_HDR_GSO_NONE=0x0 VIRTIO_NET_HDR_GSO_TCPV4=0x1 \
	VIRTIO_NET_HDR_GSO_UDP=0x3 VIRTIO_NET_HDR_GSO_TCPV6=0x4 VIRTIO_NET_HDR_GSO_UDP_L4=0x5 \
	VIRTIO_NET_HDR_GSO_ECN=0x80; do
	grep -qE "^\s+${c%%=*}\s+=" "$UNIX"/zerrors_linux*.go "$UNIX"/ztypes_linux*.go || shim+="	${c%%=*} = ${c#*=}"$'\n'
done
if [ -n "$shim" ]; then
	printf 'package unix\n\n// Missing from this x/sys (build-modern.sh).\nconst (\n%s)\n' "$shim" >"$UNIX/zknit_shim_linux.go"
fi

# Go 1.19 for code written for 1.21+.
minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "$minor" -lt 21 ]; then
	grep -rlZ 'binary\.NativeEndian' --include='*.go' "$SRC" | xargs -0r sed -i 's/binary\.NativeEndian/binary.LittleEndian/g'
fi
if [ "$minor" -lt 20 ]; then
	while IFS= read -r -d '' f; do
		sed -i 's/errors\.Join(/knitJoinErrors(/g' "$f"
		d=$(dirname "$f")
		[ -f "$d/zknit_join.go" ] && continue
		cat >"$d/zknit_join.go" <<EOF
package $(sed -n 's/^package //p' "$f" | head -n1)

import "fmt"

// errors.Join (Go 1.20): nil when every error is nil.
func knitJoinErrors(errs ...error) error {
	var out error
	for _, e := range errs {
		if e == nil {
			continue
		}
		if out == nil {
			out = e
		} else {
			out = fmt.Errorf("%v\n%w", out, e)
		}
	}
	return out
}
EOF
	done < <(grep -rlZ 'errors\.Join(' --include='*.go' "$SRC")
fi

(cd "$SRC" && env GOPATH="$WORK:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
	GOCACHE="$WORK/cache" CGO_ENABLED=0 "$GO" build -trimpath -ldflags=-buildid= \
	-o "$CACHE/bin/wireguard-go-modern.part" .) || die "go build failed (Go $("$GO" env GOVERSION), commit $COMMIT)"
mv "$CACHE/bin/wireguard-go-modern.part" "$CACHE/bin/wireguard-go-modern"
echo "$CACHE/bin/wireguard-go-modern"
