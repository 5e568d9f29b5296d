//! `weft-runtime`: the one API every Weft host program uses to run a model
//! module.
//!
//! A [`Runtime`] owns the process's single wasmtime [`Engine`], its
//! compiled-module cache and the epoch ticker that enforces deadlines.
//! [`Runtime::load`] turns wasm bytes into a [`Program`] (a pre-linked
//! `InstancePre`, compiled once, cached on disk); [`Runtime::run`] runs it
//! in a fresh `Store` with the [`RunOptions`] sandbox: no files, network or
//! environment unless granted, a linear-memory cap, a wall-clock deadline
//! and optional fuel. Both guest kinds get wasi-nn: `wasm32-wasip1` core
//! modules through the witx ABI ([`nn_witx`]), `wasm32-wasip2` components
//! through `wasi:nn` WIT.
//!
//! ```no_run
//! use weft_runtime::{Runtime, RuntimeConfig, RunOptions};
//! let rt = Runtime::new(RuntimeConfig::default())?;
//! let program = rt.load_file("hello.wasm".as_ref())?;
//! let code = rt.run(&program, RunOptions::default())?;
//! std::process::exit(code);
//! # Ok::<(), weft_runtime::RuntimeError>(())
//! ```

mod budget;
mod cache;
mod error;
mod launch;
pub mod nn_wit;
pub mod nn_witx;
mod serve;
pub mod units;

pub use budget::{Budget, OverBudget};
pub use cache::{CacheOutcome, ModuleCache};
pub use error::RuntimeError;
pub use launch::{Code, Launch, Prepared, Resolved};
pub use serve::{InferError, Instance, ServeAbi};
/// An in-memory stdout for [`RunOptions::stdout`].
pub use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
/// The serving contract's tensors.
pub use weft_abi::{DataType, Signature, Tensor, TensorSpec};
pub use weft_nn::gpu::{GpuConfig, Selector as GpuSelector};

/// Set how this process uses its GPU (adapter, memory budget, binding
/// limit, shader checks, tensor cores) before models load. The device is one
/// per process, shared by every model, so this is process-wide: programs call
/// it once with what their flags and environment say.
pub fn configure_gpu(config: GpuConfig) {
    weft_nn::gpu::configure(config);
}

/// The GPU configuration the `WEFT_GPU_*` environment variables describe,
/// for programs that have no flags for it (the shim); `get` reads one
/// variable. Sizes take the spellings of [`units::size`], switches
/// `1/true/yes/on` and `0/false/no/off`; a value that is neither is an
/// error naming the variable.
pub fn gpu_config_from_env(get: impl Fn(&str) -> Option<String>) -> Result<GpuConfig, String> {
    let mut config = GpuConfig::default();
    if let Some(v) = get("WEFT_GPU_ADAPTER") {
        config.adapter = GpuSelector::parse(&v);
    }
    let size = |name: &str| -> Result<Option<u64>, String> {
        get(name)
            .map(|v| {
                units::size(&v)
                    .map(|b| b as u64)
                    .map_err(|e| format!("{name}={v}: {e}"))
            })
            .transpose()
    };
    config.memory_budget = size("WEFT_GPU_MEMORY")?;
    config.binding_limit = size("WEFT_GPU_BINDING_LIMIT")?;
    let switch = |name: &str, default: bool| -> Result<bool, String> {
        match get(name) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "y" | "on" => Ok(true),
                "0" | "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(format!("{name}={v}: expected on or off")),
            },
        }
    };
    config.shader_checks = switch("WEFT_GPU_SHADER_CHECKS", false)?;
    config.cooperative_matrix = switch("WEFT_GPU_COOPERATIVE_MATRIX", true)?;
    Ok(config)
}

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use weft_nn::{BackendOptions, Models};

/// How often the epoch ticker advances; deadlines are rounded up to it.
const TICK: Duration = Duration::from_millis(5);

/// Default cap on what one module instance holds on the host: its linear
/// memories and the tensors and graphs its wasi-nn calls keep, together.
pub const DEFAULT_MAX_MEMORY: usize = 1 << 30;
/// Default wall-clock deadline of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Process-wide settings, fixed when the engine is built.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled modules are cached; `None` turns caching off.
    pub cache_dir: Option<PathBuf>,
    /// Keep the cache under this many bytes, dropping the least recently
    /// used entries after each store; `None`: unbounded.
    pub cache_max_bytes: Option<u64>,
    /// Compile fuel metering in (needed for [`Limits::fuel`]; costs speed).
    pub fuel: bool,
    /// wasi-nn backend options.
    pub nn: BackendOptions,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: ModuleCache::default_dir(),
            cache_max_bytes: None,
            fuel: false,
            nn: BackendOptions::default(),
        }
    }
}

/// Per-run sandbox limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes the guest may hold on the host: all its linear memories
    /// (every instance of a component) plus the tensors, contexts' inputs
    /// and graphs wasi-nn keeps for it ([`Budget`]).
    pub max_memory: usize,
    /// Wall-clock deadline; `None` for none.
    pub timeout: Option<Duration>,
    /// Fuel units (roughly wasm instructions); needs [`RuntimeConfig::fuel`].
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_MAX_MEMORY,
            timeout: Some(DEFAULT_TIMEOUT),
            fuel: None,
        }
    }
}

/// A host directory granted to the guest (`--dir HOST::GUEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// What one run gets: arguments, granted environment and directories,
/// limits and the preloaded models.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// `argv[0]` as the guest sees it; defaults to the module's name.
    pub program_name: Option<String>,
    pub env: Vec<(String, String)>,
    pub dirs: Vec<DirGrant>,
    pub limits: Limits,
    pub models: Arc<Models>,
    /// Capture the guest's stdout here instead of passing it through.
    pub stdout: Option<MemoryOutputPipe>,
}

/// Which ABI a program uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `wasm32-wasip1` core module.
    Core,
    /// A `wasm32-wasip2` component.
    Component,
}

enum Pre {
    Core(InstancePre<CoreState>),
    Component(CommandPre<ComponentState>),
    /// A component exporting Weft's `predictor` world (serving only).
    Predictor(serve::PredictorPre<ComponentState>),
}

/// What a program is loaded for: each needs different exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `_start` / `wasi:cli/run`.
    Run,
    /// Weft's serving contract.
    Serve,
}

/// A compiled, linked module ready to instantiate many times.
pub struct Program {
    name: String,
    digest: String,
    cache: CacheOutcome,
    compile_time: Duration,
    purpose: Purpose,
    compiled: Compiled,
    pre: Pre,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("kind", &self.kind())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// The module's file name, used as `argv[0]` and in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:<hex>` of the wasm bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn kind(&self) -> Kind {
        match self.pre {
            Pre::Core(_) => Kind::Core,
            Pre::Component(_) | Pre::Predictor(_) => Kind::Component,
        }
    }

    /// Whether compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// Time spent compiling or loading compiled code.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// What the program was loaded for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The compiled code, for [`Runtime::load_serialized`] in another
    /// process of the same binary (the shim hands it to the container).
    pub fn serialize(&self) -> Result<Vec<u8>, RuntimeError> {
        match &self.compiled {
            Compiled::Core(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
        .map_err(engine_err)
    }
}

/// The engine, linkers, cache and epoch ticker of one process.
pub struct Runtime {
    engine: Engine,
    cache: Option<ModuleCache>,
    cache_max_bytes: Option<u64>,
    nn: BackendOptions,
    fuel: bool,
    core_linker: Linker<CoreState>,
    component_linker: wasmtime::component::Linker<ComponentState>,
    /// Started by the first store that needs deadlines, so a runtime that
    /// only compiles (the shim's, `weft build`) has no thread waking up
    /// 200 times a second.
    ticker: OnceLock<Result<(), String>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn engine_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine {
        message: e.to_string(),
    }
}

impl Runtime {
    /// Build the engine. Make one per process: it owns the compiled code and
    /// a ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .consume_fuel(config.fuel)
            .wasm_component_model(true);
        let engine = Engine::new(&wasm).map_err(engine_err)?;

        let mut core_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut core_linker, |s: &mut CoreState| &mut s.wasi)
            .map_err(engine_err)?;
        nn_witx::add_to_linker(&mut core_linker, |s: &mut CoreState| &mut s.nn)
            .map_err(engine_err)?;

        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut component_linker).map_err(engine_err)?;
        nn_wit::add_to_linker(&mut component_linker, |s: &mut ComponentState| {
            nn_wit::NnView {
                st: &mut s.nn,
                table: &mut s.table,
            }
        })
        .map_err(engine_err)?;

        Ok(Self {
            engine,
            cache: config.cache_dir.map(ModuleCache::new),
            cache_max_bytes: config.cache_max_bytes,
            nn: config.nn,
            fuel: config.fuel,
            core_linker,
            component_linker,
            ticker: OnceLock::new(),
            stop_ticker: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Start the epoch ticker once; deadlines depend on it.
    fn ensure_ticker(&self) -> Result<(), RuntimeError> {
        self.ticker
            .get_or_init(|| {
                let (engine, stop) = (self.engine.clone(), self.stop_ticker.clone());
                std::thread::Builder::new()
                    .name("weft-epoch".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(TICK);
                            engine.increment_epoch();
                        }
                    })
                    .map(drop)
                    .map_err(|e| format!("starting the epoch ticker: {e}"))
            })
            .clone()
            .map_err(|message| RuntimeError::Engine { message })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compile cache, when enabled.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// Backend options for wasi-nn contexts and preloads.
    pub fn nn_options(&self) -> BackendOptions {
        self.nn
    }

    /// Read, compile (or load from cache) and link a module file.
    pub fn load_file(&self, path: &Path) -> Result<Program, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::ReadModule {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.load(&name, &bytes)
    }

    /// Compile (or load from cache) and link wasm bytes of a program to
    /// [`run`](Self::run).
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Program, RuntimeError> {
        self.load_for(name, bytes, Purpose::Run)
    }

    /// Compile (or load from cache) and link a serving module: one that
    /// implements Weft's serving contract (see [`Instance`]).
    pub fn load_service(&self, name: &str, bytes: &[u8]) -> Result<Program, RuntimeError> {
        self.load_for(name, bytes, Purpose::Serve)
    }

    /// Link code that [`Program::serialize`] produced, for `purpose`,
    /// without compiling. `digest` is the `sha256:` of the original wasm.
    ///
    /// # Safety
    ///
    /// `code` must be bytes that [`Program::serialize`] of this same binary
    /// wrote (wasmtime checks the header and the engine settings, not the
    /// machine code): for example handed from the shim's process to its
    /// container's through a pipe, never read from an untrusted place.
    pub unsafe fn load_serialized(
        &self,
        name: &str,
        digest: &str,
        code: &[u8],
        purpose: Purpose,
    ) -> Result<Program, RuntimeError> {
        let started = Instant::now();
        let invalid = |e: wasmtime::Error| RuntimeError::Compile {
            name: name.into(),
            message: format!("{e:#}"),
        };
        // SAFETY: the caller vouches for `code` (see above).
        let compiled = match Engine::detect_precompiled(code) {
            Some(wasmtime::Precompiled::Module) => {
                unsafe { Module::deserialize(&self.engine, code) }.map(Compiled::Core)
            }
            Some(wasmtime::Precompiled::Component) => {
                unsafe { Component::deserialize(&self.engine, code) }.map(Compiled::Component)
            }
            None => return Err(RuntimeError::NotWasm { name: name.into() }),
        }
        .map_err(invalid)?;
        let compilation = Compilation {
            compiled,
            outcome: CacheOutcome::Hit,
            to_store: None,
        };
        self.link(name, digest.into(), compilation, purpose, started)
    }

    fn load_for(
        &self,
        name: &str,
        bytes: &[u8],
        purpose: Purpose,
    ) -> Result<Program, RuntimeError> {
        let kind = match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Kind::Core,
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => Kind::Component,
            _ => return Err(RuntimeError::NotWasm { name: name.into() }),
        };
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let started = Instant::now();
        let compilation = self.compile(name, kind, &digest, bytes)?;
        self.link(name, digest, compilation, purpose, started)
    }

    /// Check the exports `purpose` needs and pre-link; cache the compiled
    /// code only then, so bad input leaves no file.
    fn link(
        &self,
        name: &str,
        digest: String,
        compilation: Compilation,
        purpose: Purpose,
        started: Instant,
    ) -> Result<Program, RuntimeError> {
        let Compilation {
            compiled,
            outcome: cache,
            to_store: pending,
        } = compilation;
        let compile_time = started.elapsed();
        let pre = match &compiled {
            Compiled::Core(module) => {
                match purpose {
                    Purpose::Run => {
                        let has_start = module
                            .exports()
                            .any(|e| e.name() == "_start" && e.ty().func().is_some());
                        if !has_start {
                            return Err(RuntimeError::NoStart { name: name.into() });
                        }
                    }
                    Purpose::Serve => serve::check_core_exports(name, module)?,
                }
                let pre =
                    self.core_linker
                        .instantiate_pre(module)
                        .map_err(|e| RuntimeError::Link {
                            name: name.into(),
                            message: format!("{e:#}"),
                        })?;
                Pre::Core(pre)
            }
            Compiled::Component(component) => {
                let pre = self
                    .component_linker
                    .instantiate_pre(component)
                    .map_err(|e| RuntimeError::Link {
                        name: name.into(),
                        message: format!("{e:#}"),
                    })?;
                match purpose {
                    Purpose::Run => {
                        Pre::Component(CommandPre::new(pre).map_err(|e| {
                            RuntimeError::NotCommand {
                                name: name.into(),
                                message: format!("{e:#}"),
                            }
                        })?)
                    }
                    Purpose::Serve => Pre::Predictor(serve::PredictorPre::new(pre).map_err(
                        |e| RuntimeError::NotServing {
                            name: name.into(),
                            message: format!(
                                "a component must export Weft's `weft:serve/predictor` world ({e:#})"
                            ),
                        },
                    )?),
                }
            }
        };
        if let (Some((path, code)), Some(cache)) = (pending, &self.cache) {
            match cache.store(&path, &code) {
                Err(e) => {
                    tracing::warn!("not caching compiled module: {:#}", anyhow::Error::from(e))
                }
                Ok(()) => {
                    if let Some(max) = self.cache_max_bytes
                        && let Err(e) = cache.prune(max)
                    {
                        tracing::warn!("pruning the compile cache: {e}");
                    }
                }
            }
        }
        tracing::debug!(module = name, module.digest = %digest, ?cache, ?compile_time, "loaded module");
        Ok(Program {
            name: name.into(),
            digest,
            cache,
            compile_time,
            purpose,
            compiled,
            pre,
        })
    }

    fn compile(
        &self,
        name: &str,
        kind: Kind,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Compilation, RuntimeError> {
        let invalid = |e: wasmtime::Error| RuntimeError::Compile {
            name: name.into(),
            message: format!("{e:#}"),
        };
        let Some(cache) = &self.cache else {
            let compiled = match kind {
                Kind::Core => Compiled::Core(Module::new(&self.engine, bytes).map_err(invalid)?),
                Kind::Component => {
                    Compiled::Component(Component::new(&self.engine, bytes).map_err(invalid)?)
                }
            };
            return Ok(Compilation {
                compiled,
                outcome: CacheOutcome::Disabled,
                to_store: None,
            });
        };
        let path = cache.path(&self.engine, digest.trim_start_matches("sha256:"));
        if path.exists() {
            // SAFETY: files in the cache directory are only ever written by
            // `ModuleCache::store` with bytes from wasmtime's own
            // `precompile_*`, through a temporary file and an atomic rename,
            // under a name that includes the engine's compatibility hash;
            // wasmtime additionally checks the header and engine settings.
            let loaded = match kind {
                Kind::Core => {
                    unsafe { Module::deserialize_file(&self.engine, &path) }.map(Compiled::Core)
                }
                Kind::Component => unsafe { Component::deserialize_file(&self.engine, &path) }
                    .map(Compiled::Component),
            };
            match loaded {
                Ok(compiled) => {
                    cache.touch(&path);
                    return Ok(Compilation {
                        compiled,
                        outcome: CacheOutcome::Hit,
                        to_store: None,
                    });
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "ignoring unusable compile-cache entry: {e:#}"
                ),
            }
        }
        let code = match kind {
            Kind::Core => self.engine.precompile_module(bytes),
            Kind::Component => self.engine.precompile_component(bytes),
        }
        .map_err(invalid)?;
        // SAFETY: `code` was produced just above by this engine's
        // `precompile_*`.
        let compiled = match kind {
            Kind::Core => unsafe { Module::deserialize(&self.engine, &code) }.map(Compiled::Core),
            Kind::Component => {
                unsafe { Component::deserialize(&self.engine, &code) }.map(Compiled::Component)
            }
        }
        .map_err(invalid)?;
        Ok(Compilation {
            compiled,
            outcome: CacheOutcome::Miss,
            to_store: Some((path, code)),
        })
    }

    /// Instantiate the program in a fresh store and run it to completion.
    /// Returns the module's exit code (0 when `_start`/`run` returns).
    pub fn run(&self, program: &Program, opts: RunOptions) -> Result<i32, RuntimeError> {
        let span =
            tracing::info_span!("run", module = program.name(), module.digest = %program.digest());
        let _enter = span.enter();
        let budget = Arc::new(Budget::new(opts.limits.max_memory));
        let wasi = self.wasi_builder(program, &opts)?;
        let backends = weft_nn::backends(self.nn);
        let models = Models::clone(&opts.models);
        let result = match &program.pre {
            Pre::Core(pre) => {
                let state = CoreState::new(wasi, backends, models, budget);
                let mut store = self.store(state, &opts.limits)?;
                pre.instantiate(&mut store)
                    .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                    .and_then(|start| start.call(&mut store, ()))
                    .map(|()| 0)
            }
            Pre::Component(pre) => {
                let state = ComponentState::new(wasi, backends, models, budget);
                let mut store = self.store(state, &opts.limits)?;
                pre.instantiate(&mut store)
                    .and_then(|command| command.wasi_cli_run().call_run(&mut store))
                    .map(|r| if r.is_ok() { 0 } else { 1 })
            }
            Pre::Predictor(_) => {
                return Err(RuntimeError::NotCommand {
                    name: program.name().into(),
                    message: "it was loaded as a serving module".into(),
                });
            }
        };
        result.or_else(|e| exit_or_error(e, &opts.limits))
    }

    fn store<T: HasLimiter>(&self, state: T, limits: &Limits) -> Result<Store<T>, RuntimeError> {
        self.ensure_ticker()?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter());
        set_deadline(&mut store, limits.timeout);
        store.epoch_deadline_trap();
        if self.fuel {
            // With metering compiled in, "no fuel limit" is a very large tank.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        Ok(store)
    }

    fn wasi_builder(
        &self,
        program: &Program,
        opts: &RunOptions,
    ) -> Result<WasiCtxBuilder, RuntimeError> {
        let mut b = WasiCtxBuilder::new();
        b.inherit_stdio()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .arg(opts.program_name.as_deref().unwrap_or(program.name()))
            .args(&opts.args)
            .envs(&opts.env);
        if let Some(pipe) = &opts.stdout {
            b.stdout(pipe.clone());
        }
        for d in &opts.dirs {
            let perms = if d.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            b.preopened_dir(&d.host, &d.guest, perms)
                .map_err(|e| RuntimeError::Dir {
                    host: d.host.clone(),
                    message: format!("{e:#}"),
                })?;
        }
        Ok(b)
    }
}

/// Arm a store's epoch deadline `timeout` from now (`None`: no deadline).
fn set_deadline<T>(store: &mut Store<T>, timeout: Option<Duration>) {
    match timeout {
        Some(t) => {
            let ticks = t.as_nanos().div_ceil(TICK.as_nanos()).max(1);
            store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX / 2));
        }
        None => store.set_epoch_deadline(u64::MAX / 2),
    }
}

enum Compiled {
    Core(Module),
    Component(Component),
}

/// Compiled code, where it came from, and the bytes to cache once the
/// module has proven it links.
struct Compilation {
    compiled: Compiled,
    outcome: CacheOutcome,
    to_store: Option<(PathBuf, Vec<u8>)>,
}

/// Map a run failure to an exit code (a clean `proc_exit`) or a typed error.
fn exit_or_error(e: wasmtime::Error, limits: &Limits) -> Result<i32, RuntimeError> {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    if let Some(MemoryLimitHit(hit)) = e.downcast_ref::<MemoryLimitHit>() {
        return Err(RuntimeError::MemoryLimit {
            limit: hit.limit,
            requested: hit.memory + hit.nn + hit.requested,
        });
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Err(RuntimeError::Timeout {
            limit: limits.timeout.unwrap_or_default(),
        }),
        Some(Trap::OutOfFuel) => Err(RuntimeError::OutOfFuel {
            fuel: limits.fuel.unwrap_or(u64::MAX),
        }),
        _ => Err(RuntimeError::Trap {
            message: format!("{e:?}"),
        }),
    }
}

/// Raised (as a trap) when a guest grows memory past its cap, so the user
/// sees "memory limit" rather than the guest's own allocation-failure abort.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct MemoryLimitHit(OverBudget);

/// Caps one store: the bytes of all its linear memories (with wasi-nn's,
/// through the shared [`Budget`]), table elements, and how many instances,
/// memories and tables it may create.
pub struct Limiter {
    budget: Arc<Budget>,
    /// The last growth charged, given back if wasmtime then fails it.
    granted: usize,
    table_elements: usize,
}

/// Most table elements one store may hold, all tables together.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Most core instances one store may create (a component makes several).
const MAX_INSTANCES: usize = 256;
/// Most linear memories one store may create.
const MAX_MEMORIES: usize = 64;
/// Most tables one store may create.
const MAX_TABLES: usize = 256;

impl Limiter {
    fn new(budget: Arc<Budget>) -> Self {
        Self {
            budget,
            granted: 0,
            table_elements: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        self.budget
            .grow_memory(more)
            .map_err(|e| wasmtime::Error::from(MemoryLimitHit(e)))?;
        self.granted = more;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.budget.shrink_memory(std::mem::take(&mut self.granted));
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .checked_add(desired.saturating_sub(current))
            .filter(|&t| t <= MAX_TABLE_ELEMENTS);
        match total {
            Some(t) => {
                self.table_elements = t;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

trait HasLimiter: 'static {
    fn limiter(&mut self) -> &mut dyn ResourceLimiter;
}

/// Store data of a core module run.
pub struct CoreState {
    wasi: WasiP1Ctx,
    nn: nn_witx::NnState,
    limiter: Limiter,
}

impl CoreState {
    fn new(
        mut wasi: WasiCtxBuilder,
        backends: Vec<weft_nn::Backend>,
        models: Models,
        budget: Arc<Budget>,
    ) -> Self {
        Self {
            wasi: wasi.build_p1(),
            nn: nn_witx::NnState::new(backends, models, budget.clone()),
            limiter: Limiter::new(budget),
        }
    }
}

impl HasLimiter for CoreState {
    fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }
}

/// Store data of a component run.
pub struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    nn: nn_wit::NnState,
    limiter: Limiter,
}

impl ComponentState {
    fn new(
        mut wasi: WasiCtxBuilder,
        backends: Vec<weft_nn::Backend>,
        models: Models,
        budget: Arc<Budget>,
    ) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(nn_wit::TABLE_CAPACITY);
        Self {
            wasi: wasi.build(),
            table,
            nn: nn_wit::NnState::new(backends, models, budget.clone()),
            limiter: Limiter::new(budget),
        }
    }
}

impl HasLimiter for ComponentState {
    fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `WEFT_GPU_MEMORY=512Mi` was once silently ignored (the GPU crate
    /// had a size parser of its own); now the one parser reads it.
    #[test]
    fn gpu_settings_from_the_environment_use_the_shared_parsers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = gpu_config_from_env(env(&[
            ("WEFT_GPU_MEMORY", "512Mi"),
            ("WEFT_GPU_BINDING_LIMIT", "128MiB"),
            ("WEFT_GPU_ADAPTER", "vulkan"),
            ("WEFT_GPU_COOPERATIVE_MATRIX", "off"),
        ]))
        .unwrap();
        assert_eq!(c.memory_budget, Some(512 << 20));
        assert_eq!(c.binding_limit, Some(128 << 20));
        assert_eq!(c.adapter, GpuSelector::parse("vulkan"));
        assert!(!c.cooperative_matrix && !c.shader_checks);
        assert_eq!(gpu_config_from_env(env(&[])).unwrap(), GpuConfig::default());
        let e = gpu_config_from_env(env(&[("WEFT_GPU_MEMORY", "lots")])).unwrap_err();
        assert!(e.starts_with("WEFT_GPU_MEMORY=lots"), "{e}");
        let e = gpu_config_from_env(env(&[("WEFT_GPU_SHADER_CHECKS", "maybe")])).unwrap_err();
        assert!(e.contains("WEFT_GPU_SHADER_CHECKS"), "{e}");
    }

    /// Issue 21: a component's resource table (WASI's and wasi-nn's
    /// resources together) had wasmtime's default capacity of millions.
    #[test]
    fn a_components_resource_table_has_a_capacity() {
        let mut st = ComponentState::new(
            WasiCtxBuilder::new(),
            Vec::new(),
            Models::default(),
            Arc::new(Budget::new(1 << 20)),
        );
        assert_eq!(st.table.max_capacity(), nn_wit::TABLE_CAPACITY);
        let mut pushed = 0;
        while st.table.push(0u8).is_ok() {
            pushed += 1;
            assert!(
                pushed <= nn_wit::TABLE_CAPACITY,
                "the table grew past its capacity"
            );
        }
        assert_eq!(pushed, nn_wit::TABLE_CAPACITY);
    }
}
