use crate::{Error, ErrorCode, Result};

/// Element type of a tensor (the types wasi-nn has on both ABIs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    F16,
    F32,
    F64,
    U8,
    I32,
    I64,
}

impl TensorType {
    /// Bytes per element.
    pub const fn byte_size(self) -> usize {
        match self {
            TensorType::U8 => 1,
            TensorType::F16 => 2,
            TensorType::F32 | TensorType::I32 => 4,
            TensorType::F64 | TensorType::I64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorType::F16 => "f16",
            TensorType::F32 => "f32",
            TensorType::F64 => "f64",
            TensorType::U8 => "u8",
            TensorType::I32 => "i32",
            TensorType::I64 => "i64",
        }
    }
}

/// A dense row-major tensor; `data` holds the elements little-endian, as
/// wasi-nn passes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub ty: TensorType,
    pub data: Vec<u8>,
}

/// Number of elements of a shape, `None` on overflow.
pub(crate) fn element_count(dims: &[u32]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

impl Tensor {
    /// A tensor from raw little-endian bytes; fails unless `data` holds exactly
    /// the elements `dims` describes.
    pub fn new(dims: &[u32], ty: TensorType, data: Vec<u8>) -> Result<Tensor> {
        let expected = element_count(dims).and_then(|n| n.checked_mul(ty.byte_size()));
        if expected != Some(data.len()) {
            return Err(Error::guest(
                ErrorCode::InvalidArgument,
                "Tensor::new",
                format!(
                    "{} bytes do not make a {} tensor of shape {dims:?}",
                    data.len(),
                    ty.name()
                ),
            ));
        }
        Ok(Tensor {
            dims: dims.to_vec(),
            ty,
            data,
        })
    }

    pub fn f32(dims: &[u32], values: &[f32]) -> Result<Tensor> {
        Tensor::new(
            dims,
            TensorType::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn f64(dims: &[u32], values: &[f64]) -> Result<Tensor> {
        Tensor::new(
            dims,
            TensorType::F64,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn u8(dims: &[u32], values: &[u8]) -> Result<Tensor> {
        Tensor::new(dims, TensorType::U8, values.to_vec())
    }

    pub fn i32(dims: &[u32], values: &[i32]) -> Result<Tensor> {
        Tensor::new(
            dims,
            TensorType::I32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn i64(dims: &[u32], values: &[i64]) -> Result<Tensor> {
        Tensor::new(
            dims,
            TensorType::I64,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.ty.byte_size()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements as `f32`, converting from `f16` and `f64` (integer tensors
    /// are refused rather than silently converted).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.ty {
            TensorType::F32 => le_chunks(&self.data).map(f32::from_le_bytes).collect(),
            TensorType::F64 => le_chunks(&self.data)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            TensorType::F16 => le_chunks(&self.data)
                .map(|b| f16_to_f32(u16::from_le_bytes(b)))
                .collect(),
            _ => return Err(self.wrong_type("to_f32_vec", "a float")),
        })
    }

    /// The elements as `i64`, widening `u8` and `i32` (float tensors are
    /// refused).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match self.ty {
            TensorType::I64 => le_chunks(&self.data).map(i64::from_le_bytes).collect(),
            TensorType::I32 => le_chunks(&self.data)
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
            TensorType::U8 => self.data.iter().map(|&b| i64::from(b)).collect(),
            _ => return Err(self.wrong_type("to_i64_vec", "an integer")),
        })
    }

    fn wrong_type(&self, op: &str, wanted: &str) -> Error {
        Error::guest(
            ErrorCode::InvalidArgument,
            format!("Tensor::{op}"),
            format!("tensor is {}, not {wanted} type", self.ty.name()),
        )
    }
}

fn le_chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
}

/// IEEE 754 binary16 to binary32 (exact: every f16 value is an f32 value).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    match exp {
        // Zero and subnormals: man * 2^-24.
        0 => sign * man * f32::powi(2.0, -24),
        0x1f if man == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + man / 1024.0) * f32::powi(2.0, exp - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_sizes() {
        let t = Tensor::f32(&[1, 2], &[1.5, -2.0]).unwrap();
        assert_eq!(t.data.len(), 8);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.5, -2.0]);
        let err = Tensor::f32(&[1, 3], &[1.0]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(Tensor::u8(&[u32::MAX, u32::MAX, u32::MAX], &[]).is_err());
    }

    #[test]
    fn conversions() {
        let t = Tensor::i32(&[3], &[-1, 0, 7]).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![-1, 0, 7]);
        assert!(t.to_f32_vec().is_err());
        let t = Tensor::new(
            &[4],
            TensorType::F16,
            [0x3c00u16, 0xc000, 0x0001, 0x7c00]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
        .unwrap();
        let v = t.to_f32_vec().unwrap();
        assert_eq!(&v[..2], &[1.0, -2.0]);
        assert_eq!(v[2], f32::powi(2.0, -24));
        assert_eq!(v[3], f32::INFINITY);
    }
}
