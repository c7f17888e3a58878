#!/usr/bin/env bash
# knitd's standalone WireGuard against itself: started as a daemon
# (`knitd wg IFNAME`, no -f) and by wg-quick through knit-wg, over an IPv6
# underlay; pings and iperf3 both ways; then bad input - random and
# malformed datagrams, truncated handshakes, and a flood of initiations
# with valid MAC1s - which must not crash it, leak, or keep a legitimate
# new peer from connecting (through the cookie path: the flood puts it
# under load, and the newcomer has to come back with a MAC2).
source "$(dirname "$0")/lib/common.sh"

e2e_begin wg_knitd
KNITD=$KNIT_BUILD_DIR/agent/knitd
AGENT_DIR=$KNIT_BUILD_DIR/agent
e2e_need_bin "$KNITD" "$AGENT_DIR/knit-wg" wg wg-quick ip iperf3 python3 curl

NSA=knit-wg-$$-a NSB=knit-wg-$$-b
IFA=kw$$a IFB=kw$$b IFC=kw$$c
VA=kv$$a VB=kv$$b
UA=192.168.202.1 UB=192.168.202.2 UA6=fd02::1 UB6=fd02::2
PA=51830 PB=51831 PC=51833
SOCK=/var/run/wireguard
inA() { ip netns exec "$NSA" "$@"; }
inB() { ip netns exec "$NSB" "$@"; }

e2e_defer "ip netns del $NSA"
e2e_defer "ip netns del $NSB"
e2e_defer "rm -f $SOCK/$IFA.sock $SOCK/$IFB.sock $SOCK/$IFC.sock"
ip netns add "$NSA" && ip netns add "$NSB" || e2e_die "cannot create namespaces"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB" || e2e_die "veth"
inA ip addr add $UA/24 dev "$VA"
inB ip addr add $UB/24 dev "$VB"
inA ip addr add $UA6/64 dev "$VA" nodad
inB ip addr add $UB6/64 dev "$VB" nodad
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
inA ip link set "$VA" up
inB ip link set "$VB" up

umask 077
for k in a b c; do wg genkey >"$E2E_DIR/$k.key"; done
wg genpsk >"$E2E_DIR/psk"
PUBA=$(wg pubkey <"$E2E_DIR/a.key")
PUBB=$(wg pubkey <"$E2E_DIR/b.key")
PUBC=$(wg pubkey <"$E2E_DIR/c.key")

# The pid of the knitd serving IFNAME in a namespace (daemons are not our children).
knitd_pid() { # NS IFNAME
	local p
	for p in $(ip netns pids "$1"); do
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = knitd ] || [ "$(cat /proc/"$p"/comm 2>/dev/null)" = knit-wg ] || continue
		tr '\0' ' ' <"/proc/$p/cmdline" | grep -q " $2 *$" && { echo "$p"; return 0; }
	done
	return 1
}
gone() { ! kill -0 "$1" 2>/dev/null; }
ping_ok() { "$@" >/dev/null 2>&1; }

# A: `knitd wg IFNAME` daemonizes once the device and socket are ready.
# Cookies are demanded as soon as any handshake waits (tests only).
ip netns exec "$NSA" env KNIT_LOG_LEVEL=info KNIT_WG_UNDER_LOAD_AT=1 "$KNITD" wg --http-listen 127.0.0.1:9103 "$IFA" \
	>"$E2E_DIR/knitd-a.log" 2>&1
e2e_expect "knitd wg (daemon) returns 0 once ready" 0 "$?"
e2e_check "its UAPI socket is there at once" test -S "$SOCK/$IFA.sock"
PIDA=$(knitd_pid "$NSA" "$IFA") || e2e_die "daemonized knitd not found"
e2e_defer "kill -KILL $PIDA"
e2e_check "the daemon is in its own session" test "$(ps -o sid= -p "$PIDA" | tr -d ' ')" = "$PIDA"
inA wg set "$IFA" private-key "$E2E_DIR/a.key" listen-port $PA \
	peer "$PUBB" preshared-key "$E2E_DIR/psk" endpoint "[$UB6]:$PB" allowed-ips 10.78.0.2/32,fd78::2/128 \
	peer "$PUBC" allowed-ips 10.79.0.3/32 || e2e_fail "wg set on knitd A"
inA ip addr add 10.78.0.1/24 dev "$IFA"
inA ip addr add 10.79.0.1/24 dev "$IFA"
inA ip addr add fd78::1/64 dev "$IFA" nodad
inA ip link set "$IFA" up

# B: wg-quick with knit-wg as its userspace implementation.
cat >"$E2E_DIR/$IFB.conf" <<EOC
[Interface]
PrivateKey = $(cat "$E2E_DIR/b.key")
ListenPort = $PB
Address = 10.78.0.2/24, fd78::2/64

[Peer]
PublicKey = $PUBA
PresharedKey = $(cat "$E2E_DIR/psk")
Endpoint = [$UA6]:$PA
AllowedIPs = 10.78.0.1/32, fd78::1/128
EOC
inB env PATH="$AGENT_DIR:$PATH" WG_QUICK_USERSPACE_IMPLEMENTATION=knit-wg KNIT_LOG_LEVEL=info \
	wg-quick up "$E2E_DIR/$IFB.conf" >"$E2E_DIR/wg-quick-up.log" 2>&1
e2e_expect "wg-quick up with WG_QUICK_USERSPACE_IMPLEMENTATION=knit-wg" 0 "$?"
PIDB=$(knitd_pid "$NSB" "$IFB") || e2e_die "knit-wg started by wg-quick not found"
e2e_defer "kill -KILL $PIDB"

e2e_check "handshake and ping A -> B over an IPv6 underlay" e2e_wait_for 15 ping_ok inA ping -c 1 -W 1 10.78.0.2
e2e_check "ping B -> A" inB ping -c 3 -i 0.2 -W 2 10.78.0.1
e2e_check "ping A -> B (IPv6 inside)" inA ping -6 -c 3 -i 0.2 -W 2 fd78::2
e2e_expect "A's endpoint for B is on the IPv6 underlay" "$PUBB	[$UB6]:$PB" "$(inA wg show "$IFA" endpoints | grep "^$PUBB")"
e2e_expect "wg show on B (wg-quick) shows A's key" "$PUBA" "$(inB wg show "$IFB" peers)"

e2e_bg iperf3-b ip netns exec "$NSB" iperf3 -s
e2e_bg iperf3-a ip netns exec "$NSA" iperf3 -s
e2e_wait_for 5 sh -c "ip netns exec $NSB ss -ltn | grep -q ':5201 '"
e2e_wait_for 5 sh -c "ip netns exec $NSA ss -ltn | grep -q ':5201 '"
iperf_bps() { # run-function server [args]
	local run=$1 addr=$2
	shift 2
	timeout 20 ip netns exec "$run" iperf3 -c "$addr" -t 3 -J "$@" 2>/dev/null |
		python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))' 2>/dev/null ||
		echo 0
}
BPS=$(iperf_bps "$NSA" 10.78.0.2)
e2e_log "iperf3 A -> B: $BPS bit/s"
e2e_check "iperf3 TCP A -> B" test "$BPS" -gt 10000000
BPS=$(iperf_bps "$NSB" 10.78.0.1)
e2e_log "iperf3 B -> A: $BPS bit/s"
e2e_check "iperf3 TCP B -> A" test "$BPS" -gt 10000000

# ---- bad input ----
cat >"$E2E_DIR/wgjunk.py" <<'EOP'
# Sends junk or a flood of initiations (valid MAC1, garbage inside) to a
# WireGuard port; counts the cookie replies that come back.
import base64, hashlib, os, random, socket, struct, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
rnd = random.Random(7)
sent = 0
def send(b):
    global sent
    try:
        s.sendto(b, (host, port)); sent += 1
    except BlockingIOError:
        time.sleep(0.0005)
    except OSError:
        pass
cookies = 0
def drain():
    global cookies
    try:
        while True:
            b = s.recv(4096)
            if len(b) == 64 and b[0] == 3:
                cookies += 1
    except BlockingIOError:
        pass
if mode == "junk":
    for _ in range(3000):
        send(os.urandom(rnd.randrange(0, 1600)))
    for t, n in ((1, 148), (2, 92), (3, 64), (4, 32)):
        for d in (-3, -1, 1, 3):
            send(bytes([t, 0, 0, 0]) + os.urandom(n - 4 + d))
        send(bytes([t, 1, 0, 0]) + os.urandom(n - 4))   # reserved bytes set
        send(bytes([t, 0, 0, 0]))                       # header only
    for cut in range(1, 148):                           # truncated initiations
        send((bytes([1, 0, 0, 0]) + os.urandom(144))[:cut])
    for cut in range(1, 92):                            # truncated responses
        send((bytes([2, 0, 0, 0]) + os.urandom(88))[:cut])
    for _ in range(3000):                               # data, unknown receiver index
        send(struct.pack("<IIQ", 4, rnd.getrandbits(32), rnd.getrandbits(64)) + os.urandom(16 + rnd.randrange(0, 1400)))
    for _ in range(1000):                               # responses / cookie replies to no one
        send(struct.pack("<III", 2, rnd.getrandbits(32), rnd.getrandbits(32)) + os.urandom(80))
        send(struct.pack("<II", 3, rnd.getrandbits(32)) + os.urandom(56))
    for _ in range(500):                                # initiations with bad MAC1
        send(struct.pack("<II", 1, rnd.getrandbits(32)) + os.urandom(140))
    print(f"sent={sent}")
else:
    pub = base64.b64decode(sys.argv[4]); secs = float(sys.argv[5]); rate = float(sys.argv[6])
    key = hashlib.blake2s(b"mac1----" + pub).digest()
    start = time.time()
    while time.time() < start + secs:
        body = struct.pack("<II", 1, rnd.getrandbits(32)) + os.urandom(108)
        send(body + hashlib.blake2s(body, key=key, digest_size=16).digest() + bytes(16))
        if sent % 64 == 0:
            drain()
            ahead = sent / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
    time.sleep(0.5)
    drain()
    print(f"sent={sent} cookies={cookies}")
EOP
inB python3 "$E2E_DIR/wgjunk.py" junk $UA $PA >"$E2E_DIR/junk.out" 2>&1
e2e_log "junk: $(cat "$E2E_DIR/junk.out")"
e2e_check "knitd survives random, malformed and truncated datagrams" kill -0 "$PIDA"
e2e_check "the tunnel still works after the junk" inB ping -c 2 -i 0.2 -W 2 10.78.0.1

# The flood: initiations with valid MAC1s for 15 s. Meanwhile a new peer
# (C, another knitd) comes up and must get through.
inB python3 "$E2E_DIR/wgjunk.py" flood $UA $PA "$PUBA" 15 20000 >"$E2E_DIR/flood.out" 2>&1 &
FLOOD=$!
e2e_defer "kill $FLOOD"
sleep 1 # let the flood build up before the newcomer arrives
e2e_bg knitd-c ip netns exec "$NSB" "$KNITD" wg -f "$IFC"
PIDC=$E2E_PID
e2e_wait_for 10 test -S "$SOCK/$IFC.sock" || e2e_fail "knitd C did not start"
inB wg set "$IFC" private-key "$E2E_DIR/c.key" listen-port $PC \
	peer "$PUBA" endpoint "$UA:$PA" allowed-ips 10.79.0.1/32 persistent-keepalive 1
inB ip addr add 10.79.0.3/24 dev "$IFC"
inB ip link set "$IFC" up
T0=$(date +%s%N)
e2e_check "a new peer connects during the flood" e2e_wait_for 14 ping_ok inB ping -c 1 -W 1 10.79.0.1
e2e_log "C reached A $(((($(date +%s%N) - T0) / 1000000))) ms after it was configured"
e2e_check "the flood was still going on" kill -0 "$FLOOD"
wait "$FLOOD"
e2e_log "flood: $(cat "$E2E_DIR/flood.out")"
COOKIES=$(sed -n 's/.*cookies=\([0-9]*\).*/\1/p' "$E2E_DIR/flood.out")
SENT=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$E2E_DIR/flood.out")
e2e_check "knitd answered the flood with cookie replies (${COOKIES:-0})" test "${COOKIES:-0}" -gt 0
# One socket gets 20 replies a second (and a burst of 5), not one per packet.
e2e_check "cookie replies to one source are rate-limited (${COOKIES:-0} for ${SENT:-0} sent)" \
	test "${COOKIES:-0}" -le $((16 * 20 + 5))
e2e_check "knitd survived the flood" kill -0 "$PIDA"
# A's Prometheus /metrics (--http-listen, in A's namespace) saw the same.
metric() { inA curl -sf --max-time 3 http://127.0.0.1:9103/metrics | awk -v s="$1" '$1 == s { print $2; f = 1 } END { exit !f }'; }
CR=$(metric knitd_cookie_replies_sent_total)
RL=$(metric knitd_handshakes_ratelimited_total)
e2e_check "A's /metrics counts the cookie replies the flood got (${CR:-none} >= ${COOKIES:-0})" \
	awk -v c="${CR:-0}" -v f="${COOKIES:-0}" 'BEGIN { exit !(c + 0 >= f + 0 && c + 0 > 0) }'
e2e_check "and the per-source limit's refusals (${RL:-none} for ${SENT:-0} sent)" \
	awk -v r="${RL:-0}" -v s="${SENT:-0}" 'BEGIN { exit !(r + 0 >= s / 2 && s + 0 > 0) }'
e2e_check "A's /metrics: two peers, bytes both ways" sh -c "[ '$(metric knitd_peers)' = 2 ] &&
	awk -v i='$(metric knitd_inbound_bytes_total)' -v o='$(metric knitd_outbound_bytes_total)' 'BEGIN { exit !(i + 0 > 0 && o + 0 > 0) }'"
e2e_check "A's /healthz" inA curl -sf --max-time 3 -o /dev/null http://127.0.0.1:9103/healthz
e2e_check "the old tunnel still works" inB ping -c 2 -i 0.2 -W 2 10.78.0.1
e2e_check "and the new one" inB ping -c 2 -i 0.2 -W 2 10.79.0.1
HSC=$(inA wg show "$IFA" latest-handshakes | awk -v k="$PUBC" '$1 == k {print $2}')
e2e_check "A's wg show has C's handshake" test "${HSC:-0}" -gt 0

# Roaming between knitds: B moves to another port; A follows.
inB wg set "$IFB" listen-port $((PB + 1))
e2e_check "B moved ports: ping B -> A" e2e_wait_for 15 ping_ok inB ping -c 1 -W 1 10.78.0.1
e2e_expect "A follows B's new port" "$PUBB	[$UB6]:$((PB + 1))" "$(inA wg show "$IFA" endpoints | grep "^$PUBB")"

# Removing a peer and a replace: configuration changes under traffic.
inA wg set "$IFA" peer "$PUBC" remove
e2e_expect "peer removal" "$PUBB" "$(inA wg show "$IFA" peers)"
inA wg syncconf "$IFA" <(inA wg showconf "$IFA") || e2e_fail "wg syncconf"
e2e_check "the tunnel survives a syncconf" inB ping -c 2 -i 0.2 -W 2 10.78.0.1

# wg-quick down removes the interface: knit-wg exits with it.
inB env PATH="$AGENT_DIR:$PATH" wg-quick down "$E2E_DIR/$IFB.conf" >"$E2E_DIR/wg-quick-down.log" 2>&1
e2e_expect "wg-quick down" 0 "$?"
e2e_check "knit-wg exits after wg-quick down" e2e_wait_for 10 gone "$PIDB"
e2e_check "and its socket is gone" test ! -e "$SOCK/$IFB.sock"

kill -TERM "$PIDA" "$PIDC"
e2e_check "knitd A exits on SIGTERM" e2e_wait_for 10 gone "$PIDA"
e2e_check "A's socket is gone" test ! -e "$SOCK/$IFA.sock"
e2e_check "knitd C exits on SIGTERM" e2e_wait_for 10 gone "$PIDC"
e2e_check "no sanitizer reports (leaks, overflows) in any knitd log" \
	sh -c "! grep -l Sanitizer $E2E_DIR/*.log"
e2e_check "A logged its shutdown" grep -q 'shutting down' "$E2E_DIR/knitd-a.log"
e2e_end
