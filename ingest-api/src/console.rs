//! The web console at `/`: one HTML page, a script and a stylesheet, built into the binary
//! (no CDN, no build step). It talks to the API on the same origin.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Only this origin's script, styles and API: nothing is loaded from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The console's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", include_str!("../console/index.html")) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("../console/app.js")) }))
        .route("/console/ops.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("../console/ops.js")) }))
        .route("/console/app.css", get(|| async { asset("text/css; charset=utf-8", include_str!("../console/app.css")) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
