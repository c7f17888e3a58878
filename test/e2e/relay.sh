#!/usr/bin/env bash
# knit-relay end to end on loopback: two clients exchange packets through
# one relay and through two meshed relays (one plain, one TLS, the mesh
# link between them TLS one way and plain the other); a client that does
# not prove its key gets nothing; garbage is dropped without effect; a
# client that never reads cannot grow the relay's memory (its queue is
# capped, drops counted in /metrics); knit-relay's STUN server answers
# coturn's turnutils_stunclient, and knit's STUN client gets its mapping
# from coturn's turnserver; SIGTERM tells clients and exits 0.
source "$(dirname "$0")/lib/common.sh"

RELAY=$KNIT_BUILD_DIR/relay/knit-relay
TOOL=$KNIT_BUILD_DIR/test/e2e/tools/relay_tool

e2e_begin relay
e2e_need_bin "$RELAY" "$TOOL" turnutils_stunclient turnserver openssl curl python3

udp_port() {
	python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
metric() { # metric HTTPPORT NAME{labels} → value (0 if absent)
	curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
metric_ge() { [ "$(metric "$1" "$2" | cut -d. -f1)" -ge "$3" ]; }
grep_log() { grep -q -- "$2" "$E2E_DIR/$1"; }

D=$E2E_DIR
P1=$(e2e_free_port) H1=$(e2e_free_port) S1=$(udp_port)
P2=$(e2e_free_port) H2=$(e2e_free_port)
head -c 32 /dev/urandom | base64 >"$D/mesh.key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-keyout "$D/tls.key" -out "$D/tls.crt" -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1 || e2e_die "openssl req"

# r1: plain, STUN, small queues; r2: TLS. Each meshes with the other.
e2e_bg r1 "$RELAY" --key-file "$D/r1.key" --listen "127.0.0.1:$P1" --http-listen "127.0.0.1:$H1" \
	--stun-addr 127.0.0.1 --stun-port "$S1" --queue-bytes 131072 \
	--mesh-key-file "$D/mesh.key" --mesh-with "https://localhost:$P2" --mesh-ca "$D/tls.crt"
R1PID=$E2E_PID
e2e_bg r2 "$RELAY" --key-file "$D/r2.key" --listen "127.0.0.1:$P2" --http-listen "127.0.0.1:$H2" \
	--stun-port 0 --tls-cert "$D/tls.crt" --tls-key "$D/tls.key" \
	--mesh-key-file "$D/mesh.key" --mesh-with "http://127.0.0.1:$P1"
R2PID=$E2E_PID
e2e_check "both relays serve /healthz" e2e_wait_for 10 sh -c "curl -sf 127.0.0.1:$H1/healthz && curl -sf 127.0.0.1:$H2/healthz"
e2e_check "the relays mesh (each has its outbound link up)" \
	e2e_wait_for 15 sh -c "[ \"\$(curl -s 127.0.0.1:$H1/metrics | awk '\$1==\"knit_relay_mesh_peers_up\"{print \$2}')\" = 1 ] && [ \"\$(curl -s 127.0.0.1:$H2/metrics | awk '\$1==\"knit_relay_mesh_peers_up\"{print \$2}')\" = 1 ]"

KA=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KB=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KC=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
PA=$("$TOOL" pub "$KA") PB=$("$TOOL" pub "$KB") PC=$("$TOOL" pub "$KC")
R1PUB=$("$RELAY" --key-file "$D/r1.key" --print-public-key | sed -n 2p)
U1=http://127.0.0.1:$P1 U2=https://localhost:$P2

# --- one relay -----------------------------------------------------------
"$TOOL" recv "$U1" "$KB" --count 2 --timeout 10 --server-key "$R1PUB" >"$D/b1.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b1.out"
"$TOOL" send "$U1" "$KA" "$PB" "hello through r1" --count 2 >"$D/a1.out" 2>&1
wait $BPID
e2e_check "two clients exchange packets through one relay" grep -q "packet $PA hello through r1" "$D/b1.out"
e2e_expect "both packets arrived" 2 "$(grep -c "packet $PA" "$D/b1.out")"

# --- two meshed relays, the receiver on the TLS one ---------------------------
"$TOOL" recv "$U2" "$KB" --ca "$D/tls.crt" --timeout 15 >"$D/b2.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b2.out"
e2e_check "r1 learns of B on r2 over the mesh" e2e_wait_for 10 metric_ge "$H1" knit_relay_remote_clients 1
"$TOOL" send "$U1" "$KA" "$PB" "hello across the mesh" >"$D/a2.out" 2>&1
wait $BPID
e2e_check "a client on r1 reaches a client on r2 (TLS) through the mesh" \
	grep -q "packet $PA hello across the mesh" "$D/b2.out"
e2e_check "r1 counted the forward" metric_ge "$H1" knit_relay_packets_forwarded_total 1
e2e_check "B left r2: r1 forgets it" e2e_wait_for 10 sh -c "[ \"\$(curl -s 127.0.0.1:$H1/metrics | awk '\$1==\"knit_relay_remote_clients\"{print \$2}')\" = 0 ]"

# --- no proof of key, no packets ---------------------------------------------
"$TOOL" noproof "$U1" "$KC" >"$D/c.out" 2>&1
e2e_check "a client that cannot prove its key is refused and closed" grep -q "refused closed" "$D/c.out"
e2e_check "the refusal is counted" metric_ge "$H1" 'knit_relay_handshake_failures_total{reason="no_proof"}' 1
"$TOOL" send "$U1" "$KA" "$PC" "for C's eyes" --expect-gone --timeout 5 >"$D/a3.out" 2>&1
e2e_check "packets to the unproven key go nowhere (PEER_GONE not-here)" grep -q "gone $PC not-here" "$D/a3.out"

# --- garbage -------------------------------------------------------------------------
exec 3<>"/dev/tcp/127.0.0.1/$P1"
printf 'BLAH\x00\xff\x01 nonsense\r\n\r\n' >&3
GARBAGE_REPLY=$(timeout 5 cat <&3 | head -1)
exec 3<&-
e2e_check "a garbage request line gets 400 and a close" grep -q "400" <<<"$GARBAGE_REPLY"
exec 3<>"/dev/tcp/127.0.0.1/$P1"
printf 'GET /knit/relay HTTP/1.1\r\nHost: x\r\nUpgrade: knit-relay\r\nConnection: Upgrade\r\n\r\n' >&3
head -c 70000 /dev/urandom >&3 2>/dev/null
timeout 5 cat <&3 >/dev/null
exec 3<&-
e2e_check "random bytes after the upgrade count as a failed handshake" \
	metric_ge "$H1" 'knit_relay_handshake_failures_total{reason="no_proof"}' 2
"$TOOL" recv "$U1" "$KB" --timeout 10 >"$D/b3.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b3.out"
"$TOOL" garbage "$U1" "$KA" "$PB" >"$D/a4.out" 2>&1
wait $BPID
e2e_check "malformed frames are dropped, the sender stays connected" grep -q "still connected" "$D/a4.out"
e2e_check "the packet after the garbage is delivered" grep -q "packet $PA after garbage" "$D/b3.out"
e2e_check "the malformed frames are counted" metric_ge "$H1" knit_relay_bad_frames_total 4
e2e_check "r1 is still healthy" curl -sf "127.0.0.1:$H1/healthz"

# --- a client that never reads --------------------------------------------------
# The relay's RSS is read between floods with no /metrics scrape in between
# (a scrape allocates, and ASan's quarantine keeps what is freed for a while).
RSS0=$(awk '/VmRSS/ { print $2 }' /proc/$R1PID/status)
"$TOOL" recv "$U1" "$KB" --no-read --timeout 30 >"$D/slow.out" 2>&1 &
SLOWPID=$!
e2e_wait_for 5 grep -q ready "$D/slow.out"
"$TOOL" flood "$U1" "$KA" "$PB" $((32 << 20)) >"$D/flood1.out" 2>&1
sleep 0.5
RSS1=$(awk '/VmRSS/ { print $2 }' /proc/$R1PID/status)
"$TOOL" flood "$U1" "$KA" "$PB" $((64 << 20)) >"$D/flood2.out" 2>&1
sleep 0.5
RSS2=$(awk '/VmRSS/ { print $2 }' /proc/$R1PID/status)
e2e_check "96 MiB flooded at a client that does not read" grep -q flooded "$D/flood2.out"
e2e_log "relay RSS ${RSS0} kB before, ${RSS1} kB after 32 MiB, ${RSS2} kB after 64 MiB more to a stalled client"
e2e_check "relay memory: under 32 MiB more after the first flood" [ $((RSS1 - RSS0)) -lt 32768 ]
e2e_check "relay memory: a further 64 MiB adds under 2 MiB (bounded, not growing with traffic)" [ $((RSS2 - RSS1)) -lt 2048 ]
e2e_wait_for 5 metric_ge "$H1" 'knit_relay_dropped_packets_total{reason="queue_full"}' 1
DROPS=$(metric "$H1" 'knit_relay_dropped_packets_total{reason="queue_full"}')
e2e_check "the excess is dropped and counted in /metrics ($DROPS packets)" metric_ge "$H1" 'knit_relay_dropped_packets_total{reason="queue_full"}' 1000
sleep 1.2 # the queued-bytes gauge is sampled every second
QUEUED=$(metric "$H1" knit_relay_queued_bytes | cut -d. -f1)
e2e_check "queued bytes stay under the cap ($QUEUED <= 131072 + control slack)" [ "$QUEUED" -le $((131072 + 4096)) ]
kill $SLOWPID 2>/dev/null
wait $SLOWPID 2>/dev/null

# --- STUN ------------------------------------------------------------------------------
turnutils_stunclient -p "$S1" 127.0.0.1 >"$D/turnutils.out" 2>&1
e2e_check "coturn's turnutils_stunclient gets a reflexive address from knit-relay" \
	grep -q "UDP reflexive addr: 127.0.0.1:" "$D/turnutils.out"
e2e_check "the STUN server counted it" metric_ge "$H1" 'knit_relay_stun_requests_total{result="ok"}' 1
"$TOOL" stun "127.0.0.1:$S1" >"$D/stun-self.out" 2>&1
e2e_check "knit's STUN client against knit-relay" grep -q "mapped 127.0.0.1:.* xor=1 fingerprint=1 software=knit-relay" "$D/stun-self.out"
head -c 100 /dev/urandom >"/dev/udp/127.0.0.1/$S1"
e2e_check "a garbage datagram is counted as bad" e2e_wait_for 5 metric_ge "$H1" 'knit_relay_stun_requests_total{result="bad"}' 1
TS=$(udp_port)
e2e_bg turnserver turnserver -n --listening-ip 127.0.0.1 --listening-port "$TS" --no-tcp --no-tls --no-dtls \
	--stun-only --no-cli --simple-log --log-file stdout --pidfile "$D/turn.pid" --no-software-attribute \
	--userdb "$D/turndb"
e2e_wait_for 10 "$TOOL" stun "127.0.0.1:$TS"
"$TOOL" stun "127.0.0.1:$TS" >"$D/stun-coturn.out" 2>&1
e2e_check "knit's STUN client gets its mapping from coturn's turnserver" \
	grep -q "mapped 127.0.0.1:.* xor=1" "$D/stun-coturn.out"

# --- SIGTERM -------------------------------------------------------------------------------
"$TOOL" recv "$U1" "$KB" --timeout 10 >"$D/b4.out" 2>&1 &
BPID=$!
e2e_wait_for 5 grep -q ready "$D/b4.out"
kill -TERM $R1PID
e2e_check "SIGTERM: r1 exits" e2e_wait_for 5 sh -c "! kill -0 $R1PID 2>/dev/null"
wait $R1PID
e2e_expect "SIGTERM: exit status 0" 0 $?
wait $BPID
e2e_check "SIGTERM: clients are told" grep -q 'health "relay shutting down"' "$D/b4.out"
e2e_check "no sanitizer report from r1" sh -c "! grep -q 'ERROR: \\(Address\\|Leak\\)Sanitizer\\|runtime error' '$D/r1.log'"

e2e_end
