//! `weft-node-installer`: put `io.containerd.weft.v1` into a node's
//! containerd configuration, and take it out again.
//!
//! The configuration is edited as text, never re-serialized, so comments,
//! ordering and settings we do not understand survive. Weft's part is one
//! block between two marker lines; installing replaces that block (running
//! twice changes nothing) and uninstalling removes exactly it.
//!
//! ```
//! use weft_node_installer::{install, uninstall};
//! let before = "version = 2\n[plugins]\n";
//! let after = install(before).unwrap();
//! assert!(after.contains("io.containerd.weft.v1"));
//! assert_eq!(install(&after).unwrap(), after);
//! assert_eq!(uninstall(&after), before);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// First line of Weft's block.
pub const BEGIN: &str =
    "# BEGIN weft runtime (managed by weft-node-installer; remove with --uninstall)";
/// Last line of Weft's block.
pub const END: &str = "# END weft runtime";
/// The runtime type containerd maps to `containerd-shim-weft-v1`.
pub const RUNTIME_TYPE: &str = "io.containerd.weft.v1";

/// containerd's configuration schema, from its `version` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// No `version` line (containerd 1.x's first schema).
    V1,
    /// `version = 2` (containerd 1.x).
    V2,
    /// `version = 3` (containerd 2.x).
    V3,
}

impl Schema {
    /// Read the top-level `version = N` line; none means V1.
    pub fn of(config: &str) -> Result<Schema, InstallError> {
        for line in config.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                break;
            }
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim_start().strip_prefix('=').map(str::trim);
                return match v.map(|v| v.split('#').next().unwrap_or("").trim()) {
                    Some("1") => Ok(Schema::V1),
                    Some("2") => Ok(Schema::V2),
                    Some("3") => Ok(Schema::V3),
                    other => Err(InstallError::UnknownVersion(
                        other.unwrap_or(line).to_owned(),
                    )),
                };
            }
        }
        Ok(Schema::V1)
    }

    /// The TOML table under which CRI runtimes live.
    pub fn runtimes_table(self) -> &'static str {
        match self {
            Schema::V1 => "plugins.cri.containerd.runtimes",
            Schema::V2 => "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes",
            Schema::V3 => "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes",
        }
    }
}

/// Why a configuration could not be edited.
#[derive(Debug, PartialEq, Eq)]
pub enum InstallError {
    UnknownVersion(String),
    /// A `BEGIN` without its `END` (or the reverse): someone edited the
    /// block by hand; we refuse to guess.
    BrokenBlock,
    /// A `runtimes.weft` table outside our block would clash with ours.
    Foreign,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::UnknownVersion(v) => write!(
                f,
                "unknown containerd config version {v:?}; this installer knows versions 1, 2 and 3"
            ),
            InstallError::BrokenBlock => write!(
                f,
                "the config has one of the weft marker lines without the other; fix or remove the block by hand"
            ),
            InstallError::Foreign => write!(
                f,
                "the config already defines a `weft` runtime outside the installer's block; remove it first"
            ),
        }
    }
}

impl std::error::Error for InstallError {}

/// Weft's block for a schema. `pod_annotations` lets the pod's `weft.dev/*`
/// annotations reach the shim (`weft.dev/allow-linux-containers` admits
/// Linux sidecars into a weft pod).
pub fn block(schema: Schema) -> String {
    format!(
        "{BEGIN}\n[{table}.weft]\n  runtime_type = \"{RUNTIME_TYPE}\"\n  pod_annotations = [\"weft.dev/*\"]\n{END}\n",
        table = schema.runtimes_table()
    )
}

/// The config without Weft's block (and without the one blank line the
/// installer put before it).
pub fn uninstall(config: &str) -> String {
    let (Some(b), Some(e)) = (config.find(BEGIN), config.find(END)) else {
        return config.to_owned();
    };
    if e < b {
        return config.to_owned();
    }
    let mut end = e + END.len();
    if config[end..].starts_with('\n') {
        end += 1;
    }
    let mut start = b;
    if config[..start].ends_with("\n\n") {
        start -= 1;
    }
    format!("{}{}", &config[..start], &config[end..])
}

/// The config with Weft's block, current for its schema, at the end.
pub fn install(config: &str) -> Result<String, InstallError> {
    let has_begin = config.contains(BEGIN);
    if has_begin != config.contains(END) {
        return Err(InstallError::BrokenBlock);
    }
    let base = uninstall(config);
    let schema = Schema::of(&base)?;
    if base.contains(&format!("{}.weft]", schema.runtimes_table())) {
        return Err(InstallError::Foreign);
    }
    let mut out = base;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&block(schema));
    Ok(out)
}

/// Kubernetes distributions with their own place for containerd's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distro {
    Containerd,
    K3s,
    Rke2,
    MicroK8s,
    K0s,
}

impl Distro {
    pub const ALL: [Distro; 5] = [
        Distro::K3s,
        Distro::Rke2,
        Distro::MicroK8s,
        Distro::K0s,
        Distro::Containerd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Distro::Containerd => "containerd",
            Distro::K3s => "k3s",
            Distro::Rke2 => "rke2",
            Distro::MicroK8s => "microk8s",
            Distro::K0s => "k0s",
        }
    }

    /// The file the installer edits, relative to the host root. k3s and
    /// RKE2 regenerate `config.toml` at start: their template is edited.
    /// k0s merges drop-in files: ours is a file of its own.
    pub fn config_file(self) -> &'static str {
        match self {
            Distro::Containerd => "etc/containerd/config.toml",
            Distro::K3s => "var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
            Distro::Rke2 => "var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl",
            Distro::MicroK8s => "var/snap/microk8s/current/args/containerd-template.toml",
            Distro::K0s => "etc/k0s/containerd.d/weft.toml",
        }
    }

    /// Where to start from when the edited file does not exist yet (the
    /// generated config the template replaces).
    pub fn seed_file(self) -> Option<&'static str> {
        match self {
            Distro::K3s => Some("var/lib/rancher/k3s/agent/etc/containerd/config.toml"),
            Distro::Rke2 => Some("var/lib/rancher/rke2/agent/etc/containerd/config.toml"),
            _ => None,
        }
    }

    /// A directory whose presence marks the distribution.
    fn marker(self) -> &'static str {
        match self {
            Distro::Containerd => "etc/containerd",
            Distro::K3s => "var/lib/rancher/k3s",
            Distro::Rke2 => "var/lib/rancher/rke2",
            Distro::MicroK8s => "var/snap/microk8s",
            Distro::K0s => "etc/k0s",
        }
    }

    /// The distribution of the host mounted at `root`.
    pub fn detect(root: &Path) -> Option<Distro> {
        Distro::ALL
            .into_iter()
            .find(|d| root.join(d.marker()).is_dir())
    }

    pub fn config_path(self, root: &Path) -> PathBuf {
        root.join(self.config_file())
    }
}

/// What the edited file should contain for `distro`, given what exists.
pub fn planned(
    distro: Distro,
    current: Option<&str>,
    seed: Option<&str>,
) -> Result<String, InstallError> {
    match (distro, current) {
        // A k0s drop-in holds only our block (k0s merges it).
        (Distro::K0s, _) => Ok(format!("version = 2\n\n{}", block(Schema::V2))),
        (_, Some(text)) => install(text),
        (_, None) => install(seed.unwrap_or("version = 2\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_from_the_version_line() {
        assert_eq!(Schema::of("version = 2\n[plugins]\n").unwrap(), Schema::V2);
        assert_eq!(Schema::of("version=3 # comment\n").unwrap(), Schema::V3);
        assert_eq!(
            Schema::of("[plugins.cri]\nversion = 3\n").unwrap(),
            Schema::V1
        );
        assert!(matches!(
            Schema::of("version = 9\n"),
            Err(InstallError::UnknownVersion(_))
        ));
    }

    #[test]
    fn broken_or_foreign_blocks_are_refused() {
        let half = format!("version = 2\n{BEGIN}\n");
        assert_eq!(install(&half), Err(InstallError::BrokenBlock));
        let foreign =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.weft]\n";
        assert_eq!(install(foreign), Err(InstallError::Foreign));
    }

    #[test]
    fn detects_the_distribution_by_its_directories() {
        let root = tempfile_dir();
        assert_eq!(Distro::detect(&root), None);
        std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
        assert_eq!(Distro::detect(&root), Some(Distro::Containerd));
        std::fs::create_dir_all(root.join("var/lib/rancher/k3s")).unwrap();
        assert_eq!(Distro::detect(&root), Some(Distro::K3s));
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let p = std::env::temp_dir().join(format!("weft-installer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}
