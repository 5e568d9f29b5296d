"""Check a fine-tuned ONNX model against the model it started from, with
ONNX's own reference evaluator (no Weft code involved).

Usage: finetune_check.py BASE TUNED TEST_CSV TRAINED_PREFIX

Prints the held-out accuracy of both models; exits non-zero when an
initializer outside TRAINED_PREFIX changed by a single bit, when none
inside it changed, or when the graph (nodes, inputs, outputs) differs.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

base_path, tuned_path, test_csv, prefix = sys.argv[1:5]
base, tuned = onnx.load(base_path), onnx.load(tuned_path)
onnx.checker.check_model(tuned)
if base.graph.node != tuned.graph.node or base.graph.input != tuned.graph.input or base.graph.output != tuned.graph.output:
    print("FAIL: the tuned model's graph is not the base model's")
    sys.exit(1)
before = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
after = {t.name: numpy_helper.to_array(t) for t in tuned.graph.initializer}
if before.keys() != after.keys():
    print(f"FAIL: initializers differ: {sorted(before)} vs {sorted(after)}")
    sys.exit(1)
changed = []
for name in before:
    same = before[name].tobytes() == after[name].tobytes() and before[name].dtype == after[name].dtype
    if name.startswith(prefix):
        if not same:
            changed.append(name)
    elif not same:
        print(f"FAIL: frozen initializer {name} changed")
        sys.exit(1)
if not changed:
    print(f"FAIL: nothing under {prefix} changed")
    sys.exit(1)

rows = np.loadtxt(test_csv, delimiter=",", skiprows=1, dtype=np.float32)
x, labels = rows[:, :64].reshape(-1, 1, 8, 8), rows[:, 64].astype(int)
for name, model in [("base", base), ("tuned", tuned)]:
    (p,) = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})
    print(f"{name} accuracy {float((p.argmax(axis=1) == labels).mean()):.4f}")
print(f"trained: {', '.join(changed)}")
print("checks passed")
