//! How a [`TensorSpec`] is written in the config: `{"name": "x", "type":
//! "f32", "shape": ["N", 3, "?"]}` (`docs/artifact-format.md`). The names
//! of the types are tract's, which wrote the first artifacts.

use crate::{DataType, Dim, TensorSpec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
struct Spec {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    /// `None` when the rank is unknown.
    shape: Option<Vec<WireDim>>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireDim {
    Fixed(u64),
    Named(String),
}

/// Each datatype's name in the config.
const NAMES: [(DataType, &str); 13] = [
    (DataType::Bool, "bool"),
    (DataType::Uint8, "u8"),
    (DataType::Uint16, "u16"),
    (DataType::Uint32, "u32"),
    (DataType::Uint64, "u64"),
    (DataType::Int8, "i8"),
    (DataType::Int16, "i16"),
    (DataType::Int32, "i32"),
    (DataType::Int64, "i64"),
    (DataType::Fp16, "f16"),
    (DataType::Fp32, "f32"),
    (DataType::Fp64, "f64"),
    (DataType::Bytes, "string"),
];

/// The config's name of a datatype, `any` for none.
pub fn type_name(t: Option<DataType>) -> &'static str {
    t.and_then(|t| NAMES.iter().find(|(d, _)| *d == t))
        .map_or("any", |(_, n)| n)
}

/// A config's type name: tract's symbolic-dimension type is an `i64`;
/// a name Weft does not serve (a quantized type, `any`) accepts any.
pub fn datatype(name: &str) -> Option<DataType> {
    if name == "tdim" {
        return Some(DataType::Int64);
    }
    NAMES.iter().find(|(_, n)| *n == name).map(|(d, _)| *d)
}

pub fn serialize<S: Serializer>(specs: &[TensorSpec], s: S) -> Result<S::Ok, S::Error> {
    specs
        .iter()
        .map(|t| Spec {
            name: t.name.clone(),
            ty: type_name(t.datatype).into(),
            shape: t.shape.as_ref().map(|dims| {
                dims.iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => WireDim::Fixed(*n),
                        Dim::Named(s) => WireDim::Named(s.clone()),
                    })
                    .collect()
            }),
        })
        .collect::<Vec<_>>()
        .serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TensorSpec>, D::Error> {
    Ok(Vec::<Spec>::deserialize(d)?
        .into_iter()
        .map(|t| TensorSpec {
            datatype: datatype(&t.ty),
            name: t.name,
            shape: t.shape.map(|dims| {
                dims.into_iter()
                    .map(|d| match d {
                        WireDim::Fixed(n) => Dim::Fixed(n),
                        WireDim::Named(s) => Dim::Named(s),
                    })
                    .collect()
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::ModelSpec;

    /// The config keeps what the first artifacts wrote: tract's type
    /// names, symbol names and `?`, and `null` for an unknown rank.
    #[test]
    fn interfaces_read_and_write_the_documented_form() {
        let json = r#"{"name":"m","path":"m.onnx","encoding":"onnx","target":"cpu","digest":"",
            "inputs":[{"name":"x","type":"f32","shape":["N",3,"?"]},{"name":"t","type":"tdim","shape":null}],
            "outputs":[{"name":"y","type":"qu8","shape":[1]}]}"#;
        let m: ModelSpec = serde_json::from_str(json).unwrap();
        assert_eq!(m.inputs[0].datatype, Some(crate::DataType::Fp32));
        assert_eq!(m.inputs[0].shape_string(), "[N,3,?]");
        assert_eq!(m.inputs[1].datatype, Some(crate::DataType::Int64));
        assert_eq!(m.inputs[1].shape, None);
        assert_eq!(m.outputs[0].datatype, None);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(
            back["inputs"][0],
            serde_json::json!({"name":"x","type":"f32","shape":["N",3,"?"]})
        );
        assert_eq!(back["inputs"][1]["type"], "i64");
        assert_eq!(back["outputs"][0]["type"], "any");
    }
}
