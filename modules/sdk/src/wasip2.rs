//! wasm32-wasip2: the `wasi:nn@0.2.0-rc-2024-10-28` component interfaces.
//!
//! `compute` takes named input tensors and returns named outputs. This module
//! keeps the guest's inputs (so they persist across computes, as on wasip1)
//! and the outputs of the last compute.

use crate::{Encoding, Error, ErrorCode, Result, Target, Tensor, TensorType, shape};

wit_bindgen::generate!({
    path: "wit",
    world: "ml",
});

use wasi::nn::{errors, graph, inference, tensor};

fn host_error(op: String, e: errors::Error) -> Error {
    let code = match e.code() {
        errors::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
        errors::ErrorCode::InvalidEncoding => ErrorCode::InvalidEncoding,
        errors::ErrorCode::Timeout => ErrorCode::Timeout,
        errors::ErrorCode::RuntimeError => ErrorCode::RuntimeError,
        errors::ErrorCode::UnsupportedOperation => ErrorCode::UnsupportedOperation,
        errors::ErrorCode::TooLarge => ErrorCode::TooLarge,
        errors::ErrorCode::NotFound => ErrorCode::NotFound,
        errors::ErrorCode::Security => ErrorCode::Security,
        errors::ErrorCode::Unknown => ErrorCode::Unknown,
    };
    Error::new(code, op, Some(e.data()))
}

pub(crate) struct Graph(graph::Graph);

impl Graph {
    pub fn load(builders: &[&[u8]], encoding: Encoding, target: Target) -> Result<Graph> {
        // The generated binding wants owned byte lists.
        let builders: Vec<Vec<u8>> = builders.iter().map(|b| b.to_vec()).collect();
        let encoding = match encoding {
            Encoding::Openvino => graph::GraphEncoding::Openvino,
            Encoding::Onnx => graph::GraphEncoding::Onnx,
            Encoding::Tensorflow => graph::GraphEncoding::Tensorflow,
            Encoding::Pytorch => graph::GraphEncoding::Pytorch,
            Encoding::TensorflowLite => graph::GraphEncoding::Tensorflowlite,
            Encoding::Autodetect => graph::GraphEncoding::Autodetect,
        };
        let target = match target {
            Target::Cpu => graph::ExecutionTarget::Cpu,
            Target::Gpu => graph::ExecutionTarget::Gpu,
            Target::Tpu => graph::ExecutionTarget::Tpu,
        };
        graph::load(&builders, encoding, target)
            .map(Graph)
            .map_err(|e| host_error("load".into(), e))
    }

    pub fn load_by_name(name: &str) -> Result<Graph> {
        graph::load_by_name(name)
            .map(Graph)
            .map_err(|e| host_error(format!("load_by_name({name:?})"), e))
    }

    pub fn context(&self) -> Result<Context> {
        let ctx = self
            .0
            .init_execution_context()
            .map_err(|e| host_error("init_execution_context".into(), e))?;
        Ok(Context {
            ctx,
            inputs: Vec::new(),
            outputs: Vec::new(),
            bound: Vec::new(),
            carried: Vec::new(),
        })
    }
}

pub(crate) struct Context {
    ctx: inference::GraphExecutionContext,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, tensor::Tensor)>,
    /// `(output index, input name)`: outputs fed back as inputs.
    bound: Vec<(u32, String)>,
    /// Inputs the last compute's outputs feed next (bound, not set since).
    carried: Vec<String>,
}

impl Context {
    pub fn set_input(&mut self, index: u32, tensor: &Tensor) -> Result<()> {
        // wasmtime's convention: a name that is no input name but a number is
        // the input at that position.
        self.set_input_named(&index.to_string(), tensor)
    }

    pub fn set_input_named(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        self.carried.retain(|n| n != name);
        match self.inputs.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => *t = tensor.clone(),
            None => self.inputs.push((name.to_owned(), tensor.clone())),
        }
        Ok(())
    }

    pub fn compute(&mut self) -> Result<()> {
        // The last compute's outputs, for the inputs bound to them.
        let mut previous: Vec<Option<tensor::Tensor>> = std::mem::take(&mut self.outputs)
            .into_iter()
            .map(|(_, t)| Some(t))
            .collect();
        let carried = std::mem::take(&mut self.carried);
        let inputs = self
            .inputs
            .iter()
            .map(|(name, t)| {
                let resident = carried
                    .iter()
                    .any(|n| n == name)
                    .then(|| self.bound.iter().find(|(_, n)| n == name))
                    .flatten()
                    .and_then(|(o, _)| previous.get_mut(*o as usize)?.take());
                let tensor = resident
                    .unwrap_or_else(|| tensor::Tensor::new(&t.dims, wit_type(t.ty), &t.data));
                (name.clone(), tensor)
            })
            .collect();
        drop(previous);
        self.outputs = self
            .ctx
            .compute(inputs)
            .map_err(|e| host_error("compute".into(), e))?;
        self.carried = self
            .bound
            .iter()
            .filter(|(o, _)| (*o as usize) < self.outputs.len())
            .map(|(_, n)| n.clone())
            .collect();
        Ok(())
    }

    pub fn bind_output(&mut self, output: u32, input: u32) -> Result<()> {
        let name = input.to_string();
        if self.bound.iter().any(|(o, n)| *o == output && *n != name) {
            return Err(Error::guest(
                ErrorCode::InvalidArgument,
                format!("bind_output({output}, {input})"),
                "that output already feeds another input",
            ));
        }
        self.bound.retain(|(_, n)| *n != name);
        self.bound.push((output, name));
        Ok(())
    }

    fn output_tensor(&self, index: u32) -> Result<&tensor::Tensor> {
        self.outputs
            .get(index as usize)
            .map(|(_, t)| t)
            .ok_or_else(|| missing_output(format!("get_output({index})"), self.outputs.len()))
    }

    pub fn output_bytes(&self, index: u32, max_len: usize) -> Result<Vec<u8>> {
        let data = self.output_tensor(index)?.data();
        if data.len() > max_len {
            return Err(Error::guest(
                ErrorCode::TooLarge,
                format!("get_output({index})"),
                format!("output has {} bytes, more than {max_len}", data.len()),
            ));
        }
        Ok(data)
    }

    pub fn output(&self, index: u32, ty: TensorType, dims_hint: &[u32]) -> Result<Tensor> {
        let op = || format!("get_output({index})");
        let t = convert(self.output_tensor(index)?, op)?;
        if t.ty != ty {
            let detail = format!("output is {}, not {}", t.ty.name(), ty.name());
            return Err(Error::guest(ErrorCode::InvalidArgument, op(), detail));
        }
        shape::check(dims_hint, &t.dims)
            .map_err(|detail| Error::guest(ErrorCode::InvalidArgument, op(), detail))?;
        Ok(t)
    }

    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        self.outputs
            .iter()
            .map(|(name, t)| {
                Ok((
                    name.clone(),
                    convert(t, || format!("get_output({name:?})"))?,
                ))
            })
            .collect()
    }

    pub fn output_named(&self, name: &str) -> Result<Tensor> {
        let op = || format!("get_output({name:?})");
        match self.outputs.iter().find(|(n, _)| n == name) {
            Some((_, t)) => convert(t, op),
            None => Err(missing_output(op(), self.outputs.len())),
        }
    }
}

fn missing_output(op: String, available: usize) -> Error {
    let detail = if available == 0 {
        "no outputs: has compute() succeeded?".to_owned()
    } else {
        format!("the last compute() returned {available} outputs")
    };
    Error::guest(ErrorCode::InvalidArgument, op, detail)
}

fn wit_type(ty: TensorType) -> tensor::TensorType {
    match ty {
        TensorType::F16 => tensor::TensorType::Fp16,
        TensorType::F32 => tensor::TensorType::Fp32,
        TensorType::F64 => tensor::TensorType::Fp64,
        TensorType::U8 => tensor::TensorType::U8,
        TensorType::I32 => tensor::TensorType::I32,
        TensorType::I64 => tensor::TensorType::I64,
    }
}

fn convert(t: &tensor::Tensor, op: impl Fn() -> String) -> Result<Tensor> {
    let ty = match t.ty() {
        tensor::TensorType::Fp16 => TensorType::F16,
        tensor::TensorType::Fp32 => TensorType::F32,
        tensor::TensorType::Fp64 => TensorType::F64,
        tensor::TensorType::U8 => TensorType::U8,
        tensor::TensorType::I32 => TensorType::I32,
        tensor::TensorType::I64 => TensorType::I64,
        tensor::TensorType::Bf16 => {
            let detail = "output is bf16, which this library does not handle";
            return Err(Error::guest(ErrorCode::UnsupportedOperation, op(), detail));
        }
    };
    // Validates that the host's bytes match its shape.
    Tensor::new(&t.dimensions(), ty, t.data()).map_err(|e| {
        let detail = e.detail().unwrap_or_default().to_owned();
        Error::guest(ErrorCode::RuntimeError, op(), detail)
    })
}
