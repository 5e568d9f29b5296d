//! `weft info`: what this node offers wasi-nn modules: backends, GPU
//! adapters and their features, and (with `--model`) where each node of a
//! model would run.

use crate::parse;
use std::path::PathBuf;
use weft_nn::{DatumType, OnnxModel, gpu};

/// Show backends, GPU adapters and features; with --model, the GPU
/// placement report of that model.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// An ONNX model to lower for the GPU: prints which nodes run on the GPU
    /// and which stay on the CPU, and the fraction of FLOPs on the GPU.
    #[arg(long, value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,

    /// Concrete input shapes for --model, one per input in order (e.g.
    /// --shape 1,3,640,640); needed for inputs with dynamic dimensions.
    #[arg(long, value_name = "DIMS", value_parser = parse::dims)]
    pub shape: Vec<Vec<usize>>,

    #[command(flatten)]
    pub gpu: crate::run::GpuArgs,
}

pub fn exec(a: InfoArgs) -> anyhow::Result<i32> {
    a.gpu.apply();
    outln!("weft {}", env!("CARGO_PKG_VERSION"));
    outln!("wasi-nn encodings: onnx, autodetect");
    outln!("backends: cpu (tract), gpu (wgpu: vulkan, metal, dx12)");
    cpu_engine(&a.gpu.cpu);
    let source = if a.gpu.nn_gpu_adapter.is_some() {
        "--nn-gpu-adapter / WEFT_GPU_ADAPTER"
    } else {
        "default"
    };
    outln!(
        "gpu adapter selector: {} (from {source})",
        a.gpu.config().adapter
    );
    outln!(
        "gpu policy: target gpu fails without an adapter unless --nn-gpu-fallback; target auto uses a hardware adapter when one opens, else the cpu"
    );
    let adapters = gpu::adapters();
    if adapters.is_empty() {
        outln!(
            "gpu adapters: none (install a Vulkan driver; Debian's mesa-vulkan-drivers gives a CPU one)"
        );
    } else {
        outln!("gpu adapters:");
        for ad in &adapters {
            outln!(
                "  {}{} {} [{}] {}{}: driver {}; features: {}; max buffer {} MiB, max binding {} MiB",
                if ad.selected { "*" } else { " " },
                ad.index,
                ad.name,
                ad.backend,
                ad.device_type,
                if ad.software { " (software)" } else { "" },
                if ad.driver.is_empty() {
                    "?"
                } else {
                    &ad.driver
                },
                if ad.features.is_empty() {
                    "none".to_string()
                } else {
                    ad.features.join(", ")
                },
                ad.max_buffer_size >> 20,
                ad.max_storage_binding >> 20,
            );
            match &ad.cooperative_matrix {
                Ok(what) => outln!("     cooperative matrices: {what}"),
                Err(_) if !a.gpu.nn_gpu_cooperative_matrix => outln!(
                    "     cooperative matrices: not used (turned off by --nn-gpu-cooperative-matrix / WEFT_GPU_COOPERATIVE_MATRIX)"
                ),
                Err(why) => outln!("     cooperative matrices: not used ({why})"),
            }
        }
    }
    // The tensor-core kernel is trusted only after a check on the device.
    if adapters
        .iter()
        .any(|ad| ad.selected && ad.cooperative_matrix.is_ok())
    {
        match gpu::shared().map(|g| g.cooperative_matrix()) {
            Ok(Ok(kernel)) => outln!(
                "f16 GEMM kernel: {} (checked against the CPU on this device)",
                kernel.name()
            ),
            Ok(Err(why)) => outln!("f16 GEMM kernel: tiled ({why})"),
            Err(e) => outln!("f16 GEMM kernel: the device did not open: {e}"),
        }
    }
    let Some(path) = &a.model else {
        return Ok(0);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read model {}: {e}", path.display()))?;
    let format = weft_nn::ModelFormat::detect(&bytes);
    let model = OnnxModel::load_as(&bytes, format)?;
    let mut shapes = Vec::new();
    let mut types = Vec::new();
    for (i, input) in model.inputs().iter().enumerate() {
        let shape = match a.shape.get(i) {
            Some(s) => s.clone(),
            None => input.concrete().ok_or_else(|| {
                anyhow::anyhow!(
                    "input `{}` has shape {}; give its concrete shape with --shape (one per input, in order)",
                    input.name,
                    input.shape_string()
                )
            })?,
        };
        shapes.push(shape);
        types.push(input.datum_type.unwrap_or(DatumType::F32));
    }
    let plan = model.gpu_plan(&shapes, &types)?;
    outln!("placement of {} for {:?}:", path.display(), shapes);
    for line in plan.report().to_string().lines() {
        outln!("{line}");
    }
    Ok(0)
}

/// The CPU engine chosen, and where onnxruntime is (loaded when chosen).
fn cpu_engine(cpu: &crate::run::CpuArgs) {
    use weft_nn::CpuEngine;
    match cpu.engine() {
        CpuEngine::Tract => {
            outln!("cpu engine: tract (--cpu-engine / WEFT_CPU_ENGINE: tract or onnxruntime)");
            match weft_nn::ort::library() {
                Ok(path) => outln!(
                    "onnxruntime: {} (--cpu-engine onnxruntime loads it)",
                    path.display()
                ),
                Err(e) => outln!("onnxruntime: unavailable: {e}"),
            }
        }
        CpuEngine::Onnxruntime { threads } => {
            let threads = match threads {
                0 => "onnxruntime's default".to_owned(),
                n => n.to_string(),
            };
            outln!("cpu engine: onnxruntime for ONNX graphs, threads per inference: {threads}");
            match weft_nn::ort::init() {
                Ok(lib) => outln!("onnxruntime: {} at {}", lib.version(), lib.path().display()),
                Err(e) => outln!("onnxruntime: unavailable: {e}"),
            }
        }
    }
}
