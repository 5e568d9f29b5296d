//! Parsers for command-line values: sizes, durations, grants.

use weft_runtime::DirGrant;

pub use weft_runtime::units::{duration as timeout, size};

/// `HOST::GUEST`, `HOST::GUEST:ro`, or `HOST` (mapped to the same path).
pub fn dir(s: &str) -> Result<DirGrant, String> {
    let (spec, read_only) = match s.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (host, guest) = match spec.split_once("::") {
        Some((h, g)) => (h, g),
        None => (spec, spec),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!(
            "`{s}`: expected HOST::GUEST, for example ./models::/models"
        ));
    }
    Ok(DirGrant {
        host: host.into(),
        guest: guest.into(),
        read_only,
    })
}

/// `KEY=VALUE`, or `KEY` to pass the host's value through.
pub fn env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("`{s}`: the variable name is empty")),
        Some((k, v)) => Ok((k.into(), v.into())),
        None => std::env::var(s)
            .map(|v| (s.to_string(), v))
            .map_err(|_| format!("`{s}` is not set on the host; pass KEY=VALUE")),
    }
}

/// `1,3,640,640`: a concrete tensor shape.
pub fn dims(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|d| {
            d.trim().parse::<usize>().map_err(|_| {
                format!("`{s}` is not a shape; expected comma-separated sizes like 1,3,640,640")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs() {
        let d = dir("./models::/models:ro").unwrap();
        assert_eq!(d.host, std::path::PathBuf::from("./models"));
        assert_eq!(d.guest, "/models");
        assert!(d.read_only);
        assert_eq!(dir("data").unwrap().guest, "data");
        assert!(dir("::/x").is_err());
    }

    #[test]
    fn envs() {
        assert_eq!(env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(env("=x").is_err());
        assert!(env("WEFT_SURELY_UNSET_VARIABLE").is_err());
    }
}
