#!/usr/bin/env bash
# knitd's standalone WireGuard (`knitd wg`) against Debian's wireguard-go,
# both configured with wg(8), in two network namespaces on a veth: pings
# both ways over IPv4 and IPv6, iperf3 both ways, PSK, wg show, persistent
# keepalives on the wire, restarts of either side, endpoint roaming of
# either side, and clean exits (SIGTERM, ip link del).
source "$(dirname "$0")/lib/common.sh"

e2e_begin wg_interop
KNITD=$KNIT_BUILD_DIR/agent/knitd
e2e_need_bin "$KNITD" wireguard-go wg ip iperf3 tcpdump python3

NSA=knit-wg-$$-a NSB=knit-wg-$$-b
IFA=kw$$a IFB=kw$$b
VA=kv$$a VB=kv$$b
UA=192.168.201.1 UB=192.168.201.2
PA=51820 PB=51821
SOCK=/var/run/wireguard
inA() { ip netns exec "$NSA" "$@"; }
inB() { ip netns exec "$NSB" "$@"; }

e2e_defer "ip netns del $NSA"
e2e_defer "ip netns del $NSB"
e2e_defer "rm -f $SOCK/$IFA.sock $SOCK/$IFB.sock"
ip netns add "$NSA" && ip netns add "$NSB" || e2e_die "cannot create namespaces"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB" || e2e_die "veth"
inA ip addr add $UA/24 dev "$VA"
inB ip addr add $UB/24 dev "$VB"
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
inA ip link set "$VA" up
inB ip link set "$VB" up

umask 077
wg genkey >"$E2E_DIR/a.key"
wg genkey >"$E2E_DIR/b.key"
wg genpsk >"$E2E_DIR/psk"
PUBA=$(wg pubkey <"$E2E_DIR/a.key")
PUBB=$(wg pubkey <"$E2E_DIR/b.key")

KNITD_RUNS=0
start_knitd() {
	KNITD_RUNS=$((KNITD_RUNS + 1))
	# Crypt workers here (the default on two CPUs has none; wg_knitd runs
	# that): both ways of running the jobs carry traffic in the e2e tests.
	e2e_bg "knitd.$KNITD_RUNS" ip netns exec "$NSA" "$KNITD" wg -f --workers 2 "$IFA"
	KNITD_PID=$E2E_PID
	e2e_wait_for 10 test -S "$SOCK/$IFA.sock" || e2e_die "knitd did not open its UAPI socket"
	inA wg set "$IFA" private-key "$E2E_DIR/a.key" listen-port $PA \
		peer "$PUBB" preshared-key "$E2E_DIR/psk" endpoint "$UB:$PB" allowed-ips 10.77.0.2/32,fd77::2/128 ||
		e2e_fail "wg set on knitd"
	inA ip addr add 10.77.0.1/24 dev "$IFA"
	inA ip addr add fd77::1/64 dev "$IFA" nodad
	inA ip link set "$IFA" up
}

GO_RUNS=0
start_wggo() {
	GO_RUNS=$((GO_RUNS + 1))
	e2e_bg "wireguard-go.$GO_RUNS" ip netns exec "$NSB" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
		wireguard-go -f "$IFB"
	GO_PID=$E2E_PID
	e2e_wait_for 10 test -S "$SOCK/$IFB.sock" || e2e_die "wireguard-go did not open its UAPI socket"
	inB wg set "$IFB" private-key "$E2E_DIR/b.key" listen-port $PB \
		peer "$PUBA" preshared-key "$E2E_DIR/psk" endpoint "$UA:$PA" allowed-ips 10.77.0.1/32,fd77::1/128 ||
		e2e_fail "wg set on wireguard-go"
	inB ip addr add 10.77.0.2/24 dev "$IFB"
	inB ip addr add fd77::2/64 dev "$IFB" nodad
	inB ip link set "$IFB" up
}

ping_ok() { # NS-function ADDR
	local run=$1 addr=$2
	$run ping -c 1 -W 1 "$addr" >/dev/null 2>&1
}

iperf_bps() { # client-function server-addr [-R]
	local run=$1 addr=$2
	shift 2
	$run iperf3 -c "$addr" -t 3 -J "$@" 2>/dev/null |
		python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))' 2>/dev/null ||
		echo 0
}

start_knitd
start_wggo

e2e_check "handshake and ping knitd -> wireguard-go (IPv4)" e2e_wait_for 15 ping_ok inA 10.77.0.2
e2e_check "ping wireguard-go -> knitd (IPv4)" inB ping -c 3 -i 0.2 -W 2 10.77.0.1
e2e_check "ping knitd -> wireguard-go (IPv6 inside)" inA ping -6 -c 3 -i 0.2 -W 2 fd77::2
e2e_check "ping wireguard-go -> knitd (IPv6 inside)" inB ping -6 -c 3 -i 0.2 -W 2 fd77::1
e2e_check "a 1400-byte ping fits the tunnel" inA ping -c 2 -i 0.2 -W 2 -s 1372 -M do 10.77.0.2

# wg show on knitd's interface: peer, PSK, handshake time, counters.
e2e_expect "wg show lists the peer" "$PUBB" "$(inA wg show "$IFA" peers)"
e2e_expect "wg show lists knitd's public key" "$PUBA" "$(inA wg show "$IFA" public-key)"
e2e_expect "wg show shows the PSK" "$PUBB	$(cat "$E2E_DIR/psk")" "$(inA wg show "$IFA" preshared-keys)"
e2e_expect "wg show shows the listen port" "$PA" "$(inA wg show "$IFA" listen-port)"
HS=$(inA wg show "$IFA" latest-handshakes | awk '{print $2}')
e2e_check "wg show has a latest handshake ($HS)" test "${HS:-0}" -gt $(($(date +%s) - 60))
read -r _ RX TX < <(inA wg show "$IFA" transfer)
e2e_check "wg show counts bytes received ($RX) and sent ($TX)" test "${RX:-0}" -gt 500 -a "${TX:-0}" -gt 500
e2e_check "wg show's full output names the endpoint" sh -c "ip netns exec $NSA wg show $IFA | grep -q 'endpoint: $UB:$PB'"

# Throughput both ways (TCP inside).
e2e_bg iperf3-b ip netns exec "$NSB" iperf3 -s
e2e_bg iperf3-a ip netns exec "$NSA" iperf3 -s
e2e_wait_for 5 sh -c "ip netns exec $NSB ss -ltn | grep -q ':5201 '"
e2e_wait_for 5 sh -c "ip netns exec $NSA ss -ltn | grep -q ':5201 '"
BPS=$(iperf_bps inA 10.77.0.2)
e2e_log "iperf3 knitd -> wireguard-go: $BPS bit/s"
e2e_check "iperf3 TCP knitd -> wireguard-go" test "$BPS" -gt 10000000
BPS=$(iperf_bps inB 10.77.0.1)
e2e_log "iperf3 wireguard-go -> knitd: $BPS bit/s"
e2e_check "iperf3 TCP wireguard-go -> knitd" test "$BPS" -gt 10000000
BPS=$(iperf_bps inA fd77::2 -R)
e2e_log "iperf3 over IPv6 inside, reversed: $BPS bit/s"
e2e_check "iperf3 TCP over IPv6 inside (reverse mode)" test "$BPS" -gt 10000000

# Persistent keepalive: 32-byte transport messages (UDP length 40) from
# knitd once a second while nothing else flows.
inA wg set "$IFA" peer "$PUBB" persistent-keepalive 1
e2e_expect "wg show shows the keepalive interval" "$PUBB	1" "$(inA wg show "$IFA" persistent-keepalive)"
inB timeout 4 tcpdump -l -n -i "$VB" "udp and src host $UA and udp[4:2] = 40" >"$E2E_DIR/ka.txt" 2>"$E2E_DIR/ka.err" &
TCPDUMP=$!
e2e_wait_for 5 grep -q listening "$E2E_DIR/ka.err"
wait $TCPDUMP
KA=$(grep -c 'UDP, length 32' "$E2E_DIR/ka.txt")
e2e_check "persistent keepalives on the wire ($KA in 4 s)" test "$KA" -ge 2
inA wg set "$IFA" peer "$PUBB" persistent-keepalive 0

# Restart wireguard-go: a fresh peer, a new handshake.
e2e_kill "$GO_PID"
e2e_wait_for 5 sh -c "! ip -n $NSB link show $IFB" >/dev/null
OLDHS=$(inA wg show "$IFA" latest-handshakes | awk '{print $2}')
sleep 1 # handshake times have one-second resolution
start_wggo
e2e_check "after wireguard-go restarts: ping knitd -> wireguard-go" e2e_wait_for 20 ping_ok inA 10.77.0.2
e2e_check "and back" inB ping -c 2 -i 0.2 -W 2 10.77.0.1
NEWHS=$(inA wg show "$IFA" latest-handshakes | awk '{print $2}')
e2e_check "knitd made a new handshake ($OLDHS -> $NEWHS)" test "${NEWHS:-0}" -gt "${OLDHS:-0}"

# Restart knitd: wireguard-go still holds the old session.
e2e_kill "$KNITD_PID"
start_knitd
e2e_check "after knitd restarts: ping knitd -> wireguard-go" e2e_wait_for 20 ping_ok inA 10.77.0.2
e2e_check "and back" inB ping -c 2 -i 0.2 -W 2 10.77.0.1

# Roaming (section 6.5): wireguard-go's side moves to a new address; knitd
# follows the authenticated packets and wg show says so. (wireguard-go keeps
# sending from a vanished address until its endpoint is set again.)
inA sysctl -qw "net.ipv4.conf.$VA.promote_secondaries=1"
inB sysctl -qw "net.ipv4.conf.$VB.promote_secondaries=1"
inB ip addr add 192.168.201.3/24 dev "$VB"
inB ip addr del $UB/24 dev "$VB"
UB=192.168.201.3
inB wg set "$IFB" peer "$PUBA" endpoint "$UA:$PA"
e2e_check "wireguard-go moved: ping wireguard-go -> knitd" e2e_wait_for 15 ping_ok inB 10.77.0.1
e2e_check "knitd answers at the new address" inA ping -c 2 -i 0.2 -W 2 10.77.0.2
e2e_expect "knitd's wg show follows the roaming peer" "$PUBB	$UB:$PB" "$(inA wg show "$IFA" endpoints)"
# knitd's side moves; wireguard-go learns it from knitd's packets.
inA ip addr add 192.168.201.4/24 dev "$VA"
inA ip addr del $UA/24 dev "$VA"
UA=192.168.201.4
e2e_check "knitd moved: ping knitd -> wireguard-go" e2e_wait_for 15 ping_ok inA 10.77.0.2
e2e_check "wireguard-go answers at knitd's new address" inB ping -c 2 -i 0.2 -W 2 10.77.0.1
e2e_expect "wireguard-go's wg show follows knitd" "$PUBA	$UA:$PA" "$(inB wg show "$IFB" endpoints)"
# A port change (a NAT rebinding): knitd follows that too.
inB wg set "$IFB" listen-port $((PB + 10))
PB=$((PB + 10))
e2e_check "wireguard-go changed port: ping wireguard-go -> knitd" e2e_wait_for 15 ping_ok inB 10.77.0.1
e2e_expect "knitd's wg show follows the new port" "$PUBB	$UB:$PB" "$(inA wg show "$IFA" endpoints)"

# Clean exits: SIGTERM removes the socket and the device.
kill -TERM "$KNITD_PID"
e2e_check "knitd exits on SIGTERM" e2e_wait_for 10 sh -c "! kill -0 $KNITD_PID 2>/dev/null"
wait "$KNITD_PID" 2>/dev/null
e2e_expect "knitd's exit status after SIGTERM" 0 "$?"
e2e_check "knitd removed its UAPI socket" test ! -e "$SOCK/$IFA.sock"
e2e_check "knitd's TUN device is gone" sh -c "! ip -n $NSA link show $IFA 2>/dev/null"

# Deleting the interface stops it, as it does wireguard-go.
start_knitd
e2e_check "restarted knitd handshakes again" e2e_wait_for 20 ping_ok inA 10.77.0.2
inA ip link del "$IFA"
e2e_check "knitd exits when its interface is deleted" e2e_wait_for 10 sh -c "! kill -0 $KNITD_PID 2>/dev/null"
wait "$KNITD_PID" 2>/dev/null
e2e_expect "knitd's exit status after ip link del" 0 "$?"
e2e_check "and removed its UAPI socket" test ! -e "$SOCK/$IFA.sock"

# Sanitizer builds: nothing leaked or overflowed in any run.
e2e_check "no sanitizer reports in knitd's logs" sh -c "! grep -l 'Sanitizer' $E2E_DIR/knitd.*.log"
e2e_end
