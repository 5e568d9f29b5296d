//! Inside the container: run or serve the planned module.
//!
//! The module sees the container's root as `/` (read-write when it runs,
//! read-only when it serves), the container's environment, and a memory
//! cap from the container's limit. stderr is the container's log: every
//! failure ends there as one `weft: ...` line, with `weft run`'s exit codes
//! (1 load errors, 124 deadline, 134 trap or limit).

use crate::plan::{ServerPlan, WasmPlan};
use std::sync::Arc;
use weft_nn::Preload;
use weft_runtime::{
    Code, DirGrant, Launch, Limits, Prepared, Purpose, Resolved, Runtime, RuntimeConfig,
};

/// Run the plan to an exit code.
pub fn run(plan: &WasmPlan) -> i32 {
    // wasmtime-wasi's sync API blocks on a tokio runtime of its own, which
    // must not nest inside another: run on a plain thread.
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("weft-module".into())
            .spawn_scoped(scope, || execute(plan))
            .map(|t| t.join())
    });
    match outcome {
        Ok(Ok(Ok(code))) => code,
        Ok(Ok(Err(e))) => {
            eprintln!("weft: {e:#}");
            1
        }
        Ok(Err(_)) => {
            eprintln!("weft: the module thread panicked");
            134
        }
        Err(e) => {
            eprintln!("weft: starting the module thread: {e}");
            1
        }
    }
}

/// The container's root as the module's `/`.
fn root_grant(read_only: bool) -> Vec<DirGrant> {
    vec![DirGrant {
        host: "/".into(),
        guest: "/".into(),
        read_only,
    }]
}

fn execute(plan: &WasmPlan) -> anyhow::Result<i32> {
    let runtime = Runtime::new(RuntimeConfig {
        // The shim's process cached the compiled code on the node already.
        cache_dir: None,
        ..Default::default()
    })?;
    let purpose = if plan.serve {
        Purpose::Serve
    } else {
        Purpose::Run
    };
    // SAFETY: `plan.code` is what `Program::serialize` of this same binary
    // produced in the shim's process, handed over through the zygote's
    // pipe; it never touched a place the container can write.
    let program =
        unsafe { runtime.load_serialized(&plan.name, &plan.digest, &plan.code, purpose) }?;
    let resolved = Resolved {
        name: plan.name.clone(),
        code: Code::Linked(program),
        preloads: plan
            .preloads
            .iter()
            .map(|p| p.parse::<Preload>())
            .collect::<Result<_, _>>()?,
        dirs: Vec::new(),
        args: Vec::new(),
        version: plan.server.as_ref().map(|s| s.version.clone()),
        digest: None,
    };
    let max_memory = usize::try_from(plan.max_memory).unwrap_or(usize::MAX);
    let launch = Launch {
        args: plan.args.clone(),
        program_name: Some(plan.argv0.clone()),
        env: plan.env.clone(),
        // The container's root as the module's `/`: read-write when it
        // runs, read-only when it serves.
        dirs: root_grant(plan.server.is_some()),
        limits: Limits {
            max_memory,
            // A container runs until it exits or is killed; a serving
            // module's start-up is bounded (each request has its deadline).
            timeout: plan
                .server
                .as_ref()
                .map(|_| std::time::Duration::from_secs(120)),
            fuel: None,
        },
        stdout: None,
        preloads: Vec::new(),
    };
    let prepared = match runtime.prepare(resolved, purpose, launch) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weft: {}", crate::error::chain(&e));
            return Ok(e.exit_code());
        }
    };
    if let Some(server) = &plan.server {
        return serve(runtime, prepared, server);
    }
    match prepared.run(&runtime) {
        Ok(code) => Ok(code),
        Err(weft_runtime::RuntimeError::MemoryLimit { limit, requested }) => {
            // The CLI's advice (--max-memory) means nothing in a pod.
            eprintln!(
                "weft: module tried to grow its memory to {requested} bytes, past its limit of {limit} bytes (the container's memory limit less its models and Weft's reserve); raise resources.limits.memory"
            );
            Ok(134)
        }
        Err(e) => {
            eprintln!("weft: {}", crate::error::chain(&e));
            Ok(e.exit_code())
        }
    }
}

/// Serve over the Open Inference Protocol on all of the container's
/// addresses until SIGTERM, then drain.
fn serve(runtime: Runtime, prepared: Prepared, server: &ServerPlan) -> anyhow::Result<i32> {
    use weft_serve::{ModelSpec, PoolConfig, Server};
    let spec = ModelSpec::new(
        server.model_name.clone(),
        "weft-wasm",
        prepared,
        PoolConfig {
            instances: server.instances,
            queue: server.queue,
            deadline: server.deadline,
        },
    );
    let server_state = Arc::new(Server::new(
        Arc::new(runtime),
        vec![spec],
        Default::default(),
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server.instances.clamp(1, 4))
        .enable_all()
        .build()?;
    let (rest_port, grpc_port) = (server.rest_port, server.grpc_port);
    rt.block_on(async move {
        let rest = tokio::net::TcpListener::bind(("0.0.0.0", rest_port)).await?;
        let grpc = tokio::net::TcpListener::bind(("0.0.0.0", grpc_port)).await?;
        eprintln!(
            "weft: serving {} (version {}) on :{rest_port} (REST) and :{grpc_port} (gRPC), {} instance(s)",
            server_state.model_names().join(", "),
            server.version,
            server.instances,
        );
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        weft_serve::serve(server_state, rest, Some(grpc), term).await?;
        eprintln!("weft: drained; exiting");
        anyhow::Ok(0)
    })
}
