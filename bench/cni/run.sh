#!/usr/bin/env bash
# knit-cni benchmark (issue 17), one run on this machine, no cluster: a
# real kube-apiserver and knit-operator, two knitd "nodes" in namespaces,
# and pods as network namespaces that a small runtime
# (test/e2e/lib/cni_runtime.py) attaches with node1's chain — Debian's
# bridge + host-local, then knit-cni — as containerd would.
#
#   sudo bench/cni/run.sh [-n PODS] [-p PARALLEL] [-d SECONDS] [-b BUILD_DIR]
#
# Prints:
#   - ADD and DEL latency of the whole chain (p50, p99) over PODS annotated
#     pods, PARALLEL at a time, next to the same number of unannotated pods
#     in the same run (the chain's cost without knit: bridge + host-local
#     and the runtime);
#   - knitd's RSS growth per pod identity with PODS identities up;
#   - single-stream TCP (iperf3, DURATION s) pod on node1 -> pod on node2
#     over their own tailnet addresses, next to node1 -> node2 over the
#     nodes' tailnet addresses (knitd node <-> node), in the same run.
# Targets: ADD p99 <= 100 ms; <= 100 KB of knitd RSS per identity;
# pod <-> pod >= 80 % of node <-> node.
#
# BUILD_DIR (default build/bench, configured RelWithDebInfo and built
# here) supplies knitd, knit, knit-operator and knit-cni.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
PODS=200 PAR=20 DURATION=10
build=${KNIT_BENCH_BUILD:-$src/build/bench}
while getopts "n:p:d:b:h" o; do
	case $o in
	n) PODS=$OPTARG ;;
	p) PAR=$OPTARG ;;
	d) DURATION=$OPTARG ;;
	b) build=$OPTARG ;;
	*) sed -n '2,25p' "$0"; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
if [ -z "${KNIT_BENCH_NO_BUILD:-}" ]; then
	bench_build "$build" knitd knit_cli knit-operator knit_cni || exit 1
fi

export KNIT_BUILD_DIR=$build KNIT_SOURCE_DIR=$src
source "$src/test/e2e/lib/common.sh"
source "$src/test/e2e/lib/apiserver.sh"
source "$src/test/e2e/lib/tailnet.sh"
e2e_begin bench-cni
# KNIT_BENCH_KEEP=DIR: the work directory (logs) copied there at the end.
[ -z "${KNIT_BENCH_KEEP:-}" ] || e2e_defer "rm -rf '$KNIT_BENCH_KEEP'; cp -r '$E2E_DIR' '$KNIT_BENCH_KEEP'"
CNI=$build/cni-plugin/knit-cni
RUNTIME=$src/test/e2e/lib/cni_runtime.py
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$CNI" /usr/lib/cni/bridge /usr/lib/cni/host-local jq python3 iperf3
tailnet_kube_up
NS=knit-system
$K create namespace app >/dev/null && $K -n app create serviceaccount web >/dev/null || e2e_die "namespaces"
tailnet_net_up $((20 + ($$ + 17) % 200))
# No leader election: a loaded machine must not make the only operator step down.
TAILNET_OP_ARGS="--log-level warn --no-leader-election" tailnet_operator_start op-1
NODE_KEY=$(tailnet_authkey nodes '{"reusable":true}')
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
BIN=$E2E_DIR/bin
mkdir -p "$BIN" && cp "$CNI" "$BIN/knit-cni"
SUB=$((100 + ($$ % 100)))
for i in 1 2; do
	tailnet_host_add "node$i" "$i"
	in_ns "node$i" sysctl -qw net.ipv4.ip_forward=1
	mkdir -p "$E2E_DIR/node$i"
	tailnet_knitd_token_file "node$i" # binds the node Device to node$i (docs/cni.md)
	# Release knitd at info level: the bench measures it, not its debug log.
	e2e_bg "knitd-node$i" ip netns exec "$(ns_name "node$i")" "$KNITD" run --state-dir "$E2E_DIR/node$i/state" \
		--socket "$E2E_DIR/node$i/knitd.sock" --tun knit0 --port 41641 --log-level warn \
		--pod-token-file "$E2E_DIR/node$i/pod-token"
	eval "KNITD_PID_node$i=$E2E_PID"
	e2e_wait_for 20 test -S "$E2E_DIR/node$i/knitd.sock" || e2e_die "knitd node$i"
	tailnet_knit "node$i" up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" \
		--hostname "node$i" >/dev/null || e2e_die "node$i cannot join"
	cat >"$E2E_DIR/chain$i.conflist" <<JSON
{"cniVersion":"1.0.0","name":"podnet","plugins":[
 {"type":"bridge","bridge":"kb$E2E_TAG$i","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.$SUB.$((i * 8)).0/21"}]],"dataDir":"$E2E_DIR/ipam$i"}},
 {"type":"knit-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"socket":"$E2E_DIR/node$i/knitd.sock"}]}
JSON
done

# Pod objects (the operator binds an identity only to an existing Pod on
# that node): p1..pN and the throughput pods on node1 and node2.
{
	echo '{"apiVersion":"v1","kind":"List","items":['
	for k in $(seq -f 'p%g' "$PODS") t1 t2; do
		node=node1
		[ "$k" = t2 ] && node=node2
		printf '%s{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s","namespace":"app","annotations":{"knit.dev/identity":"true"}},"spec":{"nodeName":"%s","serviceAccountName":"web","automountServiceAccountToken":false,"containers":[{"name":"c","image":"busybox"}]}}\n' \
			"$([ "$k" = p1 ] || echo ,)" "$k" "$node"
	done
	echo ']}'
} | $K apply -f - >/dev/null || e2e_die "pod objects"
$K -n app get pods -o json | jq -r '.items[] | "\(.metadata.name) \(.metadata.uid)"' >"$E2E_DIR/uids"
uid_of() { awk -v n="$1" '$1 == n {print $2}' "$E2E_DIR/uids"; }

# attach CMD NODE NAME ANNOTATED: one runtime call, its latency in ms on stdout.
attach() {
	local cmd=$1 node=$2 name=$3 ann='{}' t0 t1 out
	[ "$4" = true ] && ann='{"knit.dev/identity":"true"}'
	t0=$(date +%s%N)
	out=$(CNI_PATH=$BIN:/usr/lib/cni CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$(ns_name "$name") CNI_CONTAINERID=c$name \
		CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=$name;K8S_POD_UID=$(uid_of "$name")" \
		ip netns exec "$(ns_name "$node")" python3 "$RUNTIME" "$cmd" "$E2E_DIR/chain${node#node}.conflist" \
		"$E2E_DIR/cache-$name" "$ann" 2>>"$E2E_DIR/cni.log")
	local rc=$?
	t1=$(date +%s%N)
	[ $rc -eq 0 ] || { echo "FAIL $cmd $name: $out" >>"$E2E_DIR/failures"; return 1; }
	echo $(((t1 - t0) / 1000000))
}
export -f attach uid_of ns_name
export E2E_DIR E2E_TAG BIN RUNTIME
mkpods() { # PREFIX
	for k in $(seq "$PODS"); do
		ip netns add "$(ns_name "$1$k")" && ip -n "$(ns_name "$1$k")" link set lo up
		e2e_defer "ip netns del $(ns_name "$1$k") 2>/dev/null"
	done
}
run_batch() { # CMD PREFIX ANNOTATED OUT: PODS calls, PAR at a time
	seq "$PODS" | xargs -P "$PAR" -I{} bash -c "attach $1 node1 $2{} $3" >"$4"
}
pct() { # FILE P: the P-th percentile (nearest rank)
	sort -n "$1" | awk -v p="$2" '{v[NR] = $1} END {i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i]}'
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# The knitd process itself (e2e_bg's pid is ip netns exec, which execs it).
KPID=$KNITD_PID_node1

mkpods p
mkpods u
rss0=$(rss_kb "$KPID")
run_batch ADD u false "$E2E_DIR/add-plain.ms"
run_batch ADD p true "$E2E_DIR/add-knit.ms"
e2e_expect "every ADD succeeded" "" "$(head -3 "$E2E_DIR/failures" 2>/dev/null)"
n_ids=$(curl -s --unix-socket "$E2E_DIR/node1/knitd.sock" http://x/localapi/v1/identities | jq '.identities | length')
e2e_expect "knitd carries $PODS identities" "$PODS" "$n_ids"
# RSS settles once every identity has its netmap and sessions' buffers.
settled() { [ "$($K get devices -o name | wc -l)" -ge $((PODS + 2)) ]; }
e2e_wait_for 60 settled
rss1=$(rss_kb "$KPID")
per_id=$(((rss1 - rss0) / PODS))

# Throughput: pod t1 (node1) -> pod t2 (node2) over knit0, and node1 -> node2.
for t in 1 2; do
	ip netns add "$(ns_name "t$t")" && ip -n "$(ns_name "t$t")" link set lo up
	e2e_defer "ip netns del $(ns_name "t$t") 2>/dev/null"
	attach ADD "node$t" "t$t" true >/dev/null || e2e_die "throughput pod t$t: $(tail -1 "$E2E_DIR/failures")"
done
T2=$(ip -n "$(ns_name t2)" -4 -o addr show dev knit0 | awk '{print $4}' | cut -d/ -f1)
N2=$(tailnet_knit node2 ip -4)
ip netns exec "$(ns_name t2)" iperf3 -s -D -p 5201 --logfile "$E2E_DIR/iperf-t2.log"
ip netns exec "$(ns_name node2)" iperf3 -s -D -p 5202 --logfile "$E2E_DIR/iperf-n2.log"
e2e_defer "ip netns pids $(ns_name t2) | xargs -r kill; ip netns pids $(ns_name node2) | xargs -r kill"
gbps() { # NETNS ADDR PORT
	ip netns exec "$1" iperf3 -c "$2" -p "$3" -t "$DURATION" -J 2>/dev/null |
		jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100'
}
up() { ip netns exec "$1" ping -c1 -W1 "$2" >/dev/null 2>&1; }
e2e_wait_for 20 up "$(ns_name t1)" "$T2" || e2e_die "pod t1 cannot reach pod t2"
e2e_wait_for 20 up "$(ns_name node1)" "$N2" || e2e_die "node1 cannot reach node2"
pod_gbps=$(gbps "$(ns_name t1)" "$T2" 5201)
node_gbps=$(gbps "$(ns_name node1)" "$N2" 5202)
pod_gbps2=$(gbps "$(ns_name t1)" "$T2" 5201)
node_gbps2=$(gbps "$(ns_name node1)" "$N2" 5202)

run_batch DEL p true "$E2E_DIR/del-knit.ms"
run_batch DEL u false "$E2E_DIR/del-plain.ms"
e2e_expect "every DEL succeeded" "" "$(head -3 "$E2E_DIR/failures" 2>/dev/null)"
left=$(curl -s --unix-socket "$E2E_DIR/node1/knitd.sock" http://x/localapi/v1/identities | jq '.identities | length')
e2e_expect "knitd carries no pod identity after the DELs but the throughput pod's" 1 "$left"

echo
echo "knit-cni bench: $PODS pods, $PAR at a time (ms for the whole chain through the runtime)"
printf '%-22s %8s %8s %8s\n' "" p50 p99 max
for f in add-plain add-knit del-plain del-knit; do
	printf '%-22s %8s %8s %8s\n' "$f" "$(pct "$E2E_DIR/$f.ms" 50)" "$(pct "$E2E_DIR/$f.ms" 99)" "$(pct "$E2E_DIR/$f.ms" 100)"
done
echo "knitd RSS: $((rss0 / 1024)) MB before, $((rss1 / 1024)) MB with $PODS identities: $per_id KB per identity"
ratio=$(awk -v a="$pod_gbps" -v b="$pod_gbps2" -v c="$node_gbps" -v d="$node_gbps2" 'BEGIN {printf "%d", 100 * (a + b) / (c + d)}')
echo "TCP single stream: pod<->pod $pod_gbps, $pod_gbps2 Gbit/s; node<->node $node_gbps, $node_gbps2 Gbit/s: $ratio %"
add_p99=$(pct "$E2E_DIR/add-knit.ms" 99)
echo "targets: ADD p99 $add_p99 <= 100 ms: $([ "$add_p99" -le 100 ] && echo met || echo MISSED);" \
	"$per_id <= 100 KB/identity: $([ "$per_id" -le 100 ] && echo met || echo MISSED);" \
	"pod<->pod $ratio >= 80 %: $([ "$ratio" -ge 80 ] && echo met || echo MISSED)"
e2e_end
