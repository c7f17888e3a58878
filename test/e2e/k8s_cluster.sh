#!/usr/bin/env bash
# A real three-node Kubernetes cluster on this machine (test/e2e/cluster):
# every node Ready, a Deployment of three replicas spread over the nodes, pods
# reaching each other across nodes over the primary CNI (bridge + host-local,
# routed on the underlay), a ClusterIP Service through kube-proxy, kubectl
# exec and logs through the kubelets, RBAC on; then `down` leaves no process,
# namespace, mount, veth, route or cgroup behind.
source "$(dirname "$0")/lib/common.sh"

e2e_begin k8s_cluster
CLUSTER=$KNIT_SOURCE_DIR/test/e2e/cluster
IMAGE=$KNIT_SOURCE_DIR/scripts/image
NAME=e2e$(($$ % 100000))
NODES=3
e2e_need_bin containerd runc ctr buildah etcd nsenter "$CLUSTER" "$IMAGE"

t0=$(date +%s)
e2e_defer "'$CLUSTER' down --name $NAME"
"$CLUSTER" up --name "$NAME" --nodes "$NODES" >"$E2E_DIR/up.log" 2>&1 ||
	e2e_die "cluster up failed: $(tail -15 "$E2E_DIR/up.log")"
t_up=$(($(date +%s) - t0))
e2e_pass "cluster up --nodes $NODES in ${t_up}s"
eval "$("$CLUSTER" env --name "$NAME")"
K() { "$KUBECTL" "$@"; }
q() { "$@" >/dev/null 2>&1; }
DIR=$KNIT_CLUSTER_DIR
NET=$KNIT_CLUSTER_NET

# --- nodes ----------------------------------------------------------------
ready=$(K get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
e2e_expect "all $NODES nodes Ready" "$NODES" "$ready"
e2e_expect "no node keeps a taint (the node-lifecycle controller lifted not-ready)" "" \
	"$(K get nodes -o jsonpath='{.items[*].spec.taints[*].key}')"
addrs=$(K get nodes -o jsonpath='{range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' | sort | tr '\n' ' ')
e2e_expect "node InternalIPs are the underlay addresses" "10.$NET.0.11 10.$NET.0.12 10.$NET.0.13 " "$addrs"
e2e_check "apiserver /readyz from the root namespace over the underlay" q K get --raw /readyz

# --- a Deployment spread over the nodes -----------------------------------
archive=$("$IMAGE" archive knit.local/busybox:1 2>"$E2E_DIR/image.log") ||
	e2e_die "busybox image: $(tail -5 "$E2E_DIR/image.log")"
e2e_check "image archive imported into every node's containerd" q \
	"$CLUSTER" load --name "$NAME" "$archive"
K apply -f - >/dev/null <<'EOF' || e2e_die "cannot create the Deployment"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: web}}
      containers:
      - name: web
        image: knit.local/busybox:1
        imagePullPolicy: Never
        command: ["/bin/sh", "-c"]
        args:
        - echo "hello from $(hostname)"; mkdir -p /tmp/www; hostname >/tmp/www/index.html;
          exec httpd -f -p 8080 -h /tmp/www
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
e2e_check "Deployment web rolls out 3 replicas" q K rollout status deployment/web --timeout=120s

pods=()
while read -r p; do pods+=("$p"); done < <(K get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
declare -A ip_of node_of
for p in "${pods[@]}"; do
	ip_of[$p]=$(K get pod "$p" -o jsonpath='{.status.podIP}')
	node_of[$p]=$(K get pod "$p" -o jsonpath='{.spec.nodeName}')
done
e2e_expect "3 pods on 3 distinct nodes" 3 "$(printf '%s\n' "${node_of[@]}" | sort -u | wc -l)"
cidr_ok=1
for p in "${pods[@]}"; do
	n=${node_of[$p]#"$NAME"-n}
	case "${ip_of[$p]}" in "10.$NET.$((64 + n))."*) ;; *) cidr_ok=0 ;; esac
done
e2e_check "each pod's IP is in its node's pod CIDR" test "$cidr_ok" = 1

# --- pod to pod across nodes over the primary CNI -------------------------
http_get() { # POD IP PORT: the body of GET / from inside POD
	K exec "$1" -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3 | tail -n1"
}
for src in "${pods[@]}"; do
	for dst in "${pods[@]}"; do
		[ "${node_of[$src]}" != "${node_of[$dst]}" ] || continue
		e2e_check "ping ${node_of[$src]} -> ${node_of[$dst]} (pod to pod)" \
			q K exec "$src" -- ping -c 1 -W 3 "${ip_of[$dst]}"
		e2e_expect "HTTP ${node_of[$src]} -> ${node_of[$dst]} (pod to pod)" "$dst" \
			"$(http_get "$src" "${ip_of[$dst]}" 8080 2>&1)"
	done
done
svc=$(K get service web -o jsonpath='{.spec.clusterIP}')
got=$(http_get "${pods[0]}" "$svc" 80 2>&1)
e2e_check "ClusterIP Service $svc answers through kube-proxy (got '$got')" \
	test -n "${ip_of[$got]:-}"
e2e_expect "the root namespace reaches a pod over the underlay routes" "${pods[1]}" \
	"$(curl -s --max-time 3 "http://${ip_of[${pods[1]}]}:8080/")"
e2e_check "a pod reaches the kubernetes Service (apiserver via ClusterIP)" \
	K exec "${pods[0]}" -- sh -c "echo | nc -w 3 10.$NET.128.1 443 >/dev/null"
e2e_check "pods get their ServiceAccount token" \
	K exec "${pods[0]}" -- test -s /var/run/secrets/kubernetes.io/serviceaccount/token

# --- kubectl exec and logs go through the kubelets ------------------------
e2e_expect "kubectl exec runs in the pod" "${pods[2]}" "$(K exec "${pods[2]}" -- hostname 2>&1)"
e2e_expect "kubectl exec passes stdin" "knit" "$(echo knit | K exec -i "${pods[2]}" -- cat 2>&1)"
e2e_expect "kubectl logs shows the container's output" "hello from ${pods[0]}" \
	"$(K logs "${pods[0]}" 2>&1 | head -n1)"

# --- credentials and RBAC -------------------------------------------------
K create serviceaccount nobody >/dev/null
sa_secret() { [ -n "$(K get serviceaccount nobody -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]; }
e2e_wait_for 30 sa_secret || e2e_fail "no token Secret for ServiceAccount nobody"
tok=$(K get secret "$(K get serviceaccount nobody -o jsonpath='{.secrets[0].name}')" \
	-o jsonpath='{.data.token}' | base64 -d)
out=$("$KUBECTL" --kubeconfig /dev/null --server "$KNIT_CLUSTER_SERVER" \
	--certificate-authority "$DIR/pki/ca.crt" --token "$tok" get pods 2>&1)
e2e_check "RBAC: a ServiceAccount without bindings is refused (Forbidden)" \
	grep -q Forbidden <<<"$out"
out=$("$KUBECTL" --kubeconfig "$DIR/node1/kubelet.kubeconfig" get secrets -A 2>&1)
e2e_check "Node authorizer: a kubelet's credentials cannot list secrets" grep -q Forbidden <<<"$out"
e2e_check "Node authorizer: a kubelet's credentials read its own Node" \
	q "$KUBECTL" --kubeconfig "$DIR/node1/kubelet.kubeconfig" get node "$NAME-n1"

# --- a node's filesystem view is its own ----------------------------------
per_node=$(for i in $(seq "$NODES"); do
	"$CLUSTER" node --name "$NAME" "$i" ls /var/log/pods | grep -c '^default_web-'
done | tr '\n' ' ')
e2e_expect "each node's /var/log/pods holds only its own pod" "1 1 1 " "$per_node"

# --- down -----------------------------------------------------------------
t1=$(date +%s)
"$CLUSTER" down --name "$NAME" >"$E2E_DIR/down.log" 2>&1
rc=$?
t_down=$(($(date +%s) - t1))
e2e_expect "cluster down exits 0 (${t_down}s)" 0 "$rc"
e2e_expect "no process of the cluster left" "" \
	"$(pgrep -f "$DIR/|kc-$NAME-" | tr '\n' ' ')"
e2e_expect "no network namespace left" "" "$(ip netns list | grep "kc-$NAME-" || true)"
e2e_expect "no veth left in the root namespace" "" "$(ip -o link show | grep "kc-$NAME" || true)"
e2e_expect "no route to the cluster's networks left" "" "$(ip -4 route show | grep "^10\.$NET\." || true)"
e2e_expect "no mount left" "" "$(grep -E "$DIR|kc-$NAME-" /proc/self/mountinfo || true)"
e2e_expect "no cgroup left" "" "$(ls -d /sys/fs/cgroup/knit-"$NAME" /sys/fs/cgroup/*/knit-"$NAME" 2>/dev/null || true)"
e2e_check "state directory removed" test ! -e "$DIR"
e2e_log "cycle: up ${t_up}s, tests $((t1 - t0 - t_up))s, down ${t_down}s"
e2e_end
