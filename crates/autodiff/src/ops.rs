//! The op set: each op's shape rule, and the builder methods that record
//! it. Every op is one standard ONNX operator (see `write.rs`).

use crate::{Error, Graph, T};

/// An operation of the graph. Binary element-wise ops broadcast as numpy
/// (and ONNX) do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    /// `1` where positive, `-1` where negative, `0` at zero.
    Sign,
    /// Element-wise power (no gradient: optimizer bias corrections only).
    Pow,
    /// Matrix product of two rank-2 tensors.
    MatMul,
    /// Sum over `axes`, keeping them as size 1 when `keep`.
    Sum {
        axes: Vec<usize>,
        keep: bool,
    },
    /// Maximum over `axes` (ONNX `ReduceMax`); ties share the gradient
    /// equally, as JAX's `max` does.
    Max {
        axes: Vec<usize>,
        keep: bool,
    },
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    /// Broadcast to a shape.
    Expand(Vec<usize>),
    LogSoftmax {
        axis: usize,
    },
    /// 2-D convolution of `[N, C, H, W]` by `[O, C, kh, kw]`, square
    /// stride, symmetric padding and dilation, no groups.
    Conv {
        stride: usize,
        pad: usize,
        dilation: usize,
    },
    /// The transposed convolution a convolution's input gradient is:
    /// `[N, O, Ho, Wo]` by `[O, C, kh, kw]` to `[N, C, H, W]`.
    ConvTranspose {
        stride: usize,
        pad: usize,
        out: [usize; 2],
    },
    /// `[start, end)` along each axis.
    Slice {
        starts: Vec<usize>,
        ends: Vec<usize>,
    },
    /// `k`×`k` max pooling with stride `k` over `[N, C, H, W]` (ONNX
    /// `MaxPool`, floor mode: rows and columns past the last whole window
    /// are dropped).
    MaxPool {
        k: usize,
    },
    /// Zeros added before and after each axis (a slice's gradient).
    Pad {
        before: Vec<usize>,
        after: Vec<usize>,
    },
    /// Its inputs joined along `axis` (the other sizes equal).
    Concat {
        axis: usize,
    },
    /// An operator of an imported model passed through as it is: forward
    /// only, with no gradient rule, so only frozen values may flow
    /// through it.
    Foreign(Box<Foreign>),
}

/// An imported ONNX node the op set has no op for.
#[derive(Debug, Clone, PartialEq)]
pub struct Foreign {
    pub op_type: String,
    pub domain: String,
    /// The node's name in the imported model (for errors).
    pub node: String,
    pub attributes: Vec<crate::onnx::AttributeProto>,
    /// Per ONNX input, in order: where it comes from.
    pub slots: Vec<Slot>,
    /// Its (only) output's shape.
    pub shape: Vec<usize>,
}

/// One input of a [`Foreign`] node.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// The next of the node's graph values.
    Value,
    /// A tensor of the imported model (an integer shape, say) kept as is.
    Const(crate::onnx::TensorProto),
    /// An optional input left out.
    Empty,
}

fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, Error> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(Error::Shape {
                op,
                message: format!("shapes {a:?} and {b:?} do not broadcast"),
            }),
        })
        .collect()
}

impl Op {
    /// The ONNX operator's name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Neg => "Neg",
            Op::Relu => "Relu",
            Op::Sigmoid => "Sigmoid",
            Op::Tanh => "Tanh",
            Op::Exp => "Exp",
            Op::Log => "Log",
            Op::Sqrt => "Sqrt",
            Op::Sign => "Sign",
            Op::Pow => "Pow",
            Op::MatMul => "MatMul",
            Op::Sum { .. } => "ReduceSum",
            Op::Max { .. } => "ReduceMax",
            Op::Reshape(_) => "Reshape",
            Op::Transpose(_) => "Transpose",
            Op::Expand(_) => "Expand",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Conv { .. } => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::MaxPool { .. } => "MaxPool",
            Op::Concat { .. } => "Concat",
            Op::Foreign(_) => "Foreign",
        }
    }

    /// The operator as errors name it: an imported node by its ONNX
    /// operator and its node name.
    pub fn label(&self) -> String {
        match self {
            Op::Foreign(f) if f.node.is_empty() => f.op_type.clone(),
            Op::Foreign(f) => format!("{} (node {})", f.op_type, f.node),
            op => op.name().into(),
        }
    }

    /// The output shape for inputs of `shapes`, or why they do not fit.
    pub(crate) fn shape(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, Error> {
        let op = self.name();
        let bad = |message: String| Err(Error::Shape { op, message });
        let arity = match self {
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::MatMul => 2,
            Op::Conv { .. } | Op::ConvTranspose { .. } => 2,
            Op::Foreign(f) => f.slots.iter().filter(|s| **s == Slot::Value).count(),
            Op::Concat { .. } => shapes.len().max(1),
            _ => 1,
        };
        if shapes.len() != arity {
            return bad(format!("{} inputs, expected {arity}", shapes.len()));
        }
        let Some(&a) = shapes.first() else {
            return match self {
                Op::Foreign(f) => Ok(f.shape.clone()),
                _ => bad("no inputs".into()),
            };
        };
        match self {
            Op::Foreign(f) => Ok(f.shape.clone()),
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => broadcast(op, a, shapes[1]),
            Op::Neg
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Sign => Ok(a.to_vec()),
            Op::MatMul => {
                let b = shapes[1];
                if a.len() != 2 || b.len() != 2 || a[1] != b[0] {
                    return bad(format!("cannot multiply {a:?} by {b:?}"));
                }
                Ok(vec![a[0], b[1]])
            }
            Op::Sum { axes, keep } | Op::Max { axes, keep } => {
                if axes.is_empty() || axes.iter().any(|&x| x >= a.len()) {
                    return bad(format!("axes {axes:?} of a rank-{} tensor", a.len()));
                }
                Ok(a.iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect())
            }
            Op::Reshape(to) => {
                if to.iter().product::<usize>() != a.iter().product::<usize>() {
                    return bad(format!("cannot reshape {a:?} to {to:?}"));
                }
                Ok(to.clone())
            }
            Op::Transpose(perm) => {
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..a.len()).collect::<Vec<_>>() {
                    return bad(format!("{perm:?} is not a permutation of {a:?}'s axes"));
                }
                Ok(perm.iter().map(|&i| a[i]).collect())
            }
            Op::Expand(to) => {
                let b = broadcast(op, a, to)?;
                if &b != to {
                    return bad(format!("cannot broadcast {a:?} to {to:?}"));
                }
                Ok(b)
            }
            Op::LogSoftmax { axis } => {
                if *axis >= a.len() {
                    return bad(format!("axis {axis} of a rank-{} tensor", a.len()));
                }
                Ok(a.to_vec())
            }
            Op::Conv {
                stride,
                pad,
                dilation,
            } => {
                let w = shapes[1];
                if a.len() != 4 || w.len() != 4 || a[1] != w[1] || *stride == 0 || *dilation == 0 {
                    return bad(format!("input {a:?} and kernel {w:?} (NCHW, OCkk)"));
                }
                let out = |x: usize, k: usize| {
                    (x + 2 * pad)
                        .checked_sub((k - 1) * dilation + 1)
                        .map(|d| d / stride + 1)
                };
                match (out(a[2], w[2]), out(a[3], w[3])) {
                    (Some(h), Some(wd)) => Ok(vec![a[0], w[0], h, wd]),
                    _ => bad(format!("kernel {w:?} larger than the padded input {a:?}")),
                }
            }
            Op::ConvTranspose { stride, pad, out } => {
                let w = shapes[1];
                if a.len() != 4 || w.len() != 4 || a[1] != w[0] || *stride == 0 {
                    return bad(format!("input {a:?} and kernel {w:?}"));
                }
                // The sizes a convolution of this stride maps onto `a`'s.
                for (i, &o) in out.iter().enumerate() {
                    let k = w[2 + i];
                    let full = (a[2 + i] - 1) * stride + k;
                    if o + 2 * pad < full || o + 2 * pad >= full + stride {
                        return bad(format!("output size {o} does not match input {a:?}"));
                    }
                }
                Ok(vec![a[0], w[1], out[0], out[1]])
            }
            Op::MaxPool { k } => {
                if a.len() != 4 || *k == 0 || a[2] < *k || a[3] < *k {
                    return bad(format!("a {k}x{k} window over {a:?} (NCHW)"));
                }
                Ok(vec![a[0], a[1], a[2] / k, a[3] / k])
            }
            Op::Pad { before, after } => {
                if before.len() != a.len() || after.len() != a.len() {
                    return bad(format!("pads for {} axes of {a:?}", before.len()));
                }
                Ok((0..a.len()).map(|i| before[i] + a[i] + after[i]).collect())
            }
            Op::Concat { axis } => {
                if *axis >= a.len() {
                    return bad(format!("axis {axis} of {a:?}"));
                }
                let mut out = a.to_vec();
                for s in &shapes[1..] {
                    let fits =
                        s.len() == a.len() && (0..a.len()).all(|i| i == *axis || s[i] == a[i]);
                    if !fits {
                        return bad(format!("{s:?} does not join {a:?} along axis {axis}"));
                    }
                    out[*axis] += s[*axis];
                }
                Ok(out)
            }
            Op::Slice { starts, ends } => {
                if starts.len() != a.len() || ends.len() != a.len() {
                    return bad(format!("bounds for {} axes of {a:?}", starts.len()));
                }
                (0..a.len())
                    .map(|i| {
                        if starts[i] < ends[i] && ends[i] <= a[i] {
                            Ok(ends[i] - starts[i])
                        } else {
                            Err(Error::Shape {
                                op,
                                message: format!(
                                    "[{}, {}) of axis {i} of {a:?}",
                                    starts[i], ends[i]
                                ),
                            })
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Builder methods: one per op, plus composites (means, losses).
impl Graph {
    pub fn add(&mut self, a: T, b: T) -> Result<T, Error> {
        self.apply(Op::Add, &[a, b])
    }
    pub fn sub(&mut self, a: T, b: T) -> Result<T, Error> {
        self.apply(Op::Sub, &[a, b])
    }
    pub fn mul(&mut self, a: T, b: T) -> Result<T, Error> {
        self.apply(Op::Mul, &[a, b])
    }
    pub fn div(&mut self, a: T, b: T) -> Result<T, Error> {
        self.apply(Op::Div, &[a, b])
    }
    pub fn neg(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Neg, &[a])
    }
    pub fn relu(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Relu, &[a])
    }
    pub fn sigmoid(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Sigmoid, &[a])
    }
    pub fn tanh(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Tanh, &[a])
    }
    pub fn exp(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Exp, &[a])
    }
    pub fn log(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Log, &[a])
    }
    pub fn sqrt(&mut self, a: T) -> Result<T, Error> {
        self.apply(Op::Sqrt, &[a])
    }
    pub fn matmul(&mut self, a: T, b: T) -> Result<T, Error> {
        self.apply(Op::MatMul, &[a, b])
    }
    pub fn sum(&mut self, a: T, axes: &[usize], keep: bool) -> Result<T, Error> {
        self.apply(
            Op::Sum {
                axes: axes.to_vec(),
                keep,
            },
            &[a],
        )
    }
    pub fn max(&mut self, a: T, axes: &[usize], keep: bool) -> Result<T, Error> {
        self.apply(
            Op::Max {
                axes: axes.to_vec(),
                keep,
            },
            &[a],
        )
    }
    pub fn reshape(&mut self, a: T, to: &[usize]) -> Result<T, Error> {
        if self.shape(a) == to {
            return Ok(a);
        }
        self.apply(Op::Reshape(to.to_vec()), &[a])
    }
    pub fn transpose(&mut self, a: T, perm: &[usize]) -> Result<T, Error> {
        self.apply(Op::Transpose(perm.to_vec()), &[a])
    }
    pub fn expand(&mut self, a: T, to: &[usize]) -> Result<T, Error> {
        if self.shape(a) == to {
            return Ok(a);
        }
        self.apply(Op::Expand(to.to_vec()), &[a])
    }
    pub fn log_softmax(&mut self, a: T, axis: usize) -> Result<T, Error> {
        self.apply(Op::LogSoftmax { axis }, &[a])
    }
    /// 2-D convolution (`[N, C, H, W]` by `[O, C, kh, kw]`).
    pub fn conv2d(&mut self, x: T, w: T, stride: usize, pad: usize) -> Result<T, Error> {
        self.apply(
            Op::Conv {
                stride,
                pad,
                dilation: 1,
            },
            &[x, w],
        )
    }
    /// `k`×`k` max pooling with stride `k` over `[N, C, H, W]` (rows and
    /// columns past the last whole window are dropped, as ONNX `MaxPool`
    /// does): ONNX `MaxPool`, whose gradient goes to each window's
    /// maxima (ties share it, as JAX's `max` does).
    pub fn max_pool2d(&mut self, x: T, k: usize) -> Result<T, Error> {
        self.apply(Op::MaxPool { k }, &[x])
    }

    /// `k`×`k` average pooling with stride `k` (see [`Graph::max_pool2d`]).
    pub fn avg_pool2d(&mut self, x: T, k: usize) -> Result<T, Error> {
        let windows = self.windows(x, k, "avg_pool2d")?;
        let total = self.sum(windows, &[3, 5], false)?;
        let share = self.scalar(1.0 / (k * k) as f64);
        self.mul(total, share)
    }

    fn windows(&mut self, x: T, k: usize, op: &'static str) -> Result<T, Error> {
        let s = self.shape(x).to_vec();
        if s.len() != 4 || k == 0 || s[2] < k || s[3] < k {
            return Err(Error::Shape {
                op,
                message: format!("a {k}x{k} window over {s:?} (NCHW)"),
            });
        }
        let (h, w) = (s[2] / k, s[3] / k);
        let whole = if h * k == s[2] && w * k == s[3] {
            x
        } else {
            self.apply(
                Op::Slice {
                    starts: vec![0; 4],
                    ends: vec![s[0], s[1], h * k, w * k],
                },
                &[x],
            )?
        };
        self.reshape(whole, &[s[0], s[1], h, k, w, k])
    }

    /// Layer normalization over the last axis (no scale or shift; multiply
    /// and add parameters after it for those).
    pub fn layer_norm(&mut self, x: T, eps: f64) -> Result<T, Error> {
        let s = self.shape(x).to_vec();
        let Some(last) = s.len().checked_sub(1) else {
            return Err(Error::Shape {
                op: "layer_norm",
                message: "a scalar has no axis to normalize".into(),
            });
        };
        let inv = self.scalar(1.0 / s[last] as f64);
        let total = self.sum(x, &[last], true)?;
        let mean = self.mul(total, inv)?;
        let centered = self.sub(x, mean)?;
        let sq = self.mul(centered, centered)?;
        let sq_total = self.sum(sq, &[last], true)?;
        let var = self.mul(sq_total, inv)?;
        let e = self.scalar(eps);
        let var = self.add(var, e)?;
        let sd = self.sqrt(var)?;
        self.div(centered, sd)
    }

    /// Multiply by a dropout mask (`0` or `1/(1-rate)` per element) fed as
    /// an input, so the guest's seeded generator decides it and a resumed
    /// run draws the same masks.
    pub fn dropout(&mut self, x: T, mask: T) -> Result<T, Error> {
        self.mul(x, mask)
    }

    /// Flatten all axes after the first: `[N, ...]` to `[N, rest]`.
    pub fn flatten(&mut self, a: T) -> Result<T, Error> {
        let s = self.shape(a).to_vec();
        let rest = s.iter().skip(1).product();
        self.reshape(a, &[s.first().copied().unwrap_or(1), rest])
    }

    /// The mean of every element: a scalar.
    pub fn mean_all(&mut self, a: T) -> Result<T, Error> {
        let s = self.shape(a).to_vec();
        let n: usize = s.iter().product();
        let all: Vec<usize> = (0..s.len()).collect();
        let total = if all.is_empty() {
            a
        } else {
            self.sum(a, &all, false)?
        };
        let k = self.scalar(1.0 / n.max(1) as f64);
        self.mul(total, k)
    }

    /// A dense layer: `x · w + b`.
    pub fn linear(&mut self, x: T, w: T, b: T) -> Result<T, Error> {
        let y = self.matmul(x, w)?;
        self.add(y, b)
    }

    /// `parts` joined along `axis` (ONNX `Concat`); the other axes must
    /// agree. Its gradient slices each part's share back out.
    pub fn concat(&mut self, parts: &[T], axis: usize) -> Result<T, Error> {
        self.apply(Op::Concat { axis }, parts)
    }

    /// Binary cross-entropy of `logits` against `targets` in [0, 1] (one
    /// shape), averaged over every value; computed from the logits in the
    /// stable form `max(z, 0) - z·y + log(1 + exp(-|z|))` (PyTorch's
    /// `BCEWithLogitsLoss`).
    pub fn binary_cross_entropy_with_logits(&mut self, logits: T, targets: T) -> Result<T, Error> {
        if self.shape(logits) != self.shape(targets) {
            return Err(Error::Shape {
                op: "binary_cross_entropy",
                message: format!(
                    "logits {:?} and targets {:?} differ",
                    self.shape(logits),
                    self.shape(targets)
                ),
            });
        }
        let pos = self.relu(logits)?;
        let neg_z = self.neg(logits)?;
        let neg = self.relu(neg_z)?;
        let abs = self.add(pos, neg)?;
        let minus_abs = self.neg(abs)?;
        let e = self.exp(minus_abs)?;
        let one = self.scalar(1.0);
        let sum = self.add(one, e)?;
        let softplus = self.log(sum)?;
        let zy = self.mul(logits, targets)?;
        let a = self.sub(pos, zy)?;
        let per = self.add(a, softplus)?;
        self.mean_all(per)
    }

    /// Mean squared error between two tensors of one shape.
    pub fn mse(&mut self, pred: T, target: T) -> Result<T, Error> {
        let d = self.sub(pred, target)?;
        let sq = self.mul(d, d)?;
        self.mean_all(sq)
    }

    /// Softmax cross-entropy of `logits` `[N, K]` against one-hot (or
    /// soft) `labels` `[N, K]`, averaged over the batch.
    pub fn softmax_cross_entropy(&mut self, logits: T, labels: T) -> Result<T, Error> {
        let s = self.shape(logits).to_vec();
        if s.len() != 2 || self.shape(labels) != s {
            return Err(Error::Shape {
                op: "softmax_cross_entropy",
                message: format!(
                    "logits {s:?} and labels {:?} must both be [N, K]",
                    self.shape(labels)
                ),
            });
        }
        let logp = self.log_softmax(logits, 1)?;
        let picked = self.mul(logp, labels)?;
        let per_example = self.sum(picked, &[1], false)?;
        let mean = self.mean_all(per_example)?;
        self.neg(mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn shapes_are_checked_and_named() {
        let mut g = Graph::new(DType::F32);
        let a = g.input("a", &[2, 3]);
        let b = g.input("b", &[4, 3]);
        let e = g.matmul(a, b).unwrap_err();
        assert_eq!(e.to_string(), "MatMul: cannot multiply [2, 3] by [4, 3]");
        assert!(
            g.add(a, b)
                .unwrap_err()
                .to_string()
                .contains("do not broadcast")
        );
        let c = g.input("c", &[3]);
        let sum = g.add(a, c).unwrap();
        assert_eq!(g.shape(sum), [2, 3]);
        assert!(g.reshape(a, &[5]).is_err());
        let x = g.input("x", &[1, 2, 8, 8]);
        let w = g.input("w", &[4, 2, 3, 3]);
        let y = g.conv2d(x, w, 2, 1).unwrap();
        assert_eq!(g.shape(y), [1, 4, 4, 4]);
    }
}
