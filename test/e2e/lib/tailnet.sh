# A small "internet" for tailnet tests and the demo (sourced after
# common.sh and apiserver.sh): a hub namespace with a bridge, the root
# namespace on it (where kube-apiserver and knit-operator run), and one
# namespace per agent. Every address is the test's own (10.$NET.0.0/24).
#
#   tailnet_net_up NET          hub + bridge; root side 10.NET.0.1/24
#   tailnet_host_add NAME IDX   namespace knit-$E2E_TAG-NAME at 10.NET.0.(10+IDX)
#   tailnet_host_move NAME IDX  gives NAME a new underlay address (roaming)
#   tailnet_operator_start ID   knit-operator, coordination on 10.NET.0.1 (a
#                               restarted operator keeps the port, as a Service would;
#                               TAILNET_OP_ARGS adds flags, TAILNET_COORD_BIND
#                               another address to listen on, e.g. 0.0.0.0)
#   tailnet_knitd_start NAME    knitd (mesh mode) inside NAME's namespace
#   tailnet_knit NAME ARGS...   the knit CLI against NAME's knitd
#   in_ns NAME CMD...           runs CMD in NAME's network namespace only
#   tailnet_kube_up             kube_up, namespace knit-system, knit's CRDs
#                               established; K is kubectl
#   tailnet_relay_start NAME IDX [ARGS...]
#                               knit-relay on host NAME (tailnet_host_add NAME
#                               IDX), plain TCP on 10.NET.0.(10+IDX):8080,
#                               STUN on 3478 unless ARGS say otherwise; again
#                               after a kill, a restart on the same host
#   tailnet_relay_map JSON      the default Tailnet's spec.relayMap, once the
#                               operator made that Tailnet
#   tailnet_authkey NAME SPEC   an AuthKey in knit-system; prints its key
#   tailnet_knitd_token NODE [AUD]
#                               a knitd pod's projected ServiceAccount token, as
#                               the kubelet would mount it: a DaemonSet knitd (no
#                               pods run: no controller-manager), a Pod knitd-NODE
#                               it owns on node NODE, a TokenRequest bound to that
#                               Pod (audience AUD, default knit.dev/node); prints it
#   tailnet_knitd_token_file NAME
#                               the same for node NAME, into $E2E_DIR/NAME/pod-token,
#                               which tailnet_knitd_start NAME then passes to knitd
#
# Namespaces, veths, processes and state are removed at exit.

E2E_TAG=${E2E_TAG:-$$}
KNITD=$KNIT_BUILD_DIR/agent/knitd
KNIT=$KNIT_BUILD_DIR/agent/cli/knit
OPERATOR=$KNIT_BUILD_DIR/operator/knit-operator

ns_name() { echo "knit-$E2E_TAG-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns_name "$n")" "$@"; }

tailnet_net_up() {
	TAILNET_NET=$1
	local hub
	hub=$(ns_name hub)
	ip netns add "$hub" || e2e_die "cannot create namespace $hub"
	e2e_defer "ip netns del $hub"
	ip -n "$hub" link add br0 type bridge || e2e_die "cannot create bridge"
	ip -n "$hub" link set br0 up
	ip -n "$hub" link set lo up
	# The root namespace joins through one veth: apiserver and operator stay there.
	ip link add "kr$E2E_TAG" type veth peer name root netns "$hub" || e2e_die "cannot create veth"
	e2e_defer "ip link del kr$E2E_TAG"
	ip -n "$hub" link set root master br0 up
	ip addr add "10.$TAILNET_NET.0.1/24" dev "kr$E2E_TAG"
	ip link set "kr$E2E_TAG" up
	TAILNET_GW=10.$TAILNET_NET.0.1
}

tailnet_host_add() {
	local name=$1 idx=$2 ns hub
	ns=$(ns_name "$name")
	hub=$(ns_name hub)
	ip netns add "$ns" || e2e_die "cannot create namespace $ns"
	e2e_defer "ip netns del $ns"
	ip -n "$ns" link set lo up
	ip link add "k$E2E_TAG$idx" netns "$ns" type veth peer name "p$idx" netns "$hub" || e2e_die "veth for $name"
	ip -n "$ns" link set "k$E2E_TAG$idx" name eth0
	ip -n "$hub" link set "p$idx" master br0 up
	ip -n "$ns" addr add "10.$TAILNET_NET.0.$((10 + idx))/24" dev eth0
	ip -n "$ns" link set eth0 up
}

tailnet_host_move() {
	local name=$1 idx=$2
	ip -n "$(ns_name "$name")" addr flush dev eth0
	ip -n "$(ns_name "$name")" addr add "10.$TAILNET_NET.0.$((10 + idx))/24" dev eth0
}

tailnet_operator_start() {
	local id=$1
	OP_HTTP_PORT=$(e2e_free_port)
	COORD_PORT=${COORD_PORT:-$(e2e_free_port)}
	e2e_bg "operator-$id" "$OPERATOR" --namespace "${TAILNET_OP_NS:-knit-system}" --identity "$id" \
		--http-listen "127.0.0.1:$OP_HTTP_PORT" --coord-listen "${TAILNET_COORD_BIND:-$TAILNET_GW}:$COORD_PORT" \
		--lease-duration 4s --renew-deadline 3s --retry-period 1s ${TAILNET_OP_ARGS:-}
	OP_PID=$E2E_PID
	LOGIN_SERVER=http://$TAILNET_GW:$COORD_PORT
	e2e_wait_for 30 curl -sf "http://127.0.0.1:$OP_HTTP_PORT/readyz" ||
		e2e_die "operator $id never became ready: $(tail -5 "$E2E_DIR/operator-$id.log")"
}

tailnet_knitd_start() { # tailnet_knitd_start NAME [EXTRA knitd run ARGS...]
	local name=$1
	shift
	mkdir -p "$E2E_DIR/$name"
	[ -s "$E2E_DIR/$name/pod-token" ] && set -- --pod-token-file "$E2E_DIR/$name/pod-token" "$@"
	e2e_bg "knitd-$name" ip netns exec "$(ns_name "$name")" "$KNITD" run \
		--state-dir "$E2E_DIR/$name/state" --socket "$E2E_DIR/$name/knitd.sock" --tun "knit0" \
		--port 41641 --log-level debug "$@"
	eval "KNITD_PID_${name//-/_}=$E2E_PID"
	e2e_wait_for 20 test -S "$E2E_DIR/$name/knitd.sock" ||
		e2e_die "knitd in $name did not start: $(tail -5 "$E2E_DIR/knitd-$name.log")"
}

tailnet_knit() {
	local name=$1
	shift
	"$KNIT" --socket "$E2E_DIR/$name/knitd.sock" "$@"
}

tailnet_kube_up() {
	kube_up
	K=$KUBECTL
	$K create namespace knit-system >/dev/null || e2e_die "create namespace knit-system"
	$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
	$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"
}

tailnet_relay_start() { # NAME IDX [knit-relay ARGS...]
	local name=$1 idx=$2 ip
	shift 2
	ip=10.$TAILNET_NET.0.$((10 + idx))
	[ -e "/var/run/netns/$(ns_name "$name")" ] || tailnet_host_add "$name" "$idx"
	[ $# -gt 0 ] || set -- --stun-addr "$ip" --stun-port 3478
	e2e_bg "$name" ip netns exec "$(ns_name "$name")" "$KNIT_BUILD_DIR/relay/knit-relay" \
		--key-file "$E2E_DIR/$name.key" --listen "$ip:8080" "$@"
	e2e_wait_for 10 in_ns "$name" sh -c "ss -ltn | grep -q ':8080 '" || e2e_die "knit-relay $name did not listen"
}

tailnet_relay_map() { # JSON: the relayMap object
	e2e_wait_for 30 "$KUBECTL" get tailnet default >/dev/null 2>&1 || e2e_die "no default Tailnet"
	"$KUBECTL" patch tailnet default --type merge -p "{\"spec\":{\"relayMap\":$1}}" >/dev/null || e2e_die "relay map refused"
}

tailnet_authkey() { # NAME SPEC-JSON
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"knit-system"},"spec":%s}' \
		"$1" "$2" | "$KUBECTL" apply -f - >/dev/null || e2e_die "AuthKey $1 refused"
	e2e_wait_for 30 "$KUBECTL" get secret "$1-authkey" -n knit-system >/dev/null || e2e_die "AuthKey $1 has no Secret"
	"$KUBECTL" get secret "$1-authkey" -n knit-system -o jsonpath='{.data.authkey}' | base64 -d
}

# tailnet_pod_object NAME NODE [ANNOTATIONS]: a Pod object in namespace app
# (ServiceAccount web) scheduled to NODE, with no kubelet behind it: what
# the operator checks pod identities and node bindings against.
# ANNOTATIONS is a YAML flow map, e.g. '{knit.dev/identity: "true"}'.
tailnet_pod_object() {
	cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: app${3:+, annotations: $3}}
spec:
  nodeName: $2
  serviceAccountName: web
  automountServiceAccountToken: false
  containers: [{name: c, image: busybox}]
YAML
}

tailnet_knitd_token() { # NODE [AUDIENCE]
	local node=$1 aud=${2:-knit.dev/node} ns=${TAILNET_OP_NS:-knit-system} ds_uid pod_uid
	"$KUBECTL" -n "$ns" get serviceaccount knitd >/dev/null 2>&1 ||
		"$KUBECTL" -n "$ns" create serviceaccount knitd >/dev/null || e2e_die "ServiceAccount knitd"
	"$KUBECTL" -n "$ns" get daemonset knitd >/dev/null 2>&1 || cat <<YAML | "$KUBECTL" apply -f - >/dev/null || e2e_die "DaemonSet knitd"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: knitd, namespace: $ns}
spec:
  selector: {matchLabels: {app: knitd}}
  template:
    metadata: {labels: {app: knitd}}
    spec:
      serviceAccountName: knitd
      automountServiceAccountToken: false
      containers: [{name: knitd, image: knit.local/knit:dev}]
YAML
	ds_uid=$("$KUBECTL" -n "$ns" get daemonset knitd -o jsonpath='{.metadata.uid}')
	"$KUBECTL" -n "$ns" get pod "knitd-$node" >/dev/null 2>&1 || cat <<YAML | "$KUBECTL" apply -f - >/dev/null || e2e_die "Pod knitd-$node"
apiVersion: v1
kind: Pod
metadata:
  name: knitd-$node
  namespace: $ns
  labels: {app: knitd}
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: knitd, uid: "$ds_uid", controller: true}]
spec:
  nodeName: $node
  serviceAccountName: knitd
  automountServiceAccountToken: false
  containers: [{name: knitd, image: knit.local/knit:dev}]
YAML
	pod_uid=$("$KUBECTL" -n "$ns" get pod "knitd-$node" -o jsonpath='{.metadata.uid}')
	printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["%s"],"expirationSeconds":3600,"boundObjectRef":{"apiVersion":"v1","kind":"Pod","name":"knitd-%s","uid":"%s"}}}' \
		"$aud" "$node" "$pod_uid" >"$E2E_DIR/tokenrequest-$node.json"
	"$KUBECTL" create --raw "/api/v1/namespaces/$ns/serviceaccounts/knitd/token" -f "$E2E_DIR/tokenrequest-$node.json" |
		jq -er .status.token || e2e_die "no token for pod knitd-$node"
}

tailnet_knitd_token_file() { # NAME
	mkdir -p "$E2E_DIR/$1"
	tailnet_knitd_token "$1" >"$E2E_DIR/$1/pod-token" || e2e_die "no pod token for $1"
	chmod 600 "$E2E_DIR/$1/pod-token"
}
