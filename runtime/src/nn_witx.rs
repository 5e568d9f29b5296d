//! wasi-nn for `wasm32-wasip1` core modules: the witx `wasi_ephemeral_nn` ABI.
//!
//! We own this glue rather than use `wasmtime_wasi_nn::witx`, whose wiggle
//! bindings panic the host when a guest passes an out-of-bounds pointer
//! (`unimplemented!("guest error conversion")`), never free graphs or
//! contexts, and panic on shared memories. Here every pointer is bounds
//! checked, every failure is an errno, backend panics are caught, and handles
//! are counted so a guest cannot grow host memory without limit.
//!
//! The ABI is the one the `wasi-nn` 0.6 crate, WasmEdge and the wasmtime
//! examples use, plus WasmEdge's `load_by_name_with_config`, `unload` and
//! `finalize_execution_context`, so guests can free what they load.

use crate::budget::Budget;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use wasmtime::{Caller, Extern, Linker};
use weft_nn::{
    Backend, ErrorKind, ExecutionTarget, Graph, GraphEncoding, Id, Models, NnError, Tensor,
    TensorType, kind_of,
};

const MODULE: &str = "wasi_ephemeral_nn";

/// Live graphs one instance may hold at once.
pub const MAX_GRAPHS: usize = 256;
/// Live execution contexts one instance may hold at once.
pub const MAX_CONTEXTS: usize = 1024;
/// Most model buffers a `load` may pass.
const MAX_BUILDERS: u32 = 64;
/// Most dimensions a tensor may have.
const MAX_RANK: u32 = 32;
/// Most outputs one context may feed back as inputs.
const MAX_BINDINGS: usize = 4096;

/// The witx `nn_errno` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    Success = 0,
    InvalidArgument = 1,
    InvalidEncoding = 2,
    MissingMemory = 3,
    Busy = 4,
    RuntimeError = 5,
    UnsupportedOperation = 6,
    TooLarge = 7,
    NotFound = 8,
}

impl From<ErrorKind> for Errno {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => Errno::InvalidArgument,
            ErrorKind::InvalidEncoding => Errno::InvalidEncoding,
            ErrorKind::NotFound => Errno::NotFound,
            ErrorKind::Unsupported => Errno::UnsupportedOperation,
            ErrorKind::TooLarge => Errno::TooLarge,
            _ => Errno::RuntimeError,
        }
    }
}

/// A failed call: the code the guest gets and the reason the host logs.
struct Fail(Errno, String);

type Res<T> = Result<T, Fail>;

fn fail<T>(errno: Errno, why: impl Into<String>) -> Res<T> {
    Err(Fail(errno, why.into()))
}

impl From<NnError> for Fail {
    fn from(e: NnError) -> Self {
        Fail(e.kind().into(), e.to_string())
    }
}

impl From<wasmtime_wasi_nn::backend::BackendError> for Fail {
    fn from(e: wasmtime_wasi_nn::backend::BackendError) -> Self {
        let errno = kind_of(&e).into();
        let msg = match &e {
            wasmtime_wasi_nn::backend::BackendError::BackendAccess(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        Fail(errno, msg)
    }
}

/// Handles with monotonically increasing ids: a stale handle never aliases a
/// newer object.
struct Handles<V> {
    live: HashMap<u32, V>,
    next: u32,
    max: usize,
}

impl<V> Handles<V> {
    fn new(max: usize) -> Self {
        Self {
            live: HashMap::new(),
            next: 0,
            max,
        }
    }

    fn insert(&mut self, what: &str, v: V) -> Res<u32> {
        if self.live.len() >= self.max {
            return fail(
                Errno::TooLarge,
                format!(
                    "too many live {what}s ({}); free some with unload/finalize_execution_context",
                    self.max
                ),
            );
        }
        let id = self.next;
        self.next = self
            .next
            .checked_add(1)
            .ok_or_else(|| Fail(Errno::TooLarge, format!("{what} handles exhausted")))?;
        self.live.insert(id, v);
        Ok(id)
    }
}

/// A graph handle and the model bytes it was loaded from (charged to the
/// budget; 0 for a preloaded model, which the host holds anyway).
struct HeldGraph {
    graph: Graph,
    bytes: usize,
}

/// A context and the input bytes it holds, by input index.
struct HeldContext {
    ctx: wasmtime_wasi_nn::ExecutionContext,
    inputs: HashMap<u32, usize>,
    /// `(output, input)` pairs fed back after each compute.
    bound: Vec<(u32, u32)>,
}

impl HeldContext {
    fn bytes(&self) -> usize {
        self.inputs.values().sum()
    }
}

/// Per-instance wasi-nn state. Everything is freed when the store drops.
pub struct NnState {
    backends: HashMap<GraphEncoding, Backend>,
    models: Models,
    graphs: Handles<HeldGraph>,
    contexts: Handles<HeldContext>,
    budget: Arc<Budget>,
}

impl NnState {
    /// State whose tensors and graphs draw on `budget` (shared with the
    /// store's memory limiter).
    pub fn new(backends: Vec<Backend>, models: Models, budget: Arc<Budget>) -> Self {
        Self {
            backends: backends.into_iter().map(|b| (b.encoding(), b)).collect(),
            models,
            graphs: Handles::new(MAX_GRAPHS),
            contexts: Handles::new(MAX_CONTEXTS),
            budget,
        }
    }

    /// Live (graphs, contexts), for tests and metrics.
    pub fn live(&self) -> (usize, usize) {
        (self.graphs.live.len(), self.contexts.live.len())
    }

    fn charge(&self, what: &'static str, bytes: usize) -> Res<()> {
        self.budget
            .charge_nn(what, bytes)
            .map_err(|e| Fail(Errno::TooLarge, e.to_string()))
    }
}

fn bytes(mem: &[u8], ptr: u32, len: u32) -> Res<&[u8]> {
    let start = ptr as usize;
    start
        .checked_add(len as usize)
        .and_then(|end| mem.get(start..end))
        .ok_or_else(|| {
            Fail(
                Errno::InvalidArgument,
                format!("guest buffer {ptr:#x}+{len} is outside its memory"),
            )
        })
}

fn read_u32(mem: &[u8], ptr: u32) -> Res<u32> {
    let b = bytes(mem, ptr, 4)?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn write_u32(mem: &mut [u8], ptr: u32, v: u32) -> Res<()> {
    let start = ptr as usize;
    let slot = start
        .checked_add(4)
        .and_then(|end| mem.get_mut(start..end))
        .ok_or_else(|| {
            Fail(
                Errno::InvalidArgument,
                format!("result pointer {ptr:#x} is outside guest memory"),
            )
        })?;
    slot.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn encoding(v: i32) -> Res<GraphEncoding> {
    Ok(match v {
        0 => GraphEncoding::Openvino,
        1 => GraphEncoding::Onnx,
        2 => GraphEncoding::Tensorflow,
        3 => GraphEncoding::Pytorch,
        4 => GraphEncoding::Tensorflowlite,
        5 => GraphEncoding::Autodetect,
        _ => {
            return fail(
                Errno::InvalidEncoding,
                format!("unknown graph encoding {v}"),
            );
        }
    })
}

fn target(v: i32) -> Res<ExecutionTarget> {
    Ok(match v {
        0 => ExecutionTarget::Cpu,
        1 => ExecutionTarget::Gpu,
        2 => ExecutionTarget::Tpu,
        _ => {
            return fail(
                Errno::InvalidArgument,
                format!("unknown execution target {v}"),
            );
        }
    })
}

fn tensor_type(v: u8) -> Res<TensorType> {
    Ok(match v {
        0 => TensorType::Fp16,
        1 => TensorType::Fp32,
        2 => TensorType::Fp64,
        3 => TensorType::U8,
        4 => TensorType::I32,
        5 => TensorType::I64,
        _ => return fail(Errno::InvalidArgument, format!("unknown tensor type {v}")),
    })
}

fn tensor_type_code(ty: TensorType) -> Res<u32> {
    Ok(match ty {
        TensorType::Fp16 => 0,
        TensorType::Fp32 => 1,
        TensorType::Fp64 => 2,
        TensorType::U8 => 3,
        TensorType::I32 => 4,
        TensorType::I64 => 5,
        other => {
            return fail(
                Errno::UnsupportedOperation,
                format!("output type {other:?} has no wasip1 code"),
            );
        }
    })
}

/// Run backend code, turning a panic into a runtime error so a backend bug
/// triggered by guest input never takes the host down.
fn guarded<T>(what: &str, f: impl FnOnce() -> Res<T>) -> Res<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        fail(
            Errno::RuntimeError,
            format!("the backend panicked during {what}"),
        )
    })
}

/// Split the caller into guest memory and our state, or fail cleanly.
fn split<'a, T: 'static>(
    caller: &'a mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
) -> Res<(&'a mut [u8], &'a mut NnState)> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => {
            let (mem, data) = memory.data_and_store_mut(caller);
            Ok((mem, get(data)))
        }
        Some(Extern::SharedMemory(_)) => fail(
            Errno::UnsupportedOperation,
            "wasi-nn does not support modules with a shared memory",
        ),
        _ => fail(
            Errno::MissingMemory,
            "module exports no memory named `memory`",
        ),
    }
}

fn finish(func: &str, r: Res<()>) -> i32 {
    match r {
        Ok(()) => Errno::Success as i32,
        // wasip1 guests cannot ask an output's size, so probing with a
        // growing buffer is normal use, not a fault worth a warning.
        Err(Fail(Errno::TooLarge, why)) if func == "get_output" => {
            tracing::debug!(target: "wasi_nn", "{func}: {why} (returning TooLarge)");
            Errno::TooLarge as i32
        }
        // Nor can they ask how many outputs there are: asking for one more
        // until this answers is how the SDK finds out.
        Err(Fail(Errno::InvalidArgument, why)) if func == "weft_get_output_info" => {
            tracing::debug!(target: "wasi_nn", "{func}: {why} (returning InvalidArgument)");
            Errno::InvalidArgument as i32
        }
        Err(Fail(errno, why)) => {
            tracing::warn!(target: "wasi_nn", "{func}: {why} (returning {errno:?})");
            errno as i32
        }
    }
}

fn load<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (builders, count, enc, tgt, out): (u32, u32, i32, i32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    let enc = encoding(enc)?;
    let tgt = target(tgt)?;
    if count > MAX_BUILDERS {
        return fail(
            Errno::InvalidArgument,
            format!("{count} model buffers passed; at most {MAX_BUILDERS}"),
        );
    }
    let table = bytes(mem, builders, count * 8)?;
    let mut parts = Vec::with_capacity(count as usize);
    for pair in table.chunks_exact(8) {
        let ptr = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
        parts.push(bytes(mem, ptr, len)?);
    }
    if !st.backends.contains_key(&enc) {
        return fail(
            Errno::InvalidEncoding,
            format!("no backend for encoding {enc}; this node supports onnx and autodetect"),
        );
    }
    // The model bytes are held (parsed) for as long as the graph lives.
    let held: usize = parts.iter().map(|p| p.len()).sum();
    st.charge("loading a graph", held)?;
    let backend = st.backends.get_mut(&enc).expect("checked above");
    let loaded = guarded("load", || Ok(backend.load(&parts, tgt)?))
        // Check the result slot before publishing the handle.
        .and_then(|graph| read_u32(mem, out).map(|_| graph))
        .and_then(|graph| st.graphs.insert("graph", HeldGraph { graph, bytes: held }));
    match loaded {
        Ok(id) => write_u32(mem, out, id),
        Err(e) => {
            st.budget.refund_nn(held);
            Err(e)
        }
    }
}

fn load_by_name<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (name_ptr, name_len, out): (u32, u32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    let name = std::str::from_utf8(bytes(mem, name_ptr, name_len)?)
        .map_err(|_| Fail(Errno::InvalidArgument, "model name is not UTF-8".into()))?;
    let graph = st.models.graph(name).cloned().ok_or_else(|| {
        let known = st.models.names();
        Fail(
            Errno::NotFound,
            if known.is_empty() {
                format!("no model named `{name}` was preloaded; the host preloads none")
            } else {
                format!(
                    "no model named `{name}` was preloaded; preloaded: {}",
                    known.join(", ")
                )
            },
        )
    })?;
    read_u32(mem, out)?;
    let id = st.graphs.insert("graph", HeldGraph { graph, bytes: 0 })?;
    write_u32(mem, out, id)
}

fn init_execution_context<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (graph, out): (u32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    let graph = st.graphs.live.get(&graph).ok_or_else(|| {
        Fail(
            Errno::InvalidArgument,
            format!("no graph with handle {graph}"),
        )
    })?;
    let ctx = guarded("init_execution_context", || {
        Ok(graph.graph.init_execution_context()?)
    })?;
    read_u32(mem, out)?;
    let id = st.contexts.insert(
        "execution context",
        HeldContext {
            ctx,
            inputs: HashMap::new(),
            bound: Vec::new(),
        },
    )?;
    write_u32(mem, out, id)
}

fn context(st: &mut NnState, ctx: u32) -> Res<&mut HeldContext> {
    st.contexts.live.get_mut(&ctx).ok_or_else(|| {
        Fail(
            Errno::InvalidArgument,
            format!("no execution context with handle {ctx}"),
        )
    })
}

fn set_input<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (ctx, index, tensor): (u32, u32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    // struct tensor { dims: (ptr, len), type: u8 @8, data: (ptr, len) @12 }
    let raw = bytes(mem, tensor, 20)?;
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let (dims_ptr, dims_len, ty, data_ptr, data_len) =
        (word(0), word(4), raw[8], word(12), word(16));
    if dims_len > MAX_RANK {
        return fail(
            Errno::InvalidArgument,
            format!("tensor has {dims_len} dimensions; at most {MAX_RANK}"),
        );
    }
    let dimensions = bytes(mem, dims_ptr, dims_len * 4)?
        .chunks_exact(4)
        .map(|d| u32::from_le_bytes(d.try_into().expect("4 bytes")))
        .collect();
    let ty = tensor_type(ty)?;
    let data = bytes(mem, data_ptr, data_len)?;
    // The context keeps the input until it is replaced or the context is
    // finalized: charge it before copying, refund what it replaces.
    let before = context(st, ctx)?.inputs.get(&index).copied().unwrap_or(0);
    st.budget.refund_nn(before);
    if let Err(e) = st.charge("setting an input", data.len()) {
        let _ = st.budget.charge_nn("setting an input", before);
        return Err(e);
    }
    let tensor = Tensor {
        dimensions,
        ty,
        data: data.to_vec(),
    };
    feed(st, ctx, index, tensor, before)
}

/// Hand `tensor` (already charged; `before` the bytes it replaces, already
/// refunded) to the backend as input `index`.
fn feed(st: &mut NnState, ctx: u32, index: u32, tensor: Tensor, before: usize) -> Res<()> {
    let exec = context(st, ctx)?;
    let set = guarded("set_input", || {
        Ok(exec.ctx.set_input(Id::Index(index), &tensor)?)
    });
    match set {
        Ok(()) => {
            exec.inputs.insert(index, tensor.data.len());
            Ok(())
        }
        Err(e) => {
            // The backend kept what it had.
            st.budget.refund_nn(tensor.data.len());
            let _ = st.budget.charge_nn("setting an input", before);
            Err(e)
        }
    }
}

fn compute<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    ctx: u32,
) -> Res<()> {
    let (_, st) = split(c, get)?;
    let exec = context(st, ctx)?;
    guarded("compute", || Ok(exec.ctx.compute()?))?;
    // Residency: bound outputs become the next compute's inputs here, on
    // the host, charged like inputs the guest sets.
    let bound = exec.bound.clone();
    for (output, input) in bound {
        let exec = context(st, ctx)?;
        let tensor = guarded("get_output", || {
            Ok(exec.ctx.get_output(Id::Index(output))?)
        })?;
        let before = exec.inputs.get(&input).copied().unwrap_or(0);
        st.budget.refund_nn(before);
        if let Err(e) = st.charge("a bound output", tensor.data.len()) {
            let _ = st.budget.charge_nn("a bound output", before);
            return Err(e);
        }
        feed(st, ctx, input, tensor, before)?;
    }
    Ok(())
}

/// Weft's residency extension: after every compute of `ctx`, output
/// `output` becomes input `input`. An index the model does not have fails
/// the compute that feeds it, with the backend's error.
fn bind_output<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (ctx, output, input): (u32, u32, u32),
) -> Res<()> {
    let (_, st) = split(c, get)?;
    let exec = context(st, ctx)?;
    if exec.bound.iter().any(|&(o, i)| o == output && i != input) {
        return fail(
            Errno::InvalidArgument,
            format!("output {output} already feeds another input"),
        );
    }
    if exec.bound.len() >= MAX_BINDINGS && !exec.bound.iter().any(|&(_, i)| i == input) {
        return fail(
            Errno::TooLarge,
            format!("at most {MAX_BINDINGS} bound outputs per context"),
        );
    }
    exec.bound.retain(|&(_, i)| i != input);
    exec.bound.push((output, input));
    Ok(())
}

fn get_output<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (ctx, index, buf, max, written): (u32, u32, u32, u32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    bytes(mem, buf, max)?;
    read_u32(mem, written)?;
    let exec = context(st, ctx)?;
    let tensor = guarded("get_output", || {
        Ok(exec.ctx.get_output(Id::Index(index))?)
    })?;
    let len = tensor.data.len();
    if len > max as usize {
        return fail(
            Errno::TooLarge,
            format!("output {index} is {len} bytes; the guest buffer holds {max}"),
        );
    }
    let start = buf as usize;
    mem[start..start + len].copy_from_slice(&tensor.data);
    write_u32(mem, written, len as u32)
}

/// Weft extension: an output's type and shape, which the witx ABI has no
/// way to ask. Writes the type code (as in `set_input`) to `ty`, up to
/// `cap` dimensions to `dims` and the rank to `rank`; `TooLarge` when the
/// rank exceeds `cap` (with `rank` still written).
fn get_output_info<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    (ctx, index, ty, dims, cap, rank): (u32, u32, u32, u32, u32, u32),
) -> Res<()> {
    let (mem, st) = split(c, get)?;
    read_u32(mem, ty)?;
    read_u32(mem, rank)?;
    bytes(mem, dims, cap.saturating_mul(4))?;
    let exec = context(st, ctx)?;
    let tensor = guarded("get_output", || {
        Ok(exec.ctx.get_output(Id::Index(index))?)
    })?;
    write_u32(mem, ty, tensor_type_code(tensor.ty)?)?;
    write_u32(mem, rank, tensor.dimensions.len() as u32)?;
    if tensor.dimensions.len() > cap as usize {
        return fail(
            Errno::TooLarge,
            format!(
                "output {index} has rank {}; the guest buffer holds {cap}",
                tensor.dimensions.len()
            ),
        );
    }
    for (i, d) in tensor.dimensions.iter().enumerate() {
        write_u32(mem, dims + 4 * i as u32, *d)?;
    }
    Ok(())
}

fn unload<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    graph: u32,
) -> Res<()> {
    let (_, st) = split(c, get)?;
    let held = st.graphs.live.remove(&graph).ok_or_else(|| {
        Fail(
            Errno::InvalidArgument,
            format!("no graph with handle {graph}"),
        )
    })?;
    st.budget.refund_nn(held.bytes);
    Ok(())
}

fn finalize<T: 'static>(
    c: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut NnState,
    ctx: u32,
) -> Res<()> {
    let (_, st) = split(c, get)?;
    let held = st.contexts.live.remove(&ctx).ok_or_else(|| {
        Fail(
            Errno::InvalidArgument,
            format!("no execution context with handle {ctx}"),
        )
    })?;
    st.budget.refund_nn(held.bytes());
    Ok(())
}

/// Add `wasi_ephemeral_nn` to a core-module linker.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut NnState,
) -> wasmtime::Result<()> {
    // Guest pointers arrive as i32; reinterpret them as the u32 they are.
    linker.func_wrap(
        MODULE,
        "load",
        move |mut c: Caller<'_, T>, b: i32, n: i32, e: i32, t: i32, out: i32| {
            finish(
                "load",
                load(&mut c, get, (b as u32, n as u32, e, t, out as u32)),
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "load_by_name",
        move |mut c: Caller<'_, T>, p: i32, n: i32, out: i32| {
            finish(
                "load_by_name",
                load_by_name(&mut c, get, (p as u32, n as u32, out as u32)),
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "load_by_name_with_config",
        move |mut c: Caller<'_, T>, p: i32, n: i32, cp: i32, cn: i32, out: i32| {
            // The config (a WasmEdge extension, JSON for GGML) means nothing
            // to tract; it is bounds checked and otherwise ignored.
            let r = split(&mut c, get)
                .and_then(|(mem, _)| bytes(mem, cp as u32, cn as u32).map(drop))
                .and_then(|()| load_by_name(&mut c, get, (p as u32, n as u32, out as u32)));
            finish("load_by_name_with_config", r)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "init_execution_context",
        move |mut c: Caller<'_, T>, g: i32, out: i32| {
            finish(
                "init_execution_context",
                init_execution_context(&mut c, get, (g as u32, out as u32)),
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "set_input",
        move |mut c: Caller<'_, T>, ctx: i32, i: i32, t: i32| {
            finish(
                "set_input",
                set_input(&mut c, get, (ctx as u32, i as u32, t as u32)),
            )
        },
    )?;
    linker.func_wrap(MODULE, "compute", move |mut c: Caller<'_, T>, ctx: i32| {
        finish("compute", compute(&mut c, get, ctx as u32))
    })?;
    linker.func_wrap(
        MODULE,
        "get_output",
        move |mut c: Caller<'_, T>, ctx: i32, i: i32, b: i32, m: i32, w: i32| {
            finish(
                "get_output",
                get_output(
                    &mut c,
                    get,
                    (ctx as u32, i as u32, b as u32, m as u32, w as u32),
                ),
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "weft_get_output_info",
        move |mut c: Caller<'_, T>, ctx: i32, i: i32, ty: i32, d: i32, n: i32, r: i32| {
            finish(
                "weft_get_output_info",
                get_output_info(
                    &mut c,
                    get,
                    (
                        ctx as u32, i as u32, ty as u32, d as u32, n as u32, r as u32,
                    ),
                ),
            )
        },
    )?;
    linker.func_wrap(
        MODULE,
        "weft_bind_output",
        move |mut c: Caller<'_, T>, ctx: i32, o: i32, i: i32| {
            finish(
                "weft_bind_output",
                bind_output(&mut c, get, (ctx as u32, o as u32, i as u32)),
            )
        },
    )?;
    linker.func_wrap(MODULE, "unload", move |mut c: Caller<'_, T>, g: i32| {
        finish("unload", unload(&mut c, get, g as u32))
    })?;
    linker.func_wrap(
        MODULE,
        "finalize_execution_context",
        move |mut c: Caller<'_, T>, ctx: i32| {
            finish(
                "finalize_execution_context",
                finalize(&mut c, get, ctx as u32),
            )
        },
    )?;
    Ok(())
}
