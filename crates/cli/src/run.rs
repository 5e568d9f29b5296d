//! `weft run`: run a model module.

use crate::parse;
use crate::store::StoreArgs;
use clap::Args;
use std::path::PathBuf;

use std::time::{Duration, Instant};
use weft_nn::{BackendOptions, CpuEngine, GpuPolicy, Preload};
use weft_runtime::{DirGrant, Launch, Limits, Purpose, Runtime, RuntimeConfig, RuntimeError};

/// Run a WebAssembly module (wasm32-wasip1 core module or wasm32-wasip2
/// component) with wasi-nn. The module gets no files, network or environment
/// unless granted; its exit code becomes weft's.
#[derive(Args)]
#[command(
    after_help = "Example:\n  weft run ocr.wasm \\\n    --nn-preload ppocr-det:onnx:cpu:models/ch_PP-OCRv4_det_infer.onnx \\\n    --nn-preload ppocr-rec:onnx:cpu:models/ch_PP-OCRv4_rec_infer.onnx \\\n    --dir models::/models:ro --dir modules/ocr/testdata::/data:ro -- /data/sample.png"
)]
pub struct RunArgs {
    /// The module file (.wasm), or a reference in the local store (ocr:1.0,
    /// see `weft build` and `weft images`). A reference runs with its models
    /// preloaded, its files visible read-only under `/` and its default
    /// arguments before ARGS.
    #[arg(value_name = "MODULE|REF")]
    pub module: String,

    /// Preload a model for `load_by_name`: NAME:ENCODING:TARGET:PATH
    /// (WasmEdge's syntax). ENCODING: onnx or autodetect; TARGET: cpu, gpu,
    /// tpu or auto.
    #[arg(long = "nn-preload", value_name = "NAME:ENCODING:TARGET:PATH")]
    pub nn_preload: Vec<String>,

    /// Grant a host directory: HOST::GUEST, or HOST::GUEST:ro for read only.
    #[arg(long, value_name = "HOST::GUEST", value_parser = parse::dir)]
    pub dir: Vec<DirGrant>,

    /// Set an environment variable for the module: KEY=VALUE, or KEY to
    /// pass the host's value.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::env)]
    pub env: Vec<(String, String)>,

    /// Cap on what the module holds on the host: its linear memory and the
    /// tensors and graphs wasi-nn keeps for it (e.g. 512MiB, 2GiB).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse::size)]
    pub max_memory: usize,

    /// Wall-clock deadline (e.g. 30s, 500ms, 5m) or `none`. Enforced when the
    /// module runs wasm code; one long inference call finishes first.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse::timeout)]
    pub timeout: Duration,

    /// Stop the module after this many units of fuel (about one per wasm
    /// instruction). Metering slows wasm code down.
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<u64>,

    /// Directory of the compiled-module cache [default: the user cache dir,
    /// e.g. ~/.cache/weft/compiled; env WEFT_CACHE_DIR].
    #[arg(long, value_name = "DIR", env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not read or write the compiled-module cache.
    #[arg(long)]
    pub no_cache: bool,

    #[command(flatten)]
    pub gpu: GpuArgs,

    /// Print load, preload and run times to stderr.
    #[arg(long)]
    pub timings: bool,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,

    /// Arguments for the module (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

pub fn exec(a: RunArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let preloads = a
        .nn_preload
        .iter()
        .map(|s| s.parse::<Preload>())
        .collect::<Result<Vec<_>, _>>()?;
    a.gpu.apply();
    let config = runtime_config(
        a.gpu.nn_gpu_fallback,
        a.no_cache,
        a.cache_dir.clone(),
        a.fuel.is_some(),
    );
    let runtime = Runtime::new(config)?;
    // Models first, then the code: a bad preload fails before anything is
    // compiled or written to the cache.
    let resolved = resolve_module(&a.module, &a.store, &a.remote, false)?;
    let prepared = runtime.prepare(
        resolved,
        Purpose::Run,
        Launch {
            preloads,
            dirs: a.dir.clone(),
            args: a.args.clone(),
            env: a.env.clone(),
            limits: Limits {
                max_memory: a.max_memory,
                timeout: (!a.timeout.is_zero()).then_some(a.timeout),
                fuel: a.fuel,
            },
            ..Default::default()
        },
    )?;
    let run_started = Instant::now();
    let code = prepared.run(&runtime)?;
    if a.timings {
        eprintln!(
            "weft: timings: load {:.1} ms (compile cache: {:?}), preload {:.1} ms, run {:.1} ms, total {:.1} ms",
            ms(prepared.program.compile_time()),
            prepared.program.cache_outcome(),
            ms(prepared.preload_time),
            ms(run_started.elapsed()),
            ms(started.elapsed())
        );
    }
    Ok(code)
}

/// The GPU flags `weft run` and `weft serve` share, with the CPU engine's
/// (every command that builds wasi-nn backends takes both).
#[derive(clap::Args, Debug, Clone)]
pub struct GpuArgs {
    /// When a model asks for the GPU (target gpu) and no GPU adapter opens,
    /// run it on the CPU with a warning instead of failing the load.
    #[arg(long, env = "WEFT_NN_GPU_FALLBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub nn_gpu_fallback: bool,

    /// The GPU adapter to use: an index or a name substring from `weft
    /// info`, a backend (vulkan, metal, dx12), or `none` [default: the
    /// best: discrete, integrated, virtual, then software].
    #[arg(long, value_name = "ADAPTER", env = "WEFT_GPU_ADAPTER")]
    pub nn_gpu_adapter: Option<String>,

    /// Cap on the GPU memory models may hold, weights and activations (e.g.
    /// 4GiB); a request that would exceed it fails with its own error.
    #[arg(long, value_name = "SIZE", env = "WEFT_GPU_MEMORY", value_parser = parse::size)]
    pub nn_gpu_memory: Option<usize>,

    /// Cap on the bytes one GPU kernel binding may hold (e.g. 128MiB, the
    /// limit of many mobile GPUs), below the adapter's own: nodes with
    /// larger tensors are cut into parts that fit, or run on the CPU.
    #[arg(long, value_name = "SIZE", env = "WEFT_GPU_BINDING_LIMIT", value_parser = parse::size)]
    pub nn_gpu_binding_limit: Option<usize>,

    /// Compile the GPU kernels with all of wgpu's shader runtime checks
    /// (index clamps, loop counters) even on Vulkan and DX12, whose drivers
    /// keep buffer accesses in range themselves; Metal and GL always have
    /// them.
    #[arg(long, env = "WEFT_GPU_SHADER_CHECKS", value_parser = clap::builder::BoolishValueParser::new())]
    pub nn_gpu_shader_checks: bool,

    /// Use the cooperative-matrix (tensor core) f16 GEMM where the adapter
    /// offers it and it passes its check on the device; `off` keeps the
    /// tiled kernel.
    #[arg(long, value_name = "ON|OFF", env = "WEFT_GPU_COOPERATIVE_MATRIX", default_value = "on",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub nn_gpu_cooperative_matrix: bool,

    #[command(flatten)]
    pub cpu: CpuArgs,
}

/// The engine that runs ONNX graphs on the CPU.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuEngineName {
    /// tract: pure Rust, built in.
    Tract,
    /// onnxruntime, loaded at run time.
    Onnxruntime,
}

/// The CPU engine flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CpuArgs {
    /// The engine for ONNX graphs on the CPU: `tract`, the pure-Rust
    /// default built into weft, or `onnxruntime`, loaded at run time from
    /// WEFT_ONNXRUNTIME (the library file or its directory),
    /// ORT_DYLIB_PATH, /usr/local/lib, /usr/lib, /usr/lib/<arch>-linux-gnu,
    /// or the `onnxruntime` wheel of python3 (or WEFT_PYTHON): `pip install
    /// onnxruntime==1.32.0`. The module and the artifact stay the same;
    /// TFLite and TensorFlow graphs and graphs on the GPU run as before.
    #[arg(
        long,
        value_name = "ENGINE",
        env = "WEFT_CPU_ENGINE",
        default_value = "tract",
        value_enum
    )]
    pub cpu_engine: CpuEngineName,

    /// Threads per inference for the onnxruntime engine (0: onnxruntime's
    /// default, one per physical core); tract ignores it.
    #[arg(long, value_name = "N", env = "WEFT_CPU_THREADS", default_value_t = 0)]
    pub cpu_threads: usize,
}

impl CpuArgs {
    pub fn engine(&self) -> CpuEngine {
        match self.cpu_engine {
            CpuEngineName::Tract => CpuEngine::Tract,
            CpuEngineName::Onnxruntime => CpuEngine::Onnxruntime {
                threads: self.cpu_threads,
            },
        }
    }
}

/// The CPU engine the flags chose, for [`runtime_config`]: set by
/// [`GpuArgs::apply`], which every command calls before building its
/// runtime (so `runtime_config` keeps the signature its callers use).
static CPU_ENGINE: std::sync::Mutex<CpuEngine> = std::sync::Mutex::new(CpuEngine::Tract);

impl GpuArgs {
    /// The GPU configuration these flags (and their environment variables)
    /// describe.
    pub fn config(&self) -> weft_runtime::GpuConfig {
        weft_runtime::GpuConfig {
            adapter: self.nn_gpu_adapter.as_deref().map_or(
                weft_runtime::GpuSelector::Best,
                weft_runtime::GpuSelector::parse,
            ),
            memory_budget: self.nn_gpu_memory.map(|b| b as u64),
            binding_limit: self.nn_gpu_binding_limit.map(|b| b as u64),
            shader_checks: self.nn_gpu_shader_checks,
            cooperative_matrix: self.nn_gpu_cooperative_matrix,
        }
    }

    /// Make the choices process-wide, before any model loads.
    pub fn apply(&self) {
        weft_runtime::configure_gpu(self.config());
        *CPU_ENGINE.lock().unwrap_or_else(|e| e.into_inner()) = self.cpu.engine();
    }
}

/// What runs: the module bytes and everything that goes with them.
/// Engine settings from the flags `weft run` and `weft serve` share; the
/// CPU engine is the one the last [`GpuArgs::apply`] chose.
pub fn runtime_config(
    gpu_fallback: bool,
    no_cache: bool,
    cache_dir: Option<PathBuf>,
    fuel: bool,
) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: if no_cache {
            None
        } else {
            cache_dir.or_else(weft_runtime::ModuleCache::default_dir)
        },
        cache_max_bytes: None,
        fuel,
        nn: BackendOptions {
            gpu: if gpu_fallback {
                GpuPolicy::FallbackToCpu
            } else {
                GpuPolicy::Fail
            },
            cpu: *CPU_ENGINE.lock().unwrap_or_else(|e| e.into_inner()),
        },
    }
}

pub use weft_module::Resolved;

/// Resolve `module`: a wasm file, or a reference in the local store (pulled
/// first when it names a registry and is not there; progress goes to
/// stderr unless `quiet`).
pub fn resolve_module(
    module: &str,
    store_args: &StoreArgs,
    remote: &crate::remote::RemoteArgs,
    quiet: bool,
) -> anyhow::Result<Resolved> {
    if is_file(module) {
        let path = PathBuf::from(module);
        let bytes = std::fs::read(&path).map_err(|source| RuntimeError::ReadModule {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .map_or_else(|| module.to_owned(), |n| n.to_string_lossy().into_owned());
        return Ok(Resolved::module(name, bytes));
    }
    let store = store_args.open()?;
    let missing = matches!(
        store.resolve(module),
        Err(weft_oci::OciError::UnknownReference { .. })
    );
    if missing && crate::remote::names_registry(module) {
        // stdout belongs to the module: the pull reports on stderr.
        let report = crate::remote::pull_into(false, &store, module, remote)?;
        if !quiet {
            eprintln!("weft: {report}");
        }
    }
    Ok(weft_module::from_store(&store, module)?)
}

/// A path to a module file rather than a store reference: it exists, or it
/// looks like a file name (so a missing file is reported as one).
pub fn is_file(arg: &str) -> bool {
    let p = std::path::Path::new(arg);
    p.exists() || arg.ends_with(".wasm") || arg.starts_with('.') || arg.starts_with('/')
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
