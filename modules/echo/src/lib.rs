//! Returns every input tensor unchanged, under the name `echo_<input>`:
//! no model, so serving it measures the platform's own per-request cost.

use weft_serve_guest::{Predictor, Tensor};

struct Echo;

impl Predictor for Echo {
    fn init() -> Result<Self, String> {
        Ok(Echo)
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        Ok(inputs
            .into_iter()
            .map(|mut t| {
                t.name = format!("echo_{}", t.name);
                t
            })
            .collect())
    }
}

weft_serve_guest::serve!(Echo);
