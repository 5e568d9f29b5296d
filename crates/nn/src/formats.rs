//! What the TensorFlow Lite and TensorFlow front ends cannot translate,
//! found before translating, so a load fails with every missing operator's
//! name (as ONNX models do) instead of tract's first error.

use tract_tensorflow::model::TfOpRegister;
use tract_tensorflow::tfpb::tensorflow::GraphDef;
use tract_tflite::internal::TfliteProtoModel;
use tract_tflite::registry::Registry;
use tract_tflite::tflite::BuiltinOperator;

/// The operators of a TFLite model's main subgraph the front end lacks:
/// builtin operators by their schema name (`DENSIFY`), custom ones as
/// `custom:NAME`. Errors on a malformed operator table.
pub(crate) fn tflite_unsupported(
    proto: &TfliteProtoModel,
    registry: &Registry,
) -> Result<Vec<String>, String> {
    let root = proto.root();
    let codes = root
        .operator_codes()
        .ok_or("the model has no operator codes")?;
    let subgraph = root
        .subgraphs()
        .filter(|s| !s.is_empty())
        .ok_or("the model has no subgraph")?
        .get(0);
    let mut missing = Vec::new();
    for (ix, op) in subgraph.operators().into_iter().flatten().enumerate() {
        let code_ix = op.opcode_index() as usize;
        if code_ix >= codes.len() {
            return Err(format!(
                "operator {ix} uses operator code {code_ix}; the model has {}",
                codes.len()
            ));
        }
        let code = codes.get(code_ix);
        let builtin = if code.deprecated_builtin_code() as i32
            == BuiltinOperator::PLACEHOLDER_FOR_GREATER_OP_CODES.0
        {
            code.builtin_code()
        } else {
            BuiltinOperator(code.deprecated_builtin_code() as i32)
        };
        if registry.to_tract.contains_key(&builtin.0) {
            continue;
        }
        missing.push(if builtin == BuiltinOperator::CUSTOM {
            format!("custom:{}", code.custom_code().unwrap_or("?"))
        } else {
            builtin
                .variant_name()
                .map_or_else(|| format!("builtin {}", builtin.0), str::to_owned)
        });
    }
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// The names of the main subgraph's input and output tensors, in order.
pub(crate) fn tflite_io_names(proto: &TfliteProtoModel) -> (Vec<String>, Vec<String>) {
    let root = proto.root();
    let Some(subgraph) = root.subgraphs().filter(|s| !s.is_empty()).map(|s| s.get(0)) else {
        return Default::default();
    };
    let tensors = subgraph.tensors();
    let names = |ids: Vec<i32>| -> Vec<String> {
        ids.into_iter()
            .map(|id| {
                tensors
                    .filter(|t| usize::try_from(id).is_ok_and(|i| i < t.len()))
                    .and_then(|t| t.get(id as usize).name())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let inputs: Vec<i32> = subgraph
        .inputs()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let outputs: Vec<i32> = subgraph
        .outputs()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    (names(inputs), names(outputs))
}

/// The op types of a frozen graph the TensorFlow front end lacks.
pub(crate) fn tensorflow_unsupported(graph: &GraphDef, register: &TfOpRegister) -> Vec<String> {
    let mut missing: Vec<String> = graph
        .node
        .iter()
        // NextIteration is built by the parser itself, not the register.
        .filter(|n| n.op != "NextIteration" && !register.0.contains_key(&n.op))
        .map(|n| n.op.clone())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}
