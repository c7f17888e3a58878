#!/usr/bin/env bash
# Coordination benchmark (issue 5): for each N, a fresh kube-apiserver and
# knit-operator (release build), N simulated agents (in-process control
# clients, no TUN) holding map streams, and one new agent registering: how
# long until every stream has it, and the operator's RSS.
#
#   sudo bench/coord/run.sh [N...]        default: 100 1000 10000
#   (KNIT_BENCH_REPEAT=K: new devices measured per N, the median reported; 5)
#
# Targets: <= 200 ms to reach all streams at N = 10,000; RSS <= 500 MB.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
build=${KNIT_BENCH_BUILD:-$src/build/bench}

if [ "${1:-}" != --one ]; then
	[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
	bench_build "$build" knit-operator coord_bench || exit 1
	ns=("$@")
	[ ${#ns[@]} -gt 0 ] || ns=(100 1000 10000)
	results=()
	for n in "${ns[@]}"; do
		out=$("$0" --one "$n" | tee /dev/stderr | grep '^RESULT')
		results+=("${out:-RESULT n=$n FAILED}")
	done
	echo
	printf '%-7s %-8s %-12s %-9s %-9s %-9s %-9s %-10s %-10s %-10s\n' N reached register_ms first_ms p50_ms p99_ms last_ms spread_ms rss_mb peak_mb
	for r in "${results[@]}"; do
		eval "$(sed -E 's/^RESULT //; s/([a-z0-9_]+)=/local_\1=/g' <<<"$r" | tr ' ' '\n' | sed 's/^/export /')" 2>/dev/null
		printf '%-7s %-8s %-12s %-9s %-9s %-9s %-9s %-10s %-10s %-10s\n' "${local_n:-?}" "${local_reached:-?}" \
			"${local_register_ms:-?}" "${local_first_ms:-?}" "${local_p50_ms:-?}" "${local_p99_ms:-?}" \
			"${local_last_ms:-?}" "${local_spread_ms:-?}" "${local_operator_rss_mb:-?}" "${local_peak_rss_mb:-?}"
	done
	echo "register_ms: the new agent's register call (waits for its addresses); first..last_ms: its key"
	echo "reaching the first..last stream, from the start of registration; spread_ms = last - first."
	echo "rss_mb: the operator's RSS with the N streams open, at rest; peak_mb: its highest while they connected."
	echo "targets: reach all streams <= 200 ms at N = 10000; operator RSS <= 500 MB"
	exit 0
fi

n=$2
export KNIT_BUILD_DIR=$build KNIT_SOURCE_DIR=$src
source "$src/test/e2e/lib/common.sh"
source "$src/test/e2e/lib/apiserver.sh"
source "$src/bench/lib/kube.sh"
e2e_begin "bench-coord-$n"
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null
ulimit -c unlimited 2>/dev/null # a crash at scale leaves a core in the work dir
cd "$E2E_DIR" || exit 1
bench_kube_up
K=$KUBECTL
$K create namespace knit-system >/dev/null
$K apply $(printf -- "-f %s " "$src"/manifests/01-crd-*.yaml) >/dev/null
$K wait --for condition=established --timeout=60s crd --all >/dev/null
port=$(e2e_free_port)
e2e_bg operator "$build/operator/knit-operator" --namespace knit-system --http-listen 127.0.0.1:0 \
	--coord-listen "127.0.0.1:$port" --coord-per-ip-limit 0 --no-leader-election --workers 8 --log-level "${KNIT_BENCH_LOG:-warn}"
op=$E2E_PID
e2e_wait_for 60 sh -c "$K get tailnet default -o jsonpath='{.status.controlKey}' | grep -q ctrlkey" || e2e_die "operator not ready"
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"bench","namespace":"knit-system"},"spec":{"reusable":true}}' |
	$K apply -f - >/dev/null
e2e_wait_for 30 $K get secret bench-authkey -n knit-system || e2e_die "no auth key"
key=$($K get secret bench-authkey -n knit-system -o jsonpath='{.data.authkey}' | base64 -d)
ctrl=$($K get tailnet default -o jsonpath='{.status.controlKey}')
"$build/bench/coord/coord_bench" --server "http://127.0.0.1:$port" --control-key "$ctrl" --authkey "$key" \
	--operator-pid "$op" --n "$n" --prefix "b$n" --repeat "${KNIT_BENCH_REPEAT:-5}"
e2e_check "coord_bench ran" test $? -eq 0
[ -n "${KNIT_BENCH_KEEP_LOG:-}" ] && cp "$E2E_DIR/operator.log" "$KNIT_BENCH_KEEP_LOG"
e2e_end
