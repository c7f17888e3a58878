#!/usr/bin/env bash
# Policy change end to end (issue 16, benchmark a): a fresh kube-apiserver
# and knit-operator (release build), N simulated agents holding map streams
# (bench/coord's client, coord_bench --policy-rules), a Policy of R rules
# over their Devices (users, groups, tags: bench_policy's tailnet); then
# the Policy is updated through the API with a rule that changes every
# device's filter, and the time until every one of the N streams has its
# new packetFilter is measured (median of --repeat changes). Printed next
# to it, from the same run: a change that touches a few devices only, and
# the CPU time of compiling the policy for all N devices (the work a
# change touching every device cannot avoid).
#
#   sudo bench/policy/run.sh [N [R]]       default: 10000 1000
#   (KNIT_BENCH_REPEAT=K changes measured, 3; KNIT_BENCH_BUILD=DIR a build)
#
# Target: <= 1 s at N = 10,000, R = 1,000.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
build=${KNIT_BENCH_BUILD:-$src/build/bench}
n=${1:-10000}
rules=${2:-1000}

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
if [ -z "${KNIT_BENCH_BUILD:-}" ]; then
	bench_build "$build" knit-operator coord_bench || exit 1
fi
export KNIT_BUILD_DIR=$build KNIT_SOURCE_DIR=$src
source "$src/test/e2e/lib/common.sh"
source "$src/test/e2e/lib/apiserver.sh"
source "$src/bench/lib/kube.sh"
e2e_begin "bench-policy-$n"
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null
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
e2e_wait_for 300 sh -c "$K get tailnet default -o jsonpath='{.status.controlKey}' | grep -q ctrlkey" || e2e_die "operator not ready"
printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"bench","namespace":"knit-system"},"spec":{"reusable":true}}' |
	$K apply -f - >/dev/null
e2e_wait_for 30 $K get secret bench-authkey -n knit-system || e2e_die "no auth key"
key=$($K get secret bench-authkey -n knit-system -o jsonpath='{.data.authkey}' | base64 -d)
ctrl=$($K get tailnet default -o jsonpath='{.status.controlKey}')
"$build/bench/coord/coord_bench" --server "http://127.0.0.1:$port" --control-key "$ctrl" --authkey "$key" \
	--operator-pid "$op" --n "$n" --prefix "p$n" --repeat "${KNIT_BENCH_REPEAT:-3}" --policy-rules "$rules"
e2e_check "coord_bench (policy mode) ran" test $? -eq 0
echo "policy_change_ms: from the API call that updates the Policy until the last of the N streams had its"
echo "new packetFilter (median); few_ms: the same for a change touching the ~N/200 tag:t7 devices only;"
echo "compile_ref_ms: CPU to compile every device's filter and peers (reference). target: <= 1000 ms at N = 10000"
[ -n "${KNIT_BENCH_KEEP_LOG:-}" ] && cp "$E2E_DIR/operator.log" "$KNIT_BENCH_KEEP_LOG"
e2e_end
