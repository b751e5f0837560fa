//! The crate's one error type. Every variant knows the Confluent `error_code` and HTTP status it
//! is answered with, so handlers just return `Result<_, RegistryError>`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong in the registry: bad requests (answered with the Confluent
/// error body and status), and store or start-up failures.
///
/// Request errors are the caller's fault and are never retried; [`RegistryError::Kafka`] and
/// [`RegistryError::StoreTimeout`] come from the broker and may succeed when retried.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The subject has no (visible) versions. Confluent error 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but not the requested version. Confluent error 40402.
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound {
        /// The subject that was asked for.
        subject: String,
        /// The version that was asked for (as written in the request).
        version: String,
    },
    /// No schema with this id, or the schema is not registered under the subject. Confluent error 40403.
    #[error("Schema not found: {0}")]
    SchemaNotFound(String),
    /// A soft delete of a subject whose versions are all soft-deleted already. Confluent error 40404.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that was not soft-deleted first. Confluent error 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// A soft delete of a version that is soft-deleted already. Confluent error 40406.
    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a version that was not soft-deleted first. Confluent error 40407.
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// `GET /config/{subject}` for a subject without its own level. Confluent error 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// The schema would break the subject's compatibility level. Confluent error 409.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .messages.join(", "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// One line per failed check.
        messages: Vec<String>,
    },
    /// The schema does not parse as Avro, or is of an unsupported type. Confluent error 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// A version path segment that is neither a positive 32-bit number nor `latest`. Confluent error 42202.
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// An unknown compatibility level name. Confluent error 42203.
    #[error("Invalid compatibility level '{0}'. Valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE")]
    InvalidCompatibilityLevel(String),
    /// A body that is not JSON, or JSON of the wrong shape. Answered with HTTP 400, error code 400.
    #[error("{0}")]
    BadRequest(String),
    /// No route for this path. HTTP 404, error code 404.
    #[error("HTTP 404 Not Found")]
    RouteNotFound,
    /// A write without the registry's credentials.
    #[error("Unauthorized: registering, deleting and configuring need the registry's credentials (HTTP basic auth)")]
    Unauthorized,
    /// A known path with an unsupported method. HTTP 405, error code 405.
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// The broker refused or failed an operation on the `_schemas` topic. Confluent error 50001.
    #[error("Error in the backend data store: {context}: {source}")]
    Kafka {
        /// What the registry was doing.
        context: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The store did not catch up or accept a write in time. Confluent error 50001.
    #[error("Error in the backend data store: {0}")]
    StoreTimeout(String),
    /// The HTTP listener could not be bound. Only returned by `Registry::start`.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address from the config.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// The Confluent `error_code` of the response body.
    pub fn error_code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted { .. } => 40406,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::SubjectConfigNotFound(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibilityLevel(_) => 42203,
            RegistryError::BadRequest(_) => 400,
            RegistryError::RouteNotFound => 404,
            RegistryError::Unauthorized => 40101,
            RegistryError::MethodNotAllowed => 405,
            RegistryError::Kafka { .. } | RegistryError::StoreTimeout(_) | RegistryError::Bind { .. } => 50001,
        }
    }

    /// The HTTP status Confluent answers this error with: the error code's first three digits.
    pub fn http_status(&self) -> StatusCode {
        let code = self.error_code();
        let status = if code >= 1000 { code / 100 } else { code };
        StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// True when the error means "nothing there", which may only be because this instance has
    /// not yet read what another instance wrote.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::SubjectNotFound(_)
                | RegistryError::VersionNotFound { .. }
                | RegistryError::SchemaNotFound(_)
                | RegistryError::SubjectConfigNotFound(_)
        )
    }

    /// The message of the response body: the display text, plus the broker's reason for store errors.
    fn message(&self) -> String {
        match self {
            RegistryError::Kafka { source, .. } => format!("{self}: {source}"),
            RegistryError::Bind { source, .. } => format!("{self}: {source}"),
            _ => self.to_string(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status.is_server_error() {
            tracing::warn!(error = %self.message(), "schema registry request failed");
        }
        let body = serde_json::json!({ "error_code": self.error_code(), "message": self.message() });
        let mut response = crate::api::json_response(status, &body);
        if matches!(self, RegistryError::Unauthorized) {
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Basic realm=\"sluice-registry\""));
        }
        response
    }
}
