#!/usr/bin/env bash
# knit-cni's identity mode end to end, without a cluster: a real
# kube-apiserver holding Pod objects (bound to a node by spec.nodeName; no
# kubelet, so they stay Pending), knit-operator, two knitd "nodes" in
# namespaces, and a "pod" netns on node1. A small runtime
# (lib/cni_runtime.py) runs Debian's bridge + host-local and then knit-cni
# from node1's netns, as containerd would. The pod gets knit0 with its own
# tailnet address, carried by node1's knitd; node2 and the pod reach each
# other; CHECK sees tampering; a restarted knitd brings the pod back (with
# a relay in the map that nobody reaches: its path goes direct); DEL
# removes the Device, the interface and the state at once; a pod bound to
# another node is refused and leaves nothing behind.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin cni_identity
CNI=$KNIT_BUILD_DIR/cni-plugin/knit-cni
RUNTIME=$KNIT_SOURCE_DIR/test/e2e/lib/cni_runtime.py
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$CNI" /usr/lib/cni/bridge /usr/lib/cni/host-local jq ping python3
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K create namespace app >/dev/null || e2e_die "create namespace app"
$K -n app create serviceaccount web >/dev/null || e2e_die "create serviceaccount"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

tailnet_net_up $((20 + $$ % 200))
tailnet_operator_start op-1
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"nodes","namespace":"%s"},"spec":{"reusable":true}}' \
	"$NS" | $K apply -f - >/dev/null || e2e_die "authkey"
e2e_wait_for 30 $K get secret nodes-authkey -n "$NS" >/dev/null || e2e_die "no auth key secret"
# A relay in the map that nobody reaches (as in the cluster, where none is
# deployed): path discovery must still reach peers at their endpoints at
# once, never wait on the relay.
tailnet_relay_map '{"regions":[{"id":1,"code":"nowhere","nodes":[{"name":"1a","hostName":"192.0.2.1","ipv4":"192.0.2.1","relayPort":8080,"stunPort":3478,"tls":false}]}]}'
NODE_KEY=$($K get secret nodes-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
for i in 1 2; do
	tailnet_host_add "node$i" "$i"
	tailnet_knitd_token_file "node$i" # the knitd pod's token: binds the node Device to node$i
	tailnet_knitd_start "node$i"
	tailnet_knit "node$i" up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" \
		--hostname "node$i" >/dev/null || e2e_die "node$i cannot join"
done
NODE2_IP=$(tailnet_knit node2 ip -4)

tailnet_pod_object web node1 '{knit.dev/identity: "true"}' || e2e_die "create pod web"
tailnet_pod_object far node2 '{knit.dev/identity: "true"}' || e2e_die "create pod far"
WEB_UID=$($K -n app get pod web -o jsonpath='{.metadata.uid}')
FAR_UID=$($K -n app get pod far -o jsonpath='{.metadata.uid}')

# The pod's sandbox netns and the node's chain: bridge + host-local, then knit-cni.
POD=$(ns_name pod)
POD2=$(ns_name pod2)
ip netns add "$POD" && ip netns add "$POD2" || e2e_die "pod namespaces"
e2e_defer "ip netns del $POD"
e2e_defer "ip netns del $POD2"
ip -n "$POD" link set lo up
BIN=$E2E_DIR/bin
mkdir -p "$BIN" && cp "$CNI" "$BIN/knit-cni"
SOCK=$E2E_DIR/node1/knitd.sock
cat >"$E2E_DIR/chain.conflist" <<EOF
{"cniVersion":"1.0.0","name":"podnet","plugins":[
 {"type":"bridge","bridge":"kb$E2E_TAG","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","subnet":"10.$((100 + $$ % 100)).7.0/24","dataDir":"$E2E_DIR/ipam"}},
 {"type":"knit-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"socket":"$SOCK"}]}
EOF
ANN='{"knit.dev/identity":"true"}'
# rt CMD NETNS CID NAME UID: the runtime, in node1's netns; $OUT, $RC.
rt() {
	OUT=$(CNI_PATH=$BIN:/usr/lib/cni CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$2 CNI_CONTAINERID=$3 \
		CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=$4;K8S_POD_UID=$5" \
		in_ns node1 python3 "$RUNTIME" "$1" "$E2E_DIR/chain.conflist" "$E2E_DIR/cache-$3" "$ANN" 2>>"$E2E_DIR/cni.log")
	RC=$?
}
# knit-cni's CHECK alone, with the cached result as prevResult: Debian's
# bridge CHECK insists that every address of the result sits on eth0, so
# it fails any chain whose later plugin adds an interface (knit0 here).
check() { # NETNS CID NAME UID
	local conf
	conf=$(jq --slurpfile prev "$E2E_DIR/cache-$2" --argjson ann "$ANN" \
		'.plugins[-1] + {cniVersion, name, prevResult: $prev[0], runtimeConfig: {"io.kubernetes.cri.pod-annotations": $ann}} | del(.capabilities)' \
		"$E2E_DIR/chain.conflist")
	OUT=$(printf '%s' "$conf" | CNI_COMMAND=CHECK CNI_PATH=$BIN:/usr/lib/cni CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$1 \
		CNI_CONTAINERID=$2 CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=$3;K8S_POD_UID=$4" \
		in_ns node1 "$BIN/knit-cni" 2>>"$E2E_DIR/cni.log")
	RC=$?
}
code() { jq -r '.code // empty' <<<"$OUT" 2>/dev/null; }
pod_ip() { ip -n "$POD" -4 -o addr show dev knit0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }

start=$(date +%s%N)
rt ADD "$POD" cweb web "$WEB_UID"
add_ms=$(( ($(date +%s%N) - start) / 1000000 ))
e2e_check "ADD of the annotated pod succeeds ($add_ms ms)" test "$RC" -eq 0 || e2e_log "$OUT"
e2e_log "ADD took $add_ms ms"
WEB_IP=$(pod_ip)
e2e_check "the pod has knit0 with a tailnet address ($WEB_IP)" grep -q '^100\.' <<<"$WEB_IP"
e2e_check "the result lists knit0 with that address in the pod's sandbox" \
	test "$(jq -r --arg ip "$WEB_IP/32" '[.interfaces[] | select(.name=="knit0")] as $k | .ips[] | select(.address==$ip) | .interface as $i | $k | length' <<<"$OUT")" = 1
e2e_check "the pod routes the tailnet through knit0" ip -n "$POD" route show 100.64.0.0/10 dev knit0 | grep -q .
DEV=$(curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r ".identities[0].device")
e2e_check "knitd lists the identity, Device $DEV" test -n "$DEV" -a "$DEV" != null
e2e_expect "the Device belongs to the pod's ServiceAccount" "system:serviceaccount:app:web $WEB_UID true" \
	"$($K get device "$DEV" -o jsonpath='{.spec.user} {.spec.ownerPod.uid} {.spec.ephemeral}')"
e2e_check "the identity's state file is there, mode 0600" \
	test "$(stat -c %a "$E2E_DIR/node1/state/pods/cweb-knit0.state" 2>/dev/null)" = 600

pings() { in_ns node2 ping -c1 -W1 "$WEB_IP" >/dev/null 2>&1; }
e2e_check "node2 pings the pod's tailnet address" e2e_wait_for 15 pings
pod_pings() { ip netns exec "$POD" ping -c1 -W1 "$NODE2_IP" >/dev/null 2>&1; }
e2e_check "the pod pings node2 over the tailnet" e2e_wait_for 15 pod_pings
sees_pod() { tailnet_knit node2 status --json | jq -e --arg ip "$WEB_IP" '.peers[] | select(.addresses | index($ip))' >/dev/null; }
e2e_check "knit status on node2 lists the pod as a peer" e2e_wait_for 10 sees_pod
check "$POD" cweb web "$WEB_UID"
e2e_check "CHECK passes on the healthy pod" test "$RC" -eq 0 || e2e_log "$OUT"

# knitd restarted (a DaemonSet rollout): the pod comes back from its state.
kill -TERM "$KNITD_PID_node1"
e2e_wait_for 15 bash -c "! kill -0 $KNITD_PID_node1 2>/dev/null"
e2e_check "knitd gone takes knit0 with it" bash -c "! ip -n $POD link show knit0 >/dev/null 2>&1"
start=$(date +%s%N)
tailnet_knitd_start node1
e2e_check "restarted knitd: node2 reaches the pod again" e2e_wait_for 20 pings
back_ms=$(( ($(date +%s%N) - start) / 1000000 ))
e2e_log "pod reachable again $back_ms ms after knitd started"
# Its resumed handshake goes to node2's endpoint at once; one sent to the
# unreachable relay alone (as before optimistic paths) waits 5 s to retry.
e2e_check "reachable again within 4 s ($back_ms ms)" test "$back_ms" -le 4000
pod_direct() { tailnet_knit node2 status --json | jq -e --arg ip "$WEB_IP" '.peers[] | select(.addresses | index($ip)) | .path.kind == "direct"' >/dev/null; }
e2e_check "node2's path to the pod is direct (disco pong; the relay in the map is unreachable)" e2e_wait_for 10 pod_direct
tailnet_knit node2 status | grep -F "$WEB_IP" | sed 's/^/node2 status: /' >&2 || true
e2e_expect "with the same address" "$WEB_IP" "$(pod_ip)"
check "$POD" cweb web "$WEB_UID"
e2e_check "CHECK passes after the restart" test "$RC" -eq 0 || e2e_log "$OUT"

# A pod whose sandbox went while knitd was down (no DEL): the restarted
# knitd drops its identity and files, and carries the others on.
POD3=$(ns_name pod3)
ip netns add "$POD3" || e2e_die "pod3 namespace"
e2e_defer "ip netns del $POD3 2>/dev/null"
rt ADD "$POD3" cweb3 web "$WEB_UID"
e2e_check "ADD of a second attachment of the pod" test "$RC" -eq 0 || e2e_log "$OUT"
DEV3=$(curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r '.identities[] | select(.containerID == "cweb3") | .device')
kill -TERM "$KNITD_PID_node1"
e2e_wait_for 15 bash -c "! kill -0 $KNITD_PID_node1 2>/dev/null"
ip netns del "$POD3"
tailnet_knitd_start node1
listed() { curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r '[.identities[].containerID] | sort | join(" ")'; }
e2e_expect "knitd restarted without pod3's netns carries only the first attachment" cweb "$(listed)"
e2e_check "and removed the second's files" bash -c "! ls $E2E_DIR/node1/state/pods/cweb3-* >/dev/null 2>&1"
gone3() { [ -n "$DEV3" ] && [ "$DEV3" != null ] && ! $K get device "$DEV3" >/dev/null 2>&1; }
e2e_check "and deleted the second's Device $DEV3 (its Pod still exists)" e2e_wait_for 5 gone3
e2e_check "the first pod is reachable again" e2e_wait_for 20 pings

ip -n "$POD" addr flush dev knit0
check "$POD" cweb web "$WEB_UID"
e2e_check "CHECK fails once knit0's address is gone (code $(code))" test "$RC" -ne 0 -a "$(code)" = 106

rt DEL "$POD" cweb web "$WEB_UID"
e2e_check "DEL succeeds" test "$RC" -eq 0 || e2e_log "$OUT"
e2e_check "the Device is gone when DEL returns" bash -c "! $K get device $DEV >/dev/null 2>&1"
e2e_check "knit0 is gone from the pod" bash -c "! ip -n $POD link show knit0 >/dev/null 2>&1"
e2e_check "the state files are gone" bash -c "! ls $E2E_DIR/node1/state/pods/cweb-* >/dev/null 2>&1"
rt DEL "$POD" cweb web "$WEB_UID"
e2e_check "DEL again succeeds" test "$RC" -eq 0 || e2e_log "$OUT"

# A pod bound to node2, asked for from node1: refused, nothing left.
ndev=$($K get devices -o name | wc -l)
rt ADD "$POD2" cfar far "$FAR_UID"
e2e_expect "ADD for a pod on another node is refused with 103" "1 103" "$RC $(code)"
e2e_check "no knit0 in that pod" bash -c "! ip -n $POD2 link show knit0 >/dev/null 2>&1"
e2e_expect "no Device was made" "$ndev" "$($K get devices -o name | wc -l)"
e2e_check "no state left" bash -c "! ls $E2E_DIR/node1/state/pods/cfar-* >/dev/null 2>&1"
e2e_expect "knitd lists no identity" 0 "$(curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq '.identities | length')"

# The operator's backstop: a pod identity whose Pod is deleted goes too.
rt ADD "$POD" cweb2 web "$WEB_UID"
e2e_check "ADD again" test "$RC" -eq 0 || e2e_log "$OUT"
DEV=$(curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r '.identities[0].device')
$K -n app delete pod web --grace-period=0 --force >/dev/null 2>&1
gone() { ! $K get device "$DEV" >/dev/null 2>&1; }
start=$(date +%s%N)
e2e_check "the Device goes within 3 s of the Pod's deletion (no DEL)" e2e_wait_for 3 gone
e2e_log "Device gone $(( ($(date +%s%N) - start) / 1000000 )) ms after the Pod"
rt DEL "$POD" cweb2 web "$WEB_UID"
e2e_check "DEL afterwards still succeeds" test "$RC" -eq 0 || e2e_log "$OUT"

# Tags: the tailnet Policy's tagOwners decide what a pod's ServiceAccount may claim.
cat <<'YAML' | $K apply -f - >/dev/null || e2e_die "policy"
apiVersion: knit.dev/v1alpha1
kind: Policy
metadata: {name: tags}
spec:
  tailnet: default
  policy: |
    {"tagOwners": {"tag:ci": ["system:serviceaccount:app:web"], "tag:db": ["alice@example.com"]}}
YAML
in_force() { [ "$($K get policy tags -o jsonpath='{.status.appliedGeneration}')" = "$($K get policy tags -o jsonpath='{.metadata.generation}')" ]; }
e2e_check "the Policy is in force" e2e_wait_for 30 in_force
tailnet_pod_object runner node1 '{knit.dev/identity: "true"}' || e2e_die "create pod runner"
RUN_UID=$($K -n app get pod runner -o jsonpath='{.metadata.uid}')
ndev=$($K get devices -o name | wc -l)
ANN='{"knit.dev/identity":"true","knit.dev/tags":"tag:db"}'
rt ADD "$POD" crun runner "$RUN_UID"
e2e_expect "a tag the ServiceAccount does not own is refused with 102" "1 102" "$RC $(code)"
e2e_check "leaving no knit0" bash -c "! ip -n $POD link show knit0 >/dev/null 2>&1"
e2e_expect "and no Device" "$ndev" "$($K get devices -o name | wc -l)"
rt DEL "$POD" crun runner "$RUN_UID" # as the runtime does after a failed ADD
e2e_check "DEL after the failed ADD" test "$RC" -eq 0
ANN='{"knit.dev/identity":"true","knit.dev/tags":"tag:ci"}'
rt ADD "$POD" crun runner "$RUN_UID"
e2e_check "a tag it owns is granted" test "$RC" -eq 0 || e2e_log "$OUT"
DEV=$(curl -s --unix-socket "$SOCK" http://x/localapi/v1/identities | jq -r '.identities[0].device')
e2e_expect "the Device carries the tag and no user" "[\"tag:ci\"] " \
	"$($K get device "$DEV" -o jsonpath='{.spec.tags} {.spec.user}')"
rt DEL "$POD" crun runner "$RUN_UID"
e2e_check "DEL of the tagged pod" test "$RC" -eq 0 || e2e_log "$OUT"
e2e_end
