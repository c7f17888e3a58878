#!/usr/bin/env bash
# NAT traversal end to end (issue 19): knitd agents behind NAT routers made
# with nftables (test/e2e/lib/nat.sh), a knit-relay on the "internet" as the
# relay map's one region, the operator and a real kube-apiserver.
#   - a, b behind easy (endpoint-independent) NAT: direct within 5 s of both
#     being online (the figure is printed), seen in knit status, in the
#     routers' conntrack (a UDP flow from router to router) and by tcpdump on
#     b's router;
#   - c behind hard (fully-random) NAT and a behind easy NAT: relay. Both
#     routers filter by address and port (conntrack), and c's mapping toward
#     a is a port no one learns (STUN saw another), so no punched path
#     exists: traffic goes through the relay and works;
#   - c and d both behind hard NAT: relay; iperf3 works; knit status says so;
#   - the direct a-b path broken (its mappings flushed with conntrack -F and
#     UDP between the routers dropped): traffic moves to the relay within
#     5 s, and back to direct once UDP passes again;
#   - knit ping reports each pong's path and stops once direct.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"
source "$(dirname "$0")/lib/nat.sh"

RELAY=$KNIT_BUILD_DIR/relay/knit-relay

e2e_begin nat
e2e_defer "[ \$E2E_FAILED -eq 0 ] || { mkdir -p '$E2E_DIR.logs' && cp '$E2E_DIR'/*.log '$E2E_DIR.logs/' 2>/dev/null; e2e_log \"logs kept in $E2E_DIR.logs\"; }"
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" "$RELAY" jq iperf3 ping conntrack nft tcpdump
tailnet_kube_up

NET=$((20 + ($$ + 37) % 200))
tailnet_net_up $NET
tailnet_operator_start op-1

# The relay: a host on the internet, plain TCP (tls:false), STUN on 3478.
tailnet_relay_start relay1 1
RIP=10.$NET.0.11
tailnet_relay_map "{\"regions\":[{\"id\":1,\"code\":\"test\",\"name\":\"Test\",\"nodes\":[{\"name\":\"1a\",\"hostName\":\"$RIP\",\"ipv4\":\"$RIP\",\"relayPort\":8080,\"stunPort\":3478,\"tls\":false}]}]}"

KEY=$(tailnet_authkey nodes '{"reusable":true}') || e2e_die "no auth key"
CTRL=$($K get tailnet default -o jsonpath='{.status.controlKey}')

nat_router_add ra 2 easy
nat_router_add rb 3 easy
nat_router_add rc 4 hard
nat_router_add rd 5 hard
nat_host_add a ra 10
nat_host_add b rb 10
nat_host_add c rc 10
nat_host_add d rd 10

declare -A TIP
join() { # join NAME: knitd up and in the tailnet
	tailnet_knitd_start "$1" --http-listen 127.0.0.1:9102
	tailnet_knit "$1" up --authkey "$KEY" --login-server "$LOGIN_SERVER" --server-key "$CTRL" --hostname "$1" >/dev/null ||
		e2e_die "knit up on $1"
	TIP[$1]=$(tailnet_knit "$1" ip -4)
}
# path NAME PEER: the kind of path NAME's knitd uses to PEER now.
path() { tailnet_knit "$1" status --json | jq -r --arg p "$2" '.peers[] | select(.name == $p) | .path.kind // "none"'; }
path_is() { [ "$(path "$1" "$2")" = "$3" ]; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
metric() { in_ns "$1" curl -sf --max-time 3 http://127.0.0.1:9102/metrics | awk -v s="$2" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'; }

# --- easy + easy: direct ----------------------------------------------------
join a
T0=$(now_ms)
join b
e2e_check "a and b see each other in the netmap" e2e_wait_for 20 sh -c "$KNIT --socket $E2E_DIR/a/knitd.sock status --json | jq -e '.peers[] | select(.name == \"b\")'"
e2e_check "behind easy NAT: a's path to b is direct within 5 s of both online" e2e_wait_for 5 path_is a b direct
T1=$(now_ms)
e2e_check "and b's to a" e2e_wait_for 5 path_is b a direct
e2e_log "figure: direct path behind easy NAT $((T1 - T0)) ms after the second agent started"
e2e_check "a pings b over the tailnet" e2e_wait_for 10 in_ns a ping -c1 -W1 "${TIP[b]}"
e2e_check "knit status shows 'direct' and b's router's address" sh -c "$KNIT --socket $E2E_DIR/a/knitd.sock status | grep -E '^${TIP[b]} .*direct 10\.$NET\.0\.13:'"
router_flow() { in_ns ra conntrack -L -p udp 2>/dev/null | grep -q "src=192.168.2.10 dst=10.$NET.0.13 "; }
e2e_check "ra's conntrack holds a UDP flow from a straight to b's router" router_flow
# tcpdump on b's router: the tunnel's packets come from a's router's
# address, not the relay's.
in_ns rb timeout 8 tcpdump -l -n -i eth0 -c 4 "udp and src host 10.$NET.0.12 and dst host 10.$NET.0.13" \
	>"$E2E_DIR/tcpdump-rb.txt" 2>"$E2E_DIR/tcpdump-rb.err" &
TCPDUMP=$!
e2e_wait_for 5 grep -q "listening on" "$E2E_DIR/tcpdump-rb.err"
in_ns a ping -c4 -i0.2 -W1 "${TIP[b]}" >/dev/null 2>&1
wait $TCPDUMP 2>/dev/null
e2e_expect "tcpdump on b's router sees the tunnel's UDP straight from a's router" 4 \
	"$(grep -c "IP 10.$NET.0.12\.[0-9]* > 10.$NET.0.13\.[0-9]*: UDP" "$E2E_DIR/tcpdump-rb.txt")"
out=$(tailnet_knit a ping -c 5 b 2>&1)
e2e_check "knit ping a->b answers over the direct path and stops" grep -q "via 10.$NET.0.13:" <<<"$out"
e2e_expect "one pong, as the path is already direct" 1 "$(grep -c '^pong' <<<"$out")"

# --- hard + easy, hard + hard: relay --------------------------------------------
join c
join d
e2e_check "c (hard NAT) <-> a (easy NAT): through the relay" e2e_wait_for 15 path_is c a relay
e2e_check "c pings a through the relay" e2e_wait_for 10 in_ns c ping -c1 -W1 "${TIP[a]}"
sleep 3 # would a punched path appear? (it cannot: see the top)
e2e_check "c <-> a stays on the relay (port-dependent filtering, unpredictable port)" path_is c a relay
e2e_check "c <-> d (both hard NAT): relay" e2e_wait_for 15 path_is c d relay
e2e_check "and d's side too" e2e_wait_for 5 path_is d c relay
e2e_check "knit status on c says relay for d" sh -c "$KNIT --socket $E2E_DIR/c/knitd.sock status | grep -E '^${TIP[d]} .*relay 1 test'"
in_ns d iperf3 -s -1 -B "${TIP[d]}" >"$E2E_DIR/iperf-s.log" 2>&1 &
IPERF=$!
e2e_wait_for 5 in_ns d sh -c "ss -ltn | grep -q ':5201 '"
e2e_check "iperf3 c -> d through the relay" sh -c "ip netns exec $(ns_name c) iperf3 -c ${TIP[d]} -t 3 -J >$E2E_DIR/iperf.json"
wait $IPERF 2>/dev/null
e2e_log "figure: iperf3 through the relay $(jq -r '.end.sum_received.bits_per_second / 1e6 | floor' "$E2E_DIR/iperf.json" 2>/dev/null) Mbit/s"
e2e_check "c's knitd counted relay bytes" [ "$(metric c 'knitd_relay_bytes_total{direction="tx"}' | cut -d. -f1)" -gt 1000000 ]
out=$(tailnet_knit c ping -c 2 d 2>&1)
e2e_log "knit ping c->d: $out"
e2e_check "knit ping c->d reports the relay" grep -q "via relay 1" <<<"$out"

# --- a direct path breaks, and comes back -----------------------------------------------
in_ns a ping -i 0.2 -w 14 "${TIP[b]}" >"$E2E_DIR/ping-ab.log" 2>&1 &
PINGER=$!
in_ns ra nft insert rule ip knitnat forward iifname eth0 ip saddr 10.$NET.0.13 meta l4proto udp drop
in_ns ra nft insert rule ip knitnat forward iifname lan ip daddr 10.$NET.0.13 meta l4proto udp drop
nat_flush ra
nat_flush rb
T0=$(now_ms)
e2e_check "path broken (mappings flushed, UDP between the routers dropped): a moves b to the relay within 5 s" e2e_wait_for 5 path_is a b relay
e2e_log "figure: fell back to the relay $(($(now_ms) - T0)) ms after the break"
e2e_check "b moves a to the relay too" e2e_wait_for 6 path_is b a relay
e2e_check "a still reaches b meanwhile" e2e_wait_for 5 in_ns a ping -c1 -W1 "${TIP[b]}"
in_ns ra nft flush chain ip knitnat forward
in_ns ra nft add rule ip knitnat forward ct state established,related accept
in_ns ra nft add rule ip knitnat forward iifname lan oifname eth0 accept
T0=$(now_ms)
e2e_check "UDP passes again: back to direct" e2e_wait_for 15 path_is a b direct
e2e_log "figure: back to direct $(($(now_ms) - T0)) ms after UDP passed again"
wait $PINGER 2>/dev/null
e2e_log "ping a->b across the break: $(tail -2 "$E2E_DIR/ping-ab.log" | head -1)"
e2e_check "the ping across the break lost under a third of its packets" \
	awk '/packet loss/ { gsub("%", "", $6); exit !($6 + 0 < 34) }' "$E2E_DIR/ping-ab.log"
DOWN=$(metric a 'knitd_path_changes_total{to="relay"}' | cut -d. -f1)
UP=$(metric a 'knitd_path_changes_total{to="direct"}' | cut -d. -f1)
e2e_check "a counted the fallback and both upgrades ($DOWN to relay, $UP to direct)" [ "$DOWN" -ge 1 -a "$UP" -ge 2 ]

for n in a b c d; do
	e2e_check "no sanitizer report from knitd on $n" sh -c "! grep -q 'ERROR: \\(Address\\|Leak\\)Sanitizer\\|runtime error' '$E2E_DIR/knitd-$n.log'"
done
e2e_end
