#!/usr/bin/env bash
# End to end for the operator on a real cluster: run deploy/e2e-kind.sh
# first with KEEP=1 (a kind cluster with the weft runtime on every node and
# a registry on localhost:5001). This script then installs the CRDs and the
# operator, starts a `weft agent` on this host as an edge device (its
# [cluster] section points at the kind cluster), applies a ModelDeployment
# placing the example module on cloud nodes and on the device, checks both
# answer, rolls a second digest out as a canary under traffic until it is
# promoted, pauses the API server to see the device keep serving, and
# stops the agent to see its replica reported unschedulable.
#
# THIS SCRIPT HAS NOT RUN IN WEFT'S CI: the development machines cannot run
# a Kubernetes API server or a docker daemon. The reconciler is tested
# against an in-memory API server (crates/operator/tests/operator.rs), the
# agent's cluster source likewise (crates/agent/tests/agent.rs), and the
# manifests against the Kubernetes API types (tests/tests/deploy.rs).
#
# Needs: what e2e-kind.sh needs, and jq. KEEP=1 keeps everything afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${CLUSTER:-weft-e2e}
reg=localhost:${REGISTRY_PORT:-5001}
ns=weft-models
step() { printf '\n==> %s\n' "$*"; }
for tool in docker kind kubectl curl cargo jq; do
    command -v "$tool" >/dev/null || { echo "e2e-operator: $tool is required" >&2; exit 1; }
done
kind get clusters | grep -qx "$cluster" ||
    { echo "e2e-operator: run KEEP=1 deploy/e2e-kind.sh first" >&2; exit 1; }
work=$(mktemp -d)
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step "the operator image, the CRDs and the operator"
docker build -f deploy/operator.Dockerfile -t weft-operator:0.1.0 .
kind load docker-image weft-operator:0.1.0 --name "$cluster"
kubectl apply -f deploy/crds.yaml
kubectl apply -f deploy/operator.yaml
kubectl -n weft-system rollout status deployment/weft-operator --timeout=180s

step "two versions of the example module, pushed by digest"
cargo build --release -p weft-cli
(cd modules && cargo build --release --target wasm32-wasip1 -p predictor)
push() { # version -> digest
    local pkg="$work/pkg-$1"
    mkdir -p "$pkg/models"
    cp modules/target/wasm32-wasip1/release/predictor.wasm "$pkg/predictor.wasm"
    cp tests/data/tiny.onnx "$pkg/models/tiny.onnx"
    printf '[module]\nname = "examples/tiny-predictor"\nversion = "%s"\nfile = "predictor.wasm"\n\n[[model]]\nname = "model"\nfile = "models/tiny.onnx"\n' "$1" >"$pkg/weft.toml"
    target/release/weft build "$pkg" --store "$work/store" >/dev/null
    target/release/weft push --json "examples/tiny-predictor:$1" "$reg/examples/tiny-predictor:$1" --store "$work/store" |
        jq -r .report.manifest_digest
}
v1=$(push 1.0.0)
v2=$(push 2.0.0)
echo "v1 $v1"
echo "v2 $v2"

step "this host as an edge device: weft agent with [cluster]"
kind get kubeconfig --name "$cluster" >"$work/kubeconfig"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
cat >"$work/agent.toml" <<EOF
[agent]
dir = "$work/agent"
status = "127.0.0.1:19400"
probation = "5s"

[cluster]
kubeconfig = "$work/kubeconfig"
namespace = "$ns"
device = "e2e-host"
labels = { site = "factory-1" }
bind = "127.0.0.1"
EOF
RUST_LOG=info target/release/weft agent --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent_pid=$!
kubectl -n "$ns" wait --for=jsonpath='{.status.architecture}' edgedevice/e2e-host --timeout=60s
kubectl -n "$ns" get edgedevices

step "a ModelDeployment: two cloud replicas, one edge replica, canary 50% then 100%"
arch=$(kubectl -n "$ns" get edgedevice e2e-host -o jsonpath='{.status.architecture}')
md() { # artifact digest
    sed -e "s#artifact: .*#artifact: $reg/examples/tiny-predictor@$1#" \
        -e "s#replicas: 2\$#replicas: 1#" -e "s#replicas: 4#replicas: 2#" \
        -e "s#architecture: arm64#architecture: $arch#" \
        -e "s#steps: \[10, 50, 100\]#steps: [50, 100]#" \
        -e "s#windowSeconds: 120#windowSeconds: 30#" -e "s#minRequests: 50#minRequests: 10#" \
        deploy/example-modeldeployment.yaml
}
md "$v1" | kubectl apply -f -
kubectl -n "$ns" wait --for=condition=Ready modeldeployment/tiny --timeout=300s
kubectl -n "$ns" get md tiny -o wide
port=$(kubectl -n "$ns" get md tiny -o jsonpath='{.spec.port}')
infer() { curl -fsS "localhost:$1/v2/models/tiny/infer" \
    -d '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'; }
infer "$port" | grep -q '\[3.0,5.0,7.0,9.0\]' && echo "e2e-operator: the edge replica answers"
kubectl -n "$ns" port-forward service/tiny-cloud 18001:"$port" >/dev/null 2>&1 &
pf=$!
sleep 3
infer 18001 | grep -q '\[3.0,5.0,7.0,9.0\]' && echo "e2e-operator: the cloud replicas answer"

step "roll v2 out as a canary, under traffic"
md "$v2" | kubectl apply -f -
( while kill -0 "$pf" 2>/dev/null; do infer 18001 >/dev/null 2>&1 || true; infer "$port" >/dev/null 2>&1 || true; sleep 0.2; done ) &
traffic=$!
for i in $(seq 1 60); do
    stable=$(kubectl -n "$ns" get md tiny -o jsonpath='{.status.stableDigest}')
    kubectl -n "$ns" get md tiny --no-headers
    [ "$stable" = "$v2" ] && break
    sleep 5
done
kill "$traffic" "$pf" 2>/dev/null || true
[ "$stable" = "$v2" ] || { echo "e2e-operator: v2 was not promoted" >&2; kubectl -n "$ns" describe md tiny; exit 1; }
echo "e2e-operator: v2 promoted after its canary steps"

step "the API server goes away: the edge replica keeps serving"
docker pause "$cluster-control-plane" >/dev/null
sleep 20
infer "$port" | grep -q '\[3.0,5.0,7.0,9.0\]' && echo "e2e-operator: served while the cluster was unreachable"
curl -fsS 127.0.0.1:19400/status | jq .agent.cluster
docker unpause "$cluster-control-plane" >/dev/null

step "the device stops heartbeating: its replica is reported unschedulable"
kill "$agent_pid"; agent_pid=
sleep 70
msg=$(kubectl -n "$ns" get md tiny -o jsonpath='{.status.conditions[?(@.type=="Scheduled")].message}')
echo "$msg"
case "$msg" in *offline*) ;; *) echo "e2e-operator: expected the offline device in Scheduled" >&2; exit 1 ;; esac

if [ "${KEEP:-}" != 1 ]; then
    step "clean up"
    kubectl -n "$ns" delete md tiny --wait=true
    kubectl delete -f deploy/operator.yaml --ignore-not-found
fi
echo "e2e-operator: passed"
