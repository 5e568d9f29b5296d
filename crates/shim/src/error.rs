//! Why a container cannot run. Each message names what is wrong and how to
//! fix it: containerd passes it on, and `kubectl describe pod` shows it.

use std::path::PathBuf;
use weft_runtime::RuntimeError;

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("the OCI spec has no process to run")]
    NoProcess,
    #[error(
        "the container has no entrypoint and its image no Weft module: build the image with `weft build` (or `--classic`), or set the container's command to a .wasm file in the image"
    )]
    NoEntrypoint,
    #[error("the container's entrypoint {entry} is not in the image")]
    EntrypointMissing { entry: String },
    #[error(
        "{entry} is a Linux program, not a Weft model module: the weft runtime class runs WebAssembly modules (build one with `weft build`); to run a Linux sidecar in a weft pod, annotate the pod {key}: \"true\"",
        key = crate::plan::ALLOW_LINUX
    )]
    LinuxImage { entry: String },
    #[error(
        "the container's entrypoint {entry} is not a WebAssembly module (no \\0asm header) and not a Linux program"
    )]
    NotWasm { entry: String },
    #[error("{path} is not valid WebAssembly text: {message}")]
    Wat { path: String, message: String },
    #[error("module {entry} cannot run")]
    Module {
        entry: String,
        #[source]
        source: RuntimeError,
    },
    #[error("module {entry} is neither a command (it exports no `_start`) nor a serving module")]
    NeitherCommandNorService {
        entry: String,
        #[source]
        source: RuntimeError,
    },
    #[error("/weft.json is not a Weft artifact config: {message}")]
    Config { message: String },
    #[error("model '{model}' has the path {path:?}, which {reason}")]
    ModelPath {
        model: String,
        path: String,
        reason: &'static str,
    },
    #[error(
        "model '{model}' ({path}) is listed in the image's Weft config but missing from the image: rebuild it with `weft build`"
    )]
    MissingModel { model: String, path: String },
    #[error(
        "model '{model}' has the layer {digest}, which the image's manifest does not list: the artifact is incomplete; push it again with `weft push`"
    )]
    MissingLayer { model: String, digest: String },
    #[error("model '{model}': {message}")]
    Preload { model: String, message: String },
    #[error("{key}={value:?} is not {expected}")]
    Env {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("unsupported option {option}: {why}")]
    Unsupported {
        option: &'static str,
        why: &'static str,
    },
    #[error(
        "the container's memory limit ({} MiB) is too small: its models take {} MiB, Weft keeps {} MiB and each of {instances} instance(s) needs at least {} MiB; raise resources.limits.memory to at least {} MiB (or lower WEFT_INSTANCES)",
        limit / MIB, models.div_ceil(MIB), crate::plan::RESERVE / MIB, crate::plan::MIN_MODULE_MEMORY / MIB, needed.div_ceil(MIB)
    )]
    MemoryTooSmall {
        limit: u64,
        models: u64,
        instances: u64,
        needed: u64,
    },
    #[error("cannot open the container's root filesystem {path}: {message}")]
    Rootfs { path: PathBuf, message: String },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} in the image is not a regular file (a FIFO, device, socket or directory); the image must hold a file there"
    )]
    NotAFile { path: String },
    #[error("{path} in the image is over {limit} bytes; the shim refuses to read it")]
    FileTooLarge { path: String, limit: u64 },
    #[error("reading the image from containerd: {message}")]
    Image { message: String },
}

/// The error and its causes on one line, as containerd shows it.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}
