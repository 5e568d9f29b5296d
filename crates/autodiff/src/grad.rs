//! Reverse-mode differentiation: each op's gradient rule, written with the
//! same builder, so the backward pass is standard ONNX too.

use crate::{Error, Graph, Kind, Op, T};
use std::collections::HashMap;

impl Graph {
    /// The gradients of the scalar `loss` with respect to each of `wrt`
    /// (zeros for one the loss does not depend on), added to the graph.
    /// An op on the path from `wrt` to the loss without a gradient rule is
    /// an error naming it; ops only frozen values flow through need none.
    pub fn grad(&mut self, loss: T, wrt: &[T]) -> Result<Vec<T>, Error> {
        let shape = self.shape(loss).to_vec();
        if shape.iter().product::<usize>() != 1 {
            return Err(Error::NotScalar { shape });
        }
        // Which values depend on a `wrt` (nodes are in build order, which
        // is a topological order).
        let forward = self.nodes.len();
        let mut depends = vec![false; self.values.len()];
        for t in wrt {
            depends[t.0] = true;
        }
        for node in &self.nodes {
            if node.inputs.iter().any(|t| depends[t.0]) {
                depends[node.output.0] = true;
            }
        }
        let mut grads: HashMap<T, T> = HashMap::new();
        let ones = self.constant(&shape, vec![1.0])?;
        grads.insert(loss, ones);
        for n in (0..forward).rev() {
            let node = self.nodes[n].clone();
            let Some(&g) = grads.get(&node.output) else {
                continue;
            };
            for (i, &x) in node.inputs.iter().enumerate() {
                if !depends[x.0] {
                    continue;
                }
                let gx = self.rule(&node.op, &node.inputs, node.output, i, g)?;
                let total = match grads.get(&x) {
                    Some(&prev) => self.add(prev, gx)?,
                    None => gx,
                };
                grads.insert(x, total);
            }
        }
        wrt.iter()
            .map(|t| match grads.get(t) {
                Some(&g) => Ok(g),
                None => {
                    let s = self.shape(*t).to_vec();
                    let n = s.iter().product();
                    self.constant(&s, vec![0.0; n])
                }
            })
            .collect()
    }

    /// Sum `g` down to `shape` over the axes broadcasting expanded.
    pub(crate) fn unbroadcast(&mut self, g: T, shape: &[usize]) -> Result<T, Error> {
        let gs = self.shape(g).to_vec();
        if gs == shape {
            return Ok(g);
        }
        let lead = gs.len() - shape.len();
        let axes: Vec<usize> = (0..gs.len())
            .filter(|&i| i < lead || (shape[i - lead] == 1 && gs[i] != 1))
            .collect();
        let summed = if axes.is_empty() {
            g
        } else {
            self.sum(g, &axes, true)?
        };
        self.reshape(summed, shape)
    }

    /// The gradient flowing to input `i` of a node (`out` its output, `g`
    /// the gradient of its output).
    fn rule(&mut self, op: &Op, ins: &[T], out: T, i: usize, g: T) -> Result<T, Error> {
        let x = ins[i];
        let xs = self.shape(x).to_vec();
        match op {
            Op::Add => self.unbroadcast(g, &xs),
            Op::Sub if i == 0 => self.unbroadcast(g, &xs),
            Op::Sub => {
                let n = self.neg(g)?;
                self.unbroadcast(n, &xs)
            }
            Op::Mul => {
                let p = self.mul(g, ins[1 - i])?;
                self.unbroadcast(p, &xs)
            }
            Op::Div if i == 0 => {
                let q = self.div(g, ins[1])?;
                self.unbroadcast(q, &xs)
            }
            Op::Div => {
                // d(a/b)/db = -(a/b)/b
                let q = self.mul(g, out)?;
                let q = self.div(q, ins[1])?;
                let n = self.neg(q)?;
                self.unbroadcast(n, &xs)
            }
            Op::Neg => self.neg(g),
            Op::Relu => {
                let mask = self.apply(Op::Sign, &[out])?;
                self.mul(g, mask)
            }
            Op::Sigmoid => {
                let one = self.scalar(1.0);
                let rest = self.sub(one, out)?;
                let d = self.mul(out, rest)?;
                self.mul(g, d)
            }
            Op::Tanh => {
                let one = self.scalar(1.0);
                let sq = self.mul(out, out)?;
                let d = self.sub(one, sq)?;
                self.mul(g, d)
            }
            Op::Exp => self.mul(g, out),
            Op::Log => self.div(g, x),
            Op::Sqrt => {
                let two = self.scalar(2.0);
                let d = self.mul(out, two)?;
                self.div(g, d)
            }
            Op::MatMul if i == 0 => {
                let bt = self.transpose(ins[1], &[1, 0])?;
                self.matmul(g, bt)
            }
            Op::MatMul => {
                let at = self.transpose(ins[0], &[1, 0])?;
                self.matmul(at, g)
            }
            Op::Sum { axes, keep } => {
                let kept: Vec<usize> = xs
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| if axes.contains(&j) { 1 } else { d })
                    .collect();
                let g = if *keep { g } else { self.reshape(g, &kept)? };
                self.expand(g, &xs)
            }
            Op::Max { axes, keep } => {
                // The gradient goes to the maxima, shared equally by ties.
                let kept: Vec<usize> = xs
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| if axes.contains(&j) { 1 } else { d })
                    .collect();
                let (y, g) = if *keep {
                    (out, g)
                } else {
                    (self.reshape(out, &kept)?, self.reshape(g, &kept)?)
                };
                // 1 where x is the maximum, else 0: y - x is 0 exactly
                // there and positive elsewhere (finite floats), so
                // 1 - sign(y - x); cheaper on backends than Equal + Cast.
                let gap = self.sub(y, x)?;
                let above = self.apply(Op::Sign, &[gap])?;
                let one = self.scalar(1.0);
                let mask = self.sub(one, above)?;
                let count = self.sum(mask, axes, true)?;
                let share = self.div(g, count)?;
                self.mul(mask, share)
            }
            Op::MaxPool { k } => {
                // The windows against the maxima broadcast over them; the
                // gradient goes to the maxima, shared by ties.
                let k = *k;
                let (h, w) = (xs[2] / k, xs[3] / k);
                let whole = [xs[0], xs[1], h * k, w * k];
                let xw = if whole[..] == xs[..] {
                    x
                } else {
                    self.apply(
                        Op::Slice {
                            starts: vec![0; 4],
                            ends: whole.to_vec(),
                        },
                        &[x],
                    )?
                };
                let (n, c) = (xs[0], xs[1]);
                let xw = self.reshape(xw, &[n, c, h, k, w, k])?;
                // Each window's values last: backends broadcast and reduce
                // a trailing axis fastest.
                let xw = self.transpose(xw, &[0, 1, 2, 4, 3, 5])?;
                let xw = self.reshape(xw, &[n, c, h, w, k * k])?;
                let y = self.reshape(out, &[n, c, h, w, 1])?;
                let g = self.reshape(g, &[n, c, h, w, 1])?;
                let gap = self.sub(y, xw)?;
                let above = self.apply(Op::Sign, &[gap])?;
                let one = self.scalar(1.0);
                let mask = self.sub(one, above)?;
                let count = self.sum(mask, &[4], true)?;
                let share = self.div(g, count)?;
                let gw = self.mul(mask, share)?;
                let gw = self.reshape(gw, &[n, c, h, w, k, k])?;
                let gw = self.transpose(gw, &[0, 1, 2, 4, 3, 5])?;
                let gx = self.reshape(gw, &whole)?;
                if whole[..] == xs[..] {
                    Ok(gx)
                } else {
                    self.apply(
                        Op::Pad {
                            before: vec![0; 4],
                            after: vec![0, 0, xs[2] - h * k, xs[3] - w * k],
                        },
                        &[gx],
                    )
                }
            }
            Op::Slice { starts, ends } => {
                let after = xs.iter().zip(ends).map(|(&d, &e)| d - e).collect();
                self.apply(
                    Op::Pad {
                        before: starts.clone(),
                        after,
                    },
                    &[g],
                )
            }
            Op::Pad { before, .. } => {
                let ends = before.iter().zip(&xs).map(|(&b, &d)| b + d).collect();
                self.apply(
                    Op::Slice {
                        starts: before.clone(),
                        ends,
                    },
                    &[g],
                )
            }
            Op::Reshape(_) => self.reshape(g, &xs),
            Op::Transpose(perm) => {
                let mut inverse = vec![0; perm.len()];
                for (j, &p) in perm.iter().enumerate() {
                    inverse[p] = j;
                }
                self.transpose(g, &inverse)
            }
            Op::Expand(_) => self.unbroadcast(g, &xs),
            Op::LogSoftmax { axis } => {
                let p = self.exp(out)?;
                let total = self.sum(g, &[*axis], true)?;
                let share = self.mul(p, total)?;
                self.sub(g, share)
            }
            Op::Conv {
                stride,
                pad,
                dilation: 1,
            } if i == 0 => self.apply(
                Op::ConvTranspose {
                    stride: *stride,
                    pad: *pad,
                    out: [xs[2], xs[3]],
                },
                &[g, ins[1]],
            ),
            Op::Conv {
                stride,
                pad,
                dilation: 1,
            } => {
                // dW[o,c,i,j] = sum over n,h,w of dY[n,o,h,w] x[n,c,h*s+i-p,w*s+j-p]:
                // a convolution of x (batch as channels) by dY dilated by s.
                let xt = self.transpose(ins[0], &[1, 0, 2, 3])?;
                let gt = self.transpose(g, &[1, 0, 2, 3])?;
                let full = self.apply(
                    Op::Conv {
                        stride: 1,
                        pad: *pad,
                        dilation: *stride,
                    },
                    &[xt, gt],
                )?;
                let full = self.transpose(full, &[1, 0, 2, 3])?;
                let fs = self.shape(full).to_vec();
                if fs == xs {
                    Ok(full)
                } else {
                    self.apply(
                        Op::Slice {
                            starts: vec![0; 4],
                            ends: xs.clone(),
                        },
                        &[full],
                    )
                    .map_err(|_| Error::Shape {
                        op: "Conv gradient",
                        message: format!("kernel gradient {fs:?} for a kernel {xs:?}"),
                    })
                }
            }
            Op::Concat { axis } => {
                // This input's share of the output, sliced back out.
                let start: usize = ins[..i].iter().map(|t| self.shape(*t)[*axis]).sum();
                let gs = self.shape(g).to_vec();
                let mut starts = vec![0; gs.len()];
                let mut ends = gs.clone();
                starts[*axis] = start;
                ends[*axis] = start + xs[*axis];
                self.apply(Op::Slice { starts, ends }, &[g])
            }
            op => Err(Error::NoGradient { op: op.label() }),
        }
    }

    /// Whether `t` is a trainable parameter.
    pub fn is_param(&self, t: T) -> bool {
        self.values.get(t.0).map(|v| &v.kind) == Some(&Kind::Param)
    }
}
