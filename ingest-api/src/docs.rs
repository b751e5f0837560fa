//! Swagger UI at `/docs`, showing the API's OpenAPI document (`/openapi.json`) with "Try it
//! out". Its script and stylesheet come from the `swagger-ui-dist` crate, built into the binary
//! (nothing is fetched at run time); the page and its start script are ours, so the page keeps
//! a content security policy with no inline script.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Scripts and styles from this origin only; Swagger UI sets inline style attributes and draws
/// its icons as `data:` images; requests ("Try it out") go to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Where the Swagger UI assets are served.
const ASSETS: &str = "/docs/assets";

/// `/docs`, its start script and the Swagger UI assets.
pub fn routes() -> Router {
    let assets = swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: ASSETS,
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: Some("Sluice API"),
    });
    Router::new()
        .route("/docs", get(|| async { page("text/html; charset=utf-8", include_str!("../docs-ui/index.html")) }))
        .route("/docs/", get(|| async { page("text/html; charset=utf-8", include_str!("../docs-ui/index.html")) }))
        .route("/docs/start.js", get(|| async { page("text/javascript; charset=utf-8", include_str!("../docs-ui/start.js")) }))
        .merge(assets)
        .layer(axum::middleware::map_response(with_policy))
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// Every `/docs` answer, the crate's assets included, under the policy above.
async fn with_policy(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    response
}
