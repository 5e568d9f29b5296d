//! The WGSL kernels and their compiled pipelines (one per device).

use crate::error::GpuError;
use std::sync::Arc;

const COMMON: &str = include_str!("shaders/common.wgsl");

/// One compiled kernel variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    // Elementwise, copy, reduction, softmax/norm and pooling kernels; `half`:
    // f16 tensors (`shader-f16`), arithmetic in f32 (as in every variant).
    Unary {
        half: bool,
    },
    Binary {
        half: bool,
    },
    Copy {
        half: bool,
    },
    Reduce {
        half: bool,
    },
    Softmax {
        half: bool,
    },
    Pool {
        half: bool,
    },
    /// Direct convolution (depthwise, grouped), same `half`.
    Conv {
        half: bool,
    },
    /// Transposed convolution, same `half`.
    Deconv {
        half: bool,
    },
    /// Tiled GEMM; `wide` is the 128 x 128 tile with 8 x 8 register blocks,
    /// otherwise 64 x 64 with 4 x 4; `im2col` gathers B from a convolution
    /// input; `half`: f16 storage (`shader-f16`), f32 accumulation.
    Gemm {
        wide: bool,
        im2col: bool,
        half: bool,
    },
    /// f16 GEMM on cooperative matrices (tensor cores): 128 x 128 tiles,
    /// one workgroup of eight subgroups of `subgroup` invocations, K staged
    /// `bk` at a time. Chosen only on a device where `coop::probe` passed.
    CoopGemm {
        subgroup: u32,
        bk: u32,
    },
}

impl Kernel {
    /// The variant as plain numbers, one-to-one (the device's pipeline
    /// cache key, which the device layer keeps without knowing kernels).
    pub(crate) fn key(self) -> (u8, [u32; 3]) {
        let b = u32::from;
        match self {
            Kernel::Unary { half } => (0, [b(half), 0, 0]),
            Kernel::Binary { half } => (1, [b(half), 0, 0]),
            Kernel::Copy { half } => (2, [b(half), 0, 0]),
            Kernel::Reduce { half } => (3, [b(half), 0, 0]),
            Kernel::Softmax { half } => (4, [b(half), 0, 0]),
            Kernel::Pool { half } => (5, [b(half), 0, 0]),
            Kernel::Conv { half } => (6, [b(half), 0, 0]),
            Kernel::Deconv { half } => (7, [b(half), 0, 0]),
            Kernel::Gemm { wide, im2col, half } => (8, [b(wide), b(im2col), b(half)]),
            Kernel::CoopGemm { subgroup, bk } => (9, [subgroup, bk, 0]),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Unary { half: false } => "unary",
            Kernel::Unary { half: true } => "unary-f16",
            Kernel::Binary { half: false } => "binary",
            Kernel::Binary { half: true } => "binary-f16",
            Kernel::Copy { half: false } => "copy",
            Kernel::Copy { half: true } => "copy-f16",
            Kernel::Reduce { half: false } => "reduce",
            Kernel::Reduce { half: true } => "reduce-f16",
            Kernel::Softmax { half: false } => "softmax",
            Kernel::Softmax { half: true } => "softmax-f16",
            Kernel::Pool { half: false } => "pool",
            Kernel::Pool { half: true } => "pool-f16",
            Kernel::Conv { half: false } => "conv-direct",
            Kernel::Conv { half: true } => "conv-direct-f16",
            Kernel::Deconv { half: false } => "deconv",
            Kernel::Deconv { half: true } => "deconv-f16",
            Kernel::Gemm { wide, im2col, half } => match (im2col, wide, half) {
                (false, false, false) => "gemm-64",
                (false, true, false) => "gemm-128",
                (false, false, true) => "gemm-64-f16",
                (false, true, true) => "gemm-128-f16",
                (true, false, false) => "conv-implicit-gemm-64",
                (true, true, false) => "conv-implicit-gemm-128",
                (true, false, true) => "conv-implicit-gemm-64-f16",
                (true, true, true) => "conv-implicit-gemm-128-f16",
            },
            Kernel::CoopGemm { .. } => "gemm-coop-f16",
        }
    }

    /// The variant of this kernel for f16 tensors (f16 storage, f32
    /// arithmetic).
    pub(crate) fn in_f16(self) -> Kernel {
        match self {
            Kernel::Unary { .. } => Kernel::Unary { half: true },
            Kernel::Binary { .. } => Kernel::Binary { half: true },
            Kernel::Copy { .. } => Kernel::Copy { half: true },
            Kernel::Reduce { .. } => Kernel::Reduce { half: true },
            Kernel::Softmax { .. } => Kernel::Softmax { half: true },
            Kernel::Pool { .. } => Kernel::Pool { half: true },
            Kernel::Conv { .. } => Kernel::Conv { half: true },
            Kernel::Deconv { .. } => Kernel::Deconv { half: true },
            Kernel::Gemm { wide, im2col, .. } => Kernel::Gemm {
                wide,
                im2col,
                half: true,
            },
            Kernel::CoopGemm { .. } => self,
        }
    }

    /// The parameter word holding the first element, within its binding,
    /// of the operand bound at `slot` (in `Spec::binds` order), where the
    /// kernel has one: a part of a cut node binds such an operand from the
    /// aligned offset before its slice.
    pub(crate) fn base(self, slot: usize) -> Option<usize> {
        let words: &[usize] = match self {
            Kernel::Unary { .. } => &[4, 5],
            Kernel::Copy { .. } => &[1, 2],
            Kernel::Binary { .. } => &[21, 22, 23],
            Kernel::Conv { .. } => &[21, 22, 23, 24],
            Kernel::Deconv { .. } => &[18, 19, 20, 21],
            Kernel::Softmax { .. } => &[5, 6],
            Kernel::Reduce { .. } => &[21, 22],
            Kernel::Pool { .. } => &[16, 17],
            Kernel::Gemm { .. } | Kernel::CoopGemm { .. } => {
                &[gp::A_BASE, gp::B_BASE, gp::BIAS_BASE, gp::C_BASE]
            }
        };
        words.get(slot).copied()
    }

    /// The tile edge of a GEMM variant (rows and columns per workgroup).
    pub fn tile(self) -> u32 {
        match self {
            Kernel::Gemm { wide: true, .. } | Kernel::CoopGemm { .. } => 128,
            _ => 64,
        }
    }

    /// The kernel's complete WGSL module.
    pub fn source(self) -> String {
        let body = match self {
            Kernel::Unary { half }
            | Kernel::Binary { half }
            | Kernel::Copy { half }
            | Kernel::Reduce { half }
            | Kernel::Softmax { half }
            | Kernel::Pool { half }
            | Kernel::Conv { half }
            | Kernel::Deconv { half } => {
                let body = match self {
                    Kernel::Unary { .. } => include_str!("shaders/unary.wgsl"),
                    Kernel::Binary { .. } => include_str!("shaders/binary.wgsl"),
                    Kernel::Copy { .. } => include_str!("shaders/copy.wgsl"),
                    Kernel::Reduce { .. } => include_str!("shaders/reduce.wgsl"),
                    Kernel::Softmax { .. } => include_str!("shaders/softmax.wgsl"),
                    Kernel::Conv { .. } => include_str!("shaders/conv.wgsl"),
                    Kernel::Deconv { .. } => include_str!("shaders/deconv.wgsl"),
                    _ => include_str!("shaders/pool.wgsl"),
                };
                if half {
                    return format!("enable f16;\n{COMMON}\n{}", body.replace("{{T}}", "f16"));
                }
                body.replace("{{T}}", "f32")
            }
            Kernel::Gemm { wide, im2col, half } => {
                let (tile, block) = if wide { (128, 8) } else { (64, 4) };
                let (acc, step, store) = gemm_block(block);
                let source = include_str!("shaders/gemm.wgsl")
                    .replace("{{BM}}", &tile.to_string())
                    .replace("{{BN}}", &tile.to_string())
                    .replace("{{ACC}}", &acc)
                    .replace("{{STEP}}", &step)
                    .replace("{{STORE}}", &store)
                    .replace("{{LOAD_B}}", load_b(im2col))
                    .replace("{{T}}", if half { "f16" } else { "f32" });
                if half {
                    // Extensions come first in a WGSL module.
                    return format!("enable f16;\n{COMMON}\n{source}");
                }
                source
            }
            Kernel::CoopGemm { subgroup, bk } => {
                return format!(
                    "enable f16;\nenable wgpu_cooperative_matrix;\n{COMMON}\n{}",
                    coop_source(subgroup, bk)
                );
            }
        };
        format!("{COMMON}\n{body}")
    }
}

/// gemm.wgsl's `block` x `block` register block written out: the
/// accumulators, one BK step (the invocation's column of As and row of Bs,
/// then every product) and the stores. Rows are `ty + 16 i`, columns
/// `tx + 16 j` (see gemm.wgsl).
fn gemm_block(block: u32) -> (String, String, String) {
    use std::fmt::Write;
    let (mut acc, mut step, mut store) = (String::new(), String::new(), String::new());
    for i in 0..block {
        let _ = writeln!(
            step,
            "            let a{i} = As[ar + ((ty + {}u) ^ sw)];",
            16 * i
        );
    }
    for j in 0..block {
        let _ = writeln!(step, "            let b{j} = Bs[br + tx + {}u];", 16 * j);
    }
    for i in 0..block {
        for j in 0..block {
            let _ = writeln!(acc, "    var r{i}_{j} = 0.0;");
            let _ = writeln!(step, "            r{i}_{j} = fma(a{i}, b{j}, r{i}_{j});");
            let _ = writeln!(
                store,
                "    put(m0 + ty + {}u, n0 + tx + {}u, r{i}_{j}, cbase, biasbase);",
                16 * i,
                16 * j
            );
        }
    }
    (acc, step, store)
}

/// The body of a GEMM's `load_b`: a strided read, or an implicit im2col
/// gather (convolution as GEMM without materializing patches).
fn load_b(im2col: bool) -> &'static str {
    if im2col {
        // k -> (ci, ky, kx), n -> (oy, ox); zero outside the input.
        "    let kk = p[28] * p[29];
    let ci = k / kk;
    let r = k % kk;
    let ky = r / p[29];
    let kx = r % p[29];
    let oy = n / p[30];
    let ox = n % p[30];
    let iy = i32(oy * p[31] + ky * p[33]) - i32(p[35]);
    let ix = i32(ox * p[32] + kx * p[34]) - i32(p[36]);
    if (iy < 0 || ix < 0 || iy >= i32(p[26]) || ix >= i32(p[27])) { return 0.0; }
    return f32(b[base + ci * p[37] + u32(iy) * p[27] + u32(ix)]);"
    } else {
        "    return f32(b[base + k * p[18] + n * p[19]]);"
    }
}

/// gemm_coop.wgsl with its eight accumulators (2 x 4 tiles of 16 x 16 per
/// subgroup) written out: WGSL has no arrays of cooperative matrices.
fn coop_source(subgroup: u32, bk: u32) -> String {
    let tiles = || (0..2).flat_map(|i| (0..4).map(move |j| (i, j)));
    let decls: String = tiles()
        .map(|(i, j)| format!("    var c{i}{j} = coopLoadT<coop_mat16x16<f32, C>>(&Cs[0], 16u);\n"))
        .collect();
    let mma: String = tiles()
        .map(|(i, j)| format!("            c{i}{j} = coopMultiplyAdd(x{i}, y{j}, c{i}{j});\n"))
        .collect();
    let epilogue: String = tiles()
        .map(|(i, j)| {
            format!(
                "    coopStoreT(c{i}{j}, &Cs[sg * 256u], 16u);
    workgroupBarrier();
    store_tile(sg, lane, sgsize, m0 + wm + {}u, n0 + wn + {}u, cbase, biasbase);
    workgroupBarrier();\n",
                i * 16,
                j * 16
            )
        })
        .collect();
    include_str!("shaders/gemm_coop.wgsl")
        .replace("{{BK}}", &bk.to_string())
        .replace("{{WG}}", &(8 * subgroup).to_string())
        .replace("{{LOAD_B}}", load_b(false))
        .replace("{{DECLS}}", &decls)
        .replace("{{MMA}}", &mma)
        .replace("{{EPILOGUE}}", &epilogue)
}

/// `kernel`'s compiled pipeline on `gpu`, built on first use and kept in
/// the device's cache (`Gpu::pipelines`) by kernel and by whether wgpu's
/// shader runtime checks were compiled in.
pub(crate) fn pipeline(
    gpu: &crate::Gpu,
    kernel: Kernel,
) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
    let checked = crate::device::shader_checks(gpu.info.backend);
    let (variant, fields) = kernel.key();
    let key = (variant, fields, checked);
    if let Some(p) = gpu
        .pipelines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(p.clone());
    }
    let source = kernel.source();
    let pipeline = gpu.scoped(|| {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = if checked {
            gpu.device.create_shader_module(desc)
        } else {
            // SAFETY: these are Weft's own kernels, not guest code. Every
            // loop runs a count bounded by tensor sizes (which fit in a
            // binding, so no counter wraps), and every buffer index is
            // guarded by the kernel against its parameters; beyond that,
            // this is only chosen where the driver itself keeps accesses
            // inside the bound range (Vulkan's robustBufferAccess, which
            // every Vulkan device supports and wgpu enables; DX12 buffer
            // views). Workgroup and private array indices are loop
            // constants (`kernels` tests run every variant). Integer
            // division keeps its guards.
            unsafe {
                gpu.device.create_shader_module_trusted(
                    desc,
                    wgpu::ShaderRuntimeChecks {
                        bounds_checks: false,
                        force_loop_bounding: false,
                        ..wgpu::ShaderRuntimeChecks::checked()
                    },
                )
            }
        };
        gpu.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    // The tiled GEMM writes all of its workgroup memory
                    // before a barrier and any read (`gemm.wgsl`).
                    zero_initialize_workgroup_memory: !matches!(kernel, Kernel::Gemm { .. }),
                    ..Default::default()
                },
                cache: None,
            })
    })?;
    let pipeline = Arc::new(pipeline);
    gpu.pipelines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, pipeline.clone());
    Ok(pipeline)
}

/// Indices into a GEMM kernel's parameter words (gemm.wgsl's layout,
/// shared by gemm_coop.wgsl), for what rewrites an encoded GEMM (`split`).
pub(crate) mod gp {
    pub const M: usize = 0;
    pub const N: usize = 1;
    pub const K: usize = 2;
    /// Three batch extents, then three batch strides each of A, B and C.
    pub const BATCH: usize = 4;
    pub const A_BATCH: usize = 7;
    pub const B_BATCH: usize = 10;
    pub const C_BATCH: usize = 13;
    /// Row (m or k) and column (k or n) strides of A, B and C.
    pub const A_RS: usize = 16;
    pub const A_CS: usize = 17;
    pub const B_RS: usize = 18;
    pub const B_CS: usize = 19;
    pub const C_RS: usize = 20;
    pub const C_CS: usize = 21;
    /// Bit 0: add the bias; bit 1: add what C holds.
    pub const MODE: usize = 22;
    pub const ACT: usize = 23;
    /// The im2col gather's input height and width, kernel height and
    /// width, output width, vertical stride and dilation, padding above,
    /// and its input's channel stride (H*W of the whole input).
    pub const H: usize = 26;
    pub const W: usize = 27;
    pub const KH: usize = 28;
    pub const KW: usize = 29;
    pub const OW: usize = 30;
    pub const SY: usize = 31;
    pub const DY: usize = 33;
    pub const PT: usize = 35;
    pub const HW: usize = 37;
    pub const BIAS_RS: usize = 38;
    pub const BIAS_CS: usize = 39;
    pub const BIAS_BATCH: usize = 40;
    /// First element of A, B, C and the bias within their bindings.
    pub const A_BASE: usize = 43;
    pub const B_BASE: usize = 44;
    pub const C_BASE: usize = 45;
    pub const BIAS_BASE: usize = 46;
    pub const LEN: usize = 47;
    /// `MODE` bits.
    pub const ADD_BIAS: u32 = 1;
    pub const ACCUMULATE: u32 = 2;
}
