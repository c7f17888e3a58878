# Shared helpers for knit's end-to-end suites (sourced, not run).
#
# Every suite: sources this, calls e2e_begin NAME, registers cleanups with
# e2e_defer, checks with e2e_check / e2e_expect, waits with e2e_wait_for
# (deadlines, never bare sleeps), and ends with e2e_end, which prints the
# "N passed, N failed" line and sets the exit status. Cleanups run in reverse
# order on any exit, including failures and signals.
set -uo pipefail

E2E_PASSED=0
E2E_FAILED=0
E2E_CLEANUPS=()
E2E_NAME=e2e
KNIT_CACHE=${KNIT_CACHE:-/var/cache/knit}
KNIT_SOURCE_DIR=${KNIT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
KNIT_BUILD_DIR=${KNIT_BUILD_DIR:-$KNIT_SOURCE_DIR/build/default}

e2e_log() { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%H:%M:%S)" "$*" >&2; }

e2e_die() {
	e2e_log "FATAL: $*"
	E2E_FAILED=$((E2E_FAILED + 1))
	exit 1
}

e2e_run_cleanups() {
	local i
	trap - EXIT INT TERM
	for ((i = ${#E2E_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${E2E_CLEANUPS[$i]}" >/dev/null 2>&1 || true
	done
	E2E_CLEANUPS=()
}

e2e_on_exit() {
	local rc=$?
	e2e_run_cleanups
	e2e_say_kept
	if [ -z "${E2E_ENDED:-}" ]; then
		echo "$E2E_PASSED passed, $((E2E_FAILED > 0 ? E2E_FAILED : 1)) failed"
		exit $((rc ? rc : 1))
	fi
}

# e2e_begin NAME: a private work directory (E2E_DIR) and the exit trap.
e2e_begin() {
	E2E_NAME=$1
	[ "$(id -u)" -eq 0 ] || e2e_die "must run as root (namespaces, TUN)"
	E2E_DIR=$(mktemp -d "/tmp/knit-e2e-$1.XXXXXX")
	trap e2e_on_exit EXIT
	trap 'exit 130' INT TERM
	e2e_defer e2e_dir_remove
	e2e_log "work dir $E2E_DIR"
}

# The work directory goes at exit; when a check failed, its logs are kept
# first (under E2E_KEEP_DIR) so a failure seen once can still be read.
E2E_KEPT=
e2e_dir_remove() {
	local keep
	if [ "$E2E_FAILED" -gt 0 ] || [ -z "${E2E_ENDED:-}" ]; then
		keep=${E2E_KEEP_DIR:-/tmp/knit-e2e-failed}/$E2E_NAME.$(date +%Y%m%d-%H%M%S).$$
		mkdir -p "$keep" &&
			find "$E2E_DIR" -maxdepth 2 -name '*.log' -size -64M -exec cp -t "$keep" {} + &&
			E2E_KEPT=$keep
	fi
	rm -rf "$E2E_DIR"
}
e2e_say_kept() { [ -z "$E2E_KEPT" ] || e2e_log "logs of this failed run kept in $E2E_KEPT"; }

# e2e_defer CMD: run CMD (a string for eval) at exit, last registered first.
e2e_defer() { E2E_CLEANUPS+=("$1"); }

e2e_pass() { E2E_PASSED=$((E2E_PASSED + 1)); e2e_log "ok: $*"; }
e2e_fail() { E2E_FAILED=$((E2E_FAILED + 1)); e2e_log "FAIL: $*"; }

# e2e_check DESC CMD...: passes if CMD exits 0.
e2e_check() {
	local desc=$1
	shift
	if "$@"; then e2e_pass "$desc"; else e2e_fail "$desc"; fi
}

# e2e_expect DESC EXPECTED ACTUAL
e2e_expect() {
	if [ "$2" = "$3" ]; then
		e2e_pass "$1"
	else
		e2e_fail "$1: expected '$2', got '$3'"
	fi
}

# e2e_wait_for SECONDS CMD...: polls CMD until it succeeds or the deadline
# passes; returns 1 on timeout.
e2e_wait_for() {
	local deadline=$(($(date +%s%N) / 1000000 + $1 * 1000))
	shift
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ "$(($(date +%s%N) / 1000000))" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# e2e_free_port: a TCP port free on 127.0.0.1 right now.
e2e_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# e2e_bg NAME CMD...: starts CMD in the background, logs to $E2E_DIR/NAME.log,
# records its pid in E2E_PID and kills it (TERM, then KILL) at exit.
e2e_bg() {
	local name=$1
	shift
	"$@" >"$E2E_DIR/$name.log" 2>&1 &
	E2E_PID=$!
	e2e_defer "e2e_kill $E2E_PID"
}

e2e_kill() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
}

# e2e_need_bin PATH...: a missing real part is a loud failure, never a skip.
e2e_need_bin() {
	local b
	for b in "$@"; do
		[ -x "$b" ] || command -v "$b" >/dev/null 2>&1 ||
			e2e_die "required binary '$b' is missing (run scripts/install-deps and test/e2e/lib/kube-build.sh)"
	done
}

e2e_end() {
	E2E_ENDED=1
	e2e_run_cleanups
	e2e_say_kept
	echo "$E2E_PASSED passed, $E2E_FAILED failed"
	[ "$E2E_FAILED" -eq 0 ] && [ "$E2E_PASSED" -gt 0 ]
	exit $?
}
