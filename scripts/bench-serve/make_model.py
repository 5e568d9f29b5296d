"""Write the benchmark model: an MLP 64 -> 256 -> 256 -> 10 (ReLU), batch N.

Deterministic weights, so weft and MLServer serve byte-identical models.
Usage: make_model.py OUT.onnx
"""
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

rng = np.random.default_rng(42)
dims = [64, 256, 256, 10]
nodes, inits = [], []
prev = "x"
for i, (a, b) in enumerate(zip(dims, dims[1:])):
    w = numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}")
    bias = numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}")
    inits += [w, bias]
    out = "y" if i == len(dims) - 2 else f"h{i}"
    mm = f"mm{i}"
    nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [mm]))
    if out == "y":
        nodes.append(helper.make_node("Add", [mm, f"B{i}"], [out]))
    else:
        nodes.append(helper.make_node("Add", [mm, f"B{i}"], [f"a{i}"]))
        nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
    prev = out
g = helper.make_graph(
    nodes,
    "bench_mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    inits,
)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
save(m, sys.argv[1])
