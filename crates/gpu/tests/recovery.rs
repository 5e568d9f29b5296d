//! Failures a node must survive: a lost device and a full memory budget.
//! Each fails the request with its own error; the next request works.
//! One test in its own binary: both change process-wide state.

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops;
use weft_gpu::{GpuContext, GpuError, GpuPlan};

fn model(n: usize) -> TypedModel {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([n, 64])).unwrap();
    let w = model
        .add_const(
            "w",
            Tensor::from_shape(&[64, 64], &vec![0.5f32; 64 * 64]).unwrap(),
        )
        .unwrap();
    let op = ops::einsum::EinSum {
        axes: "mk,kn->mn".parse().unwrap(),
        operating_dt: f32::datum_type(),
        q_params: None,
    };
    let y = model.wire_node("mm", op, &[x, w]).unwrap();
    model.select_output_outlets(&y).unwrap();
    model
}

fn run(n: usize) -> Result<f32, GpuError> {
    let plan = Arc::new(GpuPlan::build(weft_gpu::shared()?, &model(n))?);
    let mut ctx = GpuContext::new(plan)?;
    ctx.run(vec![Arc::new(
        Tensor::from_shape(&[n, 64], &vec![1f32; n * 64]).unwrap(),
    )])?;
    let out = ctx.output(0)?;
    Ok(out.to_plain_array_view::<f32>().unwrap()[[0, 0]])
}

#[test]
fn device_loss_and_memory_budget_fail_one_request_then_recover() {
    let gpu = match weft_gpu::shared() {
        Ok(g) => g,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no GPU adapter: {e}");
            return;
        }
        Err(e) => panic!("CI needs a GPU adapter: {e}"),
    };
    assert_eq!(run(4).unwrap(), 32.0);

    // Plans of two shapes sharing a store reserve the weights once.
    let weights = weft_gpu::Weights::new();
    let plan = Arc::new(GpuPlan::build_sharing(gpu.clone(), &model(4), &weights).unwrap());
    let held = weft_gpu::memory_in_use();
    assert_eq!(held, 64 * 64 * 4);
    let other = GpuPlan::build_sharing(gpu.clone(), &model(8), &weights).unwrap();
    assert_eq!(other.report().shared_weight_bytes, 64 * 64 * 4);
    assert_eq!(weft_gpu::memory_in_use(), held);
    drop(other);
    assert_eq!(
        weft_gpu::memory_in_use(),
        held,
        "still bound by the first plan"
    );

    // A context made before the loss fails with DeviceLost.
    let mut ctx = GpuContext::new(plan.clone()).unwrap();
    gpu.destroy_for_test();
    let err = ctx
        .run(vec![Arc::new(
            Tensor::from_shape(&[4, 64], &[1f32; 256]).unwrap(),
        )])
        .and_then(|()| ctx.output(0).map(|_| ()))
        .expect_err("a destroyed device cannot compute");
    assert!(err.device_lost(), "{err}");
    assert!(
        err.to_string().contains("next one opens the device again"),
        "{err}"
    );
    drop(ctx);
    // The next request opens a new device and works.
    assert_eq!(run(4).unwrap(), 32.0);
    let again = weft_gpu::shared().unwrap();
    assert!(again.generation() > gpu.generation());
    // The lost device's weights are not bound on the new one.
    let fresh = GpuPlan::build_sharing(again.clone(), &model(4), &weights).unwrap();
    assert_eq!(fresh.report().shared_weight_bytes, 0);
    drop(fresh);
    drop(plan);
    assert_eq!(weft_gpu::memory_in_use(), 0);

    // A budget smaller than the activations refuses the request clearly...
    weft_gpu::configure(weft_gpu::GpuConfig {
        memory_budget: Some(64 * 64 * 4 + 1024),
        ..Default::default()
    });
    let err = run(4096).expect_err("16 MiB of activations exceed the budget");
    assert!(matches!(err, GpuError::Budget { .. }), "{err}");
    assert!(err.to_string().contains("budget of 17408 bytes"), "{err}");
    // ...and what was reserved for it is released: a small request fits.
    assert_eq!(weft_gpu::memory_in_use(), 0);
    assert_eq!(run(2).unwrap(), 32.0);
    weft_gpu::configure(weft_gpu::GpuConfig::default());
    assert_eq!(run(4096).unwrap(), 32.0);
}
