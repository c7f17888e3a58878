#!/usr/bin/env bash
# Time to a direct path behind NAT (issue 19): two knitd agents, each behind
# its own endpoint-independent ("easy") NAT router (test/e2e/lib/nat.sh), a
# knit-relay as the relay map's region, the operator and a real
# kube-apiserver, all in network namespaces on this machine. Each round
# stops b's knitd, starts it again (logged in from its state file) and
# measures, from that start:
#   online  - a's netmap shows b online (the coordination's part: the
#             reference, measured in the same run);
#   direct  - both a's and b's paths to each other are direct (disco with
#             call-me-maybe through the relay, NAT punched);
# and prints each round, the medians, and direct - online: the time from
# both peers online to a direct path. Target: <= 2 s.
#
#   sudo bench/relay/direct.sh [ROUNDS]     (default 5; a release build in
#                                            KNIT_BUILD_DIR, default build/default)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export KNIT_SOURCE_DIR=$(cd "$here/../.." && pwd)
export KNIT_BUILD_DIR=${KNIT_BUILD_DIR:-$KNIT_SOURCE_DIR/build/default}
rounds=${1:-5}
source "$KNIT_SOURCE_DIR/test/e2e/lib/common.sh"
source "$KNIT_SOURCE_DIR/test/e2e/lib/apiserver.sh"
source "$KNIT_SOURCE_DIR/test/e2e/lib/tailnet.sh"
source "$KNIT_SOURCE_DIR/test/e2e/lib/nat.sh"
RELAY=$KNIT_BUILD_DIR/relay/knit-relay

e2e_begin bench-direct
e2e_defer "[ \$E2E_FAILED -eq 0 ] || { mkdir -p '$E2E_DIR.logs' && cp -r '$E2E_DIR'/*.log '$E2E_DIR.logs/' 2>/dev/null; e2e_log \"logs kept in $E2E_DIR.logs\"; }"
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$RELAY" jq conntrack nft
tailnet_kube_up
NET=$((20 + ($$ + 91) % 200))
tailnet_net_up $NET
tailnet_operator_start op-1
tailnet_relay_start relay1 1
RIP=10.$NET.0.11
tailnet_relay_map "{\"regions\":[{\"id\":1,\"code\":\"bench\",\"nodes\":[{\"name\":\"1a\",\"hostName\":\"$RIP\",\"ipv4\":\"$RIP\",\"relayPort\":8080,\"stunPort\":3478,\"tls\":false}]}]}"
KEY=$(tailnet_authkey nodes '{"reusable":true}') || e2e_die "no auth key"
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')
nat_router_add ra 2 easy
nat_router_add rb 3 easy
nat_host_add a ra 10
nat_host_add b rb 10
for h in a b; do
	tailnet_knitd_start "$h"
	tailnet_knit "$h" up --authkey "$KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname "$h" >/dev/null ||
		e2e_die "knit up on $h"
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
peer() { tailnet_knit "$1" status --json 2>/dev/null | jq -c --arg p "$2" '.peers[] | select(.name == $p) | {online, kind: .path.kind}'; }
online() { [ "$(peer a b | jq -r .online)" = true ]; }
direct() { [ "$(peer a b | jq -r .kind)" = direct ] && [ "$(peer b a | jq -r .kind)" = direct ]; }
# Polls cond every 20 ms for up to 30 s; prints the ms since t0, or fails.
until_ms() { # T0 COND
	local t0=$1 end=$(($(now_ms) + 30000))
	while [ "$(now_ms)" -lt "$end" ]; do
		"$2" && { echo $(($(now_ms) - t0)); return 0; }
		sleep 0.02
	done
	return 1
}
e2e_wait_for 30 direct || e2e_die "a and b never went direct (see $E2E_DIR)"

declare -a ON DI DIFF
printf '%-6s %10s %10s %16s\n' round online_ms direct_ms online_to_direct
for r in $(seq "$rounds"); do
	kill "$KNITD_PID_b" && wait "$KNITD_PID_b" 2>/dev/null
	offline() { ! online; }
	e2e_wait_for 60 offline || e2e_die "b never went offline in a's netmap"
	# Forget the UDP mappings (TCP ones carry the map streams): the path
	# must be punched again.
	in_ns ra conntrack -D -p udp >/dev/null 2>&1
	in_ns rb conntrack -D -p udp >/dev/null 2>&1
	t0=$(now_ms)
	tailnet_knitd_start b
	on=$(until_ms "$t0" online) || e2e_die "round $r: b never came online"
	di=$(until_ms "$t0" direct) || e2e_die "round $r: no direct path"
	ON+=("$on")
	DI+=("$di")
	DIFF+=($((di > on ? di - on : 0)))
	printf '%-6s %10s %10s %16s\n' "$r" "$on" "$di" "${DIFF[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "median: b online in a's netmap $(median "${ON[@]}") ms after b's knitd started (reference: coordination)"
echo "median: both paths direct $(median "${DI[@]}") ms after b's knitd started"
echo "median: from both online to a direct path $(median "${DIFF[@]}") ms (target <= 2000 ms)"
e2e_pass "bench done"
e2e_end
