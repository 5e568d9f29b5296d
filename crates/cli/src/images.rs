//! `weft images`, `weft rm`, `weft gc`, `weft inspect`: the local store.

use crate::store::StoreArgs;
use clap::Args;
use weft_oci::Artifact;
use weft_oci::artifact::{Dim, TensorSpec};

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

/// Show a model module's manifest, config and interface (no weights are
/// read).
#[derive(Args)]
pub struct InspectArgs {
    /// Reference in the local store, e.g. ocr:1.0.
    pub reference: String,
    /// Print the manifest and config as JSON.
    #[arg(long)]
    pub json: bool,
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

fn shape(t: &TensorSpec) -> String {
    match &t.shape {
        None => "any".into(),
        Some(dims) => format!(
            "[{}]",
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Named(s) => s.clone(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let store = a.store.open()?;
    let art = Artifact::open(&store, &a.reference)?;
    if a.json {
        let out = serde_json::json!({
            "reference": weft_oci::normalize_reference(&a.reference)?,
            "digest": art.manifest_digest.to_string(),
            "manifest": art.manifest,
            "config": art.config,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let c = &art.config;
    outln!(
        "reference: {}",
        weft_oci::normalize_reference(&a.reference)?
    );
    outln!("digest:    {}", art.manifest_digest);
    outln!("platform:  {}/{}", c.os, c.architecture);
    outln!("created:   {}", c.created);
    outln!("module:    {}", c.weft.module);
    if !c.weft.args.is_empty() {
        outln!("args:      {}", c.weft.args.join(" "));
    }
    outln!("layers:");
    for l in art.manifest.layers() {
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
            outln!("  input  {:<24} {:<5} {}", t.name, t.ty, shape(t));
        }
        for t in &m.outputs {
            outln!("  output {:<24} {:<5} {}", t.name, t.ty, shape(t));
        }
    }
    Ok(0)
}
