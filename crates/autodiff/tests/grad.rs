//! Every op's gradient rule against central finite differences, run
//! through tract (an independent ONNX runtime) in float64: the graph the
//! builder writes is what is checked, forward and backward.

use tract_onnx::prelude::*;
use weft_autodiff::{DType, Error, Graph, Op, T};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    fn fill(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * self.next()).collect()
    }
}

type Plan = TypedRunnableModel;

fn plan(bytes: &[u8]) -> Arc<Plan> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the graph")
        .into_optimized()
        .expect("tract optimizes the graph")
        .into_runnable()
        .expect("runnable")
}

fn run(p: &Arc<Plan>, dtype: DType, inputs: &[(Vec<usize>, Vec<f64>)]) -> Vec<Vec<f64>> {
    let inputs: TVec<TValue> = inputs
        .iter()
        .map(|(s, d)| match dtype {
            DType::F64 => Tensor::from_shape(s, d).unwrap().into_tvalue(),
            DType::F32 => {
                let d: Vec<f32> = d.iter().map(|&x| x as f32).collect();
                Tensor::from_shape(s, &d).unwrap().into_tvalue()
            }
        })
        .collect();
    p.run(inputs)
        .expect("the graph runs")
        .iter()
        .map(|t| match dtype {
            DType::F64 => t
                .to_plain_array_view::<f64>()
                .unwrap()
                .iter()
                .copied()
                .collect(),
            DType::F32 => t
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x))
                .collect(),
        })
        .collect()
}

/// Check d(sum(op(xs) * r))/dxs against central differences, in float64.
fn check(
    what: &str,
    shapes: &[&[usize]],
    range: (f64, f64),
    build: impl Fn(&mut Graph, &[T]) -> Result<T, Error>,
) {
    check_in(DType::F64, what, shapes, range, build)
}

/// The same in `dtype` (float32 for the ops tract runs in float32 only,
/// with a step and tolerance for its precision).
fn check_in(
    dtype: DType,
    what: &str,
    shapes: &[&[usize]],
    range: (f64, f64),
    build: impl Fn(&mut Graph, &[T]) -> Result<T, Error>,
) {
    let (eps, rel) = match dtype {
        DType::F64 => (1e-6, 1e-6),
        DType::F32 => (1e-2, 2e-3),
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ what.len() as u64);
    let mut g = Graph::new(dtype);
    let xs: Vec<T> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| g.param(&format!("x{i}"), s))
        .collect();
    let y = build(&mut g, &xs).unwrap();
    let ys = g.shape(y).to_vec();
    let r = g
        .constant(&ys, rng.fill(ys.iter().product(), -1.0, 1.0))
        .unwrap();
    let weighted = g.mul(y, r).unwrap();
    let all: Vec<usize> = (0..ys.len()).collect();
    let loss = if all.is_empty() {
        weighted
    } else {
        g.sum(weighted, &all, false).unwrap()
    };
    let grads = g.grad(loss, &xs).unwrap();
    g.output(loss, "loss");
    for (i, d) in grads.iter().enumerate() {
        g.output(*d, &format!("d{i}"));
    }
    let p = plan(&g.to_onnx().unwrap());
    let point: Vec<(Vec<usize>, Vec<f64>)> = shapes
        .iter()
        .map(|s| (s.to_vec(), rng.fill(s.iter().product(), range.0, range.1)))
        .collect();
    let out = run(&p, dtype, &point);
    for (i, (s, x)) in point.iter().enumerate() {
        assert_eq!(
            out[1 + i].len(),
            x.len(),
            "{what}: gradient {i} has the wrong size"
        );
        for j in 0..x.len() {
            let mut at = point.clone();
            at[i].1[j] = x[j] + eps;
            let up = run(&p, dtype, &at)[0][0];
            at[i].1[j] = x[j] - eps;
            let down = run(&p, dtype, &at)[0][0];
            let numeric = (up - down) / (2.0 * eps);
            let analytic = out[1 + i][j];
            let tol = rel * (1.0 + numeric.abs());
            assert!(
                (numeric - analytic).abs() <= tol,
                "{what}: d/dx{i}[{j}] (shape {s:?}) is {analytic}, finite differences say {numeric}"
            );
        }
    }
}

#[test]
fn element_wise_ops() {
    let s: &[usize] = &[2, 3];
    check("add", &[s, s], (-1.0, 1.0), |g, x| g.add(x[0], x[1]));
    check("sub", &[s, s], (-1.0, 1.0), |g, x| g.sub(x[0], x[1]));
    check("mul", &[s, s], (-1.0, 1.0), |g, x| g.mul(x[0], x[1]));
    check("div", &[s, s], (0.5, 2.0), |g, x| g.div(x[0], x[1]));
    check("neg", &[s], (-1.0, 1.0), |g, x| g.neg(x[0]));
    check("relu", &[s], (0.1, 1.0), |g, x| g.relu(x[0]));
    check("relu<0", &[s], (-1.0, -0.1), |g, x| g.relu(x[0]));
    // tract runs these two in float32 only.
    check_in(DType::F32, "sigmoid", &[s], (-2.0, 2.0), |g, x| {
        g.sigmoid(x[0])
    });
    check_in(DType::F32, "tanh", &[s], (-2.0, 2.0), |g, x| g.tanh(x[0]));
    check("exp", &[s], (-1.0, 1.0), |g, x| g.exp(x[0]));
    check("log", &[s], (0.5, 2.0), |g, x| g.log(x[0]));
    check("sqrt", &[s], (0.5, 2.0), |g, x| g.sqrt(x[0]));
}

#[test]
fn broadcasting_sums_gradients_back() {
    check("add row", &[&[4, 3], &[3]], (-1.0, 1.0), |g, x| {
        g.add(x[0], x[1])
    });
    check("mul col", &[&[4, 3], &[4, 1]], (-1.0, 1.0), |g, x| {
        g.mul(x[0], x[1])
    });
    check("div scalar", &[&[2, 3], &[]], (0.5, 2.0), |g, x| {
        g.div(x[0], x[1])
    });
    check("sub both", &[&[1, 3], &[2, 1]], (-1.0, 1.0), |g, x| {
        g.sub(x[0], x[1])
    });
}

#[test]
fn shape_ops() {
    check("matmul", &[&[3, 4], &[4, 2]], (-1.0, 1.0), |g, x| {
        g.matmul(x[0], x[1])
    });
    check("sum keep", &[&[2, 3, 4]], (-1.0, 1.0), |g, x| {
        g.sum(x[0], &[1], true)
    });
    check("sum drop", &[&[2, 3, 4]], (-1.0, 1.0), |g, x| {
        g.sum(x[0], &[0, 2], false)
    });
    check("reshape", &[&[2, 6]], (-1.0, 1.0), |g, x| {
        g.reshape(x[0], &[3, 4])
    });
    check("transpose", &[&[2, 3, 4]], (-1.0, 1.0), |g, x| {
        g.transpose(x[0], &[2, 0, 1])
    });
    check("expand", &[&[3, 1]], (-1.0, 1.0), |g, x| {
        g.expand(x[0], &[2, 3, 4])
    });
    check("log_softmax", &[&[3, 5]], (-2.0, 2.0), |g, x| {
        g.log_softmax(x[0], 1)
    });
    check(
        "concat",
        &[&[2, 3], &[2, 1], &[2, 2]],
        (-1.0, 1.0),
        |g, x| g.concat(&[x[0], x[1], x[2]], 1),
    );
    check("concat self", &[&[2, 3]], (-1.0, 1.0), |g, x| {
        g.concat(&[x[0], x[0]], 0)
    });
    check("mean", &[&[3, 5]], (-2.0, 2.0), |g, x| g.mean_all(x[0]));
}

#[test]
fn convolutions() {
    for (stride, pad, h) in [(1, 0, 5), (1, 1, 5), (2, 1, 7), (2, 0, 6)] {
        check(
            &format!("conv s{stride} p{pad} h{h}"),
            &[&[2, 3, h, h], &[4, 3, 3, 3]],
            (-1.0, 1.0),
            |g, x| g.conv2d(x[0], x[1], stride, pad),
        );
    }
}

#[test]
fn reductions_pooling_and_norms() {
    check("max keep", &[&[3, 4]], (-1.0, 1.0), |g, x| {
        g.max(x[0], &[1], true)
    });
    check("max drop", &[&[2, 3, 4]], (-1.0, 1.0), |g, x| {
        g.max(x[0], &[0, 2], false)
    });
    for h in [4, 5] {
        check(
            &format!("max_pool2d h{h}"),
            &[&[2, 3, h, h]],
            (-1.0, 1.0),
            |g, x| g.max_pool2d(x[0], 2),
        );
        check(
            &format!("avg_pool2d h{h}"),
            &[&[2, 3, h, h]],
            (-1.0, 1.0),
            |g, x| g.avg_pool2d(x[0], 2),
        );
    }
    check("slice", &[&[3, 5]], (-1.0, 1.0), |g, x| {
        g.apply(
            Op::Slice {
                starts: vec![1, 0],
                ends: vec![3, 4],
            },
            &[x[0]],
        )
    });
    // In float64, tract's optimizer rewrites this pattern into something
    // that disagrees with its own unoptimized plan; float32 (what training
    // runs in) is right.
    check_in(DType::F32, "layer_norm", &[&[3, 5]], (-2.0, 2.0), |g, x| {
        g.layer_norm(x[0], 1e-5)
    });
}

/// Tied maxima share the gradient equally (JAX's rule for `max`).
#[test]
fn tied_maxima_share_the_gradient() {
    let mut g = Graph::new(DType::F64);
    let x = g.param("x", &[1, 4]);
    let m = g.max(x, &[1], false).unwrap();
    let loss = g.sum(m, &[0], false).unwrap();
    let d = g.grad(loss, &[x]).unwrap();
    g.output(d[0], "d");
    let p = plan(&g.to_onnx().unwrap());
    let out = run(&p, DType::F64, &[(vec![1, 4], vec![2.0, 0.5, 2.0, -1.0])]);
    assert_eq!(out[0], [0.5, 0.0, 0.5, 0.0]);
}

#[test]
fn losses() {
    check("mse", &[&[4, 3], &[4, 3]], (-1.0, 1.0), |g, x| {
        g.mse(x[0], x[1])
    });
    check("cross-entropy", &[&[4, 5]], (-2.0, 2.0), |g, x| {
        let mut onehot = vec![0.0; 20];
        for (i, k) in [1, 4, 0, 2].into_iter().enumerate() {
            onehot[i * 5 + k] = 1.0;
        }
        let labels = g.constant(&[4, 5], onehot)?;
        g.softmax_cross_entropy(x[0], labels)
    });
    check(
        "binary cross-entropy",
        &[&[4, 3], &[4, 3]],
        (-2.0, 2.0),
        // The loss is linear in the targets, so any values check it.
        |g, x| g.binary_cross_entropy_with_logits(x[0], x[1]),
    );
}

/// An op with no rule on the trained path is an error naming it; the same
/// op on a frozen path is fine.
#[test]
fn an_op_without_a_rule_is_named_unless_frozen() {
    let mut g = Graph::new(DType::F32);
    let w = g.param("w", &[3]);
    let two = g.scalar(2.0);
    let p = g.apply(Op::Pow, &[w, two]).unwrap();
    let loss = g.mean_all(p).unwrap();
    let e = g.grad(loss, &[w]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operator Pow has no gradient rule; freeze the parameters it depends on"
    );

    let mut g = Graph::new(DType::F32);
    let w = g.param("w", &[3]);
    let frozen = g.input("frozen", &[3]);
    let two = g.scalar(2.0);
    let p = g.apply(Op::Pow, &[frozen, two]).unwrap();
    let y = g.mul(w, p).unwrap();
    let loss = g.mean_all(y).unwrap();
    assert!(g.grad(loss, &[w]).is_ok());
    let v = g.input("v", &[2]);
    let loss2 = g.sum(v, &[0], false).unwrap();
    assert!(matches!(g.grad(v, &[w]), Err(Error::NotScalar { .. })));
    let _ = loss2;
}
