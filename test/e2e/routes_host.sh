#!/usr/bin/env bash
# Approved routes never replace the host's own (issue 15.4), with real
# agents on a real kube-apiserver: a "router" advertises 0.0.0.0/0, the
# LAN's own prefix and 192.168.77.0/24, all approved with kubectl. On
# node1 (--accept-routes): the subnet goes into table 52 through knit0; the
# default route is left out (no exit node chosen); the LAN prefix is left
# out (it is node1's connected network); the main table is byte for byte
# what it was; the coordination server stays on eth0. Withdrawing the
# approval removes the route. With --exit-node router, the default goes
# into table 52 with the LAN and the coordination server thrown back, and
# the tunnel keeps working (knitd's own packets skip the table). knitd
# stopping leaves no rule and no route of knit's behind.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin routes_host
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" jq ping
tailnet_kube_up
NS=knit-system

tailnet_net_up $((20 + ($$ + 7) % 200))
LAN=10.$TAILNET_NET.0.0/24
tailnet_operator_start op-1
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"nodes","namespace":"%s"},"spec":{"reusable":true}}' \
	"$NS" | $K apply -f - >/dev/null || e2e_die "AuthKey"
e2e_wait_for 30 $K get secret nodes-authkey -n "$NS" >/dev/null || e2e_die "no key"
KEY=$($K get secret nodes-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)

tailnet_host_add node1 0
tailnet_host_add router 1
in_ns node1 ip route add default via "$TAILNET_GW" || e2e_die "default route"
main_routes() { in_ns node1 sh -c 'ip route show table main; ip -6 route show table main | grep -v "knit0"' | grep -v knit0; }
BEFORE=$(main_routes)

join() { # NAME [knit up args]
	local n=$1
	shift
	tailnet_knit "$n" up --authkey "$KEY" --login-server "$LOGIN_SERVER" --hostname "$n" "$@" >/dev/null 2>&1
}
tailnet_knitd_start router
tailnet_knitd_start node1 --accept-routes
e2e_check "router joins advertising a default, the LAN and a subnet" \
	join router --advertise-routes "0.0.0.0/0,$LAN,192.168.77.0/24"
e2e_check "node1 joins" join node1
dev_of() { $K get devices -o json | jq -r --arg h "$1" '.items[] | select(.spec.hostname == $h) | .metadata.name'; }
approve() { # ROUTES-JSON-ARRAY
	$K patch device "$(dev_of router)" --type merge -p "{\"spec\":{\"approvedRoutes\":$1}}" >/dev/null
}
e2e_check "all three approved with kubectl" approve "[\"0.0.0.0/0\",\"$LAN\",\"192.168.77.0/24\"]"
table52() { in_ns node1 ip route show table 52; }
has_subnet() { table52 | grep -q '^192.168.77.0/24 dev knit0'; }
e2e_check "node1 routes the approved subnet through knit0 in table 52" e2e_wait_for 15 has_subnet
e2e_check "not the default route: no exit node was chosen" sh -c "! ip netns exec $(ns_name node1) ip route show table 52 | grep -q '^default'"
e2e_check "not its own LAN prefix" sh -c "! ip netns exec $(ns_name node1) ip route show table 52 | grep -q '^$LAN '"
e2e_expect "the main table is exactly as before" "$BEFORE" "$(main_routes)"
e2e_check "policy rule 5270 looks up table 52" sh -c "ip netns exec $(ns_name node1) ip rule | grep -q '^5270:.*lookup 52'"
e2e_check "knitd's own packets (fwmark 0x80000) skip it" sh -c "ip netns exec $(ns_name node1) ip rule | grep -q '^5210:.*fwmark 0x80000/0xff0000 lookup main'"
e2e_check "192.168.77.5 goes through knit0" sh -c "ip netns exec $(ns_name node1) ip route get 192.168.77.5 | grep -q 'dev knit0'"
e2e_check "the coordination server stays on eth0" sh -c "ip netns exec $(ns_name node1) ip route get $TAILNET_GW | grep -q 'dev eth0'"
rip=$(tailnet_knit router ip -4)
e2e_check "node1 reaches the router over the tailnet" in_ns node1 ping -c 2 -W 2 "$rip"

e2e_check "approval withdrawn" approve '[]'
gone() { ! table52 | grep -q 192.168.77.0/24; }
e2e_check "the subnet route goes with it" e2e_wait_for 15 gone
e2e_expect "the main table is still exactly as before" "$BEFORE" "$(main_routes)"

# ---- an exit node, chosen ----
e2e_kill "$KNITD_PID_node1"
clean() { [ -z "$(table52)" ] && ! in_ns node1 ip rule | grep -qE '^(5270|5210):'; }
e2e_check "knitd stopped: no rule and no route of knit's left" e2e_wait_for 10 clean
e2e_expect "and the main table as before" "$BEFORE" "$(main_routes)"
tailnet_knitd_start node1 --accept-routes --exit-node router
e2e_check "the router's default route approved again" approve '["0.0.0.0/0"]'
has_default() { table52 | grep -q '^default dev knit0'; }
e2e_check "node1's default now goes through the exit node" e2e_wait_for 20 has_default
e2e_check "its LAN is thrown back to the main table" sh -c "ip netns exec $(ns_name node1) ip route show table 52 | grep -q '^throw $LAN'"
e2e_check "the coordination server too" sh -c "ip netns exec $(ns_name node1) ip route show table 52 | grep -q '^throw $TAILNET_GW'"
e2e_check "a far address routes through knit0 (lookup only)" sh -c "ip netns exec $(ns_name node1) ip route get 203.0.113.7 | grep -q 'dev knit0'"
e2e_check "the gateway on the LAN still through eth0" sh -c "ip netns exec $(ns_name node1) ip route get $TAILNET_GW | grep -q 'dev eth0'"
e2e_expect "the main table is still exactly as before" "$BEFORE" "$(main_routes)"
ping_router() { in_ns node1 ping -c 1 -W 2 "$rip" >/dev/null; }
e2e_check "the tunnel itself keeps working under the exit route" e2e_wait_for 20 ping_router
e2e_kill "$KNITD_PID_node1"
e2e_check "stopped again: nothing of knit's left" e2e_wait_for 10 clean
e2e_expect "the main table as it was at the start" "$BEFORE" "$(main_routes)"

e2e_end
