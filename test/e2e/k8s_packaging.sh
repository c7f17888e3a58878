#!/usr/bin/env bash
# The two ways users install knit, on a real three-node cluster
# (test/e2e/cluster) from the image the Dockerfile builds:
#
#   kubectl apply -f manifests/   on an empty cluster, nothing else: the
#       operator makes the default Tailnet and the nodes' AuthKey itself, the
#       operator is Ready (one leader), knitd Ready on every node, every node
#       a Device online, node <-> node knit ping over the tailnet. Applied
#       again: every object "unchanged"; applied --server-side: accepted.
#       RBAC: `kubectl auth can-i` as each ServiceAccount says yes to what it
#       needs and no to the dangerous verbs; the operator logs no 403.
#       kubectl delete -f manifests/ removes it all and the nodes are clean
#       (no knit0, no route through it, no CNI conflist of knit's).
#   helm install charts/knit      the same mesh; helm test passes; helm
#       upgrade with a changed value rolls knitd and the mesh stays up;
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
t0=$(date +%s)
"$IMAGE" build >"$E2E_DIR/image.log" 2>&1 || e2e_die "image build failed: $(tail -15 "$E2E_DIR/image.log")"
archive=$("$IMAGE" archive knit.local/knit:dev 2>>"$E2E_DIR/image.log") || e2e_die "no image archive"
e2e_pass "image knit.local/knit:dev built from the Dockerfile in $(($(date +%s) - t0))s"

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
e2e_check "image loaded into every node" q "$CLUSTER" load --name "$NAME" "$archive"

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
ping_ok() { kn "$1" ping -c 2 "$NAME-n$2"; }
mesh_formed() { # HOW: the checks every install must pass
	e2e_check "$1: both operator replicas run, one is Ready" e2e_wait_for 180 ops_up
	e2e_expect "$1: exactly one operator replica is Ready (the leader)" 1 \
		"$(op_pods '{.status.conditions[?(@.type=="Ready")].status}' | grep -c True)"
	e2e_check "$1: the operator made the AuthKey nodes and its Secret" e2e_wait_for 60 KS get secret nodes-authkey
	e2e_check "$1: knitd Ready on all $NODES nodes" q KS rollout status daemonset/knitd --timeout=240s
	e2e_expect "$1: $NODES knitd pods Ready" "$NODES" \
		"$(KS get pods -l app.kubernetes.io/name=knitd -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)"
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

# --- kubectl apply -f manifests/ ----------------------------------------------
t0=$(date +%s)
K apply -f "$MAN/" >"$E2E_DIR/apply1.txt" 2>&1 || die "kubectl apply -f manifests/ failed: $(cat "$E2E_DIR/apply1.txt")"
e2e_expect "kubectl apply -f manifests/ on an empty cluster creates every object" "" \
	"$(grep -v ' created$' "$E2E_DIR/apply1.txt")"
mesh_formed "kubectl apply"
e2e_log "mesh formed $(($(date +%s) - t0))s after kubectl apply"
e2e_expect "the default Tailnet is Ready" True \
	"$(K get tailnet default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
e2e_expect "the bootstrapped AuthKey is reusable and preauthorized" "true true" \
	"$(KS get authkey nodes -o jsonpath='{.spec.reusable} {.spec.preauthorized}')"

K apply -f "$MAN/" >"$E2E_DIR/apply2.txt" 2>&1 || e2e_fail "second apply failed: $(cat "$E2E_DIR/apply2.txt")"
e2e_expect "applied again: every object unchanged" "" "$(grep -v ' unchanged$' "$E2E_DIR/apply2.txt")"
K apply --server-side -f "$MAN/" >"$E2E_DIR/apply3.txt" 2>&1
rc=$?
e2e_expect "kubectl apply --server-side -f manifests/: every object server-side applied" "0 " \
	"$rc $(grep -v ' serverside-applied$' "$E2E_DIR/apply3.txt")"

# RBAC: what each ServiceAccount may do (kubectl auth can-i).
can() { # yes|no AS VERB RESOURCE[:SUBRESOURCE] [ARGS...]
	local want=$1 as=$2 verb=$3 res=$4 got
	shift 4
	[[ $res != *:* ]] || set -- --subresource="${res#*:}" "$@"
	got=$(K auth can-i --as="$as" "$verb" "${res%%:*}" "$@" 2>/dev/null)
	[ "$got" = "$want" ] || { e2e_log "can-i $* as $as: $got, want $want"; return 1; }
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
EOF
e2e_expect "the operator may do every verb it needs" 0 "$bad"
bad=0
while read -r verb res ns; do
	can no "$OP_SA" "$verb" "$res" ${ns:+-n "$ns"} || bad=$((bad + 1))
done <<'EOF'
create pods:exec default
create pods default
delete pods knit-system
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
EOF
e2e_expect "knitd's ServiceAccount may do nothing" 0 "$bad"
KS logs -l app.kubernetes.io/name=knit-operator --all-containers --prefix --tail=-1 >"$E2E_DIR/operator.log" 2>&1
e2e_expect "the operator (its own ServiceAccount) logged no 403 / Forbidden" "" \
	"$(grep -iE 'status=403|forbidden' "$E2E_DIR/operator.log" | head -5)"
e2e_expect "the operator logged what it bootstrapped" 2 \
	"$(grep -cE 'created.*kind=(Tailnet|AuthKey)' "$E2E_DIR/operator.log")"
dump_pods

t0=$(date +%s)
K delete -f "$MAN/" --ignore-not-found --timeout=180s >"$E2E_DIR/delete.txt" 2>&1 ||
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

gen=$(KS get daemonset knitd -o jsonpath='{.metadata.generation}')
H upgrade knit "$CHART" -n knit-system --reuse-values --set knitd.logLevel=debug \
	>"$E2E_DIR/helm-upgrade.txt" 2>&1 || e2e_fail "helm upgrade failed: $(cat "$E2E_DIR/helm-upgrade.txt")"
e2e_check "helm upgrade rolls the knitd DaemonSet out" q KS rollout status daemonset/knitd --timeout=300s
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
