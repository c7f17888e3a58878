#!/usr/bin/env bash
# knit netcheck behind real NATs (test/e2e/lib/nat.sh): two knit-relay
# instances, each with its STUN server, on the test's "internet" (two relay
# regions in a --relay-map file); one host behind each kind of router.
#   easy (endpoint-independent): UDP works, the mapping does not vary, the
#     reflexive address is the router's WAN address;
#   hard (fully-random): the one socket is seen at two different ports;
#   noudp: no UDP answer, both relays reached over TCP with latencies.
# The nearest region is the one with the lowest latency and moves when a
# relay dies; coturn's turnutils_stunclient, behind the easy router, gets
# the router's address from knit-relay's STUN server.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/tailnet.sh"
source "$(dirname "$0")/lib/nat.sh"

RELAY=$KNIT_BUILD_DIR/relay/knit-relay

e2e_begin nat_netcheck
e2e_need_bin "$RELAY" "$KNIT" jq nft conntrack turnutils_stunclient curl

tailnet_net_up $((20 + ($$ + 11) % 200))
N=$TAILNET_NET
D=$E2E_DIR

# Relays r1 (10.N.0.11) and r2 (10.N.0.12), plain TCP on 80, STUN on 3478.
for i in 1 2; do
	tailnet_host_add "r$i" "$i"
	e2e_bg "relay-r$i" ip netns exec "$(ns_name "r$i")" "$RELAY" --key-file "$D/r$i.key" \
		--listen "0.0.0.0:80" --stun-addr 0.0.0.0 --stun-port 3478 --http-listen 127.0.0.1:9090
	eval "R${i}_PID=$E2E_PID"
done
for i in 1 2; do
	e2e_wait_for 10 in_ns "r$i" curl -sf 127.0.0.1:9090/healthz || e2e_die "relay r$i did not start: $(tail -3 "$D/relay-r$i.log")"
done
cat >"$D/map.json" <<EOF
{"regions":[
 {"id":1,"code":"one","name":"Region one","nodes":[{"name":"1a","hostName":"10.$N.0.11","relayPort":80,"tls":false}]},
 {"id":2,"code":"two","nodes":[{"name":"2a","hostName":"r2.invalid","ipv4":"10.$N.0.12","relayPort":80,"tls":false}]}]}
EOF

nat_router_add easy 3 easy
nat_router_add hard 4 hard
nat_router_add noudp 5 noudp
nat_host_add h-easy easy 2
nat_host_add h-hard hard 2
nat_host_add h-noudp noudp 2

netcheck() { # HOST [FLAGS] → report JSON in $D/HOST.json
	local h=$1
	shift
	in_ns "$h" "$KNIT" netcheck --relay-map "$D/map.json" --timeout 2 --json "$@" >"$D/$h.json" 2>"$D/$h.err"
}
q() { jq -r "$2" "$D/$1.json"; }

# ---- easy NAT ----
e2e_check "netcheck behind the easy NAT exits 0" netcheck h-easy
e2e_expect "easy: UDP works" true "$(q h-easy .udp)"
e2e_expect "easy: the reflexive address is the router's WAN address" "10.$N.0.13" "$(q h-easy .ipv4 | cut -d: -f1)"
e2e_expect "easy: the mapping does not vary by destination" false "$(q h-easy .mappingVariesByDestIP)"
e2e_expect "easy: both STUN servers answered" 2 "$(q h-easy '[.regions[].nodes[].stun[] | select(.answered)] | length')"
e2e_expect "easy: both saw the same mapping" 1 "$(q h-easy '[.regions[].nodes[].stun[].mapped] | unique | length')"
e2e_expect "easy: both relays reached over TCP" true "$(q h-easy '[.regions[].nodes[].relay.reached] | all')"
e2e_expect "easy: the nearest region is the one with the lowest latency" \
	"$(q h-easy '.regions | min_by(.latencyMs) | .id')" "$(q h-easy .preferredRegion)"
in_ns h-easy "$KNIT" netcheck --relay-map "$D/map.json" --timeout 2 >"$D/h-easy.txt" 2>&1
e2e_log "$(cat "$D/h-easy.txt")"
e2e_check "easy: the human report reads like tailscale netcheck's" \
	grep -Pq "^\t\* UDP: true$" "$D/h-easy.txt"
e2e_check "easy: ... with the reflexive IPv4 address" grep -q "IPv4: yes, 10.$N.0.13:" "$D/h-easy.txt"
e2e_check "easy: ... and each region's latency" grep -Pq "^\t\t- two: [0-9.]+ms \(relay [0-9.]+ms over TCP\)" "$D/h-easy.txt"

# ---- hard NAT ----
e2e_check "netcheck behind the hard NAT exits 0" netcheck h-hard
e2e_expect "hard: UDP works" true "$(q h-hard .udp)"
e2e_expect "hard: the reflexive address is the router's" "10.$N.0.14" "$(q h-hard .ipv4 | cut -d: -f1)"
e2e_expect "hard: the mapping varies by destination" true "$(q h-hard .mappingVariesByDestIP)"
e2e_expect "hard: two servers, two mapped ports" 2 "$(q h-hard '[.regions[].nodes[].stun[].mapped] | unique | length')"
e2e_check "hard: the router's conntrack holds the two mappings too" \
	sh -c "[ \$(ip netns exec $(ns_name hard) conntrack -L -p udp --dport 3478 2>/dev/null | grep -c 'dport=3478') -ge 2 ]"

# ---- no UDP ----
e2e_check "netcheck behind the UDP-blocking NAT exits 0" netcheck h-noudp
e2e_expect "noudp: UDP does not work" false "$(q h-noudp .udp)"
e2e_expect "noudp: no reflexive address" null "$(q h-noudp .ipv4)"
e2e_expect "noudp: mapping unknown" null "$(q h-noudp .mappingVariesByDestIP)"
e2e_expect "noudp: both relays reached over TCP" true "$(q h-noudp '[.regions[].nodes[].relay.reached] | all')"
e2e_expect "noudp: each with a latency" 2 "$(q h-noudp '[.regions[] | select(.relayMs > 0 and .latencyMs == .relayMs)] | length')"
e2e_check "noudp: a nearest region by TCP" sh -c "[ \"$(q h-noudp .preferredRegion)\" = 1 ] || [ \"$(q h-noudp .preferredRegion)\" = 2 ]"

# ---- a third-party STUN client against knit-relay, behind the easy NAT ----
in_ns h-easy turnutils_stunclient -p 3478 "10.$N.0.11" >"$D/turnutils.out" 2>&1
e2e_check "turnutils_stunclient behind the easy NAT gets the router's address from knit-relay" \
	grep -q "UDP reflexive addr: 10.$N.0.13:" "$D/turnutils.out"

# ---- a relay dies ----
e2e_kill "$R2_PID"
e2e_check "r2 gone: netcheck still exits 0" netcheck h-easy
e2e_expect "r2 gone: its relay is unreachable" false "$(q h-easy '.regions[1].nodes[0].relay.reached')"
e2e_check "r2 gone: ... and says why" sh -c "[ -n \"\$(jq -r '.regions[1].nodes[0].relay.error' '$D/h-easy.json')\" ]"
e2e_expect "r2 gone: the nearest region is one" 1 "$(q h-easy .preferredRegion)"
e2e_expect "r2 gone: mapping unknown with one STUN server" null "$(q h-easy .mappingVariesByDestIP)"

# ---- bad input ----
echo '{"regions":[{"id":0,"code":"x","nodes":[]}]}' >"$D/bad.json"
in_ns h-easy "$KNIT" netcheck --relay-map "$D/bad.json" >"$D/bad.out" 2>&1
e2e_expect "a bad relay map: exit 1" 1 $?
e2e_check "... naming the field" grep -q "relayMap.regions\[0\].id" "$D/bad.out"
"$KNIT" --socket "$D/none.sock" netcheck >"$D/nosock.out" 2>&1
e2e_expect "no knitd and no --relay-map: exit 1" 1 $?
e2e_check "... saying knitd is not running" grep -q "knitd is not running" "$D/nosock.out"
"$KNIT" netcheck --timeout 0 >/dev/null 2>&1
e2e_expect "a bad --timeout: exit 2" 2 $?

e2e_check "no sanitizer report from the relays" sh -c "! grep -q 'ERROR: \\(Address\\|Leak\\)Sanitizer\\|runtime error' $D/relay-r*.log"
e2e_end
