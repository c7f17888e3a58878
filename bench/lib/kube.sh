# The benchmarks' control plane: test/e2e/lib/apiserver.sh's kube_up with
# etcd's data directory on tmpfs (/dev/shm). The benchmarks create
# thousands of objects (10,000 Devices, two AddressClaims each, their
# status writes) and measure the operator, not the disk: etcd 3.4 has no
# --unsafe-no-fsync, and its fsyncs on this machine's disk (3-4 ms each)
# made the setup of 10,000 Devices the longest part of a run.
# Sourced after common.sh and apiserver.sh, inside a suite that called
# e2e_begin.
#
#   bench_kube_up      kube_up, etcd's data in /dev/shm (removed at exit)

bench_kube_up() {
	local shm
	shm=$(mktemp -d /dev/shm/knit-bench-etcd.XXXXXX) || e2e_die "no /dev/shm"
	# Registered before etcd starts, so it runs after etcd is stopped.
	e2e_defer "rm -rf '$shm'"
	chmod 700 "$shm"
	mkdir -p "$E2E_DIR/kube" && ln -s "$shm" "$E2E_DIR/kube/etcd" || e2e_die "cannot link etcd's data dir"
	kube_up
}
