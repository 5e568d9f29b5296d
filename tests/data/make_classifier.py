#!/usr/bin/env python3
"""Make the "existing ONNX classifier" the fine-tuning example starts from:
tests/data/digits_0to4_classifier.onnx.

A small CNN trained with JAX (not with Weft) on the digits 0 to 4 only, and
written with `onnx.helper` the way exporters write such models: `Conv` with
a bias, `Clip(0, 6)` (ReLU6, which Weft's op set has no gradient rule for),
`MaxPool`, a `Shape`/`Gather`/`Concat`/`Reshape` flatten, `Gemm` with
`transB`, and a final `Softmax`. Its head has 10 outputs, but the digits 5
to 9 were never in its training data, so it cannot recognise them; the
fine-tuning example retrains only the head (`fc2.*`) on all ten digits, the
convolution and the first dense layer frozen.

The model is committed (about 40 KB), so the tests need no JAX; this is how
it was made (the test venv has jax and onnx):

    target/py/bin/python tests/data/make_classifier.py
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))

rows = np.loadtxt(os.path.join(HERE, "digits", "train.csv"), delimiter=",", skiprows=1, dtype=np.float32)
rows = rows[rows[:, 64] < 5]
x = rows[:, :64].reshape(-1, 1, 8, 8)
y = rows[:, 64].astype(np.int32)

key = jax.random.PRNGKey(0)
k1, k2, k3 = jax.random.split(key, 3)
params = {
    "conv1.weight": jax.random.uniform(k1, (8, 1, 3, 3), minval=-1, maxval=1) * np.sqrt(6 / 9) ,
    "conv1.bias": jnp.zeros(8),
    "fc1.weight": jax.random.uniform(k2, (64, 128), minval=-1, maxval=1) * np.sqrt(6 / 128),
    "fc1.bias": jnp.zeros(64),
    "fc2.weight": jax.random.uniform(k3, (10, 64), minval=-1, maxval=1) * np.sqrt(6 / 64),
    "fc2.bias": jnp.zeros(10),
}


def logits(p, x):
    c = jax.lax.conv_general_dilated(x, p["conv1.weight"], (1, 1), [(1, 1), (1, 1)])
    c = jnp.clip(c + p["conv1.bias"][None, :, None, None], 0, 6)
    n = c.shape[0]
    pooled = c.reshape(n, 8, 4, 2, 4, 2).max(axis=(3, 5))
    h = jax.nn.relu(pooled.reshape(n, -1) @ p["fc1.weight"].T + p["fc1.bias"])
    return h @ p["fc2.weight"].T + p["fc2.bias"]


def loss(p, x, y):
    return -jnp.mean(jax.nn.log_softmax(logits(p, x))[jnp.arange(len(y)), y])


@jax.jit
def step(p, x, y):
    g = jax.grad(loss)(p, x, y)
    return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)


rng = np.random.default_rng(0)
for epoch in range(30):
    order = rng.permutation(len(y))
    for i in range(0, len(y) - 31, 32):
        b = order[i : i + 32]
        params = step(params, x[b], y[b])
accuracy = float((np.argmax(logits(params, x), axis=1) == y).mean())

init = lambda name: numpy_helper.from_array(np.asarray(params[name], np.float32), name)
nodes = [
    helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c"], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Clip", ["c", "zero", "six"], ["r"], "relu6"),
    helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Shape", ["p"], ["s"], "shape"),
    helper.make_node("Gather", ["s", "zero_i"], ["n"], "batch", axis=0),
    helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], "unsqueeze"),
    helper.make_node("Concat", ["n1", "minus1"], ["to"], "target", axis=0),
    helper.make_node("Reshape", ["p", "to"], ["f"], "flatten"),
    helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h0"], "fc1", transB=1),
    helper.make_node("Relu", ["h0"], ["h"], "relu"),
    helper.make_node("Gemm", ["h", "fc2.weight", "fc2.bias"], ["logits"], "fc2", transB=1),
    helper.make_node("Softmax", ["logits"], ["probabilities"], "softmax", axis=-1),
]
graph = helper.make_graph(
    nodes,
    "digits_0to4",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
    [init(n) for n in params]
    + [
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6, np.float32), "six"),
        numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="jax+onnx.helper")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(HERE, "digits_0to4_classifier.onnx"))
print(f"trained on {len(y)} digits 0-4: training accuracy {accuracy:.4f}")
