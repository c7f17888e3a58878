#!/usr/bin/env bash
# knit-cni's identity mode under the real kubelet and containerd of
# test/e2e/cluster: the knitd DaemonSet's init container chains knit-cni
# into each node's bridge conflist; two pods annotated knit.dev/identity on
# two different nodes get knit0 with their own tailnet addresses and reach
# each other over them (a TCP exchange: the image has no ping); an
# unannotated pod gets no knit0; deleting a pod deletes its Device.
source "$(dirname "$0")/lib/common.sh"

e2e_begin k8s_cni
CLUSTER=$KNIT_SOURCE_DIR/test/e2e/cluster
IMAGE=$KNIT_SOURCE_DIR/scripts/image
MAN=$KNIT_SOURCE_DIR/manifests
NAME=e2c$(($$ % 100000))
NODES=2
e2e_need_bin containerd runc ctr buildah etcd nsenter "$CLUSTER" "$IMAGE"

t0=$(date +%s)
"$IMAGE" build >"$E2E_DIR/image.log" 2>&1 || e2e_die "image build failed: $(tail -15 "$E2E_DIR/image.log")"
e2e_pass "image built in $(($(date +%s) - t0))s"
archive=$("$IMAGE" archive knit.local/knit:dev 2>>"$E2E_DIR/image.log") || e2e_die "no image archive"

e2e_defer "'$CLUSTER' down --name $NAME"
"$CLUSTER" up --name "$NAME" --nodes "$NODES" >"$E2E_DIR/up.log" 2>&1 ||
	e2e_die "cluster up failed: $(tail -15 "$E2E_DIR/up.log")"
eval "$("$CLUSTER" env --name "$NAME")"
K() { "$KUBECTL" "$@"; }
KS() { "$KUBECTL" -n knit-system "$@"; }
q() { "$@" >/dev/null 2>&1; }
dump() {
	[ "$E2E_FAILED" -gt 0 ] || return 0
	K get pods -A -o wide >&2 || true
	K get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
	local p
	for p in $(KS get pods -o name 2>/dev/null); do
		e2e_log "--- $p"
		KS logs --all-containers --tail 30 "$p" >&2 || true
	done
}
e2e_check "image loaded into every node" q "$CLUSTER" load --name "$NAME" "$archive"

q K apply $(printf -- "-f %s " "$MAN"/01-crd-*.yaml) || e2e_die "cannot apply the CRDs"
e2e_check "CRDs established" q K wait --for condition=established crd --all --timeout=60s
e2e_check "operator and knitd applied" q K apply -f "$MAN/00-namespace.yaml" -f "$MAN/10-operator.yaml" -f "$MAN/12-webhooks.yaml" -f "$MAN/20-knitd.yaml"
e2e_check "knitd runs on every node (its init container installed knit-cni)" q KS rollout status daemonset/knitd --timeout=300s
devices_online() {
	[ "$(K get devices -o jsonpath='{range .items[*]}{.status.online}{"\n"}{end}' | grep -c true)" -ge "$NODES" ]
}
e2e_check "$NODES node Devices online" e2e_wait_for 180 devices_online

pod() { # NAME NODE-INDEX ANNOTATED COMMAND
	cat <<YAML | K apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
  annotations: {knit.dev/identity: "$3"}
spec:
  nodeName: $NAME-n$2
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: knit.local/knit:dev
    imagePullPolicy: Never
    command: [bash, -c]
    args:
    - |
      $4
YAML
}
# A TCP echo on the pod's own tailnet address (perl-base is in the image).
SERVE='exec perl -MIO::Socket::INET -e "\$s=IO::Socket::INET->new(LocalPort=>7070,Listen=>5,ReuseAddr=>1) or die; while(\$c=\$s->accept){print \$c \"hello from a\\n\"; close \$c}"'
pod a 1 true "$SERVE" || e2e_die "pod a"
pod b 2 true "sleep infinity" || e2e_die "pod b"
pod plain 1 false "sleep infinity" || e2e_die "pod plain"
e2e_check "the three pods run" q K wait --for=condition=Ready pod/a pod/b pod/plain --timeout=180s
addr() { K exec "$1" -- ip -4 -o addr show dev knit0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }
A=$(addr a)
B=$(addr b)
e2e_check "pod a has knit0 with a tailnet address ($A)" grep -q '^100\.' <<<"$A"
e2e_check "pod b has knit0 with a tailnet address ($B)" grep -q '^100\.' <<<"$B"
e2e_check "the unannotated pod has no knit0" bash -c "! '$KUBECTL' exec plain -- ip link show knit0 >/dev/null 2>&1"
talk() { K exec b -- timeout 3 bash -c "exec 3<>/dev/tcp/$A/7070; head -1 <&3" 2>/dev/null | grep -q "hello from a"; }
e2e_check "pod b (node 2) reaches pod a (node 1) at its tailnet address" e2e_wait_for 30 talk
e2e_check "two pod Devices exist" test "$(K get devices -o jsonpath='{range .items[*]}{.spec.ownerPod.name}{"\n"}{end}' | grep -c .)" -eq 2
q K delete pod b --wait=true
no_b() { ! K get devices -o jsonpath='{range .items[*]}{.spec.ownerPod.name}{"\n"}{end}' | grep -qx b; }
e2e_check "pod b deleted: its Device is gone" e2e_wait_for 10 no_b
dump
e2e_end
