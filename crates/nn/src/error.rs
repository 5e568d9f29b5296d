use std::path::PathBuf;

/// What went wrong, in the terms a wasi-nn guest understands.
///
/// The wasi-nn ABIs only carry an error code to the guest; the host keeps
/// the full message (logged, and returned by the WIT `error.data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something malformed: a wrong shape, dtype, index.
    InvalidArgument,
    /// No backend for this graph encoding.
    InvalidEncoding,
    /// A named model or tensor does not exist.
    NotFound,
    /// The backend cannot do this (an operator, a dtype, a target).
    Unsupported,
    /// A size limit was exceeded.
    TooLarge,
    /// The backend failed while running.
    Runtime,
}

/// Errors of the wasi-nn backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    #[error("model bytes are not a valid ONNX model: {message}")]
    BadModel { message: String },
    /// A TensorFlow Lite or TensorFlow model that does not parse.
    #[error("model bytes are not a valid {format} model: {message}")]
    BadFormat {
        format: &'static str,
        message: String,
    },
    /// A preloaded model that failed, with its name and file.
    #[error("model `{name}` ({path}): {error}", path = .path.display())]
    Preloaded {
        name: String,
        path: PathBuf,
        error: Box<NnError>,
    },
    #[error(
        "model uses operators the CPU backend cannot run: {}",
        .ops.join(", ")
    )]
    UnsupportedOperators { ops: Vec<String> },
    #[error("model could not be prepared for input shapes {shapes}: {message}")]
    Plan { shapes: String, message: String },
    #[error(
        "input shapes {shapes}: the model already holds plans for {limit} input-shape sets and keeps no more ({reason}); send shapes it has seen, or pad to one"
    )]
    ShapeLimit {
        shapes: String,
        limit: usize,
        reason: String,
    },
    #[error("execution target {target} is not available: {reason}")]
    TargetUnavailable { target: String, reason: String },
    #[error(
        "encoding {encoding} is not supported; supported encodings: onnx, tensorflowlite, tensorflow, autodetect"
    )]
    UnsupportedEncoding { encoding: String },
    #[error("expected exactly one model buffer, got {count}")]
    BuilderCount { count: usize },
    #[error("model has {count} inputs; input index {index} does not exist")]
    InputIndex { index: u32, count: usize },
    #[error("model has {count} outputs; output index {index} does not exist")]
    OutputIndex { index: u32, count: usize },
    #[error("model has no tensor named `{name}`; it has: {known}")]
    TensorName { name: String, known: String },
    #[error("input `{name}` expects {expected}, got {got}")]
    InputType {
        name: String,
        expected: String,
        got: String,
    },
    #[error("input `{name}` expects shape {expected}, got {got:?}")]
    InputShape {
        name: String,
        expected: String,
        got: Vec<u32>,
    },
    #[error("tensor of shape {dims:?} and type {dtype} needs {expected} bytes, got {got}")]
    DataLength {
        dims: Vec<u32>,
        dtype: String,
        expected: usize,
        got: usize,
    },
    #[error("tensor of shape {dims:?} is too large")]
    TooLarge { dims: Vec<u32> },
    #[error("tensor type {0} is not supported by the CPU backend")]
    UnsupportedType(String),
    #[error("input `{name}` (index {index}) was not set before compute")]
    MissingInput { name: String, index: usize },
    #[error("no outputs yet: call compute first")]
    NotComputed,
    #[error("inference failed: {message}")]
    Compute { message: String },
    #[error("preload spec `{spec}` is invalid: {reason}")]
    PreloadSpec { spec: String, reason: String },
    #[error("cannot read model file {path}")]
    ModelFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "model file {path} has digest {actual}, expected {expected}: it was changed or corrupted"
    )]
    ModelDigest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("no preloaded model is named `{0}`")]
    UnknownModel(String),
    #[error(transparent)]
    Gpu(#[from] weft_gpu::GpuError),
    /// The onnxruntime CPU engine: its library, a model it cannot load, or
    /// a run it failed.
    #[error(transparent)]
    Onnxruntime(#[from] weft_ort::OrtError),
}

impl NnError {
    /// The wasi-nn error kind a guest sees for this error.
    pub fn kind(&self) -> ErrorKind {
        use NnError::*;
        match self {
            BadModel { .. } | BadFormat { .. } | BuilderCount { .. } => ErrorKind::InvalidArgument,
            Preloaded { error, .. } => error.kind(),
            UnsupportedOperators { .. } | UnsupportedType(_) | TargetUnavailable { .. } => {
                ErrorKind::Unsupported
            }
            UnsupportedEncoding { .. } => ErrorKind::InvalidEncoding,
            InputIndex { .. }
            | OutputIndex { .. }
            | InputType { .. }
            | InputShape { .. }
            | DataLength { .. }
            | MissingInput { .. }
            | NotComputed
            | PreloadSpec { .. } => ErrorKind::InvalidArgument,
            TensorName { .. } | UnknownModel(_) | ModelFile { .. } => ErrorKind::NotFound,
            ModelDigest { .. } => ErrorKind::InvalidArgument,
            TooLarge { .. } => ErrorKind::TooLarge,
            Plan { .. } | Compute { .. } => ErrorKind::Runtime,
            ShapeLimit { .. } => ErrorKind::TooLarge,
            Gpu(e) => match e {
                weft_gpu::GpuError::OutOfMemory { .. } | weft_gpu::GpuError::Budget { .. } => {
                    ErrorKind::TooLarge
                }
                weft_gpu::GpuError::NoAdapter { .. }
                | weft_gpu::GpuError::AdapterNotFound { .. }
                | weft_gpu::GpuError::RequestDevice { .. } => ErrorKind::Unsupported,
                _ => ErrorKind::Runtime,
            },
            Onnxruntime(e) => {
                use weft_ort::OrtError as O;
                match e {
                    e if e.is_bad_input() => ErrorKind::InvalidArgument,
                    O::Model { .. } => ErrorKind::InvalidArgument,
                    O::TooLarge { .. } => ErrorKind::TooLarge,
                    // The engine is missing on this node, or cannot carry
                    // a type the model uses.
                    O::NotFound { .. }
                    | O::Load { .. }
                    | O::TooOld { .. }
                    | O::Environment { .. }
                    | O::UnsupportedInput { .. }
                    | O::UnsupportedOutput { .. } => ErrorKind::Unsupported,
                    _ => ErrorKind::Runtime,
                }
            }
        }
    }
}

impl From<NnError> for wasmtime_wasi_nn::backend::BackendError {
    fn from(e: NnError) -> Self {
        // `BackendAccess` carries an `anyhow`-style error; hosts recover the
        // typed error with `downcast_ref::<NnError>()` to pick the code.
        wasmtime_wasi_nn::backend::BackendError::BackendAccess(e.into())
    }
}

/// The kind of any backend error, including errors from other backends.
pub fn kind_of(e: &wasmtime_wasi_nn::backend::BackendError) -> ErrorKind {
    use wasmtime_wasi_nn::backend::BackendError as B;
    match e {
        B::BackendAccess(inner) => inner
            .downcast_ref::<NnError>()
            .map(NnError::kind)
            .unwrap_or(ErrorKind::Runtime),
        B::GuestAccess(_) | B::InvalidNumberOfBuilders(..) => ErrorKind::InvalidArgument,
        B::NotEnoughMemory(_) => ErrorKind::TooLarge,
        B::UnsupportedTensorType(_) => ErrorKind::Unsupported,
    }
}
