//! The CPU backend directly: dtypes, dynamic batch, plan sharing,
//! concurrency, unsupported operators.

use std::sync::Arc;
use weft_nn::{Id, NnError, OnnxModel, Tensor, TensorType, TractContext};
use weft_tests::data;

fn load(name: &str) -> Arc<OnnxModel> {
    OnnxModel::load(&std::fs::read(data(name)).unwrap()).unwrap()
}

/// A private copy of a model: the same graph with a distinct doc string
/// (ModelProto field 6 appended), so its digest and plan cache are its own
/// even though the process-wide model cache is shared by parallel tests.
fn load_private(name: &str, tag: &str) -> Arc<OnnxModel> {
    let mut bytes = std::fs::read(data(name)).unwrap();
    bytes.extend([0x32, tag.len() as u8]);
    bytes.extend(tag.as_bytes());
    OnnxModel::load(&bytes).unwrap()
}

fn f32s(dims: Vec<u32>, v: &[f32]) -> Tensor {
    Tensor {
        dimensions: dims,
        ty: TensorType::Fp32,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn as_f32(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn tiny_model_computes_2x_plus_1() {
    let mut ctx = TractContext::new(load("tiny.onnx"));
    ctx.set(Id::Index(0), &f32s(vec![1, 4], &[0.0, 1.0, -2.0, 3.5]))
        .unwrap();
    ctx.run().unwrap();
    let y = ctx.output(&Id::Index(0)).unwrap();
    assert_eq!(y.dimensions, [1, 4]);
    assert_eq!(as_f32(&y), [1.0, 3.0, -3.0, 8.0]);
}

#[test]
fn every_wasi_nn_dtype_crosses_the_backend() {
    for (name, ty, size) in [
        ("double_f16.onnx", TensorType::Fp16, 2),
        ("double_f32.onnx", TensorType::Fp32, 4),
        ("double_f64.onnx", TensorType::Fp64, 8),
        ("double_u8.onnx", TensorType::U8, 1),
        ("double_i32.onnx", TensorType::I32, 4),
        ("double_i64.onnx", TensorType::I64, 8),
    ] {
        // Element values 1..=6 encoded in the dtype, doubled by the model.
        let enc = |v: u8| -> Vec<u8> {
            match ty {
                TensorType::Fp16 => half::f16::from_f32(v as f32).to_le_bytes().to_vec(),
                TensorType::Fp32 => (v as f32).to_le_bytes().to_vec(),
                TensorType::Fp64 => (v as f64).to_le_bytes().to_vec(),
                TensorType::U8 => vec![v],
                TensorType::I32 => (v as i32).to_le_bytes().to_vec(),
                _ => (v as i64).to_le_bytes().to_vec(),
            }
        };
        let input: Vec<u8> = (1..=6).flat_map(enc).collect();
        let expected: Vec<u8> = (1..=6).map(|v| v * 2).flat_map(enc).collect();
        let mut ctx = TractContext::new(load(name));
        let t = Tensor {
            dimensions: vec![2, 3],
            ty,
            data: input,
        };
        assert_eq!(t.data.len(), 6 * size);
        ctx.set(Id::Index(0), &t).unwrap();
        ctx.run().unwrap();
        let y = ctx.output(&Id::Index(0)).unwrap();
        assert_eq!(y.ty, ty, "{name}");
        assert_eq!(y.data, expected, "{name}");
    }
}

#[test]
fn dynamic_batch_compiles_one_plan_per_shape_and_reuses_it() {
    let model = load_private("mlp_dynamic_batch.onnx", "plan-count");
    assert_eq!(model.inputs()[0].shape_string(), "[N,4]");
    let run = |batch: u32| {
        let mut ctx = TractContext::new(model.clone());
        let x: Vec<f32> = (0..batch * 4).map(|i| i as f32 * 0.1).collect();
        ctx.set(Id::Index(0), &f32s(vec![batch, 4], &x)).unwrap();
        ctx.run().unwrap();
        ctx.output(&Id::Index(0)).unwrap()
    };
    let one = run(1);
    let three = run(3);
    assert_eq!(three.dimensions, [3, 3]);
    // Row 0 of the batch-3 run equals the batch-1 run.
    assert_eq!(as_f32(&three)[..3], as_f32(&one)[..]);
    assert_eq!(model.plan_count(), 2);
    run(3);
    assert_eq!(model.plan_count(), 2, "same shape must reuse its plan");
}

/// Issue 21: a client cycling through input shapes used to evict and
/// rebuild plans for ever (each holding its own packed weights). Now the
/// first shapes keep their plans, later ones share one shape-generic plan,
/// and every answer stays right.
#[test]
fn cycling_through_shapes_builds_a_bounded_number_of_plans() {
    let model = load_private("mlp_dynamic_batch.onnx", "shape-cycling");
    let run = |batch: u32| {
        let mut ctx = TractContext::new(model.clone());
        // Every row is the same, so every output row must equal row 0 of
        // a batch-1 run.
        let x: Vec<f32> = (0..batch * 4).map(|i| (i % 4) as f32 * 0.3 - 0.4).collect();
        ctx.set(Id::Index(0), &f32s(vec![batch, 4], &x)).unwrap();
        ctx.run().unwrap();
        as_f32(&ctx.output(&Id::Index(0)).unwrap())
    };
    let one = run(1);
    let limit = weft_nn::MAX_PLANS_PER_MODEL as u32;
    for round in 0..2 {
        for batch in 1..=limit + 8 {
            let y = run(batch);
            assert_eq!(y.len(), batch as usize * 3);
            for row in y.chunks(3) {
                for (a, b) in row.iter().zip(&one) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "round {round} batch {batch}: {row:?} vs {one:?}"
                    );
                }
            }
        }
    }
    assert_eq!(model.plan_count(), weft_nn::MAX_PLANS_PER_MODEL);
    assert_eq!(
        model.plan_builds(),
        weft_nn::MAX_PLANS_PER_MODEL + 1,
        "shapes past the limit must share one generic plan, built once"
    );
}

#[test]
fn same_bytes_share_one_model() {
    let a = load("tiny.onnx");
    let b = load("tiny.onnx");
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn contexts_of_one_model_run_concurrently_and_agree() {
    let model = load("mlp_dynamic_batch.onnx");
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let model = model.clone();
                s.spawn(move || {
                    let mut ctx = TractContext::new(model);
                    let mut last = Vec::new();
                    for _ in 0..50 {
                        ctx.set(Id::Index(0), &f32s(vec![2, 4], &[0.5; 8])).unwrap();
                        ctx.run().unwrap();
                        last = as_f32(&ctx.output(&Id::Index(0)).unwrap());
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn unsupported_operators_are_named_at_load() {
    let err = OnnxModel::load(&std::fs::read(data("unsupported_op.onnx")).unwrap()).unwrap_err();
    assert!(
        matches!(&err, NnError::UnsupportedOperators { ops } if ops == &["NegativeLogLikelihoodLoss"]),
        "{err}"
    );
}

#[test]
fn garbage_model_bytes_are_a_clear_error() {
    let err = OnnxModel::load(b"\x08\x07definitely not a protobuf model").unwrap_err();
    assert!(matches!(err, NnError::BadModel { .. }), "{err}");
}

#[test]
fn wrong_inputs_get_precise_errors() {
    let mut ctx = TractContext::new(load("tiny.onnx"));
    let e = ctx
        .set(Id::Index(0), &f32s(vec![1, 5], &[0.0; 5]))
        .unwrap_err();
    assert!(e.to_string().contains("expects shape [1,4]"), "{e}");
    let e = ctx
        .set(Id::Index(3), &f32s(vec![1, 4], &[0.0; 4]))
        .unwrap_err();
    assert!(
        matches!(e, NnError::InputIndex { index: 3, count: 1 }),
        "{e}"
    );
    let e = ctx
        .set(Id::Name("nope".into()), &f32s(vec![1, 4], &[0.0; 4]))
        .unwrap_err();
    assert!(e.to_string().contains("`x`"), "{e}");
    let i64s = Tensor {
        dimensions: vec![1, 4],
        ty: TensorType::I64,
        data: vec![0; 32],
    };
    let e = ctx.set(Id::Index(0), &i64s).unwrap_err();
    assert!(e.to_string().contains("expects f32, got i64"), "{e}");
    let e = ctx.run().unwrap_err();
    assert!(matches!(e, NnError::MissingInput { .. }), "{e}");
    let e = ctx.output(&Id::Index(0)).unwrap_err();
    assert!(matches!(e, NnError::NotComputed), "{e}");
}

#[test]
fn named_inputs_and_outputs_work_the_wit_way() {
    use wasmtime_wasi_nn::backend::{BackendExecutionContext, NamedTensor};
    let mut ctx = TractContext::new(load("two_inputs.onnx"));
    let outputs = ctx
        .compute(Some(vec![
            NamedTensor {
                name: "b".into(),
                tensor: f32s(vec![3], &[4.0, 5.0, 6.0]),
            },
            NamedTensor {
                name: "a".into(),
                tensor: f32s(vec![3], &[1.0, 2.0, 3.0]),
            },
        ]))
        .unwrap()
        .unwrap();
    let by_name = |n: &str| as_f32(&outputs.iter().find(|o| o.name == n).unwrap().tensor);
    assert_eq!(by_name("sum"), [5.0, 7.0, 9.0]);
    assert_eq!(by_name("prod"), [4.0, 10.0, 18.0]);
}

#[test]
fn autodetect_encoding_recognizes_onnx_and_refuses_garbage() {
    use wasmtime_wasi_nn::backend::BackendInner;
    use weft_nn::{ExecutionTarget, GraphEncoding, TractBackend};
    let mut backend = TractBackend::new(GraphEncoding::Autodetect, Default::default());
    let bytes = std::fs::read(data("tiny.onnx")).unwrap();
    assert!(backend.load(&[&bytes], ExecutionTarget::Cpu).is_ok());
    let err = backend
        .load(&[b"GGUF but not really"], ExecutionTarget::Cpu)
        .err()
        .expect("garbage must not load");
    assert_eq!(weft_nn::kind_of(&err), weft_nn::ErrorKind::InvalidArgument);
}

/// The GPU device, or a skip (an error in CI).
fn gpu_or_skip() -> bool {
    match weft_nn::gpu::shared() {
        Ok(_) => true,
        Err(e) => {
            weft_tests::skip_or_fail(&format!(
                "no GPU adapter (apt-get install mesa-vulkan-drivers): {e}"
            ));
            false
        }
    }
}

#[test]
fn gpu_target_loads_on_the_gpu_when_an_adapter_opens() {
    use weft_nn::{BackendOptions, ExecutionTarget, GraphEncoding, TractBackend};
    if !gpu_or_skip() {
        return;
    }
    let bytes = std::fs::read(data("tiny.onnx")).unwrap();
    let strict = TractBackend::new(GraphEncoding::Onnx, BackendOptions::default());
    assert!(strict.load_model(&bytes, ExecutionTarget::Gpu).is_ok());
    assert_eq!(
        weft_nn::resolve(weft_nn::Target::Gpu, BackendOptions::default()).unwrap(),
        weft_nn::Device::Gpu
    );
}

#[test]
fn gpu_contexts_match_the_cpu_across_batch_sizes_and_read_outputs_lazily() {
    use weft_nn::Device;
    if !gpu_or_skip() {
        return;
    }
    let model = load_private("mlp_dynamic_batch.onnx", "gpu-batches");
    let mut gpu = TractContext::on(model.clone(), Device::Gpu);
    let mut cpu = TractContext::new(model.clone());
    for batch in [1u32, 5, 2, 5] {
        let x: Vec<f32> = (0..batch * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = f32s(vec![batch, 4], &x);
        for ctx in [&mut gpu, &mut cpu] {
            ctx.set(Id::Index(0), &t).unwrap();
            ctx.run().unwrap();
        }
        let want = as_f32(&cpu.output(&Id::Index(0)).unwrap());
        let got = gpu.output(&Id::Name("y".into())).unwrap();
        assert_eq!(got.dimensions, vec![batch, 3]);
        for (a, b) in as_f32(&got).iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                "batch {batch}: {a} vs {b}"
            );
        }
    }
    // One GPU plan per distinct shape, shared through the model.
    let types = [weft_nn::DatumType::F32];
    let a = model.gpu_plan(&[vec![5, 4]], &types).unwrap();
    let b = model.gpu_plan(&[vec![5, 4]], &types).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.report().gpu_flops_fraction(), 1.0, "{}", a.report());
    // Wrong inputs are refused before anything reaches the device.
    let err = gpu
        .set(Id::Index(0), &f32s(vec![2, 3], &[0.0; 6]))
        .unwrap_err();
    assert!(matches!(err, NnError::InputShape { .. }), "{err}");
}

#[test]
fn a_models_gpu_plans_for_several_shapes_share_its_weights_on_the_device() {
    if !gpu_or_skip() {
        return;
    }
    let model = load_private("mlp_dynamic_batch.onnx", "gpu-plan-weights");
    let types = [weft_nn::DatumType::F32];
    let first = model.gpu_plan(&[vec![2, 4]], &types).unwrap();
    assert!(first.report().weight_bytes > 0);
    assert_eq!(first.report().shared_weight_bytes, 0);
    // Each shape is typed and decluttered anew; its constants are still
    // found to be the ones already on the device.
    for batch in [7, 16] {
        let plan = model.gpu_plan(&[vec![batch, 4]], &types).unwrap();
        let report = plan.report();
        assert_eq!(report.weight_bytes, first.report().weight_bytes, "{report}");
        assert_eq!(report.shared_weight_bytes, report.weight_bytes, "{report}");
    }
}

#[test]
fn a_gpu_plan_being_built_holds_up_only_callers_of_the_same_shapes() {
    use std::sync::mpsc;
    use std::time::Duration;
    if !gpu_or_skip() {
        return;
    }
    let model = load_private("mlp_dynamic_batch.onnx", "gpu-plan-cells");
    let types = [weft_nn::DatumType::F32];
    let planned = model.gpu_plan(&[vec![2, 4]], &types).unwrap();
    // A build of batch 7 that waits, mid-build, until released.
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let building = {
        let model = model.clone();
        std::thread::spawn(move || {
            model.gpu_plan_with(&[vec![7, 4]], &types, |gpu, typed, weights| {
                entered_tx.send(()).unwrap();
                released.recv().unwrap();
                weft_nn::gpu::GpuPlan::build_sharing(gpu, typed, weights)
            })
        })
    };
    entered.recv().unwrap();
    // Meanwhile batch 2, planned already, comes straight back.
    let (done_tx, done) = mpsc::channel();
    {
        let model = model.clone();
        std::thread::spawn(move || {
            let plan = model.gpu_plan(&[vec![2, 4]], &types).unwrap();
            done_tx.send(Arc::as_ptr(&plan) as usize).unwrap();
        });
    }
    let got = done.recv_timeout(Duration::from_secs(30));
    release.send(()).unwrap();
    let got = got.expect("a planned shape waited for another shape's plan to be built");
    assert_eq!(got, Arc::as_ptr(&planned) as usize);
    // The held build finishes and is kept: asking again builds nothing.
    let built = building.join().unwrap().unwrap();
    let again = model
        .gpu_plan_with(&[vec![7, 4]], &types, |_, _, _| panic!("built twice"))
        .unwrap();
    assert!(Arc::ptr_eq(&built, &again));
}

/// MediaPipe's published TFLite models (from its wheel, see
/// `scripts/fetch-models.sh`), or `None` (skipped) when not fetched.
fn tflite(name: &str) -> Option<Vec<u8>> {
    let path = weft_tests::repo_root().join("models/tflite").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            weft_tests::skip_or_fail(&format!(
                "{} missing; run scripts/fetch-models.sh",
                path.display()
            ));
            None
        }
    }
}

/// TFLite models with float16 weights behind DEQUANTIZE and with PRELU
/// load through the TFLite front end with their own interface (names,
/// static shapes) and compute; `autodetect` recognises the flatbuffer.
/// Their outputs are checked against LiteRT in the CLI's serving test.
#[test]
fn tflite_models_load_with_their_interface_and_compute() {
    use weft_nn::ModelFormat;
    for (file, input, shape, outputs) in [
        (
            "face_detection_short_range.tflite",
            "input",
            [1u32, 128, 128, 3],
            &["regressors", "classificators"][..],
        ),
        (
            "iris_landmark.tflite",
            "input_1",
            [1, 64, 64, 3],
            &["output_eyes_contours_and_brows", "output_iris"][..],
        ),
    ] {
        let Some(bytes) = tflite(file) else { return };
        assert_eq!(ModelFormat::detect(&bytes), ModelFormat::TensorFlowLite);
        let model = OnnxModel::load_as(&bytes, ModelFormat::TensorFlowLite)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(model.format(), ModelFormat::TensorFlowLite);
        let sig = model.signature();
        assert_eq!(sig.inputs.len(), 1, "{file}");
        assert_eq!(sig.inputs[0].name, input, "{file}");
        assert_eq!(
            model.inputs()[0].concrete(),
            Some(shape.iter().map(|&d| d as usize).collect()),
            "{file}"
        );
        let names: Vec<&str> = sig.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, outputs, "{file}");
        let mut ctx = TractContext::new(model.clone());
        let n: u32 = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i % 255) as f32 / 255.0).collect();
        ctx.set(Id::Index(0), &f32s(shape.to_vec(), &x)).unwrap();
        ctx.run().unwrap_or_else(|e| panic!("{file}: {e}"));
        for (k, info) in model.outputs().iter().enumerate() {
            let out = ctx.output(&Id::Index(k as u32)).unwrap();
            let values = as_f32(&out);
            assert_eq!(
                Some(out.dimensions.iter().map(|&d| d as usize).collect()),
                info.concrete(),
                "{file}"
            );
            assert!(values.iter().all(|v| v.is_finite()), "{file}: non-finite");
            assert!(values.iter().any(|&v| v != 0.0), "{file}: all zero");
        }
    }
}

/// What the TFLite front end cannot run is named at load, before any
/// translation: a custom operator by its custom code. Truncated or
/// corrupted flatbuffers are errors, never panics.
#[test]
fn tflite_gaps_and_broken_flatbuffers_are_named() {
    use weft_nn::ModelFormat::TensorFlowLite;
    let Some(bytes) = tflite("selfie_segmentation.tflite") else {
        return;
    };
    let err = OnnxModel::load_as(&bytes, TensorFlowLite).unwrap_err();
    assert!(
        matches!(&err, NnError::UnsupportedOperators { ops } if ops == &["custom:Convolution2DTransposeBias"]),
        "{err}"
    );
    let Some(bytes) = tflite("face_detection_short_range.tflite") else {
        return;
    };
    for cut in [0, 7, 100, bytes.len() / 2] {
        let err = OnnxModel::load_as(&bytes[..cut], TensorFlowLite).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a valid TensorFlow Lite model"),
            "cut at {cut}: {err}"
        );
    }
    // Flipped bytes across the file: an error or a model, never a panic
    // escaping the loader.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = (rng % b.len() as u64) as usize;
            b[at] ^= (rng >> 32) as u8 | 1;
        }
        let _ = OnnxModel::load_as(&b, TensorFlowLite);
    }
}

#[test]
fn autodetect_tells_the_formats_apart() {
    use weft_nn::ModelFormat;
    let onnx = std::fs::read(data("tiny.onnx")).unwrap();
    assert_eq!(ModelFormat::detect(&onnx), ModelFormat::Onnx);
    assert_eq!(
        ModelFormat::detect(b"\x0a\x05image"),
        ModelFormat::TensorFlow
    );
    assert_eq!(
        ModelFormat::detect(b"\x1c\0\0\0TFL3"),
        ModelFormat::TensorFlowLite
    );
    // A GraphDef that is not one is named as such.
    let err = OnnxModel::load_as(b"\x0a\xff\xff\xff\x0fxx", ModelFormat::TensorFlow).unwrap_err();
    assert!(
        err.to_string().contains("not a valid TensorFlow model"),
        "{err}"
    );
}

/// A frozen GraphDef written by TensorFlow (`tests/data/make_tf_models.py`)
/// loads with its placeholder as input and its sink as output; a small
/// float16 TFLite model (DEQUANTIZE, PRELU) computes the same as its
/// float32 self would within float16 rounding. The served comparisons
/// against TensorFlow and LiteRT are in the CLI's tests.
#[test]
fn tensorflow_graphs_and_small_tflite_models_compute() {
    use weft_nn::ModelFormat;
    let bytes = std::fs::read(data("cnn_frozen.pb")).unwrap();
    assert_eq!(ModelFormat::detect(&bytes), ModelFormat::TensorFlow);
    let model = OnnxModel::load_as(&bytes, ModelFormat::TensorFlow).unwrap();
    let sig = model.signature();
    assert_eq!(sig.inputs[0].name, "image");
    assert_eq!(model.inputs()[0].concrete(), Some(vec![1, 16, 16, 3]));
    assert_eq!(sig.outputs[0].name, "Identity");
    let mut ctx = TractContext::new(model);
    let x: Vec<f32> = (0..768).map(|i| (i % 17) as f32 / 17.0).collect();
    ctx.set(Id::Index(0), &f32s(vec![1, 16, 16, 3], &x))
        .unwrap();
    ctx.run().unwrap();
    let p = as_f32(&ctx.output(&Id::Index(0)).unwrap());
    assert_eq!(p.len(), 10);
    // Softmax: a distribution.
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
    assert!(p.iter().all(|&v| v > 0.0));

    let bytes = std::fs::read(data("tiny_f16.tflite")).unwrap();
    let model = OnnxModel::load_as(&bytes, ModelFormat::TensorFlowLite).unwrap();
    let mut ctx = TractContext::new(model);
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 32.0 - 1.0).collect();
    ctx.set(Id::Index(0), &f32s(vec![1, 8, 8, 1], &x)).unwrap();
    ctx.run().unwrap();
    let y = as_f32(&ctx.output(&Id::Index(0)).unwrap());
    assert_eq!(y.len(), 3);
    assert!(y.iter().all(|v| v.is_finite() && *v != 0.0), "{y:?}");
}

/// The GPU backend takes TFLite and TensorFlow models too: what the
/// lowering covers of their decluttered graph runs as kernels, the rest
/// on tract, and the outputs match the CPU's (lavapipe in CI).
#[test]
fn tflite_and_tensorflow_models_run_on_the_gpu_backend() {
    use weft_nn::{Device, ModelFormat, Place};
    if let Err(e) = weft_nn::gpu::shared() {
        weft_tests::skip_or_fail(&format!(
            "no GPU adapter (apt-get install mesa-vulkan-drivers): {e}"
        ));
        return;
    }
    let Some(face) = tflite("face_detection_short_range.tflite") else {
        return;
    };
    let tf = std::fs::read(data("cnn_frozen.pb")).unwrap();
    for (bytes, format, shape) in [
        (&face, ModelFormat::TensorFlowLite, vec![1u32, 128, 128, 3]),
        (&tf, ModelFormat::TensorFlow, vec![1, 16, 16, 3]),
    ] {
        let model = OnnxModel::load_as(bytes, format).unwrap();
        let n: u32 = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i % 251) as f32 / 251.0).collect();
        let run = |device| {
            let mut ctx = TractContext::on(model.clone(), device);
            ctx.set(Id::Index(0), &f32s(shape.clone(), &x)).unwrap();
            ctx.run()
                .unwrap_or_else(|e| panic!("{format} on {device:?}: {e}"));
            (0..model.outputs().len())
                .map(|k| as_f32(&ctx.output(&Id::Index(k as u32)).unwrap()))
                .collect::<Vec<_>>()
        };
        let (cpu, gpu) = (run(Device::Cpu), run(Device::Gpu));
        for (c, g) in cpu.iter().zip(&gpu) {
            assert_eq!(c.len(), g.len());
            let worst = c
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "{format}: GPU differs from CPU by {worst}");
        }
        let shapes = vec![shape.iter().map(|&d| d as usize).collect()];
        let plan = model.gpu_plan(&shapes, &[weft_nn::DatumType::F32]).unwrap();
        let lowered = plan
            .report()
            .nodes
            .iter()
            .filter(|n| matches!(n.place, Place::Gpu(_)))
            .count();
        println!(
            "{format}: {lowered} nodes lowered to the GPU; {}",
            plan.report().summary()
        );
    }
}
