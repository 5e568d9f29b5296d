//! What one container runs, decided in the shim's process before the
//! container exists.
//!
//! The shim's process still sees the bundle (the container's root
//! filesystem mounted at `bundle/rootfs`), the OCI spec and the node, so
//! everything that can be wrong with a container is found here, and the
//! container fails to *create* with a message that `kubectl describe pod`
//! shows: a Linux image given to the weft runtime, a missing entrypoint or
//! model file, a module that does not compile or link, an environment
//! variable the shim cannot use, a memory limit too small for the models.
//! The container's init process then only runs the [`Plan`]: compiled code,
//! preloads, arguments and limits, carried to it through runwasi's zygote.

use crate::error::PlanError;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use weft_runtime::{Purpose, Runtime, RuntimeError};

/// CRI's annotation naming a container's role in its pod.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// A pod annotation that lets Linux containers (sidecars) run next to the
/// module in a weft pod. containerd passes it on when the runtime's
/// `pod_annotations` lists `weft.dev/*` (the installer's block does).
pub const ALLOW_LINUX: &str = "weft.dev/allow-linux-containers";

/// Memory the shim keeps for itself (runtime, wasmtime, tract's buffers)
/// out of the container's limit, on top of the models' size.
pub const RESERVE: u64 = 32 << 20;
/// The smallest linear-memory cap worth starting a module with.
pub const MIN_MODULE_MEMORY: u64 = 16 << 20;

/// What the container's init process does.
#[derive(Debug, Serialize, Deserialize)]
pub enum Plan {
    /// Exec a Linux program as runc would: the pod's sandbox (`pause`)
    /// container, or a sidecar the pod allows.
    Linux,
    /// Run or serve a model module.
    Wasm(Box<WasmPlan>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WasmPlan {
    /// The module's file name (`argv[0]` and messages).
    pub name: String,
    /// `sha256:` of the wasm bytes.
    pub digest: String,
    pub serve: bool,
    /// Code compiled by this binary in the shim's process
    /// (`Program::serialize`).
    #[serde(with = "serde_bytes")]
    pub code: Vec<u8>,
    /// `argv[0]` as the module sees it.
    pub argv0: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `NAME:ENCODING:TARGET:PATH`, paths inside the container.
    pub preloads: Vec<String>,
    /// Linear-memory cap per instance.
    pub max_memory: u64,
    pub server: Option<ServerPlan>,
}

/// How a serving module is served (from `WEFT_*` variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPlan {
    pub rest_port: u16,
    pub grpc_port: u16,
    pub model_name: String,
    pub version: String,
    pub instances: usize,
    pub queue: usize,
    pub deadline: Duration,
}

/// What the image told us beyond its files.
#[derive(Debug, Default, Clone)]
pub struct ImageFacts {
    /// The artifact's version (`org.opencontainers.image.version`).
    pub version: Option<String>,
}

use weft_format::weft_json::WeftJson;
pub use weft_format::weft_json::{ModelEntry, WeftConfig};

/// The path of the Weft config in a container's root filesystem.
pub use weft_format::WEFT_JSON;
/// Largest module the shim reads from an image.
const MAX_MODULE_BYTES: u64 = 1 << 30;
/// Largest `/weft.json` the shim reads.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Decide what the container runs. `rootfs` is the container's root as
/// the shim's process sees it; for an artifact image the files of its
/// layers are already there (see `image.rs`).
pub fn prepare(
    runtime: &Runtime,
    spec: &Spec,
    rootfs: &Path,
    facts: &ImageFacts,
) -> Result<Plan, PlanError> {
    check_spec(spec)?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    if annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox") {
        return Ok(Plan::Linux);
    }
    let process = spec.process().as_ref().ok_or(PlanError::NoProcess)?;
    let args = process.args().clone().unwrap_or_default();
    let env = env_pairs(process.env().as_deref().unwrap_or_default());
    let cwd = process.cwd().to_string_lossy().into_owned();
    let root = Rootfs::open(rootfs)?;
    let config = root.weft_config()?;

    let (entry, module_args) = entrypoint(&root, &args, &cwd, &env, config.as_ref())?;
    let mut bytes = root.read(&entry)?;
    match Payload::sniff(&bytes, &entry) {
        Payload::Wasm => {}
        Payload::Wat => {
            bytes = wat::parse_bytes(&bytes)
                .map_err(|e| PlanError::Wat {
                    path: entry.clone(),
                    message: e.to_string(),
                })?
                .into_owned();
        }
        Payload::Linux => {
            let allowed = annotations.get(ALLOW_LINUX).map(String::as_str) == Some("true");
            return if allowed {
                Ok(Plan::Linux)
            } else {
                Err(PlanError::LinuxImage { entry })
            };
        }
        Payload::Other => return Err(PlanError::NotWasm { entry }),
    }

    let name = Path::new(&entry)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.wasm".into());
    let program = load(runtime, &name, &entry, &bytes)?;
    let serve = program.purpose() == Purpose::Serve;
    let code = program.serialize().map_err(|e| PlanError::Module {
        entry: entry.clone(),
        source: e,
    })?;

    let mut preloads = Vec::new();
    let mut model_bytes = 0u64;
    for m in config.iter().flat_map(|c| &c.models) {
        let path = relative(&m.path).map_err(|reason| PlanError::ModelPath {
            model: m.name.clone(),
            path: m.path.clone(),
            reason,
        })?;
        let size = root.size(&path).map_err(|_| PlanError::MissingModel {
            model: m.name.clone(),
            path: m.path.clone(),
        })?;
        model_bytes += size;
        let preload = format!("{}:{}:{}:/{}", m.name, m.encoding, m.target, path.display());
        preload
            .parse::<weft_nn::Preload>()
            .map_err(|e| PlanError::Preload {
                model: m.name.clone(),
                message: e.to_string(),
            })?;
        preloads.push(preload);
    }

    let server = if serve {
        Some(server_plan(spec, &env, &name, facts)?)
    } else {
        None
    };
    let per_instance = server.as_ref().map_or(1, |s| s.instances as u64);
    let max_memory = memory_cap(spec, model_bytes, per_instance)?;
    Ok(Plan::Wasm(Box::new(WasmPlan {
        name,
        digest: program.digest().to_owned(),
        serve,
        code,
        argv0: entry,
        args: module_args,
        env,
        preloads,
        max_memory,
        server,
    })))
}

/// Options of the OCI spec that a model module cannot honour.
fn check_spec(spec: &Spec) -> Result<(), PlanError> {
    if spec.vm().is_some() {
        return Err(PlanError::Unsupported {
            option: "vm",
            why: "the spec asks for a virtual-machine runtime",
        });
    }
    if spec.windows().is_some() || spec.solaris().is_some() {
        return Err(PlanError::Unsupported {
            option: "windows/solaris",
            why: "the spec is for another operating system",
        });
    }
    if let Some(p) = spec.process()
        && p.terminal() == Some(true)
    {
        return Err(PlanError::Unsupported {
            option: "process.terminal",
            why: "model modules have no terminal; remove `tty: true` from the container",
        });
    }
    Ok(())
}

/// Compile and link, as a command first, else as a serving module.
fn load(
    runtime: &Runtime,
    name: &str,
    entry: &str,
    bytes: &[u8],
) -> Result<weft_runtime::Program, PlanError> {
    let entry = entry.to_owned();
    match runtime.load(name, bytes) {
        Ok(p) => Ok(p),
        Err(RuntimeError::NoStart { .. } | RuntimeError::NotCommand { .. }) => {
            runtime.load_service(name, bytes).map_err(|e| match e {
                RuntimeError::NotServing { .. } => {
                    PlanError::NeitherCommandNorService { entry, source: e }
                }
                e => PlanError::Module { entry, source: e },
            })
        }
        Err(e) => Err(PlanError::Module { entry, source: e }),
    }
}

/// The module to run and its arguments. A classic image's entrypoint is
/// the module (`/ocr.wasm` followed by its `Cmd`); an artifact image has
/// no entrypoint, so an empty command runs the artifact's module with its
/// own arguments, and a command that does not name a file gives the
/// module its arguments (Kubernetes `args:`).
fn entrypoint(
    root: &Rootfs,
    args: &[String],
    cwd: &str,
    env: &[(String, String)],
    config: Option<&WeftConfig>,
) -> Result<(String, Vec<String>), PlanError> {
    let artifact_module = config.and_then(|c| c.module.as_deref());
    let Some(first) = args.first().filter(|a| !a.is_empty()) else {
        return match artifact_module {
            Some(m) => Ok((
                absolute(m),
                config.map(|c| c.args.clone()).unwrap_or_default(),
            )),
            None => Err(PlanError::NoEntrypoint),
        };
    };
    if first.contains('#') {
        return Err(PlanError::Unsupported {
            option: "entrypoint#function",
            why: "Weft runs a module's _start or its serving exports, not a named function",
        });
    }
    let looks_like_path = first.starts_with('/') || first.contains('/') || first.ends_with(".wasm");
    if let Some(found) = resolve(root, first, cwd, env) {
        return Ok((found, args[1..].to_vec()));
    }
    match artifact_module {
        Some(m) if !looks_like_path => Ok((absolute(m), args.to_vec())),
        _ => Err(PlanError::EntrypointMissing {
            entry: first.clone(),
        }),
    }
}

/// Find `arg0` in the root as `execvp` would: a path with a `/` relative
/// to the working directory, a bare name along `PATH`.
fn resolve(root: &Rootfs, arg0: &str, cwd: &str, env: &[(String, String)]) -> Option<String> {
    let candidates: Vec<String> = if arg0.starts_with('/') {
        vec![arg0.to_owned()]
    } else if arg0.contains('/') {
        vec![format!("{}/{arg0}", cwd.trim_end_matches('/'))]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        std::iter::once(format!("{}/{arg0}", cwd.trim_end_matches('/')))
            .chain(
                path.split(':')
                    .map(|d| format!("{}/{arg0}", d.trim_end_matches('/'))),
            )
            .collect()
    };
    candidates.into_iter().find(|c| root.is_file(c))
}

fn absolute(p: &str) -> String {
    format!("/{}", p.trim_start_matches('/'))
}

/// A path inside the artifact: relative, `/`-separated, no `..`.
pub fn relative(p: &str) -> Result<PathBuf, &'static str> {
    let p = Path::new(p.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err("it must stay inside the image (no `..`)"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("it is empty");
    }
    Ok(out)
}

/// What a container's entrypoint file is.
#[derive(Debug, PartialEq, Eq)]
enum Payload {
    Wasm,
    Wat,
    Linux,
    Other,
}

impl Payload {
    fn sniff(bytes: &[u8], path: &str) -> Payload {
        match bytes {
            [0, b'a', b's', b'm', ..] => Payload::Wasm,
            [0x7f, b'E', b'L', b'F', ..] | [b'#', b'!', ..] => Payload::Linux,
            _ if path.ends_with(".wat") => Payload::Wat,
            _ => Payload::Other,
        }
    }
}

/// `KEY=VALUE` pairs of the OCI process environment.
pub fn env_pairs(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    // The last definition wins, as in a shell.
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parsed<T: std::str::FromStr>(
    env: &[(String, String)],
    key: &'static str,
    default: T,
    valid: impl Fn(&T) -> bool,
    expected: &'static str,
) -> Result<T, PlanError> {
    match var(env, key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|x| valid(x))
            .ok_or_else(|| PlanError::Env {
                key,
                value: v.to_owned(),
                expected,
            }),
    }
}

/// The serving settings: `WEFT_PORT` (8000), `WEFT_GRPC_PORT` (8001),
/// `WEFT_MODEL_NAME` (the module's name), `WEFT_INSTANCES` (the
/// container's CPU limit, rounded up, else the node's cores),
/// `WEFT_QUEUE` (64), `WEFT_DEADLINE` (30s).
fn server_plan(
    spec: &Spec,
    env: &[(String, String)],
    module: &str,
    facts: &ImageFacts,
) -> Result<ServerPlan, PlanError> {
    let rest_port = parsed(
        env,
        "WEFT_PORT",
        8000u16,
        |p| *p > 0,
        "a TCP port (1-65535)",
    )?;
    let grpc_port = parsed(
        env,
        "WEFT_GRPC_PORT",
        8001u16,
        |p| *p > 0,
        "a TCP port (1-65535)",
    )?;
    if rest_port == grpc_port {
        return Err(PlanError::Env {
            key: "WEFT_GRPC_PORT",
            value: grpc_port.to_string(),
            expected: "a port other than WEFT_PORT",
        });
    }
    let model_name = match var(env, "WEFT_MODEL_NAME") {
        Some(n) => {
            let ok = !n.is_empty()
                && n.len() <= 128
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(PlanError::Env {
                    key: "WEFT_MODEL_NAME",
                    value: n.to_owned(),
                    expected: "a model name of letters, digits, `-`, `_` and `.`",
                });
            }
            n.to_owned()
        }
        None => module.trim_end_matches(".wasm").to_owned(),
    };
    let instances = parsed(
        env,
        "WEFT_INSTANCES",
        cpu_limit(spec)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        |n| (1..=256).contains(n),
        "a number of instances from 1 to 256",
    )?;
    let queue = parsed(
        env,
        "WEFT_QUEUE",
        64usize,
        |n| *n <= 1 << 16,
        "a queue length up to 65536",
    )?;
    let deadline = match var(env, "WEFT_DEADLINE") {
        None => Duration::from_secs(30),
        Some(v) => weft_runtime::units::duration(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| PlanError::Env {
                key: "WEFT_DEADLINE",
                value: v.to_owned(),
                expected: "a duration such as 30s or 500ms",
            })?,
    };
    Ok(ServerPlan {
        rest_port,
        grpc_port,
        model_name,
        version: facts.version.clone().unwrap_or_else(|| "1".into()),
        instances,
        queue,
        deadline,
    })
}

/// The container's CPU limit in whole CPUs, rounded up.
fn cpu_limit(spec: &Spec) -> Option<usize> {
    let cpu = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .cpu()
        .as_ref()?;
    let quota = u64::try_from(cpu.quota()?).ok().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
    usize::try_from(quota.div_ceil(period))
        .ok()
        .map(|n| n.max(1))
}

/// The container's memory limit, if any.
fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?
        .limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// Each instance's linear-memory cap: what the container's memory limit
/// leaves after the models and the shim's reserve, shared by the serving
/// instances; 1 GiB each without a limit.
fn memory_cap(spec: &Spec, model_bytes: u64, instances: u64) -> Result<u64, PlanError> {
    let Some(limit) = memory_limit(spec) else {
        return Ok(weft_runtime::DEFAULT_MAX_MEMORY as u64);
    };
    let needed = model_bytes + RESERVE + MIN_MODULE_MEMORY * instances;
    if limit < needed {
        return Err(PlanError::MemoryTooSmall {
            limit,
            models: model_bytes,
            instances,
            needed,
        });
    }
    Ok(((limit - model_bytes - RESERVE) / instances)
        .min(weft_runtime::DEFAULT_MAX_MEMORY as u64 * 4))
}

/// The container's root filesystem, read without following symlinks out
/// of it (the shim runs as root on the host).
pub struct Rootfs {
    root: pathrs::Root,
    path: PathBuf,
}

impl Rootfs {
    pub fn open(path: &Path) -> Result<Rootfs, PlanError> {
        let root = pathrs::Root::open(path).map_err(|e| PlanError::Rootfs {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Rootfs {
            root,
            path: path.to_owned(),
        })
    }

    /// Open a path of the image without blocking (a FIFO would block a
    /// plain open for ever) and without making it our terminal; `None` when
    /// there is nothing to open. The caller checks it is a regular file.
    fn open_file(&self, path: &str) -> Result<std::fs::File, pathrs::error::Error> {
        use pathrs::flags::OpenFlags;
        self.root.open_subpath(
            path.trim_start_matches('/'),
            OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_NOCTTY,
        )
    }

    /// Open a regular file of the image, with its size; `Ok(None)` when the
    /// path does not resolve, an error when it is something else.
    fn open_regular(&self, path: &str) -> Result<Option<(std::fs::File, u64)>, PlanError> {
        let Ok(f) = self.open_file(path) else {
            return Ok(None);
        };
        let meta = f.metadata().map_err(|e| PlanError::Read {
            path: self.path.join(path.trim_start_matches('/')),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(PlanError::NotAFile { path: path.into() });
        }
        Ok(Some((f, meta.len())))
    }

    fn is_file(&self, path: &str) -> bool {
        matches!(self.open_regular(path), Ok(Some(_)))
    }

    fn size(&self, path: &Path) -> Result<u64, PlanError> {
        let shown = path.display().to_string();
        self.open_regular(&shown)?
            .map(|(_, len)| len)
            .ok_or(PlanError::EntrypointMissing { entry: shown })
    }

    /// Read a regular file of at most `limit` bytes (a file that grows past
    /// it while read is refused too).
    fn read_capped(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, PlanError> {
        let Some((f, len)) = self.open_regular(path)? else {
            return Ok(None);
        };
        let too_large = || PlanError::FileTooLarge {
            path: path.into(),
            limit,
        };
        if len > limit {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| PlanError::Read {
                path: self.path.join(path.trim_start_matches('/')),
                source: e,
            })?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(Some(bytes))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, PlanError> {
        self.read_capped(path, MAX_MODULE_BYTES)?
            .ok_or_else(|| PlanError::EntrypointMissing {
                entry: path.to_owned(),
            })
    }

    /// `/weft.json`, when the image has one.
    pub fn weft_config(&self) -> Result<Option<WeftConfig>, PlanError> {
        let Some(bytes) = self.read_capped(WEFT_JSON, MAX_CONFIG_BYTES)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| PlanError::Config {
            message: "it is not UTF-8".into(),
        })?;
        let parsed: WeftJson = serde_json::from_str(&text).map_err(|e| PlanError::Config {
            message: e.to_string(),
        })?;
        Ok(Some(parsed.weft))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, ProcessBuilder,
        SpecBuilder,
    };
    use std::collections::HashMap;

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .cwd("/")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn with_limits(mut s: Spec, memory: Option<i64>, cpu_quota: Option<i64>) -> Spec {
        let mut r = LinuxResourcesBuilder::default();
        if let Some(m) = memory {
            r = r.memory(LinuxMemoryBuilder::default().limit(m).build().unwrap());
        }
        if let Some(q) = cpu_quota {
            r = r.cpu(
                LinuxCpuBuilder::default()
                    .quota(q)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            );
        }
        s.set_linux(Some(
            LinuxBuilder::default()
                .resources(r.build().unwrap())
                .build()
                .unwrap(),
        ));
        s
    }

    fn runtime() -> Runtime {
        Runtime::new(weft_runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap()
    }

    const COMMAND: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

    fn rootfs(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        dir
    }

    fn wasm(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    fn err(r: Result<Plan, PlanError>) -> String {
        match r {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => crate::error::chain(&e),
        }
    }

    /// Issue 21: the shim (root, on the host) opened `/weft.json` with a
    /// plain open, so a FIFO there hung `create` for ever. Now image files
    /// are opened without blocking and only regular files are read.
    #[test]
    fn a_fifo_or_device_in_the_image_is_refused_not_waited_on() {
        let dir = rootfs(&[("m.wasm", &wasm(COMMAND))]);
        let fifo = dir.path().join("weft.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        std::thread::spawn(move || {
            let r = prepare(
                &runtime(),
                &spec(&["/m.wasm"], &[]),
                &path,
                &ImageFacts::default(),
            );
            let _ = tx.send(err(r));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("prepare blocked on a FIFO");
        assert!(
            e.contains("weft.json") && e.contains("not a regular file"),
            "{e}"
        );
        // The entrypoint itself may not be a FIFO either.
        let dir = rootfs(&[]);
        std::process::Command::new("mkfifo")
            .arg(dir.path().join("m.wasm"))
            .status()
            .unwrap();
        let path = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(err(prepare(
                &runtime(),
                &spec(&["/m.wasm"], &[]),
                &path,
                &ImageFacts::default(),
            )));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("prepare blocked on a FIFO entrypoint");
        assert!(e.contains("m.wasm"), "{e}");
    }

    #[test]
    fn image_files_are_read_with_a_size_cap() {
        let big = vec![b' '; (MAX_CONFIG_BYTES + 1) as usize];
        let dir = rootfs(&[("m.wasm", &wasm(COMMAND)), ("weft.json", &big)]);
        let e = err(prepare(
            &runtime(),
            &spec(&["/m.wasm"], &[]),
            dir.path(),
            &ImageFacts::default(),
        ));
        assert!(e.contains("over 4194304 bytes"), "{e}");
    }

    #[test]
    fn a_classic_image_runs_its_entrypoint_with_models_from_weft_json() {
        let module = wasm(COMMAND);
        let dir = rootfs(&[
            ("m.wasm", &module),
            ("models/tiny.onnx", b"0123456789"),
            (
                "weft.json",
                br#"{"weft":{"module":"m.wasm","models":[{"name":"tiny","path":"models/tiny.onnx"}]}}"#,
            ),
        ]);
        let plan = prepare(
            &runtime(),
            &spec(&["/m.wasm", "a", "b"], &["K=v"]),
            dir.path(),
            &ImageFacts::default(),
        )
        .unwrap();
        let Plan::Wasm(p) = plan else { panic!() };
        assert_eq!(p.argv0, "/m.wasm");
        assert_eq!(p.args, ["a", "b"]);
        assert_eq!(p.env, [("K".to_string(), "v".to_string())]);
        assert_eq!(p.preloads, ["tiny:onnx:cpu:/models/tiny.onnx"]);
        assert!(!p.serve && p.server.is_none());
        assert_eq!(p.max_memory, weft_runtime::DEFAULT_MAX_MEMORY as u64);
        // The code links in a fresh runtime of the same binary.
        let rt = runtime();
        let program =
            unsafe { rt.load_serialized(&p.name, &p.digest, &p.code, Purpose::Run) }.unwrap();
        assert_eq!(program.digest(), p.digest);
    }

    #[test]
    fn an_artifact_without_command_runs_its_module_with_its_args() {
        let dir = rootfs(&[
            ("ocr.wasm", &wasm(COMMAND)),
            (
                "weft.json",
                br#"{"weft":{"module":"ocr.wasm","args":["--dict","/d.txt"]}}"#,
            ),
        ]);
        let Plan::Wasm(p) = prepare(
            &runtime(),
            &spec(&[], &[]),
            dir.path(),
            &ImageFacts::default(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.argv0.as_str(), p.args.clone()),
            (
                "/ocr.wasm",
                vec!["--dict".to_string(), "/d.txt".to_string()]
            )
        );
        // Kubernetes `args:` only: they replace the artifact's arguments.
        let Plan::Wasm(p) = prepare(
            &runtime(),
            &spec(&["--verbose"], &[]),
            dir.path(),
            &ImageFacts::default(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.argv0.as_str(), p.args.clone()),
            ("/ocr.wasm", vec!["--verbose".to_string()])
        );
        // A command naming a module that is not there is an error, not an argument.
        assert!(
            err(prepare(
                &runtime(),
                &spec(&["/orc.wasm"], &[]),
                dir.path(),
                &ImageFacts::default()
            ))
            .contains("/orc.wasm")
        );
    }

    #[test]
    fn the_pod_sandbox_runs_as_linux_and_other_linux_images_are_refused() {
        let dir = rootfs(&[
            ("pause", b"\x7fELF\x02\x01\x01"),
            ("bin/entry.sh", b"#!/bin/sh\n"),
        ]);
        let mut s = spec(&["/pause"], &[]);
        s.set_annotations(Some(HashMap::from([(
            CONTAINER_TYPE.to_string(),
            "sandbox".to_string(),
        )])));
        assert!(matches!(
            prepare(&runtime(), &s, dir.path(), &ImageFacts::default()),
            Ok(Plan::Linux)
        ));

        let e = err(prepare(
            &runtime(),
            &spec(&["entry.sh"], &["PATH=/bin"]),
            dir.path(),
            &ImageFacts::default(),
        ));
        assert!(
            e.contains("/bin/entry.sh")
                && e.contains("not a Weft model module")
                && e.contains(ALLOW_LINUX),
            "{e}"
        );

        let mut s = spec(&["/pause"], &[]);
        s.set_annotations(Some(HashMap::from([(
            ALLOW_LINUX.to_string(),
            "true".to_string(),
        )])));
        assert!(matches!(
            prepare(&runtime(), &s, dir.path(), &ImageFacts::default()),
            Ok(Plan::Linux)
        ));
    }

    #[test]
    fn bad_images_say_what_is_wrong() {
        let rt = runtime();
        let f = ImageFacts::default();
        let dir = rootfs(&[
            ("data.bin", b"hello"),
            (
                "trap.wasm",
                &wasm(r#"(module (func (export "_start") unreachable))"#),
            ),
        ]);
        assert!(err(prepare(&rt, &spec(&[], &[]), dir.path(), &f)).contains("no entrypoint"));
        assert!(
            err(prepare(&rt, &spec(&["/nope.wasm"], &[]), dir.path(), &f))
                .contains("/nope.wasm is not in the image")
        );
        assert!(
            err(prepare(&rt, &spec(&["/data.bin"], &[]), dir.path(), &f))
                .contains("not a WebAssembly module")
        );
        assert!(
            err(prepare(
                &rt,
                &spec(&["/trap.wasm#main"], &[]),
                dir.path(),
                &f
            ))
            .contains("entrypoint#function")
        );

        let dir = rootfs(&[(
            "m.wasm",
            &wasm(r#"(module (import "nowhere" "f" (func)) (func (export "_start")))"#),
        )]);
        let e = err(prepare(&rt, &spec(&["/m.wasm"], &[]), dir.path(), &f));
        assert!(e.contains("/m.wasm") && e.contains("nowhere"), "{e}");

        let dir = rootfs(&[("m.wasm", &wasm(r#"(module (memory (export "memory") 1))"#))]);
        let e = err(prepare(&rt, &spec(&["/m.wasm"], &[]), dir.path(), &f));
        assert!(
            e.contains("neither a command") && e.contains("weft_serve_v1"),
            "{e}"
        );

        let dir = rootfs(&[
            ("m.wasm", &wasm(COMMAND)),
            (
                "weft.json",
                br#"{"weft":{"models":[{"name":"det","path":"models/det.onnx"}]}}"#,
            ),
        ]);
        let e = err(prepare(&rt, &spec(&["/m.wasm"], &[]), dir.path(), &f));
        assert!(
            e.contains("model 'det'") && e.contains("models/det.onnx") && e.contains("missing"),
            "{e}"
        );

        let dir = rootfs(&[
            ("m.wasm", &wasm(COMMAND)),
            (
                "weft.json",
                br#"{"weft":{"models":[{"name":"det","path":"../../etc/passwd"}]}}"#,
            ),
        ]);
        assert!(
            err(prepare(&rt, &spec(&["/m.wasm"], &[]), dir.path(), &f))
                .contains("inside the image")
        );

        let dir = rootfs(&[("m.wasm", &wasm(COMMAND)), ("weft.json", b"{")]);
        assert!(err(prepare(&rt, &spec(&["/m.wasm"], &[]), dir.path(), &f)).contains("weft.json"));

        let mut s = spec(&["/m.wasm"], &[]);
        s.process_mut().as_mut().unwrap().set_terminal(Some(true));
        assert!(err(prepare(&rt, &s, dir.path(), &f)).contains("tty"));
    }

    #[test]
    fn symlinks_do_not_escape_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.wasm"), wasm(COMMAND)).unwrap();
        let dir = rootfs(&[]);
        std::os::unix::fs::symlink(
            outside.path().join("secret.wasm"),
            dir.path().join("m.wasm"),
        )
        .unwrap();
        let e = err(prepare(
            &runtime(),
            &spec(&["/m.wasm"], &[]),
            dir.path(),
            &ImageFacts::default(),
        ));
        assert!(e.contains("/m.wasm is not in the image"), "{e}");
    }

    const SERVICE: &str = r#"(module (memory (export "memory") 1)
        (func (export "weft_serve_v1_alloc") (param i32) (result i32) i32.const 0)
        (func (export "weft_serve_v1_infer") (param i32 i32) (result i32) i32.const 0)
        (func (export "weft_serve_v1_response_ptr") (result i32) i32.const 0)
        (func (export "weft_serve_v1_response_len") (result i32) i32.const 0))"#;

    #[test]
    fn serving_settings_come_from_the_environment_and_limits() {
        let rt = runtime();
        let dir = rootfs(&[
            ("svc.wasm", &wasm(SERVICE)),
            ("models/m.onnx", &[0u8; 1024]),
        ]);
        let facts = ImageFacts {
            version: Some("2.1".into()),
        };
        let s = with_limits(
            spec(&["/svc.wasm"], &["WEFT_PORT=9000", "WEFT_MODEL_NAME=tiny"]),
            Some(256 << 20),
            Some(150_000),
        );
        let Plan::Wasm(p) = prepare(&rt, &s, dir.path(), &facts).unwrap() else {
            panic!()
        };
        let server = p.server.unwrap();
        assert!(p.serve);
        assert_eq!(
            (
                server.rest_port,
                server.grpc_port,
                server.model_name.as_str(),
                server.version.as_str()
            ),
            (9000, 8001, "tiny", "2.1")
        );
        assert_eq!(server.instances, 2, "1.5 CPUs round up");
        assert_eq!(p.max_memory, ((256 << 20) - RESERVE) / 2);

        for (var, needle) in [
            ("WEFT_PORT=http", "WEFT_PORT"),
            ("WEFT_GRPC_PORT=8000", "other than WEFT_PORT"),
            ("WEFT_INSTANCES=0", "1 to 256"),
            ("WEFT_DEADLINE=soon", "30s"),
            ("WEFT_MODEL_NAME=a/b", "WEFT_MODEL_NAME"),
        ] {
            let e = err(prepare(
                &rt,
                &spec(&["/svc.wasm"], &[var]),
                dir.path(),
                &facts,
            ));
            assert!(e.contains(needle), "{var}: {e}");
        }
        let small = with_limits(
            spec(&["/svc.wasm"], &["WEFT_INSTANCES=4"]),
            Some(64 << 20),
            None,
        );
        let e = err(prepare(&rt, &small, dir.path(), &facts));
        assert!(
            e.contains("64 MiB") && e.contains("resources.limits.memory"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(
            relative("/models/a.onnx").unwrap(),
            PathBuf::from("models/a.onnx")
        );
        assert_eq!(relative("./a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(relative("a/../../b").is_err());
        assert!(relative("").is_err());
    }
}
