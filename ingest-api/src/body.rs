//! The JSON body extractor: like `axum::Json`, but every refusal is a problem+json with its own
//! type: `unsupported-media-type` (415), `body-too-large` (413), `malformed-json` (400: not
//! JSON at all) and `invalid-body` (422: JSON of the wrong shape: unknown or missing fields,
//! wrong types).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("send the body as application/json (got `{content_type}`)"),
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large", "the request body is larger than this API accepts (http_body_limit_bytes)")
            } else {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, telling malformed JSON (400) from JSON of the wrong shape (422).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "Invalid request body", e.to_string()),
        _ => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", format!("the body is not valid JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: String,
    }

    #[test]
    fn malformed_and_wrong_shapes_are_told_apart() {
        let malformed = parse::<Body>(b"{\"amount\": ").unwrap_err();
        assert_eq!((malformed.status, malformed.type_uri.as_str()), (400, "https://sluice.dev/problems/malformed-json"));
        for (body, needle) in [(&b"{\"amount\": 1.5}"[..], "invalid type"), (b"{}", "missing field `amount`"), (b"{\"amount\":\"1\",\"x\":1}", "unknown field `x`")] {
            let problem = parse::<Body>(body).unwrap_err();
            assert_eq!(problem.status, 422);
            assert!(problem.detail.contains(needle), "{}", problem.detail);
        }
    }
}
