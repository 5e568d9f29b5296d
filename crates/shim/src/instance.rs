//! One container, as containerd's task API sees it (create, start, kill,
//! delete, wait), on runwasi's `containerd-shimkit` and youki's
//! `libcontainer`. The lifecycle half (start, kill, wait through a pidfd)
//! follows runwasi's `containerd-shim-wasm` 1.0.1; creating differs: the
//! shim decides what runs before the container exists ([`crate::plan`]), so
//! a bad image fails `create` with a reason instead of running (runwasi
//! runs any Linux image it is given).

use crate::container::Container;
use crate::error::chain;
use crate::executor::WeftExecutor;
use crate::image;
use crate::pid_fd::PidFd;
use crate::plan::{self, CONTAINER_TYPE, ImageFacts, Plan};
use chrono::{DateTime, Utc};
use containerd_shimkit::sandbox::sync::WaitableCell;
use containerd_shimkit::sandbox::{Error as SandboxError, Instance, InstanceConfig};
use containerd_shimkit::set_logger_kv;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::WaitStatus;
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use weft_runtime::{Runtime, RuntimeConfig};

/// The runtime's name: containerd's `io.containerd.weft.v1`.
pub const NAME: &str = "weft";

/// Where compiled modules are cached on the node, unless `WEFT_CACHE_DIR`
/// (in containerd's environment) says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/weft/compiled";
/// How large the node's cache may grow (least recently used entries go
/// first), unless `WEFT_CACHE_MAX` (for example `4GiB`) says otherwise.
pub const DEFAULT_CACHE_MAX: u64 = 2 << 30;

pub struct WeftInstance {
    exit_code: WaitableCell<(u32, DateTime<Utc>)>,
    container: Container,
    id: String,
}

/// The shim process's runtime: it only compiles and links (no ticker
/// runs), with the node's compile cache.
fn runtime() -> Result<&'static Runtime, SandboxError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let dir = std::env::var_os("WEFT_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
            let max = match std::env::var("WEFT_CACHE_MAX") {
                Ok(v) => weft_runtime::units::size(&v)
                    .map_err(|e| format!("WEFT_CACHE_MAX: {e}"))? as u64,
                Err(_) => DEFAULT_CACHE_MAX,
            };
            Runtime::new(RuntimeConfig {
                cache_dir: Some(dir),
                cache_max_bytes: Some(max),
                ..Default::default()
            })
            .map_err(|e| chain(&e))
        })
        .as_ref()
        .map_err(|e| SandboxError::Others(format!("weft: {e}")))
}

fn rootfs_of(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

impl Instance for WeftInstance {
    async fn new(id: String, cfg: &InstanceConfig) -> Result<Self, SandboxError> {
        let started = Instant::now();
        let spec = Spec::load(cfg.bundle.join("config.json"))?;
        let rootfs = rootfs_of(&spec, &cfg.bundle);
        let sandbox = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE))
            .is_some_and(|t| t == "sandbox");
        let refuse = |e: crate::error::PlanError| {
            let message = format!("weft: {}", chain(&e));
            log::error!("container {id}: {message}");
            SandboxError::FailedPrecondition(message)
        };
        let facts = if sandbox {
            ImageFacts::default()
        } else {
            image::load(&cfg.containerd_address, &cfg.namespace, &id, &rootfs)
                .await
                .map_err(refuse)?
        };
        let runtime = runtime()?;
        let plan =
            tokio::task::spawn_blocking(move || plan::prepare(runtime, &spec, &rootfs, &facts))
                .await
                .map_err(|e| SandboxError::Others(format!("weft: planning the container: {e}")))?
                .map_err(refuse)?;
        match &plan {
            Plan::Linux => log::info!("container {id}: a Linux program"),
            Plan::Wasm(p) => log::info!(
                "container {id}: module {} ({}), {}, {} model(s), planned in {:?}",
                p.argv0,
                p.digest,
                if p.serve { "served" } else { "run" },
                p.preloads.len(),
                started.elapsed()
            ),
        }
        let container = Container::build(build, (id.clone(), cfg.clone(), plan))?;
        Ok(Self {
            id,
            exit_code: WaitableCell::new(),
            container,
        })
    }

    async fn start(&self) -> Result<u32, SandboxError> {
        log::info!("starting instance: {}", self.id);
        // Make sure there is an exit code by the time we finish, even on a
        // panic.
        let guard = self.exit_code.clone().set_guard_with(|| (137, Utc::now()));
        let pid = self.container.pid()?;
        // The pidfd must exist before the container starts, so its exit is
        // never missed.
        let pidfd = PidFd::new(pid)?;
        self.container.start()?;
        let exit_code = self.exit_code.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let status = match pidfd.wait().await {
                Ok(WaitStatus::Exited(_, status)) => status,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                Ok(res) => {
                    log::error!("waitpid unexpected result: {res:?}");
                    137
                }
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    137
                }
            } as u32;
            let _ = exit_code.set((status, Utc::now()));
        });
        Ok(pid as _)
    }

    async fn kill(&self, signal: u32) -> Result<(), SandboxError> {
        log::info!("sending signal {signal} to instance: {}", self.id);
        self.container.kill(signal)?;
        Ok(())
    }

    async fn delete(&self) -> Result<(), SandboxError> {
        log::info!("deleting instance: {}", self.id);
        self.container.delete()?;
        Ok(())
    }

    async fn wait(&self) -> (u32, DateTime<Utc>) {
        *self.exit_code.wait().await
    }
}

/// Runs in the zygote: build the youki container (its init process waits
/// for `start`).
fn build(
    (id, cfg, plan): (String, InstanceConfig, Plan),
) -> anyhow::Result<libcontainer::container::Container> {
    let spec = Spec::load(cfg.bundle.join("config.json"))?;
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get("io.kubernetes.cri.sandbox-id"))
    {
        Some(pod) => set_logger_kv([("instance", id.as_str()), ("pod", pod)]),
        None => set_logger_kv([("instance", id.as_str())]),
    }
    let rootdir = cfg.determine_rootdir(NAME)?;
    let mut builder = ContainerBuilder::new(id, SyscallType::Linux)
        .with_executor(WeftExecutor::new(Arc::new(plan)))
        .with_root_path(rootdir)?;
    if let Ok(f) = cfg.open_stdin() {
        builder = builder.with_stdin(f);
    }
    if let Ok(f) = cfg.open_stdout() {
        builder = builder.with_stdout(f);
    }
    if let Ok(f) = cfg.open_stderr() {
        builder = builder.with_stderr(f);
    }
    Ok(builder
        .as_init(&cfg.bundle)
        .as_sibling(true)
        .with_systemd(cfg.config.systemd_cgroup)
        .build()?)
}
