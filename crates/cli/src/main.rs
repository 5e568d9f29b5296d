//! `weft`: run WebAssembly model modules with wasi-nn.

/// `println!` for command output: a closed pipe (`weft images | head`) ends
/// the program quietly with success, as ripgrep does, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("weft: writing output: {e}");
            std::process::exit(1);
        }
    }};
}

mod agent;
mod build;
mod copy;
mod images;
mod info;
mod login;
mod parse;
mod remote;
mod run;
mod serve;
mod store;
mod train;

use clap::{Parser, Subcommand};

/// Weft runs machine-learning model modules: WebAssembly programs that call
/// the standard wasi-nn API, in a hard sandbox, with native-speed inference.
#[derive(Parser)]
#[command(name = "weft", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Serve(serve::ServeArgs),
    Train(train::TrainArgs),
    Build(build::BuildArgs),
    Images(images::ImagesArgs),
    Inspect(images::InspectArgs),
    Rm(images::RmArgs),
    Gc(images::GcArgs),
    Push(remote::PushArgs),
    Pull(remote::PullArgs),
    Copy(copy::CopyArgs),
    Login(login::LoginArgs),
    Logout(login::LogoutArgs),
    Agent(agent::AgentArgs),
    Info(info::InfoArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.command {
        Command::Run(args) => run::exec(args),
        Command::Serve(args) => serve::exec(args),
        Command::Train(args) => train::exec(args),
        Command::Build(args) => build::exec(args),
        Command::Images(args) => images::images(args),
        Command::Inspect(args) => images::inspect(args),
        Command::Rm(args) => images::rm(args),
        Command::Gc(args) => images::gc(args),
        Command::Push(args) => remote::push(args),
        Command::Pull(args) => remote::pull(args),
        Command::Copy(args) => copy::exec(args),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Agent(args) => agent::exec(args),
        Command::Info(args) => info::exec(args),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("weft: {err:#}");
            if let Some(hint) = hint(&err) {
                eprintln!("weft: hint: {hint}");
            }
            let code = err
                .downcast_ref::<weft_runtime::RuntimeError>()
                .map(weft_runtime::RuntimeError::exit_code)
                .unwrap_or(1);
            std::process::exit(code);
        }
    }
}

/// Which of this program's flags changes what an error from a library ran
/// into (libraries say what went wrong, not how a command line sets it).
fn hint(err: &anyhow::Error) -> Option<&'static str> {
    use weft_nn::NnError;
    use weft_nn::gpu::GpuError;
    use weft_runtime::RuntimeError;
    fn nn(e: &NnError) -> Option<&'static str> {
        match e {
            NnError::TargetUnavailable { .. } => Some(
                "--nn-gpu-fallback (WEFT_NN_GPU_FALLBACK) runs target gpu on the CPU when no GPU opens",
            ),
            NnError::Gpu(g) => gpu(g),
            NnError::Preloaded { error, .. } => nn(error),
            NnError::Onnxruntime(
                weft_nn::ort::OrtError::NotFound { .. }
                | weft_nn::ort::OrtError::Load { .. }
                | weft_nn::ort::OrtError::TooOld { .. },
            ) => Some(
                "--cpu-engine tract (WEFT_CPU_ENGINE) runs ONNX graphs on the engine built into weft",
            ),
            _ => None,
        }
    }
    fn gpu(e: &GpuError) -> Option<&'static str> {
        match e {
            GpuError::AdapterNotFound { .. } => Some(
                "choose the adapter with --nn-gpu-adapter (WEFT_GPU_ADAPTER); `weft info` lists them",
            ),
            GpuError::Budget { .. } => {
                Some("raise the budget with --nn-gpu-memory (WEFT_GPU_MEMORY)")
            }
            _ => None,
        }
    }
    // Transparent wrappers forward `source()`, so each layer is looked into
    // here rather than found in the chain.
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<RuntimeError>() {
            return match e {
                RuntimeError::Timeout { .. } => Some("raise the deadline with --timeout"),
                RuntimeError::OutOfFuel { .. } => Some("raise the fuel with --fuel"),
                RuntimeError::MemoryLimit { .. } => Some("raise the limit with --max-memory"),
                RuntimeError::Nn(e) => nn(e),
                _ => None,
            };
        }
        if let Some(e) = cause.downcast_ref::<NnError>() {
            return nn(e);
        }
        cause.downcast_ref::<GpuError>().and_then(gpu)
    })
}
