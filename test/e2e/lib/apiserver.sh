# A real Kubernetes control plane for tests: etcd (Debian's etcd-server) and
# kube-apiserver 1.20.2 (built from Debian's source package by
# kube-build.sh), on 127.0.0.1 only, token and client-certificate auth, RBAC.
# Sourced after common.sh, inside a suite that called e2e_begin.
#
#   kube_up            starts both, waits for /readyz, writes $KUBECONFIG
#   kube_restart_apiserver
#   kube_stop_apiserver / kube_start_apiserver
#
# Exports: KUBE_DIR KUBECONFIG KUBE_SERVER KUBE_TOKEN KUBE_CA KUBECTL HELM
#          ETCD_ENDPOINT; KUBE_USER_TOKEN (user "knit-test", no groups: for
#          RBAC checks); client certificate admin.crt/admin.key in KUBE_DIR.

KUBE_BIN=$KNIT_CACHE/bin
KUBECTL=$KUBE_BIN/kubectl
HELM=$KUBE_BIN/helm

kube_certs() {
	local d=$1
	(
		cd "$d" || exit 1
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=knit-test-ca" \
			-keyout ca.key -out ca.crt
		openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
			-keyout apiserver.key -out apiserver.csr
		printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' >san.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days 2 -extfile san.ext -out apiserver.crt
		openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=knit-admin" \
			-keyout admin.key -out admin.csr
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days 2 -out admin.crt
		openssl genrsa -out sa.key 2048
		openssl rsa -in sa.key -pubout -out sa.pub
	) >"$d/certs.log" 2>&1 || e2e_die "certificate generation failed: $(tail -3 "$d/certs.log")"
}

kube_start_apiserver() {
	e2e_bg kube-apiserver "$KUBE_BIN/kube-apiserver" \
		--etcd-servers="$ETCD_ENDPOINT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
		--secure-port="$KUBE_PORT" --insecure-port=0 \
		--tls-cert-file="$KUBE_DIR/apiserver.crt" --tls-private-key-file="$KUBE_DIR/apiserver.key" \
		--client-ca-file="$KUBE_DIR/ca.crt" \
		--token-auth-file="$KUBE_DIR/tokens.csv" \
		--authorization-mode=RBAC \
		--service-account-key-file="$KUBE_DIR/sa.pub" \
		--service-account-signing-key-file="$KUBE_DIR/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--api-audiences=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.96.0.0/16 \
		--allow-privileged=true \
		--cert-dir="$KUBE_DIR/certs" \
		--profiling=false \
		--v=1
	KUBE_APISERVER_PID=$E2E_PID
	kube_wait_ready 120 || e2e_die "kube-apiserver not ready in 120s: $(tail -5 "$E2E_DIR/kube-apiserver.log")"
}

kube_stop_apiserver() {
	[ -n "${KUBE_APISERVER_PID:-}" ] && e2e_kill "$KUBE_APISERVER_PID"
	KUBE_APISERVER_PID=
}

kube_restart_apiserver() {
	kube_stop_apiserver
	kube_start_apiserver
}

kube_readyz() {
	curl -sf --max-time 2 --cacert "$KUBE_CA" -H "Authorization: Bearer $KUBE_TOKEN" \
		"$KUBE_SERVER/readyz" >/dev/null
}

kube_wait_ready() { e2e_wait_for "$1" kube_readyz; }

kube_up() {
	e2e_need_bin "$KUBE_BIN/kube-apiserver" "$KUBECTL" etcd openssl curl
	KUBE_DIR=$E2E_DIR/kube
	mkdir -p "$KUBE_DIR/etcd" "$KUBE_DIR/certs"
	chmod 700 "$KUBE_DIR/etcd"
	kube_certs "$KUBE_DIR"

	KUBE_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	KUBE_USER_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	{
		echo "$KUBE_TOKEN,knit-admin,uid-admin,\"system:masters\""
		echo "$KUBE_USER_TOKEN,knit-test,uid-test"
	} >"$KUBE_DIR/tokens.csv"
	chmod 600 "$KUBE_DIR/tokens.csv"

	local etcd_port etcd_peer
	etcd_port=$(e2e_free_port)
	etcd_peer=$(e2e_free_port)
	KUBE_PORT=$(e2e_free_port)
	ETCD_ENDPOINT=http://127.0.0.1:$etcd_port
	e2e_bg etcd etcd --name knit-test --data-dir "$KUBE_DIR/etcd" \
		--listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
		--listen-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-cluster "knit-test=http://127.0.0.1:$etcd_peer" \
		--listen-metrics-urls "" --enable-pprof=false
	ETCD_PID=$E2E_PID
	e2e_wait_for 30 curl -sf --max-time 1 "$ETCD_ENDPOINT/health" ||
		e2e_die "etcd not healthy in 30s: $(tail -5 "$E2E_DIR/etcd.log")"

	KUBE_SERVER=https://127.0.0.1:$KUBE_PORT
	KUBE_CA=$KUBE_DIR/ca.crt
	kube_start_apiserver

	KUBECONFIG=$KUBE_DIR/kubeconfig
	cat >"$KUBECONFIG" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: knit-test
  cluster:
    server: $KUBE_SERVER
    certificate-authority-data: $(base64 -w0 <"$KUBE_CA")
users:
- name: admin
  user:
    token: $KUBE_TOKEN
- name: admin-cert
  user:
    client-certificate: $KUBE_DIR/admin.crt
    client-key: $KUBE_DIR/admin.key
contexts:
- name: knit-test
  context: {cluster: knit-test, user: admin}
- name: knit-test-cert
  context: {cluster: knit-test, user: admin-cert}
current-context: knit-test
EOK
	chmod 600 "$KUBECONFIG"
	export KUBECONFIG KUBE_SERVER KUBE_TOKEN KUBE_CA KUBE_USER_TOKEN KUBE_DIR KUBECTL HELM ETCD_ENDPOINT
	e2e_wait_for 60 "$KUBECTL" get --raw /api/v1/namespaces/default ||
		e2e_die "default namespace never appeared"
	e2e_log "kube-apiserver ready at $KUBE_SERVER (etcd $ETCD_ENDPOINT)"
}

# kube_start_controller_manager [CONTROLLERS]: the real kube-controller-manager
# (default: the garbage collector, namespace and service-account controllers),
# no leader election, no serving ports.
kube_start_controller_manager() {
	local controllers=${1:-garbagecollector,namespace,serviceaccount,serviceaccount-token}
	e2e_need_bin "$KUBE_BIN/kube-controller-manager"
	e2e_bg kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
		--kubeconfig="$KUBECONFIG" \
		--controllers="$controllers" \
		--leader-elect=false \
		--port=0 --secure-port=0 \
		--use-service-account-credentials=false \
		--service-account-private-key-file="$KUBE_DIR/sa.key" \
		--root-ca-file="$KUBE_CA" \
		--v=1
	KUBE_CM_PID=$E2E_PID
}

# kube_knit_webhooks PORT AUTHKEY-FAILURE-POLICY: knit-operator's webhook
# configurations (named "knit", as --webhook-config defaults to), pointing at
# https://localhost:PORT with an empty caBundle: the operator fills it. The
# Policy webhook ignores failures (the operator checks policies itself).
kube_knit_webhooks() {
	cat <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: knit}
webhooks:
- name: authkeys.knit.dev
  clientConfig: {url: "https://localhost:$1/mutate/authkeys"}
  rules:
  - {apiGroups: [knit.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [authkeys]}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: $2
  timeoutSeconds: 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: knit}
webhooks:
- name: policies.knit.dev
  clientConfig: {url: "https://localhost:$1/validate/policies"}
  rules:
  - {apiGroups: [knit.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [policies]}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 5
YAML
}
