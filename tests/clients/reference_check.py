"""Compare what `weft serve` answers for a TensorFlow Lite or TensorFlow
model with what the framework itself computes (no Weft code involved).

Usage:
  reference_check.py tflite URL MODEL FILE.tflite   LiteRT's interpreter
  reference_check.py tf     URL MODEL FILE.pb       TensorFlow itself
  reference_check.py make-tf DIR                    write DIR/cnn.pb: a small
                                                    Keras CNN, frozen by TF

The request goes through tritonclient's HTTP client (a real KServe V2
client): one input of seeded uniform values in [0, 1), every output asked
for by the name the framework gives it. Prints each output's largest
absolute difference; exits non-zero when an output is missing, has another
shape, or differs by more than 1e-3 + 1e-3 * |reference|.
"""
import sys

import numpy as np


def serve(url, model, name, x):
    import tritonclient.http as http

    client = http.InferenceServerClient(url=url.removeprefix("http://"))
    inp = http.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp])
    return result


def compare(outputs, result):
    failed = False
    for name, want in outputs:
        got = result.as_numpy(name)
        if got is None:
            print(f"FAIL: output {name} missing from the answer")
            failed = True
            continue
        if tuple(got.shape) != tuple(want.shape):
            print(f"FAIL: output {name} has shape {got.shape}, reference {want.shape}")
            failed = True
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        bound = 1e-3 + 1e-3 * np.abs(want.astype(np.float64))
        worst = float(diff.max()) if diff.size else 0.0
        print(f"output {name} {list(want.shape)}: max abs diff {worst:.3g}")
        if (diff > bound).any():
            print(f"FAIL: output {name} differs beyond tolerance")
            failed = True
    return failed


def check_tflite(url, model, path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    (inp,) = it.get_input_details()
    x = np.random.default_rng(7).random(inp["shape"], dtype=np.float32)
    it.set_tensor(inp["index"], x)
    it.invoke()
    outputs = [(o["name"], it.get_tensor(o["index"])) for o in it.get_output_details()]
    return compare(outputs, serve(url, model, inp["name"], x))


def make_tf(out_dir):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    tf.random.set_seed(3)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((16, 16, 3), batch_size=1, name="image"),
            tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6"),
            tf.keras.layers.Conv2D(16, 3, strides=2, activation="tanh"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(10),
            tf.keras.layers.Softmax(),
        ]
    )
    # Non-trivial batch-norm statistics, so folding them is exercised.
    bn = model.layers[1]
    rng = np.random.default_rng(5)
    bn.moving_mean.assign(rng.normal(size=8).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=8).astype(np.float32))
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, 16, 16, 3), tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(concrete)
    graph = frozen.graph.as_graph_def()
    tf.io.write_graph(graph, out_dir, "cnn.pb", as_text=False)
    inputs = [t.name.split(":")[0] for t in frozen.inputs]
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    print(f"wrote {out_dir}/cnn.pb: inputs {inputs}, outputs {outputs}")


def check_tf(url, model, path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    sinks = [n.name for n in graph_def.node if n.name not in consumed and n.op != "NoOp"]
    (inp,) = placeholders
    shape = [d.size for d in inp.attr["shape"].shape.dim]
    x = np.random.default_rng(7).random(shape, dtype=np.float32)
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as s:
            values = s.run([f"{n}:0" for n in sinks], {f"{inp.name}:0": x})
    return compare(list(zip(sinks, values)), serve(url, model, inp.name, x))


def main(argv):
    if argv[:1] == ["make-tf"] and len(argv) == 2:
        make_tf(argv[1])
        return 0
    if len(argv) != 4 or argv[0] not in ("tflite", "tf"):
        sys.exit(__doc__)
    kind, url, model, path = argv
    failed = (check_tflite if kind == "tflite" else check_tf)(url, model, path)
    if failed:
        return 1
    print("checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
