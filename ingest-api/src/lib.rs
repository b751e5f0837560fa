//! `sluice-ingest`: the thin axum HTTP front door of Sluice.
//!
//! - [`auth`]: sign-up, login, token refresh, logout, password change and the caller's profile;
//!   the principal of every authenticated request.
//! - [`commands`]: money movement, identity and HMRC commands, Avro-encoded through the Schema
//!   Registry and produced with `acks=all` ([`publish`]); `Idempotency-Key` handling.
//! - [`accounts`]: command status, balance and history, read from the processors' stores
//!   through interactive queries ([`queries`]); [`payments`]: payments with their lifecycle.
//! - [`ops`]: `/health`, `/ready`, `/metrics`, the access log, request timeouts and the
//!   per-principal rate limit.
//! - [`problem`]: RFC 9457 `application/problem+json` errors; [`body`]: the JSON body extractor
//!   that answers with them.
//! - [`openapi`]: the OpenAPI 3 document, generated from the handlers' annotations.
//! - [`notifications`]: the caller's notifications, read marks and their live stream (SSE).
//! - [`reset`]: password reset through a single-use token delivered to the account holder.
//! - [`console`]: the web console at `/`.
//! - [`docs`]: Swagger UI at `/docs`.

pub mod accounts;
pub mod auth;
pub mod body;
pub mod commands;
pub mod compat;
pub mod console;
pub mod docs;
pub mod login_guard;
pub mod notifications;
pub mod openapi;
pub mod operator;
pub mod ops;
pub mod payments;
pub mod problem;
pub mod publish;
pub mod queries;
pub mod reset;
pub mod users;
pub mod users_view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_processors::{JwtKeys, PipelineSettings};

/// The ingest API's settings (the `http_*` and `jwt_*_ttl_s` keys of sluice.toml).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Lifetime of access tokens, seconds.
    pub access_ttl_s: u64,
    /// Lifetime of refresh tokens, seconds.
    pub refresh_ttl_s: u64,
    /// Largest request body, bytes.
    pub body_limit_bytes: usize,
    /// Longest time spent on one request.
    pub request_timeout: Duration,
    /// The pipeline's business settings (currency).
    pub pipeline: PipelineSettings,
    /// Lifetime of password reset tokens, seconds.
    pub reset_ttl_s: u64,
    /// Where password reset tokens are delivered; without one, resets are unavailable.
    pub reset_outbox: Option<reset::Outbox>,
}

/// Everything a handler needs.
pub struct AppState {
    /// Signs and checks tokens.
    pub keys: Arc<JwtKeys>,
    /// Reads the processors' stores.
    pub queries: queries::StoreQueries,
    /// Produces commands and access-log records.
    pub publisher: publish::Publisher,
    /// Idempotency keys seen, and commands recently accepted.
    pub idempotency: commands::IdempotencyTable,
    /// Per-principal token buckets (`http_rate_limit_per_s`, `http_rate_limit_burst`).
    pub limiter: ops::RateLimiter,
    /// Per-caller buckets of payee lookups ([`users::limiter`]).
    pub lookup_limiter: ops::RateLimiter,
    /// Bounds on password checks: concurrent argon2 work, failed logins per account.
    pub login_guard: login_guard::LoginGuard,
    /// Settings.
    pub settings: ApiSettings,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The API's own replica of the `users` store, answering when the processors cannot.
    pub users: Option<users_view::UsersView>,
    /// Per-account buckets of password reset requests ([`reset::limiter`]).
    pub reset_limiter: ops::RateLimiter,
    /// Wakes the notification streams ([`notifications::Feed`]); none: no live stream.
    pub notifications: Option<notifications::Feed>,
    /// The operator console's Kafka and runtime views ([`operator`]); none: 503 on its routes.
    pub console: Option<Arc<operator::Console>>,
}

/// Shared state of the handlers.
pub type SharedState = Arc<AppState>;

/// The whole API: routes, OpenAPI document, limits and observability.
pub fn app(state: SharedState) -> Router {
    let (router, api) = openapi::routes().split_for_parts();
    let api = Arc::new(api);
    router
        .route("/openapi.json", axum::routing::get(move || openapi::serve(Arc::clone(&api))))
        .merge(console::routes())
        .merge(compat::seed000::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), ops::observe))
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.body_limit_bytes))
        .with_state(state)
        .merge(docs::routes())
}

/// The pipeline settings the API checks commands against: the currencies of `auth-validation`
/// and the opening balance of `balance-check`, as topology.toml configures them.
pub fn pipeline_settings(topology: &sluice_streams::Topology) -> Result<PipelineSettings, String> {
    use sluice_processors::{auth_validation, balance_check};
    use sluice_streams::topology::NodeKind;
    let mut settings = PipelineSettings::default();
    for node in &topology.nodes {
        let NodeKind::Processor { kind, config, .. } = &node.kind else { continue };
        if kind == auth_validation::KIND {
            let gate = PipelineSettings::from_table(config, auth_validation::CONFIG_KEYS)?;
            (settings.currency, settings.currencies) = (gate.currency, gate.currencies);
        } else if kind == balance_check::KIND {
            settings.opening_balance = PipelineSettings::from_table(config, balance_check::CONFIG_KEYS)?.opening_balance;
        }
    }
    Ok(settings)
}

/// Serves `state`'s API on `listener` until `shutdown` resolves, then flushes the producer.
pub async fn serve(listener: tokio::net::TcpListener, state: SharedState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let service = app(Arc::clone(&state)).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let outcome = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    state.publisher.flush(publish::DELIVERY_TIMEOUT);
    outcome
}
