//! The one recipe every host program starts a module with.
//!
//! 1. *Resolve* — the caller's part, because each program finds modules its
//!    own way (`weft run` a file or a stored artifact, `weft agent` a pinned
//!    version, the shim a container's root): a [`Resolved`].
//! 2. [`Runtime::prepare`] — preload the models, then compile and link for
//!    the [`Purpose`]: a bad preload fails before anything is compiled or
//!    cached. What the program adds (its flags, a pod's environment) comes
//!    in as a [`Launch`].
//! 3. Run it ([`Prepared::run`]) or serve it (`weft_serve::ModelSpec::new`
//!    takes a [`Prepared`]).

use crate::{
    DirGrant, Limits, MemoryOutputPipe, Program, Purpose, RunOptions, Runtime, RuntimeError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_nn::{Models, Preload};

/// A module's code.
pub enum Code {
    /// Wasm bytes (a core module or a component), compiled by
    /// [`Runtime::prepare`].
    Wasm(Vec<u8>),
    /// A program already linked: the shim compiles in its own process and
    /// hands the code to the container's.
    Linked(Program),
}

/// A module and what its artifact adds: preloads, files, arguments, version.
pub struct Resolved {
    /// The module's file name (`argv[0]` unless a [`Launch`] names another,
    /// and messages).
    pub name: String,
    pub code: Code,
    pub preloads: Vec<Preload>,
    /// Directories the artifact grants (its files, read-only).
    pub dirs: Vec<DirGrant>,
    /// The artifact's leading arguments.
    pub args: Vec<String>,
    /// The artifact's `org.opencontainers.image.version`.
    pub version: Option<String>,
    /// `sha256:` of the manifest, when it came from a store.
    pub digest: Option<String>,
}

impl Resolved {
    /// A bare module: no preloads, files, arguments or version.
    pub fn module(name: impl Into<String>, bytes: Vec<u8>) -> Resolved {
        Resolved {
            name: name.into(),
            code: Code::Wasm(bytes),
            preloads: Vec::new(),
            dirs: Vec::new(),
            args: Vec::new(),
            version: None,
            digest: None,
        }
    }
}

/// What the host program adds to a resolved module.
#[derive(Default)]
pub struct Launch {
    /// Preloads before the artifact's own (`--nn-preload`).
    pub preloads: Vec<Preload>,
    /// Directories granted before the artifact's own (`--dir`).
    pub dirs: Vec<DirGrant>,
    /// Arguments after the artifact's own.
    pub args: Vec<String>,
    /// `argv[0]` as the guest sees it, when not the module's name.
    pub program_name: Option<String>,
    pub env: Vec<(String, String)>,
    /// For a serving module, `limits.timeout` bounds each instance's
    /// start-up.
    pub limits: Limits,
    /// Capture the guest's stdout here instead of passing it through.
    pub stdout: Option<MemoryOutputPipe>,
}

/// A module with its models loaded and its code linked: ready to run, or to
/// serve with `weft_serve::ModelSpec::new`.
pub struct Prepared {
    pub program: Program,
    /// Everything a run or an instance gets, the models included.
    pub options: RunOptions,
    pub version: Option<String>,
    pub digest: Option<String>,
    /// How long loading the models took.
    pub preload_time: Duration,
}

impl Prepared {
    /// Run the module to its exit code.
    pub fn run(&self, runtime: &Runtime) -> Result<i32, RuntimeError> {
        runtime.run(&self.program, self.options.clone())
    }
}

impl Runtime {
    /// Load the models, then compile and link the module for `purpose`.
    /// A linked program must have been linked for `purpose`.
    pub fn prepare(
        &self,
        resolved: Resolved,
        purpose: Purpose,
        launch: Launch,
    ) -> Result<Prepared, RuntimeError> {
        let Resolved {
            name,
            code,
            preloads,
            dirs,
            args,
            version,
            digest,
        } = resolved;
        let preloads = [launch.preloads, preloads].concat();
        let started = Instant::now();
        let models = Models::load(&preloads, self.nn).map_err(RuntimeError::Preload)?;
        let preload_time = started.elapsed();
        let program = match code {
            Code::Wasm(bytes) => self.load_for(&name, &bytes, purpose)?,
            Code::Linked(p) if p.purpose() == purpose => p,
            Code::Linked(p) => {
                return Err(RuntimeError::Purpose {
                    name,
                    linked: p.purpose(),
                    wanted: purpose,
                });
            }
        };
        Ok(Prepared {
            program,
            options: RunOptions {
                args: [args, launch.args].concat(),
                program_name: launch.program_name,
                env: launch.env,
                dirs: [launch.dirs, dirs].concat(),
                limits: launch.limits,
                models: Arc::new(models),
                stdout: launch.stdout,
            },
            version,
            digest,
            preload_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeConfig;

    fn data(name: &str) -> String {
        format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn runtime(cache: &std::path::Path) -> Runtime {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.to_owned()),
            ..Default::default()
        })
        .unwrap()
    }

    fn command() -> Vec<u8> {
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap()
    }

    fn grant(host: &std::path::Path, guest: &str) -> DirGrant {
        DirGrant {
            host: host.to_owned(),
            guest: guest.into(),
            read_only: true,
        }
    }

    /// A bad preload is found before anything is compiled or cached: the
    /// code here is not even wasm, and the error is the preload's.
    #[test]
    fn models_load_before_the_code_compiles() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp.path().join("cache"));
        let resolved = Resolved {
            preloads: vec!["m:onnx:cpu:/no/such/model.onnx".parse().unwrap()],
            ..Resolved::module("m.wasm", b"not wasm".to_vec())
        };
        let e = rt
            .prepare(resolved, Purpose::Run, Launch::default())
            .err()
            .unwrap();
        assert!(matches!(e, RuntimeError::Preload(_)), "{e:?}");
        let cached = std::fs::read_dir(tmp.path().join("cache"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(cached, 0, "something was compiled into the cache");
    }

    /// The program's preloads and directories come first, its arguments
    /// after the artifact's; the result runs.
    #[test]
    fn the_program_adds_to_what_the_artifact_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp.path().join("cache"));
        let resolved = Resolved {
            preloads: vec![
                format!("own:onnx:cpu:{}", data("tiny.onnx"))
                    .parse()
                    .unwrap(),
            ],
            dirs: vec![grant(tmp.path(), "/artifact")],
            args: vec!["--artifact".into()],
            version: Some("7".into()),
            ..Resolved::module("m.wasm", command())
        };
        let launch = Launch {
            preloads: vec![
                format!("extra:onnx:cpu:{}", data("tiny.onnx"))
                    .parse()
                    .unwrap(),
            ],
            dirs: vec![grant(tmp.path(), "/flag")],
            args: vec!["--flag".into()],
            ..Default::default()
        };
        let p = rt.prepare(resolved, Purpose::Run, launch).unwrap();
        assert_eq!(p.options.args, ["--artifact", "--flag"]);
        let guests: Vec<_> = p.options.dirs.iter().map(|d| d.guest.as_str()).collect();
        assert_eq!(guests, ["/flag", "/artifact"]);
        assert_eq!(p.options.models.names(), ["extra", "own"]);
        assert_eq!(p.version.as_deref(), Some("7"));
        assert_eq!(p.run(&rt).unwrap(), 0);
    }

    /// Linked code keeps the purpose it was linked for.
    #[test]
    fn linked_code_must_match_the_purpose() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp.path().join("cache"));
        let program = rt.load("m.wasm", &command()).unwrap();
        let resolved = Resolved {
            code: Code::Linked(program),
            ..Resolved::module("m.wasm", Vec::new())
        };
        let e = rt
            .prepare(resolved, Purpose::Serve, Launch::default())
            .err()
            .unwrap();
        assert!(matches!(e, RuntimeError::Purpose { .. }), "{e:?}");
        assert!(e.to_string().contains("m.wasm"), "{e}");
    }
}
