//! Write a Weft serving module.
//!
//! Implement [`Predictor`] and call [`serve!`] once in a `cdylib` crate.
//! Built for `wasm32-wasip2` the crate becomes a component exporting the
//! `weft:serve/predictor` world (`runtime/wit/serve.wit`); built for
//! `wasm32-wasip1` it becomes a reactor module exporting the
//! `weft_serve_v1_*` functions. `weft serve` calls [`Predictor::init`] once
//! per pooled instance and [`Predictor::infer`] once per request.
//!
//! ```ignore
//! struct Echo;
//! impl weft_serve_guest::Predictor for Echo {
//!     fn init() -> Result<Self, String> { Ok(Echo) }
//!     fn infer(&mut self, inputs: Vec<weft_serve_guest::Tensor>) -> Result<Vec<weft_serve_guest::Tensor>, String> {
//!         Ok(inputs)
//!     }
//! }
//! weft_serve_guest::serve!(Echo);
//! ```
//!
//! This is a separate crate from `weft-guest` on purpose: the component
//! world it declares must only be linked into modules that implement it.

pub use weft_abi::{DataType, Dim, Signature, Tensor, TensorSpec, bytes_data, bytes_elements};

/// A serving module's logic.
pub trait Predictor: Sized + 'static {
    /// Make an instance ready to serve (load graphs by name, allocate).
    fn init() -> Result<Self, String>;
    /// The module's own interface, reported as the model's metadata and
    /// checked before requests reach it. `None` (the default): the host
    /// describes the graph preloaded as `model`.
    fn describe() -> Option<Signature> {
        None
    }
    /// Answer one request. An `Err` fails that request (the host answers
    /// 400 with the message); the instance keeps serving.
    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../runtime/wit",
        world: "predictor",
        pub_export_macro: true,
        default_bindings_module: "weft_serve_guest::bindings",
    });
}

#[doc(hidden)]
pub mod rt {
    use super::{Predictor, Tensor};
    use std::cell::RefCell;

    thread_local! {
        static RESPONSE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub fn init<P: Predictor>(state: &RefCell<Option<P>>) -> Result<(), String> {
        let p = P::init()?;
        *state.borrow_mut() = Some(p);
        Ok(())
    }

    pub fn infer<P: Predictor>(
        state: &RefCell<Option<P>>,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, String> {
        let mut slot = state.borrow_mut();
        if slot.is_none() {
            *slot = Some(P::init()?);
        }
        slot.as_mut().expect("initialized above").infer(inputs)
    }

    fn respond(bytes: Vec<u8>) {
        RESPONSE.with(|r| *r.borrow_mut() = bytes);
    }

    /// `weft_serve_v1_init`
    pub fn p1_init<P: Predictor>(state: &RefCell<Option<P>>) -> i32 {
        match init(state) {
            Ok(()) => 0,
            Err(e) => {
                respond(e.into_bytes());
                1
            }
        }
    }

    /// `weft_serve_v1_alloc`: a buffer the host fills; `p1_infer` frees it.
    pub fn p1_alloc(len: i32) -> i32 {
        let buf = vec![0u8; len.max(0) as usize].into_boxed_slice();
        Box::into_raw(buf) as *mut u8 as usize as i32
    }

    /// `weft_serve_v1_infer`
    ///
    /// # Safety
    /// `ptr`/`len` must come from `p1_alloc` (the host's contract).
    pub unsafe fn p1_infer<P: Predictor>(state: &RefCell<Option<P>>, ptr: i32, len: i32) -> i32 {
        let len = len.max(0) as usize;
        // SAFETY: the host passes back exactly what `p1_alloc` returned.
        let buf = unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                ptr as usize as *mut u8,
                len,
            ))
        };
        let result = weft_abi::decode(&buf)
            .map_err(|e| e.to_string())
            .and_then(|inputs| {
                drop(buf);
                infer(state, inputs)
            });
        match result {
            Ok(outputs) => {
                respond(weft_abi::encode(&outputs));
                0
            }
            Err(e) => {
                respond(e.into_bytes());
                1
            }
        }
    }

    /// `weft_serve_v1_describe`: 1 with the signature in the response
    /// buffer, 0 for none.
    pub fn p1_describe<P: Predictor>() -> i32 {
        match P::describe() {
            Some(sig) => {
                respond(weft_abi::encode_signature(&sig));
                1
            }
            None => 0,
        }
    }

    pub fn p1_response_ptr() -> i32 {
        RESPONSE.with(|r| r.borrow().as_ptr() as usize as i32)
    }

    pub fn p1_response_len() -> i32 {
        RESPONSE.with(|r| r.borrow().len() as i32)
    }
}

/// Export a [`Predictor`] as this module's serving entry points.
#[macro_export]
macro_rules! serve {
    ($t:ty) => {
        thread_local! {
            static __WEFT_PREDICTOR: ::std::cell::RefCell<Option<$t>> =
                const { ::std::cell::RefCell::new(None) };
        }

        #[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
        const _: () = {
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_init() -> i32 {
                __WEFT_PREDICTOR.with(|s| $crate::rt::p1_init::<$t>(s))
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_describe() -> i32 {
                $crate::rt::p1_describe::<$t>()
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_alloc(len: i32) -> i32 {
                $crate::rt::p1_alloc(len)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_infer(ptr: i32, len: i32) -> i32 {
                // SAFETY: the host passes back what weft_serve_v1_alloc gave.
                __WEFT_PREDICTOR.with(|s| unsafe { $crate::rt::p1_infer::<$t>(s, ptr, len) })
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_response_ptr() -> i32 {
                $crate::rt::p1_response_ptr()
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn weft_serve_v1_response_len() -> i32 {
                $crate::rt::p1_response_len()
            }
        };

        #[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
        const _: () = {
            use $crate::bindings::{
                Datatype as W, Guest, Signature as WitSignature, Tensor as WitTensor,
                TensorSpec as WitSpec,
            };
            use $crate::{DataType as D, Tensor};
            struct __WeftExport;
            fn to_abi(t: WitTensor) -> Tensor {
                let datatype = match t.datatype {
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
                };
                Tensor::new(t.name, datatype, t.shape, t.data)
            }
            fn wit_type(d: D) -> W {
                match d {
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
                }
            }
            fn to_wit(t: Tensor) -> WitTensor {
                let datatype = wit_type(t.datatype);
                WitTensor {
                    name: t.name,
                    datatype,
                    shape: t.shape,
                    data: t.data,
                }
            }
            impl Guest for __WeftExport {
                fn describe() -> Option<WitSignature> {
                    let spec = |t: $crate::TensorSpec| WitSpec {
                        name: t.name,
                        datatype: t.datatype.map(wit_type),
                        shape: t.shape.map(|d| d.iter().map($crate::Dim::wire).collect()),
                    };
                    <$t as $crate::Predictor>::describe().map(|s| WitSignature {
                        inputs: s.inputs.into_iter().map(spec).collect(),
                        outputs: s.outputs.into_iter().map(spec).collect(),
                    })
                }
                fn init() -> Result<(), String> {
                    __WEFT_PREDICTOR.with(|s| $crate::rt::init::<$t>(s))
                }
                fn infer(inputs: Vec<WitTensor>) -> Result<Vec<WitTensor>, String> {
                    let inputs = inputs.into_iter().map(to_abi).collect();
                    __WEFT_PREDICTOR
                        .with(|s| $crate::rt::infer::<$t>(s, inputs))
                        .map(|out| out.into_iter().map(to_wit).collect())
                }
            }
    $crate::bindings::export!(__WeftExport with_types_in $crate::bindings);
        };
    };
}
