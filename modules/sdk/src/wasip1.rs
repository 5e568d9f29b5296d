//! wasm32-wasip1: the witx ABI of the `wasi_ephemeral_nn` import module.
//!
//! Every import takes i32 arguments and returns an `nn_errno` (0 = success).
//! Pointers are plain wasm32 addresses, so `usize as u32` is lossless here.

use crate::{Encoding, Error, ErrorCode, Result, Target, Tensor, TensorType, shape};

mod raw {
    use std::mem::{align_of, offset_of, size_of};

    /// One `graph_builder`: a `(pointer, length)` pair of bytes.
    #[repr(C)]
    pub struct Builder {
        pub ptr: *const u8,
        pub len: u32,
    }

    /// The witx `tensor` record.
    #[repr(C)]
    pub struct Tensor {
        pub dims_ptr: *const u32,
        pub dims_len: u32,
        /// 0 f16, 1 f32, 2 f64, 3 u8, 4 i32, 5 i64.
        pub ty: u8,
        pub data_ptr: *const u8,
        pub data_len: u32,
    }

    const _: () = assert!(size_of::<Builder>() == 8);
    const _: () = assert!(size_of::<Tensor>() == 20 && align_of::<Tensor>() == 4);
    const _: () = assert!(offset_of!(Tensor, ty) == 8 && offset_of!(Tensor, data_ptr) == 12);

    #[link(wasm_import_module = "wasi_ephemeral_nn")]
    unsafe extern "C" {
        /// `encoding`: 0 openvino, 1 onnx, 2 tensorflow, 3 pytorch,
        /// 4 tensorflowlite, 5 autodetect. `target`: 0 cpu, 1 gpu, 2 tpu.
        pub fn load(
            builders: *const Builder,
            builders_len: u32,
            encoding: u32,
            target: u32,
            graph_out: *mut u32,
        ) -> u32;
        pub fn load_by_name(name: *const u8, name_len: u32, graph_out: *mut u32) -> u32;
        pub fn init_execution_context(graph: u32, ctx_out: *mut u32) -> u32;
        pub fn set_input(ctx: u32, index: u32, tensor: *const Tensor) -> u32;
        pub fn compute(ctx: u32) -> u32;
        pub fn get_output(
            ctx: u32,
            index: u32,
            out: *mut u8,
            out_max_len: u32,
            bytes_written_out: *mut u32,
        ) -> u32;
        /// Weft extension: an output's type code, dimensions and rank.
        #[cfg(feature = "output-info")]
        pub fn weft_get_output_info(
            ctx: u32,
            index: u32,
            ty_out: *mut u32,
            dims_out: *mut u32,
            dims_cap: u32,
            rank_out: *mut u32,
        ) -> u32;
        /// Weft extension: output `output` of each compute becomes input
        /// `input` of the next, on the host.
        #[cfg(feature = "residency")]
        pub fn weft_bind_output(ctx: u32, output: u32, input: u32) -> u32;
        /// Weft/WasmEdge extension.
        #[cfg(feature = "drop-handles")]
        pub fn unload(graph: u32) -> u32;
        /// Weft/WasmEdge extension.
        #[cfg(feature = "drop-handles")]
        pub fn finalize_execution_context(ctx: u32) -> u32;
    }
}

/// Largest output buffer tried when the output size is not known in advance.
const MAX_OUTPUT_BYTES: usize = 1 << 30;
/// Smallest first guess for an output of unknown size.
const MIN_OUTPUT_GUESS: usize = 64 << 10;

fn check(errno: u32, op: impl FnOnce() -> String) -> Result<()> {
    let code = match errno {
        0 => return Ok(()),
        1 => ErrorCode::InvalidArgument,
        2 => ErrorCode::InvalidEncoding,
        3 => ErrorCode::MissingMemory,
        4 => ErrorCode::Busy,
        5 => ErrorCode::RuntimeError,
        6 => ErrorCode::UnsupportedOperation,
        7 => ErrorCode::TooLarge,
        8 => ErrorCode::NotFound,
        _ => {
            return Err(Error::guest(
                ErrorCode::Unknown,
                op(),
                format!("errno {errno}"),
            ));
        }
    };
    Err(Error::new(code, op(), None))
}

fn no_names(op: String) -> Error {
    Error::guest(
        ErrorCode::UnsupportedOperation,
        op,
        "the wasip1 wasi-nn ABI addresses tensors by index only",
    )
}

pub(crate) struct Graph(u32);

impl Graph {
    pub fn load(builders: &[&[u8]], encoding: Encoding, target: Target) -> Result<Graph> {
        let builders: Vec<raw::Builder> = builders
            .iter()
            .map(|b| raw::Builder {
                ptr: b.as_ptr(),
                len: b.len() as u32,
            })
            .collect();
        let encoding = match encoding {
            Encoding::Openvino => 0,
            Encoding::Onnx => 1,
            Encoding::Tensorflow => 2,
            Encoding::Pytorch => 3,
            Encoding::TensorflowLite => 4,
            Encoding::Autodetect => 5,
        };
        let target = match target {
            Target::Cpu => 0,
            Target::Gpu => 1,
            Target::Tpu => 2,
        };
        let mut handle = 0;
        // SAFETY: `builders` and the slices it points to outlive the call;
        // `handle` is a valid out-pointer.
        let errno = unsafe {
            raw::load(
                builders.as_ptr(),
                builders.len() as u32,
                encoding,
                target,
                &mut handle,
            )
        };
        check(errno, || "load".into())?;
        Ok(Graph(handle))
    }

    pub fn load_by_name(name: &str) -> Result<Graph> {
        let mut handle = 0;
        // SAFETY: `name` is valid for the call; `handle` is a valid out-pointer.
        let errno = unsafe { raw::load_by_name(name.as_ptr(), name.len() as u32, &mut handle) };
        check(errno, || format!("load_by_name({name:?})"))?;
        Ok(Graph(handle))
    }

    pub fn context(&self) -> Result<Context> {
        let mut handle = 0;
        // SAFETY: `handle` is a valid out-pointer.
        let errno = unsafe { raw::init_execution_context(self.0, &mut handle) };
        check(errno, || "init_execution_context".into())?;
        Ok(Context(handle))
    }
}

#[cfg(feature = "drop-handles")]
impl Drop for Graph {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here: the handle is gone.
        // SAFETY: plain integer arguments.
        unsafe { raw::unload(self.0) };
    }
}

pub(crate) struct Context(u32);

impl Context {
    pub fn set_input(&mut self, index: u32, tensor: &Tensor) -> Result<()> {
        let ty = match tensor.ty {
            TensorType::F16 => 0,
            TensorType::F32 => 1,
            TensorType::F64 => 2,
            TensorType::U8 => 3,
            TensorType::I32 => 4,
            TensorType::I64 => 5,
        };
        let repr = raw::Tensor {
            dims_ptr: tensor.dims.as_ptr(),
            dims_len: tensor.dims.len() as u32,
            ty,
            data_ptr: tensor.data.as_ptr(),
            data_len: tensor.data.len() as u32,
        };
        // SAFETY: `repr` and the buffers it points to outlive the call.
        let errno = unsafe { raw::set_input(self.0, index, &repr) };
        check(errno, || format!("set_input({index})"))
    }

    pub fn set_input_named(&mut self, name: &str, _tensor: &Tensor) -> Result<()> {
        Err(no_names(format!("set_input({name:?})")))
    }

    pub fn compute(&mut self) -> Result<()> {
        // SAFETY: plain integer argument.
        check(unsafe { raw::compute(self.0) }, || "compute".into())
    }

    #[cfg(feature = "residency")]
    pub fn bind_output(&mut self, output: u32, input: u32) -> Result<()> {
        // SAFETY: plain integer arguments.
        let errno = unsafe { raw::weft_bind_output(self.0, output, input) };
        check(errno, || format!("weft_bind_output({output}, {input})"))
    }

    #[cfg(not(feature = "residency"))]
    pub fn bind_output(&mut self, output: u32, input: u32) -> Result<()> {
        Err(Error::guest(
            ErrorCode::UnsupportedOperation,
            format!("weft_bind_output({output}, {input})"),
            "built without the `residency` feature, which needs Weft's extension",
        ))
    }

    pub fn output_bytes(&self, index: u32, max_len: usize) -> Result<Vec<u8>> {
        let op = || format!("get_output({index})");
        // Not zeroed: the host writes the bytes, and zeroing a generous
        // `max_len` on every call would cost more than the copy itself.
        let mut buf: Vec<u8> = Vec::with_capacity(max_len);
        let mut written = 0u32;
        // SAFETY: `buf` has `max_len` bytes of allocated capacity for the host
        // to write into; `written` is a valid out-pointer.
        let errno = unsafe {
            raw::get_output(
                self.0,
                index,
                buf.as_mut_ptr(),
                max_len as u32,
                &mut written,
            )
        };
        check(errno, op)?;
        let written = written as usize;
        if written > max_len {
            return Err(Error::guest(
                ErrorCode::RuntimeError,
                op(),
                format!("host reports {written} bytes written into a {max_len}-byte buffer"),
            ));
        }
        // SAFETY: the host initialized the first `written` bytes (checked
        // above to be within the capacity), and any byte is a valid `u8`.
        unsafe { buf.set_len(written) };
        Ok(buf)
    }

    pub fn output(&self, index: u32, ty: TensorType, dims_hint: &[u32]) -> Result<Tensor> {
        let op = || format!("get_output({index})");
        let bytes = match shape::exact_bytes(dims_hint, ty) {
            Some(len) => self.output_bytes(index, len).map_err(|e| {
                if too_small(&e) {
                    let detail = format!(
                        "output is larger than a {} tensor of shape {dims_hint:?}",
                        ty.name()
                    );
                    Error::guest(e.code(), op(), detail)
                } else {
                    e
                }
            })?,
            None => self.output_of_unknown_size(index, ty, dims_hint)?,
        };
        let dims = shape::resolve(dims_hint, ty, bytes.len())
            .map_err(|detail| Error::guest(ErrorCode::InvalidArgument, op(), detail))?;
        Ok(Tensor {
            dims,
            ty,
            data: bytes,
        })
    }

    /// The witx ABI cannot tell the size of an output, so guess generously
    /// and double the buffer while the host says it is too small.
    fn output_of_unknown_size(&self, index: u32, ty: TensorType, hint: &[u32]) -> Result<Vec<u8>> {
        let unit = shape::known_bytes(hint, ty).unwrap_or(MAX_OUTPUT_BYTES);
        let mut len = unit
            .saturating_mul(64)
            .clamp(MIN_OUTPUT_GUESS, MAX_OUTPUT_BYTES);
        loop {
            match self.output_bytes(index, len) {
                Err(e) if too_small(&e) && len < MAX_OUTPUT_BYTES => {
                    len = (len * 2).min(MAX_OUTPUT_BYTES);
                }
                result => return result,
            }
        }
    }

    pub fn output_named(&self, name: &str) -> Result<Tensor> {
        Err(no_names(format!("get_output({name:?})")))
    }

    #[cfg(feature = "output-info")]
    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        const CAP: usize = 32;
        let mut out = Vec::new();
        for index in 0.. {
            let op = || format!("weft_get_output_info({index})");
            let (mut ty, mut rank) = (0u32, 0u32);
            let mut dims = [0u32; CAP];
            // SAFETY: all three out-pointers are valid for the sizes given.
            let errno = unsafe {
                raw::weft_get_output_info(
                    self.0,
                    index,
                    &mut ty,
                    dims.as_mut_ptr(),
                    CAP as u32,
                    &mut rank,
                )
            };
            // Past the last output the host answers invalid_argument.
            if errno == 1 && index > 0 {
                break;
            }
            check(errno, op)?;
            let ty = match ty {
                0 => TensorType::F16,
                1 => TensorType::F32,
                2 => TensorType::F64,
                3 => TensorType::U8,
                4 => TensorType::I32,
                5 => TensorType::I64,
                other => {
                    let detail = format!("host reports unknown tensor type {other}");
                    return Err(Error::guest(ErrorCode::RuntimeError, op(), detail));
                }
            };
            let dims = &dims[..(rank as usize).min(CAP)];
            out.push((index.to_string(), self.output(index, ty, dims)?));
        }
        Ok(out)
    }

    #[cfg(not(feature = "output-info"))]
    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        let detail = "built without the `output-info` feature, which needs Weft's extension";
        Err(Error::guest(
            ErrorCode::UnsupportedOperation,
            String::from("outputs"),
            detail,
        ))
    }
}

/// How wasip1 hosts answer an output buffer that is too small.
fn too_small(e: &Error) -> bool {
    matches!(e.code(), ErrorCode::MissingMemory | ErrorCode::TooLarge)
}

#[cfg(feature = "drop-handles")]
impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: plain integer argument; a failure cannot be acted upon.
        unsafe { raw::finalize_execution_context(self.0) };
    }
}
