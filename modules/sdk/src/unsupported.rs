//! Targets without wasi-nn: everything compiles, every call fails, so code
//! built on this crate can be unit-tested natively.

use crate::{Encoding, Error, ErrorCode, Result, Target, Tensor, TensorType};

/// No value of these types can exist: loading always fails.
enum Never {}

fn unsupported<T>(op: &str) -> Result<T> {
    Err(Error::guest(
        ErrorCode::UnsupportedOperation,
        op,
        "wasi-nn is only available to wasm32-wasip1 and wasm32-wasip2 guests",
    ))
}

pub(crate) struct Graph(Never);

impl Graph {
    pub fn load(_builders: &[&[u8]], _encoding: Encoding, _target: Target) -> Result<Graph> {
        unsupported("load")
    }

    pub fn load_by_name(name: &str) -> Result<Graph> {
        unsupported(&format!("load_by_name({name:?})"))
    }

    pub fn context(&self) -> Result<Context> {
        match self.0 {}
    }
}

pub(crate) struct Context(Never);

impl Context {
    pub fn set_input(&mut self, _index: u32, _tensor: &Tensor) -> Result<()> {
        match self.0 {}
    }

    pub fn set_input_named(&mut self, _name: &str, _tensor: &Tensor) -> Result<()> {
        match self.0 {}
    }

    pub fn compute(&mut self) -> Result<()> {
        match self.0 {}
    }

    pub fn bind_output(&mut self, _output: u32, _input: u32) -> Result<()> {
        match self.0 {}
    }

    pub fn output(&self, _index: u32, _ty: TensorType, _dims_hint: &[u32]) -> Result<Tensor> {
        match self.0 {}
    }

    pub fn output_bytes(&self, _index: u32, _max_len: usize) -> Result<Vec<u8>> {
        match self.0 {}
    }

    pub fn output_named(&self, _name: &str) -> Result<Tensor> {
        match self.0 {}
    }

    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        match self.0 {}
    }
}
