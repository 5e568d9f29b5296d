//! `weft-fuzz`: one harness per decoder or parser that untrusted bytes
//! reach, each asserting what must hold for *any* input, not only that
//! nothing panics.
//!
//! | harness | what it feeds | what it asserts |
//! |---|---|---|
//! | [`abi`] | the serving contract's tensor and signature messages | decode → encode gives the same bytes; decoded tensors are within the shape bounds |
//! | [`v2_rest`] | V2 REST bodies, JSON and Triton's binary extension | every decoded tensor is consistent; bytes held ≤ 8 × bytes received |
//! | [`v2_grpc`] | `ModelInferRequest` wire bytes | the same |
//! | [`onnx`] | ONNX model bytes | loading gives a model or an error that names the problem (never a caught tract panic) |
//! | [`oci`] | manifests and configs, and bundle materialization | other blobs of the store are never changed; a bundle stays in its directory |
//! | [`weft_toml`] | `weft.toml` texts | every listed file path is inside the artifact and unique |
//! | [`agent_config`] | the agent's configuration | parses or names what is wrong |
//! | [`tflite`] | TensorFlow Lite flatbuffers | a model or an error, no panic escapes (a caught one is an error) |
//! | [`tensorflow`] | frozen TensorFlow `GraphDef`s | the same |
//! | [`onnx_import`] | ONNX model bytes, to fine-tune | parse and build give a graph or an error; writing the model's own values back gives the same initializers |
//!
//! The libFuzzer binaries in `libfuzzer/` call these (`scripts/fuzz.sh`);
//! `tests/corpus.rs` replays the committed corpus and every input a fuzzer
//! ever crashed on, in the ordinary test suite.

/// The tensor wire format and the interface description of `weft-abi`.
pub fn abi(data: &[u8]) {
    if let Ok(tensors) = weft_abi::decode(data) {
        assert_eq!(weft_abi::encode(&tensors), data, "decode is not canonical");
        for t in &tensors {
            weft_abi::check_shape(&t.shape).expect("decode let an unbounded shape through");
            let _ = t.check();
        }
    }
    if let Ok(sig) = weft_abi::decode_signature(data) {
        assert_eq!(weft_abi::encode_signature(&sig), data);
    }
    let _ = weft_abi::bytes_elements(data);
}

#[cfg(feature = "serve")]
fn decoded_within_bounds(received: usize, tensors: &[weft_abi::Tensor]) {
    let mut held = 0usize;
    for t in tensors {
        t.check()
            .expect("a decoded tensor disagrees with its shape");
        held += t.data.len();
    }
    assert!(
        held <= 8 * received,
        "{received} bytes received became {held} bytes of tensors"
    );
}

/// A V2 REST inference body. The first byte chooses whether the next two
/// give `Inference-Header-Content-Length` (Triton's binary extension).
#[cfg(feature = "serve")]
pub fn v2_rest(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = match rest {
        [a, b, body @ ..] if mode & 1 == 1 => {
            (Some(u16::from_le_bytes([*a, *b]).to_string()), body)
        }
        _ => (None, rest),
    };
    if let Ok((inputs, _)) =
        weft_serve::rest::decode_request(header.as_deref().map(str::as_bytes), body)
    {
        decoded_within_bounds(body.len(), &inputs);
    }
}

/// A V2 gRPC `ModelInferRequest`, as its wire bytes.
#[cfg(feature = "serve")]
pub fn v2_grpc(data: &[u8]) {
    if let Ok((inputs, outputs)) = weft_serve::grpc::decode_request(data) {
        decoded_within_bounds(data.len(), &inputs);
        assert!(inputs.len() + outputs.len() <= 2 * weft_abi::MAX_TENSORS as usize);
    }
}

/// ONNX model bytes, loaded as `--nn-preload` and `wasi-nn load` do.
#[cfg(feature = "nn")]
pub fn onnx(data: &[u8]) {
    match weft_nn::OnnxModel::load(data) {
        Ok(model) => assert!(model.plan_builds() <= weft_nn::MAX_PLANS_PER_MODEL + 1),
        // weft-nn catches a tract panic (the host survives), but a model
        // that reaches one is a defect to be refused with a reason first.
        Err(e) => assert!(
            !e.to_string().contains("panicked"),
            "tract panicked on this model: {e}"
        ),
    }
}

/// Model bytes in another format: a model or an error, never a panic out
/// of the loader. Weaker than [`onnx`]: tract's TFLite and TensorFlow
/// operator translators index their inputs and tract-core asserts on
/// negative dimensions, so a malformed model can reach a panic there, which
/// the loader catches and reports as an error naming it (no checker runs
/// before them as `check_graph` does for ONNX).
#[cfg(feature = "nn")]
fn model_as(data: &[u8], format: weft_nn::ModelFormat) {
    if let Ok(model) = weft_nn::OnnxModel::load_as(data, format) {
        assert_eq!(model.format(), format);
        assert!(model.plan_builds() <= weft_nn::MAX_PLANS_PER_MODEL + 1);
    }
}

/// TensorFlow Lite flatbuffers, loaded as encoding `tensorflowlite` does.
#[cfg(feature = "nn")]
pub fn tflite(data: &[u8]) {
    model_as(data, weft_nn::ModelFormat::TensorFlowLite);
}

/// Frozen TensorFlow graphs, loaded as encoding `tensorflow` does.
#[cfg(feature = "nn")]
pub fn tensorflow(data: &[u8]) {
    model_as(data, weft_nn::ModelFormat::TensorFlow);
}

#[cfg(feature = "oci")]
mod oci_store {
    use std::sync::OnceLock;
    use weft_oci::{Digest, Store};

    /// A store holding three blobs every materialization draws on.
    pub struct Fixture {
        pub _dir: tempfile::TempDir,
        pub store: Store,
        pub blobs: Vec<(Digest, Vec<u8>)>,
    }

    pub fn get() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = Store::open(dir.path().join("store")).expect("a store");
            let blobs = [&b"weights of another artifact"[..], b"{\"a\":1}", b""]
                .into_iter()
                .map(|b| (store.put_bytes(b).expect("a blob").0, b.to_vec()))
                .collect();
            Fixture {
                _dir: dir,
                store,
                blobs,
            }
        })
    }
}

/// A manifest or config (JSON). A manifest that parses is materialized as
/// a bundle, its layers pointed at blobs the store holds: that must never
/// change any blob, and must write only inside the bundle's directory.
#[cfg(feature = "oci")]
pub fn oci(data: &[u8]) {
    use sha2::Digest as _;
    use weft_oci::artifact::{Artifact, WasmConfig, check_files};
    use weft_oci::{Descriptor, ImageManifest};

    let _ = serde_json::from_slice::<WasmConfig>(data);
    let Ok(mut manifest) = ImageManifest::from_reader(data) else {
        return;
    };
    let _ = check_files(&manifest);
    let f = oci_store::get();
    let layers: Vec<Descriptor> = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (digest, bytes) = &f.blobs[i % f.blobs.len()];
            let mut d = Descriptor::new(l.media_type().clone(), bytes.len() as u64, digest.clone());
            d.set_annotations(l.annotations().clone());
            d
        })
        .collect();
    manifest.set_layers(layers);
    let config = serde_json::from_value::<WasmConfig>(serde_json::json!({
        "created": "", "architecture": "wasm", "os": "wasip1", "layerDigests": [],
        "weft": { "version": 1, "module": "m.wasm" }
    }))
    .expect("a minimal config");
    let manifest_digest: weft_oci::Digest =
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
            .parse()
            .expect("a digest");
    let art = Artifact {
        manifest_digest,
        manifest,
        config,
    };
    let bundles = f.store.root().join("bundles");
    if let Ok(bundle) = art.materialize(&f.store) {
        assert!(bundle.starts_with(&bundles));
        let _ = std::fs::remove_dir_all(&bundle);
    }
    for (digest, bytes) in &f.blobs {
        assert_eq!(
            std::fs::read(f.store.blob_path(digest)).ok().as_deref(),
            Some(&bytes[..]),
            "materializing changed blob {digest}"
        );
    }
    // Nothing but bundles (and their temporary directories, removed on
    // failure) may appear next to the store's own layout.
    for entry in std::fs::read_dir(f.store.root())
        .expect("the store")
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        assert!(
            [
                "blobs",
                "bundles",
                "index.json",
                "oci-layout",
                "gc.lock",
                "index.lock"
            ]
            .contains(&name.as_ref())
                || name.starts_with(".tmp-"),
            "materializing wrote {name} into the store"
        );
    }
}

/// A `weft.toml` text.
#[cfg(feature = "oci")]
pub fn weft_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(toml) = weft_oci::package::WeftToml::parse(text) {
        let files = toml.files().expect("a parsed weft.toml lists its files");
        let mut seen = std::collections::HashSet::new();
        for (_, path, _) in &files {
            weft_oci::artifact::check_filepath(path).expect("a checked path");
            assert!(seen.insert(path.clone()), "{path} listed twice");
        }
    }
}

/// The agent's configuration (TOML).
#[cfg(feature = "agent")]
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = weft_agent::config::Config::parse(text);
}

/// Every harness by its name (the corpus directories' names).
/// The fine-tuning importer (`weft_autodiff::import`): a model that parses
/// builds into a graph (every float initializer trainable, and none) or
/// fails with an error; a graph that builds writes ONNX bytes; and writing
/// the model's own initializer values back changes none of them.
#[cfg(feature = "autodiff")]
pub fn onnx_import(data: &[u8]) {
    use weft_autodiff::import::{Model, replace_initializers};
    use weft_autodiff::{DType, Graph};
    let Ok(m) = Model::parse(data) else {
        return;
    };
    let names: Vec<String> = m
        .initializers()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let example = m.example_shape();
    if example
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none_or(|n| n > 1 << 20)
    {
        return;
    }
    for trainable in [&names[..], &[]] {
        let mut g = Graph::new(DType::F32);
        let mut shape = vec![m.fixed_batch().unwrap_or(2)];
        shape.extend(&example);
        let x = g.input("fuzz_x", &shape);
        if let Ok(built) = m.build(&mut g, x, trainable, true) {
            g.output(built.logits, "fuzz_logits");
            let _ = g.to_onnx();
        }
    }
    let own: Vec<(String, Vec<f32>)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                m.initializer(n)
                    .map(|(_, v)| v.to_vec())
                    .unwrap_or_default(),
            )
        })
        .collect();
    if let Ok(back) = replace_initializers(data, &own) {
        let again = Model::parse(&back).expect("the model with its own values written back parses");
        for n in &names {
            let (a, b) = (m.initializer(n).unwrap(), again.initializer(n).unwrap());
            assert_eq!(a.0, b.0, "{n}: shape changed");
            assert!(
                a.1.iter().zip(b.1).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{n}: values changed"
            );
        }
    }
}

pub fn by_name(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "abi" => abi,
        #[cfg(feature = "serve")]
        "v2_rest" => v2_rest,
        #[cfg(feature = "serve")]
        "v2_grpc" => v2_grpc,
        #[cfg(feature = "nn")]
        "onnx" => onnx,
        #[cfg(feature = "nn")]
        "tflite" => tflite,
        #[cfg(feature = "nn")]
        "tensorflow" => tensorflow,
        #[cfg(feature = "oci")]
        "oci" => oci,
        #[cfg(feature = "oci")]
        "weft_toml" => weft_toml,
        #[cfg(feature = "agent")]
        "agent_config" => agent_config,
        #[cfg(feature = "autodiff")]
        "onnx_import" => onnx_import,
        _ => return None,
    })
}
