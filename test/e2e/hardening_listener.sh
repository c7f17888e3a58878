#!/usr/bin/env bash
# The coordination listener under a slowloris and a body flood (issue 15.3),
# on a real kube-apiserver: an attacker at 127.0.0.2 opens 1,500
# connections that trickle their requests a byte at a time; then attackers
# at 127.0.0.2 and 127.0.0.3 open 1,500 each that send the headers of a
# large call and hold most of its body. Throughout,
# /knit/v1/key answers a client at 127.0.0.1 promptly, /readyz stays 200,
# the refusals show on /metrics by reason, and the operator's RSS stays
# within a stated bound over its baseline (64 MiB body budget, 16 KiB per
# connection, allocator slack). Once the attack stops, every held
# connection is gone.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"

e2e_begin hardening_listener
OPERATOR=$KNIT_BUILD_DIR/operator/knit-operator
e2e_need_bin "$OPERATOR" python3 curl
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"

HTTP_PORT=$(e2e_free_port)
COORD_PORT=$(e2e_free_port)
e2e_bg operator "$OPERATOR" --namespace "$NS" --identity op --http-listen "127.0.0.1:$HTTP_PORT" \
	--coord-listen "0.0.0.0:$COORD_PORT" --coord-per-ip-limit 1024 --no-leader-election --log-level warn
OP_PID=$E2E_PID
key_ok() { curl -sf --max-time 2 "http://127.0.0.1:$COORD_PORT/knit/v1/key" | grep -q ctrlkey:; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz")" = 200 ]; }
e2e_check "the operator serves its control key" e2e_wait_for 60 key_ok
e2e_check "and is ready" e2e_wait_for 60 ready
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$OP_PID/status"; }
base=$(rss_kb)
metric() { curl -s --max-time 2 "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }

# The attacker: N connections from 127.0.0.2, each either trickling one
# header byte every 2 s (slow) or holding 60 KiB of a 64 KiB call body
# (body); runs for SECS, then closes everything.
cat >"$E2E_DIR/attack.py" <<'PY'
import socket, sys, time
port, mode, n, secs, src = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
socks, refused = [], 0
for i in range(n):
    s = socket.socket()
    s.setblocking(True)
    s.settimeout(2)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        if mode == "body":
            s.sendall(b"POST /knit/v1/call HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n" + b"x" * 61440)
        else:
            s.sendall(b"GET /knit/v1/key HTTP/1.1\r\n")
        socks.append(s)
    except OSError:
        refused += 1
        s.close()
end = time.time() + secs
while time.time() < end:
    alive = []
    for s in socks:
        try:
            s.send(b"X" if mode == "slow" else b"")
            alive.append(s)
        except OSError:
            s.close()
    socks = alive
    time.sleep(2)
print("held %d refused-or-failed %d" % (len(socks), refused), flush=True)
for s in socks:
    s.close()
PY

prompt() { # the key within 2 s, five times over
	local i
	for i in 1 2 3 4 5; do key_ok || return 1; done
}
attack() { # MODE SECS SOURCE-ADDRESS
	python3 "$E2E_DIR/attack.py" "$COORD_PORT" "$1" 1500 "$2" "$3" >"$E2E_DIR/attack-$1-$3.log" 2>&1 &
	ATTACK_PIDS+=($!)
	e2e_defer "kill $! 2>/dev/null"
}
ATTACK_PIDS=()

# ---- slowloris ----
attack slow 25 127.0.0.2
many() { [ "$(metric knit_coord_connections)" -ge 1000 ] 2>/dev/null; }
e2e_check "the attacker holds about a thousand connections" e2e_wait_for 30 many
e2e_check "the control key answers promptly during the slowloris" prompt
e2e_check "the operator stays ready" ready
cut_off() { awk -v v="$(metric knit_coord_request_timeouts_total)" 'BEGIN { exit !(v >= 1000) }'; }
e2e_check "trickling connections are cut off by the request deadline" e2e_wait_for 30 cut_off
e2e_check "the per-address limit refused the rest" \
	awk -v v="$(metric knit_coord_refused_per_ip_total)" 'BEGIN { exit !(v >= 1) }'
wait "${ATTACK_PIDS[@]}" 2>/dev/null
e2e_log "slowloris: $(cat "$E2E_DIR"/attack-slow-*.log)"
ATTACK_PIDS=()

# ---- held bodies ----
attack body 25 127.0.0.2
attack body 25 127.0.0.3
bodies() { awk -v v="$(metric knit_coord_body_bytes)" 'BEGIN { exit !(v >= 32 * 1048576) }'; }
e2e_check "the attacker holds tens of MiB of bodies" e2e_wait_for 30 bodies
e2e_check "the control key answers promptly during the body flood" prompt
peak=$(rss_kb)
# The bound: the 64 MiB budget, 2,048 connections' 16 KiB pools, slack.
# AddressSanitizer's redzones, shadow and quarantine (freed buffers kept)
# about double what the same allocations cost in a release build.
bound=160
# (ldd into a variable: grep -q closing the pipe early fails the pipeline under pipefail)
libs=$(ldd "$OPERATOR")
grep -q libasan <<<"$libs" && bound=320
e2e_log "operator RSS: baseline $((base / 1024)) MiB, under attack $((peak / 1024)) MiB (bound +$bound MiB)"
e2e_check "RSS stays within baseline + $bound MiB" test "$peak" -lt $((base + bound * 1024))
e2e_check "bodies held never pass the 64 MiB budget" \
	awk -v v="$(metric knit_coord_body_bytes)" 'BEGIN { exit !(v <= 64 * 1048576) }'
e2e_check "budget refusals are counted" \
	awk -v v="$(metric knit_coord_body_budget_refused_total)" 'BEGIN { exit !(v >= 1) }'
wait "${ATTACK_PIDS[@]}" 2>/dev/null
e2e_log "bodies: $(cat "$E2E_DIR"/attack-body-*.log)"
drained() { [ "$(metric knit_coord_connections)" -le 2 ] 2>/dev/null && [ "$(metric knit_coord_body_bytes)" = 0 ]; }
e2e_check "after the attack every held connection and body is gone" e2e_wait_for 30 drained
e2e_check "the listener never stopped answering its own probe" \
	test "$(metric knit_coord_probe_failures_total)" = 0

e2e_end
