//! RFC 9457 problem details: every error answer is `application/problem+json` with a specific
//! `type` (a URI naming the problem), a `title`, the `status` and a `detail` for this occurrence.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://sluice.dev/problems/";

/// A problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI of the problem type, e.g. `https://sluice.dev/problems/unknown-store`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem of type `slug` (appended to [`PROBLEM_BASE`]).
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    /// A 500 `internal-error` (a bug or corrupt state; the detail says which).
    pub fn internal(detail: impl Into<String>) -> Problem {
        let detail = detail.into();
        tracing::error!(%detail, "internal error");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "Internal error", detail)
    }

    /// With a `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after_s = Some(seconds);
        self
    }
}

/// Set on every problem answer (a response extension): the problem's name, e.g.
/// `invalid-amount`, so the middleware counts answers by problem without reading bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemName(pub String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = ProblemName(self.type_uri.strip_prefix(PROBLEM_BASE).unwrap_or(&self.type_uri).to_string());
        let retry = self.retry_after_s;
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut response = (status, body).into_response();
        response.extensions_mut().insert(name);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
