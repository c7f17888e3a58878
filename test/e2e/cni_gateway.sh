#!/usr/bin/env bash
# knit-cni's gateway mode without a cluster: a real kube-apiserver and
# knit-operator, a "node" knitd started with --cni-conf-dir over a conflist
# (Debian's bridge + host-local, then knit-cni "mode": "gateway"), an
# unannotated "pod" attached by that chain from the node's netns, and a
# "laptop" knitd with --accept-routes. The node advertises the host-local
# range by itself, the Policy's autoApprovers approve it, and the laptop
# reaches the pod's own address through the node; the pod gets no knit0.
# Switching the conflist back to identity mode withdraws the route.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin cni_gateway
CNI=$KNIT_BUILD_DIR/cni-plugin/knit-cni
RUNTIME=$KNIT_SOURCE_DIR/test/e2e/lib/cni_runtime.py
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$CNI" /usr/lib/cni/bridge /usr/lib/cni/host-local jq ping python3
tailnet_kube_up
NS=knit-system

tailnet_net_up $((20 + ($$ + 11) % 200))
tailnet_operator_start op-1
PODNET=10.$((100 + ($$ + 3) % 100)).9.0/24
# The nodes' routes are approved by the policy, not by hand.
cat <<YAML | $K apply -f - >/dev/null || e2e_die "policy"
apiVersion: knit.dev/v1alpha1
kind: Policy
metadata: {name: gw}
spec:
  tailnet: default
  policy: |
    {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
     "autoApprovers": {"routes": {"10.0.0.0/8": ["nodes@example.com"]}}}
YAML
in_force() { [ "$($K get policy gw -o jsonpath='{.status.appliedGeneration}')" = "$($K get policy gw -o jsonpath='{.metadata.generation}')" ]; }
e2e_check "the Policy with autoApprovers is in force" e2e_wait_for 30 in_force
authkey() { # NAME USER
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"%s"},"spec":{"user":"%s","reusable":true}}' \
		"$1" "$NS" "$2" | $K apply -f - >/dev/null || return 1
	e2e_wait_for 30 $K get secret "$1-authkey" -n "$NS" >/dev/null || return 1
	$K get secret "$1-authkey" -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d
}
NODE_KEY=$(authkey nodes nodes@example.com) || e2e_die "no node key"
LAPTOP_KEY=$(authkey laptop alice@example.com) || e2e_die "no laptop key"
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')

# The node's CNI configuration: the chain the runtime runs.
CONF=$E2E_DIR/net.d
mkdir -p "$CONF" "$E2E_DIR/bin"
cp "$CNI" "$E2E_DIR/bin/knit-cni"
conflist() { # MODE
	cat >"$CONF/10-pods.conflist.tmp" <<JSON
{"cniVersion":"1.0.0","name":"pods","plugins":[
 {"type":"bridge","bridge":"kg$E2E_TAG","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$PODNET"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$E2E_DIR/ipam"}},
 {"type":"knit-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"mode":"$1","socket":"$E2E_DIR/node1/knitd.sock"}]}
JSON
	mv "$CONF/10-pods.conflist.tmp" "$CONF/10-pods.conflist"
}
conflist gateway

tailnet_host_add node1 1
tailnet_host_add laptop 2
in_ns node1 sysctl -qw net.ipv4.ip_forward=1
tailnet_knitd_start node1 --cni-conf-dir "$CONF"
tailnet_knitd_start laptop --accept-routes
e2e_check "node1 joins" tailnet_knit node1 up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname node1
e2e_check "the laptop joins" tailnet_knit laptop up --authkey "$LAPTOP_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname laptop
dev_of() { $K get devices -o json | jq -r --arg h "$1" '.items[] | select(.spec.hostname == $h) | .metadata.name'; }
routes_of() { $K get device "$(dev_of node1)" -o jsonpath="{.spec.$1}"; }
advertised() { routes_of advertisedRoutes | grep -qF "\"$PODNET\""; }
e2e_check "node1 advertises the host-local range $PODNET from the conflist" e2e_wait_for 15 advertised
approved() { routes_of approvedRoutes | grep -qF "\"$PODNET\""; }
e2e_check "the Policy's autoApprovers approved it" e2e_wait_for 10 approved
# Each registration restarts the node's map stream: the join's carried the range.
e2e_expect "one registration: the join carried the range" 1 "$(grep -c 'msg=registered' "$E2E_DIR/knitd-node1.log")"

# An unannotated pod, attached by the chain from node1's netns.
POD=$(ns_name pod)
ip netns add "$POD" || e2e_die "pod namespace"
e2e_defer "ip netns del $POD"
ip -n "$POD" link set lo up
rt() { # CMD: the runtime in node1's netns; $OUT, $RC
	OUT=$(CNI_PATH=$E2E_DIR/bin:/usr/lib/cni CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$POD CNI_CONTAINERID=cplain \
		CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=plain;K8S_POD_UID=u-plain" \
		in_ns node1 python3 "$RUNTIME" "$1" "$CONF/10-pods.conflist" "$E2E_DIR/cache-plain" '{}' 2>>"$E2E_DIR/cni.log")
	RC=$?
}
rt ADD
e2e_check "ADD of the unannotated pod in gateway mode" test "$RC" -eq 0 || e2e_log "$OUT"
POD_IP=$(jq -r '.ips[0].address' <<<"$OUT" | cut -d/ -f1)
e2e_check "the pod has its host-local address ($POD_IP) and no knit0" \
	bash -c "ip -n $POD -4 addr show dev eth0 | grep -q 'inet $POD_IP/' && ! ip -n $POD link show knit0 >/dev/null 2>&1"
e2e_expect "knitd carries no pod identity" 0 "$(curl -s --unix-socket "$E2E_DIR/node1/knitd.sock" http://x/localapi/v1/identities | jq '.identities | length')"
has_route() { in_ns laptop ip route show table 52 | grep -q "^$PODNET dev knit0"; }
e2e_check "the laptop routes $PODNET through knit0" e2e_wait_for 15 has_route
e2e_check "the laptop has no other way to the pod" bash -c "! ip netns exec $(ns_name laptop) ip route get $POD_IP | grep -q eth0"
pings() { in_ns laptop ping -c1 -W1 "$POD_IP" >/dev/null 2>&1; }
start=$(date +%s%N)
e2e_check "the laptop pings the unannotated pod through node1" e2e_wait_for 15 pings
e2e_log "first ping through the gateway after $(( ($(date +%s%N) - start) / 1000000 )) ms"
LAPTOP_IP=$(tailnet_knit laptop ip -4)
ip netns exec "$POD" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7071)); s.listen(1)
c, a = s.accept(); c.sendall((a[0] + "\n").encode()); c.close()' >"$E2E_DIR/peer.txt" 2>&1 &
e2e_defer "kill $! 2>/dev/null"
listening() { ip netns exec "$POD" ss -ltn | grep -q ':7071 '; }
e2e_wait_for 10 listening || e2e_die "no listener in the pod"
seen=$(in_ns laptop timeout 5 bash -c "exec 3<>/dev/tcp/$POD_IP/7071; head -1 <&3")
e2e_expect "the pod sees the laptop's own tailnet address (no NAT)" "$LAPTOP_IP" "$seen"

# knitd restarted: the range is in its saved netmap, nothing is re-sent.
kill -TERM "$KNITD_PID_node1"
e2e_wait_for 15 bash -c "! kill -0 $KNITD_PID_node1 2>/dev/null"
tailnet_knitd_start node1 --cni-conf-dir "$CONF"
e2e_check "restarted node1: the laptop pings the pod again" e2e_wait_for 15 pings
registered_again() { grep -q 'msg=registered' "$E2E_DIR/knitd-node1.log"; }
# Longer than knitd's first re-read of the configuration (5 s).
if e2e_wait_for 7 registered_again; then
	e2e_fail "the restarted node1 registered again"
else
	e2e_pass "and it did not register again"
fi

# The conflist back in identity mode: the route is withdrawn.
conflist identity
withdrawn() { ! advertised; }
e2e_check "identity mode: node1 withdraws the range within 10 s" e2e_wait_for 10 withdrawn
no_route() { ! has_route; }
e2e_check "and the laptop drops the route" e2e_wait_for 10 no_route
# knit-cni out of the chain (a knitd pod between preStop and its successor):
# what is in force stays.
conflist gateway
e2e_check "gateway mode again: advertised again" e2e_wait_for 10 advertised
jq '.plugins |= map(select(.type != "knit-cni"))' "$CONF/10-pods.conflist" >"$CONF/x" && mv "$CONF/x" "$CONF/10-pods.conflist"
# Longer than knitd's re-read period (5 s): nothing may change.
if e2e_wait_for 7 withdrawn; then
	e2e_fail "no knit-cni entry in the chain: the range was withdrawn"
else
	e2e_pass "no knit-cni entry in the chain: the range stays advertised"
fi
rt DEL
e2e_check "DEL of the pod" test "$RC" -eq 0 || e2e_log "$OUT"
e2e_end
