use std::path::PathBuf;
use std::time::Duration;

/// Errors of loading and running a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("cannot read module {path}")]
    ReadModule {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{name} is not a WebAssembly module (it does not start with \\0asm); build one with `cargo build --target wasm32-wasip1`"
    )]
    NotWasm { name: String },
    #[error("{name} is not valid WebAssembly: {message}")]
    Compile { name: String, message: String },
    #[error(
        "{name} exports no `_start` function: it is a library (reactor) module, but `weft run` needs a command module (a `bin` crate built for wasm32-wasip1)"
    )]
    NoStart { name: String },
    #[error(
        "{name} is a component but not a WASI command (it must export `wasi:cli/run`): {message}"
    )]
    NotCommand { name: String, message: String },
    #[error("{name} is not a serving module: {message}")]
    NotServing { name: String, message: String },
    #[error("{name} imports something Weft does not provide: {message}")]
    Link { name: String, message: String },
    #[error("compile cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot grant directory {host} to the module: {message}")]
    Dir { host: PathBuf, message: String },
    #[error(transparent)]
    Nn(#[from] weft_nn::NnError),
    #[error("preloading models")]
    Preload(#[source] weft_nn::NnError),
    #[error("{name} was linked for {linked:?}, not for {wanted:?}")]
    Purpose {
        name: String,
        linked: crate::Purpose,
        wanted: crate::Purpose,
    },
    #[error(
        "module ran past its deadline of {}s and was stopped",
        .limit.as_secs_f64()
    )]
    Timeout { limit: Duration },
    #[error("module used up its fuel ({fuel} units) and was stopped")]
    OutOfFuel { fuel: u64 },
    #[error(
        "module needed {requested} bytes (its linear memory and the tensors and graphs wasi-nn holds for it, together), past its limit of {limit} bytes"
    )]
    MemoryLimit { limit: usize, requested: usize },
    #[error("module trapped: {message}")]
    Trap { message: String },
    #[error("engine setup failed: {message}")]
    Engine { message: String },
}

impl RuntimeError {
    /// The process exit code a CLI should use for this failure: 124 for a
    /// deadline (as `timeout(1)` does), 134 for traps (as wasmtime does),
    /// 1 for anything that failed before the module ran.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Timeout { .. } => 124,
            RuntimeError::OutOfFuel { .. }
            | RuntimeError::MemoryLimit { .. }
            | RuntimeError::Trap { .. } => 134,
            _ => 1,
        }
    }
}
