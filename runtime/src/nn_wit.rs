//! wasi-nn for `wasm32-wasip2` components: the `wasi:nn@0.2.0-rc-2024-10-28`
//! WIT interfaces.
//!
//! We own this glue rather than link `wasmtime_wasi_nn::wit`, for the same
//! reasons as [`crate::nn_witx`]: there, a backend panic unwinds through
//! the host, nothing bounds how many graphs, contexts, tensors or errors a
//! guest keeps in the resource table, and nothing counts the bytes they
//! hold. Here every backend call runs under `catch_unwind`, each resource
//! kind has a cap (a guest past it gets `too-large`, or a trap where the
//! interface has no error to return), and the bytes of tensor resources,
//! inputs a context holds and graphs loaded from bytes are charged to the
//! store's [`Budget`] and refunded when the guest drops them.
//!
//! The WIT is the guest SDK's copy (`modules/sdk/wit/wasi-nn.wit`), so host
//! and guests bind the same file.

use crate::budget::Budget;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use wasmtime::component::{HasData, Resource, ResourceTable};
use weft_nn::{Backend, ErrorKind, Models, NnError, kind_of};

mod generated {
    wasmtime::component::bindgen!({
        world: "ml",
        path: "../modules/sdk/wit/wasi-nn.wit",
        with: {
            "wasi:nn/graph.graph": super::NnGraph,
            "wasi:nn/tensor.tensor": super::NnTensor,
            "wasi:nn/inference.graph-execution-context": super::NnContext,
            "wasi:nn/errors.error": super::NnFailure,
        },
        imports: { default: trappable },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// Live graphs one instance may hold at once.
pub const MAX_GRAPHS: usize = crate::nn_witx::MAX_GRAPHS;
/// Live execution contexts one instance may hold at once.
pub const MAX_CONTEXTS: usize = crate::nn_witx::MAX_CONTEXTS;
/// Live tensor resources one instance may hold at once.
pub const MAX_TENSORS: usize = 4096;
/// Live error resources one instance may hold at once (a guest that never
/// drops its errors traps past this).
pub const MAX_ERRORS: usize = 1024;
/// Entries the component's resource table (WASI's and wasi-nn's together)
/// may hold.
pub const TABLE_CAPACITY: usize = 16384;

/// A graph resource: the backend graph and the model bytes it was loaded
/// from (charged; 0 for a preloaded model).
pub struct NnGraph {
    graph: weft_nn::Graph,
    bytes: usize,
}

/// A tensor resource (its data is charged).
pub struct NnTensor(weft_nn::Tensor);

/// An execution-context resource and the input bytes it holds by name.
pub struct NnContext {
    ctx: wasmtime_wasi_nn::ExecutionContext,
    inputs: HashMap<String, usize>,
}

/// An error resource: the code the guest reads and the host's reason.
pub struct NnFailure {
    code: errors::ErrorCode,
    message: String,
}

impl NnFailure {
    fn new(code: errors::ErrorCode, message: impl Into<String>) -> Self {
        NnFailure {
            code,
            message: message.into(),
        }
    }
}

fn code_of(kind: ErrorKind) -> errors::ErrorCode {
    use errors::ErrorCode as C;
    match kind {
        ErrorKind::InvalidArgument => C::InvalidArgument,
        ErrorKind::InvalidEncoding => C::InvalidEncoding,
        ErrorKind::NotFound => C::NotFound,
        ErrorKind::Unsupported => C::UnsupportedOperation,
        ErrorKind::TooLarge => C::TooLarge,
        _ => C::RuntimeError,
    }
}

impl From<wasmtime_wasi_nn::backend::BackendError> for NnFailure {
    fn from(e: wasmtime_wasi_nn::backend::BackendError) -> Self {
        let code = code_of(kind_of(&e));
        let message = match &e {
            wasmtime_wasi_nn::backend::BackendError::BackendAccess(inner) => format!("{inner:#}"),
            other => other.to_string(),
        };
        NnFailure { code, message }
    }
}

impl From<NnError> for NnFailure {
    fn from(e: NnError) -> Self {
        NnFailure::new(code_of(e.kind()), e.to_string())
    }
}

/// Run backend code, turning a panic into a runtime error, so a backend bug
/// that guest input reaches never unwinds through the host.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, NnFailure>) -> Result<T, NnFailure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(NnFailure::new(
            errors::ErrorCode::RuntimeError,
            format!("the backend panicked during {what}"),
        ))
    })
}

/// Per-instance wasi-nn state of a component (its resources live in the
/// store's resource table).
pub struct NnState {
    backends: HashMap<weft_nn::GraphEncoding, Backend>,
    models: Models,
    budget: Arc<Budget>,
    graphs: usize,
    contexts: usize,
    tensors: usize,
    errors: usize,
}

impl NnState {
    pub fn new(backends: Vec<Backend>, models: Models, budget: Arc<Budget>) -> Self {
        Self {
            backends: backends.into_iter().map(|b| (b.encoding(), b)).collect(),
            models,
            budget,
            graphs: 0,
            contexts: 0,
            tensors: 0,
            errors: 0,
        }
    }

    /// Live (graphs, contexts, tensors, errors), for tests.
    pub fn live(&self) -> (usize, usize, usize, usize) {
        (self.graphs, self.contexts, self.tensors, self.errors)
    }
}

/// The state and the table a call works on.
pub struct NnView<'a> {
    pub(crate) st: &'a mut NnState,
    pub(crate) table: &'a mut ResourceTable,
}

struct HasNnView;

impl HasData for HasNnView {
    type Data<'a> = NnView<'a>;
}

/// Add `wasi:nn` to a component linker.
pub fn add_to_linker<T: 'static>(
    l: &mut wasmtime::component::Linker<T>,
    f: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<_, HasNnView>(l, f)?;
    tensor::add_to_linker::<_, HasNnView>(l, f)?;
    inference::add_to_linker::<_, HasNnView>(l, f)?;
    errors::add_to_linker::<_, HasNnView>(l, f)?;
    Ok(())
}

type Answer<T> = Returned<Resource<T>>;
type Returned<T> = wasmtime::Result<Result<T, Resource<NnFailure>>>;

impl NnView<'_> {
    /// Hand an error to the guest as a resource (and log it once).
    fn fail<T>(&mut self, op: &str, e: NnFailure) -> Returned<T> {
        tracing::warn!(target: "wasi_nn", "{op}: {} (returning {:?})", e.message, e.code);
        if self.st.errors >= MAX_ERRORS {
            wasmtime::bail!(
                "the guest holds {MAX_ERRORS} wasi-nn error resources without dropping them"
            );
        }
        let r = self.table.push(e)?;
        self.st.errors += 1;
        Ok(Err(r))
    }

    fn charge(&self, what: &'static str, bytes: usize) -> Result<(), NnFailure> {
        self.st
            .budget
            .charge_nn(what, bytes)
            .map_err(|e| NnFailure::new(errors::ErrorCode::TooLarge, e.to_string()))
    }

    fn push_graph(&mut self, graph: weft_nn::Graph, bytes: usize) -> Answer<NnGraph> {
        if self.st.graphs >= MAX_GRAPHS {
            self.st.budget.refund_nn(bytes);
            return self.fail(
                "load",
                NnFailure::new(
                    errors::ErrorCode::TooLarge,
                    format!("too many live graphs ({MAX_GRAPHS}); drop some"),
                ),
            );
        }
        match self.table.push(NnGraph { graph, bytes }) {
            Ok(r) => {
                self.st.graphs += 1;
                Ok(Ok(r))
            }
            Err(e) => {
                self.st.budget.refund_nn(bytes);
                Err(e.into())
            }
        }
    }

    /// A tensor the host made (an output): charged, counted, pushed.
    fn push_tensor(&mut self, t: weft_nn::Tensor) -> Result<Resource<NnTensor>, NnFailure> {
        if self.st.tensors >= MAX_TENSORS {
            return Err(NnFailure::new(
                errors::ErrorCode::TooLarge,
                format!("too many live tensors ({MAX_TENSORS}); drop some"),
            ));
        }
        let bytes = t.data.len();
        self.charge("returning an output tensor", bytes)?;
        match self.table.push(NnTensor(t)) {
            Ok(r) => {
                self.st.tensors += 1;
                Ok(r)
            }
            Err(e) => {
                self.st.budget.refund_nn(bytes);
                Err(NnFailure::new(errors::ErrorCode::TooLarge, e.to_string()))
            }
        }
    }

    fn drop_tensor(&mut self, r: Resource<NnTensor>) -> wasmtime::Result<weft_nn::Tensor> {
        let t = self.table.delete(r)?;
        self.st.tensors = self.st.tensors.saturating_sub(1);
        self.st.budget.refund_nn(t.0.data.len());
        Ok(t.0)
    }
}

fn encoding(e: graph::GraphEncoding) -> weft_nn::GraphEncoding {
    use graph::GraphEncoding as W;
    use weft_nn::GraphEncoding as U;
    match e {
        W::Openvino => U::Openvino,
        W::Onnx => U::Onnx,
        W::Tensorflow => U::Tensorflow,
        W::Pytorch => U::Pytorch,
        W::Tensorflowlite => U::Tensorflowlite,
        W::Ggml => U::Ggml,
        W::Autodetect => U::Autodetect,
    }
}

fn target(t: graph::ExecutionTarget) -> weft_nn::ExecutionTarget {
    use graph::ExecutionTarget as W;
    use weft_nn::ExecutionTarget as U;
    match t {
        W::Cpu => U::Cpu,
        W::Gpu => U::Gpu,
        W::Tpu => U::Tpu,
    }
}

fn tensor_type(t: tensor::TensorType) -> weft_nn::TensorType {
    use tensor::TensorType as W;
    use weft_nn::TensorType as U;
    match t {
        W::Fp16 => U::Fp16,
        W::Fp32 => U::Fp32,
        W::Fp64 => U::Fp64,
        W::Bf16 => U::Bf16,
        W::U8 => U::U8,
        W::I32 => U::I32,
        W::I64 => U::I64,
    }
}

fn tensor_type_back(t: weft_nn::TensorType) -> tensor::TensorType {
    use tensor::TensorType as W;
    use weft_nn::TensorType as U;
    match t {
        U::Fp16 => W::Fp16,
        U::Fp32 => W::Fp32,
        U::Fp64 => W::Fp64,
        U::Bf16 => W::Bf16,
        U::U8 => W::U8,
        U::I32 => W::I32,
        U::I64 => W::I64,
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        builders: Vec<graph::GraphBuilder>,
        enc: graph::GraphEncoding,
        tgt: graph::ExecutionTarget,
    ) -> Answer<NnGraph> {
        let enc = encoding(enc);
        if !self.st.backends.contains_key(&enc) {
            return self.fail(
                "load",
                NnFailure::new(
                    errors::ErrorCode::InvalidEncoding,
                    format!(
                        "no backend for encoding {enc}; this node supports onnx and autodetect"
                    ),
                ),
            );
        }
        // The model bytes are held (parsed) for as long as the graph lives.
        let held: usize = builders.iter().map(Vec::len).sum();
        if let Err(e) = self.charge("loading a graph", held) {
            return self.fail("load", e);
        }
        let loaded = {
            let backend = self.st.backends.get_mut(&enc).expect("checked above");
            let parts: Vec<&[u8]> = builders.iter().map(Vec::as_slice).collect();
            guarded("load", || Ok(backend.load(&parts, target(tgt))?))
        };
        drop(builders);
        match loaded {
            Ok(graph) => self.push_graph(graph, held),
            Err(e) => {
                self.st.budget.refund_nn(held);
                self.fail("load", e)
            }
        }
    }

    fn load_by_name(&mut self, name: String) -> Answer<NnGraph> {
        match self.st.models.graph(&name).cloned() {
            Some(graph) => self.push_graph(graph, 0),
            None => {
                let known = self.st.models.names();
                let message = if known.is_empty() {
                    format!("no model named `{name}` was preloaded")
                } else {
                    format!(
                        "no model named `{name}` was preloaded; preloaded: {}",
                        known.join(", ")
                    )
                };
                self.fail(
                    "load_by_name",
                    NnFailure::new(errors::ErrorCode::NotFound, message),
                )
            }
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, graph: Resource<NnGraph>) -> Answer<NnContext> {
        if self.st.contexts >= MAX_CONTEXTS {
            return self.fail(
                "init_execution_context",
                NnFailure::new(
                    errors::ErrorCode::TooLarge,
                    format!("too many live execution contexts ({MAX_CONTEXTS}); drop some"),
                ),
            );
        }
        let g = self.table.get(&graph)?;
        let made = guarded("init_execution_context", || {
            Ok(g.graph.init_execution_context()?)
        });
        match made {
            Ok(ctx) => {
                let r = self.table.push(NnContext {
                    ctx,
                    inputs: HashMap::new(),
                })?;
                self.st.contexts += 1;
                Ok(Ok(r))
            }
            Err(e) => self.fail("init_execution_context", e),
        }
    }

    fn drop(&mut self, graph: Resource<NnGraph>) -> wasmtime::Result<()> {
        let g = self.table.delete(graph)?;
        self.st.graphs = self.st.graphs.saturating_sub(1);
        self.st.budget.refund_nn(g.bytes);
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        ctx: Resource<NnContext>,
        inputs: Vec<inference::NamedTensor>,
    ) -> Returned<Vec<inference::NamedTensor>> {
        // The input resources are consumed (their charge ends) and the
        // context keeps the tensors instead (its charge per name replaces
        // what it held under that name).
        let mut named = Vec::with_capacity(inputs.len());
        for (name, r) in inputs {
            let t = self.drop_tensor(r)?;
            named.push(wasmtime_wasi_nn::backend::NamedTensor { name, tensor: t });
        }
        let sizes: Vec<(String, usize)> = named
            .iter()
            .map(|n| (n.name.clone(), n.tensor.data.len()))
            .collect();
        let replaced: usize = {
            let c = self.table.get(&ctx)?;
            sizes.iter().filter_map(|(n, _)| c.inputs.get(n)).sum()
        };
        let incoming: usize = sizes.iter().map(|(_, b)| b).sum();
        self.st.budget.refund_nn(replaced);
        if let Err(e) = self.charge("setting inputs", incoming) {
            let _ = self.st.budget.charge_nn("setting inputs", replaced);
            return self.fail("compute", e);
        }
        let c = self.table.get_mut(&ctx)?;
        let result = guarded("compute", || Ok(c.ctx.compute_with_io(named)?));
        for (name, bytes) in sizes {
            c.inputs.insert(name, bytes);
        }
        match result {
            Ok(outputs) => {
                let mut out = Vec::with_capacity(outputs.len());
                for o in outputs {
                    match self.push_tensor(o.tensor) {
                        Ok(r) => out.push((o.name, r)),
                        Err(e) => {
                            for (_, r) in out {
                                self.drop_tensor(r)?;
                            }
                            return self.fail("compute", e);
                        }
                    }
                }
                Ok(Ok(out))
            }
            Err(e) => self.fail("compute", e),
        }
    }

    fn drop(&mut self, ctx: Resource<NnContext>) -> wasmtime::Result<()> {
        let c = self.table.delete(ctx)?;
        self.st.contexts = self.st.contexts.saturating_sub(1);
        self.st.budget.refund_nn(c.inputs.values().sum());
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: tensor::TensorDimensions,
        ty: tensor::TensorType,
        data: tensor::TensorData,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        // The constructor has no error to return: past a cap, the guest
        // traps (and a serving instance is retired).
        let t = weft_nn::Tensor {
            dimensions,
            ty: tensor_type(ty),
            data,
        };
        self.push_tensor(t)
            .map_err(|e| wasmtime::format_err!("wasi-nn tensor: {}", e.message))
    }

    fn dimensions(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<tensor::TensorDimensions> {
        Ok(self.table.get(&t)?.0.dimensions.clone())
    }

    fn ty(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(tensor_type_back(self.table.get(&t)?.0.ty))
    }

    fn data(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<tensor::TensorData> {
        Ok(self.table.get(&t)?.0.data.clone())
    }

    fn drop(&mut self, t: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.drop_tensor(t).map(drop)
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, e: Resource<NnFailure>) -> wasmtime::Result<errors::ErrorCode> {
        Ok(self.table.get(&e)?.code)
    }

    fn data(&mut self, e: Resource<NnFailure>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.message.clone())
    }

    fn drop(&mut self, e: Resource<NnFailure>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        self.st.errors = self.st.errors.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::{Host as _, HostGraph as _};
    use inference::HostGraphExecutionContext as _;
    use tensor::HostTensor as _;
    use wasmtime_wasi_nn::backend::{BackendError, BackendFromDir, BackendInner};

    /// A backend whose every load panics, as a backend bug reached by guest
    /// input would.
    struct Panics;

    impl BackendInner for Panics {
        fn encoding(&self) -> weft_nn::GraphEncoding {
            weft_nn::GraphEncoding::Tensorflow
        }
        fn load(
            &mut self,
            _: &[&[u8]],
            _: weft_nn::ExecutionTarget,
        ) -> Result<weft_nn::Graph, BackendError> {
            panic!("a backend bug")
        }
        fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
            None
        }
    }

    struct Fixture {
        st: NnState,
        table: ResourceTable,
    }

    impl Fixture {
        fn new(limit: usize) -> Fixture {
            let mut backends = weft_nn::backends(Default::default());
            backends.push(Backend::from(Panics));
            let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/data/mlp_dynamic_batch.onnx");
            let p: weft_nn::Preload = format!("mlp:onnx:cpu:{}", tiny.display()).parse().unwrap();
            let models = Models::load(&[p], Default::default()).unwrap();
            Fixture {
                st: NnState::new(backends, models, Arc::new(Budget::new(limit))),
                table: ResourceTable::new(),
            }
        }

        fn view(&mut self) -> NnView<'_> {
            NnView {
                st: &mut self.st,
                table: &mut self.table,
            }
        }

        fn code(&mut self, e: Resource<NnFailure>) -> errors::ErrorCode {
            self.table.get(&e).unwrap().code
        }
    }

    fn f32_tensor(rows: u32) -> (Vec<u32>, Vec<u8>) {
        (vec![rows, 4], vec![0; rows as usize * 16])
    }

    #[test]
    fn a_backend_panic_is_an_error_for_the_guest_not_an_unwind() {
        let mut f = Fixture::new(1 << 30);
        let r = f
            .view()
            .load(
                vec![b"model".to_vec()],
                graph::GraphEncoding::Tensorflow,
                graph::ExecutionTarget::Cpu,
            )
            .expect("no trap");
        let Err(e) = r else {
            panic!("expected an error resource")
        };
        assert!(matches!(f.code(e), errors::ErrorCode::RuntimeError));
        // What it charged for the model bytes is given back.
        assert_eq!(f.st.budget.nn(), 0);
    }

    #[test]
    fn tensors_draw_on_the_budget_and_give_it_back_when_dropped() {
        let mut f = Fixture::new(40 << 20);
        let (dims, data) = f32_tensor(1 << 20); // 16 MiB
        let a = f
            .view()
            .new(dims.clone(), tensor::TensorType::Fp32, data.clone())
            .unwrap();
        let b = f
            .view()
            .new(dims.clone(), tensor::TensorType::Fp32, data.clone())
            .unwrap();
        assert_eq!(f.st.budget.nn(), 32 << 20);
        // A third would pass 40 MiB: the constructor (which has no error
        // to return) traps.
        let e = f
            .view()
            .new(dims.clone(), tensor::TensorType::Fp32, data.clone())
            .unwrap_err();
        assert!(format!("{e:#}").contains("memory limit"), "{e:#}");
        tensor::HostTensor::drop(&mut f.view(), a).unwrap();
        tensor::HostTensor::drop(&mut f.view(), b).unwrap();
        assert_eq!(f.st.budget.nn(), 0);
        assert_eq!(f.st.live().2, 0);
    }

    #[test]
    fn inputs_a_context_keeps_are_charged_until_it_is_dropped() {
        // Each compute holds its 16 MiB input in the context and hands back
        // a 12 MiB output (dropped at once): 48 MiB hold two such contexts,
        // and refuse the third's output.
        let mut f = Fixture::new(48 << 20);
        let g = f.view().load_by_name("mlp".into()).unwrap().unwrap();
        let mut contexts = Vec::new();
        let mut refused = None;
        for _ in 0..4 {
            let g = Resource::<NnGraph>::new_borrow(g.rep());
            let ctx = f.view().init_execution_context(g).unwrap().unwrap();
            let (dims, data) = f32_tensor(1 << 20);
            let t = f.view().new(dims, tensor::TensorType::Fp32, data).unwrap();
            let c = Resource::<NnContext>::new_borrow(ctx.rep());
            contexts.push(ctx);
            match f.view().compute(c, vec![("x".into(), t)]).unwrap() {
                Ok(outputs) => {
                    for (_, o) in outputs {
                        tensor::HostTensor::drop(&mut f.view(), o).unwrap();
                    }
                }
                Err(e) => {
                    refused = Some(f.code(e));
                    break;
                }
            }
        }
        assert_eq!(contexts.len(), 3);
        assert!(matches!(refused, Some(errors::ErrorCode::TooLarge)));
        for c in contexts {
            inference::HostGraphExecutionContext::drop(&mut f.view(), c).unwrap();
        }
        assert_eq!(f.st.budget.nn(), 0);
    }

    #[test]
    fn errors_a_guest_never_drops_are_capped() {
        let mut f = Fixture::new(1 << 30);
        for _ in 0..MAX_ERRORS {
            let r = f.view().load_by_name("missing".into()).unwrap();
            assert!(r.is_err());
        }
        let trap = f.view().load_by_name("missing".into()).unwrap_err();
        assert!(format!("{trap}").contains("error resources"), "{trap}");
    }
}
