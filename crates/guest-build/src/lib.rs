//! Builds the guest modules in `modules/` (their own workspace, compiled for
//! wasm) from a host crate's build script: the one place that knows how,
//! with the one list of host build settings that must not leak into a guest
//! build. `weft-cli` bundles the generic predictor this way and
//! `weft-tests` builds every guest its tests run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the host build sets that a guest build must not inherit: clippy's
/// wrapper, compiler flags and the host's target directory or target.
pub const SCRUBBED: [&str; 8] = [
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC",
    "RUSTDOC",
];

/// What every guest build reads besides its own crate (paths relative to
/// `modules/`): the guest workspace's manifest and lock, the guest SDK and
/// serving crates, the WIT files, the shared wire format and the graph
/// builder training guests use.
pub const SHARED_INPUTS: [&str; 7] = [
    "Cargo.toml",
    "Cargo.lock",
    "sdk",
    "serve",
    "../runtime/wit",
    "../crates/abi/src",
    "../crates/autodiff/src",
];

/// The guest workspace of one repository checkout.
#[derive(Debug, Clone)]
pub struct Guests {
    /// `modules/`.
    pub modules: PathBuf,
    /// Where guest builds put their output (`modules/target`).
    pub target_dir: PathBuf,
}

impl Guests {
    /// The guest workspace of the repository rooted at `repo`.
    pub fn at(repo: &Path) -> Guests {
        let modules = repo.join("modules");
        Guests {
            target_dir: modules.join("target"),
            modules,
        }
    }

    /// Have cargo rerun the calling build script when any of `entries`
    /// (paths relative to `modules/`) changes.
    pub fn rerun_if_changed(&self, entries: &[&str]) {
        for entry in entries {
            println!(
                "cargo:rerun-if-changed={}",
                self.modules.join(entry).display()
            );
        }
    }

    /// The command that builds `packages` (all when empty) in release mode
    /// for `target`, with the host's settings scrubbed.
    pub fn command(&self, target: &str, packages: &[&str]) -> Command {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&self.modules)
            .args(["build", "--release", "--target", target])
            .arg("--target-dir")
            .arg(&self.target_dir);
        for p in packages {
            cmd.args(["-p", p]);
        }
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Build `packages` (all when empty) for `target`; the directory the
    /// `.wasm` files are in, or what to run to see why the build failed.
    pub fn build(&self, target: &str, packages: &[&str]) -> Result<PathBuf, String> {
        let status = self
            .command(target, packages)
            .status()
            .map_err(|e| format!("cannot run cargo for the guest modules: {e}"))?;
        if !status.success() {
            let selection: String = packages.iter().map(|p| format!(" -p {p}")).collect();
            return Err(format!(
                "building the guest modules for {target} failed; run `cargo build --release --target {target}{selection}` in {} to see why",
                self.modules.display()
            ));
        }
        Ok(self.target_dir.join(target).join("release"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_settings_are_scrubbed_and_the_selection_passed() {
        let g = Guests::at(Path::new("/repo"));
        let cmd = g.command("wasm32-wasip2", &["predictor", "echo"]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
                "/repo/modules/target",
                "-p",
                "predictor",
                "-p",
                "echo"
            ]
        );
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in SCRUBBED {
            assert!(removed.iter().any(|r| r == var), "{var} leaks");
        }
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/repo/modules")));
    }
}
