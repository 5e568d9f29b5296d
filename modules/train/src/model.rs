//! The network: a list of layers (dense, convolution, pooling, norms,
//! activations, dropout) ending in a dense layer to the classes; its
//! training step, its evaluation graph and its exported inference model,
//! all built with weft-autodiff.

use crate::data::Rng;
use weft_autodiff::optim::{Optimizer, StepSpec, training_step_clipped};
use weft_autodiff::{DType, Error, Graph, T};

/// One layer; shapes below are per example (the batch axis is implicit).
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `[F]` to `[out]`.
    Dense(usize),
    /// `[C, H, W]` to `[out, H', W']`.
    Conv {
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    },
    MaxPool(usize),
    AvgPool(usize),
    /// Normalize the last axis, then scale and shift (learned).
    Norm,
    /// Batch normalization over the batch (and the image axes, per
    /// channel), then scale and shift (learned); running statistics for
    /// evaluation and export.
    BatchNorm,
    Relu,
    Tanh,
    Sigmoid,
    Flatten,
    /// Zero a share of the values while training (inverted dropout).
    Dropout(f32),
}

impl Layer {
    /// Parse `--layers` text: `conv:8:3[:STRIDE[:PAD]]`, `maxpool:2`,
    /// `avgpool:2`, `dense:64`, `layernorm`, `relu`, `tanh`, `sigmoid`,
    /// `flatten`, `dropout:0.2`, separated by commas.
    pub fn parse_list(text: &str) -> Result<Vec<Layer>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Layer::parse)
            .collect()
    }

    fn parse(item: &str) -> Result<Layer, String> {
        let mut parts = item.split(':');
        let kind = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let bad = || {
            format!(
                "--layers: {item:?} is not a layer (conv:OUT:K[:STRIDE[:PAD]], maxpool:K, avgpool:K, dense:N, layernorm, relu, tanh, sigmoid, flatten, dropout:RATE)"
            )
        };
        let n = |i: usize| -> Result<usize, String> {
            args.get(i)
                .and_then(|s| s.parse().ok())
                .filter(|&v: &usize| v > 0)
                .ok_or_else(bad)
        };
        let arity = |want: usize| {
            if args.len() == want {
                Ok(())
            } else {
                Err(bad())
            }
        };
        Ok(match kind {
            "dense" => {
                arity(1)?;
                Layer::Dense(n(0)?)
            }
            "conv" if (2..=4).contains(&args.len()) => {
                let k = n(1)?;
                Layer::Conv {
                    out: n(0)?,
                    k,
                    stride: if args.len() > 2 { n(2)? } else { 1 },
                    pad: match args.get(3) {
                        Some(p) => p.parse().map_err(|_| bad())?,
                        None => k / 2,
                    },
                }
            }
            "maxpool" => {
                arity(1)?;
                Layer::MaxPool(n(0)?)
            }
            "avgpool" => {
                arity(1)?;
                Layer::AvgPool(n(0)?)
            }
            "dropout" => {
                arity(1)?;
                let rate: f32 = args[0].parse().map_err(|_| bad())?;
                if !(0.0..1.0).contains(&rate) {
                    return Err(format!("--layers: {item:?}: the rate must be in [0, 1)"));
                }
                Layer::Dropout(rate)
            }
            "layernorm" | "batchnorm" | "relu" | "tanh" | "sigmoid" | "flatten" => {
                arity(0)?;
                match kind {
                    "layernorm" => Layer::Norm,
                    "batchnorm" => Layer::BatchNorm,
                    "relu" => Layer::Relu,
                    "tanh" => Layer::Tanh,
                    "sigmoid" => Layer::Sigmoid,
                    _ => Layer::Flatten,
                }
            }
            _ => return Err(bad()),
        })
    }
}

pub struct Net {
    /// One example's shape: `[F]`, or `[C, H, W]` for image data.
    pub input: Vec<usize>,
    /// The hidden layers; a dense layer to `classes` follows them.
    pub layers: Vec<Layer>,
    pub classes: usize,
}

/// A parameter: its name and shape.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
}

/// What the training loop needs of a model, whether a layer list or an
/// imported ONNX model being fine-tuned.
pub trait Arch {
    /// One example's values (the CSV columns before the label).
    fn features(&self) -> usize;
    /// One example's shape (`[F]`, or `[C, H, W]` for images).
    fn example_shape(&self) -> Vec<usize>;
    fn classes(&self) -> usize;
    /// The trainable parameters, in the step graph's order.
    fn params(&self) -> Vec<Param>;
    /// Their starting values.
    fn init(&self, seed: u64) -> Vec<Vec<f32>>;
    /// State the step updates that is not trained (batch norm's running
    /// statistics): each buffer with its starting value. The step graph
    /// takes `NAME` and gives `NAME.next`, like the optimizer state.
    fn buffers(&self) -> Vec<(Param, f32)> {
        Vec::new()
    }
    /// Per dropout layer: the mask shape per example and the rate.
    fn masks(&self) -> Vec<(Vec<usize>, f32)>;
    /// The training step for batches of `batch` rows: inputs `x` (flat
    /// rows), `labels` (one-hot), the masks `mask0`, ...
    fn step(
        &self,
        batch: usize,
        opt: &Optimizer,
        clip_norm: Option<f64>,
    ) -> Result<(Vec<u8>, StepSpec), Error>;
    /// Logits for `batch` flat rows `x`, the parameters and buffers as
    /// inputs: the graph and its input names in order.
    fn eval(&self, batch: usize) -> Result<(Vec<u8>, Vec<String>), Error>;
    /// The trained model for serving: `params` in [`Arch::params`] order,
    /// `buffers` in [`Arch::buffers`] order.
    fn export(&self, params: &[Vec<f32>], buffers: &[Vec<f32>]) -> Result<Vec<u8>, Error>;
    /// What a checkpoint must have been made by to be resumed here.
    fn signature(&self) -> String;
}

enum Init {
    /// He-uniform over this fan-in.
    He(usize),
    Zeros,
    Ones,
}

/// What the layers make of the input, checked once.
struct Walk {
    params: Vec<(Param, Init)>,
    /// Running statistics (not trained): name, shape, start value.
    buffers: Vec<(Param, f32)>,
    /// Per dropout layer, its mask's shape per example and its rate.
    masks: Vec<(Vec<usize>, f32)>,
}

impl Walk {
    fn param(&mut self, name: String, shape: Vec<usize>, init: Init) {
        self.params.push((Param { name, shape }, init));
    }
}

impl Net {
    /// Every layer, the final dense layer included.
    fn all(&self) -> Vec<Layer> {
        let mut all = self.layers.clone();
        all.push(Layer::Dense(self.classes));
        all
    }

    /// Walk the shapes through the layers: the parameters and masks, or
    /// the first layer that does not fit what reaches it.
    fn walk(&self) -> Result<Walk, String> {
        let mut shape = self.input.clone();
        let mut w = Walk {
            params: Vec::new(),
            buffers: Vec::new(),
            masks: Vec::new(),
        };
        let mut index = 0;
        for (i, layer) in self.all().iter().enumerate() {
            let at = |what: &str| format!("layer {} ({layer:?}) {what}; it gets {shape:?}", i + 1);
            match *layer {
                Layer::Dense(out) => {
                    let [f] = shape[..] else {
                        return Err(at("needs one axis: add flatten before it"));
                    };
                    w.param(format!("w{index}"), vec![f, out], Init::He(f));
                    w.param(format!("b{index}"), vec![out], Init::Zeros);
                    index += 1;
                    shape = vec![out];
                }
                Layer::Conv {
                    out,
                    k,
                    stride,
                    pad,
                } => {
                    let [c, h, wd] = shape[..] else {
                        return Err(at("needs [C, H, W]: set --input-shape"));
                    };
                    let size = |x: usize| (x + 2 * pad).checked_sub(k).map(|d| d / stride + 1);
                    let (Some(h2), Some(w2)) = (size(h), size(wd)) else {
                        return Err(at("has a kernel larger than the padded input"));
                    };
                    w.param(format!("w{index}"), vec![out, c, k, k], Init::He(c * k * k));
                    w.param(format!("b{index}"), vec![out], Init::Zeros);
                    index += 1;
                    shape = vec![out, h2, w2];
                }
                Layer::MaxPool(k) | Layer::AvgPool(k) => {
                    let [c, h, wd] = shape[..] else {
                        return Err(at("needs [C, H, W]"));
                    };
                    if h < k || wd < k {
                        return Err(at("has a window larger than its input"));
                    }
                    shape = vec![c, h / k, wd / k];
                }
                Layer::BatchNorm => {
                    let c = shape[0];
                    for (name, init) in [("gamma", Init::Ones), ("beta", Init::Zeros)] {
                        w.param(format!("{name}{index}"), vec![c], init);
                    }
                    for (name, start) in [("mean", 0.0), ("var", 1.0)] {
                        w.buffers.push((
                            Param {
                                name: format!("{name}{index}"),
                                shape: vec![c],
                            },
                            start,
                        ));
                    }
                    index += 1;
                }
                Layer::Norm => {
                    let last = *shape.last().unwrap_or(&1);
                    w.param(format!("gamma{index}"), vec![last], Init::Ones);
                    w.param(format!("beta{index}"), vec![last], Init::Zeros);
                    index += 1;
                }
                Layer::Flatten => shape = vec![shape.iter().product()],
                Layer::Dropout(rate) => w.masks.push((shape.clone(), rate)),
                Layer::Relu | Layer::Tanh | Layer::Sigmoid => {}
            }
        }
        Ok(w)
    }

    /// Check the layers fit the input; the error names the first that
    /// does not.
    pub fn check(&self) -> Result<(), String> {
        self.walk().map(|_| ())
    }

    /// Logits of flat rows `x` `[N, F]`; dropout multiplies by `masks`
    /// when given (training) and is the identity otherwise.
    ///
    /// Batch norm layers read the running statistics `buffers` (in
    /// [`Arch::buffers`] order); with `updates` (training) they normalize
    /// by the batch's statistics instead and push the updated running ones
    /// there, in the same order.
    fn logits(
        &self,
        g: &mut Graph,
        x: T,
        params: &[T],
        masks: Option<&[T]>,
        buffers: &[T],
        mut updates: Option<&mut Vec<T>>,
    ) -> Result<T, Error> {
        let n = g.shape(x)[0];
        let mut shape = vec![n];
        shape.extend(&self.input);
        let mut h = g.reshape(x, &shape)?;
        let mut p = params.iter().copied();
        let mut next = || {
            p.next().ok_or(Error::Shape {
                op: "layers",
                message: "fewer parameters than layers".into(),
            })
        };
        let mut dropout = 0;
        let mut stats = buffers.iter().copied();
        for layer in self.all() {
            h = match layer {
                Layer::Dense(_) => {
                    let (w, b) = (next()?, next()?);
                    g.linear(h, w, b)?
                }
                Layer::Conv {
                    out, stride, pad, ..
                } => {
                    let (w, b) = (next()?, next()?);
                    let y = g.conv2d(h, w, stride, pad)?;
                    let b = g.reshape(b, &[out, 1, 1])?;
                    g.add(y, b)?
                }
                Layer::MaxPool(k) => g.max_pool2d(h, k)?,
                Layer::AvgPool(k) => g.avg_pool2d(h, k)?,
                Layer::Norm => {
                    let (gamma, beta) = (next()?, next()?);
                    let normed = g.layer_norm(h, 1e-5)?;
                    let scaled = g.mul(normed, gamma)?;
                    g.add(scaled, beta)?
                }
                Layer::BatchNorm => {
                    let (gamma, beta) = (next()?, next()?);
                    let missing = || Error::Shape {
                        op: "batchnorm",
                        message: "fewer running statistics than batch norm layers".into(),
                    };
                    let (running_mean, running_var) = (
                        stats.next().ok_or_else(missing)?,
                        stats.next().ok_or_else(missing)?,
                    );
                    let hs = g.shape(h).to_vec();
                    let c = hs[1];
                    // Per channel: [C, 1, 1] against [N, C, H, W], [C] against [N, C].
                    let mut per = vec![c];
                    per.extend(std::iter::repeat_n(1, hs.len() - 2));
                    let eps = g.scalar(1e-5);
                    let (centred, var) = match updates.as_deref_mut() {
                        Some(updates) => {
                            let axes: Vec<usize> = std::iter::once(0).chain(2..hs.len()).collect();
                            let m = (hs.iter().product::<usize>() / c) as f64;
                            let count = g.scalar(m);
                            let sum = g.sum(h, &axes, true)?;
                            let mean = g.div(sum, count)?;
                            let centred = g.sub(h, mean)?;
                            let sq = g.mul(centred, centred)?;
                            let sq = g.sum(sq, &axes, true)?;
                            let var = g.div(sq, count)?;
                            // Running statistics, PyTorch's way: momentum
                            // 0.1, the unbiased batch variance.
                            let keep = g.scalar(0.9);
                            let take = g.scalar(0.1);
                            let mean_c = g.reshape(mean, &[c])?;
                            let var_c = g.reshape(var, &[c])?;
                            let unbias = g.scalar(m / (m - 1.0).max(1.0));
                            let var_c = g.mul(var_c, unbias)?;
                            for (run, batch) in [(running_mean, mean_c), (running_var, var_c)] {
                                let old = g.mul(run, keep)?;
                                let new = g.mul(batch, take)?;
                                updates.push(g.add(old, new)?);
                            }
                            (centred, var)
                        }
                        None => {
                            let mean = g.reshape(running_mean, &per)?;
                            let centred = g.sub(h, mean)?;
                            (centred, g.reshape(running_var, &per)?)
                        }
                    };
                    let var = g.add(var, eps)?;
                    let sd = g.sqrt(var)?;
                    let normed = g.div(centred, sd)?;
                    let gamma = g.reshape(gamma, &per)?;
                    let beta = g.reshape(beta, &per)?;
                    let scaled = g.mul(normed, gamma)?;
                    g.add(scaled, beta)?
                }
                Layer::Relu => g.relu(h)?,
                Layer::Tanh => g.tanh(h)?,
                Layer::Sigmoid => g.sigmoid(h)?,
                Layer::Flatten => g.flatten(h)?,
                Layer::Dropout(_) => {
                    let mask = masks.and_then(|m| m.get(dropout).copied());
                    dropout += 1;
                    match mask {
                        Some(m) => g.dropout(h, m)?,
                        None => h,
                    }
                }
            };
        }
        Ok(h)
    }
}

impl Arch for Net {
    fn features(&self) -> usize {
        self.input.iter().product()
    }

    fn example_shape(&self) -> Vec<usize> {
        self.input.clone()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn params(&self) -> Vec<Param> {
        self.walk()
            .map(|w| w.params.into_iter().map(|(p, _)| p).collect())
            .unwrap_or_default()
    }

    fn masks(&self) -> Vec<(Vec<usize>, f32)> {
        self.walk().map(|w| w.masks).unwrap_or_default()
    }

    fn buffers(&self) -> Vec<(Param, f32)> {
        self.walk().map(|w| w.buffers).unwrap_or_default()
    }

    /// He-uniform weights, zero biases, unit scales, drawn from `seed`.
    fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let params = self.walk().map(|w| w.params).unwrap_or_default();
        params
            .into_iter()
            .map(|(p, init)| {
                let n: usize = p.shape.iter().product();
                match init {
                    Init::Zeros => vec![0.0; n],
                    Init::Ones => vec![1.0; n],
                    Init::He(fan_in) => {
                        let bound = (6.0 / fan_in as f32).sqrt();
                        (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * bound).collect()
                    }
                }
            })
            .collect()
    }

    fn step(
        &self,
        batch: usize,
        opt: &Optimizer,
        clip_norm: Option<f64>,
    ) -> Result<(Vec<u8>, StepSpec), Error> {
        let mut g = Graph::new(DType::F32);
        let params: Vec<T> = self
            .params()
            .iter()
            .map(|p| g.param(&p.name, &p.shape))
            .collect();
        let x = g.input("x", &[batch, self.features()]);
        let labels = g.input("labels", &[batch, self.classes]);
        let masks: Vec<T> = self
            .masks()
            .iter()
            .enumerate()
            .map(|(i, (shape, _))| {
                let mut s = vec![batch];
                s.extend(shape);
                g.input(&format!("mask{i}"), &s)
            })
            .collect();
        let buffers: Vec<T> = self
            .buffers()
            .iter()
            .map(|(b, _)| g.input(&b.name, &b.shape))
            .collect();
        let mut updates = Vec::new();
        let logits = self.logits(
            &mut g,
            x,
            &params,
            Some(&masks),
            &buffers,
            Some(&mut updates),
        )?;
        for ((b, _), new) in self.buffers().iter().zip(updates) {
            g.output(new, &format!("{}.next", b.name));
        }
        let loss = g.softmax_cross_entropy(logits, labels)?;
        let spec = training_step_clipped(&mut g, loss, opt, clip_norm)?;
        Ok((g.to_onnx()?, spec))
    }

    fn eval(&self, batch: usize) -> Result<(Vec<u8>, Vec<String>), Error> {
        let mut g = Graph::new(DType::F32);
        let params: Vec<T> = self
            .params()
            .iter()
            .map(|p| g.input(&p.name, &p.shape))
            .collect();
        let x = g.input("x", &[batch, self.features()]);
        let buffers: Vec<T> = self
            .buffers()
            .iter()
            .map(|(b, _)| g.input(&b.name, &b.shape))
            .collect();
        let logits = self.logits(&mut g, x, &params, None, &buffers, None)?;
        g.output(logits, "logits");
        Ok((g.to_onnx()?, g.input_names()))
    }

    /// One flat row `input` `[1, F]` in, `probabilities` out, the
    /// parameters baked in.
    fn export(&self, values: &[Vec<f32>], buffers: &[Vec<f32>]) -> Result<Vec<u8>, Error> {
        let mut g = Graph::new(DType::F32);
        let x = g.input("input", &[1, self.features()]);
        let shapes: Vec<Vec<usize>> = self.params().into_iter().map(|p| p.shape).collect();
        let params = shapes
            .iter()
            .zip(values)
            .map(|(s, v)| g.constant(s, v.iter().map(|&x| f64::from(x)).collect()))
            .collect::<Result<Vec<T>, Error>>()?;
        let buffers = self
            .buffers()
            .iter()
            .zip(buffers)
            .map(|((b, _), v)| g.constant(&b.shape, v.iter().map(|&x| f64::from(x)).collect()))
            .collect::<Result<Vec<T>, Error>>()?;
        let logits = self.logits(&mut g, x, &params, None, &buffers, None)?;
        let logp = g.log_softmax(logits, 1)?;
        let p = g.exp(logp)?;
        g.output(p, "probabilities");
        g.to_onnx()
    }

    fn signature(&self) -> String {
        format!("net {:?} {:?} {}", self.input, self.layers, self.classes)
    }
}
