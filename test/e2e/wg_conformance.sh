#!/usr/bin/env bash
# knitd's standalone WireGuard held to what the Linux module (and
# wireguard-go) do, checked the way the kernel's selftest
# (tools/testing/selftests/wireguard/netns.sh) checks them, adapted to a
# userspace implementation: nothing sent while the link is down, a
# keepalive as soon as the device comes up and as soon as the private key
# is set, the private key reported clamped, an ICMP host unreachable for an
# address no peer owns, TCP, UDP and ping carried whole through a tunnel MTU
# of 34736 (knitd to knitd and to Debian's wireguard-go), at MTU 65535 the
# largest packet one datagram holds and frag-needed above it, the
# source address following a route change, the endpoint updated before the
# packet that roamed is delivered, and the TUN moved into another namespace
# (as the CNI plugin moves a pod's knit0): still served and carrying
# traffic there, and knitd gone only once the device is deleted, by hand
# or with the pod's namespace.
#
#   ns1: knitd wg1 ---- veth a 10.40.0.1 <-> 10.40.0.2 ---- ns2: knitd wg2
#                  ---- veth b 10.41.0.1 <-> 10.41.0.2 ----  10.42.0.2 on lo
#   tunnel 192.168.241.1/24 (wg1) <-> 192.168.241.2/24 (wg2), fd00:241::/64
#   and for a while 192.168.243.1/24 (wg1) <-> 192.168.243.3/24 (wireguard-go in ns2)
source "$(dirname "$0")/lib/common.sh"

e2e_begin wg_conformance
KNITD=$KNIT_BUILD_DIR/agent/knitd
e2e_need_bin "$KNITD" wg ip iperf3 python3 ping wireguard-go curl

NS1=knit-wgc-$$-1 NS2=knit-wgc-$$-2 NSP=knit-wgc-$$-pod
IF1=kc$$a IF2=kc$$b
P1=52101 P2=52102
SOCK=/var/run/wireguard
n1() { ip netns exec "$NS1" "$@"; }
n2() { ip netns exec "$NS2" "$@"; }
np() { ip netns exec "$NSP" "$@"; }

e2e_defer "ip netns del $NS1"
e2e_defer "ip netns del $NS2"
e2e_defer "ip netns del $NSP"
e2e_defer "rm -f $SOCK/$IF1.sock $SOCK/$IF2.sock"
for ns in "$NS1" "$NS2" "$NSP"; do
	ip netns add "$ns" || e2e_die "cannot create namespace $ns"
	ip -n "$ns" link set lo up
done
ip link add va$$ netns "$NS1" type veth peer name va$$ netns "$NS2" || e2e_die "veth a"
ip link add vb$$ netns "$NS1" type veth peer name vb$$ netns "$NS2" || e2e_die "veth b"
n1 ip addr add 10.40.0.1/24 dev va$$
n2 ip addr add 10.40.0.2/24 dev va$$
n1 ip addr add 10.41.0.1/24 dev vb$$
n2 ip addr add 10.41.0.2/24 dev vb$$
n2 ip addr add 10.42.0.2/32 dev lo
for ns in "$NS1" "$NS2"; do
	ip -n "$ns" link set va$$ up
	ip -n "$ns" link set vb$$ up
done
n1 ip route add 10.42.0.0/24 via 10.40.0.2
# ns2 speaks from 10.42.0.2 on either link, so it stays one address to ns1.
n2 ip route replace 10.40.0.0/24 dev va$$ src 10.42.0.2
n2 ip route replace 10.41.0.0/24 dev vb$$ src 10.42.0.2

umask 077
# An unclamped private key: low three bits set, top bit set, bit 254 clear.
python3 -c 'import base64,os; k=bytearray(os.urandom(32)); k[0]|=7; k[31]=(k[31]|128)&~64&255; print(base64.b64encode(bytes(k)).decode())' >"$E2E_DIR/1.key"
CLAMPED1=$(python3 -c 'import base64,sys; k=bytearray(base64.b64decode(sys.argv[1])); k[0]&=248; k[31]=(k[31]&127)|64; print(base64.b64encode(bytes(k)).decode())' "$(cat "$E2E_DIR/1.key")")
wg genkey >"$E2E_DIR/2.key"
PUB1=$(wg pubkey <"$E2E_DIR/1.key")
PUB2=$(wg pubkey <"$E2E_DIR/2.key")

# holds SECONDS CMD...: CMD stays true for that long (an absence, checked
# until a deadline rather than slept on).
holds() {
	local end=$(($(date +%s%N) / 1000000 + $(printf '%.0f' "$(echo "$1 * 1000" | bc)")))
	shift
	while [ $(($(date +%s%N) / 1000000)) -lt $end ]; do
		"$@" || return 1
		sleep 0.1
	done
}
gone() { ! kill -0 "$1" 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }
ping_ok() { "$@" >/dev/null 2>&1; }
tx_of() { # NS IF: bytes sent to the one peer
	ip netns exec "$1" wg show "$2" transfer | awk '{print $3}'
}
tx_above() { [ "$(tx_of "$1" "$2")" -gt "$3" ] 2>/dev/null; }
tx_is() { [ "$(tx_of "$1" "$2")" = "$3" ]; }
logged() { grep -q "$2" "$E2E_DIR/$1.log"; }
endpoint_is() { # NS IF EXPECTED
	local got
	got=$(ip netns exec "$1" wg show "$2" endpoints | awk '{print $2}')
	[ "$got" = "$3" ] || { echo "$2: endpoint $got, not $3" >"$E2E_DIR/last-endpoint"; return 1; }
}
endpoint_check() { # DESC NS IF EXPECTED [SECONDS]
	if e2e_wait_for "${5:-0}" endpoint_is "$2" "$3" "$4"; then
		e2e_pass "$1"
	else
		e2e_fail "$1: $(cat "$E2E_DIR/last-endpoint")"
		return 1
	fi
}

e2e_bg knitd1 n1 env KNIT_LOG_LEVEL=debug "$KNITD" wg -f --http-listen 127.0.0.1:9113 "$IF1"
PID1=$E2E_PID
e2e_bg knitd2 n2 env KNIT_LOG_LEVEL=debug "$KNITD" wg -f "$IF2"
PID2=$E2E_PID
e2e_wait_for 20 test -S "$SOCK/$IF1.sock" || e2e_die "knitd 1 did not start"
e2e_wait_for 20 test -S "$SOCK/$IF2.sock" || e2e_die "knitd 2 did not start"
n1 ip addr add 192.168.241.1/24 dev "$IF1"
n1 ip addr add fd00:241::1/64 dev "$IF1" nodad
n2 ip addr add 192.168.241.2/24 dev "$IF2"
n2 ip addr add fd00:241::2/64 dev "$IF2" nodad

# --- link down: nothing goes out; up: a keepalive at once (wg_open) -------
n1 wg set "$IF1" private-key "$E2E_DIR/1.key" listen-port $P1 \
	peer "$PUB2" endpoint 10.42.0.2:$P2 persistent-keepalive 1 allowed-ips 192.168.241.2/32,fd00:241::2/128 ||
	e2e_fail "wg set on knitd 1"
e2e_expect "private key reported clamped, as the kernel does" "$CLAMPED1" "$(n1 wg show "$IF1" private-key)"
e2e_expect "public key matches the clamped private key" "$PUB1" "$(n1 wg show "$IF1" private-key | wg pubkey)"
e2e_check "link down: nothing sent for 3 s despite persistent-keepalive 1" holds 3 tx_is "$NS1" "$IF1" 0
n1 ip link set "$IF1" up
e2e_check "link up: a keepalive (handshake) goes out at once" e2e_wait_for 3 tx_above "$NS1" "$IF1" 0

# --- keepalive as soon as the private key is set ---------------------------
n2 ip link set "$IF2" up
n2 wg set "$IF2" listen-port $P2 peer "$PUB1" endpoint 10.40.0.1:$P1 persistent-keepalive 1 \
	allowed-ips 192.168.241.1/32,fd00:241::1/128 || e2e_fail "wg set on knitd 2"
e2e_check "no private key: nothing sent" test "$(tx_of "$NS2" "$IF2")" = 0
n2 wg set "$IF2" private-key "$E2E_DIR/2.key"
e2e_check "private key set: a keepalive goes out at once" e2e_wait_for 2 tx_above "$NS2" "$IF2" 0
e2e_check "ping 1 -> 2" e2e_wait_for 15 ping_ok n1 ping -c 1 -W 1 192.168.241.2
e2e_check "ping 2 -> 1 (IPv6)" e2e_wait_for 5 ping_ok n2 ping -c 1 -W 1 fd00:241::1

# --- link down again: sessions dropped, silence; up: traffic again ---------
n1 ip link set "$IF1" down
e2e_check "knitd sees the link go down" e2e_wait_for 3 logged knitd1 "up=0"
T0=$(tx_of "$NS1" "$IF1")
e2e_check "link down with a live peer: nothing sent for 2.5 s" holds 2.5 tx_is "$NS1" "$IF1" "$T0"
n1 ip link set "$IF1" up
n1 ip addr add fd00:241::1/64 dev "$IF1" nodad 2>/dev/null # v6 addresses go with the link
e2e_check "link up again: ping 1 -> 2" e2e_wait_for 10 ping_ok n1 ping -c 1 -W 1 192.168.241.2

# --- ICMP unreachable for an address no peer owns --------------------------
e2e_check "ping to an unowned v4 address: host unreachable" \
	bash -c "ip netns exec $NS1 ping -c 1 -W 2 192.168.241.9 2>&1 | grep -q 'Destination Host Unreachable'"
e2e_check "ping to an unowned v6 address: address unreachable" \
	bash -c "ip netns exec $NS1 ping -c 1 -W 2 fd00:241::9 2>&1 | grep -qi 'Address unreachable'"

# --- source address follows a route change ---------------------------------
endpoint_check "2 sees 1 at its first source" "$NS2" "$IF2" 10.40.0.1:$P1 5
n1 ip route replace 10.42.0.0/24 via 10.41.0.2
endpoint_check "route via the other link: 2 sees 1's new source" "$NS2" "$IF2" 10.41.0.1:$P1 10 ||
	grep -h "source address\|route" "$E2E_DIR/knitd1.log" | tail -5 >&2

# --- roaming: the reply to a roamed packet goes to the new endpoint --------
n2 wg set "$IF2" peer "$PUB1" persistent-keepalive 0
n2 ip addr add 10.42.0.3/32 dev lo
n2 ip route replace 10.40.0.0/24 dev va$$ src 10.42.0.3
n2 ip route replace 10.41.0.0/24 dev vb$$ src 10.42.0.3
n2 ip addr del 10.42.0.2/32 dev lo
e2e_check "after 2 roams, its first ping is answered" ping_ok n2 ping -c 1 -W 3 192.168.241.1
endpoint_check "1 follows 2 to its new address" "$NS1" "$IF1" 10.42.0.3:$P2
n2 wg set "$IF2" peer "$PUB1" persistent-keepalive 1

# --- a tunnel MTU of 34736 (the selftest's big_mtu round): carried whole ---
n1 ip link set "$IF1" mtu 34736
n2 ip link set "$IF2" mtu 34736
too_big_is() { # NUMBER: knitd 1's count of packets dropped as too big
	n1 curl -s http://127.0.0.1:9113/metrics | grep -q "reason=\"too_big\"} $1\$"
}
# DF set on everything below: a "fragmentation needed" from knitd (the
# fallback for what it cannot carry) would fail the ping and the sendto.
e2e_check "MTU 34736: a full-size ping 1 -> 2 with DF" n1 ping -c 2 -i 0.2 -W 2 -M do -s 34708 192.168.241.2
e2e_check "MTU 34736: a full-size ping 2 -> 1 with DF (IPv6)" n2 ping -c 2 -i 0.2 -W 2 -M do -s 34688 fd00:241::1
e2e_bg iperf-srv n2 iperf3 -s -1 -B 192.168.241.2
e2e_wait_for 5 bash -c "ip netns exec $NS2 ss -ltn | grep -q ':5201 '"
e2e_check "MTU 34736: TCP 1 -> 2 (16 MB)" n1 timeout 30 iperf3 -c 192.168.241.2 -n 16M -Z
e2e_bg iperf-srv2 n1 iperf3 -s -1 -B 192.168.241.1
e2e_wait_for 5 bash -c "ip netns exec $NS1 ss -ltn | grep -q ':5201 '"
e2e_check "MTU 34736: TCP 2 -> 1 (16 MB)" n2 timeout 30 iperf3 -c 192.168.241.1 -n 16M -Z
# A receiver in NS waits for one datagram of SIZE; the sender (DF set
# unless told nodf) sends until it arrives.
udp_through() { # FROM-NS TO-NS DST SIZE [nodf]
	local from=$1 to=$2 dst=$3 size=$4 pmtu=2 rp i ok=1
	[ "${5:-}" = nodf ] && pmtu=0
	rm -f "$E2E_DIR/udp.ready" "$E2E_DIR/udp.got"
	ip netns exec "$to" python3 -c "import socket,sys; r=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM); r.bind((sys.argv[1], 9999)); open(sys.argv[3] + '/udp.ready', 'w').close(); r.settimeout(8); d=r.recv(65536); open(sys.argv[3] + '/udp.got', 'w').close(); sys.exit(0 if len(d)==int(sys.argv[2]) else 1)" "$dst" "$size" "$E2E_DIR" &
	rp=$!
	e2e_wait_for 3 test -e "$E2E_DIR/udp.ready"
	for i in $(seq 20); do
		ip netns exec "$from" python3 -c "import socket,sys
v6 = ':' in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, 23 if v6 else 10, int(sys.argv[3])) # *_MTU_DISCOVER: DO or DONT
s.sendto(b'x'*int(sys.argv[2]), (sys.argv[1], 9999))" "$dst" "$size" "$pmtu" 2>>"$E2E_DIR/udp_through.err" || break
		sleep 0.1 # a resend's pace, not a wait for a state
		test -e "$E2E_DIR/udp.got" && break
	done
	wait $rp && ok=0
	return $ok
}
e2e_check "MTU 34736: a 34708-byte UDP datagram 1 -> 2 with DF" udp_through "$NS1" "$NS2" 192.168.241.2 34708
e2e_check "MTU 34736: a 34688-byte UDP datagram 2 -> 1 with DF (IPv6)" udp_through "$NS2" "$NS1" fd00:241::1 34688
e2e_check "nothing dropped as too big at MTU 34736" too_big_is 0
# The large pool slots on knitd 1's /metrics: made on the first large
# packet (all 256), taken by the packets above, every one back once the
# traffic is through; both drop series (no_large_buffer) exported.
large_slots_ok() {
	n1 curl -s http://127.0.0.1:9113/metrics | awk '
		$1 == "knitd_large_packet_buffers" { made = $2 }
		$1 == "knitd_large_packet_buffers_in_use" { used = $2 }
		$1 == "knitd_large_packet_buffers_taken_total" { taken = $2 }
		/reason="no_large_buffer"/ { seen++ }
		END { exit !(made == 256 && used == 0 && taken >= 100 && seen == 2) }'
}
e2e_check "MTU 34736: large packets took large pool slots, all back (/metrics)" e2e_wait_for 5 large_slots_ok

# --- knitd <-> Debian's wireguard-go at MTU 34736 ----------------------------
# wireguard-go in ns2 as knitd 1's second peer, on its own tunnel subnet.
IF3=kc$$c P3=52103
e2e_defer "rm -f $SOCK/$IF3.sock"
wg genkey >"$E2E_DIR/3.key"
PUB3=$(wg pubkey <"$E2E_DIR/3.key")
e2e_bg wireguard-go n2 env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "$IF3"
e2e_wait_for 10 test -S "$SOCK/$IF3.sock" || e2e_fail "wireguard-go did not start"
n2 wg set "$IF3" private-key "$E2E_DIR/3.key" listen-port $P3 peer "$PUB1" endpoint 10.40.0.1:$P1 \
	allowed-ips 192.168.243.1/32
n2 ip addr add 192.168.243.3/24 dev "$IF3"
n2 ip link set "$IF3" mtu 34736 up
n1 wg set "$IF1" peer "$PUB3" endpoint 10.40.0.2:$P3 allowed-ips 192.168.243.3/32
n1 ip addr add 192.168.243.1/24 dev "$IF1"
e2e_check "wireguard-go: handshake and ping" e2e_wait_for 15 ping_ok n1 ping -c 1 -W 1 192.168.243.3
e2e_check "MTU 34736: a full-size ping knitd -> wireguard-go with DF" n1 ping -c 2 -i 0.2 -W 2 -M do -s 34708 192.168.243.3
e2e_check "MTU 34736: a full-size ping wireguard-go -> knitd with DF" n2 ping -c 2 -i 0.2 -W 2 -M do -s 34708 192.168.243.1
e2e_bg iperf-srv3 n2 iperf3 -s -1 -B 192.168.243.3
e2e_wait_for 5 bash -c "ip netns exec $NS2 ss -ltn | grep -q '192.168.243.3:5201 '"
e2e_check "MTU 34736: TCP knitd -> wireguard-go (16 MB)" n1 timeout 30 iperf3 -c 192.168.243.3 -n 16M -Z
e2e_bg iperf-srv4 n1 iperf3 -s -1 -B 192.168.243.1
e2e_wait_for 5 bash -c "ip netns exec $NS1 ss -ltn | grep -q '192.168.243.1:5201 '"
e2e_check "MTU 34736: TCP wireguard-go -> knitd (16 MB)" n2 timeout 30 iperf3 -c 192.168.243.1 -n 16M -Z
e2e_check "MTU 34736: a 34708-byte UDP datagram knitd -> wireguard-go with DF" \
	udp_through "$NS1" "$NS2" 192.168.243.3 34708
e2e_check "MTU 34736: a 34708-byte UDP datagram wireguard-go -> knitd with DF" \
	udp_through "$NS2" "$NS1" 192.168.243.1 34708
e2e_check "nothing dropped as too big with wireguard-go either" too_big_is 0
n1 wg set "$IF1" peer "$PUB3" remove
n2 ip link del "$IF3"

# --- MTU 65535: up to what one UDP datagram holds, then frag-needed ----------
# A data message must fit one IPv4 datagram: inner packets up to
# 65535 - 28 - 32 = 65475 bytes. Beyond, the ICMP fallback teaches the
# sender that size, as path MTU discovery wants.
n1 ip link set "$IF1" mtu 65535
n2 ip link set "$IF2" mtu 65535
e2e_check "MTU 65535: a 65475-byte ping (the largest one datagram holds) with DF" \
	n1 ping -c 2 -i 0.2 -W 2 -M do -s 65447 192.168.241.2
e2e_check "MTU 65535: a 65447-byte UDP datagram 1 -> 2 with DF" udp_through "$NS1" "$NS2" 192.168.241.2 65447
e2e_check "MTU 65535: a 65528-byte ping with DF gets frag-needed, mtu 65475" \
	bash -c "ip netns exec $NS1 ping -c 1 -W 2 -M do -s 65500 192.168.241.2 2>&1 | grep -Eq 'mtu ?= ?65475'"
too_big_counted() { n1 curl -s http://127.0.0.1:9113/metrics | grep 'reason="too_big"' | grep -q '} [1-9]'; }
e2e_check "oversize packets counted as dropped (reason too_big)" too_big_counted
e2e_check "MTU 65535: a 65500-byte UDP datagram 1 -> 2 gets through once the path MTU is known" \
	udp_through "$NS1" "$NS2" 192.168.241.2 65500 nodf
n1 ip link set "$IF1" mtu 1420
n2 ip link set "$IF2" mtu 1420

# --- the TUN moved into another namespace (a pod) --------------------------
n1 ip link set "$IF1" netns "$NSP" || e2e_fail "move $IF1 to $NSP"
np ip addr add 192.168.241.1/24 dev "$IF1"
np ip link set "$IF1" up
e2e_check "knitd keeps running after its TUN moved" holds 2.5 alive "$PID1"
e2e_check "its UAPI still answers" bash -c "ip netns exec $NS1 wg show $IF1 public-key | grep -qF '$PUB1'"
e2e_check "ping pod -> 2 through the moved TUN" e2e_wait_for 10 ping_ok np ping -c 1 -W 1 192.168.241.2
e2e_check "ping 2 -> pod" e2e_wait_for 5 ping_ok n2 ping -c 1 -W 1 192.168.241.1
# Section 5.4.6: padding to 16 is capped by the MTU, so a 1300-byte packet
# leaves as 1300 + 32 bytes (1332, 4 mod 16) only if knitd read the MTU
# of 1300 set in the pod, and as 1344 with the old 1420.
np ip link set "$IF1" mtu 1300
e2e_check "knitd reads the MTU set in the pod" e2e_wait_for 3 logged knitd1 "mtu=1300"
T0=$(tx_of "$NS1" "$IF1")
np ping -c 1 -W 2 -M do -s 1272 192.168.241.2 >/dev/null 2>&1
e2e_expect "an MTU set in the pod reaches knitd (padding capped at it)" 4 $((($(tx_of "$NS1" "$IF1") - T0) % 16))
np ip link del "$IF1"
e2e_check "knitd exits once the moved device is deleted" e2e_wait_for 5 gone "$PID1"
e2e_check "and removes its UAPI socket" bash -c "! test -e $SOCK/$IF1.sock"
e2e_check "knitd 2 unharmed" alive "$PID2"

# A pod deleted with the TUN inside: nothing of knitd's keeps its
# namespace alive, so the device goes with it, and so does knitd.
NSP2=knit-wgc-$$-pod2
e2e_defer "ip netns del $NSP2"
ip netns add "$NSP2" || e2e_die "cannot create namespace $NSP2"
n2 ip link set "$IF2" netns "$NSP2"
ip netns exec "$NSP2" ip link set "$IF2" mtu 1300 up
e2e_check "knitd 2 reads its TUN in the second pod" e2e_wait_for 3 logged knitd2 "mtu=1300"
ip netns del "$NSP2"
e2e_check "knitd exits when the pod namespace holding its TUN is deleted" e2e_wait_for 10 gone "$PID2"
e2e_check "no sanitizer reports in knitd's logs" sh -c "! grep -l 'Sanitizer' $E2E_DIR/knitd1.log $E2E_DIR/knitd2.log"

e2e_end
