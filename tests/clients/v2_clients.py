"""Real Open Inference Protocol clients against a running `weft serve`.

Usage: v2_clients.py triton|kserve REST_URL GRPC_ADDR MODELS_DIR

(tritonclient and kserve each register the `inference` protobuf package, so
they cannot share a process: run the script once per client family.)

The server must serve `mlp` (tests/data/mlp_dynamic_batch.onnx) and `two`
(tests/data/two_inputs.onnx). Reference outputs come from onnx's own
reference evaluator, so every comparison is against an independent
implementation. Prints one line per check; exits non-zero on the first
failure.
"""
import asyncio
import os
import sys

import numpy as np
import onnx.reference

family, rest_url, grpc_addr, data_dir = sys.argv[1:5]
rest_host = rest_url.removeprefix("http://")
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


mlp_ref = onnx.reference.ReferenceEvaluator(os.path.join(data_dir, "mlp_dynamic_batch.onnx"))
rng = np.random.default_rng(1)
x = rng.standard_normal((5, 4)).astype(np.float32)
(want,) = mlp_ref.run(None, {"x": x})


def triton(mod, url, kind):
    from tritonclient.utils import InferenceServerException

    c = mod.InferenceServerClient(url=url)
    check(c.is_server_live(), f"{kind}: server live")
    check(c.is_server_ready(), f"{kind}: server ready")
    check(c.is_model_ready("mlp"), f"{kind}: model ready")
    check(not_ready_or_error(c, "nope"), f"{kind}: unknown model is not ready")
    md = c.get_server_metadata()
    name = md["name"] if isinstance(md, dict) else md.name
    check(name == "weft", f"{kind}: server metadata names weft")
    md = c.get_model_metadata("mlp")
    inputs = md["inputs"] if isinstance(md, dict) else [
        {"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in md.inputs
    ]
    check(inputs == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], f"{kind}: model metadata {inputs}")

    binary_modes = [True, False] if mod is httpclient else [True]
    for binary in binary_modes:
        inp = mod.InferInput("x", list(x.shape), "FP32")
        if mod is httpclient:
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [mod.InferRequestedOutput(mlp_ref.output_names[0], binary_data=binary)]
        else:
            inp.set_data_from_numpy(x)
            outs = None
        r = c.infer("mlp", [inp], outputs=outs, request_id="req-7")
        got = r.as_numpy(mlp_ref.output_names[0])
        check(got is not None and got.shape == want.shape, f"{kind} binary={binary}: output shape {None if got is None else got.shape}")
        check(np.allclose(got, want, rtol=1e-5, atol=1e-6), f"{kind} binary={binary}: values match the ONNX reference")

    # Default settings, no outputs named: tritonclient asks for binary outputs.
    a = np.array([1, 2, 3], np.float32)
    b = np.array([4, 5, 6], np.float32)
    ia, ib = mod.InferInput("a", [3], "FP32"), mod.InferInput("b", [3], "FP32")
    ia.set_data_from_numpy(a)
    ib.set_data_from_numpy(b)
    r = c.infer("two", [ia, ib])
    check(np.array_equal(r.as_numpy("sum"), a + b) and np.array_equal(r.as_numpy("prod"), a * b), f"{kind}: two outputs by name")
    r = c.infer("two", [ia, ib], outputs=[mod.InferRequestedOutput("prod")])
    check(r.as_numpy("sum") is None and np.array_equal(r.as_numpy("prod"), a * b), f"{kind}: requested output only")

    bad = mod.InferInput("x", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    try:
        c.infer("mlp", [bad])
        check(False, f"{kind}: wrong shape is refused")
    except InferenceServerException as e:
        check("expects [-1, 4]" in str(e), f"{kind}: wrong shape refused with: {e}")
    try:
        c.infer("nope", [bad])
        check(False, f"{kind}: unknown model is refused")
    except InferenceServerException as e:
        check("unknown model 'nope'" in str(e), f"{kind}: unknown model refused with: {e}")


def not_ready_or_error(c, model):
    from tritonclient.utils import InferenceServerException

    try:
        return not c.is_model_ready(model)
    except InferenceServerException:
        return True


async def kserve_clients():
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    check(await rest.is_server_live(rest_url), "kserve REST: server live")
    check(await rest.is_server_ready(rest_url), "kserve REST: server ready")
    check(await rest.is_model_ready(rest_url, "mlp"), "kserve REST: model ready")
    for binary in (False, True):
        i = InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        r = await rest.infer(rest_url, InferRequest(model_name="mlp", infer_inputs=[i]), model_name="mlp")
        got = r.outputs[0].as_numpy()
        check(np.allclose(got, want, rtol=1e-5, atol=1e-6), f"kserve REST binary={binary}: values match the ONNX reference")
    await rest.close()

    g = InferenceGRPCClient(grpc_addr)
    i = InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    r = await g.infer(InferRequest(model_name="mlp", infer_inputs=[i]))
    check(np.allclose(r.outputs[0].as_numpy(), want, rtol=1e-5, atol=1e-6), "kserve gRPC: values match the ONNX reference")
    await g.close()


if family == "triton":
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    triton(httpclient, rest_host, "tritonclient.http")
    triton(grpcclient, grpc_addr, "tritonclient.grpc")
elif family == "kserve":
    asyncio.run(kserve_clients())
else:
    sys.exit(f"unknown client family {family!r}")
print(f"all {checks} checks passed")
