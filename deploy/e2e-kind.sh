#!/usr/bin/env bash
# End to end on a real Kubernetes cluster (kind): build the shim and the
# node installer into an image, install the weft runtime on every node with
# the installer DaemonSet, push the example model module (the Weft artifact
# itself) to a registry on the host, run it behind a Service on the `weft`
# RuntimeClass, send it an inference, and show what a non-Weft image on the
# runtime class gets.
#
# THIS SCRIPT HAS NOT RUN IN WEFT'S CI: the development machines cannot run
# a Kubernetes API server or a docker daemon. What it drives has: the shim
# under containerd's CRI plugin (RunPodSandbox with the weft handler, pod
# network, logs, pulls from a registry) is tested in
# crates/shim/tests/containerd/cri.rs, and the manifests are checked against
# the Kubernetes API types in tests/tests/deploy.rs.
#
# Needs: docker, kind 0.22 or newer (containerd 1.7.13+ nodes, which accept the
# artifact's non-tar layers), kubectl, curl, cargo with the wasm32-wasip1
# target. KEEP=1 keeps the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${CLUSTER:-weft-e2e}
reg_name=weft-e2e-registry
reg_port=${REGISTRY_PORT:-5001}
step() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl curl cargo; do
    command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required" >&2; exit 1; }
done

step "a registry on 127.0.0.1:$reg_port that the kind nodes reach as localhost:$reg_port"
if [ "$(docker inspect -f '{{.State.Running}}' "$reg_name" 2>/dev/null || true)" != true ]; then
    docker run -d --restart=always -p "127.0.0.1:$reg_port:5000" --name "$reg_name" registry:2
fi

step "kind cluster $cluster"
if ! kind get clusters | grep -qx "$cluster"; then
    cat <<EOF | kind create cluster --name "$cluster" --config=-
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
nodes:
  - role: control-plane
  - role: worker
EOF
fi
for node in $(kind get nodes --name "$cluster"); do
    docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$reg_port"
    printf '[host."http://%s:5000"]\n' "$reg_name" |
        docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$reg_port/hosts.toml"
done
docker network connect kind "$reg_name" 2>/dev/null || true

step "the node-installer image (shim + installer + kubectl)"
docker build -f deploy/installer.Dockerfile -t weft-node-installer:0.1.0 .
kind load docker-image weft-node-installer:0.1.0 --name "$cluster"

step "install the weft runtime on every node"
kubectl apply -f deploy/runtimeclass.yaml -f deploy/installer.yaml
kubectl -n weft-system rollout status daemonset/weft-node-installer --timeout=300s
nodes=$(kind get nodes --name "$cluster" | wc -l)
for i in $(seq 1 60); do
    ready=$(kubectl get nodes -l weft.dev/runtime=ready -o name | wc -l)
    [ "$ready" -ge "$nodes" ] && break
    sleep 5
done
kubectl get nodes -L weft.dev/runtime

step "the example model module: build and push the artifact"
(cd modules && cargo build --release --target wasm32-wasip1 -p predictor)
cargo build --release -p weft-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pkg/models"
cp modules/target/wasm32-wasip1/release/predictor.wasm "$work/pkg/predictor.wasm"
cp tests/data/tiny.onnx "$work/pkg/models/tiny.onnx"
cat >"$work/pkg/weft.toml" <<'EOF'
[module]
name = "examples/tiny-predictor"
version = "1"
file = "predictor.wasm"
description = "y = 2x + 1 behind the Open Inference Protocol"

[[model]]
name = "model"
file = "models/tiny.onnx"
EOF
target/release/weft build "$work/pkg" --store "$work/store"
target/release/weft push examples/tiny-predictor:1 "localhost:$reg_port/examples/tiny-predictor:1" --store "$work/store"

step "serve it: Deployment + Service on runtimeClassName: weft"
sed "s#image: weft.local/examples/tiny-predictor:1-classic#image: localhost:$reg_port/examples/tiny-predictor:1#" \
    deploy/example-serving.yaml | kubectl apply -f -
kubectl rollout status deployment/tiny-model --timeout=300s
kubectl logs deployment/tiny-model --tail=5

step "an inference through the Service"
kubectl port-forward service/tiny-model 18000:8000 >/dev/null 2>&1 &
pf=$!
sleep 3
answer=$(curl -fsS localhost:18000/v2/models/tiny/infer \
    -d '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}')
kill "$pf"
echo "$answer"
case "$answer" in
    *'[3.0,5.0,7.0,9.0]'*) echo "e2e-kind: the model answered through the Service" ;;
    *) echo "e2e-kind: unexpected answer" >&2; exit 1 ;;
esac

step "a plain Linux image on the weft runtime class is refused, with a reason"
kubectl delete pod not-a-module --ignore-not-found
kubectl run not-a-module --image=busybox --restart=Never \
    --overrides='{"spec":{"runtimeClassName":"weft"}}' -- sleep 3600
sleep 10
kubectl describe pod not-a-module | grep -i -m3 "not a Weft model module" ||
    { echo "e2e-kind: the refusal reason is missing from kubectl describe" >&2; exit 1; }
kubectl delete pod not-a-module --wait=false

if [ "${KEEP:-}" != 1 ]; then
    step "clean up"
    kind delete cluster --name "$cluster"
    docker rm -f "$reg_name" >/dev/null
fi
echo "e2e-kind: passed"
