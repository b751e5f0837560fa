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

use crate::{accounts, auth, commands, compat, notifications, operator, ops, payments, reset, users, SharedState};

/// Document-level metadata; the paths come from [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice ingest API", description = "Commands in (Avro on Kafka, 202 + status URL), state out (interactive queries). Errors are RFC 9457 problem+json."),
    modifiers(&BearerAuth),
    components(schemas(crate::problem::Problem)),
    tags((name = "auth", description = "Sign-up, login, tokens, profile"), (name = "commands", description = "Published to Kafka; answered 202"),
        (name = "queries", description = "Read from the processors' stores"),
        (name = "notifications", description = "The caller's notifications, read marks and their live stream"), (name = "operations", description = "Health, readiness, metrics"),
        (name = "operator", description = "The operator console: users, the dead-letter queue, topology, topics, consumer groups, instances (role operator)"),
        (name = "compatibility", description = "The routes of the systems Sluice replaces, mapped onto v1 (docs/compatibility.md)"))
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
        .routes(routes!(reset::request))
        .routes(routes!(reset::confirm))
        .routes(routes!(commands::transfer))
        .routes(routes!(commands::deposit))
        .routes(routes!(commands::withdraw))
        .routes(routes!(commands::refund))
        .routes(routes!(commands::verify_identity))
        .routes(routes!(commands::death_notification))
        .routes(routes!(accounts::command_status))
        .routes(routes!(accounts::my_account))
        .routes(routes!(accounts::my_transactions))
        .routes(routes!(payments::list))
        .routes(routes!(payments::get))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::mark_read))
        .routes(routes!(notifications::stream))
        .routes(routes!(users::lookup))
        .routes(routes!(compat::seed004_register))
        .routes(routes!(compat::seed004_login))
        .routes(routes!(compat::seed004_profile))
        .routes(routes!(compat::seed004_nhs_patients))
        .routes(routes!(compat::seed001::register))
        .routes(routes!(compat::seed001::token))
        .routes(routes!(compat::seed001::change_password))
        .routes(routes!(compat::seed001::verify))
        .routes(routes!(compat::seed001::check_user))
        .routes(routes!(compat::seed001::transfer))
        .routes(routes!(compat::seed001::transactions))
        .routes(routes!(compat::seed002::register))
        .routes(routes!(compat::seed002::login))
        .routes(routes!(compat::seed002::refresh))
        .routes(routes!(compat::seed002::logout))
        .routes(routes!(compat::seed002::me))
        .routes(routes!(compat::seed002::reset_password))
        .routes(routes!(compat::seed002::list, compat::seed002::create))
        .routes(routes!(compat::seed002::get))
        .routes(routes!(compat::seed002::refund))
        .routes(routes!(compat::seed002::service_health))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(operator::user))
        .routes(routes!(operator::dlq::list))
        .routes(routes!(operator::dlq::show))
        .routes(routes!(operator::dlq::replay))
        .routes(routes!(operator::dlq::discard))
        .routes(routes!(operator::kafka::topics))
        .routes(routes!(operator::kafka::topic))
        .routes(routes!(operator::kafka::records))
        .routes(routes!(operator::kafka::groups))
        .routes(routes!(operator::runtime::topology))
        .routes(routes!(operator::runtime::instances))
        .routes(routes!(operator::runtime::pause))
        .routes(routes!(operator::runtime::resume))
        .routes(routes!(operator::runtime::metrics))
}

/// `GET /openapi.json`.
pub async fn serve(api: Arc<OpenApiDoc>) -> impl IntoResponse {
    Json(api.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use sluice_processors::jwt::TokenUse;
    use sluice_processors::JwtKeys;
    use sluice_streams::interactive::{InteractiveQueries, LocalStores};
    use sluice_streams::Topology;
    use tower::ServiceExt;

    use crate::{ApiSettings, AppState, SharedState};

    const SECRET: &str = "a-test-secret-of-at-least-32-chars";

    /// The API over the repository's topology, a broker that is never reached and no running tasks.
    fn state(rate_limit_per_s: u32, burst: u32) -> SharedState {
        state_with_timeout(rate_limit_per_s, burst, Duration::from_secs(5))
    }

    fn state_with_timeout(rate_limit_per_s: u32, burst: u32, request_timeout: Duration) -> SharedState {
        let topology = Topology::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
        let pipeline = crate::pipeline_settings(&topology).unwrap();
        let internal = Arc::new(sluice_streams::signing::InternalKeys::new("i1", SECRET, "").unwrap());
        let iq = InteractiveQueries::new(Arc::new(topology), LocalStores::default(), "test", Some(Arc::clone(&internal)));
        Arc::new(AppState {
            keys: Arc::new(JwtKeys::hs256("sluice", "sluice-api", "k1", SECRET).unwrap()),
            queries: crate::queries::StoreQueries::new(iq, "test"),
            publisher: crate::publish::Publisher::new("127.0.0.1:1", ("http://127.0.0.1:1", None), internal).unwrap(),
            idempotency: Default::default(),
            limiter: crate::ops::RateLimiter::new(rate_limit_per_s, burst),
            lookup_limiter: crate::users::limiter(),
            login_guard: crate::login_guard::LoginGuard::new(2, crate::login_guard::SLOT_WAIT),
            settings: ApiSettings {
                access_ttl_s: 900,
                refresh_ttl_s: 3600,
                body_limit_bytes: 1024,
                request_timeout,
                pipeline,
                reset_ttl_s: 1800,
                reset_outbox: None,
            },
            metrics: None,
            users: None,
            reset_limiter: crate::reset::limiter(),
            notifications: None,
            console: None,
        })
    }

    async fn call(state: &SharedState, method: Method, path: &str, token: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = crate::app(Arc::clone(state)).oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn operator_routes_are_for_operators_only() {
        let state = state(0, 0);
        let now = sluice_streams::now_ms();
        // A service account that is not an operator (a user's token would need the stores).
        let user = state.keys.issue("hmrc-gateway", &["hmrc"], TokenUse::Access, now, 60, "t1").unwrap();
        let operator = state.keys.issue("back-office", &["operator"], TokenUse::Access, now, 60, "t2").unwrap();
        for (method, path) in [(Method::GET, "/v1/ops/dlq"), (Method::POST, "/v1/ops/dlq/0-1/replay"), (Method::GET, "/v1/ops/topics/payments.settled/records"), (Method::POST, "/v1/ops/processing/pause"), (Method::GET, "/v1/ops/users/a@b.c")] {
            assert_eq!(call(&state, method.clone(), path, None, r#"{"note": "x"}"#).await.0, StatusCode::UNAUTHORIZED, "{path} without a token");
            let (status, body) = call(&state, method.clone(), path, Some(&user), r#"{"note": "x"}"#).await;
            assert_eq!((status, body["type"].as_str().unwrap_or_default()), (StatusCode::FORBIDDEN, "https://sluice.dev/problems/operator-only"), "{path} as HMRC");
            // This state has no console (no broker): an operator learns that, nothing else.
            let (status, body) = call(&state, method, path, Some(&operator), r#"{"note": "x"}"#).await;
            assert_eq!((status, body["type"].as_str().unwrap_or_default()), (StatusCode::SERVICE_UNAVAILABLE, "https://sluice.dev/problems/console-unavailable"), "{path} as an operator");
        }
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed_and_nothing_else_is() {
        let state = state(0, 0);
        let doc = serde_json::to_value(super::routes().split_for_parts().1).unwrap();
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                operations.push(format!("{} {path}", method.to_uppercase()));
                let concrete = path.replace("{id}", "c-1");
                let (status, body) = call(&state, Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &concrete, None, "{}").await;
                let problem = body["type"].as_str().unwrap_or_default();
                assert!(!problem.ends_with("/not-found") && !problem.ends_with("/method-not-allowed"), "{method} {path} is documented but not routed: {status}");
            }
        }
        operations.sort();
        let expected = [
            "GET /api/auth/profile",
            "GET /api/nhs/patients",
            "GET /auth/me",
            "GET /check-user",
            "GET /health",
            "GET /metrics",
            "GET /payments",
            "GET /payments/{id}",
            "GET /ready",
            "GET /transactions",
            "GET /v1/accounts/me",
            "GET /v1/accounts/me/transactions",
            "GET /v1/auth/me",
            "GET /v1/commands/{id}",
            "GET /v1/notifications",
            "GET /v1/notifications/stream",
            "GET /v1/ops/dlq",
            "GET /v1/ops/dlq/{id}",
            "GET /v1/ops/groups",
            "GET /v1/ops/instances",
            "GET /v1/ops/metrics",
            "GET /v1/ops/topics",
            "GET /v1/ops/topics/{name}",
            "GET /v1/ops/topics/{name}/records",
            "GET /v1/ops/topology",
            "GET /v1/ops/users/{who}",
            "GET /v1/payments",
            "GET /v1/payments/{id}",
            "GET /v1/users/lookup",
            "GET /verify",
            "GET /{service}/health",
            "PATCH /v1/auth/me",
            "POST /api/auth/login",
            "POST /api/auth/register",
            "POST /auth/login",
            "POST /auth/logout",
            "POST /auth/refresh",
            "POST /auth/register",
            "POST /auth/reset-password",
            "POST /change-password",
            "POST /payments",
            "POST /payments/{id}/refund",
            "POST /register",
            "POST /token",
            "POST /transfer",
            "POST /v1/auth/change-password",
            "POST /v1/auth/login",
            "POST /v1/auth/logout",
            "POST /v1/auth/refresh",
            "POST /v1/auth/register",
            "POST /v1/auth/reset-password",
            "POST /v1/auth/reset-password/confirm",
            "POST /v1/deposits",
            "POST /v1/hmrc/death-notifications",
            "POST /v1/identity/verifications",
            "POST /v1/notifications/read",
            "POST /v1/ops/dlq/{id}/discard",
            "POST /v1/ops/dlq/{id}/replay",
            "POST /v1/ops/processing/pause",
            "POST /v1/ops/processing/resume",
            "POST /v1/payments/{id}/refund",
            "POST /v1/transfers",
            "POST /v1/withdrawals",
        ];
        assert_eq!(operations, expected);
        let (status, body) = call(&state, Method::GET, "/v1/unknown", None, "").await;
        assert_eq!((status, body["type"].as_str()), (StatusCode::NOT_FOUND, Some("https://sluice.dev/problems/not-found")));
        let (status, _) = call(&state, Method::GET, "/v1/transfers", None, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn a_principal_over_its_rate_gets_429_with_retry_after() {
        let state = state(1, 2);
        let token = state.keys.issue("ops", &["operator"], TokenUse::Access, sluice_streams::now_ms(), 60, "t").unwrap();
        // An incomplete deposit is refused after the rate check, so nothing is published.
        for _ in 0..2 {
            assert_eq!(call(&state, Method::POST, "/v1/deposits", Some(&token), "{}").await.0, StatusCode::UNPROCESSABLE_ENTITY);
        }
        let (status, body) = call(&state, Method::POST, "/v1/deposits", Some(&token), "{}").await;
        assert_eq!((status, body["type"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("https://sluice.dev/problems/rate-limited")));
        assert_eq!(body["retry_after_s"], 1);
        let other = state.keys.issue("ops-2", &["operator"], TokenUse::Access, sluice_streams::now_ms(), 60, "t").unwrap();
        assert_eq!(call(&state, Method::POST, "/v1/deposits", Some(&other), "{}").await.0, StatusCode::UNPROCESSABLE_ENTITY, "limits are per principal");
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_gets_503_request_timeout() {
        // /ready waits up to 2 s for a broker that is not there; the API gives up first.
        let state = state_with_timeout(0, 0, Duration::from_millis(200));
        let (status, problem) = call(&state, Method::GET, "/ready", None, "").await;
        assert_eq!((status, problem["type"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("https://sluice.dev/problems/request-timeout")), "{problem}");
        assert_eq!(problem["retry_after_s"], 1);
    }

    #[tokio::test]
    async fn a_broker_that_is_down_gives_503_and_nothing_half_written() {
        let state = state(0, 0);
        let token = state.keys.issue("ops", &["operator"], TokenUse::Access, sluice_streams::now_ms(), 60, "t").unwrap();
        let user = sluice_processors::model::user_id_for_email("a@b.co");
        let body = format!(r#"{{"user_id": "{user}", "amount": "10.00"}}"#);
        let (status, problem) = call(&state, Method::POST, "/v1/deposits", Some(&token), &body).await;
        assert_eq!((status, problem["type"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("https://sluice.dev/problems/registry-unavailable")), "{problem}");
        let (status, problem) = call(&state, Method::GET, "/ready", None, "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("broker") && detail.contains("schema registry") && detail.contains("stores"), "{detail}");
    }
}
