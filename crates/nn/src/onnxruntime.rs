//! The onnxruntime CPU engine (`CpuEngine::Onnxruntime`): ONNX graphs run
//! by a libonnxruntime loaded at run time (`weft-ort`), behind the same
//! wasi-nn traits as tract, so a guest cannot tell which engine ran it.

use crate::backend::{CpuContext, compute_named, find};
use crate::error::NnError;
use crate::model::digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};
use weft_ort::{ElementType, OrtModel, Outputs, TensorRef};

/// Models loaded into onnxruntime, by digest and threads per run: a guest
/// that loads its model on every run (the wasip1 habit) builds the session
/// once while any graph of it is alive, as tract's cache does.
type Cache = Mutex<HashMap<(String, usize), Weak<OrtModel>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

/// Load ONNX bytes into onnxruntime, or return the loaded model with the
/// same digest and threads.
pub fn load(bytes: &[u8], threads: usize) -> Result<Arc<OrtModel>, NnError> {
    load_hashed(bytes, digest(bytes), threads)
}

/// [`load`] for bytes whose digest the caller computed.
pub(crate) fn load_hashed(
    bytes: &[u8],
    digest: String,
    threads: usize,
) -> Result<Arc<OrtModel>, NnError> {
    let key = (digest, threads);
    let cached = |cache: &HashMap<_, Weak<OrtModel>>| cache.get(&key).and_then(Weak::upgrade);
    if let Some(model) = cached(&lock(cache())) {
        tracing::debug!(model.digest = %key.0, "onnxruntime model cache hit");
        return Ok(model);
    }
    // Built outside the lock: loads of other models do not wait for it.
    let model = Arc::new(OrtModel::load(bytes, threads)?);
    let mut cache = lock(cache());
    cache.retain(|_, m| m.strong_count() > 0);
    // Another thread may have loaded the same bytes meanwhile: keep one.
    if let Some(existing) = cached(&cache) {
        return Ok(existing);
    }
    cache.insert(key, Arc::downgrade(&model));
    Ok(model)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wrap a model loaded into onnxruntime as a wasi-nn graph.
pub fn graph(model: Arc<OrtModel>) -> Graph {
    let graph: Box<dyn BackendGraph> = Box::new(OrtGraph { model });
    Graph::from(graph)
}

struct OrtGraph {
    model: Arc<OrtModel>,
}

impl BackendGraph for OrtGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(OrtContext::new(self.model.clone()));
        Ok(ExecutionContext::from(ctx))
    }
}

/// One input as set: its checked type, shape and (copied) bytes.
struct Input {
    ty: ElementType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Per-context state: the inputs set so far and the last run's outputs,
/// held as onnxruntime values until a guest asks for them (so each output
/// is copied once, into the wasi-nn tensor).
pub struct OrtContext {
    model: Arc<OrtModel>,
    inputs: Vec<Option<Input>>,
    outputs: Option<Outputs>,
}

impl OrtContext {
    pub fn new(model: Arc<OrtModel>) -> Self {
        let inputs = model.inputs().iter().map(|_| None).collect();
        Self {
            model,
            inputs,
            outputs: None,
        }
    }

    fn input_index(&self, id: &Id) -> Result<usize, NnError> {
        match id {
            Id::Index(i) if (*i as usize) < self.inputs.len() => Ok(*i as usize),
            Id::Index(i) => Err(NnError::InputIndex {
                index: *i,
                count: self.inputs.len(),
            }),
            Id::Name(name) => find(&names(self.model.inputs()), name),
        }
    }

    /// Validate and store one input.
    pub fn set(&mut self, id: Id, tensor: &Tensor) -> Result<(), NnError> {
        let index = self.input_index(&id)?;
        let ty = element_type(tensor.ty);
        let shape: Vec<usize> = tensor.dimensions.iter().map(|&d| d as usize).collect();
        self.model.check_input(
            index,
            &TensorRef {
                ty,
                shape: &shape,
                data: &tensor.data,
            },
        )?;
        self.inputs[index] = Some(Input {
            ty,
            shape,
            data: tensor.data.clone(),
        });
        Ok(())
    }

    /// Run the model on the inputs set so far.
    pub fn run(&mut self) -> Result<(), NnError> {
        self.outputs = None;
        let mut refs = Vec::with_capacity(self.inputs.len());
        for (index, input) in self.inputs.iter().enumerate() {
            let Some(input) = input else {
                return Err(NnError::MissingInput {
                    name: self.model.inputs()[index].name().into(),
                    index,
                });
            };
            refs.push(TensorRef {
                ty: input.ty,
                shape: &input.shape,
                data: &input.data,
            });
        }
        let model = &self.model;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(&refs)));
        self.outputs = Some(result.map_err(|_| NnError::Compute {
            message: "the onnxruntime engine panicked while running the model".into(),
        })??);
        Ok(())
    }

    /// One output of the last run.
    pub fn output(&self, id: &Id) -> Result<Tensor, NnError> {
        let outputs = self.outputs.as_ref().ok_or(NnError::NotComputed)?;
        let count = self.model.outputs().len();
        let index = match id {
            Id::Index(i) if (*i as usize) < count => *i as usize,
            Id::Index(i) => return Err(NnError::OutputIndex { index: *i, count }),
            Id::Name(name) => find(&names(self.model.outputs()), name)?,
        };
        let t = outputs.tensor(index)?;
        let dimensions = t
            .shape
            .iter()
            .map(|&d| u32::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| NnError::TooLarge { dims: vec![] })?;
        Ok(Tensor {
            dimensions,
            ty: tensor_type(t.ty),
            data: t.data,
        })
    }
}

fn element_type(ty: TensorType) -> ElementType {
    match ty {
        TensorType::Fp16 => ElementType::F16,
        TensorType::Bf16 => ElementType::Bf16,
        TensorType::Fp32 => ElementType::F32,
        TensorType::Fp64 => ElementType::F64,
        TensorType::U8 => ElementType::U8,
        TensorType::I32 => ElementType::I32,
        TensorType::I64 => ElementType::I64,
    }
}

fn tensor_type(ty: ElementType) -> TensorType {
    match ty {
        ElementType::F16 => TensorType::Fp16,
        ElementType::Bf16 => TensorType::Bf16,
        ElementType::F32 => TensorType::Fp32,
        ElementType::F64 => TensorType::Fp64,
        ElementType::U8 => TensorType::U8,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
    }
}

/// The names of the session's inputs or outputs, for [`find`].
fn names(ports: &[weft_ort::Port]) -> Vec<&str> {
    ports.iter().map(|p| p.name()).collect()
}

impl CpuContext for OrtContext {
    fn set(&mut self, id: Id, tensor: &Tensor) -> Result<(), NnError> {
        OrtContext::set(self, id, tensor)
    }
    fn run(&mut self) -> Result<(), NnError> {
        OrtContext::run(self)
    }
    fn output(&mut self, id: &Id) -> Result<Tensor, NnError> {
        OrtContext::output(self, id)
    }
    fn output_names(&self) -> Vec<String> {
        self.model
            .outputs()
            .iter()
            .map(|p| p.name().into())
            .collect()
    }
}

impl BackendExecutionContext for OrtContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        Ok(self.set(id, tensor)?)
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        Ok(self.output(&id)?)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        compute_named(self, inputs)
    }
}

#[cfg(test)]
mod tests {
    //! The engine behind the wasi-nn traits, against a real onnxruntime
    //! (`weft-ort`'s own tests cover the library and the tensors): skipped
    //! where none is found, failing instead when `CI` is set.

    use super::*;
    use crate::backend::{BackendOptions, CpuEngine, TractBackend};
    use crate::error::{ErrorKind, kind_of};
    use crate::registry::{Models, Preload};
    use std::path::PathBuf;
    use wasmtime_wasi_nn::backend::BackendInner;
    use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding};

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data")
            .join(name)
    }

    /// onnxruntime from the usual search, else the test venv's wheel
    /// (`scripts/test.sh` installs it); the rule of
    /// `weft_testkit::skip_or_fail` when there is none.
    fn onnxruntime() -> bool {
        static FOUND: OnceLock<Result<(), weft_ort::OrtError>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let venv =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py/bin/python3");
            let path =
                weft_ort::library().or_else(|e| weft_ort::wheel_library(&venv).map_err(|_| e))?;
            weft_ort::init_from(Some(&path)).map(drop)
        });
        match found {
            Ok(()) => true,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("required test prerequisite missing in CI: {e}");
                }
                eprintln!("SKIPPED: onnxruntime engine tests: {e}");
                false
            }
        }
    }

    fn options() -> BackendOptions {
        BackendOptions {
            cpu: CpuEngine::Onnxruntime { threads: 1 },
            ..Default::default()
        }
    }

    fn f32s(dims: Vec<u32>, v: &[f32]) -> Tensor {
        Tensor {
            dimensions: dims,
            ty: TensorType::Fp32,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        assert_eq!(t.ty, TensorType::Fp32);
        t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn an_onnx_graph_runs_on_onnxruntime_through_the_wasi_nn_traits() {
        if !onnxruntime() {
            return;
        }
        let bytes = std::fs::read(data("tiny.onnx")).unwrap();
        for encoding in [GraphEncoding::Onnx, GraphEncoding::Autodetect] {
            let mut backend = TractBackend::new(encoding, options());
            let graph = backend.load(&[&bytes], ExecutionTarget::Cpu).unwrap();
            let mut ctx = graph.init_execution_context().unwrap();
            let e = ctx.get_output(Id::Index(0)).unwrap_err();
            assert_eq!(kind_of(&e), ErrorKind::InvalidArgument, "{e}");
            ctx.set_input(Id::Index(0), &f32s(vec![1, 4], &[0.0, 1.0, 2.0, 3.0]))
                .unwrap();
            ctx.compute().unwrap();
            let y = ctx.get_output(Id::Name("y".into())).unwrap();
            assert_eq!(y.dimensions, [1, 4]);
            assert_eq!(values(&y), [1.0, 3.0, 5.0, 7.0]);
            // A position works as a name, as it does on tract.
            assert_eq!(ctx.get_output(Id::Name("0".into())).unwrap(), y);
        }
    }

    #[test]
    fn wit_style_compute_names_every_output() {
        if !onnxruntime() {
            return;
        }
        let model = load(&std::fs::read(data("two_inputs.onnx")).unwrap(), 1).unwrap();
        let mut ctx = graph(model).init_execution_context().unwrap();
        let out = ctx
            .compute_with_io(vec![
                NamedTensor {
                    name: "b".into(),
                    tensor: f32s(vec![3], &[4.0, 5.0, 6.0]),
                },
                NamedTensor {
                    name: "a".into(),
                    tensor: f32s(vec![3], &[1.0, 2.0, 3.0]),
                },
            ])
            .unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["sum", "prod"]);
        assert_eq!(values(&out[0].tensor), [5.0, 7.0, 9.0]);
        assert_eq!(values(&out[1].tensor), [4.0, 10.0, 18.0]);
    }

    #[test]
    fn bad_guest_input_gets_the_tract_engines_error_kinds() {
        if !onnxruntime() {
            return;
        }
        let model = load(&std::fs::read(data("tiny.onnx")).unwrap(), 1).unwrap();
        let mut ctx = OrtContext::new(model);
        let kind = |e: NnError| (e.kind(), e.to_string());
        let (k, text) = kind(
            ctx.set(Id::Index(0), &f32s(vec![4], &[0.0; 4]))
                .unwrap_err(),
        );
        assert_eq!(k, ErrorKind::InvalidArgument);
        assert!(text.contains("input `x` expects shape [1,4]"), "{text}");
        let (k, _) = kind(
            ctx.set(Id::Index(3), &f32s(vec![1, 4], &[0.0; 4]))
                .unwrap_err(),
        );
        assert_eq!(k, ErrorKind::InvalidArgument);
        let (k, text) = kind(
            ctx.set(Id::Name("z".into()), &f32s(vec![1, 4], &[0.0; 4]))
                .unwrap_err(),
        );
        assert_eq!(k, ErrorKind::NotFound);
        assert!(text.contains("it has: `x`"), "{text}");
        let (k, text) = kind(ctx.run().unwrap_err());
        assert_eq!(k, ErrorKind::InvalidArgument);
        assert!(text.contains("input `x` (index 0) was not set"), "{text}");
        let huge = Tensor {
            dimensions: vec![1, u32::MAX],
            ty: TensorType::Fp32,
            data: vec![],
        };
        assert!(ctx.set(Id::Index(0), &huge).is_err());
        let e = OrtModel::load(b"\x08\x07garbage", 1)
            .map_err(NnError::from)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }

    #[test]
    fn preloads_run_on_onnxruntime_and_keep_their_interface() {
        if !onnxruntime() {
            return;
        }
        let preload: Preload = format!("tiny:onnx:cpu:{}", data("tiny.onnx").display())
            .parse()
            .unwrap();
        let models = Models::load(&[preload], options()).unwrap();
        assert!(models.model("tiny").is_none(), "not a tract model");
        let sig = models.signature("tiny").unwrap();
        assert_eq!(sig.inputs[0].name, "x");
        assert_eq!(sig.inputs[0].shape_string(), "[1,4]");
        assert_eq!(sig.outputs[0].name, "y");
        let mut ctx = models
            .graph("tiny")
            .unwrap()
            .init_execution_context()
            .unwrap();
        ctx.set_input(Id::Index(0), &f32s(vec![1, 4], &[1.0; 4]))
            .unwrap();
        ctx.compute().unwrap();
        assert_eq!(values(&ctx.get_output(Id::Index(0)).unwrap()), [3.0; 4]);
        // One onnxruntime model per bytes and threads while it is in use.
        let bytes = std::fs::read(data("tiny.onnx")).unwrap();
        let (a, b) = (load(&bytes, 1).unwrap(), load(&bytes, 1).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &load(&bytes, 2).unwrap()));
    }
}
