#!/usr/bin/env bash
# Control key rotation (issue 15.10), with real knitd on a real
# kube-apiserver: annotating the knit-control-key Secret knit.dev/rotate=true
# makes the operator announce a next key in every netmap (a delta to live
# streams); online agents save it beside their pin without losing their
# stream; after the grace period (20 s here, --control-key-grace) the next
# key is served as current and agents switch their pin. An agent that was
# down through the whole announcement, pinning only the old key, still gets
# in while the previous key is accepted and learns the new key from it.
# Then the previous key is dropped. (That an agent never takes a key its
# pin did not announce is the unit test test_ctrlpin.) Last, the leader
# loses its Lease while streams are up: it exits cleanly (no timer touches
# the caches it freed).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin hardening_rotate
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" jq ping curl
tailnet_kube_up
NS=knit-system
GRACE=20
tailnet_net_up $((20 + ($$ + 57) % 200))
TAILNET_OP_ARGS="--control-key-grace ${GRACE}s --bootstrap-authkey nodes" tailnet_operator_start op-1
# The bootstrapped key the DaemonSet joins with ships no dated outage.
e2e_wait_for 30 $K get secret nodes-authkey -n "$NS" >/dev/null || e2e_die "no bootstrapped key"
KEY=$($K get secret nodes-authkey -n "$NS" -o jsonpath='{.data.authkey}' | base64 -d)
e2e_expect "the bootstrapped AuthKey never expires" "0s:" \
	"$($K get authkey nodes -n "$NS" -o jsonpath='{.spec.expiry}:{.status.expiresAt}')"
ak_ready() { [ "$($K get authkey nodes -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
e2e_check "and is Ready" e2e_wait_for 20 ak_ready
for n in node1 node2 node3; do
	tailnet_host_add "$n" "${n#node}"
	tailnet_knitd_start "$n"
	tailnet_knit "$n" up --authkey "$KEY" --login-server "$LOGIN_SERVER" --hostname "$n" >/dev/null 2>&1 ||
		e2e_die "$n cannot join"
done
ip1=$(tailnet_knit node1 ip -4)
ip2=$(tailnet_knit node2 ip -4)
reach() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null; }
e2e_check "node1 reaches node2" e2e_wait_for 20 reach node1 "$ip2"
pin() { jq -r ".${2:-controlKey} // \"\"" "$E2E_DIR/$1/state/knitd.state" 2>/dev/null; }
served_key() { in_ns node1 curl -s --max-time 3 "$LOGIN_SERVER/knit/v1/key" | jq -r .controlKey 2>/dev/null; }
OLD=$(served_key)
e2e_expect "node1 pins the served key" "$OLD" "$(pin node1)"
# node3 sleeps through the whole announcement.
e2e_kill "$KNITD_PID_node3"
ups() { grep -c "connected to the coordination server" "$E2E_DIR/knitd-$1.log"; }
ups1=$(ups node1)
ups2=$(ups node2)

# ---- 1: the next key is announced ----
$K annotate secret knit-control-key -n "$NS" knit.dev/rotate=true >/dev/null || e2e_die "annotate"
has_next() { [ -n "$($K get secret knit-control-key -n "$NS" -o jsonpath='{.data.nextPrivateKey}')" ]; }
e2e_check "the operator mints a next key into the Secret" e2e_wait_for 15 has_next
saved() { [ -n "$(pin "$1" nextControlKey)" ]; }
e2e_check "node1 saves the announced next key in its state file" e2e_wait_for 10 saved node1
e2e_check "and node2" e2e_wait_for 10 saved node2
NEXT=$(pin node1 nextControlKey)
e2e_expect "both the same key" "$NEXT" "$(pin node2 nextControlKey)"
e2e_expect "node1 still pins the current key" "$OLD" "$(pin node1)"
e2e_expect "the current key is still served" "$OLD" "$(served_key)"
e2e_check "a ControlKeyRotationStarted Event" sh -c "$K get events -n '$NS' -o json | jq -e \
	'[.items[] | select(.reason == \"ControlKeyRotationStarted\")] | length > 0' >/dev/null"

# ---- 2: promoted after the grace period ----
promoted() { [ "$(served_key)" = "$NEXT" ]; }
e2e_check "after the grace the next key is served as current" e2e_wait_for $((GRACE + 15)) promoted
switched() { [ "$(pin "$1")" = "$NEXT" ] && [ -z "$(pin "$1" nextControlKey)" ]; }
e2e_check "node1 switches its pin to it" e2e_wait_for 10 switched node1
e2e_check "and node2" e2e_wait_for 10 switched node2
e2e_expect "node1 kept its map stream throughout" "$ups1" "$(ups node1)"
e2e_expect "and node2" "$ups2" "$(ups node2)"
e2e_check "node1 still reaches node2" e2e_wait_for 10 reach node1 "$ip2"

# ---- the sleeper: only the old pin, while the previous key is accepted ----
e2e_expect "node3's state holds only the old key" "$OLD:" "$(pin node3):$(pin node3 nextControlKey)"
tailnet_knitd_start node3
e2e_check "node3 gets in with its old pin and switches to the new key" e2e_wait_for 15 switched node3
e2e_check "node3 reaches node1" e2e_wait_for 20 reach node3 "$ip1"

# ---- 3: the previous key goes ----
no_prev() { [ -z "$($K get secret knit-control-key -n "$NS" -o jsonpath='{.data.previousPrivateKey}')" ]; }
e2e_check "after another grace the previous key is dropped" e2e_wait_for $((GRACE + 15)) no_prev
e2e_check "a ControlKeyRotated Event" sh -c "$K get events -n '$NS' -o json | jq -e \
	'[.items[] | select(.reason == \"ControlKeyRotated\")] | length > 0' >/dev/null"
e2e_kill "$KNITD_PID_node2"
tailnet_knitd_start node2
running2() { [ "$(tailnet_knit node2 status --json | jq -r .backendState)" = Running ]; }
e2e_check "node2, restarted, connects with the new pin" e2e_wait_for 30 running2
e2e_check "and reaches node3" e2e_wait_for 20 reach node2 "$(tailnet_knit node3 ip -4)"

# ---- leadership lost while streams and sweeps are live (issue 15 races) ----
# The operator frees its caches once its workers are joined and runs on for
# seconds to release the Lease; its timers must not touch them meanwhile.
now=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
$K patch lease knit-operator -n "$NS" --type merge \
	-p "{\"spec\":{\"holderIdentity\":\"thief\",\"renewTime\":\"$now\",\"leaseDurationSeconds\":60}}" >/dev/null ||
	e2e_die "steal the Lease"
gone() { ! kill -0 "$OP_PID" 2>/dev/null; }
e2e_check "the operator that lost its Lease exits" e2e_wait_for 30 gone
wait "$OP_PID"
rc=$?
e2e_expect "with status 1 (no crash)" 1 "$rc"
e2e_check "and no sanitizer report" sh -c "grep -q 'lost leadership, exiting' '$E2E_DIR/operator-op-1.log' && \
	! grep -qE 'runtime error|AddressSanitizer|LeakSanitizer' '$E2E_DIR/operator-op-1.log'"

e2e_end
