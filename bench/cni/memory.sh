#!/usr/bin/env bash
# knitd memory per pod identity (issue 17), one run on this machine, no
# cluster and no CNI chain: a real kube-apiserver holding Pod objects and
# knit-operator, one knitd "node" in a namespace, and pod identities
# attached through knitd's local API as knit-cni attaches them
# (POST /localapi/v1/identities with the pod's netns; knitd makes the TUN,
# moves it there and registers the identity with the operator).
#
#   sudo bench/cni/memory.sh [-s STEPS] [-p PARALLEL] [-b BUILD_DIR] [-k KNITD]
#
# STEPS (default "50 200"): identity counts to measure at, ascending; 0
# (the node alone) is always measured first, in the same run, as the
# baseline. Each step waits until the node sees every pod as a peer and
# knitd's RSS has stopped moving (every identity has its netmap: with
# the default allow-all policy each of N identities has N peers). Then:
#   - VmRSS, Pss and Anonymous (/proc/PID/smaps_rollup), threads;
#   - malloc's own count (glibc malloc_stats() called in knitd through gdb
#     when gdb is installed: "in use" and "system" bytes, all arenas);
#   - per identity: (figure at N - figure at 0) / N, in KB.
# At the end every identity is detached and the figures are taken again
# (what a DEL leaves behind). Target: <= 100 KB of knitd RSS per identity
# at 200 identities.
#
# BUILD_DIR (default build/bench, configured RelWithDebInfo and built
# here, as bench/cni/run.sh) supplies knitd, knit and knit-operator;
# -k KNITD measures another knitd binary (an older build, to compare).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
STEPS="50 200" PAR=20 KNITD_BIN=
build=${KNIT_BENCH_BUILD:-$src/build/bench}
while getopts "s:p:b:k:h" o; do
	case $o in
	s) STEPS=$OPTARG ;;
	p) PAR=$OPTARG ;;
	b) build=$OPTARG ;;
	k) KNITD_BIN=$OPTARG ;;
	*) sed -n '2,27p' "$0"; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
if [ -z "${KNIT_BENCH_NO_BUILD:-}" ]; then
	bench_build "$build" knitd knit_cli knit-operator || exit 1
fi
PODS=0
for n in $STEPS; do [ "$n" -gt "$PODS" ] && PODS=$n; done

export KNIT_BUILD_DIR=$build KNIT_SOURCE_DIR=$src
source "$src/test/e2e/lib/common.sh"
source "$src/test/e2e/lib/apiserver.sh"
source "$src/test/e2e/lib/tailnet.sh"
[ -z "$KNITD_BIN" ] || KNITD=$KNITD_BIN
e2e_begin bench-cni-memory
[ -z "${KNIT_BENCH_KEEP:-}" ] || e2e_defer "rm -rf '$KNIT_BENCH_KEEP'; cp -r '$E2E_DIR' '$KNIT_BENCH_KEEP'"
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" jq curl
GDB=$(command -v gdb || true)
tailnet_kube_up
NS=knit-system
$K create namespace app >/dev/null && $K -n app create serviceaccount web >/dev/null || e2e_die "namespaces"
tailnet_net_up $((20 + ($$ + 31) % 200))
TAILNET_OP_ARGS="--log-level warn --no-leader-election" tailnet_operator_start op-1
NODE_KEY=$(tailnet_authkey nodes '{"reusable":true}')
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
tailnet_host_add node1 1
mkdir -p "$E2E_DIR/node1"
# Release knitd at warn level: the bench measures it, not its log. Its
# stderr is where malloc_stats() writes.
e2e_bg knitd-node1 ip netns exec "$(ns_name node1)" "$KNITD" run --state-dir "$E2E_DIR/node1/state" \
	--socket "$E2E_DIR/node1/knitd.sock" --tun knit0 --port 41641 --log-level warn
KPID=$E2E_PID
SOCK=$E2E_DIR/node1/knitd.sock
e2e_wait_for 20 test -S "$SOCK" || e2e_die "knitd did not start"
tailnet_knit node1 up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" \
	--hostname node1 >/dev/null || e2e_die "node1 cannot join"

{
	echo '{"apiVersion":"v1","kind":"List","items":['
	for k in $(seq "$PODS"); do
		printf '%s{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m%s","namespace":"app","annotations":{"knit.dev/identity":"true"}},"spec":{"nodeName":"node1","serviceAccountName":"web","automountServiceAccountToken":false,"containers":[{"name":"c","image":"busybox"}]}}\n' \
			"$([ "$k" = 1 ] || echo ,)" "$k"
	done
	echo ']}'
} | $K apply -f - >/dev/null || e2e_die "pod objects"
$K -n app get pods -o json | jq -r '.items[] | "\(.metadata.name) \(.metadata.uid)"' >"$E2E_DIR/uids"
for k in $(seq "$PODS"); do
	ip netns add "$(ns_name "m$k")" || e2e_die "pod netns m$k"
	e2e_defer "ip netns del $(ns_name "m$k") 2>/dev/null"
done

# attach K: pod mK's identity, as knit-cni's ADD asks for it.
attach() {
	local k=$1 uid
	uid=$(awk -v n="m$k" '$1 == n {print $2}' "$E2E_DIR/uids")
	curl -sf --max-time 60 --unix-socket "$SOCK" -X POST http://x/localapi/v1/identities \
		-d "{\"containerID\":\"cm$k\",\"ifName\":\"knit0\",\"netns\":\"/var/run/netns/$(ns_name "m$k")\",\"network\":\"podnet\",\"podNamespace\":\"app\",\"podName\":\"m$k\",\"podUID\":\"$uid\"}" \
		>/dev/null || echo "attach m$k failed" >>"$E2E_DIR/attach.log"
}
detach() {
	curl -sf --max-time 60 --unix-socket "$SOCK" -X DELETE "http://x/localapi/v1/identities/cm$1/knit0" >/dev/null ||
		echo "detach m$1 failed" >>"$E2E_DIR/failures"
}
export -f attach detach ns_name
export E2E_DIR E2E_TAG SOCK

listed() { curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r '.identities[].containerID' | sort; }
identities() { curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq '.identities | length'; }
node_peers() { tailnet_knit node1 status --json | jq '.peers | length'; }
rollup() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/smaps_rollup"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# RSS still: the same (within 0.5 %) over three samples a second apart.
LAST=0 STILL=0
settled() {
	local r
	r=$(rss_kb "$KPID")
	if [ $((r > LAST ? r - LAST : LAST - r)) -le $((LAST / 200)) ]; then STILL=$((STILL + 1)); else STILL=0; fi
	LAST=$r
	[ "$STILL" -ge 3 ]
}
# malloc_stats() in knitd: "in use" and "system" bytes over all arenas,
# from its "Total (incl. mmap):" lines, in KB; "- -" without gdb.
heap() {
	local log=$E2E_DIR/knitd-node1.log before
	[ -n "$GDB" ] || { echo "- -"; return; }
	before=$(wc -l <"$log")
	"$GDB" -p "$KPID" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1
	tail -n +$((before + 1)) "$log" | awk '/^Total/ {t = 1} t && /system bytes/ {s = $NF} t && /in use bytes/ {u = $NF}
		END {if (s == "") print "- -"; else printf "%d %d\n", u / 1024, s / 1024}'
}
# measure N [LABEL OP PEERS]: one line of figures with N identities up,
# once node1 sees PEERS peers by OP (default: at least N: an ADD that
# timed out and was tried again leaves a Device until its Pod goes).
measure() {
	local n=$1 label=${2:-$1} op=${3:--ge} want=${4:-$1}
	e2e_expect "knitd carries $n identities" "$n" "$(identities)"
	e2e_wait_for 120 bash -c "[ \"\$(\"$KNIT\" --socket '$SOCK' status --json | jq '.peers | length')\" $op $want ]" ||
		e2e_log "node1 sees $(node_peers) peers, wanted $op $want"
	LAST=0 STILL=0
	e2e_wait_for 120 settled || e2e_log "RSS still moving at $n identities"
	echo "$label $(rss_kb "$KPID") $(rollup "$KPID" Pss) $(rollup "$KPID" Anonymous) $(awk '/^Threads/ {print $2}' "/proc/$KPID/status") $(heap)" |
		tee -a "$E2E_DIR/figures"
}

: >"$E2E_DIR/figures"
measure 0
at=0
for n in $STEPS; do
	seq $((at + 1)) "$n" | xargs -P "$PAR" -I{} bash -c 'attach {}'
	# An ADD that timed out (a loaded machine) is tried again, as kubelet does.
	for round in 1 2 3; do
		missing=$(comm -13 <(listed) <(seq -f 'cm%g' "$n" | sort))
		[ -n "$missing" ] || break
		e2e_log "attaching $(wc -w <<<"$missing") identities again (round $round)"
		tr ' ' '\n' <<<"$missing" | sed 's/^cm//' | xargs -P "$PAR" -I{} bash -c 'attach {}'
	done
	e2e_expect "every identity up to $n attached" "" "$(comm -13 <(listed) <(seq -f 'cm%g' "$n" | sort) | head -3)"
	measure "$n"
	at=$n
done
peers=$(node_peers)
seq "$at" | xargs -P "$PAR" -I{} bash -c 'detach {}'
e2e_expect "every detach succeeded" "" "$(head -3 "$E2E_DIR/failures" 2>/dev/null)"
measure 0 detached -le $((peers - at))

echo
echo "knitd memory per pod identity (KB; baseline: the same knitd with 0 identities, this run)"
awk 'NR == 1 {r0 = $2; p0 = $3; a0 = $4; u0 = $6; s0 = $7}
	{printf "%-12s rss %7d  pss %7d  anon %7d  threads %4d  malloc in-use %7s system %7s", $1, $2, $3, $4, $5, $6, $7}
	NR > 1 && $1 + 0 > 0 {printf "  | per identity: rss %5d pss %5d anon %5d malloc %5s", ($2 - r0) / $1, ($3 - p0) / $1, ($4 - a0) / $1,
		(u0 == "-" ? "-" : int(($6 - u0) / $1))}
	$1 == "detached" {printf "  | left after detach: rss %+d", $2 - r0}
	{print ""}' "$E2E_DIR/figures"
# With N identities each has about N peers: growth/N = fixed + N * per-peer.
# Two steps give both (the first and the last).
awk 'NR == 1 {r0 = $2} NR > 1 && $1 + 0 > 0 {n[++k] = $1; g[k] = ($2 - r0) / $1}
	END {if (k >= 2 && n[k] != n[1]) {b = (g[k] - g[1]) / (n[k] - n[1]); a = g[1] - n[1] * b
		printf "fit over %d and %d identities: %.0f KB fixed per identity + %.2f KB per peer of each identity\n", n[1], n[k], a, b}}' \
	"$E2E_DIR/figures"
per=$(awk -v n="$PODS" '$1 == 0 {r0 = $2} $1 == n {print int(($2 - r0) / n)}' "$E2E_DIR/figures")
echo "target: $per <= 100 KB of RSS per identity at $PODS identities: $([ "${per:-999999}" -le 100 ] && echo met || echo MISSED)"
e2e_end
