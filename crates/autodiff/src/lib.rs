//! `weft-autodiff`: build a model's forward graph, take reverse-mode
//! gradients of a scalar loss, add an optimizer update, and write the whole
//! training step as a standard ONNX model.
//!
//! The wasi-nn API has no training calls, so a training step is an ordinary
//! graph: its inputs are the parameters, the optimizer state, a batch and
//! the hyperparameters; its outputs are the updated parameters and state
//! and the loss. It uses standard ONNX operators only (opset 17), so every
//! wasi-nn host with an ONNX backend runs it — Weft's tract CPU backend and
//! its GPU backend included. The crate is pure Rust with one dependency
//! that matters (prost, for the protobuf bytes) and builds for the wasm
//! targets: a guest builds its own training step.
//!
//! Shapes are static: every value's shape is known when it is built, so
//! mistakes (mismatched matrix sizes, a bad reshape) are errors at build
//! time that name the op, not failures inside the backend.
//!
//! ```
//! use weft_autodiff::{DType, Graph};
//! let mut g = Graph::new(DType::F32);
//! let x = g.input("x", &[4, 3]);
//! let w = g.param("w", &[3, 2]);
//! let y = g.matmul(x, w)?;
//! let sq = g.mul(y, y)?;
//! let loss = g.mean_all(sq)?;
//! let grads = g.grad(loss, &[w])?;
//! g.output(grads[0], "dw");
//! let onnx: Vec<u8> = g.to_onnx()?;
//! # Ok::<(), weft_autodiff::Error>(())
//! ```

mod grad;
pub mod import;
pub mod onnx;
mod ops;
pub mod optim;
mod write;

pub use ops::{Foreign, Op, Slot};

/// Element type of every floating-point value in a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    /// For exact gradient checks.
    F64,
}

/// A value in a graph (a handle; cheap to copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct T(pub(crate) usize);

/// What went wrong building a graph.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    #[error("operator {op} has no gradient rule; freeze the parameters it depends on")]
    NoGradient { op: String },
    #[error("the loss must be a scalar, not a tensor of shape {shape:?}")]
    NotScalar { shape: Vec<usize> },
    #[error("two values are named `{name}`")]
    DuplicateName { name: String },
    #[error("value {index} is not in this graph")]
    Foreign { index: usize },
    /// An ONNX model this crate cannot import as it is.
    #[error("{0}")]
    Import(String),
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// A graph input fed on every run (a batch, a hyperparameter).
    Input,
    /// A trainable parameter: a graph input too (the step's caller holds
    /// the parameters between steps).
    Param,
    /// A constant baked into the graph.
    Const(Vec<f64>),
    /// The output of a node.
    Node(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub op: Op,
    pub inputs: Vec<T>,
    pub output: T,
}

/// A graph under construction.
#[derive(Debug, Clone)]
pub struct Graph {
    pub(crate) dtype: DType,
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) outputs: Vec<(T, String)>,
    /// The ONNX opset the graph is written for.
    pub(crate) opset: i64,
    /// Other operator domains foreign nodes use, with their versions.
    pub(crate) domains: Vec<(String, i64)>,
}

impl Graph {
    pub fn new(dtype: DType) -> Graph {
        Graph {
            dtype,
            values: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
            opset: write::OPSET,
            domains: Vec::new(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn value(&mut self, name: String, shape: &[usize], kind: Kind) -> T {
        self.values.push(Value {
            name,
            shape: shape.to_vec(),
            kind,
        });
        T(self.values.len() - 1)
    }

    /// A graph input fed on every run.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> T {
        self.value(name.into(), shape, Kind::Input)
    }

    /// A trainable parameter (a graph input whose gradient the step takes).
    pub fn param(&mut self, name: &str, shape: &[usize]) -> T {
        self.value(name.into(), shape, Kind::Param)
    }

    /// A constant tensor (row-major `data`).
    pub fn constant(&mut self, shape: &[usize], data: Vec<f64>) -> Result<T, Error> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::Shape {
                op: "constant",
                message: format!("{} values for shape {shape:?} ({n} elements)", data.len()),
            });
        }
        let name = format!("c{}", self.values.len());
        Ok(self.value(name, shape, Kind::Const(data)))
    }

    /// A scalar constant.
    pub fn scalar(&mut self, x: f64) -> T {
        let name = format!("c{}", self.values.len());
        self.value(name, &[], Kind::Const(vec![x]))
    }

    /// Mark `t` as a graph output named `name`.
    pub fn output(&mut self, t: T, name: &str) {
        self.outputs.push((t, name.into()));
    }

    /// The shape of a value.
    pub fn shape(&self, t: T) -> &[usize] {
        &self.values[t.0].shape
    }

    /// The name a value has in the ONNX graph.
    pub fn name(&self, t: T) -> &str {
        &self.values[t.0].name
    }

    /// The trainable parameters, in the order they were declared.
    pub fn params(&self) -> Vec<T> {
        (0..self.values.len())
            .filter(|&i| self.values[i].kind == Kind::Param)
            .map(T)
            .collect()
    }

    /// The graph inputs that are not parameters, in declaration order.
    pub fn inputs(&self) -> Vec<T> {
        (0..self.values.len())
            .filter(|&i| self.values[i].kind == Kind::Input)
            .map(T)
            .collect()
    }

    /// The names of the ONNX graph's inputs, in its order (parameters and
    /// inputs as they were declared).
    pub fn input_names(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|v| matches!(v.kind, Kind::Input | Kind::Param))
            .map(|v| v.name.clone())
            .collect()
    }

    /// The names of the ONNX graph's outputs, in its order.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(_, n)| n.clone()).collect()
    }

    /// Record a node computing `op` of `inputs`; its output shape is
    /// checked and inferred here.
    pub fn apply(&mut self, op: Op, inputs: &[T]) -> Result<T, Error> {
        for t in inputs {
            if t.0 >= self.values.len() {
                return Err(Error::Foreign { index: t.0 });
            }
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| self.shape(*t)).collect();
        let shape = op.shape(&shapes)?;
        let node = self.nodes.len();
        let out = self.value(format!("v{}", self.values.len()), &shape, Kind::Node(node));
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            output: out,
        });
        Ok(out)
    }

    /// Serialize as an ONNX model (opset 17).
    pub fn to_onnx(&self) -> Result<Vec<u8>, Error> {
        write::onnx(self)
    }
}
