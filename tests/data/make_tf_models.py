"""Write the small TensorFlow-format test models (run in the test venv,
which has TensorFlow; the outputs are committed):

  tests/data/tiny_f16.tflite  conv + PReLU + dense, weights stored as
                              float16 behind DEQUANTIZE (as MediaPipe's are)
  tests/data/cnn_frozen.pb    a frozen GraphDef of a small Keras CNN

Both seed the fuzz corpora of crates/fuzz (tflite, tensorflow).
"""
import os
import sys

import numpy as np
import tensorflow as tf

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "clients"))
import reference_check  # noqa: E402

tf.random.set_seed(1)
model = tf.keras.Sequential(
    [
        tf.keras.Input((8, 8, 1), batch_size=1, name="x"),
        tf.keras.layers.Conv2D(4, 3, padding="same"),
        tf.keras.layers.PReLU(shared_axes=[1, 2]),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
    ]
)
model.layers[1].alpha.assign(np.full((1, 1, 4), 0.25, np.float32))
converter = tf.lite.TFLiteConverter.from_keras_model(model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.target_spec.supported_types = [tf.float16]
with open(os.path.join(here, "tiny_f16.tflite"), "wb") as f:
    f.write(converter.convert())
reference_check.make_tf(here)
os.replace(os.path.join(here, "cnn.pb"), os.path.join(here, "cnn_frozen.pb"))
print("wrote tiny_f16.tflite and cnn_frozen.pb")
