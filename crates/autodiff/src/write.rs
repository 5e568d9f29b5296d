//! The graph as ONNX protobuf bytes (opset 17): one standard operator per
//! op, shapes and axes as int64 initializers, outputs through `Identity`.

use crate::onnx::*;
use crate::{DType, Error, Graph, Kind, Op, Slot};
use prost::Message;
use std::collections::HashSet;

pub const OPSET: i64 = 17;

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

fn int_tensor(name: String, data: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![data.len() as i64],
        data_type: INT64,
        name,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dtype: DType, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor {
                elem_type: elem(dtype),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: Some(d as i64),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn elem(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => FLOAT,
        DType::F64 => DOUBLE,
    }
}

pub fn onnx(g: &Graph) -> Result<Vec<u8>, Error> {
    let mut names = HashSet::new();
    for v in &g.values {
        if !names.insert(v.name.as_str()) {
            return Err(Error::DuplicateName {
                name: v.name.clone(),
            });
        }
    }
    let mut graph = GraphProto {
        name: "weft".into(),
        ..Default::default()
    };
    for v in &g.values {
        match &v.kind {
            Kind::Input | Kind::Param => graph.input.push(value_info(&v.name, g.dtype, &v.shape)),
            Kind::Const(data) => graph.initializer.push(TensorProto {
                dims: ints(&v.shape),
                data_type: elem(g.dtype),
                name: v.name.clone(),
                raw_data: match g.dtype {
                    DType::F32 => data
                        .iter()
                        .flat_map(|&x| (x as f32).to_le_bytes())
                        .collect(),
                    DType::F64 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                },
                ..Default::default()
            }),
            Kind::Node(_) => {}
        }
    }
    for (n, node) in g.nodes.iter().enumerate() {
        let mut input: Vec<String> = node
            .inputs
            .iter()
            .map(|t| g.values[t.0].name.clone())
            .collect();
        let out = g.values[node.output.0].name.clone();
        let mut param = |suffix: &str, data: &[i64]| {
            let name = format!("{out}_{suffix}");
            graph.initializer.push(int_tensor(name.clone(), data));
            input.push(name);
        };
        let mut attribute = Vec::new();
        match &node.op {
            Op::Sum { axes, keep } => {
                param("axes", &ints(axes));
                attribute.push(AttributeProto::int("keepdims", i64::from(*keep)));
            }
            Op::Max { axes, keep } => {
                // ReduceMax takes its axes as an attribute up to opset 17
                // and as an input from 18.
                if g.opset >= 18 {
                    param("axes", &ints(axes));
                } else {
                    attribute.push(AttributeProto::ints("axes", ints(axes)));
                }
                attribute.push(AttributeProto::int("keepdims", i64::from(*keep)));
            }
            Op::Reshape(to) | Op::Expand(to) => param("shape", &ints(to)),
            Op::Transpose(perm) => attribute.push(AttributeProto::ints("perm", ints(perm))),
            Op::LogSoftmax { axis } => attribute.push(AttributeProto::int("axis", *axis as i64)),
            Op::Conv {
                stride,
                pad,
                dilation,
            } => {
                let w = g.shape(node.inputs[1]);
                attribute.extend([
                    AttributeProto::ints("kernel_shape", ints(&w[2..])),
                    AttributeProto::ints("strides", vec![*stride as i64; 2]),
                    AttributeProto::ints("pads", vec![*pad as i64; 4]),
                    AttributeProto::ints("dilations", vec![*dilation as i64; 2]),
                ]);
            }
            Op::ConvTranspose { stride, pad, out } => {
                let x = g.shape(node.inputs[0]);
                let w = g.shape(node.inputs[1]);
                let extra: Vec<i64> = (0..2)
                    .map(|i| (out[i] + 2 * pad - ((x[2 + i] - 1) * stride + w[2 + i])) as i64)
                    .collect();
                attribute.extend([
                    AttributeProto::ints("kernel_shape", ints(&w[2..])),
                    AttributeProto::ints("strides", vec![*stride as i64; 2]),
                    AttributeProto::ints("pads", vec![*pad as i64; 4]),
                    AttributeProto::ints("output_padding", extra),
                ]);
            }
            Op::MaxPool { k } => attribute.extend([
                AttributeProto::ints("kernel_shape", vec![*k as i64; 2]),
                AttributeProto::ints("strides", vec![*k as i64; 2]),
            ]),
            Op::Pad { before, after } => {
                let pads: Vec<i64> = ints(before).into_iter().chain(ints(after)).collect();
                param("pads", &pads);
            }
            Op::Slice { starts, ends } => {
                param("starts", &ints(starts));
                param("ends", &ints(ends));
                param("axes", &(0..starts.len() as i64).collect::<Vec<_>>());
            }
            Op::Concat { axis } => attribute.push(AttributeProto::int("axis", *axis as i64)),
            Op::Foreign(f) => {
                let mut values = std::mem::take(&mut input).into_iter();
                for (i, slot) in f.slots.iter().enumerate() {
                    input.push(match slot {
                        Slot::Value => values.next().unwrap_or_default(),
                        Slot::Empty => String::new(),
                        Slot::Const(t) => {
                            let name = format!("{out}_in{i}");
                            graph.initializer.push(TensorProto {
                                name: name.clone(),
                                ..t.clone()
                            });
                            name
                        }
                    });
                }
                attribute = f.attributes.clone();
            }
            _ => {}
        }
        let (op_type, domain) = match &node.op {
            Op::Foreign(f) => (f.op_type.clone(), f.domain.clone()),
            op => (op.name().to_string(), String::new()),
        };
        graph.node.push(NodeProto {
            input,
            output: vec![out],
            name: format!("n{n}"),
            op_type,
            attribute,
            domain,
        });
    }
    for (t, name) in &g.outputs {
        if !names.insert(name.as_str()) {
            return Err(Error::DuplicateName { name: name.clone() });
        }
        let v = &g.values[t.0];
        graph.node.push(NodeProto {
            input: vec![v.name.clone()],
            output: vec![name.clone()],
            name: format!("out_{name}"),
            op_type: "Identity".into(),
            attribute: Vec::new(),
            domain: String::new(),
        });
        graph.output.push(value_info(name, g.dtype, &v.shape));
    }
    let model = ModelProto {
        ir_version: 8,
        producer_name: "weft-autodiff".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        opset_import: std::iter::once(OperatorSetIdProto {
            domain: String::new(),
            version: g.opset,
        })
        .chain(
            g.domains
                .iter()
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: domain.clone(),
                    version: *version,
                }),
        )
        .collect(),
    };
    Ok(model.encode_to_vec())
}
