//! Every kernel's WGSL through naga, wgpu's shader compiler: parsed,
//! validated (uniformity included) and written as SPIR-V the way wgpu's
//! Vulkan backend does, with no device. This is where the tensor-core
//! kernel, which no CI device runs, is held to compiling: its results are
//! checked on the device itself before use (`coop::probe`).

use naga::valid::{Capabilities, ShaderStages, ValidationFlags, Validator};
use weft_gpu::Kernel;

fn kernels() -> Vec<Kernel> {
    let mut all = Vec::new();
    for half in [false, true] {
        all.extend([
            Kernel::Conv { half },
            Kernel::Deconv { half },
            Kernel::Unary { half },
            Kernel::Binary { half },
            Kernel::Copy { half },
            Kernel::Reduce { half },
            Kernel::Softmax { half },
            Kernel::Pool { half },
        ]);
    }
    for wide in [false, true] {
        for im2col in [false, true] {
            for half in [false, true] {
                all.push(Kernel::Gemm { wide, im2col, half });
            }
        }
    }
    for subgroup in [8, 32, 64] {
        for bk in [16, 32] {
            all.push(Kernel::CoopGemm { subgroup, bk });
        }
    }
    all
}

fn compile(kernel: Kernel) -> Result<Vec<u32>, String> {
    let source = kernel.source();
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string(&source))?;
    let info = Validator::new(
        ValidationFlags::all(),
        Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP | Capabilities::COOPERATIVE_MATRIX,
    )
    .subgroup_stages(ShaderStages::COMPUTE)
    .validate(&module)
    .map_err(|e| e.emit_to_string(&source))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    naga::back::spv::write_vec(
        &module,
        &info,
        &options,
        Some(&naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".into(),
        }),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn every_kernel_compiles_to_spirv() {
    let mut failed = Vec::new();
    for kernel in kernels() {
        if let Err(e) = compile(kernel) {
            failed.push(format!("{kernel:?} ({}):\n{e}", kernel.name()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn the_tensor_core_kernel_uses_cooperative_matrices() {
    let words = compile(Kernel::CoopGemm {
        subgroup: 32,
        bk: 32,
    })
    .unwrap();
    // SPIR-V opcodes (low 16 bits of an instruction's first word):
    // OpCooperativeMatrixMulAddKHR 4459, OpCooperativeMatrixLoadKHR 4457.
    let ops = |code: u32| {
        let mut n = 0;
        let mut i = 5; // after the header
        while i < words.len() {
            let len = (words[i] >> 16) as usize;
            if words[i] & 0xffff == code {
                n += 1;
            }
            i += len.max(1);
        }
        n
    };
    // 2 x 4 accumulators: eight multiply-adds per K step, six tile loads
    // plus the eight zero-initialized accumulators.
    assert_eq!(ops(4459), 8, "OpCooperativeMatrixMulAddKHR");
    assert_eq!(ops(4457), 6 + 8, "OpCooperativeMatrixLoadKHR");
    let source = Kernel::CoopGemm {
        subgroup: 32,
        bk: 32,
    }
    .source();
    assert!(source.contains("@workgroup_size(WG)") && source.contains("const WG = 256u;"));
    assert!(!source.contains("{{"), "a placeholder was left:\n{source}");
}
