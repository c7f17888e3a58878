#!/usr/bin/env bash
# knit-relay benchmark (issue 19), release build, loopback:
#   - single-stream throughput of 1400-byte packets through the relay, and
#     the same frames over a direct loopback TCP connection in the same run;
#   - the relay's CPU per Gbit/s;
#   - ping-pong latency through the relay vs direct;
#   - the relay's memory per idle client at N clients (default 10000).
#
#   sudo bench/relay/run.sh [N]
# Targets: relay >= 1 Gbit/s single stream; <= 20 KB per idle client.
# The time from both peers online to a direct path behind NAT is
# bench/relay/direct.sh's.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
source "$src/bench/lib/build.sh"
build=${KNIT_BENCH_BUILD:-$src/build/bench}
n=${1:-10000}

bench_build "$build" knit-relay relay_bench || exit 1
dir=$(mktemp -d /tmp/knit-bench-relay.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ulimit -n "$(ulimit -Hn)"
"$build/relay/knit-relay" --key-file "$dir/key" --listen "127.0.0.1:$port" --stun-port 0 \
	--max-clients $((n + 100)) --log-level warn 2>"$dir/relay.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port
"$build/bench/relay/relay_bench" throughput "$url" "$pid" $((2 << 30)) || exit 1
"$build/bench/relay/relay_bench" latency "$url" 2000 || exit 1
"$build/bench/relay/relay_bench" idle "$url" "$pid" "$n" || exit 1
echo "targets: relay >= 1 Gbit/s single stream; <= 20 KB (20480 bytes) per idle client"
