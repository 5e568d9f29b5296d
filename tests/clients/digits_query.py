"""tritonclient (HTTP and gRPC) against a `weft serve` that serves the
digits CNN `weft train` made: every held-out digit, one request each way.

Usage: digits_query.py REST_URL GRPC_ADDR TEST_CSV MIN_ACCURACY [INPUT SHAPE]

INPUT and SHAPE name the model's input and one request's shape (default
`input` and `1,64`; a fine-tuned image model takes `image` `1,1,8,8`).

Prints the accuracy each client saw; exits non-zero when either is below
MIN_ACCURACY, when the two disagree on any digit, or when a reply is not a
probability distribution.
"""
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

rest_url, grpc_addr, test_csv, minimum = sys.argv[1:5]
input_name = sys.argv[5] if len(sys.argv) > 5 else "input"
shape = [int(d) for d in sys.argv[6].split(",")] if len(sys.argv) > 6 else [1, 64]
rows = np.loadtxt(test_csv, delimiter=",", skiprows=1, dtype=np.float32)
pixels, labels = rows[:, :64], rows[:, 64].astype(int)


def ask(mod, url):
    c = mod.InferenceServerClient(url=url)
    assert c.is_model_ready("digits"), "the model is not ready"
    seen = []
    for x in pixels:
        inp = mod.InferInput(input_name, shape, "FP32")
        inp.set_data_from_numpy(x.reshape(shape))
        out = mod.InferRequestedOutput("probabilities")
        p = c.infer("digits", [inp], outputs=[out]).as_numpy("probabilities")
        if p.shape != (1, 10) or abs(float(p.sum()) - 1.0) > 1e-3 or p.min() < 0:
            print(f"FAIL: not a distribution: {p}")
            sys.exit(1)
        seen.append(int(p.argmax()))
    return np.array(seen)


http = ask(httpclient, rest_url.removeprefix("http://"))
grpc = ask(grpcclient, grpc_addr)
if (http != grpc).any():
    print(f"FAIL: HTTP and gRPC disagree on {(http != grpc).sum()} digits")
    sys.exit(1)
accuracy = float((http == labels).mean())
print(f"tritonclient accuracy {accuracy:.4f} over {len(labels)} held-out digits")
if accuracy < float(minimum):
    print(f"FAIL: below {minimum}")
    sys.exit(1)
print("checks passed")
