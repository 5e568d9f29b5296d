use std::path::PathBuf;

/// Errors of the onnxruntime engine.
///
/// Cloneable: a failed first load of the library is kept and given to every
/// later caller, so the process does not retry (and log) it per model.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OrtError {
    #[error(
        "libonnxruntime was not found; looked in: {}. Install it with `pip install onnxruntime==1.32.0` (found through `python3`, or the Python named by WEFT_PYTHON), or set WEFT_ONNXRUNTIME=/path/to/libonnxruntime.so",
        .looked.join("; ")
    )]
    NotFound { looked: Vec<String> },
    #[error("cannot load onnxruntime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error(
        "onnxruntime {version} at {path} is too old: this engine needs 1.{minimum}.0 or newer (pip install onnxruntime==1.32.0, or point WEFT_ONNXRUNTIME at a newer libonnxruntime)"
    )]
    TooOld {
        path: PathBuf,
        version: String,
        minimum: u32,
    },
    #[error("onnxruntime could not set up its environment: {message}")]
    Environment { message: String },
    #[error("onnxruntime cannot load the model: {message}")]
    Model { message: String },
    #[error(
        "model input `{name}` has element type {onnx_type}, which wasi-nn tensors cannot carry"
    )]
    UnsupportedInput { name: String, onnx_type: String },
    #[error(
        "model output `{name}` is {onnx_type}, which wasi-nn tensors cannot carry; ask for the other outputs"
    )]
    UnsupportedOutput { name: String, onnx_type: String },
    #[error("model has {count} inputs; got {got}")]
    InputCount { count: usize, got: usize },
    #[error("model has {count} outputs; output {index} does not exist")]
    OutputIndex { index: usize, count: usize },
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
        got: Vec<usize>,
    },
    #[error("tensor of shape {shape:?} and type {ty} needs {expected} bytes, got {got}")]
    DataLength {
        shape: Vec<usize>,
        ty: String,
        expected: usize,
        got: usize,
    },
    #[error("tensor of shape {shape:?} is too large")]
    TooLarge { shape: Vec<usize> },
    #[error("onnxruntime failed to run the model: {message}")]
    Run { message: String },
}

impl OrtError {
    /// Whether the caller sent something the model cannot take (a wrong
    /// type, shape, count or length), as opposed to the engine or the model
    /// failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            OrtError::InputCount { .. }
                | OrtError::OutputIndex { .. }
                | OrtError::InputType { .. }
                | OrtError::InputShape { .. }
                | OrtError::DataLength { .. }
        )
    }
}
