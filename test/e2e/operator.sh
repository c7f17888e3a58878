#!/usr/bin/env bash
# The operator core against a real kube-apiserver, etcd and garbage
# collector, driven with kubectl: CRD schemas and printer columns, AuthKey
# minting into an owned Secret, address allocation by two racing operators
# with a leader killed mid-way, and informer relists after an apiserver
# restart with etcd compacted.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"

e2e_begin operator
OPERATOR=$KNIT_BUILD_DIR/operator/knit-operator
e2e_need_bin "$OPERATOR" jq
kube_up
kube_start_controller_manager
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"

# ---- CRDs ----
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "kubectl apply of the CRDs failed"
e2e_check "CRDs established" $K wait --for condition=established --timeout=60s \
	crd/tailnets.knit.dev crd/authkeys.knit.dev crd/devices.knit.dev crd/policies.knit.dev crd/addressclaims.knit.dev

refused() { # refused NAME EXPECTED-SUBSTRING YAML
	local out
	if out=$(printf '%s\n' "$3" | $K apply -f - 2>&1); then
		e2e_fail "$1: accepted, expected refusal"
		return
	fi
	if grep -qF -- "$2" <<<"$out"; then e2e_pass "$1"; else e2e_fail "$1: message was: $out"; fi
}
refused "bad CIDR refused" 'spec.ipv4Pool: Invalid value: "100.64.0.0/33"' \
	'{"apiVersion":"knit.dev/v1alpha1","kind":"Tailnet","metadata":{"name":"bad"},"spec":{"ipv4Pool":"100.64.0.0/33"}}'
refused "unknown tag form refused" 'spec.tags: Invalid value: "ci"' \
	'{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"bad","namespace":"default"},"spec":{"tags":["ci"]}}'
refused "negative expiry refused" 'spec.expiry: Invalid value: "-5h"' \
	'{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"bad","namespace":"default"},"spec":{"expiry":"-5h"}}'
refused "bad node key refused" 'spec.nodeKey' \
	'{"apiVersion":"knit.dev/v1alpha1","kind":"Device","metadata":{"name":"bad"},"spec":{"nodeKey":"abc"}}'

e2e_check "kubectl get tailnets,authkeys,devices works" $K get tailnets,authkeys,devices -A
# Printer columns show on empty lists only as "No resources", so check them once objects exist below.

# ---- operators ----
LEASE_ARGS=(--lease-duration 4s --renew-deadline 3s --retry-period 1s)
op_start() { # op_start ID → OP_PID, OP_PORT
	OP_PORT=$(e2e_free_port)
	e2e_bg "operator-$1" "$OPERATOR" --namespace "$NS" --identity "$1" --http-listen "127.0.0.1:$OP_PORT" \
		--coord-listen 127.0.0.1:0 \
		"${LEASE_ARGS[@]}" --workers 4 --log-level info
	OP_PID=$E2E_PID
}
holder() { $K get lease knit-operator -n "$NS" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
holder_is() { [ "$(holder)" = "$1" ]; }

op_start op-a; A_PID=$OP_PID; A_PORT=$OP_PORT
e2e_check "operator A leads" e2e_wait_for 20 holder_is op-a
op_start op-b; B_PID=$OP_PID; B_PORT=$OP_PORT
e2e_check "operator B is healthy as standby" e2e_wait_for 20 curl -sf "http://127.0.0.1:$B_PORT/healthz"
# Ready = healthy, standby included (a PodDisruptionBudget counts it); the
# Services reach the leader through the EndpointSlices it writes itself
# (operator/serving.h), not through readiness.
standby_ready() { curl -sf "http://127.0.0.1:$B_PORT/readyz" | grep -q '^ok: standby (leader: op-a)$'; }
e2e_check "a standby is Ready and says whom it stands by for" e2e_wait_for 20 standby_ready
e2e_check "operator A is ready (caches synced)" e2e_wait_for 30 curl -sf "http://127.0.0.1:$A_PORT/readyz"
e2e_check "the default Tailnet was created" e2e_wait_for 20 $K get tailnet default
has_ctrl_key() { $K get tailnet default -o jsonpath='{.status.controlKey}' | grep -qE '^ctrlkey:[0-9a-f]{64}$'; }
e2e_check "the Tailnet publishes the control key" e2e_wait_for 20 has_ctrl_key
e2e_check "the control key lives in a Secret" $K get secret knit-control-key -n "$NS"
tn_ready() { [ "$($K get tailnet default -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
e2e_check "default Tailnet is Ready" e2e_wait_for 20 tn_ready

# ---- AuthKey → Secret ----
$K apply -f - >/dev/null <<EOY || e2e_fail "apply AuthKey"
apiVersion: knit.dev/v1alpha1
kind: AuthKey
metadata: {name: ci, namespace: $NS}
spec: {reusable: true, ephemeral: true, tags: ["tag:ci"], expiry: 1h}
EOY
ak_ready() { [ "$($K get authkey ci -n $NS -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
e2e_check "AuthKey becomes Ready" e2e_wait_for 30 ak_ready
KEY=$($K get secret ci-authkey -n $NS -o jsonpath='{.data.authkey}' | base64 -d)
e2e_check "the Secret holds a knit auth key" grep -qE '^knit-auth-[0-9a-f]{12}-[0-9a-f]{48}$' <<<"$KEY"
e2e_expect "status.keyHash is the key's SHA-256" "$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)" \
	"$($K get authkey ci -n $NS -o jsonpath='{.status.keyHash}')"
e2e_expect "status.keyPrefix is the key's public part" "${KEY%-*}" \
	"$($K get authkey ci -n $NS -o jsonpath='{.status.keyPrefix}')"
e2e_expect "the Secret is owned by the AuthKey" "$($K get authkey ci -n $NS -o jsonpath='{.metadata.uid}')" \
	"$($K get secret ci-authkey -n $NS -o jsonpath='{.metadata.ownerReferences[0].uid}')"
cols=$($K get authkeys -n $NS | head -1)
e2e_check "AuthKey printer columns" grep -qE 'NAME +TAILNET +REUSABLE +EPHEMERAL +USES +EXPIRES +READY +AGE' <<<"$cols"
e2e_check "a KeyMinted event was recorded" e2e_wait_for 10 sh -c "$K get events -n $NS -o json | grep -q KeyMinted"

# ---- 500 devices, two operators, leader killed mid-way ----
N=${KNIT_E2E_DEVICES:-500}
gen_devices() { # gen_devices FROM TO
	local i
	for ((i = $1; i < $2; i++)); do
		printf '{"apiVersion":"knit.dev/v1alpha1","kind":"Device","metadata":{"name":"dev-%04d"},"spec":{"nodeKey":"nodekey:%064x","hostname":"host-%04d"}}\n' "$i" "$i" "$i"
	done
}
t0=$(date +%s)
# Four kubectl streams at once, a quarter of the devices each.
for q in 0 1 2 3; do
	gen_devices $((q * N / 4)) $(((q + 1) * N / 4)) | $K create -f - >"$E2E_DIR/create-$q.log" 2>&1 &
	e2e_defer "kill $! 2>/dev/null"
done
allocated() { $K get devices -o json | jq '[.items[] | select((.status.addresses // []) | length == 2)] | length'; }
half_done() { [ "$(allocated)" -ge $((N / 4)) ]; }
e2e_check "allocation is under way" e2e_wait_for 120 half_done
kill -KILL "$A_PID"
killed_at=$(date +%s)
e2e_log "killed leader op-a with $(allocated) of $N devices allocated"
e2e_check "operator B takes over within lease duration + retry" e2e_wait_for 8 holder_is op-b
e2e_log "handover took $(($(date +%s) - killed_at))s"
wait_all_created() { [ "$($K get devices -o name | wc -l)" -eq "$N" ]; }
e2e_check "all $N devices created" e2e_wait_for 180 wait_all_created
all_done() { [ "$(allocated)" -eq "$N" ]; }
e2e_check "every device gets addresses" e2e_wait_for 240 all_done
e2e_log "$N devices allocated in $(($(date +%s) - t0))s across a leader kill"
$K get devices -o json >"$E2E_DIR/devices.json"
e2e_expect "IPv4 addresses are distinct" "$N" "$(jq -r '.items[].status.addresses[0]' "$E2E_DIR/devices.json" | sort -u | wc -l)"
e2e_expect "IPv6 addresses are distinct" "$N" "$(jq -r '.items[].status.addresses[1]' "$E2E_DIR/devices.json" | sort -u | wc -l)"
e2e_expect "every IPv4 address is in 100.64.0.0/10" 0 \
	"$(jq -r '.items[].status.addresses[0]' "$E2E_DIR/devices.json" | grep -cvE '^100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.')"
claims_match() {
	$K get addressclaims -o json | jq -r '.items[].spec.address' | sort >"$E2E_DIR/claimed"
	jq -r '.items[].status.addresses[]' "$E2E_DIR/devices.json" | sort >"$E2E_DIR/used"
	cmp -s "$E2E_DIR/claimed" "$E2E_DIR/used"
}
e2e_check "claims equal the addresses in use (none leaked or lost)" e2e_wait_for 30 claims_match
cols=$($K get devices | head -1)
e2e_check "Device printer columns" grep -qE 'NAME +HOSTNAME +IPV4 +USER +TAGS +ONLINE +EPHEMERAL +AGE' <<<"$cols"

# Deleting a device frees its addresses (garbage collector on the claims).
$K delete device dev-0000 >/dev/null
gone_claims() { [ "$($K get addressclaims -o json | jq "[.items[] | select(.spec.device == \"dev-0000\")] | length")" -eq 0 ]; }
e2e_check "deleting a Device frees its address claims" e2e_wait_for 60 gone_claims
# The Tailnet's status counts what the API server holds (by index, after
# a second's gathering of events).
counts_match() {
	local want got
	want="$($K get devices -o name | wc -l) $($K get addressclaims -o json |
		jq -r '[.items[].spec.address | select(contains(":") | not)] | length') $($K get addressclaims -o json |
		jq -r '[.items[].spec.address | select(contains(":"))] | length')"
	got=$($K get tailnet default -o jsonpath='{.status.devices} {.status.ipv4Allocated} {.status.ipv6Allocated}')
	[ "$want" = "$got" ] || { echo "want $want got $got" >"$E2E_DIR/counts"; return 1; }
}
e2e_check "Tailnet status counts devices and IPv4/IPv6 claims" e2e_wait_for 30 counts_match ||
	e2e_log "$(cat "$E2E_DIR/counts" 2>/dev/null)"

# ---- the key appears nowhere but its Secret ----
dump() {
	for r in $($K api-resources --verbs=list -o name 2>/dev/null | grep -v '^secrets$'); do
		$K get "$r" -A -o json 2>/dev/null
	done
	cat "$E2E_DIR"/operator-*.log
}
if dump | grep -qF -- "${KEY##*-}"; then
	e2e_fail "the auth key's secret part appears outside its Secret"
else
	e2e_pass "the auth key appears in no other object, event or log"
fi
$K delete authkey ci -n $NS >/dev/null
secret_gone() { ! $K get secret ci-authkey -n $NS >/dev/null 2>&1; }
e2e_check "deleting the AuthKey deletes its Secret" e2e_wait_for 60 secret_gone

# ---- clean shutdown releases the Lease ----
op_start op-c; C_PID=$OP_PID
e2e_check "op-c is healthy as standby" e2e_wait_for 20 curl -sf "http://127.0.0.1:$OP_PORT/healthz"
holder_is op-b || e2e_fail "op-b should lead after op-a was killed"
kill -TERM "$B_PID"
released_to_c() { holder_is op-c; }
t1=$(date +%s%N)
e2e_check "SIGTERM releases the Lease; op-c leads at once" e2e_wait_for 4 released_to_c
e2e_log "release handover took $((($(date +%s%N) - t1) / 1000000)) ms"
b_exited() { ! kill -0 "$B_PID" 2>/dev/null; }
e2e_check "op-b exited" e2e_wait_for 10 b_exited
c_metrics() { curl -sf "http://127.0.0.1:$OP_PORT/metrics"; }
e2e_check "metrics: reconciles counted" e2e_wait_for 10 sh -c "curl -sf http://127.0.0.1:$OP_PORT/metrics | grep -q '^knit_reconciles_total{kind=\"Device\",result=\"success\"} [1-9]'"
c_metrics >"$E2E_DIR/metrics.txt"
for m in knit_workqueue_depth knit_kube_request_duration_seconds_bucket knit_informer_watch_restarts_total knit_leader; do
	e2e_check "metrics: $m exposed" grep -q "^$m" "$E2E_DIR/metrics.txt"
done
kill -TERM "$C_PID"
c_exited() { ! kill -0 "$C_PID" 2>/dev/null; }
e2e_check "op-c exited on SIGTERM" e2e_wait_for 10 c_exited

# ---- apiserver restart + etcd compaction: informers relist and converge ----
# A leader that loses the apiserver for longer than its renew deadline
# rightly steps down, so this part runs one operator without leader
# election: its informers live through the outage. While its apiserver is
# down, changes go through a second apiserver on the same etcd, and etcd is
# compacted past them: the operator's watches come back to 410 Gone.
OP_PORT=$(e2e_free_port)
e2e_bg operator-solo "$OPERATOR" --namespace "$NS" --no-leader-election --http-listen "127.0.0.1:$OP_PORT" \
	--coord-listen 127.0.0.1:0 --workers 4
SOLO_PID=$E2E_PID
e2e_check "solo operator ready" e2e_wait_for 30 curl -sf "http://127.0.0.1:$OP_PORT/readyz"
kube_stop_apiserver
SAVED_PORT=$KUBE_PORT SAVED_SERVER=$KUBE_SERVER
KUBE_PORT=$(e2e_free_port) KUBE_SERVER=https://127.0.0.1:$KUBE_PORT
kube_start_apiserver
OTHER_PID=$KUBE_APISERVER_PID
gen_devices "$N" $((N + 20)) | $K --server "$KUBE_SERVER" create -f - >/dev/null || e2e_fail "create devices during the outage"
$K --server "$KUBE_SERVER" delete device dev-0001 dev-0002 >/dev/null || e2e_fail "delete devices during the outage"
rev=$(curl -s -X POST "$ETCD_ENDPOINT/v3/kv/range" -d '{"key":"AA=="}' | jq -r .header.revision)
curl -sf -X POST "$ETCD_ENDPOINT/v3/kv/compaction" -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null ||
	e2e_fail "etcd compaction"
e2e_log "changes made through a second apiserver, etcd compacted at revision $rev"
e2e_kill "$OTHER_PID"
KUBE_PORT=$SAVED_PORT KUBE_SERVER=$SAVED_SERVER
kube_start_apiserver
relisted() { grep -qE 'watch (error event|refused|ended).*(code=410|status=410|relist=yes)' "$E2E_DIR/operator-solo.log"; }
e2e_check "informers saw 410 Gone and relisted" e2e_wait_for 60 relisted
late_done() { [ "$($K get devices -o json | jq "[.items[] | select(.metadata.name >= \"dev-$(printf %04d "$N")\") | select((.status.addresses // []) | length == 2)] | length")" -eq 20 ]; }
e2e_check "devices created during the outage get addresses" e2e_wait_for 120 late_done
freed() { [ "$($K get addressclaims -o json | jq '[.items[] | select(.spec.device == "dev-0001" or .spec.device == "dev-0002")] | length')" -eq 0 ]; }
e2e_check "devices deleted during the outage have their claims freed" e2e_wait_for 60 freed
relists=$(curl -sf "http://127.0.0.1:$OP_PORT/metrics" | awk '/^knit_informer_relists_total{resource="devices"}/ {print $2}')
e2e_check "the devices informer relisted (metric: $relists)" test "${relists:-0}" -ge 2
e2e_end
