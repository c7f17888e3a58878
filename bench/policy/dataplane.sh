#!/usr/bin/env bash
# Data-plane cost of enforcement (issue 16, benchmark b): single-stream TCP
# throughput through knitd with a 1,000-rule packetFilter in force on both
# ends vs. knitd with no policy, in the same run (bench/wg/run.sh's paths
# knitd and knitd-policy: two namespaces on a veth, iperf3 through `knitd
# wg`), and the ratio. Target: at most 5 % slower (ratio >= 0.95).
#
#   sudo bench/policy/dataplane.sh [-d SECONDS] [-r REPS] [-n RULES]
#
# The filter is what the operator compiles for one device (lib/policy,
# docs/policy.md "The packet filter"): RULES rules, each naming one peer
# (a /32 and a /128) and one port on the device's addresses, the one that
# lets the benchmark's client (10.210.0.1) reach iperf3 (10.210.0.2:5201)
# and ping in the middle of them, so the lookup sees the whole table.
# knitd comes from a release build (KNIT_BENCH_BUILD, default build/bench).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
build=${KNIT_BENCH_BUILD:-$src/build/bench}
DURATION=10 REPS=3 RULES=1000
while getopts "d:r:n:h" o; do
	case $o in
	d) DURATION=$OPTARG ;;
	r) REPS=$OPTARG ;;
	n) RULES=$OPTARG ;;
	*) sed -n '2,16p' "$0"; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "dataplane.sh: run as root" >&2; exit 1; }
if [ -z "${KNIT_BENCH_BUILD:-}" ]; then
	bench_build "$build" knitd || exit 1
fi
work=$(mktemp -d /tmp/knit-bench-dataplane.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$RULES" >"$work/filter-$RULES-rules.json" <<'PY'
import json, sys
n = int(sys.argv[1])
local = ["10.210.0.2/32", "fd7a:115c:a1e0::2/128"]
rules = []
for i in range(n - 2):
    peer = ["100.%d.%d.%d/32" % (64 + (i >> 16), (i >> 8) & 255, i & 255),
            "fd7a:115c:a1e0::%x:%x/128" % (i >> 16, i & 0xffff)]
    port = 1024 + i
    rules.append({"srcIPs": peer,
                  "dstPorts": [{"ip": ip, "ports": {"first": port, "last": port}} for ip in local],
                  "ipProto": [6, 17, 1, 58]})
mid = len(rules) // 2
rules[mid:mid] = [
    {"srcIPs": ["10.210.0.1/32"], "dstPorts": [{"ip": "10.210.0.2/32", "ports": {"first": 5201, "last": 5201}}],
     "ipProto": [6]},
    {"srcIPs": ["10.210.0.1/32"], "dstPorts": [{"ip": "10.210.0.2/32", "ports": {"first": 0, "last": 65535}}],
     "ipProto": [1]},
]
json.dump(rules, sys.stdout)
PY
echo "packetFilter: $RULES rules, $(stat -c %s "$work/filter-$RULES-rules.json") bytes" >&2
# Rounds alternate the two paths (run.sh -r 1 each), so that a machine
# whose load drifts during the run weighs on both alike.
nopol=() pol=()
for r in $(seq "$REPS"); do
	out=$(KNIT_BUILD_DIR=$build "$src/bench/wg/run.sh" -b "$build" -d "$DURATION" -r 1 -p knitd,knitd-policy \
		-F "$work/filter-$RULES-rules.json" 2>&1)
	a=$(sed -n 's/^  knitd run 1: \([0-9.]*\) Gbit.*/\1/p' <<<"$out")
	b=$(sed -n 's/^  knitd-policy run 1: \([0-9.]*\) Gbit.*/\1/p' <<<"$out")
	echo "round $r: knitd ${a:-?} Gbit/s, knitd with $RULES rules ${b:-?} Gbit/s" >&2
	nopol+=("${a:-0}")
	pol+=("${b:-0}")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m0=$(median "${nopol[@]}")
m1=$(median "${pol[@]}")
printf '\n%-34s %-28s %8s\n' "knitd wg, single TCP stream" "runs (Gbit/s)" "median"
printf '%-34s %-28s %8s\n' "no policy (reference)" "${nopol[*]}" "$m0"
printf '%-34s %-28s %8s\n' "$RULES-rule packetFilter in force" "${pol[*]}" "$m1"
awk -v a="$m1" -v b="$m0" 'BEGIN { if (b > 0) printf "\nwith policy / without: %.3f (%.1f %% %s; target: at most 5 %% slower)\n", a / b, (a < b ? (1 - a / b) : (a / b - 1)) * 100, a < b ? "slower" : "faster" }'
