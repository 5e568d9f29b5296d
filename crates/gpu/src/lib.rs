//! `weft-gpu`: Weft's GPU executor for wasi-nn, on wgpu.
//!
//! One portable binary drives whatever GPU the node has through wgpu
//! (Vulkan on Linux and Android, Metal on Apple, DX12 on Windows; Mesa's
//! lavapipe gives a real Vulkan device on CPU-only machines). tract parses,
//! types and declutters the model; [`GpuPlan::build`] lowers the nodes our
//! WGSL kernels cover and keeps the rest on tract, with explicit transfers
//! between the segments and a [`Report`] of which node runs where.
//!
//! Where to start: [`shared`] opens (or reopens after a loss) the process's
//! device; [`adapters`] lists what `weft info` shows; [`GpuPlan`] and
//! [`GpuContext`] are the compiled model and one run's state.
//!
//! Architecture invariant: nothing here panics on a model, a shape or a
//! driver failure; every failure is a [`GpuError`] and the next request
//! can succeed.

mod coop;
mod device;
mod error;
mod kernels;
mod lower;
mod plan;
mod probe;
mod split;
mod weights;

pub use device::{
    AdapterReport, Gpu, GpuConfig, Selector, adapters, config, configure, memory_in_use, shared,
    usable_for_auto,
};
pub use error::GpuError;
pub use kernels::Kernel;
pub use plan::{GpuContext, GpuPlan, NodeReport, Place, Report};
pub use weights::Weights;
