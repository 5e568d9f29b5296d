"""The reference for weft-autodiff's training steps: the same model, the
same initial weights, the same batches and the same optimizer, in JAX
(float32, CPU, jit). Reads a spec JSON written by
crates/autodiff/tests/jax.rs and prints the loss of every step as JSON.

Usage: jax_steps.py SPEC.json

Spec: {"model": "mlp"|"cnn", "optimizer": "sgd"|"adam", "lr": float,
"momentum": float, "params": [[name, shape, data], ...],
"x_shape": [N, F], "classes": K, "batches": [[x, labels], ...]}
(labels one-hot, flattened row-major like x).

The models (what the Rust test builds with the graph builder):
- mlp: x [N, 64] -> dense w0 b0 -> relu -> dense w1 b1 -> logits
- cnn: x [N, 64] as [N, 1, 8, 8] -> conv w0 (3x3, pad 1) + b0 -> relu
  -> 2x2 max pool -> flatten -> dense w1 b1 -> logits
Loss: softmax cross-entropy averaged over the batch. Optimizers as in
PyTorch/optax: SGD with momentum (v = mu v + g; p -= lr v) and Adam with
bias correction.
"""
import json
import sys

import jax

jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

spec = json.load(open(sys.argv[1]))
names = [p[0] for p in spec["params"]]
params = {n: jnp.asarray(d, jnp.float32).reshape(s) for n, s, d in spec["params"]}
n, f = spec["x_shape"]
k = spec["classes"]


def logits(p, x):
    if spec["model"] == "mlp":
        h = jax.nn.relu(x @ p["w0"] + p["b0"])
        return h @ p["w1"] + p["b1"]
    h = x.reshape(n, 1, 8, 8)
    h = lax.conv_general_dilated(
        h, p["w0"], (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    h = jax.nn.relu(h + p["b0"].reshape(1, -1, 1, 1))
    c = h.shape[1]
    h = h.reshape(n, c, 4, 2, 4, 2).max(axis=(3, 5))
    return h.reshape(n, -1) @ p["w1"] + p["b1"]


def loss_fn(p, x, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits(p, x), axis=1) * y, axis=1))


lr = spec["lr"]
mu = spec["momentum"]
b1, b2, eps = 0.9, 0.999, 1e-8


@jax.jit
def step(p, state, t, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    if spec["optimizer"] == "sgd":
        v = {q: mu * state[0][q] + g[q] for q in p}
        return {q: p[q] - lr * v[q] for q in p}, (v,), loss
    m = {q: b1 * state[0][q] + (1 - b1) * g[q] for q in p}
    v = {q: b2 * state[1][q] + (1 - b2) * g[q] * g[q] for q in p}
    new = {}
    for q in p:
        mh = m[q] / (1 - b1**t)
        vh = v[q] / (1 - b2**t)
        new[q] = p[q] - lr * (mh / (jnp.sqrt(vh) + eps))
    return new, (m, v), loss


zeros = {q: jnp.zeros_like(params[q]) for q in params}
state = (zeros,) if spec["optimizer"] == "sgd" else (zeros, zeros)
losses = []
for t, (x, y) in enumerate(spec["batches"], start=1):
    x = jnp.asarray(x, jnp.float32).reshape(n, f)
    y = jnp.asarray(y, jnp.float32).reshape(n, k)
    params, state, loss = step(params, state, jnp.float32(t), x, y)
    losses.append(float(loss))
print(json.dumps({"jax": jax.__version__, "losses": losses}))
