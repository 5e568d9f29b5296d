//! The network: an MLP classifier (ReLU between dense layers), its
//! training step, its evaluation graph and its exported inference model,
//! all built with weft-autodiff.

use crate::data::Rng;
use weft_autodiff::optim::{Optimizer, StepSpec, training_step};
use weft_autodiff::{DType, Error, Graph, T};

pub struct Net {
    /// Features, hidden widths, classes.
    pub sizes: Vec<usize>,
}

impl Net {
    /// `w0, b0, w1, b1, ...` with their shapes.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.sizes
            .windows(2)
            .enumerate()
            .flat_map(|(i, w)| {
                [
                    (format!("w{i}"), vec![w[0], w[1]]),
                    (format!("b{i}"), vec![w[1]]),
                ]
            })
            .collect()
    }

    /// He-uniform weights, zero biases.
    pub fn init(&self, rng: &mut Rng) -> Vec<Vec<f32>> {
        self.params()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                if name.starts_with('b') {
                    return vec![0.0; n];
                }
                let bound = (6.0 / shape[0] as f32).sqrt();
                (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * bound).collect()
            })
            .collect()
    }

    fn logits(&self, g: &mut Graph, x: T, params: &[T]) -> Result<T, Error> {
        let mut h = x;
        let layers = params.len() / 2;
        for (i, wb) in params.chunks(2).enumerate() {
            h = g.linear(h, wb[0], wb[1])?;
            if i + 1 < layers {
                h = g.relu(h)?;
            }
        }
        Ok(h)
    }

    /// The training step for batches of `batch` rows.
    pub fn step(&self, batch: usize, opt: &Optimizer) -> Result<(Vec<u8>, StepSpec), Error> {
        let mut g = Graph::new(DType::F32);
        let params: Vec<T> = self.params().iter().map(|(n, s)| g.param(n, s)).collect();
        let classes = *self.sizes.last().unwrap_or(&1);
        let x = g.input("x", &[batch, self.sizes[0]]);
        let labels = g.input("labels", &[batch, classes]);
        let logits = self.logits(&mut g, x, &params)?;
        let loss = g.softmax_cross_entropy(logits, labels)?;
        let spec = training_step(&mut g, loss, opt)?;
        Ok((g.to_onnx()?, spec))
    }

    /// Logits for `batch` rows, the parameters as inputs (before `x`).
    pub fn eval(&self, batch: usize) -> Result<Vec<u8>, Error> {
        let mut g = Graph::new(DType::F32);
        let params: Vec<T> = self.params().iter().map(|(n, s)| g.input(n, s)).collect();
        let x = g.input("x", &[batch, self.sizes[0]]);
        let logits = self.logits(&mut g, x, &params)?;
        g.output(logits, "logits");
        g.to_onnx()
    }

    /// The trained model for serving: one row `input` in, `probabilities`
    /// out, the parameters baked in.
    pub fn export(&self, values: &[Vec<f32>]) -> Result<Vec<u8>, Error> {
        let mut g = Graph::new(DType::F32);
        let x = g.input("input", &[1, self.sizes[0]]);
        let params = self
            .params()
            .iter()
            .zip(values)
            .map(|((_, s), v)| g.constant(s, v.iter().map(|&x| f64::from(x)).collect()))
            .collect::<Result<Vec<T>, Error>>()?;
        let logits = self.logits(&mut g, x, &params)?;
        let logp = g.log_softmax(logits, 1)?;
        let p = g.exp(logp)?;
        g.output(p, "probabilities");
        g.to_onnx()
    }
}
