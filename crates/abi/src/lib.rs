//! `weft-abi`: the wire format of Weft's serving contract, shared by the host
//! (`weft-runtime`) and guests (`weft-guest`). No dependencies, so it builds
//! for `wasm32-wasip1` as well as for the host.
//!
//! A serving request is a list of named [`Tensor`]s; so is the response.
//! Component guests get these as WIT records (`runtime/wit/serve.wit`);
//! `wasm32-wasip1` core modules get them encoded with [`encode`] into their
//! linear memory and hand the response back the same way. The layout, all
//! integers little-endian:
//!
//! ```text
//! message := "WFT1" count:u32 tensor{count}
//! tensor  := name_len:u32 name:utf8 datatype:u8 rank:u8 dims:u64{rank} data_len:u64 data
//! ```
//!
//! `data` is the tensor's elements, row-major, little-endian; `BYTES`
//! elements are each a 4-byte little-endian length and the bytes (Triton's
//! binary layout).
//!
//! ```
//! use weft_abi::{DataType, Tensor, decode, encode};
//! let t = Tensor::new("x", DataType::Fp32, vec![2], [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
//! let wire = encode(std::slice::from_ref(&t));
//! assert_eq!(decode(&wire).unwrap(), vec![t]);
//! ```

use std::fmt;

/// First four bytes of every message.
pub const MAGIC: &[u8; 4] = b"WFT1";
/// Most tensors one message may carry.
pub const MAX_TENSORS: u32 = 4096;
/// Highest rank a tensor may have.
pub const MAX_RANK: u8 = 16;
/// Largest single dimension (wasi-nn carries dimensions as `u32`).
pub const MAX_DIM: u64 = u32::MAX as u64;
/// Most elements a tensor may have. A zero dimension counts as one here, so
/// `[0, 2^40, 2^40]` (no elements, but strides no machine can hold) is
/// refused as well as `[2^41]`.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// The Open Inference Protocol (V2) tensor data types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DataType {
    Bool = 0,
    Uint8 = 1,
    Uint16 = 2,
    Uint32 = 3,
    Uint64 = 4,
    Int8 = 5,
    Int16 = 6,
    Int32 = 7,
    Int64 = 8,
    Fp16 = 9,
    Fp32 = 10,
    Fp64 = 11,
    Bytes = 12,
}

impl DataType {
    /// Every type, in code order.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The V2 name, `FP32`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parse a V2 name (exact, upper case as the protocol writes it).
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn from_code(code: u8) -> Option<DataType> {
        DataType::ALL.get(usize::from(code)).copied()
    }

    /// Bytes per element; `None` for variable-length `BYTES`.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named tensor with raw little-endian element bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(
        name: impl Into<String>,
        datatype: DataType,
        shape: Vec<u64>,
        data: Vec<u8>,
    ) -> Self {
        Self {
            name: name.into(),
            datatype,
            shape,
            data,
        }
    }

    /// Number of elements the shape implies, `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        element_count(&self.shape)
    }

    /// Check that `data` holds exactly what shape and type say (and that
    /// the shape is within [`check_shape`]'s bounds).
    pub fn check(&self) -> Result<(), String> {
        let count = check_shape(&self.shape).map_err(|e| format!("tensor {:?}: {e}", self.name))?;
        match self.datatype.size() {
            Some(size) => {
                let want = count.checked_mul(size as u64);
                if want != Some(self.data.len() as u64) {
                    return Err(format!(
                        "tensor {:?}: shape {:?} of {} needs {} bytes, got {}",
                        self.name,
                        self.shape,
                        self.datatype,
                        want.map_or_else(|| "too many".into(), |w| w.to_string()),
                        self.data.len()
                    ));
                }
            }
            None => {
                let n = bytes_elements(&self.data)
                    .map_err(|e| format!("tensor {:?}: {e}", self.name))?
                    .len() as u64;
                if n != count {
                    return Err(format!(
                        "tensor {:?}: shape {:?} has {count} elements, the BYTES data holds {n}",
                        self.name, self.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Product of the dimensions, `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Check a shape against [`MAX_RANK`], [`MAX_DIM`] and [`MAX_ELEMENTS`]
/// before anything is sized from it; returns its element count. The error
/// says which bound the shape broke.
pub fn check_shape(shape: &[u64]) -> Result<u64, String> {
    if shape.len() > usize::from(MAX_RANK) {
        return Err(format!(
            "shape {shape:?} has rank {}; at most {MAX_RANK}",
            shape.len()
        ));
    }
    if let Some(d) = shape.iter().find(|&&d| d > MAX_DIM) {
        return Err(format!(
            "shape {shape:?}: dimension {d} is over the limit of {MAX_DIM}"
        ));
    }
    // Zero dimensions count as one: the strides of the other dimensions
    // must stay representable even when the tensor is empty.
    let spread = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= MAX_ELEMENTS);
    if spread.is_none() {
        return Err(format!(
            "shape {shape:?} spans more than {MAX_ELEMENTS} elements"
        ));
    }
    Ok(element_count(shape).unwrap_or(0))
}

/// Split Triton-layout `BYTES` data (4-byte length + bytes, repeated).
pub fn bytes_elements(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!(
                "BYTES element header truncated at offset {}",
                data.len() - rest.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!(
                "BYTES element at offset {} says {len} bytes, {} remain",
                data.len() - rest.len(),
                tail.len()
            ));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// Join elements into Triton-layout `BYTES` data.
pub fn bytes_data<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Encode tensors into one message.
pub fn encode(tensors: &[Tensor]) -> Vec<u8> {
    let size: usize = 8 + tensors
        .iter()
        .map(|t| 4 + t.name.len() + 2 + 8 * t.shape.len() + 8 + t.data.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for t in tensors {
        out.extend_from_slice(&(t.name.len() as u32).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(t.datatype as u8);
        out.push(t.shape.len() as u8);
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&t.data);
    }
    out
}

/// Why a message did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed tensor message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(DecodeError(format!(
                "{what} at offset {} needs {n} bytes, {} remain",
                self.pos,
                self.buf.len() - self.pos
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Decode a message; never panics, whatever the bytes.
pub fn decode(buf: &[u8]) -> Result<Vec<Tensor>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(DecodeError("does not start with \"WFT1\"".into()));
    }
    let count = r.u32("tensor count")?;
    if count > MAX_TENSORS {
        return Err(DecodeError(format!(
            "{count} tensors; at most {MAX_TENSORS}"
        )));
    }
    // Each tensor takes at least 14 bytes (name length, type, rank, data
    // length): reserve for what the bytes can hold, not what they claim.
    let mut out = Vec::with_capacity((count as usize).min(buf.len() / 14));
    for i in 0..count {
        let name_len = r.u32("name length")? as usize;
        let name = std::str::from_utf8(r.take(name_len, "name")?)
            .map_err(|_| DecodeError(format!("tensor {i}: name is not UTF-8")))?
            .to_owned();
        let code = r.u8("datatype")?;
        let datatype = DataType::from_code(code)
            .ok_or_else(|| DecodeError(format!("tensor {name:?}: unknown datatype code {code}")))?;
        let rank = r.u8("rank")?;
        if rank > MAX_RANK {
            return Err(DecodeError(format!(
                "tensor {name:?}: rank {rank}; at most {MAX_RANK}"
            )));
        }
        let shape = (0..rank)
            .map(|_| r.u64("dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        check_shape(&shape).map_err(|e| DecodeError(format!("tensor {name:?}: {e}")))?;
        let len = usize::try_from(r.u64("data length")?)
            .map_err(|_| DecodeError(format!("tensor {name:?}: data length overflows")))?;
        let data = r.take(len, "tensor data")?.to_vec();
        out.push(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    if r.pos != buf.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after {count} tensors",
            buf.len() - r.pos
        )));
    }
    Ok(out)
}

/// First four bytes of an interface description.
pub const INTERFACE_MAGIC: &[u8; 4] = b"WFI1";

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Exactly this size.
    Fixed(u64),
    /// Any size: named where the model names it (`N`, a batch), else `?`.
    Named(String),
}

impl Dim {
    /// A variable dimension the model does not name.
    pub fn any() -> Dim {
        Dim::Named("?".into())
    }

    /// The dimension as the serving protocols write it: its size, or `-1`
    /// for any size.
    pub fn wire(&self) -> i64 {
        match self {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(-1),
            Dim::Named(_) => -1,
        }
    }

    /// Read a protocol dimension: negative is any size.
    pub fn from_wire(d: i64) -> Dim {
        u64::try_from(d).map_or_else(|_| Dim::any(), Dim::Fixed)
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(s) => f.write_str(s),
        }
    }
}

/// A declared input or output of a model or a serving module: the one
/// interface type the artifact format, the inference backends, the server
/// and guests share. `None` datatype or shape means "any".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Option<DataType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

impl TensorSpec {
    /// The V2 datatype name, empty for any.
    pub fn datatype_name(&self) -> &'static str {
        self.datatype.map_or("", DataType::name)
    }

    /// The shape as the serving protocols write it (`-1`: any size; `[-1]`
    /// when even the rank is unknown).
    pub fn wire_shape(&self) -> Vec<i64> {
        self.shape
            .as_ref()
            .map_or_else(|| vec![-1], |d| d.iter().map(Dim::wire).collect())
    }

    /// The shape as text, `[N,3,?,?]`, or `any` when the rank is unknown.
    pub fn shape_string(&self) -> String {
        match &self.shape {
            None => "any".into(),
            Some(dims) => format!(
                "[{}]",
                dims.iter()
                    .map(Dim::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// The shape when every dimension is fixed.
    pub fn concrete(&self) -> Option<Vec<u64>> {
        self.shape
            .as_ref()?
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Named(_) => None,
            })
            .collect()
    }

    /// Whether a tensor of `shape` fits the declared shape.
    pub fn accepts(&self, shape: &[u64]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => {
                dims.len() == shape.len()
                    && dims.iter().zip(shape).all(|(d, &s)| match d {
                        Dim::Fixed(n) => *n == s,
                        Dim::Named(_) => true,
                    })
            }
        }
    }
}

/// What a serving module accepts and returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Encode a signature (wasip1 modules hand it over through memory):
///
/// ```text
/// "WFI1" n_in:u32 spec{n_in} n_out:u32 spec{n_out}
/// spec := name_len:u32 name datatype:u8 (255 = any) rank:u8 (255 = any) dims:i64{rank}
/// dim  := a size, or -1 for any size (a name does not travel)
/// ```
pub fn encode_signature(sig: &Signature) -> Vec<u8> {
    let mut out = INTERFACE_MAGIC.to_vec();
    for list in [&sig.inputs, &sig.outputs] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for t in list {
            out.extend_from_slice(&(t.name.len() as u32).to_le_bytes());
            out.extend_from_slice(t.name.as_bytes());
            out.push(t.datatype.map_or(255, |d| d as u8));
            match &t.shape {
                None => out.push(255),
                Some(dims) => {
                    out.push(dims.len() as u8);
                    for d in dims {
                        out.extend_from_slice(&d.wire().to_le_bytes());
                    }
                }
            }
        }
    }
    out
}

/// Decode a signature; never panics, whatever the bytes.
pub fn decode_signature(buf: &[u8]) -> Result<Signature, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(4, "magic")? != INTERFACE_MAGIC {
        return Err(DecodeError("interface does not start with \"WFI1\"".into()));
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = r.u32("tensor count")?;
        if n > MAX_TENSORS {
            return Err(DecodeError(format!("{n} tensors; at most {MAX_TENSORS}")));
        }
        for _ in 0..n {
            let len = r.u32("name length")? as usize;
            let name = std::str::from_utf8(r.take(len, "name")?)
                .map_err(|_| DecodeError("tensor name is not UTF-8".into()))?
                .to_owned();
            let code = r.u8("datatype")?;
            let datatype = match code {
                255 => None,
                c => Some(DataType::from_code(c).ok_or_else(|| {
                    DecodeError(format!("tensor {name:?}: unknown datatype code {c}"))
                })?),
            };
            let shape = match r.u8("rank")? {
                255 => None,
                rank if rank > MAX_RANK => {
                    return Err(DecodeError(format!("tensor {name:?}: rank {rank}")));
                }
                rank => Some(
                    (0..rank)
                        .map(|_| match r.u64("dimension")? as i64 {
                            d if d < -1 => Err(DecodeError(format!(
                                "tensor {name:?}: dimension {d}; a size, or -1 for any"
                            ))),
                            d => Ok(Dim::from_wire(d)),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            list.push(TensorSpec {
                name,
                datatype,
                shape,
            });
        }
    }
    if r.pos != buf.len() {
        return Err(DecodeError("trailing bytes after the interface".into()));
    }
    let [inputs, outputs] = lists;
    Ok(Signature { inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Tensor> {
        vec![
            Tensor::new("a", DataType::Fp32, vec![1, 2], vec![0; 8]),
            Tensor::new(
                "names",
                DataType::Bytes,
                vec![2],
                bytes_data([&b"hi"[..], b""]),
            ),
            Tensor::new("", DataType::Bool, vec![], vec![1]),
        ]
    }

    #[test]
    fn round_trips() {
        let t = sample();
        assert_eq!(decode(&encode(&t)).unwrap(), t);
        for x in &t {
            x.check().unwrap();
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let wire = encode(&sample());
        for n in 0..wire.len() {
            assert!(decode(&wire[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut long = wire.clone();
        long.push(0);
        assert!(decode(&long).unwrap_err().0.contains("trailing"));
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        let mut wire = MAGIC.to_vec();
        wire.extend_from_slice(&1u32.to_le_bytes());
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&wire).unwrap_err().0.contains("name"));
    }

    #[test]
    fn shapes_are_bounded_before_anything_is_sized_from_them() {
        assert_eq!(check_shape(&[2, 3]), Ok(6));
        assert_eq!(check_shape(&[]), Ok(1));
        assert_eq!(check_shape(&[0, 5]), Ok(0));
        // A huge dimension, alone or next to a zero.
        assert!(check_shape(&[1 << 40]).unwrap_err().contains("dimension"));
        let e = check_shape(&[0, 1 << 30, 1 << 30]).unwrap_err();
        assert!(e.contains("spans more than"), "{e}");
        assert!(check_shape(&[1 << 21, 1 << 20]).is_err());
        assert!(check_shape(&[1; 17]).unwrap_err().contains("rank 17"));
        // decode refuses such a shape even when the data is empty.
        let t = Tensor::new("z", DataType::Fp64, vec![0, 1 << 31, 1 << 31], vec![]);
        assert!(
            decode(&encode(std::slice::from_ref(&t)))
                .unwrap_err()
                .0
                .contains("spans")
        );
        assert!(t.check().unwrap_err().contains("spans"));
    }

    #[test]
    fn signatures_round_trip_and_truncations_fail() {
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "image".into(),
                datatype: Some(DataType::Bytes),
                shape: Some(vec![Dim::any(), Dim::Fixed(3)]),
            }],
            outputs: vec![TensorSpec {
                name: "text".into(),
                datatype: None,
                shape: None,
            }],
        };
        let wire = encode_signature(&sig);
        assert_eq!(decode_signature(&wire).unwrap(), sig);
        for n in 0..wire.len() {
            assert!(decode_signature(&wire[..n]).is_err());
        }
        // Any size is -1 and nothing else, so decoding stays canonical.
        let mut minus_two = wire.clone();
        let at = 4 + 4 + 4 + "image".len() + 1 + 1;
        minus_two[at..at + 8].copy_from_slice(&(-2i64).to_le_bytes());
        let e = decode_signature(&minus_two).unwrap_err();
        assert!(e.0.contains("dimension -2"), "{e:?}");
    }

    #[test]
    fn names_and_codes_agree() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_name(d.name()), Some(d));
            assert_eq!(DataType::from_code(d as u8), Some(d));
        }
        assert_eq!(DataType::from_name("fp32"), None);
    }

    #[test]
    fn check_names_the_mismatch() {
        let t = Tensor::new("x", DataType::Fp32, vec![3], vec![0; 8]);
        let e = t.check().unwrap_err();
        assert!(e.contains("needs 12 bytes, got 8"), "{e}");
        let b = Tensor::new("s", DataType::Bytes, vec![2], bytes_data([&b"x"[..]]));
        assert!(b.check().unwrap_err().contains("holds 1"));
        let bad = Tensor::new("s", DataType::Bytes, vec![1], vec![9, 0, 0, 0, 1]);
        assert!(bad.check().unwrap_err().contains("says 9 bytes"));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn tensor() -> impl Strategy<Value = Tensor> {
            (
                "[a-z0-9_]{0,12}",
                0u8..13,
                proptest::collection::vec(0u64..5, 0..4),
                proptest::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(name, code, shape, data)| {
                    Tensor::new(name, DataType::from_code(code).unwrap(), shape, data)
                })
        }

        proptest! {
            #[test]
            fn encode_then_decode_is_identity(ts in proptest::collection::vec(tensor(), 0..6)) {
                prop_assert_eq!(decode(&encode(&ts)).unwrap(), ts);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode(&bytes);
                let _ = decode_signature(&bytes);
                let _ = bytes_elements(&bytes);
            }

            #[test]
            fn corrupting_one_byte_never_panics(ts in proptest::collection::vec(tensor(), 1..4), at in any::<usize>(), v in any::<u8>()) {
                let mut wire = encode(&ts);
                let i = at % wire.len();
                wire[i] = v;
                if let Ok(back) = decode(&wire) {
                    // Whatever decodes re-encodes to the same bytes.
                    prop_assert_eq!(encode(&back), wire);
                }
            }
        }
    }
}
