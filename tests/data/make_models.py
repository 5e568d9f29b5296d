#!/usr/bin/env python3
"""Generate the tiny ONNX models the host tests use.

The outputs are committed (each is a few hundred bytes) so the tests need no
Python; rerun this after changing it: `python3 tests/data/make_models.py`.
Needs the `onnx` package (tests install it for the conformance suite).
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(graph, name, opset=13):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, name))


def tiny():
    # y = 2x + 1 over a fixed [1, 4] f32 input: the hostile guest's target.
    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [two, one],
    )
    save(g, "tiny.onnx")


def mlp():
    # relu(x @ W + b) with a symbolic batch dimension N.
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((3,)).astype(np.float32), "b")
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )
    save(g, "mlp_dynamic_batch.onnx")


def doubles():
    # y = x + x for each wasi-nn dtype, so every type crosses the ABI.
    for name, ty in [
        ("f16", TensorProto.FLOAT16),
        ("f32", TensorProto.FLOAT),
        ("f64", TensorProto.DOUBLE),
        ("u8", TensorProto.UINT8),
        ("i32", TensorProto.INT32),
        ("i64", TensorProto.INT64),
    ]:
        g = helper.make_graph(
            [helper.make_node("Add", ["x", "x"], ["y"])],
            f"double_{name}",
            [helper.make_tensor_value_info("x", ty, [2, 3])],
            [helper.make_tensor_value_info("y", ty, [2, 3])],
        )
        save(g, f"double_{name}.onnx")


def two_inputs():
    # sum = a + b, prod = a * b: named inputs and several outputs.
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [3]),
        ],
    )
    save(g, "two_inputs.onnx")


def unsupported():
    # NegativeLogLikelihoodLoss is valid ONNX that tract does not implement.
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("NegativeLogLikelihoodLoss", ["r", "t"], ["loss"]),
        ],
        "unsupported",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("t", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
    )
    save(g, "unsupported_op.onnx")


if __name__ == "__main__":
    tiny()
    mlp()
    doubles()
    two_inputs()
    unsupported()
