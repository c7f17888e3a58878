#!/usr/bin/env bash
# Foundation smoke: a real kube-apiserver, a CRD applied with kubectl, and
# knit's own HTTP + JSON code creating, listing and watching its objects
# while kubectl changes them.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"

e2e_begin kube_smoke
SMOKE=$KNIT_BUILD_DIR/test/e2e/tools/kube_smoke
e2e_need_bin "$SMOKE"
kube_up

NS=knit-smoke
"$KUBECTL" create namespace "$NS" >/dev/null || e2e_die "create namespace"
"$KUBECTL" apply -f "$KNIT_SOURCE_DIR/test/e2e/fixtures/widget-crd.yaml" >/dev/null ||
	e2e_die "kubectl apply of the CRD failed"
e2e_check "CRD established" "$KUBECTL" wait --for condition=established --timeout=60s crd/widgets.smoke.knit.dev
e2e_wait_for 30 "$KUBECTL" get widgets -n "$NS" || e2e_die "widgets resource never served"

OUT=$E2E_DIR/smoke.out
# Events expected: ADDED b, MODIFIED b, DELETED b, DELETED a.
e2e_bg kube_smoke "$SMOKE" "$KUBE_SERVER" "$KUBE_TOKEN" "$KUBE_CA" \
	"/apis/smoke.knit.dev/v1/namespaces/$NS/widgets" widget-a 4
SMOKE_PID=$E2E_PID
cp /dev/null "$OUT"
watching() { grep -q '^WATCHING' "$E2E_DIR/kube_smoke.log"; }
e2e_check "knit created, listed and started watching" e2e_wait_for 30 watching
e2e_check "CREATED line names the object" grep -q '^CREATED widget-a uid=' "$E2E_DIR/kube_smoke.log"
e2e_check "LIST found it" grep -q '^LISTED 1 found=yes' "$E2E_DIR/kube_smoke.log"
e2e_expect "kubectl sees the object knit created" 1 \
	"$("$KUBECTL" get widget widget-a -n "$NS" -o jsonpath='{.spec.size}')"

"$KUBECTL" apply -n "$NS" -f - >/dev/null <<EOW || e2e_fail "kubectl apply widget-b"
apiVersion: smoke.knit.dev/v1
kind: Widget
metadata: {name: widget-b}
spec: {size: 5}
EOW
"$KUBECTL" patch widget widget-b -n "$NS" --type merge -p '{"spec":{"size":7}}' >/dev/null ||
	e2e_fail "kubectl patch"
"$KUBECTL" delete widget widget-b -n "$NS" --wait=true >/dev/null || e2e_fail "kubectl delete widget-b"
"$KUBECTL" delete widget widget-a -n "$NS" --wait=true >/dev/null || e2e_fail "kubectl delete widget-a"

exited() { ! kill -0 "$SMOKE_PID" 2>/dev/null; }
e2e_check "watcher finished after four events" e2e_wait_for 30 exited
wait "$SMOKE_PID" 2>/dev/null
e2e_expect "watcher exit status" 0 "$?"
grep -E '^(ADDED|MODIFIED|DELETED) ' "$E2E_DIR/kube_smoke.log" >"$OUT"
e2e_expect "watch events in order" \
	"$(printf 'ADDED widget-b 5\nMODIFIED widget-b 7\nDELETED widget-b 7\nDELETED widget-a 1')" \
	"$(cat "$OUT")"

# The watch must fail loudly, not hang, when the apiserver refuses it.
e2e_bg kube_smoke_denied "$SMOKE" "$KUBE_SERVER" "$KUBE_USER_TOKEN" "$KUBE_CA" \
	"/apis/smoke.knit.dev/v1/namespaces/$NS/widgets" widget-c 1
DENIED_PID=$E2E_PID
denied_exited() { ! kill -0 "$DENIED_PID" 2>/dev/null; }
e2e_check "an unauthorised client exits" e2e_wait_for 30 denied_exited
e2e_check "and reports the API's Forbidden status" grep -q 'HTTP 403: .*forbidden.*(Forbidden)' \
	"$E2E_DIR/kube_smoke_denied.log"
e2e_end
