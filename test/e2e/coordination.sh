#!/usr/bin/env bash
# Issue 5's slice end to end: a real kube-apiserver, knit-operator serving
# coordination, and four agents (three "nodes" and a "laptop"), each knitd
# in a network namespace of its own, joined with AuthKeys made by kubectl.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin coordination
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" jq iperf3 ping
tailnet_kube_up
NS=knit-system

tailnet_net_up $((20 + $$ % 200))
# One peer per map record: every full netmap here comes in pieces
# ("more"), as a large tailnet's does, and the agents must assemble them.
TAILNET_OP_ARGS="--map-record-bytes 1"
tailnet_operator_start op-1
$K patch tailnet default --type merge -p '{"spec":{"ephemeralInactivityTimeout":"5s"}}' >/dev/null

authkey() { # authkey NAME SPEC-JSON → prints the key
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"%s"},"spec":%s}' \
		"$1" "$NS" "$2" | $K apply -f - >/dev/null || return 1
	e2e_wait_for 30 $K get secret "$1-authkey" -n "$NS" || return 1
	$K get secret "$1-authkey" -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d
}
NODE_KEY=$(authkey nodes '{"reusable":true}') || e2e_die "no nodes key"
LAPTOP_KEY=$(authkey laptop '{"reusable":false}') || e2e_die "no laptop key"
EPH_KEY=$(authkey ci '{"reusable":true,"ephemeral":true}') || e2e_die "no ephemeral key"
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')

AGENTS=(node1 node2 node3 laptop)
for i in "${!AGENTS[@]}"; do
	tailnet_host_add "${AGENTS[$i]}" "$i"
	# node1 also serves /healthz, /readyz and /metrics (in its own namespace).
	if [ "${AGENTS[$i]}" = node1 ]; then
		tailnet_knitd_start node1 --http-listen 127.0.0.1:9102
	else
		tailnet_knitd_start "${AGENTS[$i]}"
	fi
done
# --socket pointed at a file that is not a socket: knitd refuses to start
# and leaves the file alone (it used to unlink whatever was there).
printf 'keep me\n' >"$E2E_DIR/not-a-socket"
timeout 30 ip netns exec "$(ns_name node1)" "$KNITD" run --state-dir "$E2E_DIR/refused/state" \
	--socket "$E2E_DIR/not-a-socket" --tun knitx --port 0 >"$E2E_DIR/refused.log" 2>&1
rc=$?
e2e_check "knitd run --socket at a regular file refuses to start" test "$rc" -eq 1
e2e_expect "and leaves the file intact" "keep me" "$(cat "$E2E_DIR/not-a-socket")"
http_code() { in_ns node1 curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:9102$1"; }
# The value of one series of node1's /metrics ("name" or "name{labels}").
metric() { in_ns node1 curl -sf --max-time 3 http://127.0.0.1:9102/metrics | awk -v s="$1" '$1 == s { print $2; f = 1 } END { exit !f }'; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }
metric_above() { awk -v v="$(metric "$1")" -v min="$2" 'BEGIN { exit !(v != "" && v + 0 > min + 0) }'; }
http_is() { [ "$(http_code "$1")" = "$2" ]; }
e2e_check "node1 /healthz answers 200" e2e_wait_for 10 http_is /healthz 200
e2e_check "node1 /readyz is 503 before it joins" http_is /readyz 503
e2e_check "and /metrics says it is not logged in" metric_is knitd_logged_in 0
for a in node1 node2 node3; do
	out=$(tailnet_knit "$a" up --authkey "$NODE_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname "$a" 2>&1)
	e2e_check "$a joins" test $? -eq 0 || e2e_log "$out"
done
# The laptop trusts the server key on first use instead of pinning it, and
# reads its auth key from standard input (kept out of /proc/PID/cmdline).
out=$(printf '%s\n' "$LAPTOP_KEY" | tailnet_knit laptop up --authkey - --login-server "$LOGIN_SERVER" --hostname laptop 2>&1)
e2e_check "laptop joins (trust on first use)" test $? -eq 0 || e2e_log "$out"
e2e_check "knit up showed the control key it trusted" grep -q "${CTRL#ctrlkey:}" <<<"$out"

ip_of() { tailnet_knit "$1" ip -4; }
peers_of() { tailnet_knit "$1" status --json | jq -r '.peers[].name' | sort | tr '\n' ' '; }
sees_all() { local want; want=$(printf '%s\n' "${AGENTS[@]}" | grep -vx "$1" | sort | tr '\n' ' '); [ "$(peers_of "$1")" = "$want" ]; }
for a in "${AGENTS[@]}"; do
	e2e_check "knit status on $a shows the other three" e2e_wait_for 20 sees_all "$a"
done
e2e_check "node1 /readyz is 200 once it has joined" e2e_wait_for 10 http_is /readyz 200
joined_metrics() { metric_is knitd_logged_in 1 && metric_is knitd_coordination_connected 1 && metric_is knitd_peers 3; }
e2e_check "/metrics: logged in, connected, three peers" e2e_wait_for 10 joined_metrics
declare -A TIP
for a in "${AGENTS[@]}"; do TIP[$a]=$(ip_of "$a"); done
e2e_log "tailnet addresses: $(for a in "${AGENTS[@]}"; do printf '%s=%s ' "$a" "${TIP[$a]}"; done)"

ping_ok() { in_ns "$1" ping -c1 -W2 "$2" >/dev/null 2>&1; }
matrix_ok=0
for a in "${AGENTS[@]}"; do
	for b in "${AGENTS[@]}"; do
		[ "$a" = "$b" ] && continue
		if e2e_wait_for 10 ping_ok "$a" "${TIP[$b]}"; then matrix_ok=$((matrix_ok + 1)); else e2e_log "no ping $a -> $b"; fi
	done
done
e2e_expect "every pair pings over tailnet addresses (12 pairs)" 12 "$matrix_ok"
e2e_check "/metrics: node1 holds sessions with its three peers" metric_is knitd_peers_with_session 3
e2e_check "and counts bytes both ways" metric_above knitd_outbound_bytes_total 0
e2e_check "(inbound too)" metric_above knitd_inbound_bytes_total 0
v6=$(tailnet_knit node2 ip -6)
e2e_check "IPv6 over the tailnet too" e2e_wait_for 10 in_ns node1 ping -6 -c1 -W2 "$v6"
e2e_check "knit ping reaches a peer by name" tailnet_knit node1 ping node3
e2e_check "knit whois names the owner of an address" sh -c "'$KNIT' --socket '$E2E_DIR/node1/knitd.sock' whois ${TIP[laptop]} | grep -q laptop"

online4() { [ "$($K get devices -o json | jq '[.items[] | select(.status.online == true and (.status.addresses | length) == 2)] | length')" -eq 4 ]; }
e2e_check "kubectl get devices lists four online devices with addresses" e2e_wait_for 20 online4
$K get devices >"$E2E_DIR/devices.txt"
e2e_check "devices table shows the tailnet IPs" grep -q "${TIP[node1]}" "$E2E_DIR/devices.txt"
# A reusable key without maxUses has its uses counted after the joins.
nodes_uses() { [ "$($K get authkey nodes -n "$NS" -o jsonpath='{.status.uses}')" = 3 ]; }
e2e_check "the nodes key counts its three uses" e2e_wait_for 10 nodes_uses

# ---- the operator dies during a transfer: data keeps flowing ----
in_ns node1 iperf3 -s -D -B "${TIP[node1]}" --logfile "$E2E_DIR/iperf-s.log" || e2e_fail "iperf3 server"
e2e_defer "pkill -f 'iperf3 -s -D -B ${TIP[node1]}'"
# -D returns before the daemon listens: a client right after it can be refused.
iperf_listening() { in_ns node1 ss -Hltn "sport = :5201" | grep -q .; }
e2e_wait_for 10 iperf_listening || e2e_fail "iperf3 server not listening"
in_ns node2 iperf3 -c "${TIP[node1]}" -t 8 -J >"$E2E_DIR/iperf.json" 2>&1 &
IPERF=$!
e2e_defer "kill $IPERF 2>/dev/null"
sleep_until() { local t=$1; e2e_wait_for "$t" false; }
sleep_until 2
kill -KILL "$OP_PID"
e2e_log "operator killed during the transfer"
wait "$IPERF"
rc=$?
e2e_expect "iperf3 finished despite the dead operator" 0 "$rc"
gbit=$(jq -r '.end.sum_received.bits_per_second / 1e9' "$E2E_DIR/iperf.json" 2>/dev/null)
e2e_log "transfer: ${gbit:-?} Gbit/s"
e2e_check "and moved data" awk -v g="${gbit:-0}" 'BEGIN { exit !(g > 0.01) }'
e2e_check "forwarding continues with the operator gone" ping_ok node3 "${TIP[laptop]}"
e2e_check "/metrics shows node1 cut off from coordination" e2e_wait_for 20 metric_is knitd_coordination_connected 0
e2e_check "while /readyz stays 200 (it forwards on its netmap)" http_is /readyz 200
tailnet_operator_start op-2
connected() { [ "$(tailnet_knit "$1" status --json | jq -r '.backendState + "/" + ((.health // "") | length | tostring)')" = "Running/0" ]; }
for a in "${AGENTS[@]}"; do
	e2e_check "$a reconnects to the new operator" e2e_wait_for 90 connected "$a"
done
e2e_check "netmaps converge after the restart" e2e_wait_for 20 sees_all node2

# ---- a device deleted with kubectl vanishes from its peers within 1 s ----
LAPTOP_DEV=$($K get devices -o json | jq -r '.items[] | select(.spec.hostname == "laptop") | .metadata.name')
gone_from() { ! tailnet_knit "$1" status --json | jq -e '.peers[] | select(.name == "laptop")' >/dev/null; }
t0=$(date +%s%N)
$K delete device "$LAPTOP_DEV" --wait=false >/dev/null
e2e_check "the deleted device leaves node1's netmap within 1 s" e2e_wait_for 1 gone_from node1
e2e_log "gone from node1's netmap after $((($(date +%s%N) - t0) / 1000000)) ms"
e2e_check "and node2's" e2e_wait_for 1 gone_from node2
e2e_check "its tunnel stops" sh -c "! ip netns exec $(ns_name node1) ping -c2 -W1 ${TIP[laptop]} >/dev/null 2>&1"

# ---- a one-off key used twice is refused with a clear error ----
tailnet_host_add laptop2 5
tailnet_knitd_start laptop2
out=$(tailnet_knit laptop2 up --authkey "$LAPTOP_KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname laptop2 2>&1)
rc=$?
e2e_check "a one-off key used twice is refused" test "$rc" -ne 0
e2e_check "with a clear error" grep -qi "already been used" <<<"$out"
e2e_log "knit up said: $out"

# ---- an ephemeral device vanishes after its agent stops ----
tailnet_host_add ci 6
tailnet_knitd_start ci
printf '%s\n' "$EPH_KEY" >"$E2E_DIR/ci.key"
e2e_check "an ephemeral agent joins (auth key from a file)" tailnet_knit ci up --authkey-file "$E2E_DIR/ci.key" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname ci
ci_dev() { $K get devices -o json | jq -r '.items[] | select(.spec.hostname == "ci") | .metadata.name'; }
e2e_check "its Device is ephemeral" sh -c "$K get devices -o json | jq -e '.items[] | select(.spec.hostname == \"ci\") | .spec.ephemeral == true' >/dev/null"
kill -TERM "$KNITD_PID_ci"
ci_gone() { [ -z "$(ci_dev)" ]; }
if e2e_wait_for 40 ci_gone; then
	e2e_pass "the ephemeral device is removed after the 5 s inactivity timeout"
else
	e2e_fail "the ephemeral device is removed after the 5 s inactivity timeout"
	e2e_log "its Device: $($K get device "$(ci_dev)" -o json | jq -c '.status')"
fi

# ---- knitd restarted keeps its identity and addresses ----
before=$(tailnet_knit node3 status --json | jq -c '{k: .self.nodeKey, a: .self.addresses}')
kill -TERM "$KNITD_PID_node3"
e2e_wait_for 10 sh -c "! kill -0 $KNITD_PID_node3" || e2e_fail "knitd on node3 did not stop"
tailnet_knitd_start node3
e2e_check "restarted knitd reconnects" e2e_wait_for 30 connected node3
after=$(tailnet_knit node3 status --json | jq -c '{k: .self.nodeKey, a: .self.addresses}')
e2e_expect "restarted knitd keeps its node key and addresses" "$before" "$after"
# Peers still hold the old process's session; the restarted knitd starts
# fresh handshakes with its saved peers at once, so it does not wait for
# their timers (about 15 s).
t0=$(date +%s)
e2e_check "and is reachable again within 10 s" e2e_wait_for 10 ping_ok node1 "${TIP[node3]}"
e2e_log "node3 reachable again $(($(date +%s) - t0)) s after its restart"

# ---- an unattended node joins by itself (containers, CI runners) ----
tailnet_host_add robot 7
printf '%s\n' "$NODE_KEY" >"$E2E_DIR/robot.key"
chmod 600 "$E2E_DIR/robot.key"
tailnet_knitd_start robot --login-server "$LOGIN_SERVER" --authkey-file "$E2E_DIR/robot.key" --hostname robot
robot_seen() { tailnet_knit node1 status --json | jq -e '.peers[] | select(.name == "robot")' >/dev/null; }
e2e_check "knitd run --login-server --authkey-file joins with no knit up" e2e_wait_for 30 robot_seen
e2e_check "and the unattended node is reachable" e2e_wait_for 10 ping_ok node1 "$(tailnet_knit robot ip -4)"

# ---- a Device made by hand with another's node key is no peer ----
# (Registration refuses such a key; kubectl does not.) Before, every agent
# took the second record for node1's key, and node1 became unreachable.
NODE1_DEV=$($K get devices -o json | jq -r '.items[] | select(.spec.hostname == "node1") | .metadata.name')
NODE3_DEV=$($K get devices -o json | jq -r '.items[] | select(.spec.hostname == "node3") | .metadata.name')
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"Device","metadata":{"name":"impostor"},"spec":{"tailnet":"default","hostname":"impostor","nodeKey":"%s"}}' \
	"$($K get device "$NODE1_DEV" -o jsonpath='{.spec.nodeKey}')" | $K apply -f - >/dev/null
impostor_ready() { [ -n "$($K get device impostor -o jsonpath='{.status.addresses[1]}')" ]; }
e2e_check "a hand-made Device with node1's node key gets addresses" e2e_wait_for 30 impostor_ready
# A later change peers see: once it arrives, the impostor's would have too.
$K patch device "$NODE3_DEV" --type merge -p '{"spec":{"hostname":"node3b"}}' >/dev/null
sees_node3b() { tailnet_knit node2 status --json | jq -e '.peers[] | select(.name == "node3b")' >/dev/null; }
e2e_check "a later change reaches node2" e2e_wait_for 10 sees_node3b
names_for_node1() { tailnet_knit node2 status --json | jq -r '.peers[] | select(.name == "node1" or .name == "impostor") | .name' | tr '\n' ' '; }
e2e_expect "node2 still has node1 under that key, not the impostor" "node1 " "$(names_for_node1)"
e2e_check "and reaches node1" ping_ok node2 "${TIP[node1]}"
$K delete device impostor >/dev/null
$K patch device "$NODE3_DEV" --type merge -p '{"spec":{"hostname":"node3"}}' >/dev/null

# ---- bad input to the coordination API changes nothing ----
ndev=$($K get devices -o name | wc -l)
"$KNIT_BUILD_DIR/test/e2e/tools/coord_probe" "$LOGIN_SERVER" "$CTRL" >"$E2E_DIR/probe.log" 2>&1
e2e_expect "garbage, oversized, replayed and tampered requests are refused" 0 "$?"
e2e_expect "and change nothing" "$ndev" "$($K get devices -o name | wc -l)"
grep PROBE "$E2E_DIR/probe.log" | sed 's/^/    /' >&2
e2e_end
