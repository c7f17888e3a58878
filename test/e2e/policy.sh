#!/usr/bin/env bash
# Access policy end to end (issue 16), with real agents in network
# namespaces on a real kube-apiserver: AuthKeys for alice and bob (spec.user
# set by an admin) and a tagged one for tag:db; a Policy lets group:dev
# (alice) reach tag:db on TCP 5432 and ICMP, and nothing else. alice reaches
# db:5432 and pings it; bob has no db peer at all (knit status, wg show) and
# cannot reach it; db cannot open connections to alice. A policy change
# reaches agents within 1 s (measured) without breaking an allowed
# long-lived TCP flow. A policy whose tests fail is refused at kubectl
# apply with the assertion (webhook) and the old one keeps working; with no
# webhook, the Policy's status says TestsPassed=False and the old rules
# stay, also across an operator restart. A registration asking for a tag it
# does not own is refused with the owner named, and its one-off key is not
# burned. A route advertised before autoApprovers allow it is approved when
# a policy that allows it is applied, and withdrawn when a later one no
# longer does.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"
source "$(dirname "$0")/lib/tailnet.sh"

e2e_begin policy
# On failure the logs outlive the work directory (the last cleanup).
e2e_defer "[ \$E2E_FAILED -eq 0 ] || { mkdir -p '$E2E_DIR.logs' && cp '$E2E_DIR'/*.log '$E2E_DIR'/*.out '$E2E_DIR.logs/' 2>/dev/null; e2e_log \"logs kept in $E2E_DIR.logs\"; }"
e2e_need_bin "$OPERATOR" "$KNITD" "$KNIT" jq ping socat python3 wg
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

# The operator's webhooks (as in policy_identity.sh): failurePolicy Ignore,
# so with the webhook gone the operator's own check is what guards.
WH_PORT=$(e2e_free_port)
kube_knit_webhooks "$WH_PORT" Ignore | $K apply -f - >/dev/null || e2e_die "webhook configurations"

tailnet_net_up $((20 + ($$ + 11) % 200))
TAILNET_OP_ARGS="--webhook-listen 127.0.0.1:$WH_PORT --webhook-dns-name localhost" tailnet_operator_start op-1
bundled() { [ -n "$($K get validatingwebhookconfiguration knit -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]; }
e2e_wait_for 60 bundled || e2e_die "the operator never wrote its CA into the webhook configurations"

authkey() { # NAME USER TAGS-JSON REUSABLE
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"%s"},"spec":{"user":"%s","tags":%s,"reusable":%s}}' \
		"$1" "$NS" "$2" "$3" "$4" | $K apply -f - >/dev/null || e2e_die "AuthKey $1"
}
authkey alice alice@example.com '[]' false
authkey bob bob@example.com '[]' false
authkey db admin@example.com '["tag:db"]' false
key_of() { $K get secret "$1-authkey" -n "$NS" -o jsonpath='{.data.authkey}' 2>/dev/null | base64 -d; }
for k in alice bob db; do e2e_wait_for 30 key_of "$k" || e2e_die "no key $k"; done

policy_doc() { # EXTRA-ACLS EXTRA-TESTS [EXTRA-SECTIONS]
	cat <<JSON
{
  // people and who may tag what
  "groups": {"group:dev": ["alice@example.com"]},
  "tagOwners": {"tag:db": ["alice@example.com"]},${3:-}
  "acls": [
    {"action": "accept", "src": ["group:dev"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["group:dev"], "dst": ["tag:db:*"], "proto": "icmp"},$1
  ],
  "tests": [
    {"src": "alice@example.com", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]},
    {"src": "tag:db", "deny": ["alice@example.com:8022"]},$2
  ],
}
JSON
}
policy_apply() { # DOC [kubectl args]
	jq -n --arg p "$1" '{apiVersion: "knit.dev/v1alpha1", kind: "Policy", metadata: {name: "default"},
		spec: {tailnet: "default", policy: $p}}' | $K apply -f - 2>&1
}
cond() { $K get policy default -o jsonpath="{.status.conditions[?(@.type==\"$1\")].$2}"; }
applied_gen() { $K get policy default -o jsonpath='{.status.appliedGeneration}'; }
gen() { $K get policy default -o jsonpath='{.metadata.generation}'; }

P1=$(policy_doc "" "
    {\"src\": \"bob@example.com\", \"deny\": [\"tag:db:5432\"]},")
out=$(policy_apply "$P1")
e2e_check "the policy is applied (the webhook runs its tests)" grep -q created <<<"$out"
in_force() { [ "$(cond TestsPassed status)" = True ] && [ "$(applied_gen)" = "$(gen)" ]; }
e2e_check "Valid and TestsPassed, appliedGeneration = generation" e2e_wait_for 30 in_force

# ---- devices ----
tailnet_host_add alice 0
tailnet_host_add bob 1
tailnet_host_add db 2
BOBTUN=kpb$E2E_TAG
BOBTUN=${BOBTUN:0:15}
mkdir -p /var/run/wireguard
tailnet_knitd_start alice
tailnet_knitd_start bob --tun "$BOBTUN" --uapi-dir /var/run/wireguard
tailnet_knitd_start db
join() { # NAME KEY [knit up args]
	local n=$1 k=$2
	shift 2
	tailnet_knit "$n" up --authkey "$k" --login-server "$LOGIN_SERVER" --hostname "$n" "$@" >"$E2E_DIR/up-$n.out" 2>&1
}
# bob's one-off key asks for tag:db, which only alice owns.
join bob "$(key_of bob)" --advertise-tags tag:db
e2e_check "bob's registration asking for tag:db is refused" grep -q 'tag:db' "$E2E_DIR/up-bob.out"
e2e_check "the refusal names the owner (alice@example.com)" grep -q 'alice@example.com' "$E2E_DIR/up-bob.out"
e2e_check "bob joins with the same one-off key (not burned by the refusal)" join bob "$(key_of bob)" --advertise-tags=
e2e_check "alice joins" join alice "$(key_of alice)"
e2e_check "db joins (tagged key), advertising 10.77.0.0/24" join db "$(key_of db)" --advertise-routes 10.77.0.0/24
dev_of() { $K get devices -o json | jq -r --arg h "$1" '.items[] | select(.spec.hostname == $h) | .metadata.name'; }
e2e_expect "alice's Device has her user" alice@example.com "$($K get device "$(dev_of alice)" -o jsonpath='{.spec.user}')"
e2e_expect "db's Device has no user (tagged)" "" "$($K get device "$(dev_of db)" -o jsonpath='{.spec.user}')"
approved() { $K get device "$(dev_of db)" -o jsonpath='{.spec.approvedRoutes}' | jq -r 'join(",")? // ""'; }
e2e_expect "db's route is not approved (no autoApprovers yet)" "" "$(approved)"

not() { ! "$@"; }
peers_of() { tailnet_knit "$1" status --json | jq -r '[.peers[].name] | sort | join(" ")'; }
sees() { [ "$(peers_of "$1")" = "$2" ]; }
e2e_check "alice sees db (and only db)" e2e_wait_for 20 sees alice db
e2e_check "db sees alice, not bob" e2e_wait_for 20 sees db alice
e2e_check "bob sees nobody" e2e_wait_for 20 sees bob ""
e2e_expect "bob's wg show has no peer at all" "" "$(wg show "$BOBTUN" peers 2>&1)"
e2e_check "knit status shows db's owner as tag:db" grep -qE '^[^ ]+ +db +tag:db ' <<<"$(tailnet_knit alice status)"
DB=$(tailnet_knit db ip -4)
ALICE=$(tailnet_knit alice ip -4)
e2e_check "knit whois on db shows alice's user" grep -q 'User: *alice@example.com' <<<"$(tailnet_knit db whois "$ALICE")"

# ---- traffic ----
cat >"$E2E_DIR/recv.py" <<'PY'
import socket, sys, threading
out = open(sys.argv[2], "a", buffering=1)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
def serve(c):
    f = c.makefile("r")
    for line in f:
        out.write(line)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
cat >"$E2E_DIR/send.py" <<'PY'
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
n = 0
while True:
    c.sendall(b"flow %d\n" % n); n += 1
    time.sleep(0.02)
PY
e2e_bg db-listener ip netns exec "$(ns_name db)" python3 "$E2E_DIR/recv.py" 5432 "$E2E_DIR/db.recv"
e2e_bg alice-listener ip netns exec "$(ns_name alice)" python3 "$E2E_DIR/recv.py" 8022 "$E2E_DIR/alice.recv"
tcp_ok() { # NS IP PORT
	echo "probe from $1" | in_ns "$1" timeout 5 socat -u - "TCP:$2:$3,connect-timeout=3" 2>/dev/null
}
e2e_check "alice reaches db:5432 (TCP)" e2e_wait_for 20 tcp_ok alice "$DB" 5432
e2e_check "alice pings db" in_ns alice ping -c 2 -W 2 "$DB"
e2e_check "the listener on alice works (alice to herself)" tcp_ok alice "$ALICE" 8022
e2e_check "bob cannot reach db:5432" not tcp_ok bob "$DB" 5432
e2e_check "bob cannot ping db" not in_ns bob ping -c 2 -W 2 "$DB"
e2e_check "db cannot open a connection to alice:8022 (deny both ways)" not tcp_ok db "$ALICE" 8022
e2e_check "db cannot ping alice" not in_ns db ping -c 2 -W 2 "$ALICE"
e2e_check "no probe from db arrived at alice" not grep -q 'probe from db' "$E2E_DIR/alice.recv"

# ---- a change that keeps the flow allowed, timed ----
e2e_bg alice-flow ip netns exec "$(ns_name alice)" python3 "$E2E_DIR/send.py" "$DB" 5432
FLOW_PID=$E2E_PID
lines() { grep -c '^flow' "$E2E_DIR/db.recv" 2>/dev/null || echo 0; }
flowing() { [ "$(lines)" -gt 20 ]; }
e2e_check "a long-lived TCP flow alice -> db:5432 runs" e2e_wait_for 20 flowing
# P2 also lets bob reach db:5432: bob's view changes, alice's flow stays allowed.
# P2 also approves tag:db's routes in 10.77.0.0/16: db advertised one before.
APPROVERS='
  "autoApprovers": {"routes": {"10.77.0.0/16": ["tag:db"]}},'
BOB_DB='
    {"action": "accept", "src": ["bob@example.com"], "dst": ["tag:db:5432"], "proto": "tcp"},'
P2=$(policy_doc "$BOB_DB" "" "$APPROVERS")
t0=$(date +%s%N)
out=$(policy_apply "$P2")
e2e_check "P2 applied" grep -q configured <<<"$out"
bob_sees_db() { [ "$(peers_of bob)" = db ]; }
until bob_sees_db || [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 10000 ]; do sleep 0.02; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
e2e_log "policy change: kubectl apply -> bob's agent has the new peer in ${ms} ms"
e2e_check "the change reached the agent within 1 s (${ms} ms, kubectl apply included)" test "$ms" -le 1000
e2e_check "bob now reaches db:5432" e2e_wait_for 10 tcp_ok bob "$DB" 5432
before=$(lines)
grows() { [ "$(lines)" -gt "$((before + 50))" ]; }
e2e_check "the flow keeps going across the change" e2e_wait_for 10 grows
e2e_check "on the same connection (the sender never failed)" kill -0 "$FLOW_PID"
route_on() { [ "$(approved)" = "$1" ]; }
e2e_check "P2's autoApprovers approve the route db advertised before" e2e_wait_for 20 route_on 10.77.0.0/24
bob_has_route() { wg show "$BOBTUN" allowed-ips | grep -q '10\.77\.0\.0/24'; }
e2e_check "bob's WireGuard has it in db's allowed IPs" e2e_wait_for 20 bob_has_route

# ---- a failing policy: refused by the webhook ----
BAD=$(policy_doc "" '
    {"src": "bob@example.com", "accept": ["tag:db:22"]},')
out=$(policy_apply "$BAD")
e2e_check "kubectl apply of a policy whose test fails is refused" grep -q 'denied the request' <<<"$out"
e2e_check "with the failing assertion in the message" grep -q 'bob@example.com -> tag:db:22 (tcp): expected accept, got deny' <<<"$out"
e2e_check "the old policy keeps working (bob still reaches db:5432)" tcp_ok bob "$DB" 5432

# ---- no webhook: the operator's own check guards ----
e2e_kill "$OP_PID"
TAILNET_OP_ARGS="" tailnet_operator_start op-2
out=$(policy_apply "$BAD")
e2e_check "without the webhook the API server stores it (failurePolicy Ignore)" grep -q configured <<<"$out"
refused() { [ "$(cond TestsPassed status)" = False ] && [ "$(cond TestsPassed reason)" = TestFailed ]; }
e2e_check "the Policy's status says TestsPassed=False (TestFailed)" e2e_wait_for 30 refused
e2e_check "with the assertion" grep -q 'expected accept, got deny' <<<"$(cond TestsPassed message)"
e2e_check "appliedGeneration stays behind" test "$(applied_gen)" -lt "$(gen)"
e2e_check "the old rules stay: bob reaches db:5432" e2e_wait_for 20 tcp_ok bob "$DB" 5432
e2e_check "and still not db -> alice" not tcp_ok db "$ALICE" 8022
e2e_check "bob still cannot ping db (ICMP is alice's only)" not in_ns bob ping -c 2 -W 2 "$DB"
e2e_check "the refused policy left the approved route alone" route_on 10.77.0.0/24

# ---- autoApprovers withdrawn: the route they approved goes ----
out=$(policy_apply "$(policy_doc "$BOB_DB" "")")
e2e_check "the same rules without autoApprovers applied" grep -q configured <<<"$out"
e2e_check "db's approved route is withdrawn" e2e_wait_for 20 route_on ""
e2e_expect "and the operator's note of it is gone" "" \
	"$($K get device "$(dev_of db)" -o jsonpath='{.metadata.annotations.knit\.dev/auto-approved-routes}')"
no_route() { ! bob_has_route; }
e2e_check "bob's WireGuard no longer routes 10.77.0.0/24 to db" e2e_wait_for 20 no_route
e2e_check "bob still reaches db:5432" tcp_ok bob "$DB" 5432

e2e_end
