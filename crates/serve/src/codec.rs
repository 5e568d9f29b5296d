//! Tensor data in and out of the protocol's encodings: V2 JSON (flat or
//! nested `data`), Triton's binary extension (raw bytes after the JSON
//! header) and the gRPC typed `contents` / `raw_*_contents`. Everything
//! lands in, or comes from, [`weft_abi::Tensor`]'s raw little-endian bytes.

use crate::error::ApiError;
use crate::proto::InferTensorContents;
use serde::Serialize;
use weft_abi::{DataType, Tensor, bytes_data, bytes_elements};

/// Parse a V2 datatype name.
pub fn datatype(input: &str, name: &str) -> Result<DataType, ApiError> {
    DataType::from_name(name).ok_or_else(|| {
        ApiError::bad(format!(
            "input '{input}': unknown datatype '{name}'; use one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
        ))
    })
}

/// Check a V2 shape (non-negative, within [`weft_abi::check_shape`]'s
/// bounds) and turn it into dimensions. Nothing is sized from a shape
/// before this passes.
pub fn shape(input: &str, shape: &[i64]) -> Result<Vec<u64>, ApiError> {
    let dims = shape
        .iter()
        .map(|&d| u64::try_from(d))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| {
            ApiError::bad(format!(
                "input '{input}': shape {shape:?} has a negative dimension"
            ))
        })?;
    weft_abi::check_shape(&dims).map_err(|e| ApiError::bad(format!("input '{input}': {e}")))?;
    Ok(dims)
}

fn element_count(dims: &[u64]) -> usize {
    weft_abi::element_count(dims).unwrap_or(0) as usize
}

/// Most elements reserved ahead of a JSON tensor's data: the buffer grows
/// with the values that actually arrive, never to what a shape claims.
const JSON_RESERVE: usize = 1 << 16;

/// One JSON scalar of a tensor's `data`.
enum Leaf<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
}

impl std::fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leaf::Bool(b) => write!(f, "{b}"),
            Leaf::I64(i) => write!(f, "{i}"),
            Leaf::U64(u) => write!(f, "{u}"),
            Leaf::F64(x) => write!(f, "{x}"),
            Leaf::Str(s) => write!(f, "{s:?}"),
        }
    }
}

fn int_in<T: TryFrom<i64> + TryFrom<u64>>(v: &Leaf<'_>, dt: DataType) -> Result<T, String> {
    let bad = || format!("{v} is not a valid {dt} value");
    match *v {
        Leaf::I64(i) => T::try_from(i).map_err(|_| bad()),
        Leaf::U64(u) => T::try_from(u).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Writes the leaves of flat or nested JSON arrays, in row-major order,
/// as raw bytes of one datatype, stopping at the first bad value.
struct Sink<'o> {
    dt: DataType,
    count: usize,
    seen: usize,
    out: &'o mut Vec<u8>,
}

impl Sink<'_> {
    fn push(&mut self, v: Leaf<'_>) -> Result<(), String> {
        self.seen += 1;
        if self.seen > self.count {
            // Only counted from here on: the error names the total.
            return Ok(());
        }
        let dt = self.dt;
        let out = &mut *self.out;
        match dt {
            DataType::Bool => out.push(match v {
                Leaf::Bool(b) => u8::from(b),
                _ => return Err(format!("{v} is not a BOOL (true or false)")),
            }),
            DataType::Uint8 => out.push(int_in::<u8>(&v, dt)?),
            DataType::Int8 => out.extend(int_in::<i8>(&v, dt)?.to_le_bytes()),
            DataType::Uint16 => out.extend(int_in::<u16>(&v, dt)?.to_le_bytes()),
            DataType::Int16 => out.extend(int_in::<i16>(&v, dt)?.to_le_bytes()),
            DataType::Uint32 => out.extend(int_in::<u32>(&v, dt)?.to_le_bytes()),
            DataType::Int32 => out.extend(int_in::<i32>(&v, dt)?.to_le_bytes()),
            DataType::Uint64 => out.extend(int_in::<u64>(&v, dt)?.to_le_bytes()),
            DataType::Int64 => out.extend(int_in::<i64>(&v, dt)?.to_le_bytes()),
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
                let f = match v {
                    Leaf::I64(i) => i as f64,
                    Leaf::U64(u) => u as f64,
                    Leaf::F64(x) => x,
                    _ => return Err(format!("{v} is not a number ({dt})")),
                };
                match dt {
                    DataType::Fp16 => out.extend(half::f16::from_f64(f).to_le_bytes()),
                    DataType::Fp32 => out.extend((f as f32).to_le_bytes()),
                    _ => out.extend(f.to_le_bytes()),
                }
            }
            DataType::Bytes => {
                let Leaf::Str(s) = v else {
                    return Err(format!("{v} is not a string (BYTES)"));
                };
                let len = u32::try_from(s.len())
                    .map_err(|_| format!("a BYTES element of {} bytes is too long", s.len()))?;
                out.extend(len.to_le_bytes());
                out.extend(s.as_bytes());
            }
        }
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for &mut Sink<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a (nested) array of {} values", self.dt)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Leaf::Bool(v)).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Leaf::I64(v)).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Leaf::U64(v)).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Leaf::F64(v)).map_err(E::custom)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Leaf::Str(v)).map_err(E::custom)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom("null is not a tensor value"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom("an object is not a tensor value"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut Sink<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// JSON `data` (the raw text of a flat or nested array, or one scalar) to
/// raw bytes of `dt` with `dims`. The text is read once, straight into the
/// bytes: no JSON tree is built.
pub fn from_json(input: &str, dt: DataType, dims: &[u64], data: &str) -> Result<Vec<u8>, ApiError> {
    let count = element_count(dims);
    let mut out = Vec::with_capacity(count.min(JSON_RESERVE) * dt.size().unwrap_or(8));
    let mut sink = Sink {
        dt,
        count,
        seen: 0,
        out: &mut out,
    };
    let mut de = serde_json::Deserializer::from_str(data);
    serde::de::DeserializeSeed::deserialize(&mut sink, &mut de)
        .and_then(|()| de.end())
        .map_err(|e| ApiError::bad(format!("input '{input}': {e}")))?;
    if sink.seen != count {
        return Err(ApiError::bad(format!(
            "input '{input}': shape {dims:?} needs {count} elements, data has {}",
            sink.seen
        )));
    }
    Ok(out)
}

/// Output data as JSON: a flat, row-major array.
#[derive(Serialize)]
#[serde(untagged)]
pub enum JsonData {
    Bool(Vec<bool>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str(Vec<String>),
}

fn le<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N)
        .map(|c| c.try_into().expect("chunk size"))
}

/// Raw bytes of a (checked) tensor as JSON data.
pub fn to_json(t: &Tensor) -> JsonData {
    let d = &t.data;
    match t.datatype {
        DataType::Bool => JsonData::Bool(d.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => JsonData::U64(d.iter().map(|&b| u64::from(b)).collect()),
        DataType::Uint16 => {
            JsonData::U64(le::<2>(d).map(|b| u16::from_le_bytes(b).into()).collect())
        }
        DataType::Uint32 => {
            JsonData::U64(le::<4>(d).map(|b| u32::from_le_bytes(b).into()).collect())
        }
        DataType::Uint64 => JsonData::U64(le::<8>(d).map(u64::from_le_bytes).collect()),
        DataType::Int8 => JsonData::I64(d.iter().map(|&b| i64::from(b as i8)).collect()),
        DataType::Int16 => {
            JsonData::I64(le::<2>(d).map(|b| i16::from_le_bytes(b).into()).collect())
        }
        DataType::Int32 => {
            JsonData::I64(le::<4>(d).map(|b| i32::from_le_bytes(b).into()).collect())
        }
        DataType::Int64 => JsonData::I64(le::<8>(d).map(i64::from_le_bytes).collect()),
        DataType::Fp16 => JsonData::F32(
            le::<2>(d)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DataType::Fp32 => JsonData::F32(le::<4>(d).map(f32::from_le_bytes).collect()),
        DataType::Fp64 => JsonData::F64(le::<8>(d).map(f64::from_le_bytes).collect()),
        DataType::Bytes => JsonData::Str(
            bytes_elements(d)
                .unwrap_or_default()
                .into_iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect(),
        ),
    }
}

/// Check raw bytes (binary extension or gRPC raw contents) against the
/// tensor's declared datatype and shape.
pub fn check_raw(input: &str, dt: DataType, dims: &[u64], data: &[u8]) -> Result<(), ApiError> {
    let count = element_count(dims);
    match dt.size() {
        Some(size) if data.len() != count * size => Err(ApiError::bad(format!(
            "input '{input}': shape {dims:?} of {dt} needs {} bytes, got {}",
            count * size,
            data.len()
        ))),
        Some(_) => Ok(()),
        None => {
            let n = bytes_elements(data)
                .map_err(|e| ApiError::bad(format!("input '{input}': {e}")))?
                .len();
            if n == count {
                Ok(())
            } else {
                Err(ApiError::bad(format!(
                    "input '{input}': shape {dims:?} needs {count} BYTES elements, data has {n}"
                )))
            }
        }
    }
}

/// gRPC typed contents to raw bytes.
pub fn from_contents(
    input: &str,
    dt: DataType,
    dims: &[u64],
    c: &InferTensorContents,
) -> Result<Vec<u8>, ApiError> {
    let count = element_count(dims);
    let narrow_err = |v: &dyn std::fmt::Display| {
        ApiError::bad(format!("input '{input}': {v} is not a valid {dt} value"))
    };
    let (n, out): (usize, Vec<u8>) = match dt {
        DataType::Bool => (
            c.bool_contents.len(),
            c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
        ),
        DataType::Int8 => (c.int_contents.len(), {
            let mut o = Vec::new();
            for &v in &c.int_contents {
                o.extend(i8::try_from(v).map_err(|_| narrow_err(&v))?.to_le_bytes());
            }
            o
        }),
        DataType::Int16 => (c.int_contents.len(), {
            let mut o = Vec::new();
            for &v in &c.int_contents {
                o.extend(i16::try_from(v).map_err(|_| narrow_err(&v))?.to_le_bytes());
            }
            o
        }),
        DataType::Int32 => (
            c.int_contents.len(),
            c.int_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Int64 => (
            c.int64_contents.len(),
            c.int64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Uint8 => (c.uint_contents.len(), {
            let mut o = Vec::new();
            for &v in &c.uint_contents {
                o.push(u8::try_from(v).map_err(|_| narrow_err(&v))?);
            }
            o
        }),
        DataType::Uint16 => (c.uint_contents.len(), {
            let mut o = Vec::new();
            for &v in &c.uint_contents {
                o.extend(u16::try_from(v).map_err(|_| narrow_err(&v))?.to_le_bytes());
            }
            o
        }),
        DataType::Uint32 => (
            c.uint_contents.len(),
            c.uint_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Uint64 => (
            c.uint64_contents.len(),
            c.uint64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Fp32 => (
            c.fp32_contents.len(),
            c.fp32_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Fp64 => (
            c.fp64_contents.len(),
            c.fp64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DataType::Bytes => (
            c.bytes_contents.len(),
            bytes_data(c.bytes_contents.iter().map(|b| b.as_slice())),
        ),
        DataType::Fp16 => {
            return Err(ApiError::bad(format!(
                "input '{input}': FP16 has no typed contents field; send it in raw_input_contents"
            )));
        }
    };
    if n != count {
        return Err(ApiError::bad(format!(
            "input '{input}': shape {dims:?} needs {count} elements, contents has {n}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_and_nested_json_give_the_same_bytes() {
        let flat = from_json("x", DataType::Fp32, &[2, 2], "[1, 2, 3.5, 4]").unwrap();
        let nested = from_json("x", DataType::Fp32, &[2, 2], "[[1, 2], [3.5, 4]]").unwrap();
        assert_eq!(flat, nested);
        assert_eq!(&flat[8..12], &3.5f32.to_le_bytes());
    }

    #[test]
    fn json_errors_say_what_is_wrong() {
        let e = |dt, dims: &[u64], v: serde_json::Value| {
            from_json("x", dt, dims, &v.to_string())
                .unwrap_err()
                .message
        };
        assert!(e(DataType::Fp32, &[3], json!([1, 2])).contains("needs 3 elements, data has 2"));
        assert!(e(DataType::Fp32, &[1], json!([1, 2])).contains("data has 2"));
        assert!(e(DataType::Uint8, &[1], json!([300])).contains("not a valid UINT8"));
        assert!(e(DataType::Int32, &[1], json!(["a"])).contains("not a valid INT32"));
        assert!(e(DataType::Bool, &[1], json!([1])).contains("not a BOOL"));
        assert!(e(DataType::Bytes, &[1], json!([1])).contains("not a string"));
    }

    #[test]
    fn every_datatype_round_trips_through_json() {
        let cases = [
            (DataType::Bool, json!([true, false])),
            (DataType::Uint8, json!([0, 255])),
            (DataType::Uint16, json!([0, 65535])),
            (DataType::Uint32, json!([0, 4294967295u64])),
            (DataType::Uint64, json!([0, u64::MAX])),
            (DataType::Int8, json!([-128, 127])),
            (DataType::Int16, json!([-32768, 32767])),
            (DataType::Int32, json!([-2147483648i64, 2147483647])),
            (DataType::Int64, json!([i64::MIN, i64::MAX])),
            (DataType::Fp16, json!([0.5, -2.0])),
            (DataType::Fp32, json!([0.25, -65536.5])),
            (DataType::Fp64, json!([0.1, 1e300])),
            (DataType::Bytes, json!(["héllo", ""])),
        ];
        for (dt, v) in cases {
            let raw = from_json("x", dt, &[2], &v.to_string()).unwrap();
            let t = Tensor::new("x", dt, vec![2], raw);
            t.check().unwrap();
            assert_eq!(serde_json::to_value(to_json(&t)).unwrap(), v, "{dt}");
        }
    }

    #[test]
    fn raw_data_is_checked_against_the_shape() {
        assert!(check_raw("x", DataType::Fp32, &[2], &[0; 8]).is_ok());
        let e = check_raw("x", DataType::Fp32, &[2], &[0; 7]).unwrap_err();
        assert!(e.message.contains("needs 8 bytes, got 7"), "{e}");
        let e = check_raw("x", DataType::Bytes, &[1], &[5, 0, 0, 0, 1]).unwrap_err();
        assert!(e.message.contains("says 5 bytes"), "{e}");
    }

    #[test]
    fn grpc_contents_narrow_with_range_checks() {
        let c = InferTensorContents {
            int_contents: vec![1, -2],
            ..Default::default()
        };
        assert_eq!(
            from_contents("x", DataType::Int8, &[2], &c).unwrap(),
            vec![1, 254]
        );
        let c = InferTensorContents {
            int_contents: vec![1000],
            ..Default::default()
        };
        assert!(from_contents("x", DataType::Int8, &[1], &c).is_err());
        let e = from_contents("x", DataType::Fp16, &[1], &Default::default()).unwrap_err();
        assert!(e.message.contains("raw_input_contents"));
    }
}
