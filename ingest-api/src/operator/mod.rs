//! The operator console's API (role `operator`, docs/operations.md): find a user and see
//! their account; the dead-letter queue ([`dlq`]); and the operations view: the running
//! topology, topics with their decoded records, consumer groups with their lag ([`kafka`]),
//! the instances and their tasks, pausing processing, and throughput and latency series
//! ([`runtime`]).
//!
//! The console reads Kafka as its own principal (`kafka_client::Role::Console`), which may
//! read every topic but the users changelog, and write only the topics a replay or an audit
//! record goes to.

pub mod dlq;
pub mod kafka;
pub mod runtime;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use sluice_processors::model::{self, roles};
use sluice_schemas::Codec;
use sluice_streams::{StreamsHandle, Topology};
use utoipa::ToSchema;

use crate::accounts::{AccountResponse, PageParams, TransactionsPage};
use crate::auth::{Caller, ProfileResponse};
use crate::problem::Problem;
use crate::SharedState;

/// What the operator endpoints need beyond the API's own state.
pub struct Console {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// The application id (the processors' consumer group, the prefix of internal topics).
    pub application_id: String,
    /// The topology the processors run (the same file).
    pub topology: Arc<Topology>,
    /// Decodes records through the Schema Registry, encodes the console's own records.
    pub codec: Codec,
    /// Replays and audit records, as the console's principal.
    pub producer: FutureProducer,
    /// The processors of this process, when it runs them (`sluice dev`): pause and resume,
    /// their threads' tasks.
    pub local: Option<StreamsHandle>,
    /// Throughput and latency, sampled from this process's metrics.
    pub sampler: runtime::Sampler,
    /// One DLQ decision at a time in this process (a dead letter is replayed at most once).
    pub dlq_lock: tokio::sync::Mutex<()>,
}

impl Console {
    /// The console on `bootstrap_servers`, decoding through the registry at `registry`.
    pub fn new(bootstrap_servers: &str, application_id: &str, topology: Arc<Topology>, registry: (&str, Option<&str>), local: Option<StreamsHandle>) -> Result<Console, String> {
        let producer: FutureProducer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Console, bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", crate::publish::DELIVERY_TIMEOUT.as_millis().to_string())
            .set("client.id", "sluice-console")
            .create()
            .map_err(|e| format!("cannot create the console's Kafka producer: {e}"))?;
        let codec = Codec::new(registry.0, registry.1).map_err(|e| e.to_string())?;
        Ok(Console {
            bootstrap_servers: bootstrap_servers.to_string(),
            application_id: application_id.to_string(),
            topology,
            codec,
            producer,
            local,
            sampler: runtime::Sampler::default(),
            dlq_lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// The console of `state`, for an operator: 403 for anyone else, 503 when the API was started
/// without it.
pub fn console<'a>(state: &'a SharedState, caller: &Caller) -> Result<&'a Console, Problem> {
    if !caller.claims.has_role(roles::OPERATOR) {
        return Err(Problem::new(StatusCode::FORBIDDEN, "operator-only", "Operators only", "this needs an operator token (`sluice token --role operator`)"));
    }
    state.console.as_deref().ok_or_else(|| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "console-unavailable", "Console unavailable", "this API was started without the operator console"))
}

/// A user as an operator sees them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserOverview {
    /// The profile (no credentials).
    pub user: ProfileResponse,
    /// Their account.
    pub account: AccountResponse,
    /// A page of their transactions, newest first.
    pub transactions: TransactionsPage,
}

/// A user found by email or user id, with their account and history.
#[utoipa::path(get, path = "/v1/ops/users/{who}", tag = "operator", security(("bearer" = [])),
    params(("who" = String, Path, description = "Email address or user id"), PageParams),
    responses((status = 200, body = UserOverview), (status = 403, body = Problem), (status = 404, body = Problem, description = "user-not-found")))]
pub async fn user(State(state): State<SharedState>, caller: Caller, Path(who): Path<String>, Query(page): Query<PageParams>) -> Result<Json<UserOverview>, Problem> {
    console(&state, &caller)?;
    let who = who.trim();
    let user_id = if who.contains('@') { model::user_id_for_email(&model::normalise_email(who)) } else { who.to_string() };
    let Some(user) = crate::auth::read_user(&state, &user_id).await? else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "user-not-found", "No such user", format!("no user has the email or id `{who}`")));
    };
    let account = crate::accounts::account_of(&state, &user).await?;
    let transactions = crate::accounts::transactions_of(&state, &user.user_id, &page).await?;
    Ok(Json(UserOverview { user: ProfileResponse::from(&user), account, transactions }))
}
