//! Checkpoints: parameters, optimizer state and the step, in one
//! safetensors file, written whole or not at all (a temporary file,
//! synced, then renamed over the old one).

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::io::Write;

pub struct Checkpoint {
    /// `(name, shape, values)`: parameters, then optimizer state.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Steps taken.
    pub step: u64,
    /// What the tensors belong to (network, optimizer, batch, seed): a
    /// checkpoint of another training refuses to load.
    pub signature: String,
}

const FORMAT: &str = "weft-train-1";

impl Checkpoint {
    pub fn write(&self, path: &str) -> Result<(), String> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    s.clone(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, s)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| format!("checkpoint tensor {n}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
            ("signature".to_string(), self.signature.clone()),
        ]);
        let data = safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())?;
        let tmp = format!("{path}.partial");
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{tmp}: {e}"))?;
        f.write_all(&data).map_err(|e| format!("{tmp}: {e}"))?;
        f.sync_all().map_err(|e| format!("{tmp}: {e}"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| format!("{path}: {e}"))
    }

    /// Read `path`, refusing one of another training.
    pub fn read(path: &str, signature: &str) -> Result<Checkpoint, String> {
        let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let st = SafeTensors::deserialize(&data)
            .map_err(|e| format!("{path}: not a safetensors file: {e}"))?;
        let (_, meta) = SafeTensors::read_metadata(&data).map_err(|e| format!("{path}: {e}"))?;
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!("{path}: not a weft training checkpoint"));
        }
        let theirs = info.get("signature").cloned().unwrap_or_default();
        if theirs != signature {
            return Err(format!(
                "{path}: a checkpoint of another training ({theirs}), not of this one ({signature}); use another --checkpoint-dir or start without --resume"
            ));
        }
        let step = info
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{path}: no step in the checkpoint"))?;
        let mut tensors = Vec::new();
        for name in st.names() {
            let t = st.tensor(name).map_err(|e| format!("{path}: {e}"))?;
            if t.dtype() != Dtype::F32 {
                return Err(format!("{path}: tensor {name} is not F32"));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push((name.to_string(), t.shape().to_vec(), values));
        }
        Ok(Checkpoint {
            tensors,
            step,
            signature: signature.into(),
        })
    }
}
