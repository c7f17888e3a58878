#!/usr/bin/env bash
# knit-cni under the real kubelet and containerd of test/e2e/cluster, in
# identity+gateway mode: the knitd DaemonSet's init container chains
# knit-cni into each node's bridge conflist; two pods annotated
# knit.dev/identity on two different nodes get knit0 with their own tailnet
# addresses and reach each other over them (a TCP exchange: the image has
# no ping); an unannotated pod gets no knit0. A "laptop" knitd outside the
# cluster (a namespace on the cluster's underlay, reaching only the
# operator's pod and the nodes' UDP port) reaches an annotated pod by
# address and by name, lists the pods with their tags and user, is refused
# by a pod the Policy does not open to it, and reaches an unannotated pod
# through its node's subnet route (approved by the Policy's autoApprovers).
# A CI Job's pod asking for tag:ci reaches only what the Policy allows and
# its Device goes within 1 s of the pod finishing; with knit-cni's DEL made
# to fail, a pod's Device goes within 1 s of the Pod object's deletion; a
# replaced knitd pod brings its pods back, same addresses, within 2 s.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin k8s_cni
CLUSTER=$KNIT_SOURCE_DIR/test/e2e/cluster
IMAGE=$KNIT_SOURCE_DIR/scripts/image
MAN=$KNIT_SOURCE_DIR/manifests
NAME=e2c$(($$ % 100000))
NODES=2
e2e_need_bin containerd runc ctr buildah etcd nsenter jq "$CLUSTER" "$IMAGE" "$KNITD" "$KNIT"

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
# The nodes' AuthKey made before the operator (which then leaves it be and
# mints it), owned by a user the Policy's autoApprovers can name for the
# nodes' pod ranges. (The operator's own bootstrap key has no owner: tag it
# with --bootstrap-authkey-tags to approve routes by tag.)
NODE_USER=nodes@example.com
q K apply -f "$MAN/00-namespace.yaml"
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"nodes","namespace":"knit-system"},"spec":{"user":"%s","reusable":true,"preauthorized":true}}' \
	"$NODE_USER" | q K apply -f - || e2e_die "the nodes' AuthKey"
e2e_check "operator applied" q K apply -f "$MAN/10-operator.yaml"
# The opt-in pod labels: the Devices of gone pods go at once, not at the
# once-a-second sweep (the 1 s checks below hold either way, this way with
# room to spare on a loaded machine).
e2e_check "the opt-in pod-label RBAC applied" q K apply -f "$MAN/examples/operator-pod-labels.yaml"
e2e_check "the operator minted the AuthKey nodes" e2e_wait_for 180 KS get secret nodes-authkey
NET=$KNIT_CLUSTER_NET
PODS=10.$NET.64.0/18
# The Policy before the nodes register: autoApprovers approve their pod
# ranges when they advertise them. a and b (ServiceAccount default) talk
# to each other; the laptop (alice) reaches them and every pod through the
# nodes' routes, and db (tag:db) only on a port nobody serves; CI runners
# (tag:ci) reach a's port 7070 and nothing else.
q K create namespace ci
q K -n ci create serviceaccount runner
SA=system:serviceaccount:default:default
cat <<YAML | K apply -f - >/dev/null || e2e_die "policy"
apiVersion: knit.dev/v1alpha1
kind: Policy
metadata: {name: cni}
spec:
  tailnet: default
  policy: |
    {"tagOwners": {"tag:ci": ["system:serviceaccount:ci:runner"], "tag:db": ["$SA"]},
     "acls": [
       {"action": "accept", "src": ["$NODE_USER"], "dst": ["*:*"]},
       {"action": "accept", "src": ["$SA"], "dst": ["$SA:*"]},
       {"action": "accept", "src": ["alice@example.com"], "dst": ["$SA:*", "tag:db:9999", "$PODS:*"]},
       {"action": "accept", "src": ["tag:ci"], "dst": ["$SA:7070"]}],
     "autoApprovers": {"routes": {"$PODS": ["$NODE_USER"]}},
     "tests": [{"src": "alice@example.com", "accept": ["$SA:7070", "tag:db:9999"], "deny": ["tag:db:7070"]},
               {"src": "tag:ci", "accept": ["$SA:7070"], "deny": ["tag:db:7070"]}]}
YAML
in_force() { [ "$(K get policy cni -o jsonpath='{.status.appliedGeneration}')" = "$(K get policy cni -o jsonpath='{.metadata.generation}')" ]; }
e2e_check "the Policy is in force" e2e_wait_for 60 in_force
# knit-cni in identity+gateway mode (the init container's --mode).
sed 's|--bin-dir=/host/opt/cni/bin\]|--bin-dir=/host/opt/cni/bin, --mode=identity+gateway]|' "$MAN/20-knitd.yaml" >"$E2E_DIR/knitd.yaml"
e2e_check "knitd applied with --mode=identity+gateway" q K apply -f "$E2E_DIR/knitd.yaml"
e2e_check "knitd runs on every node (its init container installed knit-cni)" q KS rollout status daemonset/knitd --timeout=300s
devices_online() {
	[ "$(K get devices -o jsonpath='{range .items[*]}{.status.online}{"\n"}{end}' | grep -c true)" -ge "$NODES" ]
}
e2e_check "$NODES node Devices online" e2e_wait_for 180 devices_online
# Bound by the kubelet's projected token of each knitd pod (TokenReview),
# not by the name knitd chose: spec.node is that pod's spec.nodeName.
bound() { K get devices -o json | jq '[.items[] | select(.spec.ownerPod == null and .spec.node != null and .spec.node == .spec.hostname)] | length'; }
e2e_expect "each node Device is bound to its Node by its knitd pod's token" "$NODES" "$(bound)"

pod() { # NAME NODE-INDEX ANNOTATED COMMAND [TAGS]
	cat <<YAML | K apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
  annotations: {knit.dev/identity: "$3"${5:+, knit.dev/tags: "$5"}}
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
pod db 2 true "${SERVE//hello from a/hello from db}" tag:db || e2e_die "pod db"
e2e_check "the four pods run" q K wait --for=condition=Ready pod/a pod/b pod/plain pod/db --timeout=180s
addr() { K exec "$1" -- ip -4 -o addr show dev knit0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }
A=$(addr a)
B=$(addr b)
e2e_check "pod a has knit0 with a tailnet address ($A)" grep -q '^100\.' <<<"$A"
e2e_check "pod b has knit0 with a tailnet address ($B)" grep -q '^100\.' <<<"$B"
e2e_check "the unannotated pod has no knit0" bash -c "! '$KUBECTL' exec plain -- ip link show knit0 >/dev/null 2>&1"
talk() { K exec b -- timeout 3 bash -c "exec 3<>/dev/tcp/$A/7070; head -1 <&3" 2>/dev/null | grep -q "hello from a"; }
e2e_check "pod b (node 2) reaches pod a (node 1) at its tailnet address" e2e_wait_for 30 talk
e2e_check "three pod Devices exist" test "$(K get devices -o jsonpath='{range .items[*]}{.spec.ownerPod.name}{"\n"}{end}' | grep -c .)" -eq 3
DB=$(addr db)

# --- the laptop: a knitd outside the cluster ---------------------------------
# Its own namespace on the cluster's underlay (10.NET.0.250), with a route
# to the operator's leader pod only: no way to the pods but knit.
LAP=$(ns_name laptop)
ip netns add "$LAP" || e2e_die "laptop namespace"
e2e_defer "ip netns del $LAP"
ip -n "$LAP" link set lo up
ip link add "kl$E2E_TAG" netns "$LAP" type veth peer name "lp$E2E_TAG" netns "kc-$NAME-hub" || e2e_die "laptop veth"
ip -n "kc-$NAME-hub" link set "lp$E2E_TAG" master br0 up
ip -n "$LAP" addr add "10.$NET.0.250/24" dev "kl$E2E_TAG"
ip -n "$LAP" link set "kl$E2E_TAG" up
# Both replicas are Ready; the leader alone serves coordination, as the
# coordination Service's EndpointSlice says.
op_leader() {
	local ip
	ip=$(KS get endpointslice knit-coordination-leader -o jsonpath='{.endpoints[0].addresses[0]}' 2>/dev/null)
	[ -n "$ip" ] && KS get pods -l app.kubernetes.io/name=knit-operator -o json |
		jq -r --arg ip "$ip" '.items[] | select(.status.podIP == $ip) | "\(.status.podIP) \(.status.hostIP)"' | head -1
}
leader_known() { [ -n "$(op_leader)" ]; }
e2e_wait_for 60 leader_known
read -r OP_IP OP_NODE <<<"$(op_leader)"
e2e_check "the operator's leader pod ($OP_IP on $OP_NODE)" test -n "$OP_IP"
ip -n "$LAP" route add "$OP_IP/32" via "$OP_NODE"
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"laptop","namespace":"knit-system"},"spec":{"user":"alice@example.com"}}' | q K apply -f -
e2e_wait_for 30 KS get secret laptop-authkey || e2e_die "no laptop key"
LAPTOP_KEY=$(KS get secret laptop-authkey -o jsonpath='{.data.authkey}' | base64 -d)
CTRL=$(K get tailnet default -o jsonpath='{.status.controlKey}')
tailnet_knitd_start laptop --accept-routes
e2e_check "the laptop joins through the operator's pod" q tailnet_knit laptop up --authkey "$LAPTOP_KEY" \
	--login-server "http://$OP_IP:9443" --server-key "$CTRL" --hostname laptop
peer() { tailnet_knit laptop status --json | jq -c --arg ip "$1" '.peers[] | select(.addresses | index($ip)) | {name, user, tags}'; }
sees() { [ -n "$(peer "$1")" ]; }
e2e_check "knit status on the laptop lists pod a" e2e_wait_for 20 sees "$A"
e2e_expect "pod a: its name and its ServiceAccount as user" "{\"name\":\"a\",\"user\":\"$SA\",\"tags\":[]}" "$(peer "$A")"
e2e_expect "pod db: its tag and no user" '{"name":"db","user":null,"tags":["tag:db"]}' "$(peer "$DB")"
tailnet_knit laptop status >"$E2E_DIR/laptop-status.txt" 2>&1
lap_talk() { # IP: the TCP echo at IP:7070 from the laptop
	in_ns laptop timeout 2 bash -c "exec 3<>/dev/tcp/$1/7070; head -1 <&3" 2>/dev/null
}
reach_a() { lap_talk "$A" | grep -q "hello from a"; }
e2e_check "the laptop reaches pod a at its tailnet address" e2e_wait_for 20 reach_a
e2e_check "the laptop pings pod a by name" q tailnet_knit laptop ping -c 5 a
db_serves() { "$CLUSTER" node --name "$NAME" 1 timeout 2 bash -c "exec 3<>/dev/tcp/$DB/7070; head -1 <&3" 2>/dev/null | grep -q "hello from db"; }
e2e_check "pod db serves port 7070 (node 1 reaches it over the tailnet)" e2e_wait_for 20 db_serves
db_refused() { ! lap_talk "$DB" | grep -q db; }
e2e_check "the Policy refuses the laptop pod db's port 7070" db_refused

# --- gateway mode: an unannotated pod through its node's route ---------------
PLAIN=$(K get pod plain -o jsonpath='{.status.podIP}')
N1NET=10.$NET.65.0/24
approved() { K get devices -o json | jq -e --arg r "$N1NET" '.items[] | select(.spec.hostname == "'"$NAME-n1"'") | .spec.approvedRoutes // [] | index($r)' >/dev/null; }
e2e_check "node 1 advertises its pod range $N1NET, approved by autoApprovers" e2e_wait_for 20 approved
lap_route() { in_ns laptop ip route show table 52 | grep -q "^$N1NET dev knit0"; }
e2e_check "the laptop routes $N1NET through knit0" e2e_wait_for 20 lap_route
plain_pings() { in_ns laptop ping -c1 -W1 "$PLAIN" >/dev/null 2>&1; }
e2e_check "the laptop pings the unannotated pod ($PLAIN) through node 1" e2e_wait_for 20 plain_pings

# --- a CI runner: a Job's pod with tag:ci ------------------------------------
# Finished: its Device goes (the kubelet's DEL, or the operator's backstop).
# Times come from watches (each event stamped in ms as it arrives), not
# from polling with kubectl, whose own start-up would dominate.
now_ms() { date +%s%3N; }
export KUBECTL KUBECONFIG
watch_to() { # FILE RESOURCE-ARGS JQ-FILTER: a stamped watch in its own process group
	setsid bash -c '"$KUBECTL" get $1 --watch-only --output-watch-events -o json 2>/dev/null |
		jq -r --unbuffered "$2" | while IFS= read -r l; do echo "$(date +%s%3N) $l"; done' _ "$2" "$3" >"$1" &
	e2e_defer "kill -- -$! 2>/dev/null"
}
watch_to "$E2E_DIR/pods.watch" "pods -A" '"\(.type) \(.object.metadata.namespace)/\(.object.metadata.name) \(.object.status.phase)"'
watch_to "$E2E_DIR/devices.watch" devices '"\(.type) \(.object.spec.ownerPod.namespace // "-")/\(.object.spec.ownerPod.name // "-")"'
first() { awk "$1 {print \$1; exit}" "$E2E_DIR/$2.watch"; } # AWK-CONDITION WATCH: first stamp
cat <<YAML | q K apply -f - || e2e_die "job"
apiVersion: batch/v1
kind: Job
metadata: {name: runner, namespace: ci}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {knit.dev/identity: "true", knit.dev/tags: "tag:ci"}
    spec:
      nodeName: $NAME-n2
      serviceAccountName: runner
      automountServiceAccountToken: false
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: knit.local/knit:dev
        imagePullPolicy: Never
        command: [bash, -c]
        args:
        - |
          for i in \$(seq 30); do
            out=\$(timeout 1 bash -c "exec 3<>/dev/tcp/$A/7070; head -1 <&3" 2>/dev/null) && break
          done
          echo "a: \${out:-unreachable}"
          timeout 3 bash -c "exec 3<>/dev/tcp/$DB/7070; head -1 <&3" >/dev/null 2>&1 && echo "db: reached" || echo "db: refused"
          sleep 2
YAML
ci_dev() { K get devices -o json | jq -r '.items[] | select(.spec.ownerPod.namespace == "ci") | "\(.metadata.name) \(.spec.tags) \(.spec.ephemeral)"'; }
has_ci_dev() { [ -n "$(ci_dev)" ]; }
e2e_check "the runner pod has a Device" e2e_wait_for 90 has_ci_dev
e2e_expect "an ephemeral Device with tag:ci" '["tag:ci"] true' "$(ci_dev | cut -d' ' -f2-)"
ci_gone() { [ -n "$(first '$2 == "DELETED" && index($3, "ci/") == 1' devices)" ]; }
e2e_wait_for 90 ci_gone
t_done=$(first 'index($3, "ci/") == 1 && $4 == "Succeeded"' pods)
t_gone=$(first '$2 == "DELETED" && index($3, "ci/") == 1' devices)
RUN_LOG=$(K -n ci logs job/runner 2>/dev/null)
e2e_log "runner said: $(tr '\n' ';' <<<"$RUN_LOG")"
e2e_check "the runner reached pod a (allowed)" grep -q "^a: hello from a" <<<"$RUN_LOG"
e2e_check "the runner was refused by db (not allowed)" grep -q "^db: refused" <<<"$RUN_LOG"
if [ -n "$t_gone" ] && [ -n "$t_done" ]; then
	ms=$((t_gone - t_done))
	e2e_log "runner's Device deleted $ms ms after its pod's phase became Succeeded (watch events)"
	e2e_check "the finished runner's Device went within 1 s ($ms ms)" test "$ms" -le 1000
elif [ -n "$t_gone" ]; then
	e2e_pass "the runner's Device went before its pod was reported Succeeded"
else
	e2e_fail "the finished runner's Device is still there"
fi

# --- DEL made to fail: the operator's backstop --------------------------------
# knit-cni on node 2 wrapped so that DEL fails; the Pod object deleted, the
# kubelet cannot tear the sandbox down, the operator removes the Device.
# Node 2's /opt/cni/bin is $KNIT_CLUSTER_DIR/node2/fs/opt/cni/bin (cluster).
BIN2=$KNIT_CLUSTER_DIR/node2/fs/opt/cni/bin
pod stuck 2 true "sleep infinity" || e2e_die "pod stuck"
e2e_check "pod stuck runs" q K wait --for=condition=Ready pod/stuck --timeout=90s
cp "$BIN2/knit-cni" "$BIN2/knit-cni.real" || e2e_die "no knit-cni on node 2"
cat >"$BIN2/knit-cni.w" <<'SH'
#!/bin/sh
if [ "$CNI_COMMAND" = DEL ]; then
	echo '{"cniVersion":"1.0.0","code":11,"msg":"DEL made to fail"}'
	exit 1
fi
exec /opt/cni/bin/knit-cni.real
SH
chmod +x "$BIN2/knit-cni.w" && mv "$BIN2/knit-cni.w" "$BIN2/knit-cni"
e2e_defer "mv -f '$BIN2/knit-cni.real' '$BIN2/knit-cni' 2>/dev/null"
stuck_dev() { K get devices -o jsonpath='{range .items[*]}{.spec.ownerPod.name}{"\n"}{end}' | grep -qx stuck; }
e2e_check "pod stuck has a Device" stuck_dev
q K delete pod stuck --grace-period=0 --force --wait=false
stuck_gone() { [ -n "$(first '$2 == "DELETED" && $3 == "default/stuck"' devices)" ]; }
e2e_wait_for 10 stuck_gone
t0=$(first '$2 == "DELETED" && $3 == "default/stuck"' pods)
t_gone=$(first '$2 == "DELETED" && $3 == "default/stuck"' devices)
if [ -n "$t_gone" ] && [ -n "$t0" ]; then
	ms=$((t_gone - t0))
	e2e_log "stuck's Device deleted $ms ms after its Pod object (watch events; DEL failing)"
	e2e_check "its Device went within 1 s of the Pod object ($ms ms)" test "$ms" -le 1000
else
	e2e_fail "pod stuck's Device outlived its Pod object by 10 s"
fi
failing_del() { grep -qs "DEL made to fail" "$KNIT_CLUSTER_DIR"/logs/*.log; }
e2e_check "the runtime's DEL of pod stuck did fail (its log says so)" e2e_wait_for 20 failing_del
e2e_check "knit-cni restored on node 2" mv "$BIN2/knit-cni.real" "$BIN2/knit-cni"

# --- a replaced knitd pod ------------------------------------------------------
knitd_pod() { KS get pods -l app.kubernetes.io/name=knitd --field-selector "spec.nodeName=$NAME-n$1" -o jsonpath='{.items[0].metadata.name}'; }
old=$(knitd_pod 1)
# The laptop pings pod a all along, each answer stamped (ping -D).
setsid ip netns exec "$LAP" ping -D -i 0.05 -W 1 "$A" >"$E2E_DIR/restart.ping" 2>&1 &
e2e_defer "kill -- -$! 2>/dev/null"
q KS delete pod "$old" --wait=true || e2e_fail "cannot delete $old"
replaced() { local p; p=$(knitd_pod 1) && [ -n "$p" ] && [ "$p" != "$old" ]; }
e2e_check "the DaemonSet replaced node 1's knitd pod" e2e_wait_for 60 replaced
started() { KS get pod "$(knitd_pod 1)" -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}' | grep -q .; }
e2e_check "its knitd container started" e2e_wait_for 60 started
# The new knitd's start: its first log line's timestamp (ms).
knitd_t0() { KS logs "$(knitd_pod 1)" -c knitd 2>/dev/null | sed -n '1s/^ts=\([^ ]*\) .*/\1/p'; }
has_t0() { [ -n "$(knitd_t0)" ]; }
e2e_wait_for 30 has_t0
t_start=$(date -d "$(knitd_t0)" +%s%3N)
answered_after() { awk -v t="$t_start" -F'[][]' '/bytes from/ { ms = int($2 * 1000); if (ms >= t) { printf "%.0f\n", ms; exit } }' "$E2E_DIR/restart.ping"; }
back() { [ -n "$(answered_after)" ]; }
e2e_wait_for 30 back
t_back=$(answered_after)
ms=$(( ${t_back:-999999999999999} - t_start ))
e2e_log "pod a answered the laptop $ms ms after the new knitd started (its first log line; ping -D stamps)"
e2e_check "pod a reachable again within 2 s of the new knitd ($ms ms)" test "$ms" -le 2000
e2e_expect "pod a kept its address" "$A" "$(addr a)"
e2e_check "pod b reaches pod a again" e2e_wait_for 10 talk

q K delete pod b --wait=true
no_b() { ! K get devices -o jsonpath='{range .items[*]}{.spec.ownerPod.name}{"\n"}{end}' | grep -qx b; }
e2e_check "pod b deleted: its Device is gone" e2e_wait_for 10 no_b
dump
e2e_end
