#!/usr/bin/env bash
# knit-cni run as a container runtime runs it, with no knitd on the node:
# "knit-cni install" chains it into a real conflist (Debian's bridge +
# host-local), a small runtime (lib/cni_runtime.py, SPEC.md section 3) runs
# the chain from a "node" netns for a "pod" netns, and the suite checks the
# spec's side of the plugin for 0.4.0, 1.0.0 and 1.1.0: unannotated pods
# pass through unchanged (and their network works), DEL is idempotent with
# knitd gone, an annotated ADD fails with "try again later" and leaves
# nothing behind, and each kind of bad input gets its error code.
source "$(dirname "$0")/lib/common.sh"

e2e_begin cni_plugin
CNI=$KNIT_BUILD_DIR/cni-plugin/knit-cni
RUNTIME=$KNIT_SOURCE_DIR/test/e2e/lib/cni_runtime.py
e2e_need_bin "$CNI" /usr/lib/cni/bridge /usr/lib/cni/host-local ip python3 sha256sum

NODE=knit-cni-$$-node POD=knit-cni-$$-pod POD2=knit-cni-$$-pod2
BR=kc$$br
NET=10.$((200 + $$ % 50)).$(($$ / 50 % 250)).0/24
SOCK=$E2E_DIR/knitd.sock
BIN=$E2E_DIR/bin
export CNI_PATH=$BIN:/usr/lib/cni CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$POD
export CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ci;K8S_POD_NAME=runner-1;K8S_POD_UID=0b9a-1"
innode() { ip netns exec "$NODE" "$@"; }

e2e_defer "ip netns del $NODE"
e2e_defer "ip netns del $POD"
e2e_defer "ip netns del $POD2"
ip netns add "$NODE" && ip netns add "$POD" && ip netns add "$POD2" || e2e_die "cannot create namespaces"
ip -n "$NODE" link set lo up
mkdir -p "$BIN"

# The node's primary CNI configuration, one directory per version.
primary() { # VERSION DIR
	mkdir -p "$2"
	cat >"$2/10-bridge.conflist" <<EOF
{"cniVersion":"$1","name":"knit-e2e-$$","plugins":[
 {"type":"bridge","bridge":"$BR","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","subnet":"$NET","dataDir":"$E2E_DIR/ipam"}}]}
EOF
}

# ---- the installer --------------------------------------------------------------

primary 1.0.0 "$E2E_DIR/net.d"
cp "$E2E_DIR/net.d/10-bridge.conflist" "$E2E_DIR/orig.conflist"
e2e_check "install copies the plugin and chains it" \
	"$CNI" install --conf-dir "$E2E_DIR/net.d" --bin-dir "$BIN" --socket "$SOCK"
e2e_check "the installed plugin is this build" cmp -s "$CNI" "$BIN/knit-cni"
e2e_expect "knit-cni is last in the primary conflist, with the pod-annotations capability" \
	"bridge knit-cni True $SOCK" \
	"$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); p=c["plugins"]
print(p[0]["type"], p[-1]["type"], p[-1]["capabilities"]["io.kubernetes.cri.pod-annotations"], p[-1]["socket"])' \
		"$E2E_DIR/net.d/10-bridge.conflist")"
e2e_check "the original is kept" cmp -s "$E2E_DIR/orig.conflist" "$E2E_DIR/net.d/10-bridge.conflist.knit-orig"
before=$(sha256sum <"$E2E_DIR/net.d/10-bridge.conflist")
"$CNI" install --conf-dir "$E2E_DIR/net.d" --bin-dir "$BIN" --socket "$SOCK" 2>/dev/null
e2e_expect "a second install changes nothing" "$before" "$(sha256sum <"$E2E_DIR/net.d/10-bridge.conflist")"

# ---- unannotated pods, through the runtime, per version ------------------------------

# rt CMD VERSION [ANNOTATIONS]: the runtime on the chain; output in $OUT, status in $RC.
rt() {
	local cmd=$1 ver=$2
	shift 2
	OUT=$(innode python3 "$RUNTIME" "$cmd" "$E2E_DIR/net-$ver/10-bridge.conflist" "$E2E_DIR/cache-$CNI_CONTAINERID" "$@" 2>>"$E2E_DIR/stderr.log")
	RC=$?
}
# plugin CMD CONF: knit-cni alone, as the runtime execs it.
plugin() {
	OUT=$(printf '%s' "$2" | CNI_COMMAND=$1 ip netns exec "$NODE" "$BIN/knit-cni" 2>>"$E2E_DIR/stderr.log")
	RC=$?
}
code() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("code"))' "$OUT" 2>/dev/null; }
same_json() { python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]) == json.loads(sys.argv[2]) else 1)' "$1" "$2"; }
pod_links() { ip -n "${1:-$POD}" -o link show | awk -F': ' '{print $2}' | sort | tr '\n' ' '; }
leases() { ls "$E2E_DIR/ipam/knit-e2e-$$" 2>/dev/null | grep -c '^10\.' ; }
UNANNOTATED='{"app":"web"}'
ANNOTATED='{"knit.dev/identity":"true","knit.dev/tags":"tag:ci"}'

for ver in 0.4.0 1.0.0; do
	primary "$ver" "$E2E_DIR/net-$ver"
	"$CNI" install --conf-dir="$E2E_DIR/net-$ver" --bin-dir="$BIN" --socket="$SOCK" 2>/dev/null ||
		e2e_die "install for $ver"
	export CNI_CONTAINERID=pod-$ver
	rt ADD "$ver" "$UNANNOTATED"
	e2e_expect "$ver: ADD of an unannotated pod succeeds with knitd absent" 0 "$RC"
	result=$OUT
	e2e_expect "$ver: the result is the chain's, in $ver" "$ver" \
		"$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cniVersion"])' "$result")"
	e2e_check "$ver: no knit0 in the pod" bash -c "! ip -n $POD link show knit0 2>/dev/null"
	ip=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ips"][0]["address"].split("/")[0])' "$result")
	e2e_check "$ver: the pod's primary network works (node pings $ip)" innode ping -c1 -W2 "$ip"

	# knit-cni's own output for that prevResult is the prevResult itself.
	conf=$(python3 -c 'import json,sys
print(json.dumps({"cniVersion":sys.argv[1],"name":"knit-e2e","type":"knit-cni","socket":sys.argv[2],
 "runtimeConfig":{"io.kubernetes.cri.pod-annotations":json.loads(sys.argv[4])},"prevResult":json.loads(sys.argv[3])}))' \
		"$ver" "$SOCK" "$result" "$UNANNOTATED")
	plugin ADD "$conf"
	e2e_check "$ver: knit-cni returns prevResult unchanged" same_json "$result" "$OUT"

	rt CHECK "$ver" "$UNANNOTATED"
	e2e_expect "$ver: CHECK passes" 0 "$RC"

	# An annotated pod (another netns) while knitd is away: try again
	# later, and after the runtime's DEL nothing stays.
	export CNI_CONTAINERID=pod-$ver-annotated CNI_NETNS=/var/run/netns/$POD2
	n=$(leases)
	rt ADD "$ver" "$ANNOTATED"
	e2e_expect "$ver: annotated ADD with knitd absent fails" 1 "$RC"
	e2e_expect "$ver: ... with code 11 (try again later)" 11 "$(code)"
	rt DEL "$ver" "$ANNOTATED" # the runtime deletes after a failed ADD
	e2e_expect "$ver: DEL after the failed ADD succeeds" 0 "$RC"
	e2e_expect "$ver: ... and the pod has no interface left" "lo " "$(pod_links "$POD2")"
	e2e_expect "$ver: ... and the bridge's address was released" "$n" "$(leases)"

	export CNI_CONTAINERID=pod-$ver CNI_NETNS=/var/run/netns/$POD
	rt DEL "$ver" "$UNANNOTATED"
	e2e_expect "$ver: DEL succeeds" 0 "$RC"
	rt DEL "$ver" "$UNANNOTATED"
	e2e_expect "$ver: DEL again succeeds" 0 "$RC"
	e2e_expect "$ver: nothing is left in the pod" "lo " "$(pod_links)"
	e2e_expect "$ver: no address is left reserved" 0 "$(leases)"
done

# ---- 1.1.0, and the errors, by calling knit-cni as the runtime does --------------------

export CNI_CONTAINERID=pod-direct
rt ADD 1.0.0 "$UNANNOTATED"
prev=$OUT
e2e_defer "CNI_CONTAINERID=pod-direct ip netns exec $NODE python3 $RUNTIME DEL $E2E_DIR/net-1.0.0/10-bridge.conflist $E2E_DIR/cache-pod-direct"
conf_with() { # VERSION ANNOTATIONS [PREV]: a knit-cni request configuration
	python3 -c 'import json,sys
c={"cniVersion":sys.argv[1],"name":"knit-e2e","type":"knit-cni","socket":sys.argv[2],
 "runtimeConfig":{"io.kubernetes.cri.pod-annotations":json.loads(sys.argv[3])}}
if len(sys.argv) > 4: c["prevResult"]=json.loads(sys.argv[4])
print(json.dumps(c))' "$1" "$SOCK" "$2" "${@:3}"
}

plugin ADD "$(conf_with 1.1.0 "$UNANNOTATED" "$prev")"
want=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["cniVersion"]="1.1.0"; print(json.dumps(r))' "$prev")
e2e_check "1.1.0: a 1.0.0 prevResult passes through converted to 1.1.0" same_json "$want" "$OUT"
plugin ADD "$(conf_with 0.4.0 "$UNANNOTATED" "$prev")"
e2e_expect "0.4.0: a 1.0.0 prevResult gets ips[].version" "4" \
	"$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ips"][0]["version"])' "$OUT")"
plugin CHECK "$(conf_with 1.1.0 "$UNANNOTATED" "$prev")"
e2e_expect "1.1.0: CHECK of an unannotated pod passes" 0 "$RC"

plugin VERSION '{"cniVersion":"1.1.0"}'
e2e_expect "VERSION lists the versions" '0.3.0 0.3.1 0.4.0 1.0.0 1.1.0' \
	"$(python3 -c 'import json,sys; print(" ".join(json.loads(sys.argv[1])["supportedVersions"]))' "$OUT")"

plugin ADD '{"cniVersion":"1.0.0","name":"knit-e2e","type":"knit-cni",'
e2e_expect "malformed configuration: code 6" "1 6" "$RC $(code)"
plugin ADD "$(conf_with 1.0.0 "$UNANNOTATED")"
e2e_expect "ADD without prevResult: code 7" "1 7" "$RC $(code)"
plugin ADD "$(conf_with 0.2.0 "$UNANNOTATED" "$prev")"
e2e_expect "cniVersion 0.2.0: code 1" "1 1" "$RC $(code)"
plugin ADD "$(conf_with 2.0.0 "$UNANNOTATED" "$prev")"
e2e_expect "cniVersion 2.0.0: code 1" "1 1" "$RC $(code)"
OUT=$(printf '%s' "$(conf_with 1.0.0 "$UNANNOTATED" "$prev")" | CNI_COMMAND=ADD CNI_IFNAME= ip netns exec "$NODE" "$BIN/knit-cni" 2>/dev/null)
e2e_expect "ADD without CNI_IFNAME: code 4" 4 "$(code)"
plugin STATUS "$(conf_with 1.1.0 "$UNANNOTATED")"
e2e_expect "STATUS with knitd absent: code 51 (existing identities cut off)" "1 51" "$RC $(code)"
plugin GC '{"cniVersion":"1.1.0","name":"knit-e2e","type":"knit-cni","socket":"'"$SOCK"'","cni.dev/valid-attachments":[]}'
e2e_expect "GC with knitd absent succeeds" 0 "$RC"

# A socket file nobody listens on (knitd crashed): also "try again later".
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$SOCK"
links=$(pod_links)
plugin ADD "$(conf_with 1.0.0 "$ANNOTATED" "$prev")"
e2e_expect "annotated ADD, stale knitd socket: code 11" "1 11" "$RC $(code)"
e2e_expect "... and the pod is as before" "$links" "$(pod_links)"
plugin DEL "$(conf_with 1.0.0 "$ANNOTATED" "$prev")"
e2e_expect "DEL with a stale knitd socket succeeds" 0 "$RC"
rm -f "$SOCK"

# Figure: the chain's own cost for a pod without the annotation.
conf=$(conf_with 1.0.0 "$UNANNOTATED" "$prev")
us=$(CNI_COMMAND=ADD python3 -c 'import subprocess,sys,time
conf=sys.argv[2].encode(); t=time.monotonic()
for _ in range(50):
    if subprocess.run([sys.argv[1]], input=conf, capture_output=True).returncode != 0: sys.exit(1)
print(int((time.monotonic()-t)/50*1e6))' "$BIN/knit-cni" "$conf")
e2e_check "50 unannotated ADDs in a row succeed" test -n "$us"
e2e_log "figure: unannotated ADD through knit-cni: $us us per exec (process start included; build: $(basename "$KNIT_BUILD_DIR"))"

# ---- uninstall ----------------------------------------------------------------------------

e2e_check "uninstall succeeds" "$CNI" install --uninstall --conf-dir "$E2E_DIR/net.d" --bin-dir "$BIN"
e2e_check "uninstall restores the original conflist byte for byte" \
	cmp -s "$E2E_DIR/orig.conflist" "$E2E_DIR/net.d/10-bridge.conflist"
e2e_expect "... and removes the backup" "" "$(ls "$E2E_DIR/net.d" | grep knit-orig)"
e2e_expect "no sanitizer report from any plugin run" 0 "$(grep -c Sanitizer "$E2E_DIR/stderr.log")"

e2e_end
