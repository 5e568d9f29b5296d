//! A version that passes its first health check and then breaks, as a
//! model with a leak or a bad cache does: each instance answers
//! `y = 2x + 1` (FP32 input `x`, output `y`) for its first `WEFT_FLAKY_GOOD`
//! calls (default 1), then fails every call. The edge agent's tests use it
//! to prove that a version failing during its probation is rolled back.

use weft_serve_guest::{DataType, Predictor, Tensor};

struct Flaky {
    calls: u32,
    good: u32,
}

impl Predictor for Flaky {
    fn init() -> Result<Self, String> {
        let good = std::env::var("WEFT_FLAKY_GOOD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(Flaky { calls: 0, good })
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        self.calls += 1;
        if self.calls > self.good {
            return Err(format!("flaky: broken since call {}", self.good + 1));
        }
        let x = inputs
            .into_iter()
            .find(|t| t.name == "x" && t.datatype == DataType::Fp32)
            .ok_or("flaky: expects an FP32 input named x")?;
        let data = x
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 2.0 + 1.0)
            .flat_map(f32::to_le_bytes)
            .collect();
        Ok(vec![Tensor {
            name: "y".into(),
            datatype: DataType::Fp32,
            shape: x.shape,
            data,
        }])
    }
}

weft_serve_guest::serve!(Flaky);
