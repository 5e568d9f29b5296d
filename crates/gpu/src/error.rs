//! What can go wrong on the GPU, each with what to do about it.

/// A GPU failure. Every variant names the cause and, where there is one, the
/// fix; none of them is a panic, and after any of them the next request can
/// succeed (a lost device is opened again).
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no usable GPU adapter{detail}; install a Vulkan driver (on Debian `mesa-vulkan-drivers` gives a CPU Vulkan device, or the vendor's driver), or load the model with target cpu"
    )]
    NoAdapter { detail: String },
    #[error(
        "GPU adapter `{selector}` matches none of: {known}; choose one of them by index, by a substring of its name or by backend (vulkan, metal, dx12)"
    )]
    AdapterNotFound { selector: String, known: String },
    #[error("the GPU adapter refused to open a device: {message}")]
    RequestDevice { message: String },
    #[error(
        "the GPU device was lost ({message}); this request failed, the next one opens the device again"
    )]
    DeviceLost { message: String },
    #[error(
        "the GPU is out of memory ({message}); use a smaller batch, free other models, or run this model with target cpu"
    )]
    OutOfMemory { message: String },
    #[error(
        "the GPU memory budget of {budget} bytes would be exceeded: this model needs {needed} more bytes with {used} in use; raise the budget or use a smaller batch"
    )]
    Budget { budget: u64, used: u64, needed: u64 },
    #[error("GPU kernel failed validation: {message}")]
    Validation { message: String },
    #[error("the GPU did not finish in time: {message}")]
    Timeout { message: String },
    #[error("lowering the model to the GPU failed: {message}")]
    Lowering { message: String },
    #[error("running a CPU segment of the model failed: {message}")]
    Cpu { message: String },
}

impl GpuError {
    /// Whether the device should be dropped and opened again.
    pub fn device_lost(&self) -> bool {
        matches!(self, GpuError::DeviceLost { .. })
    }
}

pub(crate) fn from_wgpu(e: wgpu::Error) -> GpuError {
    match e {
        wgpu::Error::OutOfMemory { source } => GpuError::OutOfMemory {
            message: source.to_string(),
        },
        wgpu::Error::Validation { description, .. } => GpuError::Validation {
            message: description,
        },
        wgpu::Error::Internal { description, .. } => GpuError::Validation {
            message: description,
        },
    }
}
