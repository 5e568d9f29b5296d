//! Fine-tuning: a forward ONNX classifier (written here the way exporters
//! write them: a `Conv` with bias, a `Clip` the op set has no op for, shape
//! arithmetic feeding a `Reshape`, `Gemm` with `transB`, `Softmax`)
//! imported, run and trained through tract.

use prost::Message;
use tract_onnx::prelude::*;
use weft_autodiff::import::{Model, replace_initializers};
use weft_autodiff::onnx::*;
use weft_autodiff::optim::{Optimizer, training_step};
use weft_autodiff::{DType, Error, Graph};

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        domain: String::new(),
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![data.len() as i64],
        data_type: INT64,
        name: name.into(),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            dim_value: *d,
                            dim_param: d.is_none().then(|| "batch".into()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn take(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// The classifier's graph: image `[batch, 1, 8, 8]` to probabilities
/// `[batch, 10]`.
fn classifier_graph(rng: &mut Rng) -> GraphProto {
    GraphProto {
        name: "classifier".into(),
        node: vec![
            node(
                "Conv",
                "conv",
                &["image", "conv1.weight", "conv1.bias"],
                "c",
                vec![
                    AttributeProto::ints("kernel_shape", vec![3, 3]),
                    AttributeProto::ints("pads", vec![1, 1, 1, 1]),
                ],
            ),
            node("Clip", "clip", &["c", "zero", "six"], "r", vec![]),
            node(
                "MaxPool",
                "pool",
                &["r"],
                "p",
                vec![
                    AttributeProto::ints("kernel_shape", vec![2, 2]),
                    AttributeProto::ints("strides", vec![2, 2]),
                ],
            ),
            node("Shape", "shape", &["p"], "s", vec![]),
            node("Gather", "first", &["s", "index0"], "n", vec![]),
            node("Unsqueeze", "unsq", &["n", "axes0"], "n1", vec![]),
            node(
                "Concat",
                "cat",
                &["n1", "minus1"],
                "to",
                vec![AttributeProto::int("axis", 0)],
            ),
            node("Reshape", "flat", &["p", "to"], "f", vec![]),
            node(
                "Gemm",
                "fc",
                &["f", "fc.weight", "fc.bias"],
                "logits",
                vec![AttributeProto::int("transB", 1)],
            ),
            node(
                "Softmax",
                "softmax",
                &["logits"],
                "probabilities",
                vec![AttributeProto::int("axis", -1)],
            ),
        ],
        initializer: vec![
            floats("conv1.weight", &[4, 1, 3, 3], &rng.take(36, 1.0)),
            floats("conv1.bias", &[4], &rng.take(4, 0.2)),
            floats("zero", &[], &[0.0]),
            floats("six", &[], &[6.0]),
            TensorProto {
                dims: vec![],
                ..ints("index0", &[0])
            },
            ints("axes0", &[0]),
            ints("minus1", &[-1]),
            floats("fc.weight", &[10, 64], &rng.take(640, 0.3)),
            floats("fc.bias", &[10], &rng.take(10, 0.1)),
        ],
        input: vec![info("image", &[None, Some(1), Some(8), Some(8)])],
        output: vec![info("probabilities", &[None, Some(10)])],
        value_info: vec![],
    }
}

fn model(graph: GraphProto, opset: i64) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "a test exporter".into(),
        producer_version: "1".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
    }
    .encode_to_vec()
}

type Plan = Arc<TypedRunnableModel>;

fn plan(bytes: &[u8]) -> Plan {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn run(p: &Plan, inputs: &[(&[usize], &[f32])]) -> Vec<Vec<f32>> {
    let inputs: TVec<TValue> = inputs
        .iter()
        .map(|(s, d)| Tensor::from_shape(s, d).unwrap().into_tvalue())
        .collect();
    p.run(inputs)
        .unwrap()
        .iter()
        .map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Imported with nothing trainable, the graph computes what the model does.
#[test]
fn the_imported_forward_pass_is_the_models() {
    let mut rng = Rng(7);
    let bytes = model(classifier_graph(&mut rng), 17);
    let m = Model::parse(&bytes).unwrap();
    assert_eq!(m.example_shape(), vec![1, 8, 8]);
    assert_eq!(m.input_name(), "image");
    let x = rng.take(3 * 64, 4.0);
    let reference = run(&plan(&bytes), &[(&[3, 1, 8, 8], &x)]);

    let mut g = Graph::new(DType::F32);
    let input = g.input("x", &[3, 1, 8, 8]);
    let built = m.build(&mut g, input, &[], false).unwrap();
    g.output(built.output, "y");
    g.output(built.logits, "logits");
    let ours = run(&plan(&g.to_onnx().unwrap()), &[(&[3, 1, 8, 8], &x)]);
    assert!(
        max_diff(&ours[0], &reference[0]) < 1e-6,
        "{:?} vs {:?}",
        ours[0],
        reference[0]
    );
    // The logits are the softmax's input: softmax of them is the output.
    for row in 0..3 {
        let l = &ours[1][row * 10..row * 10 + 10];
        let top = l.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = l.iter().map(|v| (v - top).exp()).sum();
        for k in 0..10 {
            let p = (l[k] - top).exp() / sum;
            assert!((p - reference[0][row * 10 + k]).abs() < 1e-6);
        }
    }
}

/// Only the head trains: the loss falls, the frozen part is untouched, and
/// the model written back with the trained head computes what the graph
/// does with it.
#[test]
fn fine_tuning_trains_only_the_head_and_writes_the_model_back() {
    let mut rng = Rng(11);
    let bytes = model(classifier_graph(&mut rng), 17);
    let m = Model::parse(&bytes).unwrap();
    let trainable = m.select(&["fc.*".into()]).unwrap();
    assert_eq!(trainable, ["fc.weight", "fc.bias"]);

    let batch = 16;
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[batch, 1, 8, 8]);
    let labels = g.input("labels", &[batch, 10]);
    let built = m.build(&mut g, x, &trainable, true).unwrap();
    let loss = g.softmax_cross_entropy(built.logits, labels).unwrap();
    let spec = training_step(&mut g, loss, &Optimizer::adam()).unwrap();
    let step = plan(&g.to_onnx().unwrap());

    let images = rng.take(batch * 64, 4.0);
    let mut onehot = vec![0.0f32; batch * 10];
    for i in 0..batch {
        onehot[i * 10 + i % 10] = 1.0;
    }
    let mut values: Vec<(String, Vec<usize>, Vec<f32>)> = trainable
        .iter()
        .map(|n| {
            let (s, v) = m.initializer(n).unwrap();
            (n.clone(), s.to_vec(), v.to_vec())
        })
        .collect();
    for s in &spec.state {
        let base = s.rsplit_once('.').unwrap().0;
        let shape = values.iter().find(|v| v.0 == base).unwrap().1.clone();
        let n = shape.iter().product();
        values.push((s.clone(), shape, vec![0.0; n]));
    }
    let mut losses = Vec::new();
    for t in 1..=40 {
        let feed: Vec<(Vec<usize>, Vec<f32>)> = spec
            .inputs
            .iter()
            .map(|name| match name.as_str() {
                "x" => (vec![batch, 1, 8, 8], images.clone()),
                "labels" => (vec![batch, 10], onehot.clone()),
                "lr" => (vec![], vec![0.05]),
                "step" => (vec![], vec![t as f32]),
                other => {
                    let v = values.iter().find(|v| v.0 == other).unwrap();
                    (v.1.clone(), v.2.clone())
                }
            })
            .collect();
        let refs: Vec<(&[usize], &[f32])> = feed.iter().map(|(s, d)| (&s[..], &d[..])).collect();
        let outs = run(&step, &refs);
        for (name, out) in spec.outputs.iter().zip(outs) {
            match name.strip_suffix(".next") {
                Some(base) => values.iter_mut().find(|v| v.0 == base).unwrap().2 = out,
                None => losses.push(out[0]),
            }
        }
    }
    assert!(
        losses[39] < 0.5 * losses[0],
        "the head did not learn: {} -> {}",
        losses[0],
        losses[39]
    );

    let trained: Vec<(String, Vec<f32>)> = trainable
        .iter()
        .map(|n| {
            (
                n.clone(),
                values.iter().find(|v| &v.0 == n).unwrap().2.clone(),
            )
        })
        .collect();
    let tuned = replace_initializers(&bytes, &trained).unwrap();
    let after = Model::parse(&tuned).unwrap();
    assert_eq!(
        after.initializer("conv1.weight"),
        m.initializer("conv1.weight"),
        "a frozen parameter changed"
    );
    assert_eq!(after.initializer("fc.weight").unwrap().1, &trained[0].1[..]);
    assert_ne!(after.initializer("fc.weight"), m.initializer("fc.weight"));
    // Everything but the initializers is byte for byte the source model's.
    let strip = |b: &[u8]| {
        let mut p = ModelProto::decode(b).unwrap();
        p.graph.as_mut().unwrap().initializer.clear();
        p.encode_to_vec()
    };
    assert_eq!(strip(&tuned), strip(&bytes));

    // The written-back model predicts what the training graph's forward
    // pass does with the trained head.
    let probe = rng.take(2 * 64, 4.0);
    let served = run(&plan(&tuned), &[(&[2, 1, 8, 8], &probe)]);
    let mut e = Graph::new(DType::F32);
    let ex = e.input("x", &[2, 1, 8, 8]);
    assert_eq!(e.input_names(), ["x"]);
    let eb = m.build(&mut e, ex, &trainable, false).unwrap();
    e.output(eb.output, "y");
    let w = &trained[0].1;
    let b = &trained[1].1;
    let ours = run(
        &plan(&e.to_onnx().unwrap()),
        &[(&[2, 1, 8, 8], &probe), (&[10, 64], w), (&[10], b)],
    );
    assert!(max_diff(&ours[0], &served[0]) < 1e-6);
}

/// A parameter whose gradient would have to pass through an operator
/// without a gradient rule is an error naming the operator and its node.
#[test]
fn a_trainable_parameter_behind_a_foreign_operator_is_refused_by_name() {
    let bytes = model(classifier_graph(&mut Rng(3)), 17);
    let m = Model::parse(&bytes).unwrap();
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[4, 1, 8, 8]);
    let labels = g.input("labels", &[4, 10]);
    let built = m.build(&mut g, x, &["conv1.weight".into()], true).unwrap();
    let loss = g.softmax_cross_entropy(built.logits, labels).unwrap();
    let e = training_step(&mut g, loss, &Optimizer::sgd()).unwrap_err();
    assert_eq!(
        e,
        Error::NoGradient {
            op: "Clip (node clip)".into()
        }
    );
    assert!(e.to_string().contains("freeze the parameters"));
}

#[test]
fn models_the_importer_cannot_take_are_refused_with_the_fix() {
    let mut rng = Rng(5);
    let msg = |bytes: &[u8]| match Model::parse(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(msg(b"\x08\x01garbage").contains("not an ONNX model"));
    let old = msg(&model(classifier_graph(&mut rng), 11));
    assert!(
        old.contains("opset 11") && old.contains("convert_version"),
        "{old}"
    );

    let mut two = classifier_graph(&mut rng);
    two.input.push(info("mask", &[None, Some(10)]));
    assert!(msg(&model(two, 17)).contains("one input"));

    let mut external = classifier_graph(&mut rng);
    external.initializer[0].data_location = 1;
    assert!(msg(&model(external, 17)).contains("save_as_external_data=False"));

    let m = Model::parse(&model(classifier_graph(&mut rng), 17)).unwrap();
    let e = m.select(&["head.*".into()]).unwrap_err().to_string();
    assert!(
        e.contains("head.*") && e.contains("fc.weight [10, 64]"),
        "{e}"
    );

    // An operator with no op here and no recorded shape: the error names
    // it and says how to record shapes.
    let mut odd = classifier_graph(&mut rng);
    odd.node[1] = node("LpNormalization", "norm", &["c"], "r", vec![]);
    let m = Model::parse(&model(odd.clone(), 17)).unwrap();
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[2, 1, 8, 8]);
    let e = m.build(&mut g, x, &[], false).err().unwrap().to_string();
    assert!(
        e.contains("LpNormalization (node norm)") && e.contains("infer_shapes"),
        "{e}"
    );
    // ... and with the shape recorded, it imports and runs.
    odd.value_info
        .push(info("r", &[None, Some(4), Some(8), Some(8)]));
    let bytes = model(odd, 17);
    let m = Model::parse(&bytes).unwrap();
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[2, 1, 8, 8]);
    let built = m.build(&mut g, x, &[], false).unwrap();
    g.output(built.output, "y");
    let probe = rng.take(128, 2.0);
    let ours = run(&plan(&g.to_onnx().unwrap()), &[(&[2, 1, 8, 8], &probe)]);
    let theirs = run(&plan(&bytes), &[(&[2, 1, 8, 8], &probe)]);
    assert!(max_diff(&ours[0], &theirs[0]) < 1e-6);

    // A batch the model fixes.
    let mut fixed = classifier_graph(&mut rng);
    fixed.input[0] = info("image", &[Some(1), Some(1), Some(8), Some(8)]);
    let m = Model::parse(&model(fixed, 17)).unwrap();
    let mut g = Graph::new(DType::F32);
    let x = g.input("x", &[8, 1, 8, 8]);
    let e = m.build(&mut g, x, &[], false).err().unwrap().to_string();
    assert!(e.contains("fixes the batch size to 1"), "{e}");

    // Writing back a value of the wrong size.
    let bytes = model(classifier_graph(&mut rng), 17);
    let e = replace_initializers(&bytes, &[("fc.bias".into(), vec![0.0; 3])]).unwrap_err();
    assert!(e.to_string().contains("fc.bias"));
    let e = replace_initializers(&bytes, &[("nope".into(), vec![0.0])]).unwrap_err();
    assert!(e.to_string().contains("nope"));
}
