//! Fine-tuning: an existing forward ONNX model imported into a [`Graph`],
//! its trainable initializers as parameters and the rest frozen.
//!
//! Every node the op set has an op for becomes that op (so gradients flow
//! through it); integer shape arithmetic (`Shape`, `Gather`, `Concat`,
//! ...) is folded, as shapes are static; any other node is kept as it is,
//! a [`Foreign`] op with no gradient rule. A foreign node is fine where
//! only frozen values flow through it; on a path from a trainable
//! parameter to the loss, [`Graph::grad`] names it.
//!
//! After training, [`replace_initializers`] writes the trained values into
//! the original model's bytes and leaves everything else as it was, so the
//! fine-tuned model is the source model with new weights.

use crate::onnx::*;
use crate::ops::{Foreign, Slot};
use crate::{Error, Graph, Op, T};
use prost::Message;
use std::collections::{HashMap, HashSet};

fn err(message: impl Into<String>) -> Error {
    Error::Import(message.into())
}

/// A forward ONNX model, parsed and checked.
pub struct Model {
    graph: GraphProto,
    opset: i64,
    domains: Vec<(String, i64)>,
    input: String,
    /// The input's shape; `None` where it is symbolic.
    input_dims: Vec<Option<usize>>,
    output: String,
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    /// Initializers of other types, kept as they are for foreign nodes.
    others: HashMap<String, TensorProto>,
    /// Float initializer names in the model's order.
    order: Vec<String>,
}

/// What [`Model::build`] added to a graph.
pub struct Built {
    /// The model's (first) output.
    pub output: T,
    /// The scores before a final `Softmax`/`LogSoftmax`, or the output
    /// when the model has none.
    pub logits: T,
    /// The trainable initializers, in the order they were asked for.
    pub trainable: Vec<T>,
}

/// Most elements one tensor of an imported model may have.
const MAX_ELEMENTS: u64 = 1 << 32;

/// The element count of `shape`, or an error when it passes
/// [`MAX_ELEMENTS`] (or overflows).
fn elements(shape: &[usize], what: &str) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n <= MAX_ELEMENTS)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            err(format!(
                "{what}: shape {shape:?} has more than 2^32 elements"
            ))
        })
}

fn dims(t: &TensorProto) -> Result<Vec<usize>, Error> {
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| err(format!("tensor {} has dimension {d}", t.name)))
        })
        .collect::<Result<Vec<usize>, Error>>()?;
    elements(&shape, &format!("tensor {}", t.name))?;
    Ok(shape)
}

fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().unwrap_or([0; N]))
}

fn float_data(t: &TensorProto, n: usize) -> Result<Vec<f32>, Error> {
    let v: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        le::<4>(&t.raw_data).map(f32::from_le_bytes).collect()
    };
    counted(t, v, n)
}

/// `v`, the values of `t`, when there are `n` of them as its shape says.
fn counted<V>(t: &TensorProto, v: Vec<V>, n: usize) -> Result<Vec<V>, Error> {
    if v.len() != n {
        return Err(err(format!(
            "tensor {}: {} values for shape {:?}",
            t.name,
            v.len(),
            t.dims
        )));
    }
    Ok(v)
}

fn int_data(t: &TensorProto, n: usize) -> Result<Vec<i64>, Error> {
    let v: Vec<i64> = match (t.data_type, t.raw_data.is_empty()) {
        (INT64, false) => le::<8>(&t.raw_data).map(i64::from_le_bytes).collect(),
        (INT64, true) => t.int64_data.clone(),
        (_, false) => le::<4>(&t.raw_data)
            .map(|b| i64::from(i32::from_le_bytes(b)))
            .collect(),
        (_, true) => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
    };
    counted(t, v, n)
}

fn int_tensor(shape: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: INT64,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn shape_of(v: &ValueInfoProto) -> Option<Vec<Option<usize>>> {
    let shape = v.r#type.as_ref()?.tensor_type.as_ref()?.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| d.dim_value.and_then(|x| usize::try_from(x).ok()))
            .collect(),
    )
}

/// Elementwise operators without an op here: their output has their first
/// input's shape.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "Celu",
    "Ceil",
    "Clip",
    "Cos",
    "Elu",
    "Erf",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Mish",
    "PRelu",
    "Reciprocal",
    "Round",
    "Selu",
    "Sin",
    "Softplus",
    "Softsign",
    "ThresholdedRelu",
];

/// One imported value.
#[derive(Clone)]
enum Val {
    F(T),
    /// Integers known while importing (shapes and indices).
    I(Vec<usize>, Vec<i64>),
}

struct Node<'a>(&'a NodeProto);

impl Node<'_> {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }
    fn label(&self) -> String {
        if self.0.name.is_empty() {
            self.0.op_type.clone()
        } else {
            format!("{} (node {})", self.0.op_type, self.0.name)
        }
    }
}

fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    (-r..r).contains(&a).then(|| a.rem_euclid(r) as usize)
}

impl Model {
    /// Parse `bytes` as an ONNX model with one input, float initializers
    /// stored inside it and an opset the importer reads.
    pub fn parse(bytes: &[u8]) -> Result<Model, Error> {
        let model = ModelProto::decode(bytes).map_err(|e| {
            err(format!(
                "not an ONNX model (the protobuf does not decode: {e})"
            ))
        })?;
        let graph = model
            .graph
            .ok_or_else(|| err("the ONNX model has no graph"))?;
        let mut opset = None;
        let mut domains = Vec::new();
        for o in &model.opset_import {
            match o.domain.as_str() {
                "" | "ai.onnx" => opset = Some(o.version),
                d => domains.push((d.to_string(), o.version)),
            }
        }
        let opset = opset.ok_or_else(|| err("the model imports no ai.onnx opset"))?;
        if !(13..=21).contains(&opset) {
            return Err(err(format!(
                "the model uses opset {opset}; fine-tuning reads opsets 13 to 21: convert it first (python: onnx.version_converter.convert_version(model, 17))"
            )));
        }
        let mut floats = HashMap::new();
        let mut ints = HashMap::new();
        let mut others = HashMap::new();
        let mut order = Vec::new();
        for t in &graph.initializer {
            if t.data_location == 1 {
                return Err(err(format!(
                    "initializer {} is stored in an external file; save the model with its data inside (python: onnx.save(model, path, save_as_external_data=False))",
                    t.name
                )));
            }
            let shape = dims(t)?;
            let n = shape.iter().product();
            match t.data_type {
                FLOAT => {
                    floats.insert(t.name.clone(), (shape, float_data(t, n)?));
                    order.push(t.name.clone());
                }
                INT64 | INT32 => {
                    ints.insert(t.name.clone(), (shape, int_data(t, n)?));
                }
                _ => {
                    others.insert(t.name.clone(), t.clone());
                }
            }
        }
        let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .collect();
        let [input] = inputs[..] else {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(err(format!(
                "fine-tuning needs a model with one input; this one has {}: {names:?}",
                names.len()
            )));
        };
        let elem = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .map_or(0, |t| t.elem_type);
        if elem != FLOAT {
            return Err(err(format!(
                "input {} is not float32 (ONNX type {elem}); fine-tuning feeds float32 batches",
                input.name
            )));
        }
        let input = input.clone();
        let input_dims = shape_of(&input)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| err(format!("input {} has no shape", input.name)))?;
        if input_dims[1..].iter().any(Option::is_none) {
            return Err(err(format!(
                "input {} has symbolic sizes past its first (batch) axis; fine-tuning needs one example's shape fixed",
                input.name
            )));
        }
        let output = graph
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| err("the model has no output"))?;
        Ok(Model {
            graph,
            opset,
            domains,
            input: input.name.clone(),
            input_dims,
            output,
            floats,
            ints,
            others,
            order,
        })
    }

    /// The input's name.
    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// The (first) output's name.
    pub fn output_name(&self) -> &str {
        &self.output
    }

    /// One example's shape: the input's without its first (batch) axis.
    pub fn example_shape(&self) -> Vec<usize> {
        self.input_dims[1..]
            .iter()
            .map(|d| d.unwrap_or(1))
            .collect()
    }

    /// The batch size the model fixes, if it fixes one.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.input_dims[0]
    }

    /// Every float initializer: name and shape, in the model's order.
    pub fn initializers(&self) -> Vec<(&str, &[usize])> {
        self.order
            .iter()
            .map(|n| (n.as_str(), self.floats[n].0.as_slice()))
            .collect()
    }

    /// A float initializer's shape and values.
    pub fn initializer(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.floats
            .get(name)
            .map(|(s, v)| (s.as_slice(), v.as_slice()))
    }

    /// The float initializers `patterns` name: exact names, or prefixes
    /// ending in `*`. A pattern that matches nothing is an error listing
    /// what there is.
    pub fn select(&self, patterns: &[String]) -> Result<Vec<String>, Error> {
        let mut chosen = Vec::new();
        for p in patterns {
            let hits: Vec<&String> = self
                .order
                .iter()
                .filter(|n| match p.strip_suffix('*') {
                    Some(prefix) => n.starts_with(prefix),
                    None => *n == p,
                })
                .collect();
            if hits.is_empty() {
                let list: Vec<String> = self
                    .initializers()
                    .iter()
                    .map(|(n, s)| format!("{n} {s:?}"))
                    .collect();
                return Err(err(format!(
                    "no float initializer is named `{p}`; the model has: {}",
                    list.join(", ")
                )));
            }
            for h in hits {
                if !chosen.contains(h) {
                    chosen.push(h.clone());
                }
            }
        }
        Ok(chosen)
    }

    /// Add the model to `g`, fed `x` (the input's shape with the batch
    /// first). `trainable` initializers become parameters (`params`) or
    /// plain graph inputs (an evaluation graph that takes the current
    /// values); the rest become constants. The graph is set to the model's
    /// opset so that foreign nodes keep their meaning.
    pub fn build(
        &self,
        g: &mut Graph,
        x: T,
        trainable: &[String],
        params: bool,
    ) -> Result<Built, Error> {
        let xs = g.shape(x).to_vec();
        if xs[1..] != self.example_shape()[..] {
            return Err(err(format!(
                "input {} takes examples of shape {:?}, not {:?}",
                self.input,
                self.example_shape(),
                &xs[1..]
            )));
        }
        if let Some(b) = self.fixed_batch().filter(|&b| b != xs[0]) {
            return Err(err(format!(
                "input {} fixes the batch size to {b}; train with batches of {b}, or re-export the model with a symbolic first axis",
                self.input
            )));
        }
        g.opset = self.opset;
        g.domains = self.domains.clone();
        let mut vals: HashMap<String, Val> = HashMap::new();
        vals.insert(self.input.clone(), Val::F(x));
        let mut built = Vec::new();
        for name in trainable {
            let (shape, _) = self
                .floats
                .get(name)
                .ok_or_else(|| err(format!("no float initializer is named `{name}`")))?;
            let t = if params {
                g.param(name, shape)
            } else {
                g.input(name, shape)
            };
            vals.insert(name.clone(), Val::F(t));
            built.push(t);
        }
        for (name, (shape, data)) in &self.ints {
            vals.insert(name.clone(), Val::I(shape.clone(), data.clone()));
        }
        let shapes: HashMap<&str, Vec<Option<usize>>> = self
            .graph
            .value_info
            .iter()
            .chain(&self.graph.output)
            .filter_map(|v| Some((v.name.as_str(), shape_of(v)?)))
            .collect();
        let mut cx = Import {
            model: self,
            g,
            vals,
            shapes,
            batch: xs[0],
            softmax_of: HashMap::new(),
            dropped: HashMap::new(),
        };
        for node in &self.graph.node {
            cx.node(Node(node))?;
        }
        let output = cx.float(&self.output, "the model's output")?;
        let logits = cx.softmax_of.get(&self.output).copied().unwrap_or(output);
        Ok(Built {
            output,
            logits,
            trainable: built,
        })
    }
}

struct Import<'a> {
    model: &'a Model,
    g: &'a mut Graph,
    vals: HashMap<String, Val>,
    shapes: HashMap<&'a str, Vec<Option<usize>>>,
    batch: usize,
    /// A softmax's output name to its input.
    softmax_of: HashMap<String, T>,
    /// Outputs of multi-output nodes that are not imported, to the node.
    dropped: HashMap<String, String>,
}

impl Import<'_> {
    fn get(&mut self, name: &str, user: &str) -> Result<Val, Error> {
        if let Some(v) = self.vals.get(name) {
            return Ok(v.clone());
        }
        if let Some((shape, data)) = self.model.floats.get(name) {
            let c = self
                .g
                .constant(shape, data.iter().map(|&x| f64::from(x)).collect())?;
            self.vals.insert(name.into(), Val::F(c));
            return Ok(Val::F(c));
        }
        if let Some(node) = self.dropped.get(name) {
            return Err(err(format!(
                "{user} reads {name}, an extra output of {node}; only the first output of such a node is imported"
            )));
        }
        Err(err(format!(
            "{user} reads {name}, which no node or initializer before it makes"
        )))
    }

    fn float(&mut self, name: &str, user: &str) -> Result<T, Error> {
        match self.get(name, user)? {
            Val::F(t) => Ok(t),
            Val::I(..) => Err(err(format!(
                "{user} reads {name} as float data; it holds integers"
            ))),
        }
    }

    fn node(&mut self, n: Node) -> Result<(), Error> {
        let label = n.label();
        if n.0
            .attribute
            .iter()
            .any(|a| a.r#type == ATTR_GRAPH || a.r#type == ATTR_GRAPHS)
            || ["If", "Loop", "Scan"].contains(&n.0.op_type.as_str())
        {
            return Err(err(format!(
                "{label}: control flow cannot be imported for training"
            )));
        }
        let Some(out) = n.0.output.first().cloned() else {
            return Ok(());
        };
        for extra in n.0.output.iter().skip(1).filter(|o| !o.is_empty()) {
            self.dropped.insert(extra.clone(), label.clone());
        }
        let standard = n.0.domain.is_empty() || n.0.domain == "ai.onnx";
        let v = if standard {
            self.known(&n, &out)?
        } else {
            None
        };
        let v = match v {
            Some(v) => v,
            None => Val::F(self.foreign(&n, &out)?),
        };
        self.vals.insert(out, v);
        Ok(())
    }

    fn input(&mut self, n: &Node, i: usize) -> Result<Option<Val>, Error> {
        match n.0.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => self.get(name, &n.label()).map(Some),
            None => Ok(None),
        }
    }

    /// The node as ops of the op set (or folded integers); `None` when it
    /// is to be kept as a foreign node.
    fn known(&mut self, n: &Node, out: &str) -> Result<Option<Val>, Error> {
        let label = n.label();
        let ins: Vec<Option<Val>> = (0..n.0.input.len())
            .map(|i| self.input(n, i))
            .collect::<Result<_, _>>()?;
        let f = |i: usize| match ins.get(i) {
            Some(Some(Val::F(t))) => Some(*t),
            _ => None,
        };
        let int = |i: usize| match ins.get(i) {
            Some(Some(Val::I(s, d))) => Some((s.clone(), d.clone())),
            _ => None,
        };
        let g = &mut *self.g;
        let op = n.0.op_type.as_str();
        let t = match (op, f(0), f(1)) {
            ("Add", Some(a), Some(b)) => g.add(a, b)?,
            ("Sub", Some(a), Some(b)) => g.sub(a, b)?,
            ("Mul", Some(a), Some(b)) => g.mul(a, b)?,
            ("Div", Some(a), Some(b)) => g.div(a, b)?,
            ("Relu", Some(a), _) => g.relu(a)?,
            ("Sigmoid", Some(a), _) => g.sigmoid(a)?,
            ("Tanh", Some(a), _) => g.tanh(a)?,
            ("Exp", Some(a), _) => g.exp(a)?,
            ("Log", Some(a), _) => g.log(a)?,
            ("Sqrt", Some(a), _) => g.sqrt(a)?,
            ("Neg", Some(a), _) => g.neg(a)?,
            ("Identity", Some(a), _) => a,
            ("Dropout", Some(a), _) if n.int("training_mode", 0) == 0 && f(2).is_none() => a,
            ("MatMul", Some(a), Some(b)) => {
                let (sa, sb) = (g.shape(a).to_vec(), g.shape(b).to_vec());
                match (sa.len(), sb.len()) {
                    (2, 2) => g.matmul(a, b)?,
                    (r, 2) if r > 2 => {
                        let k = sa[r - 1];
                        let flat = g.reshape(a, &[sa[..r - 1].iter().product(), k])?;
                        let y = g.matmul(flat, b)?;
                        let mut to = sa[..r - 1].to_vec();
                        to.push(sb[1]);
                        g.reshape(y, &to)?
                    }
                    _ => return Ok(None),
                }
            }
            ("Gemm", Some(a), Some(b)) => {
                let a = match n.int("transA", 0) {
                    0 => a,
                    _ => g.transpose(a, &[1, 0])?,
                };
                let b = match n.int("transB", 0) {
                    0 => b,
                    _ => g.transpose(b, &[1, 0])?,
                };
                let mut y = g.matmul(a, b)?;
                let alpha = n.float("alpha", 1.0);
                if alpha != 1.0 {
                    let s = g.scalar(f64::from(alpha));
                    y = g.mul(y, s)?;
                }
                if let Some(c) = f(2) {
                    let beta = n.float("beta", 1.0);
                    let c = if beta == 1.0 {
                        c
                    } else {
                        let s = g.scalar(f64::from(beta));
                        g.mul(c, s)?
                    };
                    y = g.add(y, c)?;
                }
                y
            }
            ("Flatten", Some(a), _) => {
                let s = g.shape(a).to_vec();
                let Some(k) = axis(n.int("axis", 1), s.len() + 1) else {
                    return Err(err(format!("{label}: axis out of range for {s:?}")));
                };
                g.reshape(a, &[s[..k].iter().product(), s[k..].iter().product()])?
            }
            ("Reshape", Some(a), _) if n.int("allowzero", 0) == 0 => {
                let Some((_, to)) = int(1) else {
                    return Ok(None);
                };
                let s = g.shape(a).to_vec();
                let mut shape: Vec<usize> = Vec::new();
                let mut infer = None;
                for (i, &d) in to.iter().enumerate() {
                    match d {
                        0 => shape
                            .push(*s.get(i).ok_or_else(|| {
                                err(format!("{label}: copies axis {i} of {s:?}"))
                            })?),
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            shape.push(1);
                        }
                        d if d > 0 && d as u64 <= MAX_ELEMENTS => shape.push(d as usize),
                        _ => return Err(err(format!("{label}: bad target shape {to:?}"))),
                    }
                }
                elements(&shape, &label)?;
                if let Some(i) = infer {
                    let known: usize = shape.iter().product();
                    let total: usize = s.iter().product();
                    if known == 0 || !total.is_multiple_of(known) {
                        return Err(err(format!("{label}: cannot reshape {s:?} to {to:?}")));
                    }
                    shape[i] = total / known;
                }
                g.reshape(a, &shape)?
            }
            ("Transpose", Some(a), _) => {
                let r = g.shape(a).len();
                let perm: Vec<usize> = match n.ints("perm") {
                    Some(p) => p.iter().map(|&x| x as usize).collect(),
                    None => (0..r).rev().collect(),
                };
                g.transpose(a, &perm)?
            }
            ("Softmax" | "LogSoftmax", Some(a), _) => {
                let r = g.shape(a).len();
                let Some(ax) = axis(n.int("axis", -1), r) else {
                    return Err(err(format!("{label}: axis out of range")));
                };
                let lp = g.log_softmax(a, ax)?;
                if ax + 1 == r {
                    self.softmax_of.insert(out.into(), a);
                }
                if op == "Softmax" { g.exp(lp)? } else { lp }
            }
            ("Conv", Some(x), Some(w)) => {
                let geom = Geometry::of(n, g.shape(x), &g.shape(w)[2..])?;
                let Some((stride, pad)) = geom
                    .simple()
                    .filter(|_| n.int("group", 1) == 1 && g.shape(x).len() == 4)
                else {
                    return Ok(None);
                };
                let y = g.conv2d(x, w, stride, pad)?;
                match f(2) {
                    Some(b) => {
                        let o = g.shape(b)[0];
                        let b = g.reshape(b, &[o, 1, 1])?;
                        g.add(y, b)?
                    }
                    None => y,
                }
            }
            ("MaxPool" | "AveragePool", Some(x), _) => {
                let Some(k) = n.ints("kernel_shape").unwrap_or_default().first().copied() else {
                    return Err(err(format!("{label}: no kernel_shape")));
                };
                let geom = Geometry::of(n, g.shape(x), &[k as usize, k as usize])?;
                let square = n.ints("kernel_shape") == Some(vec![k, k]);
                match geom.simple() {
                    Some((s, 0))
                        if square
                            && s == k as usize
                            && n.int("ceil_mode", 0) == 0
                            && g.shape(x).len() == 4 =>
                    {
                        if op == "MaxPool" {
                            g.max_pool2d(x, s)?
                        } else {
                            g.avg_pool2d(x, s)?
                        }
                    }
                    _ => return Ok(None),
                }
            }
            ("GlobalAveragePool", Some(x), _) if g.shape(x).len() == 4 => {
                let s = g.shape(x).to_vec();
                let sum = g.sum(x, &[2, 3], true)?;
                let area = g.scalar((s[2] * s[3]) as f64);
                g.div(sum, area)?
            }
            ("BatchNormalization", Some(x), Some(scale))
                if n.int("training_mode", 0) == 0 && f(2).is_some() =>
            {
                let (Some(b), Some(mean), Some(var)) = (f(2), f(3), f(4)) else {
                    return Ok(None);
                };
                let s = g.shape(x).to_vec();
                let mut per = vec![s.get(1).copied().unwrap_or(1)];
                per.extend(std::iter::repeat_n(1, s.len().saturating_sub(2)));
                let [scale, b, mean, var] = [scale, b, mean, var].map(|t| g.reshape(t, &per));
                let eps = g.scalar(f64::from(n.float("epsilon", 1e-5)));
                let var = g.add(var?, eps)?;
                let sd = g.sqrt(var)?;
                let centred = g.sub(x, mean?)?;
                let normed = g.div(centred, sd)?;
                let scaled = g.mul(normed, scale?)?;
                g.add(scaled, b?)?
            }
            ("Concat", Some(_), _) if ins.iter().all(|v| matches!(v, Some(Val::F(_)))) => {
                let parts: Vec<T> = ins
                    .iter()
                    .filter_map(|v| match v {
                        Some(Val::F(t)) => Some(*t),
                        _ => None,
                    })
                    .collect();
                let r = g.shape(parts[0]).len();
                let Some(ax) = axis(n.int("axis", 0), r) else {
                    return Err(err(format!("{label}: axis out of range")));
                };
                g.concat(&parts, ax)?
            }
            _ => return self.fold(n, &ins),
        };
        Ok(Some(Val::F(t)))
    }

    /// Integer shape arithmetic, done now (shapes are static).
    fn fold(&mut self, n: &Node, ins: &[Option<Val>]) -> Result<Option<Val>, Error> {
        let label = n.label();
        let ints = |i: usize| match ins.get(i) {
            Some(Some(Val::I(s, d))) => Some((s.clone(), d.clone())),
            _ => None,
        };
        let v = match n.0.op_type.as_str() {
            "Constant" => {
                let Some(a) = n.0.attribute.first() else {
                    return Err(err(format!("{label}: no value")));
                };
                match (a.name.as_str(), &a.t) {
                    ("value", Some(t)) => {
                        let shape = dims(t)?;
                        let count = shape.iter().product();
                        match t.data_type {
                            FLOAT => {
                                let data = float_data(t, count)?;
                                let c = self.g.constant(
                                    &shape,
                                    data.iter().map(|&x| f64::from(x)).collect(),
                                )?;
                                Val::F(c)
                            }
                            INT64 | INT32 => Val::I(shape, int_data(t, count)?),
                            _ => return Ok(None),
                        }
                    }
                    ("value_float", _) => Val::F(self.g.scalar(f64::from(a.f))),
                    ("value_floats", _) => {
                        let v: Vec<f64> = a.floats.iter().map(|&x| f64::from(x)).collect();
                        Val::F(self.g.constant(&[v.len()], v)?)
                    }
                    ("value_int", _) => Val::I(vec![], vec![a.i]),
                    ("value_ints", _) => Val::I(vec![a.ints.len()], a.ints.clone()),
                    _ => return Ok(None),
                }
            }
            "Shape" => {
                let s: Vec<i64> = match ins.first() {
                    Some(Some(Val::F(t))) => self.g.shape(*t).iter().map(|&d| d as i64).collect(),
                    Some(Some(Val::I(s, _))) => s.iter().map(|&d| d as i64).collect(),
                    _ => return Ok(None),
                };
                let r = s.len() as i64;
                let clamp = |x: i64| if x < 0 { (x + r).max(0) } else { x.min(r) } as usize;
                let start = clamp(n.int("start", 0));
                let end = clamp(n.int("end", r));
                let s = s[start..end.max(start)].to_vec();
                Val::I(vec![s.len()], s)
            }
            "Gather" if n.int("axis", 0) == 0 => {
                let (Some((ds, data)), Some((is, idx))) = (ints(0), ints(1)) else {
                    return Ok(None);
                };
                if ds.len() != 1 {
                    return Ok(None);
                }
                let picked = idx
                    .iter()
                    .map(|&i| {
                        axis(i, data.len())
                            .map(|i| data[i])
                            .ok_or_else(|| err(format!("{label}: index {i} out of range")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Val::I(is, picked)
            }
            "Unsqueeze" | "Squeeze" => {
                let Some((s, d)) = ints(0) else {
                    return Ok(None);
                };
                let shape = if n.0.op_type == "Unsqueeze" {
                    let axes = ints(1).map(|a| a.1).unwrap_or_default();
                    let mut s = s;
                    let r = s.len() + axes.len();
                    let mut ax: Vec<usize> = axes.iter().filter_map(|&a| axis(a, r)).collect();
                    ax.sort_unstable();
                    for a in ax {
                        s.insert(a.min(s.len()), 1);
                    }
                    s
                } else {
                    s.into_iter().filter(|&x| x != 1).collect()
                };
                Val::I(shape, d)
            }
            "Concat" => {
                let mut all = Vec::new();
                for i in 0..ins.len() {
                    let Some((s, d)) = ints(i) else {
                        return Ok(None);
                    };
                    if s.len() > 1 {
                        return Ok(None);
                    }
                    all.extend(d);
                }
                Val::I(vec![all.len()], all)
            }
            "Cast" if [INT64, INT32].contains(&(n.int("to", 0) as i32)) => {
                let Some((s, d)) = ints(0) else {
                    return Ok(None);
                };
                Val::I(s, d)
            }
            "Cast" if n.int("to", 0) as i32 == FLOAT => match ins.first() {
                Some(Some(Val::F(t))) => Val::F(*t),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    /// The node kept as it is.
    fn foreign(&mut self, n: &Node, out: &str) -> Result<T, Error> {
        let label = n.label();
        let mut slots = Vec::new();
        let mut values = Vec::new();
        let mut first_shape = None;
        for (i, name) in n.0.input.iter().enumerate() {
            if name.is_empty() {
                slots.push(Slot::Empty);
                continue;
            }
            if let Some(t) = self.model.others.get(name) {
                slots.push(Slot::Const(t.clone()));
                continue;
            }
            match self.get(name, &label)? {
                Val::F(t) => {
                    if i == 0 {
                        first_shape = Some(self.g.shape(t).to_vec());
                    }
                    slots.push(Slot::Value);
                    values.push(t);
                }
                Val::I(s, d) => slots.push(Slot::Const(int_tensor(&s, &d))),
            }
        }
        let recorded = self.shapes.get(out).map(|dims| {
            dims.iter()
                .enumerate()
                .map(|(i, d)| d.unwrap_or(if i == 0 { self.batch } else { 0 }))
                .collect::<Vec<usize>>()
        });
        let shape = match (recorded, first_shape) {
            (Some(s), _) if !s.contains(&0) => {
                elements(&s, &label)?;
                s
            }
            (_, Some(s)) if SAME_SHAPE.contains(&n.0.op_type.as_str()) => s,
            (_, Some(s)) if matches!(n.0.op_type.as_str(), "Conv" | "MaxPool" | "AveragePool") => {
                self.window_shape(n, &s, &values)?
            }
            _ => {
                return Err(err(format!(
                    "{label}: the importer has no op for it and the model does not record its output's shape; run ONNX shape inference first (python: onnx.shape_inference.infer_shapes(model))"
                )));
            }
        };
        self.g.apply(
            Op::Foreign(Box::new(Foreign {
                op_type: n.0.op_type.clone(),
                domain: n.0.domain.clone(),
                node: n.0.name.clone(),
                attributes: n.0.attribute.clone(),
                slots,
                shape,
            })),
            &values,
        )
    }

    /// The output shape of a convolution or pooling the op set does not
    /// cover (groups, dilation, asymmetric padding).
    fn window_shape(&self, n: &Node, x: &[usize], values: &[T]) -> Result<Vec<usize>, Error> {
        let (channels, kernel) = if n.0.op_type == "Conv" {
            let w = values
                .get(1)
                .map(|&w| self.g.shape(w).to_vec())
                .unwrap_or_default();
            if w.len() != x.len() {
                return Err(err(format!("{}: kernel {w:?} for input {x:?}", n.label())));
            }
            (w[0], w[2..].to_vec())
        } else {
            let k = n
                .ints("kernel_shape")
                .unwrap_or_default()
                .iter()
                .map(|&k| k as usize)
                .collect();
            (x[1], k)
        };
        let geom = Geometry::of(n, x, &kernel)?;
        let mut shape = vec![x[0], channels];
        for (i, &k) in kernel.iter().enumerate() {
            let span = x[2 + i] + geom.pads[i] + geom.pads[i + kernel.len()];
            if k == 0 {
                return Err(err(format!("{}: a kernel of size 0", n.label())));
            }
            let reach = (k - 1) * geom.dilations[i] + 1;
            let d = span
                .checked_sub(reach)
                .ok_or_else(|| err(format!("{}: kernel larger than the input", n.label())))?;
            let s = geom.strides[i];
            shape.push(
                if n.int("ceil_mode", 0) == 1 {
                    d.div_ceil(s)
                } else {
                    d / s
                } + 1,
            );
        }
        Ok(shape)
    }
}

/// A convolution's or pooling's strides, pads and dilations.
struct Geometry {
    strides: Vec<usize>,
    pads: Vec<usize>,
    dilations: Vec<usize>,
}

impl Geometry {
    fn of(n: &Node, x: &[usize], kernel: &[usize]) -> Result<Geometry, Error> {
        let r = kernel.len();
        let list = |name: &str, default: usize, len: usize| -> Result<Vec<usize>, Error> {
            match n.ints(name) {
                Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
                    Ok(v.iter().map(|&x| x as usize).collect())
                }
                Some(v) => Err(err(format!("{}: {name} {v:?}", n.label()))),
                None => Ok(vec![default; len]),
            }
        };
        let strides = list("strides", 1, r)?;
        let dilations = list("dilations", 1, r)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(err(format!(
                "{}: strides {strides:?} and dilations {dilations:?} must be at least 1",
                n.label()
            )));
        }
        let auto = n
            .attr("auto_pad")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| "NOTSET".into());
        let pads = match auto.as_str() {
            "NOTSET" => list("pads", 0, 2 * r)?,
            "VALID" => vec![0; 2 * r],
            "SAME_UPPER" | "SAME_LOWER" => {
                // Output size ceil(in / stride); the padding is split, the
                // odd one at the end (UPPER) or the start (LOWER).
                let mut before = Vec::new();
                let mut after = Vec::new();
                for i in 0..r {
                    let size = x.get(2 + i).copied().unwrap_or(0);
                    let out = size.div_ceil(strides[i]);
                    let reach = (kernel[i].max(1) - 1) * dilations[i] + 1;
                    let total = ((out.max(1) - 1) * strides[i] + reach).saturating_sub(size);
                    let (small, big) = (total / 2, total - total / 2);
                    if auto == "SAME_UPPER" {
                        before.push(small);
                        after.push(big);
                    } else {
                        before.push(big);
                        after.push(small);
                    }
                }
                before.extend(after);
                before
            }
            other => return Err(err(format!("{}: auto_pad {other}", n.label()))),
        };
        Ok(Geometry {
            strides,
            pads,
            dilations,
        })
    }

    /// `(stride, pad)` when both are the same on every axis and side and
    /// there is no dilation: what the op set's convolution takes.
    fn simple(&self) -> Option<(usize, usize)> {
        let s = *self.strides.first()?;
        let p = *self.pads.first()?;
        (self.strides.iter().all(|&x| x == s)
            && self.pads.iter().all(|&x| x == p)
            && self.dilations.iter().all(|&d| d == 1))
        .then_some((s, p))
    }
}

/// `bytes` (an ONNX model) with the float initializers in `new` replaced by
/// the values given (same shapes); every other byte of the model is kept.
pub fn replace_initializers(bytes: &[u8], new: &[(String, Vec<f32>)]) -> Result<Vec<u8>, Error> {
    let mut left: HashMap<&str, &[f32]> = new.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    let out = rewrite(bytes, 7, &mut |graph| {
        rewrite(graph, 5, &mut |tensor| {
            let t = TensorProto::decode(tensor)
                .map_err(|e| err(format!("an initializer does not decode: {e}")))?;
            let Some(values) = left.remove(t.name.as_str()) else {
                return Ok(tensor.to_vec());
            };
            let n: usize = dims(&t)?.iter().product();
            if t.data_type != FLOAT || n != values.len() {
                return Err(err(format!(
                    "initializer {} holds {n} values of ONNX type {}; the trained one has {} float32 values",
                    t.name,
                    t.data_type,
                    values.len()
                )));
            }
            Ok(TensorProto {
                dims: t.dims,
                data_type: FLOAT,
                name: t.name,
                raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ..Default::default()
            }
            .encode_to_vec())
        })
    })?;
    if let Some(name) = left.keys().next() {
        return Err(err(format!("the model has no initializer named {name}")));
    }
    Ok(out)
}

type Edit<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, Error> + 'a;

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, Error> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*at)
            .ok_or_else(|| err("the model's protobuf ends inside a number"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("the model's protobuf has an overlong number"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Copy the protobuf message `bytes`, passing each length-delimited field
/// numbered `field` through `edit`.
fn rewrite(bytes: &[u8], field: u64, edit: &mut Edit) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let key = varint(bytes, &mut at)?;
        let end = match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
                at
            }
            1 => at + 8,
            5 => at + 4,
            2 => {
                let len = varint(bytes, &mut at)? as usize;
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| err("the model's protobuf is truncated"))?;
                if key >> 3 == field {
                    let body = edit(&bytes[at..end])?;
                    put_varint(&mut out, key);
                    put_varint(&mut out, body.len() as u64);
                    out.extend(body);
                    at = end;
                    continue;
                }
                end
            }
            w => return Err(err(format!("the model's protobuf has wire type {w}"))),
        };
        if end > bytes.len() {
            return Err(err("the model's protobuf is truncated"));
        }
        out.extend_from_slice(&bytes[start..end]);
        at = end;
    }
    Ok(out)
}
