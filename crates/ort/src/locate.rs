//! Where libonnxruntime comes from: an explicit path, the system, or the
//! `onnxruntime` Python wheel (whose `capi/` directory ships the standalone
//! C-API library).

use crate::OrtError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Directories a system install (a distribution package, or the release
/// tarball copied into place) puts the library in.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/opt/homebrew/lib",
];

/// Find libonnxruntime, in this order:
///
/// 1. `WEFT_ONNXRUNTIME`: the library file, or a directory holding it;
/// 2. `ORT_DYLIB_PATH` (the `ort` crate's own variable): the library file;
/// 3. the system: `/usr/local/lib`, `/usr/lib`, `/usr/lib/<arch>-linux-gnu`
///    (and Homebrew's `/opt/homebrew/lib`);
/// 4. the `onnxruntime` wheel of `$WEFT_PYTHON` (default `python3`): its
///    package directory's `capi/`.
///
/// A variable that is set but names nothing usable is the answer (an
/// error), not a reason to look further: the user asked for that library.
/// The error of a fruitless search names every place looked and how to
/// install one.
pub fn library() -> Result<PathBuf, OrtError> {
    let dirs: Vec<&Path> = SYSTEM_DIRS.iter().map(Path::new).collect();
    search(&|k| std::env::var_os(k), &dirs)
}

pub(crate) fn search(
    env: &dyn Fn(&str) -> Option<OsString>,
    system: &[&Path],
) -> Result<PathBuf, OrtError> {
    let mut looked = Vec::new();
    if let Some(v) = env("WEFT_ONNXRUNTIME").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(v);
        if path.is_file() {
            return Ok(path);
        }
        if path.is_dir() {
            if let Some(found) = in_dir(&path) {
                return Ok(found);
            }
            looked.push(format!(
                "WEFT_ONNXRUNTIME={} (a directory without libonnxruntime)",
                path.display()
            ));
        } else {
            looked.push(format!(
                "WEFT_ONNXRUNTIME={} (no such file or directory)",
                path.display()
            ));
        }
        return Err(OrtError::NotFound { looked });
    }
    if let Some(v) = env("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(v);
        // A bare file name is for the dynamic loader's own search path.
        if path.is_file() || path.components().count() == 1 {
            return Ok(path);
        }
        looked.push(format!("ORT_DYLIB_PATH={} (no such file)", path.display()));
        return Err(OrtError::NotFound { looked });
    }
    for dir in system {
        if let Some(found) = in_dir(dir) {
            return Ok(found);
        }
    }
    looked.push(
        system
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let python = env("WEFT_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".into());
    match wheel_dir(Path::new(&python)) {
        Ok(package) => {
            let capi = package.join("capi");
            if let Some(found) = in_dir(&capi) {
                return Ok(found);
            }
            looked.push(format!(
                "{} (the onnxruntime wheel of {}, without the library)",
                capi.display(),
                python.to_string_lossy()
            ));
        }
        Err(why) => looked.push(format!(
            "the onnxruntime wheel of {} ({why})",
            python.to_string_lossy()
        )),
    }
    Err(OrtError::NotFound { looked })
}

/// The library in the `onnxruntime` wheel of a Python (a venv's, say):
/// step 4 of [`library`] for a given interpreter.
pub fn wheel_library(python: &Path) -> Result<PathBuf, OrtError> {
    let looked = match wheel_dir(python) {
        Ok(package) => {
            let capi = package.join("capi");
            if let Some(found) = in_dir(&capi) {
                return Ok(found);
            }
            format!("{} (without the library)", capi.display())
        }
        Err(why) => format!("the onnxruntime wheel of {} ({why})", python.display()),
    };
    Err(OrtError::NotFound {
        looked: vec![looked],
    })
}

/// The `onnxruntime` package directory of a Python, or why there is none.
pub(crate) fn wheel_dir(python: &Path) -> Result<PathBuf, String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rfind(|l| !l.trim().is_empty());
        return Err(last.unwrap_or("it failed").trim().to_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| "it printed no package directory".into())
}

/// The library in a directory, the highest version when there are several.
pub(crate) fn in_dir(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = library_version(&name)?;
            let path = e.path();
            path.is_file().then_some((version, path))
        })
        .max()
        .map(|(_, path)| path)
}

/// The version numbers in a library file name (empty for an unversioned
/// name); `None` for anything that is not libonnxruntime itself (such as
/// `libonnxruntime_providers_shared.so`).
fn library_version(name: &str) -> Option<Vec<u32>> {
    let version = if name == "libonnxruntime.so"
        || name == "libonnxruntime.dylib"
        || name.eq_ignore_ascii_case("onnxruntime.dll")
    {
        ""
    } else if let Some(v) = name.strip_prefix("libonnxruntime.so.") {
        v
    } else {
        name.strip_prefix("libonnxruntime.")?
            .strip_suffix(".dylib")?
    };
    if version.is_empty() {
        return Some(Vec::new());
    }
    version.split('.').map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn library_names() {
        assert_eq!(library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(
            library_version("libonnxruntime.so.1.32.0"),
            Some(vec![1, 32, 0])
        );
        assert_eq!(
            library_version("libonnxruntime.1.32.0.dylib"),
            Some(vec![1, 32, 0])
        );
        assert_eq!(library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(library_version("libonnxruntime.so.1.32.0.dbg"), None);
        assert_eq!(
            library_version("onnxruntime_pybind11_state.cpython-311.so"),
            None
        );
    }

    #[test]
    fn a_directory_gives_its_newest_library() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            in_dir(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.32.0"))
        );
        let found = search(&env(&[("WEFT_ONNXRUNTIME", dir.path())]), &[]).unwrap();
        assert_eq!(found, dir.path().join("libonnxruntime.so.1.32.0"));
    }

    #[test]
    fn system_directories_are_searched_in_order() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(b.path().join("libonnxruntime.so"), b"").unwrap();
        let found = search(&env(&[]), &[a.path(), b.path()]).unwrap();
        assert_eq!(found, b.path().join("libonnxruntime.so"));
    }

    #[test]
    fn an_explicit_path_that_is_wrong_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        std::fs::write(system.path().join("libonnxruntime.so"), b"").unwrap();
        let missing = dir.path().join("nope.so");
        let e = search(&env(&[("WEFT_ONNXRUNTIME", &missing)]), &[system.path()]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("nope.so (no such file"), "{text}");
        let e = search(&env(&[("WEFT_ONNXRUNTIME", dir.path())]), &[]).unwrap_err();
        assert!(e.to_string().contains("without libonnxruntime"), "{e}");
    }

    #[test]
    fn nothing_found_names_every_place_and_the_fix() {
        let system = tempfile::tempdir().unwrap();
        let python = system.path().join("no-python");
        let e = search(&env(&[("WEFT_PYTHON", &python)]), &[system.path()]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&system.path().display().to_string()),
            "{text}"
        );
        assert!(text.contains("no-python (cannot run it"), "{text}");
        assert!(text.contains("pip install onnxruntime==1.32.0"), "{text}");
        assert!(text.contains("WEFT_ONNXRUNTIME="), "{text}");
    }
}
