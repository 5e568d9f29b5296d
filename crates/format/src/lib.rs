//! The Weft model-module artifact format, shared by every program that
//! writes or reads one (`weft-oci` with its registry client, the shim
//! without it): media types and annotation keys ([`media`]), the `weft`
//! section of the wasm config ([`WeftSection`]), and what an image's
//! `/weft.json` may hold ([`weft_json`]). `docs/artifact-format.md` is the
//! contract; this crate depends on serde and `weft-abi` (no dependencies)
//! only.

use serde::{Deserialize, Serialize};

pub mod media;

/// The path of the Weft config in a container's root filesystem (and in a
/// classic image): `/weft.json`.
pub const WEFT_JSON: &str = "weft.json";

/// The interface type: a model input or output as the model declares it
/// (`weft-abi`'s, shared with the backends, the server and guests).
pub use weft_abi::{DataType, Dim, TensorSpec};

mod interface;
pub use interface::type_name;
/// A preloaded model of the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Preload name (`load_by_name`).
    pub name: String,
    /// Path relative to the artifact root.
    pub path: String,
    pub encoding: String,
    pub target: String,
    /// Digest of the weight layer.
    pub digest: String,
    #[serde(with = "interface")]
    pub inputs: Vec<TensorSpec>,
    #[serde(with = "interface")]
    pub outputs: Vec<TensorSpec>,
}

/// The `weft` section of the wasm config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeftSection {
    pub version: u32,
    /// Title of the module layer.
    pub module: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
}

/// The wasm config (`application/vnd.wasm.config.v0+json`) plus `weft`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    #[serde(rename = "layerDigests")]
    pub layer_digests: Vec<String>,
    /// The process an OCI runtime starts (the module and its arguments), in
    /// the image-config shape, so containerd's CRI and `ctr run` need no
    /// command from the user. Other tools ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ProcessConfig>,
    pub weft: WeftSection,
}

/// `config` of an OCI image config: what to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Vec<String>,
}

/// What an image's `/weft.json` may hold: the whole artifact config (as
/// `weft build --classic` writes it, and the shim writes it for an artifact
/// image) or a hand-written `{"weft": {...}}` with only what it needs. The
/// reading is lenient where `WeftSection` is strict: the module may be left
/// to the image's entrypoint, and a model's encoding, target and digest
/// default to `onnx`, `cpu` and unchecked.
pub mod weft_json {
    use serde::{Deserialize, Serialize};

    /// The `weft` object of `/weft.json`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct WeftConfig {
        #[serde(default)]
        pub module: Option<String>,
        #[serde(default)]
        pub args: Vec<String>,
        #[serde(default)]
        pub models: Vec<ModelEntry>,
    }

    /// A model to preload, by its path in the root filesystem.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ModelEntry {
        pub name: String,
        pub path: String,
        #[serde(default = "onnx")]
        pub encoding: String,
        #[serde(default = "cpu")]
        pub target: String,
        #[serde(default)]
        pub digest: Option<String>,
    }

    fn onnx() -> String {
        "onnx".into()
    }

    fn cpu() -> String {
        "cpu".into()
    }

    /// The whole file: other fields of an artifact config are ignored.
    #[derive(Debug, Clone, Deserialize)]
    pub struct WeftJson {
        pub weft: WeftConfig,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config `weft build` writes is a valid `/weft.json`, read with the
    /// same module, arguments and models.
    #[test]
    fn an_artifact_config_reads_as_weft_json() {
        let config = WasmConfig {
            created: "2026-01-01T00:00:00Z".into(),
            architecture: "wasm".into(),
            os: "wasip1".into(),
            layer_digests: vec![],
            config: None,
            weft: WeftSection {
                version: 1,
                module: "ocr.wasm".into(),
                args: vec!["--x".into()],
                models: vec![ModelSpec {
                    name: "det".into(),
                    path: "models/det.onnx".into(),
                    encoding: "onnx".into(),
                    target: "gpu".into(),
                    digest: "sha256:00".into(),
                    inputs: vec![],
                    outputs: vec![],
                }],
            },
        };
        let text = serde_json::to_string(&config).unwrap();
        let read: weft_json::WeftJson = serde_json::from_str(&text).unwrap();
        assert_eq!(read.weft.module.as_deref(), Some("ocr.wasm"));
        assert_eq!(read.weft.args, ["--x"]);
        let m = &read.weft.models[0];
        assert_eq!(
            (m.name.as_str(), m.path.as_str(), m.target.as_str()),
            ("det", "models/det.onnx", "gpu")
        );
        assert_eq!(m.digest.as_deref(), Some("sha256:00"));
    }

    #[test]
    fn a_hand_written_weft_json_gets_the_documented_defaults() {
        let read: weft_json::WeftJson =
            serde_json::from_str(r#"{"weft":{"models":[{"name":"m","path":"m.onnx"}]}}"#).unwrap();
        assert_eq!(read.weft.module, None);
        let m = &read.weft.models[0];
        assert_eq!((m.encoding.as_str(), m.target.as_str()), ("onnx", "cpu"));
        assert_eq!(m.digest, None);
        assert!(media::MODULE_LAYERS.contains(&media::WASM_LAYER));
    }
}
