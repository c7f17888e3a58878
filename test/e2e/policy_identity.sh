#!/usr/bin/env bash
# Identity for policy, from Kubernetes authentication, through the
# operator's admission webhooks on a real kube-apiserver: the operator
# provisions its own CA and serving certificate (Secret knit-webhook-tls),
# writes the CA into its webhook configurations' caBundle, and then an
# AuthKey created by a client-certificate user gets that user as
# spec.user; naming someone else is refused unless you are a cluster admin;
# spec.user never changes. A restarted operator keeps its certificate.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/apiserver.sh"

e2e_begin policy_identity
OPERATOR=$KNIT_BUILD_DIR/operator/knit-operator
e2e_need_bin "$OPERATOR" openssl curl
kube_up
K=$KUBECTL
NS=knit-system
$K create namespace "$NS" >/dev/null || e2e_die "create namespace"
$K create namespace team >/dev/null || e2e_die "create namespace team"
$K apply $(printf -- "-f %s " "$KNIT_SOURCE_DIR"/manifests/01-crd-*.yaml) >/dev/null || e2e_die "apply CRDs"
$K wait --for condition=established --timeout=60s crd --all >/dev/null || e2e_die "CRDs not established"

WH_PORT=$(e2e_free_port)
# The API server reaches the webhook at https://localhost:PORT; the CA the
# operator makes must be the one in caBundle, so it starts empty.
kube_knit_webhooks "$WH_PORT" Fail | $K apply -f - >/dev/null || e2e_die "cannot create the webhook configurations"

HTTP_PORT=$(e2e_free_port)
op_start() {
	e2e_bg "operator-$1" "$OPERATOR" --namespace "$NS" --identity "$1" --http-listen "127.0.0.1:$HTTP_PORT" \
		--coord-listen 127.0.0.1:0 --no-leader-election \
		--webhook-listen "127.0.0.1:$WH_PORT" --webhook-dns-name localhost --log-level info
	OP_PID=$E2E_PID
}
op_start op-1
bundle() { $K get mutatingwebhookconfiguration knit -o jsonpath='{.webhooks[0].clientConfig.caBundle}'; }
has_bundle() { [ -n "$(bundle)" ] && [ -n "$($K get validatingwebhookconfiguration knit -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]; }
e2e_check "the operator wrote its CA into both webhook configurations" e2e_wait_for 60 has_bundle
e2e_expect "the Secret holds a TLS pair" "kubernetes.io/tls" "$($K -n "$NS" get secret knit-webhook-tls -o jsonpath='{.type}')"
e2e_expect "caBundle is the Secret's CA" "$($K -n "$NS" get secret knit-webhook-tls -o jsonpath='{.data.ca\.crt}')" "$(bundle)"
$K -n "$NS" get secret knit-webhook-tls -o jsonpath='{.data.ca\.crt}' | base64 -d >"$E2E_DIR/ca.crt"
code=$(curl -s --cacert "$E2E_DIR/ca.crt" -o /dev/null -w '%{http_code}' --max-time 5 -X POST -d '{}' \
	"https://localhost:$WH_PORT/mutate/authkeys")
e2e_expect "the webhook's certificate verifies against that CA for localhost (and junk gets 400)" 400 "$code"

# A client-certificate user of our own, allowed to make AuthKeys in "team".
user_cert() { # NAME
	openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$E2E_DIR/$1.key" -out "$E2E_DIR/$1.csr" 2>/dev/null &&
		openssl x509 -req -in "$E2E_DIR/$1.csr" -CA "$KUBE_DIR/ca.crt" -CAkey "$KUBE_DIR/ca.key" \
			-CAcreateserial -days 1 -out "$E2E_DIR/$1.crt" 2>/dev/null
}
user_cert alice@example.com || e2e_die "cannot make alice's certificate"
$K -n team create role authkeys --verb=create,get,list,update,patch --resource=authkeys.knit.dev >/dev/null
$K -n team create rolebinding alice --role=authkeys --user=alice@example.com >/dev/null
KA() {
	"$KUBECTL" --server "$KUBE_SERVER" --certificate-authority "$KUBE_CA" \
		--client-certificate "$E2E_DIR/alice@example.com.crt" --client-key "$E2E_DIR/alice@example.com.key" \
		--kubeconfig /dev/null "$@"
}
e2e_expect "alice is alice@example.com to the API server" yes "$(KA auth can-i create authkeys.knit.dev -n team)"
ak() { # NAME [USER]
	printf '{"apiVersion":"knit.dev/v1alpha1","kind":"AuthKey","metadata":{"name":"%s","namespace":"team"},"spec":{"tailnet":"default"%s}}' \
		"$1" "${2:+,\"user\":\"$2\"}"
}
created() { ak alice-key | KA apply -f - >/dev/null 2>"$E2E_DIR/alice.err"; }
e2e_check "alice creates an AuthKey (the webhook answers)" e2e_wait_for 30 created
e2e_expect "her key's user is alice@example.com, filled in by the webhook" alice@example.com \
	"$($K -n team get authkey alice-key -o jsonpath='{.spec.user}')"
out=$(ak for-bob bob@example.com | KA apply -f - 2>&1)
e2e_check "alice cannot make a key that acts as bob" grep -q 'is not you ("alice@example.com")' <<<"$out"
e2e_check "and none was made" sh -c "! '$KUBECTL' -n team get authkey for-bob >/dev/null 2>&1"
e2e_check "a cluster admin may name bob" sh -c "$(declare -f ak); ak admin-for-bob bob@example.com | '$KUBECTL' apply -f - >/dev/null"
e2e_expect "that key's user is bob" bob@example.com "$($K -n team get authkey admin-for-bob -o jsonpath='{.spec.user}')"
out=$($K -n team patch authkey alice-key --type merge -p '{"spec":{"user":"mallory"}}' 2>&1)
e2e_check "spec.user is immutable, even for an admin" grep -q immutable <<<"$out"
$K -n team patch authkey alice-key --type json -p '[{"op":"remove","path":"/spec/user"}]' >/dev/null 2>&1
e2e_expect "clearing spec.user gives it back" alice@example.com "$($K -n team get authkey alice-key -o jsonpath='{.spec.user}')"

metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }
e2e_check "refusals are counted on /metrics" \
	awk -v v="$(metric 'knit_webhook_requests_total{webhook="authkeys",result="refused"}')" 'BEGIN { exit !(v >= 2) }'

# A restart keeps the certificate (no new CA for the API server to learn).
serial() { echo | openssl s_client -connect "127.0.0.1:$WH_PORT" -servername localhost 2>/dev/null | openssl x509 -noout -serial; }
before=$(serial)
e2e_kill "$OP_PID"
op_start op-2
serving() { [ -n "$(serial)" ]; }
e2e_check "the restarted operator serves again" e2e_wait_for 30 serving
e2e_expect "with the same certificate" "$before" "$(serial)"
e2e_expect "and the same caBundle" "$($K -n "$NS" get secret knit-webhook-tls -o jsonpath='{.data.ca\.crt}')" "$(bundle)"
made_again() { ak alice-key-2 | KA apply -f - >/dev/null 2>&1; }
e2e_check "and alice's next key goes through it" e2e_wait_for 30 made_again
e2e_expect "with her user" alice@example.com "$($K -n team get authkey alice-key-2 -o jsonpath='{.spec.user}')"

e2e_end
