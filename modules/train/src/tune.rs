//! Fine-tuning an existing ONNX classifier: the initializers `--trainable`
//! names train, everything else stays as the model has it, and the result
//! is the same model with the trained values written back.

use crate::model::{Arch, Param};
use weft_autodiff::import::{Built, Model, replace_initializers};
use weft_autodiff::optim::{Optimizer, StepSpec, training_step_clipped};
use weft_autodiff::{DType, Error, Graph};

pub struct Tune {
    path: String,
    bytes: Vec<u8>,
    model: Model,
    trainable: Vec<String>,
    classes: usize,
}

/// FNV-1a: tells one base model from another in a checkpoint's signature.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Tune {
    /// Read the model at `path` and check that the `patterns` initializers
    /// can train: the model imports, its output is `[batch, K]` scores,
    /// and a step graph builds.
    pub fn open(path: &str, patterns: &[String]) -> Result<Tune, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let model = Model::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
        if patterns.is_empty() {
            let names: Vec<String> = model
                .initializers()
                .iter()
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect();
            return Err(format!(
                "--base-model needs --trainable NAMES (initializers to train, `head.*` for a prefix; the rest stay frozen); {path} has: {}",
                names.join(", ")
            ));
        }
        let trainable = model.select(patterns).map_err(|e| format!("{path}: {e}"))?;
        let mut g = Graph::new(DType::F32);
        let mut shape = vec![1];
        shape.extend(model.example_shape());
        let x = g.input("x", &shape);
        let built = model
            .build(&mut g, x, &trainable, true)
            .map_err(|e| format!("{path}: {e}"))?;
        let classes = match g.shape(built.logits) {
            &[_, k] if k > 1 => k,
            s => {
                return Err(format!(
                    "{path}: output {} has shape {s:?} per batch of one; fine-tuning trains classifiers with [batch, classes] scores",
                    model.output_name()
                ));
            }
        };
        let tune = Tune {
            path: path.into(),
            bytes,
            model,
            trainable,
            classes,
        };
        // An operator without a gradient rule between a trainable
        // initializer and the loss shows up here, before any data is read.
        tune.step(1, &Optimizer::sgd(), None)
            .map_err(|e| format!("{}: {e}", tune.path))?;
        Ok(tune)
    }

    fn features(&self) -> usize {
        self.model.example_shape().iter().product()
    }

    /// `x` `[batch, F]` reshaped to the model's input and run through it.
    fn forward(&self, g: &mut Graph, batch: usize, params: bool) -> Result<Built, Error> {
        let x = g.input("x", &[batch, self.features()]);
        let mut shape = vec![batch];
        shape.extend(self.model.example_shape());
        let image = g.reshape(x, &shape)?;
        self.model.build(g, image, &self.trainable, params)
    }
}

impl Arch for Tune {
    fn features(&self) -> usize {
        Tune::features(self)
    }

    fn example_shape(&self) -> Vec<usize> {
        self.model.example_shape()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn params(&self) -> Vec<Param> {
        self.trainable
            .iter()
            .map(|n| Param {
                name: n.clone(),
                shape: self
                    .model
                    .initializer(n)
                    .map(|(s, _)| s.to_vec())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The model's own values: training starts where it left off.
    fn init(&self, _seed: u64) -> Vec<Vec<f32>> {
        self.trainable
            .iter()
            .map(|n| {
                self.model
                    .initializer(n)
                    .map(|(_, v)| v.to_vec())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn masks(&self) -> Vec<(Vec<usize>, f32)> {
        Vec::new()
    }

    fn step(
        &self,
        batch: usize,
        opt: &Optimizer,
        clip_norm: Option<f64>,
    ) -> Result<(Vec<u8>, StepSpec), Error> {
        let mut g = Graph::new(DType::F32);
        let built = self.forward(&mut g, batch, true)?;
        let labels = g.input("labels", &[batch, self.classes]);
        let loss = g.softmax_cross_entropy(built.logits, labels)?;
        let spec = training_step_clipped(&mut g, loss, opt, clip_norm)?;
        Ok((g.to_onnx()?, spec))
    }

    fn eval(&self, batch: usize) -> Result<(Vec<u8>, Vec<String>), Error> {
        let mut g = Graph::new(DType::F32);
        let built = self.forward(&mut g, batch, false)?;
        g.output(built.logits, "logits");
        Ok((g.to_onnx()?, g.input_names()))
    }

    /// The base model, byte for byte, with the trained initializers.
    fn export(&self, values: &[Vec<f32>], _buffers: &[Vec<f32>]) -> Result<Vec<u8>, Error> {
        let new: Vec<(String, Vec<f32>)> = self
            .trainable
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .collect();
        replace_initializers(&self.bytes, &new)
    }

    fn signature(&self) -> String {
        format!(
            "tune {:016x} {:?} {}",
            fingerprint(&self.bytes),
            self.trainable,
            self.classes
        )
    }
}
