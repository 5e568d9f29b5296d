//! The generic serving module that `weft serve` bundles: it runs one
//! preloaded model (named `model`, or whatever `WEFT_MODEL` says) on the
//! request's tensors and returns every output.
//!
//! On wasip2 inputs and outputs travel by name. On wasip1 (no names in the
//! witx ABI) inputs are set by position, in the order the host sends them
//! (the model's declared order), and outputs come back named `"0"`, `"1"`,
//! ... which the host maps to the model's output names.

use weft_guest::{Context, Graph, Tensor as NnTensor, TensorType};
use weft_serve_guest::{DataType, Predictor, Tensor};

struct Model {
    ctx: Context<'static>,
}

fn nn_type(d: DataType) -> Result<TensorType, String> {
    Ok(match d {
        DataType::Fp16 => TensorType::F16,
        DataType::Fp32 => TensorType::F32,
        DataType::Fp64 => TensorType::F64,
        DataType::Uint8 => TensorType::U8,
        DataType::Int32 => TensorType::I32,
        DataType::Int64 => TensorType::I64,
        other => {
            return Err(format!(
                "datatype {other} cannot cross wasi-nn; use FP16, FP32, FP64, UINT8, INT32 or INT64"
            ));
        }
    })
}

fn abi_type(t: TensorType) -> DataType {
    match t {
        TensorType::F16 => DataType::Fp16,
        TensorType::F32 => DataType::Fp32,
        TensorType::F64 => DataType::Fp64,
        TensorType::U8 => DataType::Uint8,
        TensorType::I32 => DataType::Int32,
        TensorType::I64 => DataType::Int64,
    }
}

impl Predictor for Model {
    fn init() -> Result<Self, String> {
        let name = std::env::var("WEFT_MODEL").unwrap_or_else(|_| "model".into());
        // One graph per instance, alive as long as the instance.
        let graph: &'static Graph = Box::leak(Box::new(
            Graph::load_by_name(&name).map_err(|e| e.to_string())?,
        ));
        let ctx = graph.context().map_err(|e| e.to_string())?;
        Ok(Model { ctx })
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        for (i, t) in inputs.into_iter().enumerate() {
            let dims = t
                .shape
                .iter()
                .map(|&d| {
                    u32::try_from(d)
                        .map_err(|_| format!("input {:?}: dimension {d} is too large", t.name))
                })
                .collect::<Result<Vec<u32>, String>>()?;
            let ty = nn_type(t.datatype).map_err(|e| format!("input {:?}: {e}", t.name))?;
            let tensor = NnTensor::new(&dims, ty, t.data).map_err(|e| e.to_string())?;
            if cfg!(target_env = "p1") {
                self.ctx.set_input(i as u32, &tensor)
            } else {
                self.ctx.set_input_named(&t.name, &tensor)
            }
            .map_err(|e| e.to_string())?;
        }
        self.ctx.compute().map_err(|e| e.to_string())?;
        let outputs = self.ctx.outputs().map_err(|e| e.to_string())?;
        Ok(outputs
            .into_iter()
            .map(|(name, t)| {
                Tensor::new(
                    name,
                    abi_type(t.ty),
                    t.dims.iter().map(|&d| u64::from(d)).collect(),
                    t.data,
                )
            })
            .collect())
    }
}

weft_serve_guest::serve!(Model);
