//! `weft images`, `weft rm`, `weft gc`, `weft inspect`: the local store.

use crate::store::StoreArgs;
use clap::Args;
use weft_oci::Artifact;
use weft_oci::artifact::type_name;

/// List the model modules in the local store.
#[derive(Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Remove tags from the local store (blobs stay until `weft gc`).
#[derive(Args)]
pub struct RmArgs {
    /// References to untag, e.g. ocr:1.0.
    #[arg(required = true)]
    pub references: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Delete blobs that no tag in the local store reaches.
#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Show a model module's manifest, config and interface, from the local
/// store or straight from a registry (no weights are read or downloaded).
#[derive(Args)]
pub struct InspectArgs {
    /// Reference in the local store (ocr:1.0) or in a registry
    /// (HOST[:PORT]/REPO[:TAG|@DIGEST]).
    pub reference: String,
    /// Print the manifest and config as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn images(a: ImagesArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    outln!("{:<40} {:<19} {:>10}  OS", "REFERENCE", "DIGEST", "SIZE");
    for (reference, desc) in store.list()? {
        let (size, os) = match Artifact::open(&store, &reference) {
            Ok(art) => (
                art.manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
                art.config.os.clone(),
            ),
            Err(_) => match store.manifest(&desc) {
                Ok(m)
                    if m.annotations()
                        .as_ref()
                        .and_then(|a| a.get(weft_oci::media::ARTIFACT))
                        == Some(&weft_oci::artifact::ARTIFACT_V1_CLASSIC.to_string()) =>
                {
                    (
                        m.layers().iter().map(|l| l.size()).sum(),
                        "classic image (tar layer)".into(),
                    )
                }
                _ => (desc.size(), "(not a Weft module)".into()),
            },
        };
        let digest = desc.digest().to_string();
        outln!(
            "{reference:<40} {:<19} {:>10}  {os}",
            &digest[..digest.len().min(19)],
            human(size)
        );
    }
    Ok(0)
}

pub fn rm(a: RmArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    for r in &a.references {
        let desc = store.untag(r)?;
        outln!("untagged {r} ({})", desc.digest());
    }
    Ok(0)
}

pub fn gc(a: GcArgs) -> anyhow::Result<i32> {
    let report = a.store.open()?.gc()?;
    outln!(
        "removed {} blobs, freed {}",
        report.blobs_removed,
        human(report.bytes_freed)
    );
    Ok(0)
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    let local = store.resolve(&a.reference);
    let remote = matches!(local, Err(weft_oci::OciError::UnknownReference { .. }))
        && crate::remote::names_registry(&a.reference);
    let (reference, digest, manifest, config) = if remote {
        // Only the manifest and the config travel; no layer is fetched.
        let source = weft_oci::parse_reference(&a.reference)?;
        let client = a.remote.remote(&source)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (digest, manifest, config) = rt.block_on(client.inspect(&source))?;
        (source.whole(), digest, manifest, config)
    } else {
        let art = Artifact::open(&store, &a.reference)?;
        (
            weft_oci::normalize_reference(&a.reference)?,
            art.manifest_digest.to_string(),
            art.manifest,
            art.config,
        )
    };
    if a.json {
        let out = serde_json::json!({
            "reference": reference,
            "digest": digest,
            "manifest": manifest,
            "config": config,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let c = &config;
    outln!("reference: {reference}");
    outln!("digest:    {digest}");
    outln!("platform:  {}/{}", c.os, c.architecture);
    outln!("created:   {}", c.created);
    outln!("module:    {}", c.weft.module);
    if !c.weft.args.is_empty() {
        outln!("args:      {}", c.weft.args.join(" "));
    }
    outln!("layers:");
    for l in manifest.layers() {
        let path = l
            .annotations()
            .as_ref()
            .and_then(|a| {
                a.get(weft_oci::media::FILEPATH)
                    .or_else(|| a.get(weft_oci::media::TITLE))
            })
            .cloned()
            .unwrap_or_default();
        outln!(
            "  {:>10}  {:<48} {path}",
            human(l.size()),
            l.media_type().to_string()
        );
    }
    for m in &c.weft.models {
        outln!(
            "model {} ({}, target {}): {}",
            m.name,
            m.encoding,
            m.target,
            m.path
        );
        for t in &m.inputs {
            outln!(
                "  input  {:<24} {:<5} {}",
                t.name,
                type_name(t.datatype),
                t.shape_string()
            );
        }
        for t in &m.outputs {
            outln!(
                "  output {:<24} {:<5} {}",
                t.name,
                type_name(t.datatype),
                t.shape_string()
            );
        }
    }
    Ok(0)
}
