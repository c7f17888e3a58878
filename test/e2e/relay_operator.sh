#!/usr/bin/env bash
# knit-operator with the relay embedded (--relay-listen) against a real
# kube-apiserver: two relay clients exchange packets through it; its STUN
# server answers coturn's turnutils_stunclient; its knit_relay_* series are
# on the operator's /metrics; it meshes with a standalone knit-relay (the
# shared --mesh-with list names itself too, and that link is dropped). The
# default Tailnet it bootstraps carries the relay map from
# --default-tailnet-relay, which reaches a joined knitd (knit status --json)
# and knit netcheck through knitd; a relayMap edited with kubectl reaches the
# running knitd on its open map stream. --bootstrap-relay-mesh-secret
# makes the mesh Secret. SIGTERM tells relay clients.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

RELAY=$KNIT_BUILD_DIR/relay/knit-relay
TOOL=$KNIT_BUILD_DIR/test/e2e/tools/relay_tool

e2e_begin relay_operator
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$RELAY" "$TOOL" jq turnutils_stunclient curl
kube_up
K=$KUBECTL
NS=knit-system
D=$E2E_DIR
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

tailnet_net_up $((20 + ($$ + 13) % 200))
GW=$TAILNET_GW
RP=$(e2e_free_port) SP=$(e2e_free_port) P2=$(e2e_free_port) H2=$(e2e_free_port)
head -c 32 /dev/urandom >"$D/mesh.key"

# The standalone relay of the same region, meshing with the operator's.
e2e_bg r2 "$RELAY" --key-file "$D/r2.key" --listen "$GW:$P2" --http-listen "127.0.0.1:$H2" --stun-port 0 \
	--mesh-key-file "$D/mesh.key" --mesh-with "http://$GW:$RP,http://$GW:$P2"
MESH="http://$GW:$RP,http://$GW:$P2"
TAILNET_OP_ARGS="--relay-listen $GW:$RP --relay-key-file $D/op-relay.key --relay-stun-addr $GW --relay-stun-port $SP \
 --relay-mesh-key-file $D/mesh.key --relay-mesh-with $MESH \
 --default-tailnet-relay http://$GW:$RP --default-tailnet-relay-stun-port $SP \
 --bootstrap-authkey nodes --bootstrap-relay-mesh-secret knit-relay-mesh"
tailnet_operator_start op-1
OPLOG=$D/operator-op-1.log

metric() { # PORT NAME → value (0 if absent)
	curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
metric_ge() { [ "$(metric "$1" "$2" | cut -d. -f1)" -ge "$3" ]; }

e2e_check "the operator logs its relay" grep -q "serving the relay.*port=$RP .*stun_port=$SP" "$OPLOG"
# /readyz answers before the lease is won: knit_leader turns 1 a moment later.
e2e_check "its knit_relay_* series are on the operator's /metrics" e2e_wait_for 10 \
	sh -c "curl -sf 127.0.0.1:$OP_HTTP_PORT/metrics >'$D/op.metrics' && grep -q '^knit_relay_clients [0-9]' '$D/op.metrics' && grep -q '^knit_relay_mesh_peers_up' '$D/op.metrics' && grep -q '^knit_leader 1' '$D/op.metrics'"

# ---- two clients through the embedded relay ----
KA=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KB=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
PA=$("$TOOL" pub "$KA") PB=$("$TOOL" pub "$KB")
U=http://$GW:$RP
"$TOOL" recv "$U" "$KB" --count 2 --timeout 10 >"$D/b1.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b1.out"
"$TOOL" send "$U" "$KA" "$PB" "through the operator" --count 2 >"$D/a1.out" 2>&1
wait $BPID
e2e_expect "two clients exchange packets through the operator's relay" 2 "$(grep -c "packet $PA through the operator" "$D/b1.out")"
e2e_check "the operator's /metrics counted them" metric_ge "$OP_HTTP_PORT" knit_relay_packets_sent_total 2

# ---- STUN ----
turnutils_stunclient -p "$SP" "$GW" >"$D/turnutils.out" 2>&1
e2e_check "turnutils_stunclient gets a reflexive address from the operator's STUN server" \
	grep -q "UDP reflexive addr: $GW:" "$D/turnutils.out"
e2e_check "counted on the operator's /metrics" metric_ge "$OP_HTTP_PORT" 'knit_relay_stun_requests_total{result="ok"}' 1

# ---- mesh with a standalone relay, one list for both ----
e2e_check "both relays drop the link to themselves" e2e_wait_for 10 sh -c \
	"grep -q 'mesh peer is this relay itself' '$OPLOG' && grep -q 'mesh peer is this relay itself' '$D/r2.log'"
e2e_check "and mesh with each other" e2e_wait_for 15 sh -c \
	"[ \"\$(curl -s 127.0.0.1:$OP_HTTP_PORT/metrics | awk '\$1==\"knit_relay_mesh_peers_up\"{print \$2}')\" = 1 ] && [ \"\$(curl -s 127.0.0.1:$H2/metrics | awk '\$1==\"knit_relay_mesh_peers_up\"{print \$2}')\" = 1 ]"
"$TOOL" recv "http://$GW:$P2" "$KB" --timeout 15 >"$D/b2.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b2.out"
e2e_check "the operator's relay learns of B on r2" e2e_wait_for 10 metric_ge "$OP_HTTP_PORT" knit_relay_remote_clients 1
"$TOOL" send "$U" "$KA" "$PB" "across the mesh" >"$D/a2.out" 2>&1
wait $BPID
e2e_check "a client of the operator's relay reaches one of r2" grep -q "packet $PA across the mesh" "$D/b2.out"

# ---- what the operator bootstrapped ----
e2e_check "the default Tailnet exists" e2e_wait_for 20 $K get tailnet default
tnmap() { $K get tailnet default -o json | jq -cS "$1"; }
OPKEY=$("$RELAY" --key-file "$D/op-relay.key" --print-public-key | sed -n 3p)
e2e_expect "its relayMap is the --default-tailnet-relay flags', the embedded relay's kept key pinned" \
	"$(jq -cS . <<<"{\"id\":1,\"code\":\"default\",\"name\":\"Default\",\"nodes\":[{\"name\":\"1a\",\"hostName\":\"$GW\",\"relayPort\":$RP,\"stunPort\":$SP,\"tls\":false,\"publicKey\":\"$OPKEY\"}]}")" \
	"$(tnmap '.spec.relayMap.regions[0]')"
e2e_check "the mesh Secret exists" e2e_wait_for 20 $K get secret knit-relay-mesh -n "$NS"
e2e_expect "with 32 random bytes under mesh-key" 32 \
	"$($K get secret knit-relay-mesh -n "$NS" -o json | jq -r '.data["mesh-key"]' | base64 -d | wc -c)"
e2e_wait_for 30 $K get secret nodes-authkey -n "$NS" >/dev/null || e2e_die "no bootstrap auth key"
KEY=$($K get secret nodes-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)

# ---- the relay map reaches knitd ----
tailnet_host_add node1 1
tailnet_knitd_start node1
e2e_check "node1 joins" sh -c "'$KNIT' --socket '$D/node1/knitd.sock' up --authkey '$KEY' --login-server '$LOGIN_SERVER' --hostname node1 >/dev/null 2>&1"
e2e_check "knit status --json shows the Tailnet's relay map" \
	e2e_wait_for 15 sh -c "[ \"\$('$KNIT' --socket '$D/node1/knitd.sock' status --json | jq -r '.relayMap.regions[0].nodes[0].relayPort')\" = $RP ]"
# From node1's namespace: netcheck probes from its own sockets.
in_ns node1 "$KNIT" --socket "$D/node1/knitd.sock" netcheck --json --timeout 2 >"$D/netcheck.json" 2>"$D/netcheck.err"
e2e_expect "knit netcheck reads the map from knitd and reaches the relay" true "$(jq -r '.regions[0].nodes[0].relay.reached' "$D/netcheck.json")"
e2e_expect "and its STUN server: UDP works" true "$(jq -r .udp "$D/netcheck.json")"
e2e_expect "from node1's own address" "10.$TAILNET_NET.0.11" "$(jq -r .ipv4 "$D/netcheck.json" | cut -d: -f1)"
e2e_expect "nearest: region 1" 1 "$(jq -r .preferredRegion "$D/netcheck.json")"
e2e_check "knitd connects to its home relay, the operator's, under the pinned key" \
	e2e_wait_for 15 grep -q "relay connected.*region=1 " "$D/knitd-node1.log"
e2e_check "and refused none" sh -c "! grep -q 'not the one pinned' '$D/knitd-node1.log'"

# A second region, edited with kubectl while knitd runs.
PID_BEFORE=$KNITD_PID_node1
DOWN_BEFORE=$(grep -c "map stream down" "$D/knitd-node1.log")
$K patch tailnet default --type merge -p "{\"spec\":{\"relayMap\":{\"regions\":[$(tnmap '.spec.relayMap.regions[0]'),
 {\"id\":2,\"code\":\"second\",\"nodes\":[{\"name\":\"2a\",\"hostName\":\"$GW\",\"relayPort\":$P2,\"stunPort\":0,\"tls\":false}]}]}}}" \
	>/dev/null || e2e_fail "kubectl patch of the relay map"
e2e_check "the edited relay map reaches the running knitd" \
	e2e_wait_for 15 sh -c "[ \"\$('$KNIT' --socket '$D/node1/knitd.sock' status --json | jq -r '.relayMap.regions[1].code')\" = second ]"
e2e_check "knitd kept running" kill -0 "$PID_BEFORE"
e2e_expect "on the map stream it had (none went down)" "$DOWN_BEFORE" "$(grep -c "map stream down" "$D/knitd-node1.log")"
in_ns node1 "$KNIT" --socket "$D/node1/knitd.sock" netcheck --json --timeout 2 >"$D/netcheck2.json" 2>&1
e2e_expect "knit netcheck now checks both regions" "true true" \
	"$(jq -r '[.regions[].nodes[0].relay.reached] | map(tostring) | join(" ")' "$D/netcheck2.json")"

# ---- SIGTERM ----
"$TOOL" recv "$U" "$KB" --timeout 15 >"$D/b3.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b3.out"
kill -TERM "$OP_PID"
e2e_check "SIGTERM: the operator exits" e2e_wait_for 15 sh -c "! kill -0 $OP_PID 2>/dev/null"
wait "$OP_PID"
e2e_expect "SIGTERM: exit status 0" 0 $?
wait $BPID
e2e_check "SIGTERM: its relay clients are told" grep -q 'health "relay shutting down"' "$D/b3.out"
e2e_check "no sanitizer report from the operator" sh -c "! grep -q 'ERROR: \\(Address\\|Leak\\)Sanitizer\\|runtime error' '$OPLOG'"

# ---- flags ----
"$OPERATOR" --relay-tls-cert x >/dev/null 2>"$D/flags.err"
e2e_expect "--relay-* without --relay-listen: exit 2" 2 $?
"$OPERATOR" --default-tailnet-relay 'ftp://x' >/dev/null 2>"$D/flags2.err"
e2e_expect "a bad --default-tailnet-relay: exit 2" 2 $?
e2e_check "... naming the flag" grep -q -- "--default-tailnet-relay" "$D/flags2.err"
e2e_end
