//! Adapters, the chosen one, and the process-wide device.
//!
//! One device per process is shared by every model: weights are uploaded
//! once per model per device. A lost device is noticed (wgpu's lost
//! callback), the request that saw it fails, and the next [`shared`] call
//! opens a new one; plans built for the old device are rebuilt because they
//! carry its generation.

use crate::error::{GpuError, from_wgpu};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How this process uses its GPU. A program builds it from its own flags
/// and environment and hands it to [`configure`] before the first device
/// opens; this library reads no environment variable and parses no units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    /// Which adapter to open ([`Selector::Best`] unless chosen).
    pub adapter: Selector,
    /// Most device memory this process's models may hold, weights and
    /// activations together (`None`: the device's own).
    pub memory_budget: Option<u64>,
    /// Cap on one storage-buffer binding below the adapter's own, to plan as
    /// a smaller GPU would (`None`: the adapter's).
    pub binding_limit: Option<u64>,
    /// Compile kernels with all of wgpu's shader runtime checks even on
    /// Vulkan and DX12, whose drivers confine buffer accesses themselves
    /// (Metal and GL always get them).
    pub shader_checks: bool,
    /// Use the cooperative-matrix (tensor core) f16 GEMM where the adapter
    /// offers it and the check in `probe` passes on the device.
    pub cooperative_matrix: bool,
}

impl GpuConfig {
    /// The best adapter, no caps beyond the device's, checks where the
    /// driver does not confine accesses, tensor cores where they check out.
    pub const DEFAULT: GpuConfig = GpuConfig {
        adapter: Selector::Best,
        memory_budget: None,
        binding_limit: None,
        shader_checks: false,
        cooperative_matrix: true,
    };
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig::DEFAULT
    }
}

static CONFIG: Mutex<GpuConfig> = Mutex::new(GpuConfig::DEFAULT);
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// Set how this process uses the GPU. The memory budget applies to
/// reservations from now on and the shader checks to kernels compiled from
/// now on; the adapter, the binding limit and tensor-core use to devices
/// opened from now on (the one open keeps its own).
pub fn configure(config: GpuConfig) {
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = config;
}

/// The configuration in force.
pub fn config() -> GpuConfig {
    CONFIG.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether kernels for a device of `backend` are compiled with wgpu's
/// runtime checks: always except on Vulkan and DX12, whose drivers keep
/// out-of-range buffer accesses inside the binding (Metal and GL do not
/// promise that), unless the configuration asks for them.
pub(crate) fn shader_checks(backend: wgpu::Backend) -> bool {
    CONFIG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .shader_checks
        || !matches!(backend, wgpu::Backend::Vulkan | wgpu::Backend::Dx12)
}

/// Device memory held by this process's plans and contexts.
pub fn memory_in_use() -> u64 {
    IN_USE.load(Ordering::Relaxed)
}

/// A reservation against the memory budget, released on drop.
#[derive(Debug)]
pub(crate) struct Reservation(u64);

impl Reservation {
    pub(crate) fn take(bytes: u64) -> Result<Reservation, GpuError> {
        let budget = CONFIG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .memory_budget
            .unwrap_or(u64::MAX);
        let mut used = IN_USE.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(bytes) > budget {
                return Err(GpuError::Budget {
                    budget,
                    used,
                    needed: bytes,
                });
            }
            match IN_USE.compare_exchange(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(Reservation(bytes)),
                Err(now) => used = now,
            }
        }
    }

    /// Move `bytes` of this reservation (at most all of it) into one of
    /// their own, released on its own.
    pub(crate) fn split(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.0);
        self.0 -= bytes;
        Reservation(bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        IN_USE.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// How long one GPU submission may take before the request fails.
const WAIT: Duration = Duration::from_secs(120);

/// Which adapter to use: an index from `weft info`, a backend name, a
/// case-insensitive substring of the adapter's name, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The best adapter: discrete, then integrated, virtual, software.
    Best,
    Index(usize),
    Backend(wgpu::Backend),
    Name(String),
    /// Never use a GPU.
    None,
}

impl Selector {
    pub fn parse(s: &str) -> Selector {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "" | "auto" | "best" => Selector::Best,
            "none" | "off" => Selector::None,
            "vulkan" => Selector::Backend(wgpu::Backend::Vulkan),
            "metal" => Selector::Backend(wgpu::Backend::Metal),
            "dx12" => Selector::Backend(wgpu::Backend::Dx12),
            _ => match t.parse::<usize>() {
                Ok(i) => Selector::Index(i),
                Err(_) => Selector::Name(lower),
            },
        }
    }

    fn explicit(&self) -> bool {
        !matches!(self, Selector::Best)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Best => f.write_str("best"),
            Selector::Index(i) => write!(f, "{i}"),
            Selector::Backend(b) => write!(f, "{}", b.to_str()),
            Selector::Name(n) => f.write_str(n),
            Selector::None => f.write_str("none"),
        }
    }
}

/// One adapter as `weft info` shows it.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub software: bool,
    /// The features Weft cares about that this adapter has.
    pub features: Vec<&'static str>,
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
    pub max_workgroup_invocations: u32,
    /// The tensor-core GEMM this adapter could run (checked on the device
    /// before use), or why not.
    pub cooperative_matrix: Result<String, String>,
    /// Whether the current selector picks this adapter.
    pub selected: bool,
}

fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        // WGPU_BACKEND narrows the backends as in every wgpu program.
        let backends = wgpu::Backends::from_env()
            .unwrap_or(wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12);
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        wgpu::Instance::new(desc)
    })
}

fn enumerate() -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    // A stable order: the one `weft info` prints and indices refer to.
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        (rank(i.device_type), i.backend as u32, i.name)
    });
    adapters
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn feature_names(f: wgpu::Features) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (flag, name) in [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "cooperative-matrix",
        ),
    ] {
        if f.contains(flag) {
            out.push(name);
        }
    }
    out
}

/// Pick the adapter a selector means among `adapters` (in `enumerate`
/// order). `Best` never picks a software adapter for `auto` callers unless
/// `allow_software`.
fn pick(adapters: &[wgpu::Adapter], selector: &Selector, allow_software: bool) -> Option<usize> {
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    match selector {
        Selector::None => None,
        Selector::Best => infos
            .iter()
            .position(|i| allow_software || i.device_type != wgpu::DeviceType::Cpu),
        Selector::Index(n) => (*n < infos.len()).then_some(*n),
        Selector::Backend(b) => infos.iter().position(|i| i.backend == *b),
        Selector::Name(n) => infos
            .iter()
            .position(|i| i.name.to_ascii_lowercase().contains(n.as_str())),
    }
}

/// Every adapter wgpu sees on this machine, the selected one marked.
pub fn adapters() -> Vec<AdapterReport> {
    let adapters = enumerate();
    let config = config();
    let chosen = pick(&adapters, &config.adapter, true);
    adapters
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let limits = a.limits();
            AdapterReport {
                index,
                name: info.name.clone(),
                backend: info.backend.to_str().to_string(),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                software: info.device_type == wgpu::DeviceType::Cpu,
                features: feature_names(a.features()),
                max_buffer_size: limits.max_buffer_size,
                max_storage_binding: limits.max_storage_buffer_binding_size,
                max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
                cooperative_matrix: if config.cooperative_matrix {
                    coop_offered(a)
                } else {
                    Err("turned off by the configuration".into())
                }
                .map(|subgroup| format!("16x16x16 f16 x f16 + f32 on subgroups of {subgroup}")),
                selected: chosen == Some(index),
            }
        })
        .collect()
}

/// The features the cooperative-matrix (tensor core) GEMM needs from a
/// device.
pub(crate) const COOP_FEATURES: wgpu::Features =
    wgpu::Features::SUBGROUP.union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// The subgroup size to build the kernel for, when the adapter offers 16 x
/// 16 x 16 f16 multiplies into f32 on a fixed subgroup size; why not
/// otherwise.
pub(crate) fn coop_offered(adapter: &wgpu::Adapter) -> Result<u32, String> {
    if !adapter.features().contains(COOP_FEATURES) {
        return Err("the adapter offers no cooperative matrices (with subgroups)".into());
    }
    let props = adapter.cooperative_matrix_properties();
    let wanted = props.iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !wanted {
        let offered: Vec<String> = props
            .iter()
            .map(|p| {
                format!(
                    "{}x{}x{} {:?}->{:?}",
                    p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
                )
            })
            .collect();
        return Err(format!(
            "no 16x16x16 f16 x f16 + f32 configuration (offered: {})",
            offered.join(", ")
        ));
    }
    let info = adapter.get_info();
    let size = info.subgroup_min_size;
    if size != info.subgroup_max_size || !(8..=128).contains(&size) {
        return Err(format!(
            "subgroup size varies ({}..{}); the kernel is built for one",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    if 8 * size > adapter.limits().max_compute_invocations_per_workgroup {
        return Err(format!(
            "eight subgroups of {size} exceed the workgroup limit"
        ));
    }
    Ok(size)
}

/// What identifies a compiled pipeline on a device: the kernel variant
/// (`kernels::Kernel::key`) and whether wgpu's shader checks are in it.
pub(crate) type PipelineKey = (u8, [u32; 3], bool);

/// An open device with its queue, limits and compiled kernels.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    generation: u64,
    lost: Arc<Mutex<Option<String>>>,
    /// Compiled pipelines, by kernel variant and shader checks
    /// (`kernels::pipeline` fills it).
    pub(crate) pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// The tensor-core kernel this device was opened for, or why none.
    pub(crate) coop_subgroup: Result<u32, String>,
    /// The check's verdict on this device, once run (`probe`).
    pub(crate) coop_verdict: OnceLock<Result<(), String>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Shared {
    gpu: Option<Arc<Gpu>>,
    /// Why no adapter could be used, once probed (adapters do not appear
    /// while a process runs; a lost device is retried, an absent one not).
    absent: Option<String>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    gpu: None,
    absent: None,
});

/// Whether `auto` should pick the GPU: a hardware adapter exists (or the
/// selector names one explicitly, software included).
pub fn usable_for_auto() -> bool {
    let selector = config().adapter;
    if selector == Selector::None {
        return false;
    }
    let adapters = enumerate();
    pick(&adapters, &selector, selector.explicit()).is_some()
}

/// The process-wide device, opened on first use and again after a loss.
pub fn shared() -> Result<Arc<Gpu>, GpuError> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gpu) = &shared.gpu {
        if !gpu.is_lost() {
            return Ok(gpu.clone());
        }
        tracing::warn!(adapter = %gpu.info.name, "GPU device was lost; opening it again");
        shared.gpu = None;
    }
    if let Some(detail) = &shared.absent {
        return Err(GpuError::NoAdapter {
            detail: detail.clone(),
        });
    }
    match open() {
        Ok(gpu) => {
            let gpu = Arc::new(gpu);
            shared.gpu = Some(gpu.clone());
            Ok(gpu)
        }
        Err(GpuError::NoAdapter { detail }) => {
            shared.absent = Some(detail.clone());
            Err(GpuError::NoAdapter { detail })
        }
        Err(e) => Err(e),
    }
}

fn open() -> Result<Gpu, GpuError> {
    let config = config();
    let selector = config.adapter.clone();
    if selector == Selector::None {
        return Err(GpuError::NoAdapter {
            detail: " (GPU use is turned off: the adapter chosen is `none`)".into(),
        });
    }
    let adapters = enumerate();
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter {
            detail: String::new(),
        });
    }
    let Some(index) = pick(&adapters, &selector, true) else {
        return Err(GpuError::AdapterNotFound {
            selector: selector.to_string(),
            known: adapters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let info = a.get_info();
                    format!("{i}: {} ({})", info.name, info.backend.to_str())
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let adapter = &adapters[index];
    let info = adapter.get_info();
    let mut limits = adapter.limits();
    // A binding cap of at least 4 bytes (a tensor's smallest binding).
    limits.max_storage_buffer_binding_size = limits
        .max_storage_buffer_binding_size
        .min(config.binding_limit.unwrap_or(u64::MAX).max(4) / 4 * 4);
    let features = adapter.features();
    // f16 storage and arithmetic for the half-precision GEMM, where offered;
    // subgroups and cooperative matrices for its tensor-core kernel.
    let mut coop = if config.cooperative_matrix {
        coop_offered(adapter)
    } else {
        Err("turned off by the configuration".into())
    };
    let request = |extra: wgpu::Features| {
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("weft"),
            required_features: (features & wgpu::Features::SHADER_F16) | extra,
            required_limits: limits.clone(),
            experimental_features: if extra.is_empty() {
                wgpu::ExperimentalFeatures::disabled()
            } else {
                // SAFETY: the experimental feature is only used through the
                // kernel `coop::probe` checks on this device first.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            },
            ..Default::default()
        }))
    };
    let opened = if coop.is_ok() {
        request(COOP_FEATURES).or_else(|e| {
            coop = Err(format!("the device refused the features: {e}"));
            request(wgpu::Features::empty())
        })
    } else {
        request(wgpu::Features::empty())
    };
    let (device, queue) = opened.map_err(|e| GpuError::RequestDevice {
        message: e.to_string(),
    })?;
    let lost: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let lost = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
    }
    // wgpu's default handler panics; an error outside a scope is logged and
    // the scope that matters reports it.
    device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
        tracing::error!(error = %e, "uncaptured GPU error");
    }));
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(
        adapter = %info.name,
        backend = info.backend.to_str(),
        device_type = ?info.device_type,
        generation,
        "opened GPU device"
    );
    Ok(Gpu {
        coop_subgroup: coop,
        coop_verdict: OnceLock::new(),
        pipelines: Mutex::default(),
        device,
        queue,
        info,
        features,
        limits,
        generation,
        lost,
    })
}

impl Gpu {
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    pub fn backend(&self) -> &'static str {
        self.info.backend.to_str()
    }

    pub fn software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn features(&self) -> Vec<&'static str> {
        feature_names(self.features)
    }

    /// Whether kernels may use f16 (`shader-f16`).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Increases each time a device is opened in this process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_lost(&self) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Largest tensor one kernel binding may hold, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Largest buffer the device allocates, in bytes: a tensor beyond it
    /// cannot be on the device at all.
    pub fn max_buffer(&self) -> u64 {
        self.limits.max_buffer_size
    }

    /// Alignment of a binding's offset into a buffer, in bytes.
    pub(crate) fn offset_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment)
    }

    /// Simulate a device loss (tests): the device is destroyed, as a driver
    /// reset would.
    pub fn destroy_for_test(&self) {
        self.device.destroy();
    }

    pub(crate) fn lost_error(&self) -> Option<GpuError> {
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|message| GpuError::DeviceLost { message })
    }

    /// Wait for submitted work; a loss or a timeout becomes an error.
    pub(crate) fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<(), GpuError> {
        let r = self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: Some(WAIT),
        });
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        match r {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(GpuError::Timeout {
                message: format!("no completion within {WAIT:?}"),
            }),
            Err(e) => Err(GpuError::DeviceLost {
                message: e.to_string(),
            }),
        }
    }

    /// Run `f` inside error scopes for out-of-memory and validation, so a
    /// failure is this call's error instead of a log line.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        if let Some(e) = o.or(v) {
            return Err(from_wgpu(e));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(Selector::parse(""), Selector::Best);
        assert_eq!(Selector::parse("2"), Selector::Index(2));
        assert_eq!(
            Selector::parse("Vulkan"),
            Selector::Backend(wgpu::Backend::Vulkan)
        );
        assert_eq!(
            Selector::parse("NVIDIA H200"),
            Selector::Name("nvidia h200".into())
        );
        assert_eq!(Selector::parse("none"), Selector::None);
    }
}
