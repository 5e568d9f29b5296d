//! The reconciler's errors (they requeue the object; what a user must fix
//! goes into its status conditions instead).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("encoding")]
    Json(#[source] serde_json::Error),
    #[error("the object has no name or uid to own its children")]
    NoOwner,
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::NoOwner => "no_owner",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, each once (`a: b: c`), for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause is printed once: by its own `Display`, not repeated in the
    /// message of the error that wraps it.
    #[test]
    fn a_cause_is_printed_once() {
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let text = json.to_string();
        let e = Error::Json(json);
        assert_eq!(chain(&e), format!("encoding: {text}"));
    }
}
