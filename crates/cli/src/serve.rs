//! `weft serve`: serve model modules over the Open Inference Protocol.

use crate::parse;
use crate::remote::RemoteArgs;
use crate::run::{Resolved, is_file, resolve_module};
use crate::store::StoreArgs;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_nn::Preload;
use weft_runtime::{DirGrant, Runtime};
use weft_serve::{ModelSpec, PoolConfig, Server};

/// The generic serving module bundled into `weft serve` (a wasm32-wasip2
/// component built from `modules/predictor` by this crate's build script):
/// it runs the model preloaded as `model` on each request's tensors.
pub const PREDICTOR_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/predictor.wasm"));

/// Serve model modules over the Open Inference Protocol (KServe V2): REST
/// with Triton's binary tensor extension, and gRPC.
#[derive(Args)]
#[command(
    after_help = "Each MODEL is [NAME=]SOURCE, where SOURCE is:\n  a model file         .onnx, .tflite or a frozen TensorFlow .pb, served by the\n                       bundled generic predictor module\n  a serving module     a .wasm file (weft_serve_guest::serve!), with --nn-preload\n  a reference          a model module artifact in the store or a registry\n\nExamples:\n  weft serve tests/data/mlp_dynamic_batch.onnx\n  weft serve mlp=model.onnx ocr=registry.example/ocr:1.0 --bind 0.0.0.0:8000\n  curl -s localhost:8000/v2/models/mlp"
)]
pub struct ServeArgs {
    /// Models to serve: [NAME=]SOURCE (see below).
    #[arg(value_name = "MODEL", required = true)]
    pub models: Vec<String>,

    /// Preload a model for the serving modules given as .wasm files
    /// (WasmEdge syntax); the bundled predictor runs the one named `model`.
    #[arg(long = "nn-preload", value_name = "NAME:ENCODING:TARGET:PATH")]
    pub nn_preload: Vec<String>,

    /// REST address. Loopback by default; use 0.0.0.0:8000 to serve others.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8000",
        env = "WEFT_BIND"
    )]
    pub bind: SocketAddr,

    /// gRPC address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8001",
        env = "WEFT_GRPC_BIND"
    )]
    pub grpc_bind: SocketAddr,

    /// Serve REST only.
    #[arg(long)]
    pub no_grpc: bool,

    /// Module instances per model: requests that run at once [default: the
    /// number of CPU cores].
    #[arg(long, value_name = "N")]
    pub instances: Option<usize>,

    /// Requests per model that may wait for a free instance; beyond that
    /// the server answers 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,

    /// Longest one request may take, queueing included; a module past it
    /// is stopped and the request fails with 500.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse::timeout)]
    pub deadline: Duration,

    /// Cap on what each module instance holds: its linear memory and the
    /// tensors and graphs wasi-nn keeps for it.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse::size)]
    pub max_memory: usize,

    /// Largest request body (REST) or message (gRPC).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse::size)]
    pub max_body: usize,

    /// Grant a directory to the modules (HOST::GUEST[:ro]).
    #[arg(long, value_name = "HOST::GUEST", value_parser = parse::dir)]
    pub dir: Vec<DirGrant>,

    /// Set an environment variable in the modules (KEY=VALUE).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::env)]
    pub env: Vec<(String, String)>,

    /// Compiled-module cache directory [default: ~/.cache/weft/modules].
    #[arg(long, value_name = "DIR", env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not cache compiled modules.
    #[arg(long)]
    pub no_cache: bool,

    /// Where `.onnx` models given directly run: auto (the GPU when a
    /// hardware adapter is usable, else the CPU), cpu or gpu.
    #[arg(long, value_name = "TARGET", default_value = "auto")]
    pub nn_target: String,

    #[command(flatten)]
    pub gpu: crate::run::GpuArgs,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `[NAME=]SOURCE`; a `=` only counts when what precedes it is a plain name.
fn split_model(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, source))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            (Some(name), source)
        }
        _ => (None, arg),
    }
}

fn stem(source: &str) -> String {
    let base = source.rsplit(['/', '\\']).next().unwrap_or(source);
    let base = base.split(['@']).next().unwrap_or(base);
    let base = base.split(':').next().unwrap_or(base);
    base.trim_end_matches(".onnx")
        .trim_end_matches(".tflite")
        .trim_end_matches(".pb")
        .trim_end_matches(".wasm")
        .to_owned()
}

pub fn exec(a: ServeArgs) -> anyhow::Result<i32> {
    a.gpu.apply();
    let config = crate::run::runtime_config(
        a.gpu.nn_gpu_fallback,
        a.no_cache,
        a.cache_dir.clone(),
        false,
    );
    let runtime = Arc::new(Runtime::new(config)?);
    let extra_preloads = a
        .nn_preload
        .iter()
        .map(|s| s.parse::<Preload>())
        .collect::<Result<Vec<_>, _>>()?;
    let instances = a.instances.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pool = PoolConfig {
        instances,
        queue: a.queue,
        deadline: a.deadline,
    };
    let mut specs = Vec::new();
    for arg in &a.models {
        let (name, source) = split_model(arg);
        let name = name.map_or_else(|| stem(source), str::to_owned);
        if specs.iter().any(|s: &ModelSpec| s.name == name) {
            anyhow::bail!("two models are named '{name}'; name them: NAME=SOURCE");
        }
        let spec = model_spec(&a, &runtime, &extra_preloads, pool, name, source)
            .with_context(|| format!("serving {arg}"))?;
        specs.push(spec);
    }
    let server = Arc::new(Server::new(
        runtime,
        specs,
        weft_serve::Limits {
            max_body: a.max_body,
        },
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let rest = tokio::net::TcpListener::bind(a.bind)
            .await
            .with_context(|| format!("binding REST to {}", a.bind))?;
        let grpc = if a.no_grpc {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(a.grpc_bind)
                    .await
                    .with_context(|| format!("binding gRPC to {}", a.grpc_bind))?,
            )
        };
        let models = server.model_names();
        eprintln!(
            "weft: serving {} on http://{} (REST){}",
            models.join(", "),
            rest.local_addr()?,
            match &grpc {
                Some(g) => format!(" and {} (gRPC)", g.local_addr()?),
                None => String::new(),
            }
        );
        weft_serve::serve(server, rest, grpc, shutdown_signal()).await?;
        eprintln!("weft: stopped");
        anyhow::Ok(0)
    })
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn model_spec(
    a: &ServeArgs,
    runtime: &Runtime,
    extra_preloads: &[Preload],
    pool: PoolConfig,
    name: String,
    source: &str,
) -> anyhow::Result<ModelSpec> {
    let (resolved, platform) = if let Some(encoding) = model_file_encoding(source) {
        let preload: Preload = format!("model:{encoding}:{}:{source}", a.nn_target).parse()?;
        (
            Resolved {
                preloads: vec![preload],
                ..Resolved::module("predictor.wasm", PREDICTOR_WASM.to_vec())
            },
            encoding,
        )
    } else {
        let mut r = resolve_module(source, &a.store, &a.remote, false)?;
        if is_file(source) {
            r.preloads.extend(extra_preloads.iter().cloned());
        }
        (r, "wasm")
    };
    Ok(weft_module::model_spec(
        runtime,
        resolved,
        weft_module::ServeSettings {
            name,
            platform: format!("weft-{platform}"),
            env: a.env.clone(),
            dirs: a.dir.clone(),
            max_memory: a.max_memory,
            startup: Duration::from_secs(120),
            pool,
        },
    )?)
}

/// The wasi-nn encoding of a model file given directly: by its extension
/// (`.onnx`, `.tflite`, `.pb`), else by its first bytes (an ONNX protobuf's
/// `ir_version` field, a TFLite flatbuffer's `TFL3`); `None` for anything
/// else (a module, a reference).
fn model_file_encoding(source: &str) -> Option<&'static str> {
    use std::io::Read;
    for (ext, encoding) in [
        (".onnx", "onnx"),
        (".tflite", "tensorflowlite"),
        (".pb", "tensorflow"),
    ] {
        if source.ends_with(ext) {
            return Some(encoding);
        }
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(Path::new(source))
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    match &head[..n] {
        [0x08, ..] => Some("onnx"),
        [_, _, _, _, b'T', b'F', b'L', b'3'] => Some("tensorflowlite"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_argument_or_the_source() {
        assert_eq!(split_model("mlp=a/b.onnx"), (Some("mlp"), "a/b.onnx"));
        assert_eq!(split_model("a/b=c.onnx"), (None, "a/b=c.onnx"));
        assert_eq!(stem("tests/data/tiny.onnx"), "tiny");
        assert_eq!(stem("127.0.0.1:5000/ocr:1.0"), "ocr");
        assert_eq!(stem("ocr@sha256:abc"), "ocr");
    }
}
