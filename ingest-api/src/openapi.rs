//! The OpenAPI 3 document, built from the same `#[utoipa::path]` annotations that register the
//! routes (utoipa-axum's `routes!`), so a route cannot exist without being documented.

use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{accounts, auth, commands, ops, SharedState};

/// Document-level metadata; the paths come from [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice ingest API", description = "Commands in (Avro on Kafka, 202 + status URL), state out (interactive queries). Errors are RFC 9457 problem+json."),
    modifiers(&BearerAuth),
    components(schemas(crate::problem::Problem)),
    tags((name = "auth", description = "Sign-up, login, tokens, profile"), (name = "commands", description = "Published to Kafka; answered 202"),
        (name = "queries", description = "Read from the processors' stores"), (name = "operations", description = "Health, readiness, metrics"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()));
    }
}

/// Every route of the API with its documentation.
pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::me, auth::update_me))
        .routes(routes!(commands::transfer))
        .routes(routes!(commands::deposit))
        .routes(routes!(commands::withdraw))
        .routes(routes!(commands::refund))
        .routes(routes!(commands::verify_identity))
        .routes(routes!(commands::death_notification))
        .routes(routes!(accounts::command_status))
        .routes(routes!(accounts::my_account))
        .routes(routes!(accounts::my_transactions))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
}

/// `GET /openapi.json`.
pub async fn serve(api: Arc<OpenApiDoc>) -> impl IntoResponse {
    Json(api.as_ref().clone())
}
