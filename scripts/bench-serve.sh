#!/usr/bin/env bash
# Serving benchmark, one run, same machine, same model, same client:
#   weft serve (release build)  vs  MLServer 1.7.1 + onnxruntime (minimal custom runtime)
# on an MLP 64-256-256-10 (batch 1, JSON, as both servers accept it), with wrk
# at concurrency 16, alternating the two servers twice; then the empty-model
# overhead of weft's HTTP layer (the echo module, concurrency 1).
#
#   scripts/bench-serve.sh            # prints a table and the ratios
#
# Needs: wrk (apt-get install wrk), python3 with venv. Installs MLServer into
# target/bench-py. Both servers get the machine's cores; weft runs one
# instance per core, MLServer runs in-process (parallel_workers 0, the faster
# of its settings here) with onnxruntime pinned to one thread per call.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
duration="${DURATION:-10}"
conns="${CONNECTIONS:-16}"

command -v wrk >/dev/null || { echo "bench-serve: install wrk (apt-get install wrk)" >&2; exit 2; }
py=target/bench-py/bin/python3
if ! "$py" -c 'import mlserver, onnxruntime, onnx' 2>/dev/null; then
    python3 -m venv target/bench-py
    # uvloop 0.21.0: newer releases kill MLServer's inference worker at load.
    "$py" -m pip install -q --disable-pip-version-check "mlserver==1.7.1" "uvloop==0.21.0" onnxruntime onnx numpy
fi
cargo build -q --release -p weft-cli
(cd modules && cargo build -q --release --target wasm32-wasip1 -p echo)
weft="${CARGO_TARGET_DIR:-target}/release/weft"

"$py" scripts/bench-serve/make_model.py "$work/mlp.onnx"
mkdir -p "$work/ml/mlp"
cp scripts/bench-serve/runtime.py "$work/ml/mlp/runtime.py"
cp "$work/mlp.onnx" "$work/ml/mlp/model.onnx"
cat >"$work/ml/settings.json" <<JSON
{"debug": false, "parallel_workers": 0, "http_port": 18080, "grpc_port": 18081, "metrics_port": 18082, "host": "127.0.0.1"}
JSON
cat >"$work/ml/mlp/model-settings.json" <<JSON
{"name": "mlp", "implementation": "runtime.OnnxRuntime", "parameters": {"uri": "$work/ml/mlp/model.onnx"}}
JSON

body=$("$py" -c 'import json,random; random.seed(1); print(json.dumps({"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[round(random.uniform(-1,1),4) for _ in range(64)]}]}))')
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$work/empty.lua" <<LUA
wrk.method = "POST"
wrk.body = [[{"inputs":[]}]]
wrk.headers["Content-Type"] = "application/json"
LUA

wait_up() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "bench-serve: $1 never came up" >&2; exit 1; }

"$weft" serve "mlp=$work/mlp.onnx" "echo=modules/target/wasm32-wasip1/release/echo.wasm" \
    --bind 127.0.0.1:18000 --no-grpc --queue 1024 >"$work/weft.log" 2>&1 &
pids+=($!)
(cd "$work/ml" && exec "$root/target/bench-py/bin/mlserver" start . >"$work/mlserver.log" 2>&1) &
pids+=($!)
wait_up http://127.0.0.1:18000/v2/models/mlp/ready
wait_up http://127.0.0.1:18080/v2/models/mlp/ready

# Same answer from both (to 1e-4).
a=$(curl -s -XPOST -H 'content-type: application/json' -d "$body" http://127.0.0.1:18000/v2/models/mlp/infer)
b=$(curl -s -XPOST -H 'content-type: application/json' -d "$body" http://127.0.0.1:18080/v2/models/mlp/infer)
"$py" - "$a" "$b" <<'PY'
import json, sys
a, b = (json.loads(s)["outputs"][0]["data"] for s in sys.argv[1:3])
assert len(a) == len(b) == 10 and all(abs(x - y) <= 1e-4 * max(1, abs(y)) for x, y in zip(a, b)), (a, b)
print("outputs agree:", [round(v, 4) for v in a[:4]], "...")
PY

# wrk --latency: prints rps, p50, p99 (in microseconds).
run() {
    local threads=2; [ "$2" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$2" -d"${3}s" --latency -s "$4" "$1" | awk '
        function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return v*1000; if (v ~ /s$/) return v*1e6; return v }
        /Requests\/sec/ {rps=$2} / 50%/ {p50=us($2)} / 99%/ {p99=us($2)} /Non-2xx/ {bad=$NF}
        END {printf "%.0f %.0f %.0f %d\n", rps, p50, p99, bad+0}'
}
run http://127.0.0.1:18000/v2/models/mlp/infer "$conns" 2 "$work/post.lua" >/dev/null
run http://127.0.0.1:18080/v2/models/mlp/infer "$conns" 2 "$work/post.lua" >/dev/null
printf '%-10s %-6s %10s %10s %10s %6s\n' server round req/s p50_us p99_us errors
results=()
for round in 1 2; do
    for s in weft mlserver; do
        port=18000; [ "$s" = mlserver ] && port=18080
        r=$(run "http://127.0.0.1:$port/v2/models/mlp/infer" "$conns" "$duration" "$work/post.lua")
        printf '%-10s %-6s %10s %10s %10s %6s\n' "$s" "$round" $r
        results+=("$s $r")
    done
done
printf '%s\n' "${results[@]}" | awk '
    {n[$1]++; rps[$1]+=$2; p50[$1]+=$3; p99[$1]+=$4}
    END {
      printf "mean of 2 rounds at concurrency %s: weft %.0f req/s p99 %.0f us; mlserver %.0f req/s p99 %.0f us\n", "'"$conns"'", rps["weft"]/2, p99["weft"]/2, rps["mlserver"]/2, p99["mlserver"]/2
      printf "throughput ratio weft/mlserver: %.2fx; p99 ratio weft/mlserver: %.2f\n", rps["weft"]/rps["mlserver"], p99["weft"]/p99["mlserver"]
    }'

r=$(run http://127.0.0.1:18000/v2/models/echo/infer 1 "$duration" "$work/empty.lua")
read -r rps p50 p99 bad <<<"$r"
echo "empty model (echo), concurrency 1: ${rps} req/s, p50 ${p50} us, p99 ${p99} us (whole round trip: wrk + loopback TCP + HTTP + instance call)"
