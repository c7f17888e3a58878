#!/usr/bin/env bash
# knit as real pods on a real three-node cluster (test/e2e/cluster): the image
# built from the project's Dockerfile (scripts/image build) runs the operator
# (Deployment, leader-elected) and knitd on every node (DaemonSet,
# manifests/). The three knitd join the tailnet with the AuthKey
# the operator bootstraps; `knit status` in one knitd pod shows the other two and
# `knit ping` reaches them over the mesh; a deleted knitd pod comes back as
# the same device (same machine key, same addresses).
#
# Needs knitd's mesh mode (`knitd run`) and the knit CLI: without them this
# suite fails at once and says so (never a silent skip).
source "$(dirname "$0")/lib/common.sh"

e2e_begin k8s_knit
CLUSTER=$KNIT_SOURCE_DIR/test/e2e/cluster
IMAGE=$KNIT_SOURCE_DIR/scripts/image
MAN=$KNIT_SOURCE_DIR/manifests
KNITD=$KNIT_BUILD_DIR/agent/knitd
KNIT=$KNIT_BUILD_DIR/agent/cli/knit
NAME=e2k$(($$ % 100000))
NODES=3
e2e_need_bin containerd runc ctr buildah etcd nsenter "$CLUSTER" "$IMAGE" "$KNITD" "$KNIT"
"$KNITD" run --help >/dev/null 2>&1 ||
	e2e_die "knitd has no mesh mode yet ('knitd run --help' fails): the knitd DaemonSet cannot join a tailnet"

# --- the image, from the project's Dockerfile ------------------------------
t0=$(date +%s)
"$IMAGE" build >"$E2E_DIR/image.log" 2>&1 || e2e_die "image build failed: $(tail -15 "$E2E_DIR/image.log")"
e2e_pass "image knit.local/knit:dev built from the Dockerfile in $(($(date +%s) - t0))s"
archive=$("$IMAGE" archive knit.local/knit:dev 2>>"$E2E_DIR/image.log") || e2e_die "no image archive"

# --- the cluster -----------------------------------------------------------
e2e_defer "'$CLUSTER' down --name $NAME"
"$CLUSTER" up --name "$NAME" --nodes "$NODES" >"$E2E_DIR/up.log" 2>&1 ||
	e2e_die "cluster up failed: $(tail -15 "$E2E_DIR/up.log")"
eval "$("$CLUSTER" env --name "$NAME")"
K() { "$KUBECTL" "$@"; }
KS() { "$KUBECTL" -n knit-system "$@"; }
q() { "$@" >/dev/null 2>&1; }
# On failure, what the pods said is the first thing anyone needs.
dump_pods() {
	[ "$E2E_FAILED" -gt 0 ] || return 0
	KS get pods -o wide >&2 || true
	local p
	for p in $(KS get pods -o name 2>/dev/null); do
		e2e_log "--- $p"
		KS logs --all-containers --tail 20 "$p" >&2 || true
	done
}
e2e_check "image loaded into every node" q "$CLUSTER" load --name "$NAME" "$archive"

# --- operator and agents ----------------------------------------------------
q K apply $(printf -- "-f %s " "$MAN"/01-crd-*.yaml) || e2e_die "cannot apply the CRDs"
e2e_check "CRDs established" q K wait --for condition=established crd --all --timeout=60s
e2e_check "operator, knitd DaemonSet, RBAC and Service applied" \
	q K apply -f "$MAN/00-namespace.yaml" -f "$MAN/10-operator.yaml" -f "$MAN/12-webhooks.yaml" -f "$MAN/20-knitd.yaml"
op_pods() { # STATUS-FIELD: one line per operator pod
	KS get pods -l app.kubernetes.io/name=knit-operator -o jsonpath="{range .items[*]}$1{\"\\n\"}{end}"
}
ops_up() {
	[ "$(op_pods '{.status.phase}' | grep -c Running)" -eq 2 ] &&
		[ "$(op_pods '{.status.conditions[?(@.type=="Ready")].status}' | grep -c True)" -ge 1 ]
}
e2e_check "both operator replicas run and one is Ready" e2e_wait_for 120 ops_up
# Both are Ready when healthy; the leader holds the Lease and is the only
# endpoint of the coordination Service (operator/serving.h).
leader_serves() {
	local l
	l=$(KS get lease knit-operator -o jsonpath='{.spec.holderIdentity}') && [ -n "$l" ] &&
		[ "$(KS get endpointslice knit-coordination-leader -o jsonpath='{.endpoints[*].addresses[*]}')" = \
			"$(KS get pod "$l" -o jsonpath='{.status.podIP}')" ]
}
e2e_check "the leader is the coordination Service's only endpoint" e2e_wait_for 60 leader_serves
tailnet_ready() { [ "$(K get tailnet default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
e2e_check "the operator made the default Tailnet" e2e_wait_for 60 tailnet_ready

# The agents wait for their key: the operator makes the AuthKey "nodes"
# itself (--bootstrap-authkey) and mints it.
e2e_check "the operator minted the AuthKey into Secret nodes-authkey" \
	e2e_wait_for 30 KS get secret nodes-authkey
e2e_check "knitd runs on every node" q KS rollout status daemonset/knitd --timeout=180s

devices_online() {
	[ "$(K get devices -o jsonpath='{range .items[*]}{.status.online}{"\n"}{end}' | grep -c true)" -eq "$NODES" ]
}
e2e_check "$NODES Devices registered and online" e2e_wait_for 120 devices_online
e2e_expect "exactly $NODES Devices" "$NODES" "$(K get devices -o name | wc -l)"

knitd_pod() { # NODE-INDEX: the knitd pod on that node
	KS get pods -l app.kubernetes.io/name=knitd --field-selector "spec.nodeName=$NAME-n$1" \
		-o jsonpath='{.items[0].metadata.name}'
}
kn() { # NODE-INDEX ARGS...: the knit CLI in that node's knitd pod
	local i=$1
	shift
	timeout 90 "$KUBECTL" -n knit-system exec "$(knitd_pod "$i")" -- knit "$@"
}

# --- knit status and ping over the mesh -------------------------------------
sees_peers() {
	local out
	out=$(kn 1 status 2>/dev/null) || return 1
	grep "$NAME-n2" <<<"$out" | grep -vq offline && grep "$NAME-n3" <<<"$out" | grep -vq offline
}
e2e_check "knit status in node 1's knitd pod shows nodes 2 and 3 online" e2e_wait_for 60 sees_peers
kn 1 status >"$E2E_DIR/status-n1.txt" 2>&1 || true
for j in 2 3; do
	e2e_check "knit ping from node 1 reaches node $j over the mesh" \
		q kn 1 ping --icmp -c 10 "$NAME-n$j"
done
e2e_check "knit ping from node 3 reaches node 2 over the mesh" q kn 3 ping --icmp -c 10 "$NAME-n2"
# knitd's /metrics on node 1's address, through the API server's pod proxy
# (what a Prometheus in the cluster scrapes).
metric() { # NODE-INDEX SERIES: its value
	K get --raw "/api/v1/namespaces/knit-system/pods/$(knitd_pod "$1"):9102/proxy/metrics" 2>/dev/null |
		awk -v s="$2" '$1 == s { print $2; f = 1 } END { exit !f }'
}
scraped() {
	[ "$(metric 1 knitd_coordination_connected)" = 1 ] && [ "$(metric 1 knitd_peers)" = 2 ] &&
		[ "$(metric 1 knitd_peers_with_session)" = 2 ] &&
		awk -v v="$(metric 1 knitd_outbound_bytes_total)" 'BEGIN { exit !(v + 0 > 0) }'
}
e2e_check "node 1's knitd /metrics: connected, two peers with sessions, bytes sent" e2e_wait_for 30 scraped ||
	e2e_log "scraped: $(K get --raw "/api/v1/namespaces/knit-system/pods/$(knitd_pod 1):9102/proxy/metrics" 2>&1 |
		grep -E '^knitd_(coordination_connected|peers|peers_with_session|outbound_bytes_total) |rror' | head -5 | xargs)"

# --- a replaced knitd pod is the same device --------------------------------
dev_of() { # NODE-INDEX: "name machineKey addresses" of that node's Device
	K get devices -o jsonpath='{range .items[*]}{.metadata.name} {.spec.machineKey} {.status.addresses}{" host="}{.spec.hostname}{"\n"}{end}' |
		grep " host=$NAME-n$1\$"
}
before=$(dev_of 2)
ip_before=$(kn 2 ip -4 2>/dev/null)
old_pod=$(knitd_pod 2)
q KS delete pod "$old_pod" --wait=true || e2e_fail "cannot delete $old_pod"
replaced() { local p; p=$(knitd_pod 2) && [ -n "$p" ] && [ "$p" != "$old_pod" ]; }
e2e_check "the DaemonSet replaced node 2's knitd pod" e2e_wait_for 60 replaced
e2e_check "the new pod is Running" q KS rollout status daemonset/knitd --timeout=120s
e2e_check "node 1 sees node 2 online again" e2e_wait_for 90 sees_peers
e2e_expect "node 2 is the same Device (name, machine key, addresses)" "$before" "$(dev_of 2)"
e2e_expect "node 2 keeps its tailnet address" "$ip_before" "$(kn 2 ip -4 2>/dev/null)"
e2e_expect "still exactly $NODES Devices" "$NODES" "$(K get devices -o name | wc -l)"
# Node 1 still holds a WireGuard session with the old process; it recovers
# once that session's rekey/keepalive timers (about 15 s) make it handshake
# again with the new one.
t_back=$(date +%s)
ping_n2() { kn 1 ping --icmp -c 2 "$NAME-n2"; }
e2e_check "knit ping from node 1 reaches the replaced node 2" e2e_wait_for 60 ping_n2
e2e_log "node 1 reached the replaced node 2 after $(($(date +%s) - t_back))s"

dump_pods
e2e_end
