use std::fmt;

/// What went wrong with a request, which decides the HTTP status, the gRPC
/// code and the `reason` label of the failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The request is malformed or does not fit the model: 400.
    BadRequest,
    /// No such model, version or route: 404.
    NotFound,
    /// The body is over the size limit: 413.
    TooLarge,
    /// The model's queue is full: 503.
    Overloaded,
    /// Not ready yet (or shutting down): 503.
    Unavailable,
    /// The deadline passed while the request waited for an instance: 503.
    QueueTimeout,
    /// The module ran past the request's deadline and was stopped: 500.
    Deadline,
    /// The module trapped, ran out of memory or broke the contract: 500.
    ModuleFailed,
    /// The module returned an error for this request: 400.
    Rejected,
}

impl Kind {
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Kind::BadRequest | Kind::Rejected => S::BAD_REQUEST,
            Kind::NotFound => S::NOT_FOUND,
            Kind::TooLarge => S::PAYLOAD_TOO_LARGE,
            Kind::Overloaded | Kind::Unavailable | Kind::QueueTimeout => S::SERVICE_UNAVAILABLE,
            Kind::Deadline | Kind::ModuleFailed => S::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Kind::BadRequest | Kind::Rejected => C::InvalidArgument,
            Kind::NotFound => C::NotFound,
            Kind::TooLarge => C::OutOfRange,
            Kind::Overloaded | Kind::Unavailable | Kind::QueueTimeout => C::Unavailable,
            Kind::Deadline => C::DeadlineExceeded,
            Kind::ModuleFailed => C::Internal,
        }
    }

    /// The metric label: short, bounded.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::NotFound => "not_found",
            Kind::TooLarge => "too_large",
            Kind::Overloaded => "overloaded",
            Kind::Unavailable => "unavailable",
            Kind::QueueTimeout => "queue_timeout",
            Kind::Deadline => "deadline",
            Kind::ModuleFailed => "module_failed",
            Kind::Rejected => "rejected",
        }
    }
}

/// A failed request: its kind and a message for the client. Messages name
/// what was wrong and, where it helps, how to fix it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        if matches!(self.kind, Kind::ModuleFailed | Kind::Deadline) {
            tracing::warn!("request failed: {}", self.message);
        }
        (
            self.kind.status(),
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.kind.grpc(), e.message)
    }
}
