//! The PP-OCRv4 networks over wasi-nn (`weft-guest`), shared by the `ocr`
//! command and the `ocr-serve` serving module.

use crate::pipeline::{Engine, RecOutput};
use crate::rec;
use weft_guest::{Context, ErrorCode, Graph, Tensor, TensorType};

/// Load a preloaded graph by name, with a hint on how to preload it.
pub fn load(name: &str, file: &str) -> Result<Graph, String> {
    Graph::load_by_name(name).map_err(|e| {
        format!(
            "cannot load the model {name:?} ({e}); the host must preload it, e.g. \
             --nn-preload {name}:onnx:cpu:models/{file} (scripts/fetch-models.sh downloads \
             the models)"
        )
    })
}

pub fn context<'g>(graph: &'g Graph, name: &str) -> Result<Context<'g>, String> {
    graph
        .context()
        .map_err(|e| format!("cannot create an execution context for {name:?}: {e}"))
}

/// The PP-OCRv4 networks over wasi-nn.
pub struct NnEngine<'g> {
    pub det: Context<'g>,
    pub rec: Context<'g>,
    /// Classes of the recognizer: the dictionary's characters + blank + space.
    pub classes: usize,
}

/// Sets input 0 and computes.
fn run_model(ctx: &mut Context<'_>, dims: &[u32], input: &[f32]) -> weft_guest::Result<()> {
    ctx.set_input(0, &Tensor::f32(dims, input)?)?;
    ctx.compute()
}

impl Engine for NnEngine<'_> {
    type Error = String;

    fn detect(&mut self, input: &[f32], width: usize, height: usize) -> Result<Vec<f32>, String> {
        let (w, h) = (width as u32, height as u32);
        run_model(&mut self.det, &[1, 3, h, w], input)
            .and_then(|()| self.det.output(0, TensorType::F32, &[1, 1, h, w]))
            .and_then(|t| t.to_f32_vec())
            .map_err(|e| format!("text detection failed: {e}"))
    }

    fn recognize(&mut self, input: &[f32], n: usize, width: usize) -> Result<RecOutput, String> {
        let failed = |e: weft_guest::Error| format!("text recognition failed: {e}");
        let mismatch = |why: String| {
            format!(
                "the rec model's output does not fit the dictionary's {} characters (+ blank + \
                 space = {} classes): {why}; use the dictionary of this rec model \
                 (scripts/fetch-models.sh extracts it to models/ppocr_keys.txt) with --dict",
                self.classes - 2,
                self.classes
            )
        };
        let dims = [n as u32, 3, rec::HEIGHT as u32, width as u32];
        run_model(&mut self.rec, &dims, input).map_err(failed)?;
        // The number of steps depends on the width in a model-specific way;
        // the class count must be the dictionary's. A shape that does not fit
        // (wasip2) or a byte count that does not split into it (wasip1) is
        // reported as `invalid_argument`.
        let out = self
            .rec
            .output(0, TensorType::F32, &[n as u32, 0, self.classes as u32])
            .map_err(|e| match e.code() {
                ErrorCode::InvalidArgument => mismatch(e.to_string()),
                _ => failed(e),
            })?;
        // On wasip1 a wrong class count can still divide the byte count;
        // the network never outputs more steps than input columns.
        let steps = out.dims[1] as usize;
        if steps == 0 || steps > width {
            return Err(mismatch(format!(
                "that would make {steps} steps for a {width}-pixel-wide input"
            )));
        }
        Ok(RecOutput {
            steps,
            probs: out.to_f32_vec().map_err(failed)?,
        })
    }
}
