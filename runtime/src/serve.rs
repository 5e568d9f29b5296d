//! Weft's serving contract: a module that stays instantiated and answers
//! inference requests, tensors in, tensors out.
//!
//! * **Components** (`wasm32-wasip2`) export the `weft:serve/predictor`
//!   world (`runtime/wit/serve.wit`): `init()` once per instance, then
//!   `infer(list<tensor>) -> result<list<tensor>, string>` per request.
//! * **Core modules** (`wasm32-wasip1`, built as reactors: a `cdylib`) export
//!   [`ServeAbi`]'s functions; tensors cross linear memory in the
//!   [`weft_abi`] wire format.
//!
//! Either way the host keeps a pool of [`Instance`]s, each with its own
//! store, memory cap, wasi-nn state and per-call deadline. A trap, a
//! deadline or the memory cap fails the call and retires the instance (its
//! state can no longer be trusted); a module that *returns* an error keeps
//! serving.

use crate::{
    Budget, ComponentState, CoreState, HasLimiter, Pre, Program, RunOptions, Runtime, RuntimeError,
    exit_or_error,
};
use std::time::Duration;
use wasmtime::{Memory, Store, TypedFunc};
use weft_abi::{Signature, Tensor, TensorSpec};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/serve.wit",
        world: "predictor",
    });
}

pub(crate) use bindings::PredictorPre;

/// The exports a `wasm32-wasip1` serving module provides (`weft-guest`'s
/// `serve!` macro writes them):
///
/// | export | signature | meaning |
/// |---|---|---|
/// | `_initialize` | `() -> ()` | optional; the reactor's constructor, called first |
/// | `weft_serve_v1_init` | `() -> i32` | optional; 0 = ready, else the error is in the response buffer |
/// | `weft_serve_v1_describe` | `() -> i32` | optional; 1 = the module's [`Signature`] is in the response buffer, 0 = none |
/// | `weft_serve_v1_alloc` | `(len: i32) -> i32` | a buffer of `len` bytes for the request |
/// | `weft_serve_v1_infer` | `(ptr: i32, len: i32) -> i32` | run one request (the guest owns and frees the buffer); 0 = ok |
/// | `weft_serve_v1_response_ptr` / `_len` | `() -> i32` | the response (a tensor message when ok, UTF-8 text when not), valid until the next call |
pub struct ServeAbi;

impl ServeAbi {
    pub const INIT: &str = "weft_serve_v1_init";
    pub const DESCRIBE: &str = "weft_serve_v1_describe";
    pub const ALLOC: &str = "weft_serve_v1_alloc";
    pub const INFER: &str = "weft_serve_v1_infer";
    pub const RESPONSE_PTR: &str = "weft_serve_v1_response_ptr";
    pub const RESPONSE_LEN: &str = "weft_serve_v1_response_len";
    const REQUIRED: [&str; 4] = [
        Self::ALLOC,
        Self::INFER,
        Self::RESPONSE_PTR,
        Self::RESPONSE_LEN,
    ];
}

pub(crate) fn check_core_exports(
    name: &str,
    module: &wasmtime::Module,
) -> Result<(), RuntimeError> {
    let missing: Vec<&str> = ServeAbi::REQUIRED
        .into_iter()
        .filter(|want| {
            !module
                .exports()
                .any(|e| e.name() == *want && e.ty().func().is_some())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = if module.exports().any(|e| e.name() == "_start") {
        " (it is a command module; serving needs a reactor: a `cdylib` crate using `weft_guest::serve!`)"
    } else {
        ""
    };
    Err(RuntimeError::NotServing {
        name: name.into(),
        message: format!("it does not export {}{hint}", missing.join(", ")),
    })
}

/// Why one inference call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The module looked at the request and returned an error.
    #[error("the model module rejected the request: {0}")]
    Rejected(String),
    /// The module broke the contract (a malformed response).
    #[error("the model module broke the serving contract: {0}")]
    Contract(String),
    /// The call trapped, hit its deadline or its memory cap; the instance
    /// has been retired.
    #[error(transparent)]
    Failed(RuntimeError),
}

// One per pooled instance, moved rarely: the size difference between the
// variants costs nothing worth an extra indirection per call.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Core {
        store: Store<CoreState>,
        describe: Option<TypedFunc<(), i32>>,
        memory: Memory,
        alloc: TypedFunc<i32, i32>,
        infer: TypedFunc<(i32, i32), i32>,
        response_ptr: TypedFunc<(), i32>,
        response_len: TypedFunc<(), i32>,
    },
    Component {
        store: Store<ComponentState>,
        predictor: Box<bindings::Predictor>,
    },
}

/// One live, initialized instance of a serving module. Not shareable: pool
/// several for concurrency.
pub struct Instance {
    inner: Inner,
    fuel: Option<u64>,
    retired: bool,
}

impl Runtime {
    /// Instantiate a serving program and run its initializer (under
    /// `opts.limits`). The result answers [`Instance::infer`] calls.
    pub fn instantiate(
        &self,
        program: &Program,
        opts: &RunOptions,
    ) -> Result<Instance, RuntimeError> {
        let limits = &opts.limits;
        let wasi = self.wasi_builder(program, opts)?;
        let backends = weft_nn::backends(self.nn);
        let models = weft_nn::Models::clone(&opts.models);
        let budget = std::sync::Arc::new(Budget::new(limits.max_memory));
        let name = program.name();
        let fail = |e: wasmtime::Error| match exit_or_error(e, limits) {
            Ok(code) => RuntimeError::NotServing {
                name: name.into(),
                message: format!("it exited with code {code} while starting"),
            },
            Err(e) => e,
        };
        let inner = match &program.pre {
            Pre::Core(pre) => {
                let state = CoreState::new(wasi, backends, models, budget);
                let mut store = self.store(state, limits)?;
                let instance = pre.instantiate(&mut store).map_err(fail)?;
                let func = |store: &mut Store<CoreState>, n: &str| {
                    instance
                        .get_func(&mut *store, n)
                        .ok_or_else(|| RuntimeError::NotServing {
                            name: name.into(),
                            message: format!("it does not export {n}"),
                        })
                };
                let typed_err = |n: &str, e: wasmtime::Error| RuntimeError::NotServing {
                    name: name.into(),
                    message: format!("export {n} has the wrong signature: {e:#}"),
                };
                let alloc = func(&mut store, ServeAbi::ALLOC)?
                    .typed(&store)
                    .map_err(|e| typed_err(ServeAbi::ALLOC, e))?;
                let infer = func(&mut store, ServeAbi::INFER)?
                    .typed(&store)
                    .map_err(|e| typed_err(ServeAbi::INFER, e))?;
                let response_ptr = func(&mut store, ServeAbi::RESPONSE_PTR)?
                    .typed(&store)
                    .map_err(|e| typed_err(ServeAbi::RESPONSE_PTR, e))?;
                let response_len = func(&mut store, ServeAbi::RESPONSE_LEN)?
                    .typed(&store)
                    .map_err(|e| typed_err(ServeAbi::RESPONSE_LEN, e))?;
                let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| {
                    RuntimeError::NotServing {
                        name: name.into(),
                        message: "it exports no memory named `memory`".into(),
                    }
                })?;
                if let Some(f) = instance.get_func(&mut store, "_initialize") {
                    f.typed::<(), ()>(&store)
                        .map_err(|e| typed_err("_initialize", e))?
                        .call(&mut store, ())
                        .map_err(fail)?;
                }
                let describe = match instance.get_func(&mut store, ServeAbi::DESCRIBE) {
                    Some(f) => Some(
                        f.typed(&store)
                            .map_err(|e| typed_err(ServeAbi::DESCRIBE, e))?,
                    ),
                    None => None,
                };
                let mut inner = Inner::Core {
                    store,
                    describe,
                    memory,
                    alloc,
                    infer,
                    response_ptr,
                    response_len,
                };
                if let Some(f) = instance_func(&mut inner, ServeAbi::INIT, &instance) {
                    let Inner::Core { store, .. } = &mut inner else {
                        unreachable!("core instance")
                    };
                    let status = f
                        .typed::<(), i32>(&*store)
                        .map_err(|e| typed_err(ServeAbi::INIT, e))?
                        .call(&mut *store, ())
                        .map_err(fail)?;
                    if status != 0 {
                        let why = core_response(&mut inner)
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_else(|e| e.to_string());
                        return Err(RuntimeError::NotServing {
                            name: name.into(),
                            message: format!("its initializer failed: {why}"),
                        });
                    }
                }
                inner
            }
            Pre::Predictor(pre) => {
                let state = ComponentState::new(wasi, backends, models, budget);
                let mut store = self.store(state, limits)?;
                let predictor = pre.instantiate(&mut store).map_err(fail)?;
                predictor
                    .call_init(&mut store)
                    .map_err(fail)?
                    .map_err(|why| RuntimeError::NotServing {
                        name: name.into(),
                        message: format!("its initializer failed: {why}"),
                    })?;
                Inner::Component {
                    store,
                    predictor: Box::new(predictor),
                }
            }
            Pre::Component(_) => {
                return Err(RuntimeError::NotServing {
                    name: name.into(),
                    message: "it was loaded to run, not to serve (use Runtime::load_service)"
                        .into(),
                });
            }
        };
        Ok(Instance {
            inner,
            fuel: limits.fuel,
            retired: false,
        })
    }
}

fn instance_func(
    inner: &mut Inner,
    name: &str,
    instance: &wasmtime::Instance,
) -> Option<wasmtime::Func> {
    match inner {
        Inner::Core { store, .. } => instance.get_func(&mut *store, name),
        Inner::Component { .. } => None,
    }
}

/// Copy the guest's response buffer out of its memory, bounds-checked.
fn core_response(inner: &mut Inner) -> Result<Vec<u8>, InferError> {
    let Inner::Core {
        store,
        memory,
        response_ptr,
        response_len,
        ..
    } = inner
    else {
        unreachable!("core instance")
    };
    let ptr = response_ptr
        .call(&mut *store, ())
        .map_err(|e| InferError::Contract(format!("{}: {e:#}", ServeAbi::RESPONSE_PTR)))?
        as u32 as usize;
    let len = response_len
        .call(&mut *store, ())
        .map_err(|e| InferError::Contract(format!("{}: {e:#}", ServeAbi::RESPONSE_LEN)))?
        as u32 as usize;
    memory
        .data(&*store)
        .get(ptr..ptr.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            InferError::Contract(format!(
                "response of {len} bytes at {ptr} lies outside the module's memory"
            ))
        })
}

impl Instance {
    /// Whether a failed call retired this instance; drop it and make another.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// The module's own interface, if it declares one.
    pub fn describe(&mut self) -> Result<Option<Signature>, InferError> {
        let limits = crate::Limits {
            max_memory: 0,
            timeout: Some(Duration::from_secs(10)),
            fuel: self.fuel,
        };
        match &mut self.inner {
            Inner::Core {
                store, describe, ..
            } => {
                let Some(f) = describe.clone() else {
                    return Ok(None);
                };
                arm(store, &limits);
                let has = f.call(&mut *store, ()).map_err(|e| trapped(e, &limits))?;
                if has == 0 {
                    return Ok(None);
                }
                let bytes = core_response(&mut self.inner)?;
                weft_abi::decode_signature(&bytes)
                    .map(Some)
                    .map_err(|e| InferError::Contract(e.to_string()))
            }
            Inner::Component { store, predictor } => {
                arm(store, &limits);
                let sig = predictor
                    .call_describe(&mut *store)
                    .map_err(|e| trapped(e, &limits))?;
                Ok(sig.map(|s| Signature {
                    inputs: s.inputs.into_iter().map(spec_from_wit).collect(),
                    outputs: s.outputs.into_iter().map(spec_from_wit).collect(),
                }))
            }
        }
    }

    /// Run one request. `deadline` bounds the wall-clock time of this call.
    pub fn infer(
        &mut self,
        inputs: Vec<Tensor>,
        deadline: Option<Duration>,
    ) -> Result<Vec<Tensor>, InferError> {
        if self.retired {
            return Err(InferError::Failed(RuntimeError::Trap {
                message: "instance was retired after an earlier failure".into(),
            }));
        }
        let limits = crate::Limits {
            max_memory: 0,
            timeout: deadline,
            fuel: self.fuel,
        };
        let result = match &mut self.inner {
            Inner::Core { store, .. } => {
                arm(store, &limits);
                self.infer_core(inputs)
            }
            Inner::Component { store, predictor } => {
                arm(store, &limits);
                let args: Vec<bindings::Tensor> = inputs.into_iter().map(to_wit).collect();
                match predictor.call_infer(&mut *store, &args) {
                    Ok(Ok(out)) => out.into_iter().map(from_wit).collect::<Result<_, _>>(),
                    Ok(Err(why)) => Err(InferError::Rejected(why)),
                    Err(e) => Err(trapped(e, &limits)),
                }
            }
        };
        if matches!(result, Err(InferError::Failed(_))) {
            self.retired = true;
        }
        result
    }

    fn infer_core(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let limits = crate::Limits {
            max_memory: 0,
            timeout: None,
            fuel: None,
        };
        let wire = weft_abi::encode(&inputs);
        drop(inputs);
        let len = i32::try_from(wire.len()).map_err(|_| {
            InferError::Rejected(format!("request of {} bytes is over 2 GiB", wire.len()))
        })?;
        let status = {
            let Inner::Core {
                store,
                memory,
                alloc,
                infer,
                ..
            } = &mut self.inner
            else {
                unreachable!("core instance")
            };
            let ptr = alloc
                .call(&mut *store, len)
                .map_err(|e| trapped(e, &limits))? as u32 as usize;
            let Some(dst) = memory
                .data_mut(&mut *store)
                .get_mut(ptr..ptr.saturating_add(wire.len()))
            else {
                return Err(InferError::Contract(format!(
                    "{} returned {ptr}, which cannot hold {len} bytes",
                    ServeAbi::ALLOC
                )));
            };
            dst.copy_from_slice(&wire);
            infer
                .call(&mut *store, (ptr as i32, len))
                .map_err(|e| trapped(e, &limits))?
        };
        let response = core_response(&mut self.inner)?;
        if status != 0 {
            return Err(InferError::Rejected(
                String::from_utf8_lossy(&response).into_owned(),
            ));
        }
        weft_abi::decode(&response).map_err(|e| InferError::Contract(e.to_string()))
    }
}

/// Give a store a fresh deadline (and fuel) for one call.
fn arm<T: HasLimiter>(store: &mut Store<T>, limits: &crate::Limits) {
    crate::set_deadline(store, limits.timeout);
    if let Some(fuel) = limits.fuel {
        let _ = store.set_fuel(fuel);
    }
}

fn trapped(e: wasmtime::Error, limits: &crate::Limits) -> InferError {
    match exit_or_error(e, limits) {
        Ok(code) => InferError::Failed(RuntimeError::Trap {
            message: format!("the module exited with code {code} during a request"),
        }),
        Err(e) => InferError::Failed(e),
    }
}

fn to_wit(t: Tensor) -> bindings::Tensor {
    use bindings::Datatype as W;
    use weft_abi::DataType as D;
    let datatype = match t.datatype {
        D::Bool => W::Bool,
        D::Uint8 => W::Uint8,
        D::Uint16 => W::Uint16,
        D::Uint32 => W::Uint32,
        D::Uint64 => W::Uint64,
        D::Int8 => W::Int8,
        D::Int16 => W::Int16,
        D::Int32 => W::Int32,
        D::Int64 => W::Int64,
        D::Fp16 => W::Fp16,
        D::Fp32 => W::Fp32,
        D::Fp64 => W::Fp64,
        D::Bytes => W::Bytes,
    };
    bindings::Tensor {
        name: t.name,
        datatype,
        shape: t.shape,
        data: t.data,
    }
}

fn spec_from_wit(t: bindings::TensorSpec) -> TensorSpec {
    TensorSpec {
        name: t.name,
        datatype: t.datatype.map(datatype_from_wit),
        shape: t
            .shape
            .map(|d| d.into_iter().map(weft_abi::Dim::from_wire).collect()),
    }
}

fn datatype_from_wit(d: bindings::Datatype) -> weft_abi::DataType {
    use bindings::Datatype as W;
    use weft_abi::DataType as D;
    match d {
        W::Bool => D::Bool,
        W::Uint8 => D::Uint8,
        W::Uint16 => D::Uint16,
        W::Uint32 => D::Uint32,
        W::Uint64 => D::Uint64,
        W::Int8 => D::Int8,
        W::Int16 => D::Int16,
        W::Int32 => D::Int32,
        W::Int64 => D::Int64,
        W::Fp16 => D::Fp16,
        W::Fp32 => D::Fp32,
        W::Fp64 => D::Fp64,
        W::Bytes => D::Bytes,
    }
}

fn from_wit(t: bindings::Tensor) -> Result<Tensor, InferError> {
    let datatype = datatype_from_wit(t.datatype);
    if t.shape.len() > usize::from(weft_abi::MAX_RANK) {
        return Err(InferError::Contract(format!(
            "output {:?} has rank {}",
            t.name,
            t.shape.len()
        )));
    }
    Ok(Tensor {
        name: t.name,
        datatype,
        shape: t.shape,
        data: t.data,
    })
}
