//! Media types and annotation keys of the artifact format
//! (`docs/artifact-format.md`).

/// The wasm config of the CNCF TAG-Runtime wasm artifact layout.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The module layer.
pub const WASM_LAYER: &str = "application/wasm";
/// A component layer as the Bytecode Alliance's wasm OCI artifacts name it
/// (read, never written, by Weft).
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Every layer media type that holds the module.
pub const MODULE_LAYERS: [&str; 2] = [WASM_LAYER, COMPONENT_LAYER];
/// CNCF ModelPack: raw model weights.
pub const MODEL_WEIGHT: &str = "application/vnd.cncf.model.weight.v1.raw";
/// CNCF ModelPack: weight configuration (vocabularies, dictionaries...).
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.weight.config.v1.raw";
/// CNCF ModelPack: documentation.
pub const MODEL_DOC: &str = "application/vnd.cncf.model.doc.v1.raw";

pub const TITLE: &str = "org.opencontainers.image.title";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// A file layer's path inside the artifact (CNCF ModelPack).
pub const FILEPATH: &str = "org.cncf.model.filepath";
/// The preload name of a weight layer.
pub const PRELOAD: &str = "dev.weft.nn.preload";
/// Marks a manifest as a Weft model module, with the format version.
pub const ARTIFACT: &str = "dev.weft.artifact";
pub const ARTIFACT_V1: &str = "module.v1";
