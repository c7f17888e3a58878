#!/usr/bin/env bash
# Handshake floods against the coordination server (issue 15.2), with real
# agents on a real kube-apiserver: 5,000 handshakes with fresh machine keys
# from one address get 32 sessions and 429 for the rest; 6,000 from 200
# addresses fill the table of unknown machines (4,096) and are refused past
# it; all the while a registered agent that restarts handshakes and gets
# its netmap again (known machines never compete with unknown ones), and
# the sessions of the flood are gone 30 s after it stops. A handshake
# stamped a day ahead is refused and does not lock its machine out.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin hardening_handshake
FLOOD=$KNIT_BUILD_DIR/test/e2e/tools/coord_flood
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$FLOOD" jq ping
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

tailnet_net_up $((20 + ($$ + 13) % 200))
TAILNET_COORD_BIND=0.0.0.0 tailnet_operator_start op-1
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"nodes","namespace":"%s"},"spec":{"reusable":true}}' \
	"$NS" | $K apply -f - >/dev/null || e2e_die "AuthKey"
e2e_wait_for 30 $K get secret nodes-authkey -n "$NS" >/dev/null || e2e_die "no key"
KEY=$($K get secret nodes-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
for n in node1 node2; do
	tailnet_host_add "$n" "${n#node}"
	tailnet_knitd_start "$n"
	tailnet_knit "$n" up --authkey "$KEY" --login-server "$LOGIN_SERVER" --hostname "$n" >/dev/null 2>&1 ||
		e2e_die "$n cannot join"
done
ip2=$(tailnet_knit node2 ip -4)
reach() { in_ns node1 ping -c 1 -W 2 "$ip2" >/dev/null; }
e2e_check "node1 reaches node2" e2e_wait_for 20 reach
metric() { curl -s --max-time 3 "http://127.0.0.1:$OP_HTTP_PORT/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }
URL=http://127.0.0.1:$COORD_PORT
count() { awk -v s="$1" '$1 == s { print $2 }' "$2"; }

# ---- one address ----
"$FLOOD" "$URL" "$CTRL" 5000 127.0.0.2 1 >"$E2E_DIR/one.txt" || e2e_die "flood tool failed"
e2e_log "one address: $(tr '\n' ' ' <"$E2E_DIR/one.txt")"
e2e_expect "from one address, 32 fresh machines get a session" 32 "$(count 200 "$E2E_DIR/one.txt")"
e2e_expect "and the other 4,968 get 429" 4968 "$(count 429 "$E2E_DIR/one.txt")"
e2e_check "refusals per address are counted" \
	awk -v v="$(metric knit_coord_handshakes_refused_unknown_per_ip_total)" 'BEGIN { exit !(v >= 4968) }'

# ---- many addresses, with a registered agent restarting meanwhile ----
"$FLOOD" "$URL" "$CTRL" 6400 127.0.1.1 200 >"$E2E_DIR/many.txt" &
FLOOD_PID=$!
e2e_defer "kill $FLOOD_PID 2>/dev/null"
table_full() { awk -v v="$(metric knit_coord_unknown_sessions)" 'BEGIN { exit !(v >= 4000) }'; }
e2e_check "the flood fills the unknown-machine table" e2e_wait_for 60 table_full
e2e_kill "$KNITD_PID_node2"
tailnet_knitd_start node2
connected() { [ "$(tailnet_knit node2 status --json | jq -r .backendState)" = Running ]; }
e2e_check "a registered agent restarting during the flood gets back in" e2e_wait_for 60 connected
e2e_check "and carries traffic again" e2e_wait_for 30 reach
wait "$FLOOD_PID"
e2e_log "200 addresses: $(tr '\n' ' ' <"$E2E_DIR/many.txt")"
full=$(metric knit_coord_handshakes_refused_unknown_full_total)
e2e_check "the unknown-machine table filled and refused the rest" awk -v v="$full" 'BEGIN { exit !(v >= 1) }'
e2e_check "it never holds more than 4,096" awk -v v="$(metric knit_coord_unknown_sessions)" 'BEGIN { exit !(v <= 4096) }'
drained() { [ "$(metric knit_coord_unknown_sessions)" = 0 ]; }
e2e_check "unknown machines' sessions are gone within 40 s of the flood" e2e_wait_for 40 drained

# ---- a timestamp far ahead ----
"$FLOOD" "$URL" "$CTRL" 3 127.0.0.3 1 future >"$E2E_DIR/future.txt"
e2e_expect "handshakes stamped a day ahead are refused" 3 "$(count 400 "$E2E_DIR/future.txt")"
e2e_check "and counted" awk -v v="$(metric knit_coord_handshakes_refused_future_total)" 'BEGIN { exit !(v >= 3) }'
e2e_kill "$KNITD_PID_node1"
tailnet_knitd_start node1
back() { [ "$(tailnet_knit node1 status --json | jq -r .backendState)" = Running ]; }
e2e_check "a registered agent still handshakes normally afterwards" e2e_wait_for 60 back

e2e_end
