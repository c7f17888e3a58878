#!/usr/bin/env bash
# Single-stream TCP throughput through WireGuard, measured in one run on
# this machine: two network namespaces on a veth, iperf3 single stream
# through (a) the bare veth, (b) Debian's wireguard-go, (c) a modern
# upstream wireguard-go (GSO/GRO) if one is on PATH as wireguard-go-modern
# (skipped with a note if not; bench/wg/build-modern.sh builds one), (d)
# knitd wg, each REPS times for DURATION seconds; prints every run, the
# medians in Gbit/s and the daemons' CPU seconds per GB (both ends; what a
# loaded machine cannot skew), and knitd's ratio to each of the others, by
# throughput and by CPU per byte. With -F, also
# (e) knitd enforcing that packetFilter file on both ends (knitd wg
# --packet-filter), and its ratio to (d).
#
#   sudo bench/wg/run.sh [-d SECONDS] [-r REPS] [-b BUILD_DIR] [-k "KNITD ARGS"] [-p PATHS] [-F FILTER]
#
# -p runs only some paths (comma-separated: veth,wireguard-go,
# wireguard-go-modern,knitd,knitd-policy; all by default): for quick
# iterations. The tunnel addresses are 10.210.0.1 (client) and 10.210.0.2
# (iperf3 server, port 5201): a filter must allow that flow.
#
# Needs root (namespaces, TUN), iperf3, wireguard-go, wg. knitd comes from
# BUILD_DIR (default build/default; use a release build).
set -uo pipefail

DURATION=10 REPS=3
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${KNIT_BUILD_DIR:-$SRC/build/default}
KNITD_ARGS="" PATHS=veth,wireguard-go,wireguard-go-modern,knitd,knitd-policy FILTER=""
while getopts "d:r:b:k:p:F:h" o; do
	case $o in
	d) DURATION=$OPTARG ;;
	r) REPS=$OPTARG ;;
	b) BUILD=$OPTARG ;;
	k) KNITD_ARGS=$OPTARG ;;
	p) PATHS=$OPTARG ;;
	F) FILTER=$(realpath "$OPTARG") ;;
	*) sed -n '2,21p' "$0"; exit 2 ;;
	esac
done
KNITD=$BUILD/agent/knitd
[ "$(id -u)" -eq 0 ] || { echo "run.sh: must run as root" >&2; exit 1; }
for b in "$KNITD" iperf3 wireguard-go wg ip python3; do
	command -v "$b" >/dev/null 2>&1 || [ -x "$b" ] || { echo "run.sh: missing $b" >&2; exit 1; }
done

NSA=knit-bench-$$-a NSB=knit-bench-$$-b
IFA=kb$$a IFB=kb$$b
WORK=$(mktemp -d /tmp/knit-bench-wg.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	# Whatever else runs in our namespaces is ours too: a leftover would
	# keep the caller's lock file (flock) open.
	for ns in "$NSA" "$NSB"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
	done
	ip netns del "$NSA" 2>/dev/null
	ip netns del "$NSB" 2>/dev/null
	rm -f "/var/run/wireguard/$IFA.sock" "/var/run/wireguard/$IFB.sock"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
inA() { ip netns exec "$NSA" "$@"; }
inB() { ip netns exec "$NSB" "$@"; }

ip netns add "$NSA" && ip netns add "$NSB" || exit 1
ip link add va netns "$NSA" type veth peer name vb netns "$NSB"
inA ip addr add 192.168.210.1/24 dev va
inB ip addr add 192.168.210.2/24 dev vb
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
inA ip link set va up
inB ip link set vb up
umask 077
wg genkey >"$WORK/a.key"
wg genkey >"$WORK/b.key"

# Not through inB(): a function in the background is a subshell, and $!
# would name it instead of the server.
ip netns exec "$NSB" iperf3 -s >/dev/null 2>&1 &
PIDS+=($!)

# CPU time (user + system, clock ticks) the tunnel's two daemons have
# used so far: PIDS[0] is the iperf3 server, the rest are theirs.
daemon_ticks() {
	local t=0 p
	for p in "${PIDS[@]:1}"; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# One iperf3 run: prints the receiver's Gbit/s, the sender's TCP
# retransmissions, and the CPU seconds both daemons spent per GB received
# ("-" for the bare veth). The last holds up on a loaded machine, where
# Gbit/s follows whatever share of the CPUs the run got.
measure() { # server address
	local t0 t1
	t0=$(daemon_ticks)
	inA iperf3 -c "$1" -t "$DURATION" -J >"$WORK/iperf.json" 2>/dev/null
	t1=$(daemon_ticks)
	python3 -c '
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    ticks, hz = int(sys.argv[2]), int(sys.argv[3])
    gb = end["sum_received"]["bytes"] / 1e9
    cpu = "%.2f" % (ticks / hz / gb) if ticks > 0 and gb > 0 else "-"
    print("%.3f %d %s" % (end["sum_received"]["bits_per_second"] / 1e9, end["sum_sent"].get("retransmits", -1), cpu))
except Exception:
    print("0.000 -1 -")' "$WORK/iperf.json" "$((t1 - t0))" "$(getconf CLK_TCK)"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# Starts an implementation on both sides and connects them.
tunnel_up() { # wireguard-go | knitd | knitd-policy
	local impl=$1 ns ifn
	for side in a b; do
		if [ $side = a ]; then ns=$NSA ifn=$IFA; else ns=$NSB ifn=$IFB; fi
		if [ "$impl" = knitd ]; then
			# shellcheck disable=SC2086
			ip netns exec "$ns" "$KNITD" wg -f $KNITD_ARGS "$ifn" >"$WORK/$impl.$side.log" 2>&1 &
		elif [ "$impl" = knitd-policy ]; then
			# shellcheck disable=SC2086
			ip netns exec "$ns" "$KNITD" wg -f $KNITD_ARGS --packet-filter "$FILTER" "$ifn" \
				>"$WORK/$impl.$side.log" 2>&1 &
		else
			ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
				"$impl" -f "$ifn" >"$WORK/$impl.$side.log" 2>&1 &
		fi
		PIDS+=($!)
	done
	for i in $(seq 100); do
		[ -S "/var/run/wireguard/$IFA.sock" ] && [ -S "/var/run/wireguard/$IFB.sock" ] && break
		sleep 0.1
	done
	inA wg set "$IFA" private-key "$WORK/a.key" listen-port 51850 \
		peer "$(wg pubkey <"$WORK/b.key")" endpoint 192.168.210.2:51851 allowed-ips 10.210.0.2/32
	inB wg set "$IFB" private-key "$WORK/b.key" listen-port 51851 \
		peer "$(wg pubkey <"$WORK/a.key")" endpoint 192.168.210.1:51850 allowed-ips 10.210.0.1/32
	inA ip addr add 10.210.0.1/24 dev "$IFA"
	inB ip addr add 10.210.0.2/24 dev "$IFB"
	inA ip link set "$IFA" up
	inB ip link set "$IFB" up
	for i in $(seq 50); do inA ping -c 1 -W 1 10.210.0.2 >/dev/null 2>&1 && return 0; done
	echo "run.sh: $impl tunnel did not come up" >&2
	return 1
}

tunnel_down() {
	local keep=() p
	for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	PIDS=("${PIDS[0]}")
	for i in $(seq 50); do
		ip -n "$NSA" link show "$IFA" >/dev/null 2>&1 || ip -n "$NSB" link show "$IFB" >/dev/null 2>&1 || break
		sleep 0.1
	done
}

declare -A RUNS MED CPU
run_case() { # name server-address
	local name=$1 addr=$2 r v=() c=()
	for r in $(seq "$REPS"); do
		read -r g retr cpu < <(measure "$addr")
		v+=("$g")
		[ "$cpu" = - ] || c+=("$cpu")
		echo "  $name run $r: $g Gbit/s ($retr retransmits, daemons' CPU $cpu s/GB)" >&2
	done
	RUNS[$name]="${v[*]}"
	MED[$name]=$(median "${v[@]}")
	if [ "${#c[@]}" -gt 0 ]; then CPU[$name]=$(median "${c[@]}"); fi
}

echo "knit WireGuard benchmark: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)" >&2
echo "iperf3 single TCP stream, ${DURATION}s x $REPS, veth MTU 1500, tunnel MTU 1420" >&2
wanted() { case ",$PATHS," in *",$1,"*) return 0 ;; esac; return 1; }
if wanted wireguard-go-modern && ! command -v wireguard-go-modern >/dev/null 2>&1; then
	echo "note: no wireguard-go-modern on PATH (an upstream wireguard-go build with GSO/GRO: bench/wg/build-modern.sh): skipped" >&2
	PATHS=${PATHS//wireguard-go-modern/}
fi
if wanted knitd-policy && [ -z "$FILTER" ]; then
	PATHS=${PATHS//knitd-policy/}
fi
if wanted veth; then run_case veth 192.168.210.2; fi
for impl in wireguard-go wireguard-go-modern knitd knitd-policy; do
	wanted $impl || continue
	tunnel_up $impl && run_case $impl 10.210.0.2
	tunnel_down
done
# Which ChaCha20-Poly1305 code knitd measured fastest here (or KNIT_AEAD chose).
AEAD=$(grep -ho 'msg="AEAD backend" packets=[a-z0-9]*' "$WORK/knitd.a.log" 2>/dev/null | head -n1 | cut -d= -f3)

printf '\n%-20s %-26s %12s %12s\n' "path" "runs (Gbit/s)" "median" "CPU s/GB"
for n in veth wireguard-go wireguard-go-modern knitd knitd-policy; do
	printf '%-20s %-26s %12s %12s\n' "$n" "${RUNS[$n]:-}" "${MED[$n]:-n/a}" "${CPU[$n]:--}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '\nknitd / wireguard-go:        %sx   (target >= 12x)\n' "$(ratio "${MED[knitd]:-0}" "${MED[wireguard-go]:-0}")"
if [ -n "${MED[wireguard-go-modern]:-}" ]; then
	printf 'knitd / wireguard-go-modern: %sx   (target >= 2x)\n' \
		"$(ratio "${MED[knitd]:-0}" "${MED[wireguard-go-modern]:-0}")"
	# The same comparison by CPU per byte (the daemons', both ends): what
	# a loaded machine cannot skew.
	printf '  by CPU per GB:             %sx\n' \
		"$(ratio "${CPU[wireguard-go-modern]:-0}" "${CPU[knitd]:-0}")"
else
	printf 'knitd / wireguard-go-modern: n/a (not run)\n'
fi
printf 'knitd / veth:                %s\n' "$(ratio "${MED[knitd]:-0}" "${MED[veth]:-0}")"
printf 'knitd:                       %s Gbit/s (target >= 4)\n' "${MED[knitd]:-0}"
if wanted knitd; then printf 'knitd AEAD backend:          %s\n' "${AEAD:-unknown}"; fi
if [ -n "${MED[knitd-policy]:-}" ]; then
	printf 'knitd-policy / knitd:        %s   (filter %s; target >= 0.95)\n' "$(ratio "${MED[knitd-policy]}" "${MED[knitd]:-0}")" "$(basename "$FILTER")"
fi
