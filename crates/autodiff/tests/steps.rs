//! Training steps built with the graph builder, run through tract: the
//! optimizers' updates against their formulas, and small models that learn.

use tract_onnx::prelude::*;
use weft_autodiff::optim::{Optimizer, StepSpec, training_step, training_step_clipped};
use weft_autodiff::{DType, Graph};

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

/// Named float32 tensors.
type Feed = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Run a step graph: inputs by name in the graph's order, outputs by name.
fn step(p: &Plan, spec: &StepSpec, feed: &Feed) -> Vec<(String, Vec<f32>)> {
    let inputs: TVec<TValue> = spec
        .inputs
        .iter()
        .map(|n| {
            let (_, s, d) = feed.iter().find(|(m, _, _)| m == n).unwrap();
            Tensor::from_shape(s, d).unwrap().into_tvalue()
        })
        .collect();
    let outs = p.run(inputs).unwrap();
    spec.outputs
        .iter()
        .cloned()
        .zip(outs.iter())
        .map(|(n, t)| {
            (
                n,
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect(),
            )
        })
        .collect()
}

/// Feed each `NAME.next` output back as `NAME`; the loss.
fn advance(feed: &mut Feed, outs: &[(String, Vec<f32>)]) -> f32 {
    let mut loss = f32::NAN;
    for (name, data) in outs {
        if let Some(base) = name.strip_suffix(".next") {
            let slot = feed.iter_mut().find(|(m, _, _)| m == base).unwrap();
            slot.2.clone_from(data);
        } else if name == "loss" {
            loss = data[0];
        }
    }
    loss
}

fn set(feed: &mut Feed, name: &str, shape: &[usize], data: Vec<f32>) {
    match feed.iter_mut().find(|(m, _, _)| m == name) {
        Some(slot) => slot.2 = data,
        None => feed.push((name.into(), shape.to_vec(), data)),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| (self.next() - 0.5) * 2.0 * scale).collect()
    }
}

/// With a loss whose gradient is a constant `c`, three steps of each
/// optimizer move the parameter exactly as its formula says.
#[test]
fn updates_follow_their_formulas() {
    let c = [0.5f64, -2.0];
    for opt in [
        Optimizer::sgd(),
        Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
        },
        Optimizer::adam(),
        Optimizer::Adam {
            beta1: 0.8,
            beta2: 0.9,
            eps: 1e-6,
            weight_decay: 0.01,
        },
    ] {
        let mut g = Graph::new(DType::F32);
        let w = g.param("w", &[2]);
        let k = g.constant(&[2], c.to_vec()).unwrap();
        let y = g.mul(w, k).unwrap();
        let loss = g.sum(y, &[0], false).unwrap();
        let spec = training_step(&mut g, loss, &opt).unwrap();
        let p = plan(&g.to_onnx().unwrap());
        let mut feed: Feed = vec![("w".into(), vec![2], vec![1.0, -1.0])];
        for s in &spec.state {
            set(&mut feed, s, &[2], vec![0.0; 2]);
        }
        let lr = 0.1f64;
        set(&mut feed, "lr", &[], vec![lr as f32]);
        // The formula, in f64.
        let mut want = [1.0f64, -1.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            set(&mut feed, "step", &[], vec![t as f32]);
            let outs = step(&p, &spec, &feed);
            advance(&mut feed, &outs);
            for i in 0..2 {
                match opt {
                    Optimizer::Sgd {
                        momentum,
                        weight_decay,
                    } => {
                        let d = c[i] + weight_decay * want[i];
                        m[i] = momentum * m[i] + d;
                        want[i] -= lr * if momentum == 0.0 { d } else { m[i] };
                    }
                    Optimizer::Adam {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        m[i] = beta1 * m[i] + (1.0 - beta1) * c[i];
                        v[i] = beta2 * v[i] + (1.0 - beta2) * c[i] * c[i];
                        let mh = m[i] / (1.0 - beta1.powi(t));
                        let vh = v[i] / (1.0 - beta2.powi(t));
                        want[i] -= lr * (mh / (vh.sqrt() + eps) + weight_decay * want[i]);
                    }
                }
            }
            let got = &feed.iter().find(|(n, _, _)| n == "w").unwrap().2;
            for i in 0..2 {
                assert!(
                    (f64::from(got[i]) - want[i]).abs() < 1e-5,
                    "{opt:?} step {t}: w[{i}] is {}, the formula says {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
}

/// Clipping scales the gradients together to the maximum norm when they
/// exceed it, and leaves them alone when they do not.
#[test]
fn clipping_bounds_the_global_gradient_norm() {
    // Gradients (3, 4) and (12): global norm 13.
    for (max, scale) in [(6.5f64, 0.5f64), (13.0, 1.0), (100.0, 1.0)] {
        let mut g = Graph::new(DType::F32);
        let a = g.param("a", &[2]);
        let b = g.param("b", &[1]);
        let ka = g.constant(&[2], vec![3.0, 4.0]).unwrap();
        let kb = g.constant(&[1], vec![12.0]).unwrap();
        let ya = g.mul(a, ka).unwrap();
        let yb = g.mul(b, kb).unwrap();
        let sa = g.sum(ya, &[0], false).unwrap();
        let sb = g.sum(yb, &[0], false).unwrap();
        let loss = g.add(sa, sb).unwrap();
        let spec = training_step_clipped(&mut g, loss, &Optimizer::sgd(), Some(max)).unwrap();
        let p = plan(&g.to_onnx().unwrap());
        let mut feed: Feed = vec![
            ("a".into(), vec![2], vec![0.0, 0.0]),
            ("b".into(), vec![1], vec![0.0]),
        ];
        set(&mut feed, "lr", &[], vec![1.0]);
        set(&mut feed, "step", &[], vec![1.0]);
        let outs = step(&p, &spec, &feed);
        advance(&mut feed, &outs);
        let got: Vec<f32> = feed[0].2.iter().chain(&feed[1].2).copied().collect();
        let want = [-3.0 * scale, -4.0 * scale, -12.0 * scale];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(*g) - w).abs() < 1e-5,
                "clip {max}: moved {got:?}, expected {want:?}"
            );
        }
    }
    let mut g = Graph::new(DType::F32);
    let a = g.param("a", &[1]);
    let loss = g.sum(a, &[0], false).unwrap();
    let e = training_step_clipped(&mut g, loss, &Optimizer::sgd(), Some(0.0)).unwrap_err();
    assert!(e.to_string().contains("must be positive"), "{e}");
}

/// Train `g` (with its loss) for `steps` steps on batches from `batch`;
/// the losses and the final parameters.
fn train(
    mut g: Graph,
    loss: weft_autodiff::T,
    opt: Optimizer,
    lr: f32,
    steps: usize,
    init: &Feed,
    mut batch: impl FnMut(usize, &mut Feed),
) -> (Vec<f32>, Feed) {
    let spec = training_step(&mut g, loss, &opt).unwrap();
    let p = plan(&g.to_onnx().unwrap());
    let mut feed = init.clone();
    for s in &spec.state {
        let base = s.rsplit_once('.').unwrap().0;
        let (_, shape, data) = init.iter().find(|(n, _, _)| n == base).unwrap().clone();
        set(&mut feed, s, &shape, vec![0.0; data.len()]);
    }
    set(&mut feed, "lr", &[], vec![lr]);
    let mut losses = Vec::new();
    for t in 0..steps {
        set(&mut feed, "step", &[], vec![(t + 1) as f32]);
        batch(t, &mut feed);
        let outs = step(&p, &spec, &feed);
        losses.push(advance(&mut feed, &outs));
    }
    (losses, feed)
}

/// A two-layer MLP learns a non-linear rule (the sign of x·y) with SGD
/// with momentum and with Adam, and the same run twice is bit-identical.
#[test]
fn an_mlp_learns_and_training_is_deterministic() {
    let (n, hidden) = (32, 16);
    let build = || {
        let mut g = Graph::new(DType::F32);
        let w1 = g.param("w1", &[2, hidden]);
        let b1 = g.param("b1", &[hidden]);
        let w2 = g.param("w2", &[hidden, 2]);
        let b2 = g.param("b2", &[2]);
        let x = g.input("x", &[n, 2]);
        let labels = g.input("labels", &[n, 2]);
        let h = g.linear(x, w1, b1).unwrap();
        let h = g.tanh(h).unwrap();
        let logits = g.linear(h, w2, b2).unwrap();
        let loss = g.softmax_cross_entropy(logits, labels).unwrap();
        (g, loss)
    };
    let mut rng = Rng(7);
    let init: Feed = vec![
        ("w1".into(), vec![2, hidden], rng.normal(2 * hidden, 1.0)),
        ("b1".into(), vec![hidden], vec![0.0; hidden]),
        ("w2".into(), vec![hidden, 2], rng.normal(hidden * 2, 0.5)),
        ("b2".into(), vec![2], vec![0.0; 2]),
    ];
    let batches = |seed: u64| {
        let mut rng = Rng(seed);
        move |_t: usize, feed: &mut Feed| {
            let x = rng.normal(n * 2, 1.0);
            let mut labels = vec![0.0; n * 2];
            for i in 0..n {
                let class = usize::from(x[2 * i] * x[2 * i + 1] > 0.0);
                labels[2 * i + class] = 1.0;
            }
            set(feed, "x", &[n, 2], x);
            set(feed, "labels", &[n, 2], labels);
        }
    };
    for (opt, lr) in [
        (
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            0.1,
        ),
        (Optimizer::adam(), 0.02),
    ] {
        let (g, loss) = build();
        let (losses, params) = train(g, loss, opt.clone(), lr, 300, &init, batches(11));
        let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
        let last: f32 = losses[280..].iter().sum::<f32>() / 20.0;
        assert!(
            last < 0.5 * first,
            "{opt:?}: mean loss {first} over the first 20 steps, {last} over the last 20"
        );
        let (g, loss) = build();
        let (again, params_again) = train(g, loss, opt.clone(), lr, 300, &init, batches(11));
        assert_eq!(losses, again, "{opt:?}: the losses differ between two runs");
        assert_eq!(params, params_again, "{opt:?}: the parameters differ");
    }
}

/// A small CNN (conv 3x3 stride 2, ReLU, linear) learns which half of an
/// 8x8 image is brighter.
#[test]
fn a_small_cnn_learns() {
    let n = 16;
    let mut g = Graph::new(DType::F32);
    let k = g.param("k", &[4, 1, 3, 3]);
    let kb = g.param("kb", &[1, 4, 1, 1]);
    let w = g.param("w", &[64, 2]);
    let b = g.param("b", &[2]);
    let x = g.input("x", &[n, 1, 8, 8]);
    let labels = g.input("labels", &[n, 2]);
    let c = g.conv2d(x, k, 2, 1).unwrap();
    let c = g.add(c, kb).unwrap();
    let c = g.relu(c).unwrap();
    let f = g.flatten(c).unwrap();
    let logits = g.linear(f, w, b).unwrap();
    let loss = g.softmax_cross_entropy(logits, labels).unwrap();
    let mut rng = Rng(3);
    let init: Feed = vec![
        ("k".into(), vec![4, 1, 3, 3], rng.normal(36, 0.5)),
        ("kb".into(), vec![1, 4, 1, 1], vec![0.0; 4]),
        ("w".into(), vec![64, 2], rng.normal(128, 0.1)),
        ("b".into(), vec![2], vec![0.0; 2]),
    ];
    let mut data = Rng(5);
    let (losses, _) = train(g, loss, Optimizer::adam(), 0.01, 200, &init, |_, feed| {
        let mut x = data.normal(n * 64, 0.5);
        let mut labels = vec![0.0; n * 2];
        for i in 0..n {
            let class = usize::from(data.next() > 0.5);
            labels[2 * i + class] = 1.0;
            for r in 0..8 {
                for col in 0..4 {
                    x[i * 64 + r * 8 + col + 4 * class] += 0.5;
                }
            }
        }
        set(feed, "x", &[n, 1, 8, 8], x);
        set(feed, "labels", &[n, 2], labels);
    });
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[190..].iter().sum::<f32>() / 10.0;
    assert!(
        last < 0.3 * first,
        "mean loss {first} over the first 10 steps, {last} over the last 10"
    );
}
