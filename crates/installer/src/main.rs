//! `weft-node-installer`: run by the node-installer DaemonSet (see
//! `deploy/`) with the host's root mounted, or by hand on a node.

use anyhow::Context;
use clap::Parser;
use std::path::{Path, PathBuf};
use weft_node_installer::{Distro, planned, uninstall};

/// Add Weft's containerd runtime (io.containerd.weft.v1) to this node's
/// containerd configuration and install the shim, or take both out again.
#[derive(Parser)]
#[command(name = "weft-node-installer", version)]
struct Args {
    /// Where the host's root filesystem is mounted.
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// containerd, k3s, rke2, microk8s or k0s [default: detected].
    #[arg(long)]
    distro: Option<String>,
    /// The shim binary to install.
    #[arg(long, default_value = "/opt/weft/bin/containerd-shim-weft-v1")]
    shim: PathBuf,
    /// Directory on containerd's PATH, relative to the host root.
    #[arg(long, default_value = "usr/local/bin")]
    bin_dir: PathBuf,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove Weft's block and the shim instead.
    #[arg(long)]
    uninstall: bool,
    /// Change nothing; check that the config holds Weft's current block and
    /// that the installed shim runs on this node (after containerd's
    /// restart, before the node is labelled ready).
    #[arg(long, conflicts_with_all = ["uninstall", "dry_run"])]
    verify: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("weft-node-installer: {e:#}");
        std::process::exit(1);
    }
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write through a temporary file and a rename, keeping a backup of the
/// previous version next to it.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        let backup = path.with_extension("weft-backup");
        std::fs::copy(path, &backup)
            .with_context(|| format!("backing up to {}", backup.display()))?;
    }
    let tmp = path.with_extension("weft-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn run(a: Args) -> anyhow::Result<()> {
    let distro = match &a.distro {
        Some(name) => Distro::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .with_context(|| {
                format!("unknown distro {name:?}; use containerd, k3s, rke2, microk8s or k0s")
            })?,
        None => Distro::detect(&a.host_root).with_context(|| {
            format!(
                "no containerd configuration found under {}; pass --distro or --host-root",
                a.host_root.display()
            )
        })?,
    };
    let config = distro.config_path(&a.host_root);
    let current = read(&config)?;
    let shim_target = a.host_root.join(&a.bin_dir).join("containerd-shim-weft-v1");
    if a.verify {
        return verify(&a, distro, &config, current.as_deref());
    }
    let next = if a.uninstall {
        match (&current, distro) {
            (Some(_), Distro::K0s) => None,
            (Some(text), _) => Some(uninstall(text)),
            (None, _) => None,
        }
    } else {
        let seed = match distro.seed_file() {
            Some(f) => read(&a.host_root.join(f))?,
            None => None,
        };
        Some(planned(distro, current.as_deref(), seed.as_deref())?)
    };
    let verb = if a.dry_run { "would" } else { "will" };
    println!("{} ({}): {}", distro.name(), verb, config.display());
    if a.dry_run {
        match &next {
            Some(text) if current.as_deref() != Some(text.as_str()) => {
                println!("--- new content ---\n{text}")
            }
            Some(_) => println!("already up to date"),
            None => println!("remove the file"),
        }
        return Ok(());
    }
    match next {
        Some(text) if current.as_deref() != Some(text.as_str()) => write_atomic(&config, &text)?,
        Some(_) => println!("already up to date"),
        None if current.is_some() => std::fs::remove_file(&config)
            .with_context(|| format!("removing {}", config.display()))?,
        None => {}
    }
    if a.uninstall {
        match std::fs::remove_file(&shim_target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", shim_target.display()));
            }
            _ => {}
        }
    } else {
        if let Some(dir) = shim_target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = shim_target.with_extension("weft-tmp");
        std::fs::copy(&a.shim, &tmp).with_context(|| {
            format!("copying the shim {} to {}", a.shim.display(), tmp.display())
        })?;
        std::fs::rename(&tmp, &shim_target)?;
    }
    println!("done; restart containerd to apply");
    Ok(())
}

/// The node is ready when containerd's config has the block this installer
/// writes and the shim runs in the host's root (its libraries are the
/// host's, not this image's).
fn verify(a: &Args, distro: Distro, config: &Path, current: Option<&str>) -> anyhow::Result<()> {
    let seed = match distro.seed_file() {
        Some(f) => read(&a.host_root.join(f))?,
        None => None,
    };
    let planned = planned(distro, current, seed.as_deref())?;
    match current {
        Some(text) if text == planned => {}
        Some(_) => anyhow::bail!(
            "{} lacks Weft's current runtime block; run weft-node-installer without --verify first",
            config.display()
        ),
        None => anyhow::bail!(
            "{} does not exist; run weft-node-installer first",
            config.display()
        ),
    }
    let shim = Path::new("/")
        .join(&a.bin_dir)
        .join("containerd-shim-weft-v1");
    let mut cmd = if a.host_root == Path::new("/") {
        std::process::Command::new(&shim)
    } else {
        let mut c = std::process::Command::new("chroot");
        c.arg(&a.host_root).arg(&shim);
        c
    };
    let out = cmd
        .arg("-v")
        .output()
        .with_context(|| format!("running {} on the host", shim.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("Runtime: weft") {
        anyhow::bail!(
            "the shim {} does not run on this node ({}{}); it needs glibc 2.36 or newer",
            shim.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "{} ({}): verified; {}",
        distro.name(),
        config.display(),
        text.lines()
            .find(|l| l.contains("Version"))
            .unwrap_or("")
            .trim()
    );
    Ok(())
}
