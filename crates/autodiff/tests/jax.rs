//! weft-autodiff against JAX (float32, CPU), the reference the training
//! issue names:
//! - every op's gradient rule on random inputs
//!   (`tests/reference/jax_grads.py`), within 1e-5 + 1e-4 relative per
//!   element;
//! - training trajectories: an MLP and a small CNN, each with SGD
//!   (momentum) and Adam, trained for 200 steps from the same initial
//!   weights on the same batches by our step graph (run through tract) and
//!   by JAX (`tests/reference/jax_steps.py`, jit): every step's loss within
//!   1e-3 relative.

use std::process::Command;
use tract_onnx::prelude::*;
use weft_autodiff::optim::{Optimizer, training_step};
use weft_autodiff::{DType, Error, Graph, Op, T};

const STEPS: usize = 200;
const BATCH: usize = 16;
const FEATURES: usize = 64;
const CLASSES: usize = 10;

struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| (self.unit() * 2.0 - 1.0) * bound).collect()
    }
}

/// The parameters of `model`: names and shapes.
fn params(model: &str) -> Vec<(&'static str, Vec<usize>)> {
    match model {
        "mlp" => vec![
            ("w0", vec![FEATURES, 32]),
            ("b0", vec![32]),
            ("w1", vec![32, CLASSES]),
            ("b1", vec![CLASSES]),
        ],
        _ => vec![
            ("w0", vec![4, 1, 3, 3]),
            ("b0", vec![4]),
            ("w1", vec![64, CLASSES]),
            ("b1", vec![CLASSES]),
        ],
    }
}

/// The model the reference script defines, with the graph builder.
fn logits(g: &mut Graph, model: &str, x: T, p: &[T]) -> T {
    if model == "mlp" {
        let h = g.linear(x, p[0], p[1]).unwrap();
        let h = g.relu(h).unwrap();
        return g.linear(h, p[2], p[3]).unwrap();
    }
    let h = g.reshape(x, &[BATCH, 1, 8, 8]).unwrap();
    let h = g.conv2d(h, p[0], 1, 1).unwrap();
    let b = g.reshape(p[1], &[4, 1, 1]).unwrap();
    let h = g.add(h, b).unwrap();
    let h = g.relu(h).unwrap();
    let h = g.max_pool2d(h, 2).unwrap();
    let h = g.flatten(h).unwrap();
    g.linear(h, p[2], p[3]).unwrap()
}

/// Our losses for 200 steps, and the spec the reference reads.
fn ours(model: &str, optimizer: &str, lr: f32) -> (Vec<f32>, serde_json::Value) {
    let opt = match optimizer {
        "sgd" => Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        },
        _ => Optimizer::adam(),
    };
    let mut g = Graph::new(DType::F32);
    let shapes = params(model);
    let p: Vec<T> = shapes.iter().map(|(n, s)| g.param(n, s)).collect();
    let x = g.input("x", &[BATCH, FEATURES]);
    let labels = g.input("labels", &[BATCH, CLASSES]);
    let l = logits(&mut g, model, x, &p);
    let loss = g.softmax_cross_entropy(l, labels).unwrap();
    let spec = training_step(&mut g, loss, &opt).unwrap();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &g.to_onnx().unwrap()[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ model.len() as u64);
    let mut values: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .iter()
        .map(|(n, s)| {
            let count: usize = s.iter().product();
            let fan_in: usize = match s.len() {
                2 => s[0],
                4 => s[1..].iter().product(),
                _ => 1,
            };
            let data = if n.starts_with('b') {
                rng.uniform(count, 0.1)
            } else {
                rng.uniform(count, (6.0 / fan_in as f32).sqrt())
            };
            (n.to_string(), s.clone(), data)
        })
        .collect();
    let init = serde_json::json!(
        values
            .iter()
            .map(|(n, s, d)| serde_json::json!([n, s, d]))
            .collect::<Vec<_>>()
    );
    for s in &spec.state {
        let base = s.rsplit_once('.').unwrap().0;
        let shape = shapes.iter().find(|(n, _)| *n == base).unwrap().1.clone();
        let count = shape.iter().product();
        values.push((s.clone(), shape, vec![0.0; count]));
    }
    let batches: Vec<(Vec<f32>, Vec<f32>)> = (0..STEPS)
        .map(|_| {
            let x = rng.uniform(BATCH * FEATURES, 1.0);
            let mut y = vec![0.0; BATCH * CLASSES];
            for row in 0..BATCH {
                // A learnable label: which of ten pixel bands is brightest.
                let band = |k: usize| -> f32 { x[row * FEATURES + k * 6..][..4].iter().sum() };
                let best = (0..CLASSES)
                    .max_by(|&a, &b| band(a).total_cmp(&band(b)))
                    .unwrap();
                y[row * CLASSES + best] = 1.0;
            }
            (x, y)
        })
        .collect();

    let mut losses = Vec::new();
    for (t, (bx, by)) in batches.iter().enumerate() {
        let inputs: TVec<TValue> = spec
            .inputs
            .iter()
            .map(|name| {
                let (shape, data): (Vec<usize>, &[f32]) = match name.as_str() {
                    "x" => (vec![BATCH, FEATURES], bx),
                    "labels" => (vec![BATCH, CLASSES], by),
                    "lr" => (vec![], std::slice::from_ref(&lr)),
                    "step" => {
                        return Tensor::from_shape::<f32>(&[], &[(t + 1) as f32])
                            .unwrap()
                            .into_tvalue();
                    }
                    other => {
                        let v = values.iter().find(|(n, _, _)| n == other).unwrap();
                        (v.1.clone(), &v.2)
                    }
                };
                Tensor::from_shape(&shape, data).unwrap().into_tvalue()
            })
            .collect();
        let outs = plan.run(inputs).unwrap();
        for (name, out) in spec.outputs.iter().zip(outs.iter()) {
            let data: Vec<f32> = out
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            match name.strip_suffix(".next") {
                Some(base) => values.iter_mut().find(|(n, _, _)| n == base).unwrap().2 = data,
                None => losses.push(data[0]),
            }
        }
    }
    let reference = serde_json::json!({
        "model": model,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": 0.9,
        "params": init,
        "x_shape": [BATCH, FEATURES],
        "classes": CLASSES,
        "batches": batches.iter().map(|(x, y)| serde_json::json!([x, y])).collect::<Vec<_>>(),
    });
    (losses, reference)
}

#[test]
fn mlp_and_cnn_trajectories_follow_jax() {
    let Some(py) = weft_testkit::python_with(&["jax"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut worst = Vec::new();
    for model in ["mlp", "cnn"] {
        for (optimizer, lr) in [("sgd", 0.05f32), ("adam", 0.005)] {
            let (losses, spec) = ours(model, optimizer, lr);
            let path = dir.path().join(format!("{model}-{optimizer}.json"));
            std::fs::write(&path, spec.to_string()).unwrap();
            let out = Command::new(&py)
                .arg(weft_testkit::repo_root().join("tests/reference/jax_steps.py"))
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "jax_steps.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let jax: Vec<f64> = reply["losses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(jax.len(), STEPS);
            let mut max_rel = 0.0f64;
            for (t, (ours, theirs)) in losses.iter().zip(&jax).enumerate() {
                let rel = (f64::from(*ours) - theirs).abs() / theirs.abs().max(1e-6);
                max_rel = max_rel.max(rel);
                assert!(
                    rel <= 1e-3,
                    "{model} {optimizer} step {}: loss {ours}, JAX {theirs}",
                    t + 1
                );
            }
            // The runs must have trained, or agreeing would prove little.
            let (first, last) = (jax[0], jax[STEPS - 10..].iter().sum::<f64>() / 10.0);
            assert!(last < 0.8 * first, "{model} {optimizer}: {first} -> {last}");
            worst.push(format!(
                "{model} {optimizer}: loss {first:.3} -> {last:.3}, max relative difference {max_rel:.2e}"
            ));
        }
    }
    eprintln!("{}", worst.join("\n"));
}

/// One op case: input shapes, the range inputs are drawn from, our
/// builder, and the same function in JAX.
type Build = fn(&mut Graph, &[T]) -> Result<T, Error>;
type Case = (
    &'static str,
    Vec<Vec<usize>>,
    (f32, f32),
    Build,
    &'static str,
);

fn cases() -> Vec<Case> {
    vec![
        (
            "add",
            vec![vec![3, 4], vec![4]],
            (-1.0, 1.0),
            |g, x| g.add(x[0], x[1]),
            "lambda a, b: a + b",
        ),
        (
            "sub",
            vec![vec![3, 1], vec![1, 4]],
            (-1.0, 1.0),
            |g, x| g.sub(x[0], x[1]),
            "lambda a, b: a - b",
        ),
        (
            "mul",
            vec![vec![2, 3, 4], vec![3, 1]],
            (-1.0, 1.0),
            |g, x| g.mul(x[0], x[1]),
            "lambda a, b: a * b",
        ),
        (
            "div",
            vec![vec![3, 4], vec![]],
            (0.5, 2.0),
            |g, x| g.div(x[0], x[1]),
            "lambda a, b: a / b",
        ),
        (
            "neg",
            vec![vec![5]],
            (-1.0, 1.0),
            |g, x| g.neg(x[0]),
            "lambda a: -a",
        ),
        (
            "relu",
            vec![vec![4, 5]],
            (-1.0, 1.0),
            |g, x| g.relu(x[0]),
            "lambda a: jax.nn.relu(a)",
        ),
        (
            "sigmoid",
            vec![vec![4, 5]],
            (-3.0, 3.0),
            |g, x| g.sigmoid(x[0]),
            "lambda a: jax.nn.sigmoid(a)",
        ),
        (
            "tanh",
            vec![vec![4, 5]],
            (-3.0, 3.0),
            |g, x| g.tanh(x[0]),
            "lambda a: jnp.tanh(a)",
        ),
        (
            "exp",
            vec![vec![4, 5]],
            (-2.0, 2.0),
            |g, x| g.exp(x[0]),
            "lambda a: jnp.exp(a)",
        ),
        (
            "log",
            vec![vec![4, 5]],
            (0.2, 3.0),
            |g, x| g.log(x[0]),
            "lambda a: jnp.log(a)",
        ),
        (
            "sqrt",
            vec![vec![4, 5]],
            (0.2, 3.0),
            |g, x| g.sqrt(x[0]),
            "lambda a: jnp.sqrt(a)",
        ),
        (
            "matmul",
            vec![vec![5, 7], vec![7, 3]],
            (-1.0, 1.0),
            |g, x| g.matmul(x[0], x[1]),
            "lambda a, b: a @ b",
        ),
        (
            "sum",
            vec![vec![2, 3, 4]],
            (-1.0, 1.0),
            |g, x| g.sum(x[0], &[0, 2], false),
            "lambda a: a.sum(axis=(0, 2))",
        ),
        (
            "sum keep",
            vec![vec![2, 3, 4]],
            (-1.0, 1.0),
            |g, x| g.sum(x[0], &[1], true),
            "lambda a: a.sum(axis=1, keepdims=True)",
        ),
        (
            "max",
            vec![vec![3, 6]],
            (-1.0, 1.0),
            |g, x| g.max(x[0], &[1], false),
            "lambda a: a.max(axis=1)",
        ),
        (
            "reshape",
            vec![vec![2, 6]],
            (-1.0, 1.0),
            |g, x| g.reshape(x[0], &[3, 4]),
            "lambda a: a.reshape(3, 4)",
        ),
        (
            "transpose",
            vec![vec![2, 3, 4]],
            (-1.0, 1.0),
            |g, x| g.transpose(x[0], &[2, 0, 1]),
            "lambda a: a.transpose(2, 0, 1)",
        ),
        (
            "expand",
            vec![vec![3, 1]],
            (-1.0, 1.0),
            |g, x| g.expand(x[0], &[2, 3, 4]),
            "lambda a: jnp.broadcast_to(a, (2, 3, 4))",
        ),
        (
            "slice",
            vec![vec![4, 5]],
            (-1.0, 1.0),
            |g, x| {
                g.apply(
                    Op::Slice {
                        starts: vec![1, 2],
                        ends: vec![3, 5],
                    },
                    &[x[0]],
                )
            },
            "lambda a: a[1:3, 2:5]",
        ),
        (
            "log_softmax",
            vec![vec![3, 6]],
            (-2.0, 2.0),
            |g, x| g.log_softmax(x[0], 1),
            "lambda a: jax.nn.log_softmax(a, axis=1)",
        ),
        (
            "conv s1 p1",
            vec![vec![2, 3, 6, 6], vec![4, 3, 3, 3]],
            (-1.0, 1.0),
            |g, x| g.conv2d(x[0], x[1], 1, 1),
            "lambda x, w: lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NCHW', 'OIHW', 'NCHW'))",
        ),
        (
            "conv s2 p0",
            vec![vec![2, 3, 7, 7], vec![4, 3, 3, 3]],
            (-1.0, 1.0),
            |g, x| g.conv2d(x[0], x[1], 2, 0),
            "lambda x, w: lax.conv_general_dilated(x, w, (2, 2), [(0, 0), (0, 0)], dimension_numbers=('NCHW', 'OIHW', 'NCHW'))",
        ),
        (
            "conv s2 p1",
            vec![vec![1, 2, 8, 8], vec![3, 2, 3, 3]],
            (-1.0, 1.0),
            |g, x| g.conv2d(x[0], x[1], 2, 1),
            "lambda x, w: lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=('NCHW', 'OIHW', 'NCHW'))",
        ),
        (
            "max_pool2d",
            vec![vec![2, 3, 5, 5]],
            (-1.0, 1.0),
            |g, x| g.max_pool2d(x[0], 2),
            "lambda a: a[:, :, :4, :4].reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5))",
        ),
        (
            "avg_pool2d",
            vec![vec![2, 3, 4, 4]],
            (-1.0, 1.0),
            |g, x| g.avg_pool2d(x[0], 2),
            "lambda a: a.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))",
        ),
        (
            "layer_norm",
            vec![vec![3, 8]],
            (-2.0, 2.0),
            |g, x| g.layer_norm(x[0], 1e-5),
            "lambda a: (a - a.mean(-1, keepdims=True)) / jnp.sqrt(a.var(-1, keepdims=True) + 1e-5)",
        ),
        (
            "mse",
            vec![vec![4, 3], vec![4, 3]],
            (-1.0, 1.0),
            |g, x| g.mse(x[0], x[1]),
            "lambda a, b: jnp.mean((a - b) ** 2)",
        ),
        (
            "softmax_cross_entropy",
            vec![vec![4, 5], vec![4, 5]],
            (0.0, 1.0),
            |g, x| g.softmax_cross_entropy(x[0], x[1]),
            "lambda z, y: -jnp.mean(jnp.sum(jax.nn.log_softmax(z, axis=1) * y, axis=1))",
        ),
        (
            "binary_cross_entropy_with_logits",
            vec![vec![4, 3], vec![4, 3]],
            (-3.0, 3.0),
            |g, x| g.binary_cross_entropy_with_logits(x[0], x[1]),
            "lambda z, y: -jnp.mean(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))",
        ),
        (
            "concat",
            vec![vec![2, 3], vec![2, 2]],
            (-1.0, 1.0),
            |g, x| g.concat(&[x[0], x[1]], 1),
            "lambda a, b: jnp.concatenate([a, b], axis=1)",
        ),
    ]
}

#[test]
fn every_op_gradient_matches_jax() {
    let Some(py) = weft_testkit::python_with(&["jax"]) else {
        return;
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut specs = Vec::new();
    let mut ours = Vec::new();
    for (name, shapes, (lo, hi), build, expr) in cases() {
        let mut g = Graph::new(DType::F32);
        let xs: Vec<T> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| g.param(&format!("x{i}"), s))
            .collect();
        let y = build(&mut g, &xs).unwrap();
        let ys = g.shape(y).to_vec();
        let r = rng.uniform(ys.iter().product(), 1.0);
        let rt = g.input("r", &ys);
        let weighted = g.mul(y, rt).unwrap();
        let all: Vec<usize> = (0..ys.len()).collect();
        let loss = if all.is_empty() {
            weighted
        } else {
            g.sum(weighted, &all, false).unwrap()
        };
        let grads = g.grad(loss, &xs).unwrap();
        for (i, d) in grads.iter().enumerate() {
            g.output(*d, &format!("d{i}"));
        }
        let inputs: Vec<(Vec<usize>, Vec<f32>)> = shapes
            .iter()
            .map(|s| {
                let n = s.iter().product();
                (
                    s.clone(),
                    (0..n).map(|_| lo + (hi - lo) * rng.unit()).collect(),
                )
            })
            .collect();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &g.to_onnx().unwrap()[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let mut feed: TVec<TValue> = inputs
            .iter()
            .map(|(s, d)| Tensor::from_shape(s, d).unwrap().into_tvalue())
            .collect();
        feed.push(Tensor::from_shape(&ys, &r).unwrap().into_tvalue());
        let got: Vec<Vec<f32>> = plan
            .run(feed)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect();
        specs.push(serde_json::json!({
            "name": name,
            "expr": expr,
            "inputs": inputs.iter().map(|(s, d)| serde_json::json!([s, d])).collect::<Vec<_>>(),
            "r": [ys, r],
        }));
        ours.push((name, got));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::Value::Array(specs).to_string()).unwrap();
    let out = Command::new(&py)
        .arg(weft_testkit::repo_root().join("tests/reference/jax_grads.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jax_grads.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jax: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, got) in ours {
        let theirs = jax[name].as_array().unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(theirs.len(), got.len(), "{name}: gradient count");
        for (i, (g, t)) in got.iter().zip(theirs).enumerate() {
            let t: Vec<f64> = t
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(g.len(), t.len(), "{name}: gradient {i} size");
            for (j, (a, b)) in g.iter().zip(&t).enumerate() {
                assert!(
                    (f64::from(*a) - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                    "{name}: d/dx{i}[{j}] is {a}, JAX says {b}"
                );
            }
        }
    }
}
