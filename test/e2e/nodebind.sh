#!/usr/bin/env bash
# A node Device bound to its Kubernetes Node (docs/cni.md), on a real
# kube-apiserver 1.20 with knit-operator and a scripted agent of the control
# protocol (tools/coord_client.c): knitd pod tokens are minted with the
# TokenRequest API for Pod objects of a DaemonSet, bound to nodes by
# spec.nodeName (no kubelet: nothing runs). Asserts that
#   - a node registering with its knitd pod's token is bound to that pod's
#     node (Device spec.node) and may vouch for pods there, and is refused
#     for a pod on another node, saying which;
#   - a node registering without a token, under any hostname, vouches for
#     no pod, and a re-registration without the token unbinds;
#   - tokens for another audience, of another ServiceAccount, or not
#     tokens at all are refused, with the reason counted in
#     knit_coord_refusals_total{call="nodebind"}.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin nodebind
CLIENT=$KNIT_BUILD_DIR/test/e2e/tools/coord_client
e2e_need_bin "$OPERATOR" "$CLIENT" jq curl
tailnet_kube_up
NS=knit-system
$K create namespace app >/dev/null || e2e_die "create namespace app"
$K -n app create serviceaccount web >/dev/null || e2e_die "create serviceaccount"

TAILNET_GW=127.0.0.1 # no agent namespaces: the scripted agent runs here
tailnet_operator_start op-1
NODE_KEY=$(tailnet_authkey nodes '{"reusable":true}')
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
cc() { local m=$1; shift; "$CLIENT" "$LOGIN_SERVER" "$CTRL" "$E2E_DIR/$m.keys" "$@"; }
code_of() { awk '$1 == "CODE" { print $2 }'; }
reg() { cc "$1" register "\"authKey\":\"$NODE_KEY\",\"hostname\":\"$2\"${3:+,\"podToken\":\"$3\"}"; } # MACHINE HOST [TOKEN]
metric() {
	curl -s --max-time 3 "http://127.0.0.1:$OP_HTTP_PORT/metrics" |
		awk -v s="$1" '$1 == s { v += $2 } END { print v + 0 }'
}
refusals() { metric "knit_coord_refusals_total{call=\"nodebind\",reason=\"$1\"}"; }
ndev() { $K get devices -o name | wc -l; }
tailnet_pod_object web-a node-a || e2e_die "pod web-a"
tailnet_pod_object web-b node-b || e2e_die "pod web-b"
UID_A=$($K -n app get pod web-a -o jsonpath='{.metadata.uid}')
UID_B=$($K -n app get pod web-b -o jsonpath='{.metadata.uid}')

TOKEN_A=$(tailnet_knitd_token node-a) || e2e_die "no token for node-a"
e2e_log "knitd pod token for node-a: ${#TOKEN_A} bytes"

# ---- bound by its pod's token ----
out=$(reg a node-a "$TOKEN_A")
e2e_expect "node-a registers with its knitd pod's token" ok "$(code_of <<<"$out")" || e2e_log "$out"
DEV_A=$(awk '$1 == "ANSWER"' <<<"$out" | cut -d' ' -f2- | jq -r .device)
e2e_expect "its Device is bound to node node-a" node-a "$($K get device "$DEV_A" -o jsonpath='{.spec.node}')"
out=$(cc a pod app web-a "$UID_A")
e2e_expect "node-a vouches for a pod on node-a" ok "$(code_of <<<"$out")" || e2e_log "$out"
e2e_expect "whose Device names the pod" "$UID_A" \
	"$($K get devices -o json | jq -r --arg u "$UID_A" '[.items[] | select(.spec.ownerPod.uid == $u)] | length as $n | if $n == 1 then $u else $n end')"
out=$(cc a pod app web-b "$UID_B")
e2e_expect "node-a is refused for a pod on node-b" PodNotAuthorized "$(code_of <<<"$out")"
e2e_check "saying the pod is on node-b, not node-a" grep -q 'pod app/web-b is on node node-b, not on node-a' <<<"$out" ||
	e2e_log "$out"
e2e_expect "no Device for the pod on node-b" 0 \
	"$($K get devices -o json | jq --arg u "$UID_B" '[.items[] | select(.spec.ownerPod.uid == $u)] | length')"
e2e_expect "counted: OtherNode" 1 "$(refusals OtherNode)"

# ---- no token: joins, vouches for nothing, whatever it calls itself ----
out=$(reg liar node-b)
e2e_expect "a machine with the nodes' key and no token joins as node-b" ok "$(code_of <<<"$out")" || e2e_log "$out"
DEV_L=$(awk '$1 == "ANSWER"' <<<"$out" | cut -d' ' -f2- | jq -r .device)
e2e_expect "bound to no node" "" "$($K get device "$DEV_L" -o jsonpath='{.spec.node}')"
out=$(cc liar pod app web-b "$UID_B")
e2e_expect "and is refused for node-b's pod" PodNotAuthorized "$(code_of <<<"$out")"
e2e_check "saying it registered without a knitd pod token" grep -q 'bound to no Kubernetes Node' <<<"$out" || e2e_log "$out"
out=$(cc liar pod app web-a "$UID_A")
e2e_expect "and for node-a's pod" PodNotAuthorized "$(code_of <<<"$out")"
e2e_expect "counted: NodeNotBound" 2 "$(refusals NodeNotBound)"

# A re-registration without the token unbinds; with it, binds again.
e2e_expect "node-a registers again without its token" ok "$(reg a node-a | code_of)"
e2e_expect "its Device is no longer bound" "" "$($K get device "$DEV_A" -o jsonpath='{.spec.node}')"
e2e_expect "and vouches for no pod" PodNotAuthorized "$(cc a pod app web-a "$UID_A" | code_of)"
e2e_expect "node-a registers again with its token" ok "$(reg a node-a "$TOKEN_A" | code_of)"
e2e_expect "bound again" node-a "$($K get device "$DEV_A" -o jsonpath='{.spec.node}')"

# ---- tokens that do not bind ----
TOKEN_AUD=$(tailnet_knitd_token node-b https://kubernetes.default.svc) || e2e_die "no token for node-b"
before=$(ndev)
out=$(reg c node-b "$TOKEN_AUD")
e2e_expect "a knitd pod token for the API server's audience is refused" PodTokenInvalid "$(code_of <<<"$out")"
e2e_check "saying it is the audience" grep -q 'WrongAudience' <<<"$out" || e2e_log "$out"
e2e_expect "and no Device is made" "$before" "$(ndev)"
e2e_expect "counted: WrongAudience" 1 "$(refusals WrongAudience)"

printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["knit.dev/node"],"expirationSeconds":3600,"boundObjectRef":{"apiVersion":"v1","kind":"Pod","name":"web-b","uid":"%s"}}}' \
	"$UID_B" >"$E2E_DIR/web-token.json"
TOKEN_WEB=$($K create --raw /api/v1/namespaces/app/serviceaccounts/web/token -f "$E2E_DIR/web-token.json" | jq -r .status.token)
out=$(reg d node-b "$TOKEN_WEB")
e2e_expect "a pod token of another ServiceAccount (an app pod on node-b) is refused" PodTokenInvalid "$(code_of <<<"$out")"
e2e_check "saying whose it is" grep -q 'system:serviceaccount:app:web' <<<"$out" || e2e_log "$out"
e2e_expect "counted: WrongServiceAccount" 1 "$(refusals WrongServiceAccount)"

FORGED="$(cut -d. -f1,2 <<<"$TOKEN_A").c2lnbmF0dXJl"
e2e_expect "node-a's token with another signature is refused" PodTokenInvalid "$(reg e node-b "$FORGED" | code_of)"
e2e_expect "counted: Unauthenticated" 1 "$(refusals Unauthenticated)"
e2e_expect "a podToken that is no JWT is a BadRequest" BadRequest "$(reg e node-b 'not a token' | code_of)"

# The token dies with its pod: the knitd pod deleted, node-a cannot rebind.
$K -n "$NS" delete pod knitd-node-a --grace-period=0 --force >/dev/null 2>&1
gone() { ! $K -n "$NS" get pod knitd-node-a >/dev/null 2>&1; }
e2e_wait_for 30 gone || e2e_die "pod knitd-node-a not deleted"
out=$(reg a node-a "$TOKEN_A")
e2e_expect "a token whose knitd pod is gone is refused" PodTokenInvalid "$(code_of <<<"$out")" || e2e_log "$out"
e2e_expect "node-a's Device keeps the node it was bound to" node-a "$($K get device "$DEV_A" -o jsonpath='{.spec.node}')"

e2e_end
