"""The reference for weft-autodiff's gradient rules: for each case, the
gradient of sum(f(*inputs) * r) with respect to every input, computed by
JAX (float32, CPU). Reads a cases JSON written by
crates/autodiff/tests/jax.rs and prints the gradients as JSON.

Usage: jax_grads.py CASES.json

Cases: [{"name": str, "expr": "lambda a, b: ...", "inputs": [[shape, data],
...], "r": [shape, data]}]; `expr` is evaluated with `jax`, `jnp` and `lax`
in scope. Output: {name: [[gradient of input 0, flat], ...]}.
"""
import json
import sys

import jax

jax.config.update("jax_platforms", "cpu")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

out = {}
for case in json.load(open(sys.argv[1])):
    f = eval(case["expr"], {"jax": jax, "jnp": jnp, "lax": lax})
    xs = [jnp.asarray(d, jnp.float32).reshape(s) for s, d in case["inputs"]]
    r = jnp.asarray(case["r"][1], jnp.float32).reshape(case["r"][0])

    def loss(*xs):
        return jnp.sum(f(*xs) * r)

    grads = jax.grad(loss, argnums=tuple(range(len(xs))))(*xs)
    out[case["name"]] = [[float(v) for v in g.ravel()] for g in grads]
print(json.dumps(out))
