#!/usr/bin/env bash
# Leader election on a real coordination.k8s.io/v1 Lease (lib/kube/lease.c)
# and core/v1 Events (lib/kube/event.c), against a real kube-apiserver:
#   two candidates -> exactly one leads, and the Lease names it;
#   SIGTERM the leader -> it releases, the other leads within ~2 s;
#   SIGKILL the leader -> a candidate waits out the lease, then leads;
#   API server stopped -> the leader steps down within renew_deadline;
#   API server back -> leadership is re-acquired;
#   API server hung (SIGSTOP) -> the leader steps down anyway; SIGCONT -> leads;
#   each start of leading left an Event (repeats aggregated into count);
#   leadership intervals of all candidates never overlap.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"

e2e_begin kube_lease
TOOL=$KNIT_BUILD_DIR/test/e2e/tools/lease_tool
e2e_need_bin "$TOOL" python3
kube_up

NS=knit-lease
LEASE=knit-e2e
DURATION=4000
DEADLINE=3000
RETRY=1000
REASON=LeaderElection
"$KUBECTL" create namespace "$NS" >/dev/null || e2e_die "create namespace"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# candidate ID: starts a candidate; its pid in PID_<ID>, its log $E2E_DIR/ID.log.
candidate() {
	e2e_bg "$1" "$TOOL" --server "$KUBE_SERVER" --token "$KUBE_TOKEN" --ca "$KUBE_CA" \
		--namespace "$NS" --name "$LEASE" --identity "$1" \
		--lease-duration "$DURATION" --renew-deadline "$DEADLINE" --retry-period "$RETRY" \
		--event-reason "$REASON"
	printf -v "PID_$1" %s "$E2E_PID"
}
pid_of() { local v="PID_$1"; echo "${!v}"; }
log_of() { echo "$E2E_DIR/$1.log"; }
# The last LEADING/STOPPED line decides.
is_leading() { [ "$(grep -E '^(LEADING|STOPPED) ' "$(log_of "$1")" | tail -1 | cut -d' ' -f1)" = LEADING ]; }
not_leading() { ! is_leading "$1"; }
leading_count() { grep -c "^LEADING $1 " "$(log_of "$1")"; }
leading_times() { [ "$(leading_count "$1")" -ge "$2" ]; }
# at= of the Nth (1-based) line starting with WHAT in ID's log.
at_of() { grep "^$2 $1 " "$(log_of "$1")" | sed -n "${3:-1}p" | sed 's/.*at=//'; }
saw_leader() { grep -q "^LEADER $2 " "$(log_of "$1")"; }
has_line() { grep -q "$2" "$(log_of "$1")"; }
lease_field() { "$KUBECTL" get lease -n "$NS" "$LEASE" -o jsonpath="{.spec.$1}"; }
holder_is() { [ "$(lease_field holderIdentity)" = "$1" ]; }
exited() { ! kill -0 "$1" 2>/dev/null; }

# ---- two candidates: exactly one leads ----
candidate alpha
candidate beta
one_leads() { is_leading alpha || is_leading beta; }
e2e_check "one of two candidates leads" e2e_wait_for 30 one_leads
if is_leading alpha; then LEADER=alpha FOLLOWER=beta; else LEADER=beta FOLLOWER=alpha; fi
e2e_log "leader $LEADER, follower $FOLLOWER"
e2e_check "the Lease names the leader" e2e_wait_for 5 holder_is "$LEADER"
e2e_check "the follower observed the leader" e2e_wait_for 10 saw_leader "$FOLLOWER" "$LEADER"
e2e_check "the follower does not lead" not_leading "$FOLLOWER"
e2e_expect "leaseDurationSeconds written from the config" 4 "$(lease_field leaseDurationSeconds)"
e2e_check "acquireTime is an RFC 3339 micro time" \
	bash -c "[[ '$(lease_field acquireTime)' =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$ ]]"
TRANS0=$(lease_field leaseTransitions)

# ---- SIGTERM: release, prompt takeover ----
T0=$(now_ms)
kill -TERM "$(pid_of "$LEADER")"
e2e_check "after SIGTERM the follower leads" e2e_wait_for 10 is_leading "$FOLLOWER"
TAKEOVER_RELEASE=$(($(at_of "$FOLLOWER" LEADING) - T0))
e2e_log "takeover after release: ${TAKEOVER_RELEASE} ms"
e2e_check "takeover after release within 2.5 s (was ${TAKEOVER_RELEASE} ms)" \
	test "$TAKEOVER_RELEASE" -le 2500
e2e_check "the old leader exited" e2e_wait_for 10 exited "$(pid_of "$LEADER")"
wait "$(pid_of "$LEADER")" 2>/dev/null
e2e_expect "the old leader's exit status" 0 "$?"
e2e_check "the old leader stopped leading, then released" \
	bash -c "grep -E '^(STOPPED|RELEASED) ' '$(log_of "$LEADER")' | cut -d' ' -f1 | tr '\n' ' ' | grep -qx 'STOPPED RELEASED '"
e2e_check "the Lease names the new leader" e2e_wait_for 5 holder_is "$FOLLOWER"
e2e_expect "leaseTransitions counted the takeover" $((TRANS0 + 1)) "$(lease_field leaseTransitions)"
LEADER=$FOLLOWER

# ---- SIGKILL: no release, the lease must expire on the candidate's clock ----
candidate gamma
e2e_check "gamma observed $LEADER" e2e_wait_for 10 saw_leader gamma "$LEADER"
e2e_check "gamma does not lead while $LEADER renews" not_leading gamma
T0=$(now_ms)
kill -KILL "$(pid_of "$LEADER")"
KILLED_AT=$T0
e2e_check "after SIGKILL gamma leads" e2e_wait_for 15 is_leading gamma
TAKEOVER_EXPIRY=$(($(at_of gamma LEADING) - T0))
e2e_log "takeover after SIGKILL: ${TAKEOVER_EXPIRY} ms (lease ${DURATION} ms, retry ${RETRY} ms)"
e2e_check "takeover waited out the lease (${TAKEOVER_EXPIRY} ms >= $((DURATION - RETRY - 500)))" \
	test "$TAKEOVER_EXPIRY" -ge $((DURATION - RETRY - 500))
e2e_check "takeover within lease_duration + retry_period + slack (${TAKEOVER_EXPIRY} ms)" \
	test "$TAKEOVER_EXPIRY" -le $((DURATION + RETRY + 1500))
e2e_check "the Lease names gamma" e2e_wait_for 5 holder_is gamma
e2e_expect "leaseTransitions counted the takeover" $((TRANS0 + 2)) "$(lease_field leaseTransitions)"

# ---- API server down: the leader steps down within renew_deadline ----
T_STOP=$(now_ms)
kube_stop_apiserver
T0=$(now_ms)
e2e_check "gamma stepped down with the API server gone" e2e_wait_for 15 not_leading gamma
STEPDOWN=$(($(at_of gamma STOPPED) - T0))
e2e_log "step-down ${STEPDOWN} ms after the API server was gone ($(($(at_of gamma STOPPED) - T_STOP)) ms after SIGTERM to it; renew deadline ${DEADLINE} ms)"
e2e_check "step-down within renew_deadline + slack (${STEPDOWN} ms)" \
	test "$STEPDOWN" -le $((DEADLINE + 1000))
e2e_check "gamma keeps running as a candidate" kill -0 "$(pid_of gamma)"

# ---- API server back: leadership re-acquired ----
T0=$(now_ms)
kube_start_apiserver
e2e_check "gamma leads again" e2e_wait_for 30 leading_times gamma 2
e2e_log "re-acquired $(($(at_of gamma LEADING 2) - T0)) ms after the API server was started ($(($(now_ms) - T0)) ms until readyz)"
e2e_check "the Lease still names gamma" holder_is gamma
e2e_expect "re-acquiring its own lease is no transition" $((TRANS0 + 2)) "$(lease_field leaseTransitions)"

# ---- API server hung (SIGSTOP): a renewal hangs in flight, the deadline
# timer still steps the leader down; SIGCONT: the leader renews again ----
kill -STOP "$KUBE_APISERVER_PID"
e2e_defer "kill -CONT $KUBE_APISERVER_PID"
T0=$(now_ms)
e2e_check "gamma stepped down with the API server hung" e2e_wait_for 15 not_leading gamma
STEPDOWN_HUNG=$(($(at_of gamma STOPPED 2) - T0))
e2e_log "step-down ${STEPDOWN_HUNG} ms after the API server hung"
e2e_check "step-down within renew_deadline + slack (${STEPDOWN_HUNG} ms)" \
	test "$STEPDOWN_HUNG" -le $((DEADLINE + 1000))
kill -CONT "$KUBE_APISERVER_PID"
T0=$(now_ms)
e2e_check "gamma leads again after the API server resumed" e2e_wait_for 30 leading_times gamma 3
e2e_log "re-acquired $(($(at_of gamma LEADING 3) - T0)) ms after SIGCONT"

# ---- Events ----
emitted_thrice() { [ "$(grep -c "^EVENT $REASON err=0" "$(log_of gamma)")" -ge 3 ]; }
e2e_check "gamma recorded its three Events" e2e_wait_for 30 emitted_thrice
EVENTS=$E2E_DIR/events.txt
get_events() {
	"$KUBECTL" get events -n "$NS" -o jsonpath='{range .items[*]}{.reason}|{.type}|{.involvedObject.kind}|{.involvedObject.name}|{.involvedObject.uid}|{.message}|{.count}|{.source.component}|{.metadata.name}{"\n"}{end}' \
		>"$EVENTS"
}
# gamma led at least three times (a slow machine can make it flap once more
# while the API server hangs): its Event must count exactly the Events it
# emitted, aggregated into one object, once the last one has landed.
gamma_count_settled() {
	get_events || return 1
	grep -q "|gamma became leader|$(grep -c "^EVENT $REASON err=0" "$(log_of gamma)")|" "$EVENTS"
}
e2e_wait_for 15 gamma_count_settled || get_events || e2e_fail "kubectl get events"
e2e_log "events: $(tr '\n' ';' <"$EVENTS")"
LEASE_UID=$("$KUBECTL" get lease -n "$NS" "$LEASE" -o jsonpath='{.metadata.uid}')
for who in alpha beta gamma; do
	count=1
	[ "$who" = gamma ] && count=$(grep -c "^EVENT $REASON err=0" "$(log_of gamma)")
	e2e_check "Event for $who's start of leading (count $count, as emitted)" \
		grep -q "^$REASON|Normal|Lease|$LEASE|$LEASE_UID|$who became leader|$count|lease-tool|$LEASE\.[0-9a-f]\{16\}$" "$EVENTS"
done

# ---- clean shutdown releases: empty holder, 1 s duration ----
kill -TERM "$(pid_of gamma)"
e2e_check "gamma exited after SIGTERM" e2e_wait_for 10 exited "$(pid_of gamma)"
wait "$(pid_of gamma)" 2>/dev/null
e2e_expect "gamma's exit status" 0 "$?"
e2e_check "gamma released" has_line gamma '^RELEASED gamma '
e2e_expect "released Lease has no holder" "" "$(lease_field holderIdentity)"
e2e_expect "released Lease lasts 1 s" 1 "$(lease_field leaseDurationSeconds)"

# ---- safety: leadership intervals never overlap (one host, one clock) ----
intervals_disjoint() {
	python3 - "$KILLED_AT" "$E2E_DIR"/alpha.log "$E2E_DIR"/beta.log "$E2E_DIR"/gamma.log <<'EOP'
import sys
killed = int(sys.argv[1])
iv = []
for path in sys.argv[2:]:
    start = None
    for line in open(path):
        f = line.split()
        if len(f) < 3 or not f[2].startswith("at="):
            continue
        t = int(f[2][3:])
        if f[0] == "LEADING":
            start = t
        elif f[0] == "STOPPED" and start is not None:
            iv.append((start, t, f[1])); start = None
    if start is not None:  # SIGKILLed while leading
        iv.append((start, killed, path.rsplit("/", 1)[-1][:-4]))
iv.sort()
print(iv)
sys.exit(0 if all(a[1] <= b[0] for a, b in zip(iv, iv[1:])) and len(iv) >= 5 else 1)
EOP
}
e2e_check "no two candidates ever led at once" intervals_disjoint
e2e_check "no sanitizer reports from the candidates" \
	bash -c "! grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error' '$E2E_DIR'/{alpha,beta,gamma}.log"
e2e_end
