#!/usr/bin/env python3
"""Write the ONNX backend *node* test cases to a directory.

The `onnx` wheel ships the case generators, not the data, and its
`backend-test-tools generate-data` writes only the model cases. This calls
the node generators and writes each case in the standard layout:
`DIR/<case>/model.onnx` and `DIR/<case>/test_data_set_N/{input,output}_K.pb`.
Cases whose inputs or outputs are not plain tensors (sequences, maps,
optionals) are written without data and counted as failures by the harness.

Usage: python3 scripts/onnx-node-tests.py OUTPUT_DIR
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = node.collect_testcases(None)
    written = 0
    for case in cases:
        d = os.path.join(out, case.name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets or []):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds)
            for kind, values, decls in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, value in enumerate(values):
                    if j >= len(decls) or not decls[j].type.HasField("tensor_type"):
                        continue
                    try:
                        proto = numpy_helper.from_array(np.asarray(value), decls[j].name)
                    except (NotImplementedError, AttributeError, TypeError, ValueError):
                        continue  # not a plain tensor: the harness fails this case
                    with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(proto.SerializeToString())
        written += 1
    print(f"wrote {written} ONNX node test cases (onnx {onnx.__version__}) to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
