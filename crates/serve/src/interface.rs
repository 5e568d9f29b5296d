//! A served model's interface: what `GET /v2/models/{name}` reports and what
//! requests are checked against before they reach the module.

use crate::error::ApiError;
use weft_abi::{DataType, Tensor};
use weft_nn::{DatumType, Dim, OnnxModel, TensorInfo};

/// One input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    /// `None`: any type is accepted (the model does not say).
    pub datatype: Option<DataType>,
    /// `None`: any shape; `-1` marks a variable dimension.
    pub shape: Option<Vec<i64>>,
}

impl TensorMeta {
    /// The V2 datatype name for metadata responses.
    pub fn datatype_name(&self) -> &'static str {
        self.datatype.map_or("", DataType::name)
    }

    /// The shape for metadata responses (`[-1]` when even the rank is
    /// unknown).
    pub fn shape_or_any(&self) -> Vec<i64> {
        self.shape.clone().unwrap_or_else(|| vec![-1])
    }

    fn accepts(&self, shape: &[u64]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => {
                dims.len() == shape.len()
                    && dims
                        .iter()
                        .zip(shape)
                        .all(|(&d, &s)| d < 0 || d as u64 == s)
            }
        }
    }
}

/// Inputs and outputs of a served model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

fn datatype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 | DatumType::TDim => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn meta(info: &TensorInfo) -> TensorMeta {
    TensorMeta {
        name: info.name.clone(),
        datatype: info.datum_type.and_then(datatype),
        shape: info.shape.as_ref().map(|dims| {
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => i64::try_from(*n).unwrap_or(-1),
                    _ => -1,
                })
                .collect()
        }),
    }
}

impl From<weft_abi::TensorSpec> for TensorMeta {
    fn from(t: weft_abi::TensorSpec) -> Self {
        TensorMeta {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        }
    }
}

impl From<weft_abi::Signature> for Interface {
    fn from(s: weft_abi::Signature) -> Self {
        Interface {
            inputs: s.inputs.into_iter().map(Into::into).collect(),
            outputs: s.outputs.into_iter().map(Into::into).collect(),
        }
    }
}

impl Interface {
    /// The interface an ONNX model declares.
    pub fn of_model(model: &OnnxModel) -> Interface {
        Interface {
            inputs: model.inputs().iter().map(meta).collect(),
            outputs: model.outputs().iter().map(meta).collect(),
        }
    }

    /// The interface of a serving module's preloaded graphs: the one
    /// preloaded as `model` (what the bundled predictor runs), else the only
    /// one; none when that is ambiguous (the module may declare its own).
    pub fn of_preloads(models: &weft_nn::Models) -> Interface {
        models
            .model("model")
            .or_else(|| match models.names().as_slice() {
                [only] => models.model(only),
                _ => None,
            })
            .map(|m| Interface::of_model(m))
            .unwrap_or_default()
    }

    /// Check request inputs against the declared inputs and put them in
    /// declaration order (wasip1 modules set inputs by position). With no
    /// declared inputs, the request passes as it is.
    pub fn order_inputs(&self, model: &str, given: Vec<Tensor>) -> Result<Vec<Tensor>, ApiError> {
        // One pass over a hash set: a request of thousands of inputs costs
        // thousands of lookups, not millions of comparisons.
        let mut seen = std::collections::HashSet::with_capacity(given.len());
        for t in &given {
            if !seen.insert(t.name.as_str()) {
                return Err(ApiError::bad(format!("input '{}' is given twice", t.name)));
            }
            t.check().map_err(ApiError::bad)?;
        }
        if self.inputs.is_empty() {
            return Ok(given);
        }
        let declared: std::collections::HashSet<&str> =
            self.inputs.iter().map(|m| m.name.as_str()).collect();
        if let Some(extra) = given.iter().find(|t| !declared.contains(t.name.as_str())) {
            return Err(ApiError::bad(format!(
                "model '{model}' has no input '{}'; its inputs are {}",
                extra.name,
                names(&self.inputs)
            )));
        }
        let mut by_name: std::collections::HashMap<String, Tensor> =
            given.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for m in &self.inputs {
            let Some(t) = by_name.remove(&m.name) else {
                return Err(ApiError::bad(format!(
                    "missing input '{}' for model '{model}' (inputs: {})",
                    m.name,
                    names(&self.inputs)
                )));
            };
            if let Some(want) = m.datatype
                && want != t.datatype
            {
                return Err(ApiError::bad(format!(
                    "input '{}' has datatype {}, but model '{model}' expects {want}",
                    t.name, t.datatype
                )));
            }
            if !m.accepts(&t.shape) {
                return Err(ApiError::bad(format!(
                    "input '{}' has shape {:?}, but model '{model}' expects {:?} (-1: any size)",
                    t.name,
                    t.shape,
                    m.shape_or_any()
                )));
            }
            ordered.push(t);
        }
        Ok(ordered)
    }

    /// Name outputs the module returned by position (`"0"`, `"1"`: what
    /// wasip1 modules can do) after the declared outputs.
    pub fn name_outputs(&self, outputs: &mut [Tensor]) {
        for t in outputs {
            if let Ok(i) = t.name.parse::<usize>()
                && let Some(m) = self.outputs.get(i)
            {
                t.name = m.name.clone();
            }
        }
    }
}

fn names(metas: &[TensorMeta]) -> String {
    metas
        .iter()
        .map(|m| format!("'{}'", m.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> Interface {
        Interface {
            inputs: vec![
                TensorMeta {
                    name: "a".into(),
                    datatype: Some(DataType::Fp32),
                    shape: Some(vec![-1, 2]),
                },
                TensorMeta {
                    name: "b".into(),
                    datatype: None,
                    shape: None,
                },
            ],
            outputs: vec![TensorMeta {
                name: "y".into(),
                datatype: Some(DataType::Fp32),
                shape: Some(vec![-1]),
            }],
        }
    }

    fn t(name: &str, dt: DataType, shape: Vec<u64>) -> Tensor {
        let n = weft_abi::element_count(&shape).unwrap() as usize;
        Tensor::new(name, dt, shape, vec![0; n * dt.size().unwrap()])
    }

    #[test]
    fn orders_by_declaration_and_checks_each_input() {
        let i = iface();
        let got = i
            .order_inputs(
                "m",
                vec![
                    t("b", DataType::Int64, vec![1]),
                    t("a", DataType::Fp32, vec![5, 2]),
                ],
            )
            .unwrap();
        assert_eq!(got[0].name, "a");
        let e = |v| i.order_inputs("m", v).unwrap_err().message;
        assert!(e(vec![t("a", DataType::Fp32, vec![1, 2])]).contains("missing input 'b'"));
        assert!(
            e(vec![
                t("a", DataType::Fp64, vec![1, 2]),
                t("b", DataType::Fp32, vec![])
            ])
            .contains("expects FP32")
        );
        assert!(
            e(vec![
                t("a", DataType::Fp32, vec![1, 3]),
                t("b", DataType::Fp32, vec![])
            ])
            .contains("expects [-1, 2]")
        );
        assert!(e(vec![t("zz", DataType::Fp32, vec![])]).contains("no input 'zz'"));
        assert!(
            e(vec![
                t("b", DataType::Fp32, vec![]),
                t("b", DataType::Fp32, vec![])
            ])
            .contains("twice")
        );
    }

    #[test]
    fn numbered_outputs_get_declared_names() {
        let mut out = vec![
            t("0", DataType::Fp32, vec![1]),
            t("7", DataType::Fp32, vec![1]),
        ];
        iface().name_outputs(&mut out);
        assert_eq!(out[0].name, "y");
        assert_eq!(out[1].name, "7");
    }
}
