//! The container's image, read from containerd's content store.
//!
//! containerd 1.6.25+, 1.7.7+ and 2.x accept the Weft artifact itself (a
//! wasm config and non-tar layers, `docs/artifact-format.md`) but unpack
//! none of its layers: the container's root filesystem is empty. The shim
//! therefore reads the manifest, the config and the layers through
//! containerd's API and writes each file where the classic image would
//! have it (the module at `/<module>`, weights and files at their
//! `org.cncf.model.filepath`, the Weft config as `/weft.json`), so the rest
//! of the shim sees one layout for both image kinds. Classic images (one
//! tar layer, already unpacked) are only asked for their annotations.

use crate::error::PlanError;
use crate::plan::{ImageFacts, WEFT_JSON, WeftConfig, relative};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use containerd_client::with_namespace;
use futures::TryStreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use weft_format::media::{FILEPATH, MODULE_LAYERS, TITLE, VERSION};
/// The largest manifest or config the shim reads.
const MAX_METADATA: usize = 4 << 20;

fn image_err(message: impl std::fmt::Display) -> PlanError {
    PlanError::Image {
        message: message.to_string(),
    }
}

/// A connection to containerd in one namespace.
struct Content {
    channel: Channel,
    namespace: String,
}

impl Content {
    async fn read_to_vec(&self, desc: &Descriptor) -> Result<Vec<u8>, PlanError> {
        if desc.size() > MAX_METADATA as u64 {
            return Err(image_err(format!(
                "{} is {} bytes; manifests and configs over {MAX_METADATA} are refused",
                desc.digest(),
                desc.size()
            )));
        }
        let mut out = Vec::with_capacity(desc.size() as usize);
        self.read(desc.digest().as_ref(), desc.size(), |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Stream a blob into `sink`, failing as soon as more than `limit`
    /// bytes (its descriptor's size) arrive.
    async fn read(
        &self,
        digest: &str,
        limit: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, PlanError> {
        let req = ReadContentRequest {
            digest: digest.to_owned(),
            ..Default::default()
        };
        let mut stream = ContentClient::new(self.channel.clone())
            .read(with_namespace!(req, self.namespace))
            .await
            .map_err(|e| image_err(format!("reading {digest}: {}", e.message())))?
            .into_inner();
        let mut n = 0u64;
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| image_err(format!("reading {digest}: {}", e.message())))?
        {
            n += msg.data.len() as u64;
            if n > limit {
                return Err(image_err(format!(
                    "{digest} runs past the {limit} bytes its descriptor says"
                )));
            }
            sink(&msg.data).map_err(|e| image_err(format!("writing {digest}: {e}")))?;
        }
        Ok(n)
    }
}

/// Look the container's image up; for an artifact image, write its files
/// into `rootfs`. A container without an image (or a containerd that does
/// not answer) yields no facts: the shim then uses what the root holds.
pub async fn load(
    address: &str,
    namespace: &str,
    container_id: &str,
    rootfs: &Path,
) -> Result<ImageFacts, PlanError> {
    let channel = match containerd_client::connect(address).await {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cannot reach containerd at {address} ({e}); using the container's files");
            return Ok(ImageFacts::default());
        }
    };
    let content = Content {
        channel,
        namespace: namespace.to_owned(),
    };
    let req = GetContainerRequest {
        id: container_id.to_owned(),
    };
    let image_name = match ContainersClient::new(content.channel.clone())
        .get(with_namespace!(req, namespace))
        .await
    {
        Ok(r) => r
            .into_inner()
            .container
            .map(|c| c.image)
            .unwrap_or_default(),
        Err(e) => {
            log::warn!(
                "container {container_id} unknown to containerd ({}); using its files",
                e.message()
            );
            return Ok(ImageFacts::default());
        }
    };
    if image_name.is_empty() {
        return Ok(ImageFacts::default());
    }
    let req = GetImageRequest {
        name: image_name.clone(),
    };
    let target = ImagesClient::new(content.channel.clone())
        .get(with_namespace!(req, namespace))
        .await
        .map_err(|e| image_err(format!("image {image_name}: {}", e.message())))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| image_err(format!("image {image_name} has no target")))?;
    let top = descriptor(&target.media_type, &target.digest, target.size)?;
    let manifest = manifest_of(&content, &top, &image_name).await?;
    let facts = ImageFacts {
        version: manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(VERSION))
            .cloned(),
    };
    if manifest
        .layers()
        .iter()
        .any(|l| MODULE_LAYERS.contains(&l.media_type().to_string().as_str()))
    {
        materialize(&content, &manifest, rootfs, &image_name).await?;
    }
    Ok(facts)
}

fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor, PlanError> {
    let digest = digest
        .parse::<oci_spec::image::Digest>()
        .map_err(|e| image_err(format!("digest {digest:?}: {e}")))?;
    Ok(Descriptor::new(
        media_type.into(),
        u64::try_from(size).unwrap_or(0),
        digest,
    ))
}

/// The image manifest, choosing the wasm entry of an index.
async fn manifest_of(
    content: &Content,
    top: &Descriptor,
    image: &str,
) -> Result<ImageManifest, PlanError> {
    let bytes = content.read_to_vec(top).await?;
    let mut desc = top.clone();
    let mut bytes = bytes;
    if let Ok(index) = ImageIndex::from_reader(bytes.as_slice())
        && !index.manifests().is_empty()
    {
        let manifests = index.manifests();
        let wasm = manifests.iter().find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| p.architecture().to_string() == "wasm")
        });
        desc = match (wasm, manifests.as_slice()) {
            (Some(m), _) | (None, [m]) => m.clone(),
            _ => {
                return Err(image_err(format!(
                    "image {image} is an index without a wasm manifest; push the Weft artifact itself"
                )));
            }
        };
        bytes = content.read_to_vec(&desc).await?;
    }
    ImageManifest::from_reader(bytes.as_slice())
        .map_err(|e| image_err(format!("manifest {} of {image}: {e}", desc.digest())))
}

#[derive(Deserialize)]
struct ArtifactConfig {
    #[serde(default)]
    weft: Option<WeftConfig>,
}

/// Write an artifact's module and files into the (empty) root.
async fn materialize(
    content: &Content,
    manifest: &ImageManifest,
    rootfs: &Path,
    image: &str,
) -> Result<(), PlanError> {
    let config_bytes = content.read_to_vec(manifest.config()).await?;
    let config: ArtifactConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        image_err(format!(
            "the config of {image} is not a Weft artifact config: {e}"
        ))
    })?;
    let mut weft = config.weft.unwrap_or_default();
    let by_digest: HashMap<String, &Descriptor> = manifest
        .layers()
        .iter()
        .map(|l| (l.digest().to_string(), l))
        .collect();
    for m in &weft.models {
        if let Some(d) = &m.digest
            && !by_digest.contains_key(d)
        {
            return Err(PlanError::MissingLayer {
                model: m.name.clone(),
                digest: d.clone(),
            });
        }
    }
    let root = pathrs::Root::open(rootfs).map_err(|e| PlanError::Rootfs {
        path: rootfs.to_owned(),
        message: e.to_string(),
    })?;
    for layer in manifest.layers() {
        let annotations = layer.annotations().clone().unwrap_or_default();
        let media_type = layer.media_type().to_string();
        let path = if MODULE_LAYERS.contains(&media_type.as_str()) {
            let name = weft
                .module
                .clone()
                .or_else(|| annotations.get(TITLE).cloned())
                .unwrap_or_else(|| "module.wasm".into());
            weft.module.get_or_insert(name.clone());
            name
        } else if let Some(p) = annotations.get(FILEPATH) {
            p.clone()
        } else {
            // Not a file of the artifact (a signature, an SBOM...).
            continue;
        };
        let rel = relative(&path).map_err(|reason| {
            image_err(format!(
                "layer {} has the path {path:?}, which {reason}",
                layer.digest()
            ))
        })?;
        write_layer(content, &root, &rel, layer).await?;
    }
    let text = serde_json::to_vec(&serde_json::json!({ "weft": weft })).map_err(image_err)?;
    let mut f = create(&root, Path::new(WEFT_JSON))?;
    f.write_all(&text)
        .map_err(|e| image_err(format!("writing /{WEFT_JSON}: {e}")))?;
    Ok(())
}

fn create(root: &pathrs::Root, rel: &Path) -> Result<std::fs::File, PlanError> {
    let io = |e: pathrs::error::Error| image_err(format!("creating /{}: {e}", rel.display()));
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        root.mkdir_all(parent, &std::fs::Permissions::from_mode(0o755))
            .map_err(io)?;
    }
    use pathrs::flags::OpenFlags;
    // O_EXCL: two layers at one path (or a layer at /weft.json) are
    // refused, never written over each other.
    root.create_file(
        rel,
        OpenFlags::O_WRONLY | OpenFlags::O_EXCL | OpenFlags::O_CLOEXEC,
        &std::fs::Permissions::from_mode(0o644),
    )
    .map_err(io)
}

async fn write_layer(
    content: &Content,
    root: &pathrs::Root,
    rel: &Path,
    layer: &Descriptor,
) -> Result<(), PlanError> {
    let file = create(root, rel)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = content
        .read(layer.digest().as_ref(), layer.size(), |chunk| {
            out.write_all(chunk)
        })
        .await?;
    out.flush()
        .map_err(|e| image_err(format!("writing /{}: {e}", rel.display())))?;
    if n != layer.size() {
        return Err(image_err(format!(
            "layer {} gave {n} bytes, its descriptor says {}",
            layer.digest(),
            layer.size()
        )));
    }
    Ok(())
}
