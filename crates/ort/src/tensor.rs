//! Tensors as wasi-nn carries them (packed bytes in the host's byte order,
//! little-endian on every host Weft runs on) and their conversion to and
//! from onnxruntime values, narrowing and widening the element types
//! wasi-nn lacks the way the tract engine does.

use crate::OrtError;
use bytemuck::Pod;
use half::{bf16, f16};
use ort::session::SessionInputValue;
use ort::value::{
    DynValue, PrimitiveTensorElementType, Tensor as OrtTensor, TensorElementType as Onnx,
    TensorRef as OrtTensorRef, ValueType,
};
use std::fmt;

/// The element types of wasi-nn tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    F16,
    Bf16,
    F32,
    F64,
    U8,
    I32,
    I64,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F16 | ElementType::Bf16 => 2,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
        }
    }

    /// The lower-case name errors use, `f32`.
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F16 => "f16",
            ElementType::Bf16 => "bf16",
            ElementType::F32 => "f32",
            ElementType::F64 => "f64",
            ElementType::U8 => "u8",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor handed to the engine: borrowed, so the engine reads the
/// caller's bytes in place when they are aligned for the type.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub ty: ElementType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// A tensor the engine returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub ty: ElementType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The wasi-nn type an ONNX element type travels as: itself where wasi-nn
/// has it, else the nearest wider integer (bool, i8, i16 and u16 as i32;
/// u32 and u64 as i64); `None` for what no wasi-nn type holds (strings,
/// complex numbers, 8- and 4-bit floats and integers).
pub(crate) fn wire_type(onnx: Onnx) -> Option<ElementType> {
    Some(match onnx {
        Onnx::Float16 => ElementType::F16,
        Onnx::Bfloat16 => ElementType::Bf16,
        Onnx::Float32 => ElementType::F32,
        Onnx::Float64 => ElementType::F64,
        Onnx::Uint8 => ElementType::U8,
        Onnx::Int32 | Onnx::Bool | Onnx::Int8 | Onnx::Int16 | Onnx::Uint16 => ElementType::I32,
        Onnx::Int64 | Onnx::Uint32 | Onnx::Uint64 => ElementType::I64,
        _ => return None,
    })
}

/// The serving contract's name for an ONNX element type; `None` for one it
/// has no name for.
pub(crate) fn datatype(onnx: Onnx) -> Option<weft_abi::DataType> {
    use weft_abi::DataType as D;
    Some(match onnx {
        Onnx::Bool => D::Bool,
        Onnx::Uint8 => D::Uint8,
        Onnx::Uint16 => D::Uint16,
        Onnx::Uint32 => D::Uint32,
        Onnx::Uint64 => D::Uint64,
        Onnx::Int8 => D::Int8,
        Onnx::Int16 => D::Int16,
        Onnx::Int32 => D::Int32,
        Onnx::Int64 => D::Int64,
        Onnx::Float16 => D::Fp16,
        Onnx::Float32 => D::Fp32,
        Onnx::Float64 => D::Fp64,
        Onnx::String => D::Bytes,
        _ => return None,
    })
}

fn run_error(e: ort::Error) -> OrtError {
    OrtError::Run {
        message: e.to_string(),
    }
}

/// An input value of the model's own type from checked wasi-nn bytes.
pub(crate) fn input_value<'a>(
    t: &TensorRef<'a>,
    onnx: Onnx,
) -> Result<SessionInputValue<'a>, OrtError> {
    let (shape, data) = (t.shape, t.data);
    match onnx {
        Onnx::Float32 => view::<f32>(shape, data),
        Onnx::Float64 => view::<f64>(shape, data),
        Onnx::Uint8 => view::<u8>(shape, data),
        Onnx::Int32 => view::<i32>(shape, data),
        Onnx::Int64 => view::<i64>(shape, data),
        Onnx::Float16 => convert::<u16, f16>(shape, data, f16::from_bits),
        Onnx::Bfloat16 => convert::<u16, bf16>(shape, data, bf16::from_bits),
        Onnx::Bool => convert::<i32, bool>(shape, data, |v| v != 0),
        Onnx::Int8 => convert::<i32, i8>(shape, data, |v| v as i8),
        Onnx::Int16 => convert::<i32, i16>(shape, data, |v| v as i16),
        Onnx::Uint16 => convert::<i32, u16>(shape, data, |v| v as u16),
        Onnx::Uint32 => convert::<i64, u32>(shape, data, |v| v as u32),
        Onnx::Uint64 => convert::<i64, u64>(shape, data, |v| v as u64),
        other => Err(OrtError::Run {
            message: format!("an input of element type {other} cannot be built"),
        }),
    }
}

/// The bytes in place when they are aligned for `T` (a `Vec<u8>` from the
/// system allocator is), else one copy.
fn view<'a, T: PrimitiveTensorElementType + Pod + fmt::Debug>(
    shape: &[usize],
    data: &'a [u8],
) -> Result<SessionInputValue<'a>, OrtError> {
    match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(elements) => Ok(OrtTensorRef::from_array_view((shape.to_vec(), elements))
            .map_err(run_error)?
            .into()),
        Err(_) => Ok(OrtTensor::from_array((shape.to_vec(), collect::<T>(data)))
            .map_err(run_error)?
            .into()),
    }
}

/// The elements of (possibly unaligned) bytes.
fn collect<T: Pod>(data: &[u8]) -> Vec<T> {
    data.chunks_exact(size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// A copy with each element converted from its wire type `W`.
fn convert<W: Pod, T: PrimitiveTensorElementType + Clone + fmt::Debug + 'static>(
    shape: &[usize],
    data: &[u8],
    f: impl Fn(W) -> T,
) -> Result<SessionInputValue<'static>, OrtError> {
    let elements: Vec<T> = data
        .chunks_exact(size_of::<W>())
        .map(|c| f(bytemuck::pod_read_unaligned(c)))
        .collect();
    Ok(OrtTensor::from_array((shape.to_vec(), elements))
        .map_err(run_error)?
        .into())
}

/// An output value as a wasi-nn tensor (one copy), widened where wasi-nn
/// lacks its type.
pub(crate) fn output_tensor(name: &str, value: &DynValue) -> Result<Tensor, OrtError> {
    let unsupported = |what: String| OrtError::UnsupportedOutput {
        name: name.into(),
        onnx_type: what,
    };
    let onnx = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(unsupported(format!("a {other}"))),
    };
    match onnx {
        Onnx::Float32 => copy::<f32>(value, ElementType::F32),
        Onnx::Float64 => copy::<f64>(value, ElementType::F64),
        Onnx::Uint8 => copy::<u8>(value, ElementType::U8),
        Onnx::Int32 => copy::<i32>(value, ElementType::I32),
        Onnx::Int64 => copy::<i64>(value, ElementType::I64),
        Onnx::Float16 => widen::<f16, u16>(value, ElementType::F16, f16::to_bits),
        Onnx::Bfloat16 => widen::<bf16, u16>(value, ElementType::Bf16, bf16::to_bits),
        Onnx::Bool => widen::<bool, i32>(value, ElementType::I32, i32::from),
        Onnx::Int8 => widen::<i8, i32>(value, ElementType::I32, i32::from),
        Onnx::Int16 => widen::<i16, i32>(value, ElementType::I32, i32::from),
        Onnx::Uint16 => widen::<u16, i32>(value, ElementType::I32, i32::from),
        Onnx::Uint32 => widen::<u32, i64>(value, ElementType::I64, i64::from),
        // As tract's cast does: values past i64::MAX wrap.
        Onnx::Uint64 => widen::<u64, i64>(value, ElementType::I64, |v| v as i64),
        other => Err(unsupported(format!("a tensor of {other}"))),
    }
}

fn dims(shape: &[i64]) -> Result<Vec<usize>, OrtError> {
    shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| OrtError::Run {
            message: format!("onnxruntime returned an output of shape {shape:?}"),
        })
}

fn copy<T: PrimitiveTensorElementType + Pod>(
    value: &DynValue,
    ty: ElementType,
) -> Result<Tensor, OrtError> {
    let (shape, data) = value.try_extract_tensor::<T>().map_err(run_error)?;
    Ok(Tensor {
        ty,
        shape: dims(shape)?,
        data: bytemuck::cast_slice(data).to_vec(),
    })
}

fn widen<T: PrimitiveTensorElementType + Copy, W: Pod>(
    value: &DynValue,
    ty: ElementType,
    f: impl Fn(T) -> W,
) -> Result<Tensor, OrtError> {
    let (shape, data) = value.try_extract_tensor::<T>().map_err(run_error)?;
    let mut bytes = Vec::with_capacity(data.len() * size_of::<W>());
    for &v in data {
        bytes.extend_from_slice(bytemuck::bytes_of(&f(v)));
    }
    Ok(Tensor {
        ty,
        shape: dims(shape)?,
        data: bytes,
    })
}
