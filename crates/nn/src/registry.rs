//! Named models preloaded by the host, so guests can `load_by_name`.

use crate::backend::{BackendOptions, Device, Target, graph_on, resolve};
use crate::error::NnError;
use crate::model::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use wasmtime_wasi_nn::wit::GraphEncoding;
use wasmtime_wasi_nn::{Graph, GraphRegistry};
use weft_ort::OrtModel;

/// One `--nn-preload NAME:ENCODING:TARGET:PATH` (WasmEdge's syntax, so
/// command lines people already use carry over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    pub name: String,
    pub encoding: GraphEncoding,
    pub target: Target,
    pub path: PathBuf,
    /// `sha256:<hex>` the bytes read from `path` must hash to (set for
    /// weights from a content store); `None`: not checked.
    pub digest: Option<String>,
}

impl Preload {
    /// Require the file's bytes to hash to `digest` when they are read.
    pub fn verified(mut self, digest: impl Into<String>) -> Preload {
        self.digest = Some(digest.into());
        self
    }
}

/// The canonical name of an encoding Weft reads (`tflite` is written
/// `tensorflowlite`), as artifacts record it.
pub fn encoding_name(encoding: GraphEncoding) -> &'static str {
    match encoding {
        GraphEncoding::Onnx => "onnx",
        GraphEncoding::Tensorflowlite => "tensorflowlite",
        GraphEncoding::Tensorflow => "tensorflow",
        GraphEncoding::Autodetect => "autodetect",
        GraphEncoding::Openvino => "openvino",
        GraphEncoding::Pytorch => "pytorch",
        GraphEncoding::Ggml => "ggml",
    }
}

const PRELOAD_EXAMPLE: &str = "for example ocr-det:onnx:cpu:models/det.onnx";

impl FromStr for Preload {
    type Err = NnError;

    fn from_str(spec: &str) -> Result<Self, NnError> {
        let err = |reason: String| NnError::PreloadSpec {
            spec: spec.into(),
            reason,
        };
        // The path is last and may itself contain ':'.
        let mut parts = spec.splitn(4, ':');
        let (Some(name), Some(encoding), Some(target), Some(path)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err(format!(
                "expected NAME:ENCODING:TARGET:PATH ({PRELOAD_EXAMPLE})"
            )));
        };
        if name.is_empty() || path.is_empty() {
            return Err(err(format!(
                "NAME and PATH must not be empty ({PRELOAD_EXAMPLE})"
            )));
        }
        let encoding = match encoding.to_ascii_lowercase().as_str() {
            "onnx" => GraphEncoding::Onnx,
            "tensorflowlite" | "tflite" => GraphEncoding::Tensorflowlite,
            "tensorflow" | "tf" => GraphEncoding::Tensorflow,
            "autodetect" | "auto" => GraphEncoding::Autodetect,
            other => {
                return Err(err(format!(
                    "unknown encoding `{other}`; supported: onnx, tensorflowlite, tensorflow, \
                     autodetect"
                )));
            }
        };
        let target = match target.to_ascii_lowercase().as_str() {
            "cpu" => Target::Cpu,
            "gpu" => Target::Gpu,
            "tpu" => Target::Tpu,
            "auto" => Target::Auto,
            other => {
                return Err(err(format!(
                    "unknown target `{other}`; supported: cpu, gpu, tpu, auto"
                )));
            }
        };
        Ok(Preload {
            name: name.into(),
            encoding,
            target,
            path: path.into(),
            digest: None,
        })
    }
}

/// A preloaded model and the engine that runs it.
#[derive(Clone)]
enum Loaded {
    Tract(Arc<OnnxModel>),
    Onnxruntime(Arc<OrtModel>),
}

/// Models loaded once per process and handed to every run by name.
#[derive(Clone, Default)]
pub struct Models {
    graphs: HashMap<String, (Graph, Loaded, Device)>,
}

impl Models {
    /// Load every preload; the first failure names the spec and the cause.
    pub fn load(preloads: &[Preload], options: BackendOptions) -> Result<Models, NnError> {
        let mut models = Models::default();
        for p in preloads {
            models
                .insert_file(p, options)
                .map_err(|e| NnError::Preloaded {
                    name: p.name.clone(),
                    path: p.path.clone(),
                    error: Box::new(e),
                })?;
        }
        Ok(models)
    }

    fn insert_file(&mut self, p: &Preload, options: BackendOptions) -> Result<(), NnError> {
        let device = resolve(p.target, options)?;
        let bytes = read(&p.path)?;
        let actual = crate::model::digest(&bytes);
        if let Some(expected) = &p.digest
            && *expected != actual
        {
            return Err(NnError::ModelDigest {
                path: p.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        let format = crate::backend::format_of(p.encoding, &bytes)?;
        if let Some(threads) = options.onnxruntime_threads(device, format) {
            let model = crate::onnxruntime::load_hashed(&bytes, actual.clone(), threads)?;
            tracing::debug!(
                model.name = %p.name,
                model.digest = %actual,
                path = %p.path.display(),
                threads,
                "preloaded model on onnxruntime"
            );
            self.insert_onnxruntime(&p.name, model);
            return Ok(());
        }
        let model = OnnxModel::load_hashed(&bytes, actual, format)?;
        if device == Device::Gpu {
            model.prepare_gpu()?;
        }
        tracing::debug!(
            model.name = %p.name,
            model.digest = %model.digest(),
            path = %p.path.display(),
            ?device,
            "preloaded model"
        );
        self.insert_on(&p.name, model, device);
        Ok(())
    }

    /// Register an already-loaded model under a name, on the CPU.
    pub fn insert(&mut self, name: &str, model: Arc<OnnxModel>) {
        self.insert_on(name, model, Device::Cpu);
    }

    /// Register an already-loaded model under a name, on a device.
    pub fn insert_on(&mut self, name: &str, model: Arc<OnnxModel>, device: Device) {
        self.graphs.insert(
            name.into(),
            (
                graph_on(model.clone(), device),
                Loaded::Tract(model),
                device,
            ),
        );
    }

    /// Register a model loaded into onnxruntime under a name (on the CPU).
    pub fn insert_onnxruntime(&mut self, name: &str, model: Arc<OrtModel>) {
        self.graphs.insert(
            name.into(),
            (
                crate::onnxruntime::graph(model.clone()),
                Loaded::Onnxruntime(model),
                Device::Cpu,
            ),
        );
    }

    /// The tract model behind a name; `None` also for a model the
    /// onnxruntime engine runs ([`Models::signature`] has every model's
    /// interface).
    pub fn model(&self, name: &str) -> Option<&Arc<OnnxModel>> {
        match self.graphs.get(name) {
            Some((_, Loaded::Tract(m), _)) => Some(m),
            _ => None,
        }
    }

    /// The interface of the model behind a name, whichever engine runs it.
    pub fn signature(&self, name: &str) -> Option<weft_abi::Signature> {
        self.graphs.get(name).map(|(_, loaded, _)| match loaded {
            Loaded::Tract(m) => m.signature(),
            Loaded::Onnxruntime(m) => m.signature(),
        })
    }

    /// The device a named model runs on.
    pub fn device(&self, name: &str) -> Option<Device> {
        self.graphs.get(name).map(|(_, _, d)| *d)
    }

    /// Model names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.graphs.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// The wasi-nn graph for a name.
    pub fn graph(&self, name: &str) -> Option<&Graph> {
        self.graphs.get(name).map(|(g, _, _)| g)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NnError> {
    std::fs::read(path).map_err(|source| NnError::ModelFile {
        path: path.into(),
        source,
    })
}

impl GraphRegistry for Models {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.graph(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        self.graphs.get_mut(name).map(|(g, _, _)| g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wasmedge_style_specs() {
        let p: Preload = "det:ONNX:AUTO:/models/det.onnx".parse().unwrap();
        assert_eq!(p.name, "det");
        assert_eq!(p.encoding, GraphEncoding::Onnx);
        assert_eq!(p.target, Target::Auto);
        assert_eq!(p.path, PathBuf::from("/models/det.onnx"));
    }

    #[test]
    fn path_may_contain_colons() {
        let p: Preload = "m:onnx:gpu:C:/models/m.onnx".parse().unwrap();
        assert_eq!(p.target, Target::Gpu);
        assert_eq!(p.path, PathBuf::from("C:/models/m.onnx"));
    }

    #[test]
    fn typos_are_named() {
        let e = "m:onxx:cpu:m.onnx"
            .parse::<Preload>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown encoding `onxx`"), "{e}");
        let e = "m:onnx:cpux:m.onnx"
            .parse::<Preload>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown target `cpux`"), "{e}");
        let e = "m:onnx:m.onnx".parse::<Preload>().unwrap_err().to_string();
        assert!(e.contains("NAME:ENCODING:TARGET:PATH"), "{e}");
    }
}
