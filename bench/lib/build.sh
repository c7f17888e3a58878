# How the benchmarks build what they measure: a RelWithDebInfo tree of
# their own (the release code with symbols for perf), no tests. Sourced;
# needs nothing else.
#
#   bench_build BUILD_DIR TARGET...   configure BUILD_DIR, build TARGETs;
#                                     non-zero (cmake's output hidden) on failure

bench_build() {
	local build=$1 src
	shift
	src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKNIT_TESTS=OFF >/dev/null &&
		cmake --build "$build" -j "$(nproc)" --target "$@" >/dev/null
}
