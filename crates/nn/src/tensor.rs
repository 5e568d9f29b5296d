//! Conversions between wasi-nn tensors (bytes + dims + type) and tract tensors.

use crate::error::NnError;
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};
use wasmtime_wasi_nn::Tensor;
use wasmtime_wasi_nn::wit::TensorType;

/// Largest tensor a guest may hand the backend (4 GiB is the whole wasm32
/// address space, so anything bigger is a lie about dims).
const MAX_TENSOR_BYTES: usize = 4 << 30;

/// The tract datum type for a wasi-nn tensor type.
pub fn datum_type(ty: TensorType) -> Result<DatumType, NnError> {
    Ok(match ty {
        TensorType::Fp16 => DatumType::F16,
        TensorType::Fp32 => DatumType::F32,
        TensorType::Fp64 => DatumType::F64,
        TensorType::U8 => DatumType::U8,
        TensorType::I32 => DatumType::I32,
        TensorType::I64 => DatumType::I64,
        TensorType::Bf16 => return Err(NnError::UnsupportedType("bf16".into())),
    })
}

/// The wasi-nn tensor type a tract datum type is reported as, if any.
pub fn tensor_type(dt: DatumType) -> Option<TensorType> {
    Some(match dt {
        DatumType::F16 => TensorType::Fp16,
        DatumType::F32 => TensorType::Fp32,
        DatumType::F64 => TensorType::Fp64,
        DatumType::U8 => TensorType::U8,
        DatumType::I32 => TensorType::I32,
        DatumType::I64 => TensorType::I64,
        _ => return None,
    })
}

/// A short lower-case name for a tensor type, as used in errors and metadata.
pub fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "f16",
        TensorType::Fp32 => "f32",
        TensorType::Fp64 => "f64",
        TensorType::Bf16 => "bf16",
        TensorType::U8 => "u8",
        TensorType::I32 => "i32",
        TensorType::I64 => "i64",
    }
}

/// Validate a guest tensor and turn it into a tract tensor.
///
/// Every size is checked with overflow-safe arithmetic before anything is
/// allocated: dims come straight from an untrusted guest.
pub fn to_tract(t: &Tensor) -> Result<TractTensor, NnError> {
    let dt = datum_type(t.ty)?;
    // A zero dimension next to huge ones holds nothing but gives strides
    // no machine can hold: bounded like every other shape.
    let dims: Vec<u64> = t.dimensions.iter().map(|&d| u64::from(d)).collect();
    weft_abi::check_shape(&dims).map_err(|_| NnError::TooLarge {
        dims: t.dimensions.clone(),
    })?;
    let shape: Vec<usize> = t.dimensions.iter().map(|&d| d as usize).collect();
    let expected = shape
        .iter()
        .try_fold(dt.size_of(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_BYTES)
        .ok_or_else(|| NnError::TooLarge {
            dims: t.dimensions.clone(),
        })?;
    if expected != t.data.len() {
        return Err(NnError::DataLength {
            dims: t.dimensions.clone(),
            dtype: type_name(t.ty).into(),
            expected,
            got: t.data.len(),
        });
    }
    // SAFETY: `dt` is one of f16/f32/f64/u8/i32/i64 (see `datum_type`): plain
    // numbers for which every byte pattern is a valid value, and the length
    // was checked against the shape above. `from_raw_dt` copies into an
    // aligned buffer, so the guest buffer's alignment does not matter.
    unsafe { TractTensor::from_raw_dt(dt, &shape, &t.data) }.map_err(|e| NnError::Compute {
        message: format!("{e:#}"),
    })
}

/// The type a tract datum type travels as over wasi-nn, which lacks bool,
/// the narrow and unsigned integers, and tract's symbolic dims (`TDim`,
/// the output of `Shape`): each is widened to the nearest type it has.
pub fn wire_type(dt: DatumType) -> Option<DatumType> {
    match dt {
        DatumType::Bool | DatumType::I8 | DatumType::I16 | DatumType::U16 => Some(DatumType::I32),
        DatumType::U32 | DatumType::U64 | DatumType::TDim => Some(DatumType::I64),
        dt if tensor_type(dt).is_some() => Some(dt),
        _ => None,
    }
}

/// Turn a tract output into a wasi-nn tensor, widening types wasi-nn lacks
/// (see [`wire_type`]).
pub fn from_tract(t: &TractTensor) -> Result<Tensor, NnError> {
    let target = match wire_type(t.datum_type()) {
        Some(dt) if dt == t.datum_type() => None,
        Some(dt) => Some(dt),
        None => {
            return Err(NnError::UnsupportedType(format!(
                "{:?} output",
                t.datum_type()
            )));
        }
    };
    let cast;
    let t = match target {
        Some(dt) => {
            cast = t.cast_to_dt(dt).map_err(|e| NnError::Compute {
                message: format!("{e:#}"),
            })?;
            cast.as_ref()
        }
        None => t,
    };
    let dimensions = t
        .shape()
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NnError::TooLarge { dims: vec![] })?;
    Ok(Tensor {
        dimensions,
        ty: tensor_type(t.datum_type()).expect("cast above to a wasi-nn type"),
        data: t.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dims: Vec<u32>, ty: TensorType, data: Vec<u8>) -> Tensor {
        Tensor {
            dimensions: dims,
            ty,
            data,
        }
    }

    #[test]
    fn f32_round_trip_keeps_bytes_and_shape() {
        let data: Vec<u8> = [1.0f32, -2.5, 3.25, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tract = to_tract(&t(vec![2, 2], TensorType::Fp32, data.clone())).unwrap();
        assert_eq!(tract.shape(), &[2, 2]);
        let back = from_tract(&tract).unwrap();
        assert_eq!(back.data, data);
        assert_eq!(back.dimensions, vec![2, 2]);
        assert_eq!(back.ty, TensorType::Fp32);
    }

    #[test]
    fn every_supported_type_round_trips() {
        for (ty, size) in [
            (TensorType::Fp16, 2),
            (TensorType::Fp32, 4),
            (TensorType::Fp64, 8),
            (TensorType::U8, 1),
            (TensorType::I32, 4),
            (TensorType::I64, 8),
        ] {
            let data: Vec<u8> = (0..3 * size).map(|i| i as u8).collect();
            let tract = to_tract(&t(vec![3], ty, data.clone())).unwrap();
            let back = from_tract(&tract).unwrap();
            assert_eq!(back.ty, ty);
            assert_eq!(back.data, data);
        }
    }

    #[test]
    fn wrong_length_is_rejected_with_sizes() {
        let err = to_tract(&t(vec![2, 3], TensorType::Fp32, vec![0; 20])).unwrap_err();
        assert!(
            matches!(
                err,
                NnError::DataLength {
                    expected: 24,
                    got: 20,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overflowing_dims_are_rejected_without_allocating() {
        let err = to_tract(&t(
            vec![u32::MAX, u32::MAX, u32::MAX],
            TensorType::Fp32,
            vec![],
        ))
        .unwrap_err();
        assert!(matches!(err, NnError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn bool_outputs_widen_to_i32() {
        let tract = TractTensor::from(tract_onnx::prelude::tract_ndarray::arr1(&[true, false]));
        let back = from_tract(&tract).unwrap();
        assert_eq!(back.ty, TensorType::I32);
        assert_eq!(back.data, [1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
