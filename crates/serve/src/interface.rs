//! A served model's interface (`weft_abi::Signature`, the one interface
//! type): what `GET /v2/models/{name}` reports and what requests are
//! checked against before they reach the module.

use crate::error::ApiError;
use weft_abi::{Signature, Tensor, TensorSpec};

/// The interface of a serving module's preloaded graphs: the one preloaded
/// as `model` (what the bundled predictor runs), else the only one; none
/// when that is ambiguous (the module may declare its own).
pub fn of_preloads(models: &weft_nn::Models) -> Signature {
    models
        .signature("model")
        .or_else(|| match models.names().as_slice() {
            [only] => models.signature(only),
            _ => None,
        })
        .unwrap_or_default()
}

/// Check request inputs against the declared inputs and put them in
/// declaration order (wasip1 modules set inputs by position). With no
/// declared inputs, the request passes as it is.
pub fn order_inputs(
    sig: &Signature,
    model: &str,
    given: Vec<Tensor>,
) -> Result<Vec<Tensor>, ApiError> {
    // One pass over a hash set: a request of thousands of inputs costs
    // thousands of lookups, not millions of comparisons.
    let mut seen = std::collections::HashSet::with_capacity(given.len());
    for t in &given {
        if !seen.insert(t.name.as_str()) {
            return Err(ApiError::bad(format!("input '{}' is given twice", t.name)));
        }
        t.check().map_err(ApiError::bad)?;
    }
    if sig.inputs.is_empty() {
        return Ok(given);
    }
    let declared: std::collections::HashSet<&str> =
        sig.inputs.iter().map(|m| m.name.as_str()).collect();
    if let Some(extra) = given.iter().find(|t| !declared.contains(t.name.as_str())) {
        return Err(ApiError::bad(format!(
            "model '{model}' has no input '{}'; its inputs are {}",
            extra.name,
            names(&sig.inputs)
        )));
    }
    let mut by_name: std::collections::HashMap<String, Tensor> =
        given.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut ordered = Vec::with_capacity(sig.inputs.len());
    for m in &sig.inputs {
        let Some(t) = by_name.remove(&m.name) else {
            return Err(ApiError::bad(format!(
                "missing input '{}' for model '{model}' (inputs: {})",
                m.name,
                names(&sig.inputs)
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
                m.wire_shape()
            )));
        }
        ordered.push(t);
    }
    Ok(ordered)
}

/// Name outputs the module returned by position (`"0"`, `"1"`: what wasip1
/// modules can do) after the declared outputs.
pub fn name_outputs(sig: &Signature, outputs: &mut [Tensor]) {
    for t in outputs {
        if let Ok(i) = t.name.parse::<usize>()
            && let Some(m) = sig.outputs.get(i)
        {
            t.name = m.name.clone();
        }
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|m| format!("'{}'", m.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use weft_abi::{DataType, Dim};

    fn iface() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "a".into(),
                    datatype: Some(DataType::Fp32),
                    shape: Some(vec![Dim::Named("N".into()), Dim::Fixed(2)]),
                },
                TensorSpec {
                    name: "b".into(),
                    datatype: None,
                    shape: None,
                },
            ],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: Some(DataType::Fp32),
                shape: Some(vec![Dim::any()]),
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
        let got = order_inputs(
            &i,
            "m",
            vec![
                t("b", DataType::Int64, vec![1]),
                t("a", DataType::Fp32, vec![5, 2]),
            ],
        )
        .unwrap();
        assert_eq!(got[0].name, "a");
        let e = |v| order_inputs(&i, "m", v).unwrap_err().message;
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
        name_outputs(&iface(), &mut out);
        assert_eq!(out[0].name, "y");
        assert_eq!(out[1].name, "7");
    }
}
