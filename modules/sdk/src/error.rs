use std::fmt;

/// Result of a wasi-nn call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error codes of wasi-nn: the witx `nn_errno` values (wasip1) and the
/// WIT `error-code` cases (wasip2), under their spec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    /// wasip1 only; hosts also use it for an output buffer that is too small.
    MissingMemory,
    /// wasip1 only.
    Busy,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    /// wasip2 only.
    Timeout,
    /// wasip2 only.
    Security,
    /// wasip2's `unknown`, or a wasip1 errno outside the spec.
    Unknown,
}

impl ErrorCode {
    /// The spec name, e.g. `invalid_argument`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidEncoding => "invalid_encoding",
            ErrorCode::MissingMemory => "missing_memory",
            ErrorCode::Busy => "busy",
            ErrorCode::RuntimeError => "runtime_error",
            ErrorCode::UnsupportedOperation => "unsupported_operation",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Security => "security",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed wasi-nn operation: which call, the error code, and any detail the
/// host (wasip2 error data) or this library added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    op: String,
    detail: Option<String>,
}

impl Error {
    pub(crate) fn new(code: ErrorCode, op: impl Into<String>, detail: Option<String>) -> Self {
        Error {
            code,
            op: op.into(),
            detail: detail.filter(|d| !d.is_empty()),
        }
    }

    /// An error found by this library before or after talking to the host.
    pub(crate) fn guest(code: ErrorCode, op: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::new(code, op, Some(detail.into()))
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The wasi-nn call (or library operation) that failed, e.g. `load_by_name("det")`.
    pub fn op(&self) -> &str {
        &self.op
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasi-nn {} failed: {}", self.op, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
