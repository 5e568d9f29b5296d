//! `containerd-shim-weft`: the containerd shim (task API v2) that runs Weft
//! model modules as containers; binary `containerd-shim-weft-v1`, runtime
//! `io.containerd.weft.v1`.
//!
//! Built on runwasi's `containerd-shimkit` (containerd's task service, the
//! zygote that forks containers, stdio, logging) and youki's
//! `libcontainer` (namespaces, cgroups, root filesystem). Where to start:
//! [`plan::prepare`] decides in the shim's process what a container runs,
//! so a bad image fails at create with a reason `kubectl describe pod`
//! shows; [`instance::WeftInstance`] is the task lifecycle;
//! [`job`] runs inside the container.
//!
//! - **Images.** The classic variant (`weft build --classic`: one tar layer
//!   with the module, its files and `/weft.json`) runs on every containerd;
//!   the Weft artifact itself (non-tar layers) on containerd 1.6.25+,
//!   1.7.7+ and 2.x, which store its layers without unpacking them:
//!   [`image`] writes them into the container's root.
//! - **Modules.** The entrypoint's module is compiled (or taken from the
//!   node's compile cache, `WEFT_CACHE_DIR`, default
//!   `/var/cache/weft/compiled`) and linked in the shim's process; the
//!   compiled code reaches the container through the zygote's pipe. The
//!   models `/weft.json` lists are preloaded for wasi-nn.
//! - **Sandbox.** The module sees the container's root as `/`, the
//!   container's environment, and a linear-memory cap from its memory
//!   limit (less the models and a reserve). stdout and stderr are the
//!   container's log; the exit code is the task's.
//! - **Serving.** A module that implements Weft's serving contract is
//!   served over the Open Inference Protocol on `0.0.0.0:$WEFT_PORT`
//!   (8000, REST) and `$WEFT_GRPC_PORT` (8001, gRPC) in the pod's network
//!   namespace, and drains on SIGTERM.
//! - **Pods.** The pod's sandbox (`pause`) container runs as a Linux
//!   program; any other Linux image is refused unless the pod carries the
//!   annotation `weft.dev/allow-linux-containers: "true"` (sidecars).

pub mod container;
pub mod error;
pub mod executor;
pub mod image;
pub mod instance;
pub mod job;
mod pid_fd;
pub mod plan;

pub use instance::WeftInstance;

/// The shim's `main`.
pub fn main() {
    // The shim's one read of the GPU settings; containers forked from it
    // inherit them.
    match weft_runtime::gpu_config_from_env(|k| std::env::var(k).ok()) {
        Ok(config) => weft_runtime::configure_gpu(config),
        Err(e) => {
            eprintln!("containerd-shim-weft-v1: {e}");
            std::process::exit(2);
        }
    }
    containerd_shimkit::sandbox::cli::shim_main::<WeftInstance>(
        instance::NAME,
        containerd_shimkit::shim_version!(),
        None,
    );
}
