#!/usr/bin/env bash
# Devices that stop being usable, registrations that are refused, machines
# that call in a loop, and an operator that restarts (issue 15, items 5, 6,
# 8, 9), on a real kube-apiserver with real knitd agents and a scripted
# agent of the control protocol (tools/coord_client.c):
#   - an expired device's map stream ends with a KeyExpired record and
#     carries nothing after it; a device moved to another tailnet has its
#     stream ended (TailnetChanged), and its knitd drops the old tailnet's
#     peers and takes the new tailnet's netmap;
#   - 100 re-registrations flipping a hostname cost at most ~11 Device
#     writes and as few deltas to a peer (429 with Retry-After for the rest,
#     counted); a re-registration that changes nothing writes nothing;
#   - registrations refused for a tag, a route, too many routes or a node
#     key in use leave a one-off key usable; tags follow tagOwners once a
#     policy exists; an AuthKey outside Tailnet.spec.authKeyNamespaces is
#     not Ready, mints no Secret and registers nothing;
#   - an ephemeral device online when the operator crashed is collected
#     after the restart, and a graceful stop writes its devices offline.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin hardening_devices
CLIENT=$KNIT_BUILD_DIR/test/e2e/tools/coord_client
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$CLIENT" jq ping curl
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K create namespace team >/dev/null || e2e_die "create namespace team"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

tailnet_net_up $((20 + ($$ + 71) % 200))
tailnet_operator_start op-1
$K patch tailnet default --type merge -p '{"spec":{"ephemeralInactivityTimeout":"5s"}}' >/dev/null

authkey() { # authkey NAME SPEC-JSON [NAMESPACE] → prints the key
	local ns=${3:-$NS}
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"%s"},"spec":%s}' \
		"$1" "$ns" "$2" | $K apply -f - >/dev/null || return 1
	e2e_wait_for 30 $K get secret "$1-authkey" -n "$ns" >/dev/null 2>&1 || return 1
	$K get secret "$1-authkey" -n "$ns" -o jsonpath='{.data.authkey}' | base64 -d
}
NODE_KEY=$(authkey nodes '{"reusable":true}') || e2e_die "no nodes key"
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
cc() { local m=$1; shift; "$CLIENT" "$LOGIN_SERVER" "$CTRL" "$E2E_DIR/$m.keys" "$@"; }
code_of() { awk '$1 == "CODE" { print $2 }'; }
reg() { cc "$1" register "\"hostname\":\"$1\"${2:+,$2}" | code_of; } # MACHINE [FIELDS]
# A series of the operator's /metrics, or the sum of a family's ("name").
metric() {
	curl -s --max-time 3 "http://127.0.0.1:$OP_HTTP_PORT/metrics" |
		awk -v s="$1" '$1 == s || index($1, s "{") == 1 { v += $2 } END { print v + 0 }'
}
refusals() { metric "knit_coord_refusals_total{call=\"$1\",reason=\"$2\"}"; }
dev_of() { $K get devices -o json | jq -r --arg h "$1" '.items[] | select(.spec.hostname == $h) | .metadata.name'; }
map_bg() { e2e_bg "map-$1" "$CLIENT" "$LOGIN_SERVER" "$CTRL" "$E2E_DIR/$1.keys" map "${2:-600}"; }

# ---- item 5: an expired device's stream ends, and nothing follows ----
e2e_expect "a scripted agent registers" ok "$(reg exp "\"authKey\":\"$NODE_KEY\"")"
e2e_expect "and a peer" ok "$(reg peer "\"authKey\":\"$NODE_KEY\"")"
map_bg exp
map_bg peer
has() { grep -q "$2" "$E2E_DIR/map-$1.log"; }
e2e_check "both get their full netmap" e2e_wait_for 20 sh -c "grep -q '^RECORD full' '$E2E_DIR/map-exp.log' && grep -q '^RECORD full' '$E2E_DIR/map-peer.log'"
e2e_expect "a third device joins" ok "$(reg third "\"authKey\":\"$NODE_KEY\"")"
e2e_check "the stream carries it to exp as a delta" e2e_wait_for 20 has exp '^RECORD delta .* [1-9][0-9]*$'
$K patch device "$(dev_of exp)" --type merge -p '{"spec":{"keyExpiry":"2020-01-01T00:00:00Z"}}' >/dev/null
ended() { has exp '^RECORD error [0-9]* KeyExpired' && has exp '^END closed'; }
e2e_check "the expired device's stream ends with a KeyExpired error record" e2e_wait_for 20 ended
n=$(grep -c . "$E2E_DIR/map-exp.log")
peer_before=$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log")
e2e_expect "a fourth device joins" ok "$(reg fourth "\"authKey\":\"$NODE_KEY\"")"
peer_moved() { [ "$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log")" -gt "$peer_before" ]; }
e2e_check "a live peer's stream carries the change" e2e_wait_for 20 peer_moved
e2e_expect "the expired device's stream carried nothing more (error record, then its end)" \
	"$n KeyExpired" "$(grep -c . "$E2E_DIR/map-exp.log") $(grep '^RECORD' "$E2E_DIR/map-exp.log" | tail -1 | awk '{ print $4 }')"
e2e_check "a new map stream of the expired device is refused" sh -c "'$CLIENT' '$LOGIN_SERVER' '$CTRL' '$E2E_DIR/exp.keys' map 5 | grep -q '^RECORD error [0-9]* KeyExpired'"
e2e_check "stream ends are counted by reason" awk -v v="$(refusals stream KeyExpired)" 'BEGIN { exit !(v >= 1) }'

# ---- item 9: a machine that re-registers in a loop ----
e2e_expect "a flipping machine registers" ok "$(reg flip "\"authKey\":\"$NODE_KEY\"")"
FLIP=$(dev_of flip)
gen() { $K get device "$1" -o jsonpath='{.metadata.generation}'; }
kreq() { metric knit_kube_requests_total; }
g0=$(gen "$FLIP") r0=$(kreq) d0=$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log") t0=$(date +%s%N)
cc flip flip 100 flip flop >"$E2E_DIR/flip.txt"
t1=$(date +%s%N)
sleep 1.2 # the last accepted flip's delta (urgent: 25 ms) and API writes settle
g1=$(gen "$FLIP") r1=$(kreq) d1=$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log")
w=$(grep -c "device registered.*device=$FLIP .*written=yes" "$E2E_DIR/operator-op-1.log")
e2e_log "100 flips in $(((t1 - t0) / 1000000)) ms: $(tr '\n' ' ' <"$E2E_DIR/flip.txt"); Device writes $((g1 - g0)) (logged $w), API requests $((r1 - r0)), deltas to a peer $((d1 - d0))"
e2e_check "most flips are refused with 429" awk '$1 == "HTTP" && $2 == 429 && $3 >= 85 { f = 1 } END { exit !f }' "$E2E_DIR/flip.txt"
e2e_check "with Retry-After" grep -q '^RETRY_AFTER [1-9]' "$E2E_DIR/flip.txt"
e2e_check "at most 12 Device writes (was one per flip)" test $((g1 - g0)) -le 12
e2e_check "at most 40 API requests in all, lease renewals included (was 155)" test $((r1 - r0)) -le 40
e2e_check "at most 15 deltas reach a peer (was one per flip)" test $((d1 - d0)) -le 15
e2e_check "the refusals are counted" awk -v v="$(refusals register RateLimited)" 'BEGIN { exit !(v >= 85) }'
e2e_expect "a machine re-registering unchanged is registered" ok "$(reg same "\"authKey\":\"$NODE_KEY\"")"
SAME=$(dev_of same)
rv0=$($K get device "$SAME" -o jsonpath='{.metadata.resourceVersion}') d0=$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log")
r0=$(kreq)
for i in 1 2 3 4 5; do reg same >>"$E2E_DIR/same.txt"; done
sleep 1.2
e2e_log "5 unchanged re-registrations: API requests $(($(kreq) - r0)), lease renewals included"
e2e_expect "five unchanged re-registrations: all answered ok" "ok ok ok ok ok" "$(xargs <"$E2E_DIR/same.txt")"
e2e_expect "none wrote the Device (the API server would have taken the PUT as a no-op)" 5 \
	"$(grep -c "device registered.*device=$SAME .*written=no" "$E2E_DIR/operator-op-1.log")"
e2e_expect "its resourceVersion is unchanged" "$rv0" "$($K get device "$SAME" -o jsonpath='{.metadata.resourceVersion}')"
e2e_expect "and no delta to a peer" "$d0" "$(grep -c '^RECORD delta' "$E2E_DIR/map-peer.log")"

# ---- item 5: a device moved to another tailnet (real knitd agents) ----
tailnet_host_add node1 1
tailnet_host_add node2 2
for n in node1 node2; do
	tailnet_knitd_start "$n"
	tailnet_knit "$n" up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --hostname "$n" >/dev/null 2>&1 ||
		e2e_die "$n cannot join"
done
ip2=$(tailnet_knit node2 ip -4)
reach() { in_ns node1 ping -c 1 -W 2 "$ip2" >/dev/null; }
e2e_check "node1 reaches node2" e2e_wait_for 20 reach
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"Tailnet","metadata":{"name":"other"},"spec":{"ipv4Pool":"100.90.0.0/16","ipv6Pool":"fd7a:115c:b0::/48","dnsSuffix":"other.knit"}}' |
	$K apply -f - >/dev/null || e2e_die "Tailnet other"
$K patch device "$(dev_of node1)" --type merge -p '{"spec":{"tailnet":"other"}}' >/dev/null
logged() { grep -q 'moved to another tailnet' "$E2E_DIR/knitd-node1.log"; }
e2e_check "node1's stream is ended with TailnetChanged, and knitd says so" e2e_wait_for 20 logged
peers() { tailnet_knit "$1" status --json | jq -r '[.peers[].name] | sort | join(",")'; }
in_other() { [[ $(tailnet_knit node1 ip -4) == 100.90.* ]]; }
e2e_check "node1 takes the new tailnet's netmap (its address from that pool)" e2e_wait_for 40 in_other
claims_in() { $K get addressclaims -o json | jq -r --arg d "$(dev_of node1)" --arg t "$1" \
	'[.items[] | select(.spec.tailnet == $t and (.metadata.ownerReferences // [] | map(.name) | index($d)))] | length'; }
e2e_expect "node1 holds two address claims in its new tailnet" 2 "$(claims_in other)"
released() { [ "$(claims_in default)" = 0 ]; }
e2e_check "and its old tailnet's claims are released" e2e_wait_for 20 released
alone() { [ -z "$(peers node1)" ]; }
e2e_check "and drops the old tailnet's peers" e2e_wait_for 20 alone
not_seen() { ! peers node2 | grep -qw node1; }
e2e_check "node2 no longer sees node1" e2e_wait_for 20 not_seen
e2e_check "node1 cannot reach node2 any more" sh -c "! ip netns exec '$(ns_name node1)' ping -c 1 -W 1 '$ip2' >/dev/null"

# ---- item 8: refused registrations leave a one-off key usable ----
ONCE=$(authkey once '{"reusable":false}') || e2e_die "no one-off key"
uses() { $K get authkey "$1" -n "${2:-$NS}" -o jsonpath='{.status.uses}'; }
routes=$(seq 0 299 | awk '{ printf "%s\"10.%d.%d.0/24\"", (NR > 1 ? "," : ""), int($1 / 256), $1 % 256 }')
e2e_expect "a tag the key does not grant (no policy yet) is refused" TagNotPermitted \
	"$(reg o1 "\"authKey\":\"$ONCE\",\"tags\":[\"tag:db\"]")"
e2e_expect "a malformed route is refused" BadRequest "$(reg o1 "\"authKey\":\"$ONCE\",\"advertiseRoutes\":[\"10.0.0.0/24x\"]")"
e2e_expect "300 routes (the Device holds 256) are refused before the key is used" BadRequest \
	"$(reg o1 "\"authKey\":\"$ONCE\",\"advertiseRoutes\":[$routes]")"
e2e_expect "another device's node key is refused" NodeKeyInUse \
	"$(reg o1 "\"authKey\":\"$ONCE\",\"nodeKey\":\"$(cc peer nodekey)\"")"
# An IPv4-mapped IPv6 route, which the Device CRD's pattern refuses, is
# refused by the field rules too (it once reached the API server as a 422
# after the use was counted).
e2e_expect "an IPv4-mapped IPv6 route is refused before the key is used" BadRequest \
	"$(reg o1 "\"authKey\":\"$ONCE\",\"advertiseRoutes\":[\"::ffff:10.0.0.0/120\"]")"
e2e_expect "none of them counted a use" "" "$(uses once | sed 's/^0$//')"
e2e_expect "the one-off key still registers a device" ok "$(reg o1 "\"authKey\":\"$ONCE\"")"
e2e_expect "and is used up then" "1 AuthKeyUsedUp" "$(uses once) $(reg o2 "\"authKey\":\"$ONCE\"")"
e2e_check "refusals are counted by reason" \
	awk -v a="$(refusals register TagNotPermitted)" -v b="$(refusals register BadRequest)" \
	-v c="$(refusals register NodeKeyInUse)" 'BEGIN { exit !(a >= 1 && b >= 2 && c >= 1) }'

# Tags follow tagOwners once a policy exists.
ALICE=$(authkey alice '{"reusable":true,"user":"alice@example.com"}') || e2e_die "no alice key"
e2e_expect "without a policy, alice's key grants no tag:db" TagNotPermitted "$(reg a1 "\"authKey\":\"$ALICE\",\"tags\":[\"tag:db\"]")"
jq -n --arg p '{"tagOwners": {"tag:db": ["alice@example.com"], "tag:ops": ["bob@example.com"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}' \
	'{apiVersion: "knit.dev/v1alpha1", kind: "Policy", metadata: {name: "default"}, spec: {tailnet: "default", policy: $p}}' |
	$K apply -f - >/dev/null || e2e_die "Policy"
e2e_check "the policy is in force" e2e_wait_for 30 sh -c "[ \"\$('$K' get policy default -o jsonpath='{.status.appliedGeneration}')\" = 1 ]"
e2e_expect "under it, alice owns tag:db" ok "$(reg a1 "\"authKey\":\"$ALICE\",\"tags\":[\"tag:db\"]")"
e2e_expect "but not tag:ops (bob's)" TagNotPermitted "$(reg a2 "\"authKey\":\"$ALICE\",\"tags\":[\"tag:ops\"]")"
$K delete policy default >/dev/null

# Tailnet.spec.authKeyNamespaces: by default only the operator's namespace.
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"t","namespace":"team"},"spec":{"reusable":true}}' |
	$K apply -f - >/dev/null || e2e_die "AuthKey team/t"
reason() { $K get authkey t -n team -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'; }
refused_ns() { [ "$(reason)" = NamespaceNotAllowed ]; }
e2e_check "an AuthKey in namespace team is not Ready: NamespaceNotAllowed" e2e_wait_for 30 refused_ns
e2e_check "and no key was minted for it" sh -c "! '$K' get secret t-authkey -n team >/dev/null 2>&1"
$K patch tailnet default --type merge -p '{"spec":{"authKeyNamespaces":["knit-system","team"]}}' >/dev/null
TEAM=$(authkey t '{"reusable":true}' team) || e2e_die "team's key not minted once allowed"
e2e_check "listed in authKeyNamespaces, it is minted" test -n "$TEAM"
e2e_expect "and registers a device" ok "$(reg t1 "\"authKey\":\"$TEAM\"")"
$K patch tailnet default --type merge -p '{"spec":{"authKeyNamespaces":["knit-system"]}}' >/dev/null
e2e_check "taken off the list, the AuthKey is not Ready again" e2e_wait_for 30 refused_ns
e2e_expect "and registers nothing" AuthKeyNamespaceNotAllowed "$(reg t2 "\"authKey\":\"$TEAM\"")"
e2e_check "that refusal is counted" awk -v v="$(refusals register AuthKeyNamespaceNotAllowed)" 'BEGIN { exit !(v >= 1) }'
e2e_expect "keys of the operator's namespace still work" ok "$(reg n1 "\"authKey\":\"$NODE_KEY\"")"

# ---- item 6: ephemeral devices across operator restarts ----
EPH=$(authkey eph '{"reusable":true,"ephemeral":true}') || e2e_die "no ephemeral key"
online() { $K get device "$1" -o jsonpath='{.status.online}'; }
e2e_expect "an ephemeral scripted agent registers" ok "$(reg eph1 "\"authKey\":\"$EPH\"")"
EPH1=$(dev_of eph1)
map_bg eph1
is_online() { [ "$(online "$1")" = true ]; }
e2e_check "and is online" e2e_wait_for 20 is_online "$EPH1"
# A crash: no offline transition is written, and the agent goes too.
kill -KILL "$OP_PID"
wait "$OP_PID" 2>/dev/null
e2e_check "its stream dies with the operator" e2e_wait_for 20 has eph1 '^END'
e2e_expect "the API server still shows it online" true "$(online "$EPH1")"
tailnet_operator_start op-2
gone() { ! $K get device "$1" >/dev/null 2>&1; }
t0=$(date +%s)
e2e_check "the new leader marks it offline and collects it (5 s timeout)" e2e_wait_for 90 gone "$EPH1"
e2e_log "collected $(($(date +%s) - t0)) s after the restart"
# A graceful stop writes the offline transitions itself.
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
e2e_expect "another ephemeral agent registers" ok "$(reg eph2 "\"authKey\":\"$EPH\"")"
EPH2=$(dev_of eph2)
map_bg eph2
e2e_check "and is online" e2e_wait_for 20 is_online "$EPH2"
e2e_kill "$OP_PID"
e2e_expect "SIGTERM: the operator wrote it offline before it went" false "$(online "$EPH2")"
tailnet_operator_start op-3
e2e_check "and the next leader collects it" e2e_wait_for 60 gone "$EPH2"
connected() { [ "$(tailnet_knit node2 status --json | jq -r .backendState)" = Running ]; }
e2e_check "a real agent is back with the third operator" e2e_wait_for 60 connected

e2e_end
