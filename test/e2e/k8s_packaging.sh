#!/usr/bin/env bash
# The two ways users install knit, on a real three-node cluster
# (test/e2e/cluster) from the image the Dockerfile builds:
#
#   kubectl apply -f manifests/   on an empty cluster, nothing else: the
#       operator makes the default Tailnet and the nodes' AuthKey itself, the
#       operator is Ready (one leader), knitd Ready on every node, every node
#       a Device online, node <-> node knit ping over the tailnet. Applied
#       again: every object "unchanged"; applied --server-side: accepted.
#       The leader serves: both Services' EndpointSlices name its pod; the
#       API server calls the webhooks (a Policy whose test fails is refused
#       with the assertion; an AuthKey's user is its creator). The
#       PodDisruptionBudget lets the leader be evicted and refuses the other
#       replica right after; the Lease and the Services follow.
#       RBAC: `kubectl auth can-i` as each ServiceAccount says yes to what it
#       needs and no to the dangerous verbs; the operator logs no 403.
#       kubectl delete -f manifests/ removes it all and the nodes are clean
#       (no knit0, no route through it, no CNI conflist of knit's).
#   helm install charts/knit      the same mesh; helm test passes; helm
#       upgrade with a changed value rolls the operator and knitd, watched:
#       the longest tailnet ping gap per node and the leaders sampled every
#       ~200 ms (never two) are printed; the mesh stays up;
#       helm uninstall removes what Helm made (the CRDs stay, as Helm does:
#       deleted explicitly here, and then nothing of knit is left).
#
# Bad input: manifests/examples/ on a cluster without the CRDs is refused
# with kubectl's "ensure CRDs are installed first".
# (packaging_render.sh checks the same objects without a cluster.)
source "$(dirname "$0")/lib/common.sh"

e2e_begin k8s_packaging
CLUSTER=$KNIT_SOURCE_DIR/test/e2e/cluster
IMAGE=$KNIT_SOURCE_DIR/scripts/image
MAN=$KNIT_SOURCE_DIR/manifests
CHART=$KNIT_SOURCE_DIR/charts/knit
NAME=pk$(($$ % 100000))
NODES=3
OP_SA=system:serviceaccount:knit-system:knit-operator
KNITD_SA=system:serviceaccount:knit-system:knitd
e2e_need_bin containerd runc ctr buildah etcd nsenter python3 "$CLUSTER" "$IMAGE"

# --- the image, from the project's Dockerfile ------------------------------
# Under a tag of this suite's own: knit.local/knit:dev in the shared image
# cache is whatever tree built it last (other checkouts build it too, and
# one may do so between our build and our archive). Each node then knows
# it as knit.local/knit:dev, the name the manifests and the chart use.
TAG=knit.local/knit:k8s-packaging
t0=$(date +%s)
"$IMAGE" build --tag "$TAG" >"$E2E_DIR/image.log" 2>&1 || e2e_die "image build failed: $(tail -15 "$E2E_DIR/image.log")"
archive=$("$IMAGE" archive "$TAG" 2>>"$E2E_DIR/image.log") || e2e_die "no image archive"
e2e_pass "image $TAG built from the Dockerfile in $(($(date +%s) - t0))s"

# --- the cluster -----------------------------------------------------------
t0=$(date +%s)
e2e_defer "'$CLUSTER' down --name $NAME"
"$CLUSTER" up --name "$NAME" --nodes "$NODES" >"$E2E_DIR/up.log" 2>&1 ||
	e2e_die "cluster up failed: $(tail -15 "$E2E_DIR/up.log")"
eval "$("$CLUSTER" env --name "$NAME")"
# kubectl's discovery cache is per API server address, which a cluster of an
# earlier run may have had: a stale cache knows the knit.dev kinds.
export KUBECACHEDIR=$E2E_DIR/kube-cache
e2e_log "cluster $NAME up in $(($(date +%s) - t0))s"
K() { "$KUBECTL" "$@"; }
KS() { "$KUBECTL" -n knit-system "$@"; }
H() { "$HELM" "$@"; }
q() { "$@" >/dev/null 2>&1; }
# What the pods said, on failure: the first thing anyone needs.
dump_pods() {
	[ "$E2E_FAILED" -gt 0 ] || return 0
	KS get pods -o wide >&2 || true
	KS get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
	local p
	for p in $(KS get pods -o name 2>/dev/null); do
		e2e_log "--- $p"
		KS logs --all-containers --tail 30 "$p" >&2 || true
	done
}
die() { E2E_FAILED=$((E2E_FAILED + 1)); dump_pods; E2E_FAILED=$((E2E_FAILED - 1)); e2e_die "$@"; }
image_loaded() {
	local i
	"$CLUSTER" load --name "$NAME" "$archive" || return 1
	for i in $(seq "$NODES"); do
		ctr -a "$KNIT_CLUSTER_DIR/node$i/containerd.sock" -n k8s.io images rm knit.local/knit:dev 2>/dev/null
		ctr -a "$KNIT_CLUSTER_DIR/node$i/containerd.sock" -n k8s.io images tag "$TAG" knit.local/knit:dev || return 1
	done
}
e2e_check "image loaded into every node (as knit.local/knit:dev)" q image_loaded

# --- bad input: objects before their CRDs ----------------------------------
# (--dry-run=server: the example Pod and Job would otherwise be created.)
out=$(K apply --dry-run=server -f "$MAN/examples/" 2>&1) && e2e_fail "manifests/examples/ applied without the CRDs"
no_crd() { # KIND
	grep -A1 "no matches for kind \"$1\" in version \"knit.dev/v1alpha1\"" <<<"$out" |
		grep -q 'ensure CRDs are installed first'
}
e2e_check "examples without the CRDs: kubectl says to install the CRDs first (AuthKey)" no_crd AuthKey
e2e_check "examples without the CRDs: kubectl says to install the CRDs first (Policy)" no_crd Policy
no_crd AuthKey && no_crd Policy || e2e_log "kubectl said: $out"

# --- the mesh: shared by both installs --------------------------------------
op_pods() { # JSONPATH: one line per operator pod
	KS get pods -l app.kubernetes.io/name=knit-operator -o jsonpath="{range .items[*]}$1{\"\\n\"}{end}"
}
ops_up() {
	[ "$(op_pods '{.status.phase}' | grep -c Running)" -eq 2 ] &&
		[ "$(op_pods '{.status.conditions[?(@.type=="Ready")].status}' | grep -c True)" -ge 1 ]
}
devices_online() {
	[ "$(K get devices -o jsonpath='{range .items[*]}{.status.online}{"\n"}{end}' | grep -c true)" -eq "$NODES" ]
}
knitd_pod() { # NODE-INDEX: the knitd pod on that node
	KS get pods -l app.kubernetes.io/name=knitd --field-selector "spec.nodeName=$NAME-n$1" \
		-o jsonpath='{.items[0].metadata.name}'
}
kn() { # NODE-INDEX ARGS...: the knit CLI in that node's knitd pod
	local i=$1
	shift
	timeout 60 "$KUBECTL" -n knit-system exec "$(knitd_pod "$i")" -- knit "$@"
}
ping_ok() { kn "$1" ping --icmp -c 2 "$NAME-n$2"; }
mesh_formed() { # HOW: the checks every install must pass
	e2e_check "$1: both operator replicas run, one is Ready" e2e_wait_for 180 ops_up
	e2e_check "$1: one replica holds the Lease" e2e_wait_for 60 has_leader
	e2e_check "$1: the operator made the AuthKey nodes and its Secret" e2e_wait_for 60 KS get secret nodes-authkey
	e2e_check "$1: knitd Ready on all $NODES nodes" q KS rollout status daemonset/knitd --timeout=240s
	e2e_expect "$1: $NODES knitd pods Ready" "$NODES" \
		"$(KS get pods -l app.kubernetes.io/name=knitd -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)"
	e2e_check "$1: the relay StatefulSet's replicas are Ready" q KS rollout status statefulset/knit-relay --timeout=240s
	e2e_check "$1: $NODES Devices online" e2e_wait_for 120 devices_online
	e2e_check "$1: knit ping node 1 -> node 2 over the tailnet" e2e_wait_for 60 ping_ok 1 2
	e2e_check "$1: knit ping node 3 -> node 1 over the tailnet" e2e_wait_for 60 ping_ok 3 1
}

# The nodes carry nothing of knit: no TUN, no route through it, and the CNI
# configuration directory as it was before (the cluster's own conflist is
# 10-knit-pods.conflist: a name of the test cluster's, not of knit's).
# Names and contents (not times: an uninstall restores the bytes, and a
# rolling update uninstalls and reinstalls).
cni_confs() { "$CLUSTER" node --name "$NAME" "$1" sh -c 'cd /etc/cni/net.d && sha256sum -- * 2>/dev/null; ls -A'; }
for i in $(seq "$NODES"); do cni_confs "$i" >"$E2E_DIR/cni-before.$i" 2>&1; done
node_clean() { # NODE-INDEX
	! "$CLUSTER" node --name "$NAME" "$1" ip link show knit0 &&
		! "$CLUSTER" node --name "$NAME" "$1" ip route show table all | grep -q knit0 &&
		[ "$(cni_confs "$1" 2>&1)" = "$(cat "$E2E_DIR/cni-before.$1")" ]
}
nodes_clean() {
	local i
	for i in $(seq "$NODES"); do node_clean "$i" || return 1; done
}
# Anything of knit's in the API: kinds, cluster RBAC, webhooks, the namespace.
knit_left() {
	{
		K get crd -o name | grep knit.dev
		K get clusterroles,clusterrolebindings -o name | grep knit
		K get mutatingwebhookconfigurations,validatingwebhookconfigurations -o name | grep knit
		K get namespace knit-system -o name
	} 2>/dev/null
}

# --- the leader serves: webhooks and coordination follow the Lease -----------
leader() { KS get lease knit-operator -o jsonpath='{.spec.holderIdentity}'; }
has_leader() { [ -n "$(leader)" ]; }
pod_ip() { KS get pod "$1" -o jsonpath='{.status.podIP}'; }
slice_ip() { KS get endpointslice "$1-leader" -o jsonpath='{.endpoints[*].addresses[*]}'; }
slices_at_leader() { # the two Services' only endpoint is the leader's pod
	local l ip
	l=$(leader) && [ -n "$l" ] && ip=$(pod_ip "$l") && [ -n "$ip" ] &&
		[ "$(slice_ip knit-coordination)" = "$ip" ] && [ "$(slice_ip knit-webhook)" = "$ip" ]
}
ca_bundles() {
	[ -n "$(K get validatingwebhookconfiguration knit -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] &&
		[ -n "$(K get mutatingwebhookconfiguration knit -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]
}
# A Policy whose own test fails: the API server must call the webhook (at
# the Service's ClusterIP, through kube-proxy) and refuse it with the
# failing assertion.
refused_policy() {
	K apply -f - 2>&1 <<'YAML'
apiVersion: knit.dev/v1alpha1
kind: Policy
metadata: {name: pk-refused}
spec:
  tailnet: default
  policy: |
    {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["*:*"]}],
     "tests": [{"src": "bob@example.com", "accept": ["100.64.0.1:22"]}]}
YAML
}
policy_refused() {
	local out
	out=$(refused_policy) && { e2e_log "policy accepted: $out"; K delete policy pk-refused >/dev/null 2>&1; return 1; }
	grep -q 'admission webhook "policies.knit.dev" denied the request' <<<"$out" &&
		grep -q 'expected accept, got deny' <<<"$out" || { e2e_log "kubectl said: $out"; return 1; }
}
# evict POD: what the Eviction API (kubectl drain's) answers; policy/v1beta1
# on 1.20.
evict() {
	local v=policy/v1
	K api-versions | grep -qx policy/v1 || v=policy/v1beta1
	K create --raw "/api/v1/namespaces/knit-system/pods/$1/eviction" -f - 2>&1 <<JSON
{"apiVersion": "$v", "kind": "Eviction", "metadata": {"name": "$1", "namespace": "knit-system"}}
JSON
}
both_ready() { [ "$(op_pods '{.status.conditions[?(@.type=="Ready")].status}' | grep -c True)" -eq 2 ]; }
pdb_allows() { [ "$(KS get pdb knit-operator -o jsonpath='{.status.disruptionsAllowed}')" = "$1" ]; }
leader_checks() { # HOW
	local l1 other out t1
	e2e_check "$1: both operator replicas Ready (standby included)" e2e_wait_for 60 both_ready
	e2e_check "$1: the coordination and webhook EndpointSlices name the leader's pod only" \
		e2e_wait_for 30 slices_at_leader
	e2e_check "$1: the operator wrote its CA into both webhook configurations" e2e_wait_for 60 ca_bundles
	e2e_check "$1: kubectl apply of a Policy whose test fails is refused by the webhook with the assertion" \
		e2e_wait_for 30 policy_refused
	K delete policy pk-refused >/dev/null 2>&1
	printf 'apiVersion: knit.dev/v1alpha1\nkind: AuthKey\nmetadata: {name: pk-webhook, namespace: knit-system}\nspec: {tailnet: default}\n' |
		K apply -f - >/dev/null 2>&1
	e2e_expect "$1: an AuthKey's user is its creator (the mutating webhook)" knit-admin \
		"$(KS get authkey pk-webhook -o jsonpath='{.spec.user}' 2>/dev/null)"
	KS delete authkey pk-webhook >/dev/null 2>&1
	# The budget: one replica at a time.
	e2e_check "$1: the PodDisruptionBudget allows one disruption" e2e_wait_for 30 pdb_allows 1
	l1=$(leader)
	other=$(op_pods '{.metadata.name}' | grep -vx "$l1" | head -1)
	t1=$(date +%s%N)
	out=$(evict "$l1")
	e2e_expect "$1: evicting the leader $l1 is allowed" "" "$(grep -iE 'error|cannot' <<<"$out")"
	out=$(evict "$other")
	e2e_check "$1: evicting the other replica right after is refused by the budget" \
		grep -q 'disruption budget' <<<"$out"
	new_leader() { local l; l=$(leader) && [ -n "$l" ] && [ "$l" != "$l1" ] && slices_at_leader; }
	e2e_check "$1: the Lease and both Services move to another replica" e2e_wait_for 60 new_leader
	e2e_log "leader $l1 evicted: $(leader) leads and the Services name it $(( ($(date +%s%N) - t1) / 1000000 )) ms later"
	e2e_check "$1: after the eviction: both replicas Ready again" e2e_wait_for 120 both_ready
	e2e_check "$1: after the eviction: $NODES Devices online" e2e_wait_for 120 devices_online
	e2e_check "$1: after the eviction: knit ping node 2 -> node 3" e2e_wait_for 60 ping_ok 2 3
}

# --- upgrades, watched --------------------------------------------------------
# Every node pings the next one's tailnet address from its own network
# namespace (through knit0 and its knitd) every 200 ms, and the operator
# replicas' knit_leader gauges and the Lease holder are sampled every
# ~300 ms, for as long as a rollout runs.
WATCH_PIDS=()
tailnet_ip() { # NODE-INDEX
	K get devices -o jsonpath="{range .items[?(@.spec.hostname==\"$NAME-n$1\")]}{.status.addresses[0]}{end}" | cut -d/ -f1
}
watch_start() {
	local i
	for i in $(seq "$NODES"); do
		"$CLUSTER" node --name "$NAME" "$i" ping -D -n -i 0.2 -W 1 "$(tailnet_ip $((i % NODES + 1)))" \
			>"$E2E_DIR/ping.$i" 2>&1 &
		WATCH_PIDS+=($!)
	done
	# curl and jq rather than kubectl: a sample every ~200 ms.
	local tok
	tok=$(cat "$KNIT_CLUSTER_DIR/pki/admin.token")
	api() { curl -s --max-time 1 --cacert "$KNIT_CLUSTER_DIR/pki/ca.crt" -H "Authorization: Bearer $tok" "$KNIT_CLUSTER_SERVER$1"; }
	while :; do
		local n=0 ip
		for ip in $(api "/api/v1/namespaces/knit-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dknit-operator" |
			jq -r '.items[].status.podIP // empty'); do
			curl -s --max-time 0.5 "http://$ip:8081/metrics" 2>/dev/null | grep -qx 'knit_leader 1' && n=$((n + 1))
		done
		echo "$(date +%s%3N) $n $(api /apis/coordination.k8s.io/v1/namespaces/knit-system/leases/knit-operator | jq -r '.spec.holderIdentity // "-"')"
		sleep 0.1
	done >"$E2E_DIR/leaders" 2>/dev/null &
	WATCH_PIDS+=($!)
	e2e_defer "kill ${WATCH_PIDS[*]}"
}
watch_stop() {
	kill "${WATCH_PIDS[@]}" 2>/dev/null
	wait "${WATCH_PIDS[@]}" 2>/dev/null
	WATCH_PIDS=()
}
ping_flows() { # every node has had an echo reply in the last second
	local i
	for i in $(seq "$NODES"); do
		[ $(( $(date +%s) - $(awk -F'[][]' '/bytes from/ {t = $2} END {printf "%d", t}' "$E2E_DIR/ping.$i") )) -le 1 ] || return 1
	done
}
# The longest time without an echo reply, in ms, from the first reply on.
ping_gap() {
	awk -F'[][]' '/bytes from/ {t = $2 * 1000; if (p && t - p > g) g = t - p; p = t} END {printf "%d\n", g}' "$E2E_DIR/ping.$1"
}
watch_report() {
	local i gap worst=0 most holders
	for i in $(seq "$NODES"); do
		gap=$(ping_gap "$i")
		[ "$gap" -gt "$worst" ] && worst=$gap
		e2e_log "node $i -> node $((i % NODES + 1)) over the tailnet: longest gap ${gap} ms ($(grep -c 'bytes from' "$E2E_DIR/ping.$i") replies)"
	done
	# Printed, not asserted: on this Kubernetes 1.20 cluster a node's
	# tunnels pause for as long as its knitd pod is replaced (see
	# manifests/20-knitd.yaml), beyond the 2 s of issue 18.
	[ "$worst" -le 2000 ] || e2e_log "NOTE: longest gap ${worst} ms, over the 2 s target: knitd's pod is replaced, not handed over (manifests/20-knitd.yaml)"
	most=$(awk 'NF == 3 && $2 + 0 > m {m = $2 + 0} END {print m + 0}' "$E2E_DIR/leaders")
	holders=$(awk 'NF == 3 && $3 != p {printf "%s%s", s, $3; s = " -> "; p = $3}' "$E2E_DIR/leaders")
	e2e_log "leaders: $(grep -c . "$E2E_DIR/leaders") samples (longest interval $(awk 'NF == 3 {if (p && $1 - p > g) g = $1 - p; p = $1} END {print g + 0}' "$E2E_DIR/leaders") ms), at most $most replica(s) leading at once; Lease holders: $holders"
	e2e_expect "no sample saw two operator replicas leading at once" 1 "$most"
}

# --- kubectl apply -f manifests/ ----------------------------------------------
# The test cluster runs Kubernetes 1.20, which serves PodDisruptionBudgets
# only as policy/v1beta1 (policy/v1 came with 1.21): there, and only there,
# the one PDB file is applied with that apiVersion, as its comment says.
APPLY=$MAN
if ! K api-versions | grep -qx policy/v1; then
	APPLY=$E2E_DIR/manifests
	mkdir -p "$APPLY"
	cp "$MAN"/*.yaml "$APPLY/"
	sed -i 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' "$APPLY/11-operator-pdb.yaml"
	e2e_log "Kubernetes $(K version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'): the PDB as policy/v1beta1"
fi
t0=$(date +%s)
K apply -f "$APPLY/" >"$E2E_DIR/apply1.txt" 2>&1 || die "kubectl apply -f manifests/ failed: $(cat "$E2E_DIR/apply1.txt")"
e2e_expect "kubectl apply -f manifests/ on an empty cluster creates every object" "" \
	"$(grep -v ' created$' "$E2E_DIR/apply1.txt")"
mesh_formed "kubectl apply"
e2e_log "mesh formed $(($(date +%s) - t0))s after kubectl apply"
e2e_expect "the default Tailnet is Ready" True \
	"$(K get tailnet default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
e2e_expect "the bootstrapped AuthKey is reusable and preauthorized" "true true" \
	"$(KS get authkey nodes -o jsonpath='{.spec.reusable} {.spec.preauthorized}')"

K apply -f "$APPLY/" >"$E2E_DIR/apply2.txt" 2>&1 || e2e_fail "second apply failed: $(cat "$E2E_DIR/apply2.txt")"
e2e_expect "applied again: every object unchanged" "" "$(grep -v ' unchanged$' "$E2E_DIR/apply2.txt")"
K apply --server-side -f "$APPLY/" >"$E2E_DIR/apply3.txt" 2>&1
rc=$?
e2e_expect "kubectl apply --server-side -f manifests/: every object server-side applied" "0 " \
	"$rc $(grep -v ' serverside-applied$' "$E2E_DIR/apply3.txt")"

# RBAC: what each ServiceAccount may do (kubectl auth can-i).
can() { # yes|no AS VERB RESOURCE[:SUBRESOURCE] [ARGS...]
	local want=$1 as=$2 verb=$3 res=$4 got
	shift 4
	[[ $res != *:* ]] || set -- --subresource="${res#*:}" "$@"
	got=$(K auth can-i --as="$as" "$verb" "${res%%:*}" "$@" 2>/dev/null)
	[ "$got" = "$want" ] || { e2e_log "can-i $verb $res $* as $as: $got, want $want"; return 1; }
}
bad=0
while read -r verb res ns; do
	can yes "$OP_SA" "$verb" "$res" ${ns:+-n "$ns"} || bad=$((bad + 1))
done <<'EOF'
list tailnets.knit.dev
watch tailnets.knit.dev
create tailnets.knit.dev
update tailnets.knit.dev:status
create authkeys.knit.dev knit-system
update authkeys.knit.dev:status default
create devices.knit.dev
update devices.knit.dev
delete devices.knit.dev
patch devices.knit.dev:status
update authkeys.knit.dev:finalizers knit-system
update devices.knit.dev:finalizers
create addressclaims.knit.dev
delete addressclaims.knit.dev
watch policies.knit.dev
create secrets knit-system
get secrets knit-system
watch secrets knit-system
create events default
patch events knit-system
get leases knit-system
create leases knit-system
update leases knit-system
list pods
watch nodes
get validatingwebhookconfigurations/knit
update mutatingwebhookconfigurations/knit
create endpointslices.discovery.k8s.io knit-system
patch endpointslices.discovery.k8s.io/knit-coordination-leader knit-system
patch endpointslices.discovery.k8s.io/knit-webhook-leader knit-system
get services/knit-webhook knit-system
create tokenreviews.authentication.k8s.io
delete pods knit-system
EOF
e2e_expect "the operator may do every verb it needs" 0 "$bad"
bad=0
while read -r verb res ns; do
	can no "$OP_SA" "$verb" "$res" ${ns:+-n "$ns"} || bad=$((bad + 1))
done <<'EOF'
create pods:exec default
create pods default
patch pods default
patch pods knit-system
delete pods kube-system
update nodes
patch nodes
delete nodes
update secrets kube-system
get secrets kube-system
get secrets default
list secrets
watch secrets
create secrets default
update tailnets.knit.dev:finalizers
patch nodes:status
delete secrets knit-system
create clusterroles
update clusterrolebindings
create rolebindings knit-system
escalate roles knit-system
bind clusterroles
create customresourcedefinitions
update customresourcedefinitions
impersonate users
impersonate serviceaccounts kube-system
update validatingwebhookconfigurations/other
create validatingwebhookconfigurations
create leases kube-system
update tailnets.knit.dev
delete authkeys.knit.dev knit-system
patch pods knit-system
update pods knit-system
patch endpointslices.discovery.k8s.io/other knit-system
update endpointslices.discovery.k8s.io knit-system
delete endpointslices.discovery.k8s.io knit-system
create endpointslices.discovery.k8s.io kube-system
patch endpoints knit-system
update services knit-system
get services/kubernetes default
create subjectaccessreviews.authorization.k8s.io
create serviceaccounts:token knit-system
EOF
e2e_expect "the operator may do none of the dangerous verbs" 0 "$bad"
# Secrets only where a RoleBinding to knit-operator-secrets allows
# (Tailnet.spec.authKeyNamespaces, issue 15.8): never cluster-wide.
no_secrets_elsewhere() { can no "$OP_SA" list secrets -A && can no "$OP_SA" get secrets -n kube-system; }
e2e_check "the operator cannot read Secrets cluster-wide (nor in kube-system)" no_secrets_elsewhere
bad=0
while read -r verb res ns; do
	can no "$KNITD_SA" "$verb" "$res" ${ns:+-n "$ns"} || bad=$((bad + 1))
done <<'EOF'
get secrets knit-system
list pods
get nodes
list devices.knit.dev
create events knit-system
get leases knit-system
create tokenreviews.authentication.k8s.io
create serviceaccounts:token knit-system
EOF
e2e_expect "knitd's ServiceAccount may do nothing" 0 "$bad"
KS logs -l app.kubernetes.io/name=knit-operator --all-containers --prefix --tail=-1 >"$E2E_DIR/operator.log" 2>&1
e2e_expect "the operator (its own ServiceAccount) logged no 403 / Forbidden" "" \
	"$(grep -iE 'status=403|forbidden' "$E2E_DIR/operator.log" | head -5)"
e2e_expect "the operator logged what it bootstrapped" 2 \
	"$(grep -cE 'created.*kind=(Tailnet|AuthKey)' "$E2E_DIR/operator.log")"
leader_checks "kubectl apply"
KS logs -l app.kubernetes.io/name=knit-operator --all-containers --prefix --tail=-1 >"$E2E_DIR/operator-2.log" 2>&1
e2e_expect "the replicas after the eviction logged no 403 / Forbidden either" "" \
	"$(grep -iE 'status=403|forbidden' "$E2E_DIR/operator-2.log" | head -5)"
dump_pods

t0=$(date +%s)
K delete -f "$APPLY/" --ignore-not-found --timeout=180s >"$E2E_DIR/delete.txt" 2>&1 ||
	e2e_fail "kubectl delete -f manifests/ failed: $(tail -5 "$E2E_DIR/delete.txt")"
nothing_left() { [ -z "$(knit_left)" ]; }
e2e_check "kubectl delete -f manifests/ removes every object of knit" e2e_wait_for 120 nothing_left
e2e_check "every node is clean (no knit0, no route through it, no knit conflist)" e2e_wait_for 60 nodes_clean
e2e_log "deleted in $(($(date +%s) - t0))s; left: $(knit_left | xargs)"

# --- helm --------------------------------------------------------------------
# A fresh install: the nodes forget the first install's device state too
# (its control plane, and so its logins, are gone).
for i in $(seq "$NODES"); do "$CLUSTER" node --name "$NAME" "$i" rm -rf /var/lib/knit/node; done
e2e_check "helm lint --strict is clean" q H lint --strict "$CHART"
t0=$(date +%s)
H install knit "$CHART" -n knit-system --create-namespace --set image.pullPolicy=Never \
	>"$E2E_DIR/helm-install.txt" 2>&1 || die "helm install failed: $(cat "$E2E_DIR/helm-install.txt")"
e2e_pass "helm install knit"
mesh_formed "helm install"
e2e_log "mesh formed $(($(date +%s) - t0))s after helm install"
H test knit -n knit-system --logs --timeout 4m >"$E2E_DIR/helm-test.txt" 2>&1
rc=$?
e2e_expect "helm test passes (a pod pings every peer over the tailnet)" "0 Succeeded" \
	"$rc $(awk '/^Phase:/ {print $2; exit}' "$E2E_DIR/helm-test.txt")"
[ "$rc" -eq 0 ] || cat "$E2E_DIR/helm-test.txt" >&2

e2e_check "helm install: the Services name the leader's pod only" e2e_wait_for 60 slices_at_leader
e2e_check "helm install: a Policy whose test fails is refused by the webhook" e2e_wait_for 60 policy_refused
K delete policy pk-refused >/dev/null 2>&1

# helm upgrade with a changed pod template for both workloads, watched:
# tailnet pings between the nodes and the operator replicas that lead.
gen=$(KS get daemonset knitd -o jsonpath='{.metadata.generation}')
watch_start
e2e_wait_for 20 ping_flows || e2e_fail "no ping over the tailnet before the upgrade"
t0=$(date +%s)
H upgrade knit "$CHART" -n knit-system --reuse-values --set knitd.logLevel=debug --set operator.logLevel=debug \
	>"$E2E_DIR/helm-upgrade.txt" 2>&1 || e2e_fail "helm upgrade failed: $(cat "$E2E_DIR/helm-upgrade.txt")"
e2e_check "helm upgrade rolls the operator Deployment out" q KS rollout status deployment/knit-operator --timeout=300s
e2e_check "helm upgrade rolls the knitd DaemonSet out" q KS rollout status daemonset/knitd --timeout=300s
e2e_check "after the upgrade: the Services name the new leader's pod" e2e_wait_for 60 slices_at_leader
e2e_check "after the upgrade: every node's tailnet pings flow again" e2e_wait_for 90 ping_flows
watch_stop
e2e_log "helm upgrade rolled out in $(($(date +%s) - t0))s"
watch_report
e2e_expect "the DaemonSet's pods run with the new value" "$NODES" \
	"$(KS get pods -l app.kubernetes.io/name=knitd -o jsonpath='{range .items[*]}{.spec.containers[0].args}{"\n"}{end}' | grep -c -- '--log-level=debug')"
e2e_check "the DaemonSet's generation moved" test "$(KS get daemonset knitd -o jsonpath='{.metadata.generation}')" -gt "$gen"
e2e_check "after the rollout: knit ping node 1 -> node 2 over the tailnet" e2e_wait_for 90 ping_ok 1 2
e2e_check "after the rollout: knit ping node 2 -> node 3 over the tailnet" e2e_wait_for 90 ping_ok 2 3
e2e_check "after the rollout: $NODES Devices online" e2e_wait_for 60 devices_online
KS logs -l app.kubernetes.io/name=knit-operator --all-containers --prefix --tail=-1 >"$E2E_DIR/operator.log" 2>&1
e2e_expect "the operator installed by Helm logged no 403 / Forbidden" "" \
	"$(grep -iE 'status=403|forbidden' "$E2E_DIR/operator.log" | head -5)"
dump_pods

H uninstall knit -n knit-system --wait --timeout 3m >"$E2E_DIR/helm-uninstall.txt" 2>&1 ||
	e2e_fail "helm uninstall failed: $(cat "$E2E_DIR/helm-uninstall.txt")"
# (A failed helm test pod stays for its logs: Helm keeps hooks it did not delete.)
helm_gone() {
	[ -z "$(KS get deploy,ds,svc,sa,role,rolebinding,pods -o name \
		-l 'app.kubernetes.io/part-of=knit,app.kubernetes.io/name!=knit-mesh-test' 2>/dev/null)" ] &&
		! K get clusterrole knit-operator && ! K get clusterrolebinding knit-operator
}
e2e_check "helm uninstall removes the workloads, Services and RBAC" e2e_wait_for 120 helm_gone
e2e_expect "helm uninstall keeps the CRDs (Helm never deletes crds/)" 5 "$(K get crd -o name | grep -c knit.dev)"
K delete -f "$CHART/crds/" --timeout=120s >/dev/null 2>&1 || e2e_fail "cannot delete the CRDs"
# What is left in the namespace Helm made is the operator's own state (its
# Lease, the control-key Secret); the namespace goes with it.
e2e_log "left in knit-system: $(KS get all,secrets,leases,configmaps -o name 2>/dev/null | xargs)"
K delete namespace knit-system --timeout=120s >/dev/null 2>&1 || e2e_fail "cannot delete namespace knit-system"
e2e_check "after helm uninstall and the CRDs: nothing of knit is left" e2e_wait_for 120 nothing_left
e2e_check "every node is clean again" e2e_wait_for 60 nodes_clean

dump_pods
e2e_end
