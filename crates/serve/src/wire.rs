//! gRPC messages checked before prost decodes them.
//!
//! prost turns a 2-byte empty `InferInputTensor` into a struct of about 150
//! bytes, so a request at the body limit could become gigabytes of
//! structs before any handler sees it. [`BoundedCodec`] (the codec the
//! generated service uses, see `build.rs`) first walks a `ModelInferRequest`'s
//! wire bytes, counting its inputs, outputs, raw contents, parameters and
//! every input's dimensions, and refuses it with `InvalidArgument` when a
//! count is over the serving contract's limits. Other messages decode as
//! prost decodes them.

use bytes::Buf;
use prost::Message;
use std::any::TypeId;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use weft_abi::{MAX_RANK, MAX_TENSORS};

/// Most parameters (map entries) a request, an input or an output may carry.
pub const MAX_PARAMETERS: usize = 64;

/// Why a message's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

struct Reader<'a> {
    buf: &'a [u8],
}

/// A field: its number, its wire type, and the payload of a
/// length-delimited one.
type Field<'a> = (u64, u8, &'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| WireError("truncated varint".into()))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or_else(|| WireError("a field runs past the end of the message".into()))?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: (number, wire type, payload of a length-delimited
    /// field). Other wire types are skipped.
    fn field(&mut self) -> Result<Option<Field<'a>>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => {
                self.varint()?;
                &[][..]
            }
            1 => self.take(8)?,
            2 => {
                let len = self.varint()?;
                self.take(len)?
            }
            5 => self.take(4)?,
            other => return Err(WireError(format!("wire type {other} is not supported"))),
        };
        Ok(Some((number, wire, payload)))
    }
}

fn over(what: &str, max: usize) -> WireError {
    WireError(format!(
        "more than {max} {what}; at most {max} are accepted"
    ))
}

/// Count the elements of a repeated varint field occurrence (packed or not).
fn varints(wire: u8, payload: &[u8]) -> Result<usize, WireError> {
    if wire == 0 {
        return Ok(1);
    }
    let mut r = Reader { buf: payload };
    let mut n = 0;
    while !r.buf.is_empty() {
        r.varint()?;
        n += 1;
    }
    Ok(n)
}

/// An `InferInputTensor` or `InferRequestedOutputTensor`: its dimensions
/// (field 3 of an input) and parameters (field 4 of an input, 2 of an
/// output).
fn tensor(bytes: &[u8], shape_field: Option<u64>, params_field: u64) -> Result<(), WireError> {
    let mut r = Reader { buf: bytes };
    let (mut dims, mut params) = (0usize, 0usize);
    while let Some((number, wire, payload)) = r.field()? {
        if Some(number) == shape_field {
            dims += varints(wire, payload)?;
            if dims > usize::from(MAX_RANK) {
                return Err(over(
                    "dimensions in a tensor's shape",
                    usize::from(MAX_RANK),
                ));
            }
        } else if number == params_field {
            params += 1;
            if params > MAX_PARAMETERS {
                return Err(over("parameters on a tensor", MAX_PARAMETERS));
            }
        }
    }
    Ok(())
}

/// Check a `ModelInferRequest`'s counts on its wire bytes.
pub fn check_infer_request(bytes: &[u8]) -> Result<(), WireError> {
    let max = MAX_TENSORS as usize;
    let mut r = Reader { buf: bytes };
    let (mut params, mut inputs, mut outputs, mut raw) = (0usize, 0usize, 0usize, 0usize);
    while let Some((number, _, payload)) = r.field()? {
        match number {
            4 => {
                params += 1;
                if params > MAX_PARAMETERS {
                    return Err(over("request parameters", MAX_PARAMETERS));
                }
            }
            5 => {
                inputs += 1;
                if inputs > max {
                    return Err(over("inputs", max));
                }
                tensor(payload, Some(3), 4)?;
            }
            6 => {
                outputs += 1;
                if outputs > max {
                    return Err(over("requested outputs", max));
                }
                tensor(payload, None, 2)?;
            }
            7 => {
                raw += 1;
                if raw > max {
                    return Err(over("raw_input_contents entries", max));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// prost's codec, with [`check_infer_request`] in front of decoding a
/// `ModelInferRequest`.
#[derive(Debug, Clone, Default)]
pub struct BoundedCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            inner: self.inner.decoder(),
            item: PhantomData,
        }
    }
}

/// See [`BoundedCodec`].
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    item: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<crate::proto::ModelInferRequest>() {
            // tonic hands a message over in one buffer: `chunk` is all of it.
            let whole = buf.chunk();
            if whole.len() == buf.remaining() {
                check_infer_request(whole).map_err(|e| {
                    Status::invalid_argument(format!("refusing the request: {}", e.0))
                })?;
            } else {
                let copy = buf.copy_to_bytes(buf.remaining());
                check_infer_request(&copy).map_err(|e| {
                    Status::invalid_argument(format!("refusing the request: {}", e.0))
                })?;
                return U::decode(copy)
                    .map(Some)
                    .map_err(|e| Status::internal(e.to_string()));
            }
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        InferTensorContents, ModelInferRequest, model_infer_request::InferInputTensor,
        model_infer_request::InferRequestedOutputTensor,
    };

    fn input(rank: usize) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1; rank],
            parameters: Default::default(),
            contents: Some(InferTensorContents::default()),
        }
    }

    #[test]
    fn counts_are_checked_on_the_wire() {
        let ok = ModelInferRequest {
            inputs: vec![input(4); 3],
            outputs: vec![InferRequestedOutputTensor::default(); 2],
            raw_input_contents: vec![vec![0; 12]; 3],
            ..Default::default()
        };
        check_infer_request(&ok.encode_to_vec()).unwrap();

        let many = ModelInferRequest {
            inputs: vec![input(0); MAX_TENSORS as usize + 1],
            ..Default::default()
        };
        let e = check_infer_request(&many.encode_to_vec()).unwrap_err();
        assert!(e.0.contains("inputs"), "{e:?}");

        let outputs = ModelInferRequest {
            outputs: vec![InferRequestedOutputTensor::default(); MAX_TENSORS as usize + 1],
            ..Default::default()
        };
        assert!(
            check_infer_request(&outputs.encode_to_vec())
                .unwrap_err()
                .0
                .contains("outputs")
        );

        let deep = ModelInferRequest {
            inputs: vec![input(usize::from(MAX_RANK) + 1)],
            ..Default::default()
        };
        assert!(
            check_infer_request(&deep.encode_to_vec())
                .unwrap_err()
                .0
                .contains("dimensions")
        );
    }

    #[test]
    fn truncated_or_odd_bytes_are_errors_not_panics() {
        let bytes = ModelInferRequest {
            inputs: vec![input(3)],
            ..Default::default()
        }
        .encode_to_vec();
        for n in 0..bytes.len() {
            let _ = check_infer_request(&bytes[..n]);
        }
        assert!(check_infer_request(&[0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(check_infer_request(&[0x0b]).is_err());
    }
}
