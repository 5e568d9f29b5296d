//! `weft copy SRC DST`: between registries, OCI layout directories and the
//! local store, e.g. to carry model modules into an air-gapped site.

use crate::remote::{RemoteArgs, names_registry};
use crate::store::StoreArgs;
use anyhow::Context;
use clap::Args;
use weft_oci::{Artifact, Store, parse_reference};

/// Copy a model module. Each side is a registry reference
/// (HOST[:PORT]/REPO[:TAG]), an OCI image layout directory as skopeo writes
/// it (oci:DIR:NAME[:TAG]), or a reference in the local store (NAME[:TAG]).
/// Digests are preserved: the copy has the same manifest digest.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  weft copy 127.0.0.1:5000/ocr:1.0 oci:/media/usb/weft:ocr:1.0   # to a USB stick\n  weft copy oci:/media/usb/weft:ocr:1.0 registry.local:5000/ocr:1.0  # inside the site\n  weft copy ocr:1.0 oci:./export:ocr:1.0                          # from the local store"
)]
pub struct CopyArgs {
    pub source: String,
    pub destination: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

enum End {
    Layout(Store, String),
    Registry(weft_oci::registry::Reference),
}

fn parse(s: &str, store: &StoreArgs, fallback_ref: Option<&str>) -> anyhow::Result<End> {
    if let Some(rest) = s.strip_prefix("oci:") {
        let (dir, reference) = match rest.split_once(':') {
            Some((dir, r)) => (dir, r.to_string()),
            None => (
                rest,
                fallback_ref
                    .map(str::to_string)
                    .with_context(|| format!("`{s}`: name the image, oci:DIR:NAME[:TAG]"))?,
            ),
        };
        return Ok(End::Layout(Store::open(dir)?, reference));
    }
    if names_registry(s) {
        return Ok(End::Registry(parse_reference(s)?));
    }
    Ok(End::Layout(store.open()?, s.to_string()))
}

/// The repository-and-tag part of a reference, for naming it in a layout.
fn short_name(reference: &str) -> String {
    reference
        .rsplit('/')
        .next()
        .unwrap_or(reference)
        .to_string()
}

/// Copy the blobs of `reference` from one store to another and tag it.
fn copy_between_stores(
    from: &Store,
    reference: &str,
    to: &Store,
    as_ref: &str,
) -> anyhow::Result<String> {
    // Blobs stay untagged until the end: keep `gc` out meanwhile.
    let _writing = to.writer()?;
    let desc = from.resolve(reference)?;
    let manifest = from.manifest(&desc)?;
    // A model module, or its classic variant (which is not runnable as an
    // artifact, but is what containerd before 1.6.25 needs).
    let classic = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(weft_oci::media::ARTIFACT))
        .is_some_and(|v| v == weft_oci::artifact::ARTIFACT_V1_CLASSIC);
    if !classic {
        Artifact::open(from, reference)?;
    }
    let blobs = weft_oci::artifact::blobs(&manifest)
        .map(|d| d.digest().clone())
        .chain(std::iter::once(desc.digest().clone()));
    for digest in blobs {
        if !to.has_blob(&digest) {
            let path = from.blob_path(&digest);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            to.put_blob(file, Some(&digest))?;
        }
    }
    to.tag(as_ref, &desc)?;
    Ok(desc.digest().to_string())
}

pub fn exec(a: CopyArgs) -> anyhow::Result<i32> {
    let src = parse(&a.source, &a.store, None)?;
    let src_name = match &src {
        End::Layout(_, r) => short_name(r),
        End::Registry(r) => short_name(&r.whole()),
    };
    let dst = parse(&a.destination, &a.store, Some(&src_name))?;
    let digest = match (src, dst) {
        (End::Layout(from, r), End::Layout(to, r2)) => copy_between_stores(&from, &r, &to, &r2)?,
        (End::Layout(from, r), End::Registry(target)) => {
            let remote = a.remote.remote(&target)?;
            crate::remote::runtime()?
                .block_on(remote.push(&from, &r, &target))
                .with_context(|| format!("pushing {r} to {}", target.whole()))?
                .manifest_digest
        }
        (End::Registry(source), End::Layout(to, r2)) => {
            let remote = a.remote.remote(&source)?;
            let report = crate::remote::runtime()?
                .block_on(remote.pull(&to, &source))
                .with_context(|| format!("pulling {}", source.whole()))?;
            if weft_oci::normalize_reference(&r2)? != source.whole() {
                to.tag(&r2, &to.resolve(&source.whole())?)?;
                to.untag(&source.whole())?;
            }
            report.manifest_digest
        }
        (End::Registry(source), End::Registry(target))
            if source.resolve_registry() == target.resolve_registry() =>
        {
            // Same registry: mount the blobs across repositories, move none.
            let remote = a.remote.remote(&target)?;
            crate::remote::runtime()?
                .block_on(remote.copy_within(&source, &target))
                .with_context(|| format!("copying {} to {}", source.whole(), target.whole()))?
                .manifest_digest
        }
        (End::Registry(source), End::Registry(target)) => {
            // Through the local store, which doubles as a cache.
            let store = a.store.open()?;
            let rt = crate::remote::runtime()?;
            let pull = a.remote.remote(&source)?;
            rt.block_on(pull.pull(&store, &source))
                .with_context(|| format!("pulling {}", source.whole()))?;
            let push = a.remote.remote(&target)?;
            rt.block_on(push.push(&store, &source.whole(), &target))
                .with_context(|| format!("pushing to {}", target.whole()))?
                .manifest_digest
        }
    };
    outln!("copied {} to {} ({digest})", a.source, a.destination);
    Ok(0)
}
