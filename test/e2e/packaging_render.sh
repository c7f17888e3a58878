#!/usr/bin/env bash
# The two ways to install knit describe the same deployment: the Helm chart
# (charts/knit) lints clean under --strict, renders with default values the
# same kinds and names as `kubectl apply -f manifests/` (but for the
# Namespace, which Helm makes with --create-namespace, and the `helm test`
# pod), and its schema
# refuses values with a wrong type or an unknown key, naming the key. Every
# manifest parses, and none carries a key YAML silently turned into
# something else (a flow mapping's comma splitting a description made one
# CRD re-apply as "configured" forever). The image's build packages are
# read from scripts/install-deps, so the two lists cannot drift, and the
# packages its runtime stage names are in install-deps too. No cluster
# needed: helm 4.1 from the cache.
source "$(dirname "$0")/lib/common.sh"

e2e_begin packaging_render
HELM=$KNIT_CACHE/bin/helm
CHART=$KNIT_SOURCE_DIR/charts/knit
MAN=$KNIT_SOURCE_DIR/manifests
e2e_need_bin "$HELM" python3

e2e_check "helm lint --strict is clean" "$HELM" lint --strict "$CHART"

# kind/namespace/name of every object in a multi-document YAML stream.
objects() {
	python3 -c '
import sys, yaml
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f) if f != "-" else sys.stdin):
        if d:
            print("%s %s %s" % (d["kind"], d["metadata"].get("namespace", "-"), d["metadata"]["name"]))
' "$@" | sort
}
"$HELM" template knit "$CHART" -n knit-system --include-crds --skip-tests >"$E2E_DIR/chart.yaml" 2>"$E2E_DIR/helm.err" ||
	e2e_die "helm template failed: $(cat "$E2E_DIR/helm.err")"
objects "$E2E_DIR/chart.yaml" >"$E2E_DIR/chart.objs"
objects "$MAN"/*.yaml | grep -v '^Namespace ' >"$E2E_DIR/manifests.objs"
if diff -u "$E2E_DIR/manifests.objs" "$E2E_DIR/chart.objs" >"$E2E_DIR/objs.diff"; then
	e2e_pass "helm template renders the same $(wc -l <"$E2E_DIR/chart.objs") kinds and names as manifests/"
else
	e2e_fail "chart and manifests/ differ: $(cat "$E2E_DIR/objs.diff")"
fi
e2e_expect "the chart's CRDs are manifests/' CRDs, byte for byte" "" \
	"$(for f in "$CHART"/crds/*.yaml; do cmp -s "$f" "$MAN/01-crd-$(basename "$f")" || echo "$f"; done)"

# Values the schema must refuse, and the key path it must name.
refused() { # DESC KEYPATH HELM-ARGS...
	local desc=$1 key=$2 out
	shift 2
	if out=$("$HELM" template knit "$CHART" "$@" 2>&1); then
		e2e_fail "$desc: accepted"
	elif grep -q -- "$key" <<<"$out"; then
		e2e_pass "$desc: refused, naming $key"
	else
		e2e_fail "$desc: refused without naming $key: $out"
	fi
}
refused "a string for operator.replicas" "/operator/replicas" --set operator.replicas=two
refused "an unknown key under knitd" "tunn" --set knitd.tunn=x
refused "an unknown top-level key" "imagee" --set imagee.tag=x
refused "a bad tag on an auth key" "/authKeys/ci/tags/0" --set 'authKeys.ci.tags={ci}'
refused "a bad pull policy" "/image/pullPolicy" --set image.pullPolicy=Sometimes
printf 'knitd:\n  port: "41641"\n' >"$E2E_DIR/bad-values.yaml"
refused "a values file with a wrong type" "/knitd/port" -f "$E2E_DIR/bad-values.yaml"
refused "a setting the operator fixes for the nodes' key" "/authKeys/nodes" --set authKeys.nodes.reusable=false
# The nodes' AuthKey and the default Tailnet come from the operator's flags.
e2e_check "both install paths let the operator bootstrap the AuthKey nodes" \
	sh -c "grep -q -- '- --bootstrap-authkey=nodes\$' '$MAN/10-operator.yaml' && grep -q -- '- --bootstrap-authkey=nodes\$' '$E2E_DIR/chart.yaml'"
e2e_check "the chart passes authKeys.nodes and tailnet values to the operator's flags" \
	sh -c "'$HELM' template knit '$CHART' --set 'authKeys.nodes.tags={tag:node,tag:k8s}' --set tailnet.dnsSuffix=corp.example 2>/dev/null |
		grep -q -- '--bootstrap-authkey-tags=tag:node,tag:k8s' &&
		'$HELM' template knit '$CHART' --set tailnet.dnsSuffix=corp.example 2>/dev/null | grep -q -- '--default-tailnet-dns-suffix=corp.example'"
e2e_check "an extra auth key renders as an AuthKey" \
	sh -c "'$HELM' template knit '$CHART' -n knit-system --set authKeys.ci.ephemeral=true --set 'authKeys.ci.tags={tag:ci}' |
		grep -A12 '^kind: AuthKey' | grep -q 'tags: \[\"tag:ci\"\]'"
# The relay: on by default in both, in the default Tailnet's relay map; off, nothing of it.
refused "a bad relay Service type" "/relay/service/type" --set relay.service.type=External
e2e_check "both install paths put the relay Service in the default Tailnet's relay map" \
	sh -c "grep -q -- '- --default-tailnet-relay=http://knit-relay.knit-system.svc:80\$' '$MAN/10-operator.yaml' && grep -q -- '- --default-tailnet-relay=http://knit-relay.knit-system.svc:80\$' '$E2E_DIR/chart.yaml'"
e2e_check "relay.hostName and the Service's ports reach the operator's flags" \
	sh -c "'$HELM' template knit '$CHART' --set relay.hostName=relay.example.com --set relay.service.port=8443 --set relay.service.stunPort=3479 2>/dev/null |
		grep -q -- '--default-tailnet-relay=http://relay.example.com:8443' &&
		'$HELM' template knit '$CHART' --set relay.service.stunPort=3479 2>/dev/null | grep -q -- '--default-tailnet-relay-stun-port=3479'"
e2e_check "relay.replicas=3 meshes three replicas" \
	sh -c "'$HELM' template knit '$CHART' -n knit-system --set relay.replicas=3 2>/dev/null | grep -q -- 'knit-relay-2.knit-relay-mesh.knit-system.svc:8080'"
e2e_expect "relay.enabled=false renders no relay and no relay flag" 0 \
	"$("$HELM" template knit "$CHART" --set relay.enabled=false 2>/dev/null | grep -c 'knit-relay')"
refused "a bad namespace in operator.authKeyNamespaces" "/operator/authKeyNamespaces/0" \
	--set 'operator.authKeyNamespaces={Team_A}'
# Secrets: bound per namespace, never cluster-wide (issue 15.8).
secret_bindings() {
	"$HELM" template knit "$CHART" -n knit-system "$@" 2>/dev/null | python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d and d["kind"] in ("RoleBinding", "ClusterRoleBinding") and d["roleRef"]["name"] == "knit-operator-secrets":
        print(d["kind"], d["metadata"].get("namespace", "-"))
' | sort | xargs
}
e2e_expect "the operator's Secrets role is bound in its own namespace only" "RoleBinding knit-system" "$(secret_bindings)"
e2e_expect "and in each of operator.authKeyNamespaces" "RoleBinding ci RoleBinding knit-system RoleBinding team" \
	"$(secret_bindings --set 'operator.authKeyNamespaces={ci,team}')"
clusterrole_secrets() { # the knit-operator ClusterRole's rules naming secrets, in FILE
	python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "knit-operator":
        print(sum("secrets" in r.get("resources", []) for r in d["rules"]))
' "$1"
}
e2e_expect "the operator's ClusterRole grants no Secrets (manifests, chart)" "0 0" \
	"$(clusterrole_secrets "$MAN/10-operator.yaml") $(clusterrole_secrets "$E2E_DIR/chart.yaml")"

e2e_expect "pods are patched only with operator.labelPods (the example's objects)" "0 2" \
	"$(grep -c 'knit-operator-pod-labels' "$E2E_DIR/chart.yaml") $("$HELM" template knit "$CHART" -n knit-system --set operator.labelPods=true 2>/dev/null | grep -c '^  name: knit-operator-pod-labels')"

# Every manifest and example parses; no null-valued key hides a YAML slip.
nulls() {
	python3 -c '
import sys, yaml
bad = []
def walk(x, path):
    if isinstance(x, dict):
        for k, v in x.items():
            if v is None:
                bad.append(path + "/" + str(k))
            walk(v, path + "/" + str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            walk(v, "%s/%d" % (path, i))
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        walk(d, f)
print("\n".join(bad))
' "$@"
}
e2e_expect "no manifest has a null-valued key" "" "$(nulls "$MAN"/*.yaml "$MAN"/examples/*.yaml "$E2E_DIR/chart.yaml")"

# The Dockerfile installs the "# build" group of scripts/install-deps: the
# group exists, is what the Dockerfile's own extraction yields, and holds
# the libraries CMake looks for.
build_pkgs=$(awk '/^\t# build$/{f=1; next} f && /^\t# /{exit} f' "$KNIT_SOURCE_DIR/scripts/install-deps" | xargs)
e2e_check "the Dockerfile takes its build packages from scripts/install-deps" \
	grep -q "awk '/^\\\\t# build\$/" "$KNIT_SOURCE_DIR/Dockerfile"
for p in cmake libcurl4-openssl-dev libsodium-dev libmicrohttpd-dev libnl-route-3-dev libyajl-dev libyaml-dev; do
	grep -qw -- "$p" <<<"$build_pkgs" || e2e_fail "install-deps' build group lacks $p"
done
e2e_pass "install-deps' build group holds every library CMake needs"
# The runtime stage names a few packages itself (the rest is what the
# binaries link): each one is in install-deps too, so the tests run with
# what the image ships.
runtime_pkgs=$(awk '/^FROM debian:bookworm$/ {rt = 1} rt && /\$\(cat \/tmp\/runtime-packages\)/ {
	for (i = 1; i <= NF; i++) { w = $i; sub(/;$/, "", w); if (w ~ /^[a-z0-9][a-z0-9.+-]+$/ && w != "cat") print w } }' "$KNIT_SOURCE_DIR/Dockerfile" | sort -u | xargs)
all_pkgs=$(sed -n '/^PKGS=(/,/^)/p' "$KNIT_SOURCE_DIR/scripts/install-deps")
e2e_check "the Dockerfile's runtime stage names its own packages ($runtime_pkgs)" test -n "$runtime_pkgs"
for p in $runtime_pkgs; do
	grep -qw -- "$p" <<<"$all_pkgs" || e2e_fail "the image installs $p, scripts/install-deps does not"
done

e2e_end
