#!/usr/bin/env bash
# Node keys do not ship a dated outage (issue 15.7), and a broken state
# file is not the end of a node (15.10), with real knitd on a real
# kube-apiserver. The Tailnet's keyExpiry is 45 s: untagged nodes renew
# their key by themselves (a third of the lifetime before expiry, proving
# the old key; no auth key) again and again, keep their Device, address
# and peers, and carry traffic past every old expiry; a device registered
# with tags gets no expiry; knit status, knitd's /metrics and a Warning
# Event on the Device say the key is within a week of expiry. Then a
# node's state file is truncated: knitd comes back on the previous file,
# says so, and is the same device. Last, the control key's Secret: deleted
# while the operator runs, it is written again with the same key; deleted
# while the operator is down, the operator does not mint another (agents
# pin it) until the Secret is restored.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin hardening_keys
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$KNIT_BUILD_DIR/test/e2e/tools/coord_client" jq ping curl
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"
LIFE=45
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"Tailnet","metadata":{"name":"default"},"spec":{"keyExpiry":"%ss"}}' \
	"$LIFE" | $K apply -f - >/dev/null || e2e_die "Tailnet"

tailnet_net_up $((20 + ($$ + 31) % 200))
tailnet_operator_start op-1
for ak in people:'' infra:'"tags":["tag:infra"],'; do
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"%s"},"spec":{%s"reusable":true}}' \
		"${ak%%:*}" "$NS" "${ak#*:}" | $K apply -f - >/dev/null || e2e_die "AuthKey ${ak%%:*}"
done
e2e_wait_for 30 $K get secret people-authkey infra-authkey -n "$NS" >/dev/null || e2e_die "no keys"
PEOPLE=$($K get secret people-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)
INFRA=$($K get secret infra-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)
MPORT=9109
for n in node1 node2 node3; do
	tailnet_host_add "$n" "${n#node}"
	tailnet_knitd_start "$n" --http-listen "127.0.0.1:$MPORT"
	key=$PEOPLE
	[ "$n" = node3 ] && key=$INFRA
	tailnet_knit "$n" up --authkey "$key" --login-server "$LOGIN_SERVER" --hostname "$n" >/dev/null 2>&1 ||
		e2e_die "$n cannot join"
done
device_of() { $K get devices -o json | jq -r --arg h "$1" '.items[] | select(.spec.hostname == $h) | .metadata.name'; }
dev1=$(device_of node1)
dev3=$(device_of node3)
ip1=$(tailnet_knit node1 ip -4)
ip2=$(tailnet_knit node2 ip -4)
key0=$($K get device "$dev1" -o jsonpath='{.spec.nodeKey}')
exp0=$($K get device "$dev1" -o jsonpath='{.spec.keyExpiry}')
e2e_log "node1: device $dev1 address $ip1 key ${key0:0:20}... expires $exp0"
e2e_check "an untagged device gets the Tailnet's key expiry" test -n "$exp0"
e2e_expect "a tagged device's key does not expire" "" "$($K get device "$dev3" -o jsonpath='{.spec.keyExpiry}')"
reach() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null; }
e2e_check "node1 reaches node2" e2e_wait_for 20 reach node1 "$ip2"

# ---- warnings a week ahead (45 s is well within a week) ----
metric() { in_ns "$1" curl -s --max-time 3 "http://127.0.0.1:$MPORT/metrics" | awk -v s="$2" '$1 == s { print $2 }'; }
left=$(metric node1 knitd_node_key_expiry_seconds)
e2e_check "knitd_node_key_expiry_seconds counts down from the lifetime ($left)" \
	awk -v v="$left" -v l="$LIFE" 'BEGIN { exit !(v > 0 && v <= l) }'
e2e_expect "a key that does not expire shows +Inf" "+Inf" "$(metric node3 knitd_node_key_expiry_seconds)"
e2e_check "knit status warns of the expiry" sh -c "'$KNIT' --socket '$E2E_DIR/node1/knitd.sock' status | grep -q 'Warning: the node key expires in'"
warned() { $K get events -n default -o json | jq -e --arg d "$dev1" \
	'[.items[] | select(.involvedObject.name == $d and .reason == "KeyExpiringSoon" and .type == "Warning")] | length > 0' >/dev/null; }
e2e_check "the Device gets a KeyExpiringSoon Warning Event" e2e_wait_for 20 warned
soon() { [ "$($K get device "$dev1" -o jsonpath='{.status.conditions[?(@.type=="KeyExpiringSoon")].status}')" = True ]; }
e2e_check "and the KeyExpiringSoon condition" e2e_wait_for 20 soon

# ---- renewal, twice, without re-joining ----
renewed_from() { k=$($K get device "$dev1" -o jsonpath='{.spec.nodeKey}'); [ -n "$k" ] && [ "$k" != "$1" ]; }
e2e_check "node1 renews its key before it expires" e2e_wait_for $LIFE renewed_from "$key0"
key1=$($K get device "$dev1" -o jsonpath='{.spec.nodeKey}')
exp1=$($K get device "$dev1" -o jsonpath='{.spec.keyExpiry}')
e2e_log "renewed: key ${key1:0:20}... expires $exp1"
e2e_check "the new expiry is later" test "$exp1" \> "$exp0"
e2e_expect "the same Device keeps the same address" "$ip1" "$(tailnet_knit node1 ip -4)"
e2e_expect "and no other Device was made" 3 "$($K get devices -o json | jq '.items | length')"
e2e_check "the renewal is counted" awk -v v="$(metric node1 knitd_node_key_renewals_total)" 'BEGIN { exit !(v >= 1) }'
e2e_check "the operator recorded a KeyRenewed Event" sh -c "$K get events -n default -o json | jq -e --arg d '$dev1' \
	'[.items[] | select(.involvedObject.name == \$d and .reason == \"KeyRenewed\")] | length > 0' >/dev/null"
peer_key() { tailnet_knit node2 status --json | jq -r --arg ip "$ip1" '.peers[] | select(.addresses | map(sub("/.*"; "")) | index($ip)) | .nodeKey' 2>/dev/null; }
learned() { [ "$(peer_key)" = "$key1" ]; }
e2e_check "node2 learns node1's new key from its netmap" e2e_wait_for 20 learned
e2e_check "node2 reaches node1 on the new key" e2e_wait_for 20 reach node2 "$ip1"
e2e_check "node1 renews again" e2e_wait_for $LIFE renewed_from "$key1"
past_first() { [ "$(date -u +%FT%TZ)" \> "$exp0" ]; }
e2e_wait_for $((LIFE + 5)) past_first || e2e_die "clock"
e2e_expect "past the first key's expiry the Device is not expired" false \
	"$($K get device "$dev1" -o jsonpath='{.status.keyExpired}')"
e2e_expect "node1 is still Running" Running "$(tailnet_knit node1 status --json | jq -r .backendState)"
e2e_check "and reaches node2" e2e_wait_for 20 reach node1 "$ip2"
e2e_check "and node2 reaches node1" e2e_wait_for 20 reach node2 "$ip1"
e2e_check "the tagged node never renewed" awk -v v="$(metric node3 knitd_node_key_renewals_total)" 'BEGIN { exit !(v == 0) }'

# ---- refused renewals are counted by reason ----
CLIENT=$KNIT_BUILD_DIR/test/e2e/tools/coord_client
CTRL0=$($K get tailnet default -o jsonpath='{.status.controlKey}')
cc() { "$CLIENT" "$LOGIN_SERVER" "$CTRL0" "$E2E_DIR/rn.keys" "$@"; }
reg() { cc register "\"hostname\":\"rn\"${1:+,$1}" | awk '$1 == "CODE" { print $2 }'; }
opmetric() { curl -s --max-time 3 "http://127.0.0.1:$OP_HTTP_PORT/metrics" | awk -v s="$1" '$1 == s { v += $2 } END { print v + 0 }'; }
renew_refused() { opmetric "knit_coord_refusals_total{call=\"renew\",reason=\"$1\"}"; }
e2e_expect "a scripted agent registers" ok "$(reg "\"authKey\":\"$PEOPLE\"")"
H0=$(printf '0%.0s' $(seq 64))
H7=$(printf '7%.0s' $(seq 64))
e2e_expect "a renewal with a forged proof is refused" BadRenewProof \
	"$(reg "\"oldNodeKey\":\"$(cc nodekey)\",\"nodeKey\":\"nodekey:$H7\",\"renewProof\":\"proof:$H0\"")"
e2e_expect "a renewal of a key the device does not hold is refused" NodeKeyMismatch \
	"$(reg "\"oldNodeKey\":\"nodekey:$H7\",\"nodeKey\":\"nodekey:$H7\",\"renewProof\":\"proof:$H0\"")"
e2e_expect "knit_coord_refusals_total counts the forged proof as a renewal" 1 "$(renew_refused BadRenewProof)"
e2e_expect "and the mismatch" 1 "$(renew_refused NodeKeyMismatch)"

# ---- a truncated state file ----
state=$E2E_DIR/node2/state/knitd.state
e2e_check "knitd keeps the previous state file beside the state" test -f "$state.prev"
e2e_kill "$KNITD_PID_node2"
truncate -s $(($(stat -c %s "$state") / 2)) "$state"
tailnet_knitd_start node2 --http-listen "127.0.0.1:$MPORT"
e2e_check "knitd says it came back on the previous state" \
	grep -q "state file unusable: came back on the previous one" "$E2E_DIR/knitd-node2.log"
e2e_check "and keeps the bad file aside" test -f "$state.corrupt"
running2() { [ "$(tailnet_knit node2 status --json | jq -r .backendState)" = Running ]; }
e2e_check "node2 is Running again with no re-join" e2e_wait_for 30 running2
e2e_expect "as the same device with the same address" "$ip2" "$(tailnet_knit node2 ip -4)"
e2e_check "and reaches node1" e2e_wait_for 20 reach node2 "$ip1"

# ---- the control key's Secret is kept, never silently replaced ----
served_key() { in_ns node1 curl -s --max-time 3 "$LOGIN_SERVER/knit/v1/key" | jq -r .controlKey 2>/dev/null; }
CTRL=$(served_key)
priv0=$($K get secret knit-control-key -n "$NS" -o jsonpath='{.data.privateKey}')
$K delete secret knit-control-key -n "$NS" >/dev/null || e2e_die "delete the control key Secret"
restored() { [ "$($K get secret knit-control-key -n "$NS" -o jsonpath='{.data.privateKey}' 2>/dev/null)" = "$priv0" ]; }
e2e_check "a deleted control key Secret is written again with the same key" e2e_wait_for 20 restored
e2e_check "with a ControlKeyRestored Event" sh -c "$K get events -n '$NS' -o json | jq -e \
	'[.items[] | select(.reason == \"ControlKeyRestored\")] | length > 0' >/dev/null"
e2e_kill "$OP_PID"
$K delete secret knit-control-key -n "$NS" >/dev/null || e2e_die "delete the control key Secret"
OP_HTTP_PORT=$(e2e_free_port)
e2e_bg operator-op-2 "$OPERATOR" --namespace "$NS" --identity op-2 --http-listen "127.0.0.1:$OP_HTTP_PORT" \
	--coord-listen "$TAILNET_GW:$COORD_PORT" --lease-duration 4s --renew-deadline 3s --retry-period 1s
OP_PID=$E2E_PID
e2e_check "restarted without the Secret, the operator does not mint another key" \
	e2e_wait_for 30 grep -q "not minting another" "$E2E_DIR/operator-op-2.log"
e2e_expect "and no Secret with another key appears" "" "$($K get secret knit-control-key -n "$NS" --ignore-not-found -o name)"
printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"knit-control-key","namespace":"%s","labels":{"app.kubernetes.io/managed-by":"knit-operator"}},"type":"knit.dev/control-key","data":{"privateKey":"%s"}}' \
	"$NS" "$priv0" | $K apply -f - >/dev/null || e2e_die "restore the Secret"
same_key() { [ "$(served_key)" = "$CTRL" ]; }
e2e_check "once the Secret is restored, the same key is served" e2e_wait_for 30 same_key
e2e_check "and node1, pinned to it, reaches node2 through a new netmap" e2e_wait_for 30 reach node1 "$ip2"

e2e_end
