//! `containerd-shim-weft`: the containerd shim (task API v2) that runs Weft
//! model modules as containers, built on runwasi's `containerd-shim-wasm`
//! (which brings the container lifecycle, youki's sandbox, stdio pipes,
//! signals and the pod sandbox handling).
//!
//! A container's entrypoint names the module; for the classic image variant
//! (a tar layer holding the module, its files and `weft.json`, what
//! `weft build --classic` writes) the models listed in `/weft.json` are
//! preloaded for wasi-nn from their paths in the image. The module sees the
//! container's root filesystem as `/`, the container's environment, and a
//! linear-memory cap taken from the container's cgroup memory limit.
//!
//! A *serving* module (Weft's serving contract, see `docs/serving.md`) is
//! served over the Open Inference Protocol instead of run once: REST on
//! `0.0.0.0:$WEFT_PORT` (default 8000) and gRPC on `$WEFT_GRPC_PORT` (8001)
//! inside the container's network namespace, so a Kubernetes Service in
//! front of the pod reaches it. SIGTERM drains it gracefully.

use anyhow::Context as _;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::shim::{Shim, Version};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use weft_nn::{Models, Preload};
use weft_runtime::{DirGrant, Limits, RunOptions, Runtime, RuntimeConfig};

/// The shim: runtime name `io.containerd.weft.v1`, binary
/// `containerd-shim-weft-v1`.
pub struct WeftShim;

impl Shim for WeftShim {
    fn name() -> &'static str {
        "weft"
    }

    fn version() -> Version {
        containerd_shim_wasm::shim::version!()
    }

    type Sandbox = WeftSandbox;
}

/// Runs one container's module.
#[derive(Default)]
pub struct WeftSandbox;

/// What the shim needs of a classic image's `/weft.json` (the artifact's
/// config, see `docs/artifact-format.md`).
#[derive(Debug, Deserialize)]
struct ImageConfig {
    weft: WeftSection,
}

#[derive(Debug, Deserialize)]
struct WeftSection {
    #[serde(default)]
    models: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    name: String,
    path: String,
    #[serde(default = "onnx")]
    encoding: String,
    #[serde(default = "cpu")]
    target: String,
}

fn onnx() -> String {
    "onnx".into()
}

fn cpu() -> String {
    "cpu".into()
}

/// Preloads for the models a classic image lists in `weft.json` under `root`.
pub fn preloads_from(root: &Path) -> anyhow::Result<Vec<Preload>> {
    let path = root.join("weft.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: ImageConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Weft artifact config", path.display()))?;
    config
        .weft
        .models
        .iter()
        .map(|m| {
            let file = root.join(m.path.trim_start_matches('/'));
            format!("{}:{}:{}:{}", m.name, m.encoding, m.target, file.display())
                .parse::<Preload>()
                .with_context(|| format!("model {} in {}", m.name, path.display()))
        })
        .collect()
}

/// `KEY=VALUE` pairs of the OCI process environment.
pub fn parse_env(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The container's memory limit as cgroup v2 (`memory.max`) or v1
/// (`memory.limit_in_bytes`) states it under `cgroup_root`; `None` when
/// unlimited or unknown.
pub fn cgroup_memory_limit(cgroup_root: &Path) -> Option<usize> {
    for file in ["memory.max", "memory/memory.limit_in_bytes"] {
        if let Ok(text) = std::fs::read_to_string(cgroup_root.join(file)) {
            let text = text.trim();
            if text == "max" {
                return None;
            }
            // cgroup v1 writes a huge number for "unlimited".
            return text
                .parse::<u64>()
                .ok()
                .filter(|&n| n < 1 << 62)
                .and_then(|n| usize::try_from(n).ok());
        }
    }
    None
}

impl Sandbox for WeftSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let entry = ctx.entrypoint();
        let bytes = entry
            .source
            .as_bytes()
            .context("reading the module")?
            .into_owned();
        let job = Job {
            name: format!("{}.wasm", entry.name.as_deref().unwrap_or("module")),
            bytes,
            args: ctx.args().to_vec(),
            env: parse_env(ctx.envs()),
        };
        // Weft's runtime is synchronous and wasmtime-wasi's sync API blocks
        // on its own tokio runtime, which must not nest inside the shim's:
        // run the module on a plain thread.
        std::thread::Builder::new()
            .name("weft-module".into())
            .spawn(move || job.run())
            .context("starting the module thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the module thread panicked"))?
    }
}

/// Everything a container run needs, owned, so it can move to a thread.
struct Job {
    name: String,
    bytes: Vec<u8>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Job {
    fn run(self) -> anyhow::Result<i32> {
        let preloads = preloads_from(Path::new("/"))?;
        let runtime = Runtime::new(RuntimeConfig {
            // The container's root filesystem is not ours to write.
            cache_dir: None,
            ..Default::default()
        })?;
        let models = Models::load(&preloads, runtime.nn_options()).context("preloading models")?;
        let program = match runtime.load(&self.name, &self.bytes) {
            Ok(p) => p,
            Err(
                weft_runtime::RuntimeError::NoStart { .. }
                | weft_runtime::RuntimeError::NotCommand { .. },
            ) => {
                let service = runtime.load_service(&self.name, &self.bytes)?;
                return serve(runtime, service, models, self.env);
            }
            Err(e) => return Err(e.into()),
        };
        let max_memory = cgroup_memory_limit(Path::new("/sys/fs/cgroup"))
            .unwrap_or(weft_runtime::DEFAULT_MAX_MEMORY);
        let opts = RunOptions {
            args: self.args.iter().skip(1).cloned().collect(),
            program_name: self.args.first().cloned(),
            env: self.env,
            dirs: vec![DirGrant {
                host: "/".into(),
                guest: "/".into(),
                read_only: false,
            }],
            limits: Limits {
                max_memory,
                // A container runs until it exits or is killed.
                timeout: None,
                fuel: None,
            },
            models: Arc::new(models),
            stdout: None,
        };
        match runtime.run(&program, opts) {
            Ok(code) => Ok(code),
            Err(e) => {
                // stderr is the container log: say why, exit like `weft run`.
                eprintln!("weft: {e}");
                Ok(e.exit_code())
            }
        }
    }
}

/// A port from the environment, or the default.
fn port(env: &[(String, String)], key: &str, default: u16) -> anyhow::Result<u16> {
    match env.iter().find(|(k, _)| k == key) {
        Some((_, v)) => v
            .parse()
            .with_context(|| format!("{key}={v:?} is not a port number")),
        None => Ok(default),
    }
}

/// Serve a serving module over the Open Inference Protocol until SIGTERM.
fn serve(
    runtime: Runtime,
    program: weft_runtime::Program,
    models: Models,
    env: Vec<(String, String)>,
) -> anyhow::Result<i32> {
    use weft_serve::{Interface, ModelSpec, PoolConfig, Server};
    let rest_port = port(&env, "WEFT_PORT", 8000)?;
    let grpc_port = port(&env, "WEFT_GRPC_PORT", 8001)?;
    let name = env
        .iter()
        .find(|(k, _)| k == "WEFT_MODEL_NAME")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| program.name().trim_end_matches(".wasm").to_owned());
    let interface = models
        .model("model")
        .or_else(|| match models.names().as_slice() {
            [only] => models.model(only),
            _ => None,
        })
        .map(|m| Interface::of_model(m))
        .unwrap_or_default();
    let instances = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_memory = cgroup_memory_limit(Path::new("/sys/fs/cgroup"))
        .map(|limit| limit / instances.max(1))
        .unwrap_or(weft_runtime::DEFAULT_MAX_MEMORY);
    let spec = ModelSpec {
        name,
        version: "1".into(),
        platform: "weft-wasm".into(),
        program: Arc::new(program),
        options: RunOptions {
            env,
            dirs: vec![DirGrant {
                host: "/".into(),
                guest: "/".into(),
                read_only: true,
            }],
            limits: Limits {
                max_memory,
                timeout: Some(std::time::Duration::from_secs(120)),
                fuel: None,
            },
            models: Arc::new(models),
            ..Default::default()
        },
        interface,
        backend: "cpu",
        pool: PoolConfig {
            instances,
            queue: 64,
            deadline: std::time::Duration::from_secs(30),
        },
    };
    let server = Arc::new(Server::new(
        Arc::new(runtime),
        vec![spec],
        Default::default(),
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let rest = tokio::net::TcpListener::bind(("0.0.0.0", rest_port)).await?;
        let grpc = tokio::net::TcpListener::bind(("0.0.0.0", grpc_port)).await?;
        eprintln!(
            "weft: serving {} on :{rest_port} (REST) and :{grpc_port} (gRPC)",
            server.model_names().collect::<Vec<_>>().join(", ")
        );
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        weft_serve::serve(server, rest, Some(grpc), term).await?;
        anyhow::Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preloads_come_from_weft_json() {
        let dir = tempfile::tempdir().unwrap();
        assert!(preloads_from(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join("weft.json"),
            r#"{"created":"x","weft":{"version":1,"module":"m.wasm","models":[
                {"name":"det","path":"models/det.onnx","encoding":"onnx","target":"cpu","digest":"sha256:00"}]}}"#,
        )
        .unwrap();
        let p = preloads_from(dir.path()).unwrap();
        assert_eq!(p.len(), 1);
        let shown = format!("{:?}", p[0]);
        assert!(
            shown.contains("det") && shown.contains("models/det.onnx"),
            "{shown}"
        );
        std::fs::write(dir.path().join("weft.json"), "{").unwrap();
        let e = format!("{:#}", preloads_from(dir.path()).unwrap_err());
        assert!(e.contains("not a Weft artifact config"), "{e}");
    }

    #[test]
    fn memory_limit_from_cgroup_v2_and_v1() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "268435456\n").unwrap();
        assert_eq!(cgroup_memory_limit(dir.path()), Some(256 << 20));
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_memory_limit(v1.path()), None);
    }

    #[test]
    fn env_pairs_split_at_the_first_equals() {
        assert_eq!(
            parse_env(&["A=1".into(), "B=x=y".into(), "junk".into()]),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }
}
