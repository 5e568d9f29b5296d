//! Optimizers as graph updates, and the training step they make.
//!
//! A step graph's inputs are every parameter (`NAME`), the optimizer's
//! state for it (`NAME.velocity`, or `NAME.m` and `NAME.v`), the graph's
//! other inputs (the batch), `lr` and `step` (scalars; `step` counts from
//! 1); [`StepSpec::inputs`] gives their order in the graph. Its outputs are the updated parameters (`NAME.next`),
//! the updated state (`NAME.m.next`, ...) and `loss`. A caller feeds each
//! `.next` back as the next step's input of the same name.

use crate::{Error, Graph, T};

/// How parameters move along their gradients.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// SGD with momentum (PyTorch's convention: `v = μv + g`,
    /// `p -= lr·v`) and L2 weight decay added to the gradient. No state
    /// when `momentum` is 0.
    Sgd { momentum: f64, weight_decay: f64 },
    /// Adam with bias correction; `weight_decay` is decoupled (AdamW).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    pub fn sgd() -> Optimizer {
        Optimizer::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }

    pub fn adam() -> Optimizer {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// The names of the state this optimizer keeps per parameter.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &["velocity"],
            Optimizer::Adam { .. } => &["m", "v"],
        }
    }
}

/// What a step graph holds, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub params: Vec<String>,
    /// Per parameter, its state names (`w.m`, `w.v`).
    pub state: Vec<String>,
    /// The batch inputs.
    pub data: Vec<String>,
    /// Every graph input, in the graph's order.
    pub inputs: Vec<String>,
    /// Every graph output, in the graph's order.
    pub outputs: Vec<String>,
}

/// Add gradients of `loss` for every parameter and `opt`'s update, and
/// mark the step's outputs.
pub fn training_step(g: &mut Graph, loss: T, opt: &Optimizer) -> Result<StepSpec, Error> {
    training_step_clipped(g, loss, opt, None)
}

/// [`training_step`], the gradients first scaled down together so that
/// their global L2 norm is at most `clip_norm` (PyTorch's
/// `clip_grad_norm_`, optax's `clip_by_global_norm`).
pub fn training_step_clipped(
    g: &mut Graph,
    loss: T,
    opt: &Optimizer,
    clip_norm: Option<f64>,
) -> Result<StepSpec, Error> {
    let params = g.params();
    let data: Vec<String> = g.inputs().iter().map(|t| g.name(*t).to_owned()).collect();
    let mut grads = g.grad(loss, &params)?;
    if let Some(max) = clip_norm {
        grads = clip_by_global_norm(g, &grads, max)?;
    }
    let mut state_names = Vec::new();
    let mut states = Vec::new();
    for &p in &params {
        let shape = g.shape(p).to_vec();
        let name = g.name(p).to_owned();
        let mut mine = Vec::new();
        for s in opt.state_names() {
            let n = format!("{name}.{s}");
            mine.push(g.input(&n, &shape));
            state_names.push(n);
        }
        states.push(mine);
    }
    let lr = g.input("lr", &[]);
    let step = g.input("step", &[]);
    for ((&p, &grad), state) in params.iter().zip(&grads).zip(&states) {
        let name = g.name(p).to_owned();
        let (next, next_state) = update(g, opt, p, grad, state, lr, step)?;
        g.output(next, &format!("{name}.next"));
        for (s, t) in opt.state_names().iter().zip(&next_state) {
            g.output(*t, &format!("{name}.{s}.next"));
        }
    }
    g.output(loss, "loss");
    Ok(StepSpec {
        params: params.iter().map(|t| g.name(*t).to_owned()).collect(),
        state: state_names,
        data,
        inputs: g.input_names(),
        outputs: g.output_names(),
    })
}

/// One parameter's update: its next value and next state.
fn update(
    g: &mut Graph,
    opt: &Optimizer,
    p: T,
    grad: T,
    state: &[T],
    lr: T,
    step: T,
) -> Result<(T, Vec<T>), Error> {
    match *opt {
        Optimizer::Sgd {
            momentum,
            weight_decay,
        } => {
            let mut d = grad;
            if weight_decay != 0.0 {
                let wd = g.scalar(weight_decay);
                let decay = g.mul(p, wd)?;
                d = g.add(d, decay)?;
            }
            let mut next_state = Vec::new();
            if momentum != 0.0 {
                let mu = g.scalar(momentum);
                let kept = g.mul(state[0], mu)?;
                d = g.add(kept, d)?;
                next_state.push(d);
            }
            let delta = g.mul(d, lr)?;
            Ok((g.sub(p, delta)?, next_state))
        }
        Optimizer::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let (b1, b2) = (g.scalar(beta1), g.scalar(beta2));
            let (c1, c2) = (g.scalar(1.0 - beta1), g.scalar(1.0 - beta2));
            let m_kept = g.mul(state[0], b1)?;
            let m_new = g.mul(grad, c1)?;
            let m = g.add(m_kept, m_new)?;
            let v_kept = g.mul(state[1], b2)?;
            let sq = g.mul(grad, grad)?;
            let v_new = g.mul(sq, c2)?;
            let v = g.add(v_kept, v_new)?;
            // Bias corrections 1 - β^step.
            let one = g.scalar(1.0);
            let p1 = g.apply(crate::Op::Pow, &[b1, step])?;
            let p2 = g.apply(crate::Op::Pow, &[b2, step])?;
            let bc1 = g.sub(one, p1)?;
            let bc2 = g.sub(one, p2)?;
            let m_hat = g.div(m, bc1)?;
            let v_hat = g.div(v, bc2)?;
            let root = g.sqrt(v_hat)?;
            let e = g.scalar(eps);
            let denom = g.add(root, e)?;
            let mut d = g.div(m_hat, denom)?;
            if weight_decay != 0.0 {
                let wd = g.scalar(weight_decay);
                let decay = g.mul(p, wd)?;
                d = g.add(d, decay)?;
            }
            let delta = g.mul(d, lr)?;
            Ok((g.sub(p, delta)?, vec![m, v]))
        }
    }
}

/// Scale `grads` by `max / max(norm, max)`, `norm` their global L2 norm:
/// unchanged when the norm is within `max`.
pub fn clip_by_global_norm(g: &mut Graph, grads: &[T], max: f64) -> Result<Vec<T>, Error> {
    if !(max > 0.0 && max.is_finite()) {
        return Err(Error::Shape {
            op: "clip_by_global_norm",
            message: format!("a maximum norm of {max}; it must be positive"),
        });
    }
    let mut total = g.scalar(0.0);
    for &d in grads {
        let sq = g.mul(d, d)?;
        let all: Vec<usize> = (0..g.shape(sq).len()).collect();
        let s = if all.is_empty() {
            sq
        } else {
            g.sum(sq, &all, false)?
        };
        total = g.add(total, s)?;
    }
    let norm = g.sqrt(total)?;
    // max(norm, max) = max + relu(norm - max), with standard operators.
    let cap = g.scalar(max);
    let over = g.sub(norm, cap)?;
    let over = g.relu(over)?;
    let bound = g.add(cap, over)?;
    let scale = g.div(cap, bound)?;
    grads.iter().map(|&d| g.mul(d, scale)).collect()
}
