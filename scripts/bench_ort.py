#!/usr/bin/env python3
"""onnxruntime reference for weft-bench: same model, same raw f32 input.

Usage: bench_ort.py MODEL INPUT DIMS ITERS THREADS
Prints `iter_ns N` per timed iteration (after two warm-ups), like the guest.
"""
import sys
import time

import numpy as np
import onnxruntime as ort

model, inp, dims, iters, threads = sys.argv[1:6]
dims = [int(d) for d in dims.split(",")]
x = np.fromfile(inp, dtype="<f4").reshape(dims)
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
for i in range(int(iters) + 2):
    t = time.perf_counter_ns()
    sess.run(None, {name: x})
    ns = time.perf_counter_ns() - t
    if i >= 2:
        print(f"iter_ns {ns}")
