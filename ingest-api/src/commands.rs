//! Commands: each endpoint checks its body and the caller's right to act, builds the Avro
//! envelope, publishes it to its command topic keyed as docs/architecture.md (topics and keys) says, and answers `202 Accepted`
//! with the command id and a status URL. The pipeline decides the rest (funds, KYC, payees).
//!
//! `Idempotency-Key`: the command id is derived from the caller, the key and the request's
//! fingerprint, so a retry of the same request is the same command (one effect: the
//! processors drop a repeated event id). The same key with a different body is refused with
//! 422 while this instance remembers the key (24 h); after that, or on another instance, the
//! pipeline refuses it as `duplicate_command`, so it never has a second effect either.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_processors::identifiers;
use sluice_processors::model::{self, roles, stores, CommandState, CommandStatus};
use sluice_schemas::types::{
    DeathNotification, Deposit, HmrcCommand, HmrcPayload, IdentifierType, IdentityCommand, IdentityPayload, PaymentCommand, PaymentPayload, Principal, Refund, Transfer, VerifyIdentity,
    Withdrawal,
};
use sluice_schemas::{AvroRecord, Date, TimestampMillis};
use sluice_streams::metrics as names;
use sluice_streams::now_ms;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::ApiJson;
use crate::problem::Problem;
use crate::SharedState;

/// Topic of payment commands.
pub const PAYMENTS_TOPIC: &str = "payments.commands";
/// Topic of identity verification requests.
pub const IDENTITY_TOPIC: &str = "identity.verification.request";
/// Topic of HMRC death notifications.
pub const HMRC_TOPIC: &str = "hmrc.death.notification";
/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set on a 202 that answers a retried request without publishing again.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long idempotency keys are remembered (like the pipeline's dedupe retention).
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most keys and accepted commands remembered; the oldest are forgotten first.
pub const IDEMPOTENCY_CAPACITY: usize = 200_000;
/// Longest idempotency key accepted.
const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
/// Longest free-text reference accepted.
const REFERENCE_MAX_CHARS: usize = 140;

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The command id (also its `event_id` on the topic).
    pub command_id: String,
    /// Where its outcome appears: pending, then settled or rejected with a reason.
    pub status_url: String,
    /// `accepted`.
    pub status: String,
}

/// The command id of a [`submit`] answer that accepted the command, with the answer itself
/// (rebuilt); `Err` with any other answer, unchanged.
pub async fn accepted_command_id(answer: Response) -> Result<Result<(String, Response), Response>, Problem> {
    if answer.status() != StatusCode::ACCEPTED {
        return Ok(Err(answer));
    }
    let (parts, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|e| Problem::internal(e.to_string()))?;
    let accepted: Accepted = serde_json::from_slice(&bytes).map_err(|e| Problem::internal(format!("unreadable 202 answer: {e}")))?;
    Ok(Ok((accepted.command_id, Response::from_parts(parts, axum::body::Body::from(bytes)))))
}

/// The final status (settled or rejected) of `user_id`'s command `command_id`, once the
/// pipeline decided it; `None` if it has not within `wait`.
pub async fn wait_for_status(state: &SharedState, user_id: &str, command_id: &str, wait: std::time::Duration) -> Option<CommandStatus> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let served = state.queries.get_on(stores::COMMAND_STATUS, user_id, &model::status_key(user_id, command_id)).await;
        if let Ok(Some(status)) = served.map(|s| s.value.and_then(|b| serde_json::from_slice::<CommandStatus>(&b).ok())) {
            if status.status != CommandState::Pending {
                return Some(status);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What [`submit`] publishes, besides the envelope.
pub struct Submission {
    /// Command type name, e.g. `Transfer` (metrics, fingerprint).
    pub command_type: &'static str,
    /// Command topic.
    pub topic: &'static str,
    /// Record key (docs/architecture.md, topics and keys).
    pub key: String,
    /// The caller's subject (scopes idempotency keys).
    pub subject: String,
    /// Query string of the status URL when the key is not the caller's own user id,
    /// e.g. `user_id=u_...` or `nin=QQ123456C`.
    pub status_query: Option<String>,
}

/// Publishes the envelope `build(command_id, idempotency_key)` once, honouring `Idempotency-Key`.
pub async fn submit<T: AvroRecord>(
    state: &SharedState,
    headers: &HeaderMap,
    submission: Submission,
    request: &impl Serialize,
    build: impl FnOnce(String, Option<String>) -> T,
) -> Result<Response, Problem> {
    let idempotency_key = idempotency_key(headers)?;
    // Only a request with a key needs its fingerprint.
    let (fingerprint, command_id) = match &idempotency_key {
        Some(key) => {
            let fingerprint = fingerprint(submission.command_type, &submission.key, request);
            let command_id = derived_id(&submission.subject, key, &fingerprint);
            (fingerprint, command_id)
        }
        None => (String::new(), format!("c-{}", uuid::Uuid::new_v4().simple())),
    };
    let status_url = match &submission.status_query {
        Some(query) => format!("/v1/commands/{command_id}?{query}"),
        None => format!("/v1/commands/{command_id}"),
    };
    if let Some(key) = &idempotency_key {
        match state.idempotency.seen(&submission.subject, key, &fingerprint) {
            Seen::Never => {}
            Seen::SameRequest(id) => return Ok(accepted(&id, &status_url, true)),
            Seen::OtherRequest => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                    format!("Idempotency-Key `{key}` was used for a different request; use a new key for a new request"),
                ));
            }
        }
    }
    let record = build(command_id.clone(), idempotency_key.clone());
    state.publisher.publish(submission.topic, &submission.key, &record, &[("sluice.command.type", submission.command_type)]).await?;
    if let Some(key) = &idempotency_key {
        state.idempotency.remember(&submission.subject, key, &fingerprint, &command_id);
    }
    state.idempotency.accepted(&command_id, &submission.key, submission.command_type);
    metrics::counter!(names::HTTP_COMMANDS_TOTAL, "type" => submission.command_type).increment(1);
    Ok(accepted(&command_id, &status_url, false))
}

fn accepted(command_id: &str, status_url: &str, replayed: bool) -> Response {
    let body = Accepted { command_id: command_id.to_string(), status_url: status_url.to_string(), status: "accepted".to_string() };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_MAX_LEN && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key", format!("an Idempotency-Key is 1 to {IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"))
    })
}

/// SHA-256 of the command type, key and canonical request JSON.
fn fingerprint(command_type: &str, key: &str, request: &impl Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(command_type.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    hex(&hasher.finalize())
}

/// The command id of a request with an idempotency key: the same for a retry of the same request.
fn derived_id(subject: &str, key: &str, fingerprint: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [subject, key, fingerprint] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("c-{}", &hex(&hasher.finalize())[..32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the idempotency table knows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not used (or forgotten).
    Never,
    /// Used for the same request: its command id.
    SameRequest(String),
    /// Used for another request.
    OtherRequest,
}

/// A command this instance accepted: which key (partition) its status is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCommand {
    /// The record key.
    pub key: String,
    /// Command type name.
    pub command_type: &'static str,
}

/// Idempotency keys (by caller) and recently accepted commands, bounded in size and age.
#[derive(Default)]
pub struct IdempotencyTable {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    keys: HashMap<(String, String), (String, String, Instant)>,
    key_order: VecDeque<(String, String)>,
    commands: HashMap<String, AcceptedCommand>,
    command_order: VecDeque<String>,
}

impl IdempotencyTable {
    /// Whether `subject` used `key`, and for which request.
    pub fn seen(&self, subject: &str, key: &str, fingerprint: &str) -> Seen {
        let tables = self.inner.lock().expect("idempotency lock");
        match tables.keys.get(&(subject.to_string(), key.to_string())) {
            Some((_, _, at)) if at.elapsed() > IDEMPOTENCY_RETENTION => Seen::Never,
            Some((print, id, _)) if print == fingerprint => Seen::SameRequest(id.clone()),
            Some(_) => Seen::OtherRequest,
            None => Seen::Never,
        }
    }

    /// Records that `subject` used `key` for the request `fingerprint`, published as `command_id`.
    pub fn remember(&self, subject: &str, key: &str, fingerprint: &str, command_id: &str) {
        let mut tables = self.inner.lock().expect("idempotency lock");
        let entry = (subject.to_string(), key.to_string());
        if tables.keys.insert(entry.clone(), (fingerprint.to_string(), command_id.to_string(), Instant::now())).is_none() {
            tables.key_order.push_back(entry);
        }
        while tables.key_order.len() > IDEMPOTENCY_CAPACITY {
            if let Some(oldest) = tables.key_order.pop_front() {
                tables.keys.remove(&oldest);
            }
        }
    }

    /// Records an accepted command, so its status reads `accepted` until the pipeline writes one.
    pub fn accepted(&self, command_id: &str, key: &str, command_type: &'static str) {
        let mut tables = self.inner.lock().expect("idempotency lock");
        if tables.commands.insert(command_id.to_string(), AcceptedCommand { key: key.to_string(), command_type }).is_none() {
            tables.command_order.push_back(command_id.to_string());
        }
        while tables.command_order.len() > IDEMPOTENCY_CAPACITY {
            if let Some(oldest) = tables.command_order.pop_front() {
                tables.commands.remove(&oldest);
            }
        }
    }

    /// A command this instance accepted recently.
    pub fn accepted_command(&self, command_id: &str) -> Option<AcceptedCommand> {
        self.inner.lock().expect("idempotency lock").commands.get(command_id).cloned()
    }
}

/// `POST /v1/transfers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The payee's user id; or give `payee_email`.
    pub payee_user_id: Option<String>,
    /// The payee's email (the user id is derived from it).
    pub payee_email: Option<String>,
    /// Positive, at most two decimal places: a string (`"12.50"`) or a JSON number (`12.50`),
    /// read exactly from the JSON text.
    #[schema(value_type = String, example = "12.50")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's currency.
    pub currency: Option<String>,
    /// Free text shown to both parties (140 characters at most).
    pub reference: Option<String>,
    /// The paying account; default the caller's (only operators may name another).
    pub user_id: Option<String>,
}

/// `POST /v1/deposits` (operators only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The account credited.
    pub user_id: String,
    /// Positive, at most two decimal places: a string or a JSON number, read exactly.
    #[schema(value_type = String, example = "100.00")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's currency.
    pub currency: Option<String>,
    /// Free text.
    pub reference: Option<String>,
}

/// `POST /v1/withdrawals`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    /// Positive, at most two decimal places: a string or a JSON number, read exactly.
    #[schema(value_type = String, example = "20.00")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's currency.
    pub currency: Option<String>,
    /// Free text.
    pub reference: Option<String>,
    /// The account debited; default the caller's (only operators may name another).
    pub user_id: Option<String>,
}

/// `POST /v1/payments/{id}/refund`: the payee of a settled transfer sends (part of) it back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// At most what is left of the transfer: a string or a JSON number, read exactly.
    #[schema(value_type = String, example = "5.00")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's currency.
    pub currency: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /v1/identity/verifications`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequest {
    /// `NIN` (National Insurance number) or `NHS` (NHS number).
    #[serde(rename = "type")]
    #[schema(example = "NIN")]
    pub identifier_type: String,
    /// The identifier; spaces allowed.
    #[schema(example = "AB 12 34 56 C")]
    pub value: String,
    /// The holder's full name as on the document: must match the profile's.
    #[schema(example = "Alice Smith")]
    pub full_name: String,
    /// The holder's date of birth, `YYYY-MM-DD`: must match the profile's.
    #[schema(example = "1990-04-01")]
    pub date_of_birth: String,
}

/// `POST /v1/hmrc/death-notifications` (role `hmrc`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeathNotificationRequest {
    /// National Insurance number of the deceased; or give `nhs_number`.
    #[schema(example = "AB123456C")]
    pub nin: Option<String>,
    /// NHS number of the deceased (ten digits), instead of a NIN.
    #[schema(example = "9434765919")]
    pub nhs_number: Option<String>,
    /// `YYYY-MM-DD`.
    #[schema(example = "2026-11-01")]
    pub date_of_death: String,
    /// HMRC's reference.
    pub reference: String,
}

/// Send money to another user.
#[utoipa::path(post, path = "/v1/transfers", tag = "commands", security(("bearer" = [])), request_body = TransferRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body give the same command")),
    responses((status = 202, body = Accepted), (status = 401, body = Problem), (status = 403, body = Problem, description = "forbidden"),
        (status = 422, body = Problem, description = "invalid-amount, unsupported-currency, invalid-payee, idempotency-key-reused, invalid-body"),
        (status = 429, body = Problem), (status = 503, body = Problem, description = "broker-unavailable, registry-unavailable")))]
pub async fn transfer(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<TransferRequest>) -> Result<Response, Problem> {
    let payer = acting_account(&caller, request.user_id.as_deref())?;
    let (amount, currency) = money(&state, request.amount.text(), request.currency.as_deref(), request.reference.as_deref())?;
    let payee = match (&request.payee_user_id, &request.payee_email) {
        (Some(id), None) if is_user_id(id) => id.clone(),
        (None, Some(email)) if model::is_plausible_email(&model::normalise_email(email)) => model::user_id_for_email(email),
        _ => return Err(invalid_payee("give the payee as payee_user_id (u_ + 20 hex digits) or payee_email")),
    };
    if payee == payer {
        return Err(invalid_payee("a transfer needs a payee other than the payer"));
    }
    let principal = caller.principal();
    let submission = payment_submission("Transfer", &caller, &payer);
    let payload = PaymentPayload::Transfer(Transfer { payee_user_id: payee, amount, currency, reference: request.reference.clone() });
    submit(&state, &headers, submission, &request, payment_command(principal, payload)).await
}

/// Credit an account with money from outside (role `operator`).
#[utoipa::path(post, path = "/v1/deposits", tag = "commands", security(("bearer" = [])), request_body = DepositRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 403, body = Problem, description = "forbidden: operators only"), (status = 422, body = Problem)))]
pub async fn deposit(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<DepositRequest>) -> Result<Response, Problem> {
    if !caller.claims.has_role(roles::OPERATOR) {
        return Err(forbidden("only an operator may deposit"));
    }
    if !is_user_id(&request.user_id) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-user-id", "Invalid user id", format!("`{}` is not a user id (u_ + 20 hex digits)", request.user_id)));
    }
    let (amount, currency) = money(&state, request.amount.text(), request.currency.as_deref(), request.reference.as_deref())?;
    let principal = caller.principal();
    let submission = payment_submission("Deposit", &caller, &request.user_id);
    let payload = PaymentPayload::Deposit(Deposit { amount, currency, reference: request.reference.clone() });
    submit(&state, &headers, submission, &request, payment_command(principal, payload)).await
}

/// Pay money out of an account.
#[utoipa::path(post, path = "/v1/withdrawals", tag = "commands", security(("bearer" = [])), request_body = WithdrawalRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn withdraw(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<WithdrawalRequest>) -> Result<Response, Problem> {
    let account = acting_account(&caller, request.user_id.as_deref())?;
    let (amount, currency) = money(&state, request.amount.text(), request.currency.as_deref(), request.reference.as_deref())?;
    let principal = caller.principal();
    let submission = payment_submission("Withdrawal", &caller, &account);
    let payload = PaymentPayload::Withdrawal(Withdrawal { amount, currency, reference: request.reference.clone() });
    submit(&state, &headers, submission, &request, payment_command(principal, payload)).await
}

/// Send (part of) a settled transfer back to its payer; the caller must be its payee.
#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "commands", security(("bearer" = [])), request_body = RefundRequest,
    params(("id" = String, Path, description = "Command id of the settled transfer"), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 422, body = Problem)))]
pub async fn refund(State(state): State<SharedState>, caller: Caller, Path(payment_id): Path<String>, headers: HeaderMap, ApiJson(request): ApiJson<RefundRequest>) -> Result<Response, Problem> {
    let payee = caller.user()?.user_id.clone();
    // A refund is in the transfer's currency: the one received, unless the request names one.
    let received_in = match &request.currency {
        Some(_) => None,
        None => crate::payments::find_on(&state, &payee, sluice_processors::payments::Side::Payee, &payment_id).await.ok().flatten().map(|p| p.currency),
    };
    let currency_code = request.currency.as_deref().or(received_in.as_deref());
    let (amount, currency) = money(&state, request.amount.text(), currency_code, request.reason.as_deref())?;
    let principal = caller.principal();
    let submission = payment_submission("Refund", &caller, &payee);
    let payload = PaymentPayload::Refund(Refund { payment_id: payment_id.clone(), amount, currency, reason: request.reason.clone() });
    let fingerprinted = (&payment_id, &request);
    submit(&state, &headers, submission, &fingerprinted, payment_command(principal, payload)).await
}

/// Verify a UK identifier (NIN or NHS number) with the holder's name and date of birth, which
/// must match the profile; one identity per account; success raises KYC to FULL.
#[utoipa::path(post, path = "/v1/identity/verifications", tag = "commands", security(("bearer" = [])), request_body = VerificationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 422, body = Problem, description = "invalid-identifier, invalid-date")))]
pub async fn verify_identity(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<VerificationRequest>) -> Result<Response, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let identifier_type = identifier(&request.identifier_type, &request.value)?;
    let date_of_birth = Date::from_str(&request.date_of_birth).map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-date", "Invalid date", format!("date_of_birth: {e}")))?;
    let principal = caller.principal();
    let submission = Submission { command_type: "VerifyIdentity", topic: IDENTITY_TOPIC, key: user_id.clone(), subject: user_id, status_query: None };
    let payload = IdentityPayload::VerifyIdentity(VerifyIdentity {
        identifier_type,
        value: request.value.clone(),
        full_name: Some(request.full_name.trim().to_string()),
        date_of_birth: Some(date_of_birth),
    });
    submit(&state, &headers, submission, &request, |event_id, idempotency_key| IdentityCommand { event_id, occurred_at: TimestampMillis(now_ms()), principal, idempotency_key, payload }).await
}

/// Report the death of a NIN's holder (role `hmrc`); freezes the account of its verified holder.
#[utoipa::path(post, path = "/v1/hmrc/death-notifications", tag = "commands", security(("bearer" = [])), request_body = DeathNotificationRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 403, body = Problem, description = "forbidden: hmrc only"), (status = 422, body = Problem, description = "invalid-identifier, invalid-date")))]
pub async fn death_notification(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<DeathNotificationRequest>,
) -> Result<Response, Problem> {
    if !caller.claims.has_role(roles::HMRC) {
        return Err(forbidden("only HMRC (role hmrc) may post death notifications"));
    }
    if request.nin.is_none() && request.nhs_number.is_none() {
        return Err(invalid_identifier("give the deceased's `nin` or `nhs_number`".to_string()));
    }
    let nin = request.nin.clone().unwrap_or_default();
    let (kind, value) = identifiers::death_identifier(&nin, request.nhs_number.as_deref()).map_err(|e| invalid_identifier(e.to_string()))?;
    let date_of_death = Date::from_str(&request.date_of_death).map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-date", "Invalid date", e.to_string()))?;
    if request.reference.trim().is_empty() || request.reference.chars().count() > REFERENCE_MAX_CHARS {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-reference", "Invalid reference", format!("reference must be 1 to {REFERENCE_MAX_CHARS} characters")));
    }
    let principal = caller.principal();
    let key = model::identifier_key(kind, &value);
    let (status_query, payload) = match kind {
        IdentifierType::Nin => (format!("nin={value}"), DeathNotification { nin: value, nhs_number: None, date_of_death, reference: request.reference.clone() }),
        IdentifierType::Nhs => (format!("nhs_number={value}"), DeathNotification { nin: String::new(), nhs_number: Some(value), date_of_death, reference: request.reference.clone() }),
    };
    let submission = Submission { command_type: "DeathNotification", topic: HMRC_TOPIC, key, subject: caller.claims.sub.clone(), status_query: Some(status_query) };
    let payload = HmrcPayload::DeathNotification(payload);
    submit(&state, &headers, submission, &request, |event_id, idempotency_key| HmrcCommand { event_id, occurred_at: TimestampMillis(now_ms()), principal, idempotency_key, payload }).await
}

/// The envelope of a payment command, built once its id and idempotency key are known.
fn payment_command(principal: Principal, payload: PaymentPayload) -> impl FnOnce(String, Option<String>) -> PaymentCommand {
    move |event_id, idempotency_key| PaymentCommand { event_id, occurred_at: TimestampMillis(now_ms()), principal, idempotency_key, payload }
}

fn payment_submission(command_type: &'static str, caller: &Caller, account: &str) -> Submission {
    let status_query = (account != caller.claims.sub).then(|| format!("user_id={account}"));
    Submission { command_type, topic: PAYMENTS_TOPIC, key: account.to_string(), subject: caller.claims.sub.clone(), status_query }
}

/// The account a command acts on: the caller's own, or one an operator names.
fn acting_account(caller: &Caller, named: Option<&str>) -> Result<String, Problem> {
    match named {
        None => Ok(caller.user()?.user_id.clone()),
        Some(user_id) if caller.may_act_for(user_id) => Ok(user_id.to_string()),
        Some(user_id) => Err(forbidden(&format!("`{}` may not act on the account of `{user_id}`", caller.claims.sub))),
    }
}

/// True for ids of the form Sluice derives: `u_` and 20 lower-case hex digits.
pub fn is_user_id(id: &str) -> bool {
    id.strip_prefix("u_").is_some_and(|hex| hex.len() == 20 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// An amount as a request carries it: a JSON string (`"12.50"`) or a JSON number (`12.50`,
/// `5000`), kept as its exact text (a number is never read through a float); [`amount`] checks
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    /// The amount's text as sent (a string's contents, or the number's digits).
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Amount {
    fn from(text: &str) -> Amount {
        Amount(text.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        use serde::de::Error;
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        match text.bytes().next() {
            Some(b'"') => serde_json::from_str::<String>(text).map(Amount).map_err(D::Error::custom),
            Some(b'-' | b'0'..=b'9') => Ok(Amount(text.to_string())),
            _ => Err(D::Error::custom(format!("amount: expected a decimal string such as \"12.50\" or a number such as 12.50, got {text}"))),
        }
    }
}

impl Amount {
    /// The amount `amount`, written exactly.
    pub fn exact(amount: &Decimal) -> Amount {
        Amount(amount.to_string())
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// An amount as the API takes it: a decimal (from a string or a JSON number), positive, at most
/// `minor_units` decimal places (the currency's), 16 integer digits at most. Exponents (`1e3`)
/// are refused.
pub fn amount(text: &str, minor_units: u32) -> Result<Decimal, Problem> {
    let invalid = |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-amount", "Invalid amount", detail);
    let not_decimal = || invalid(format!("`{text}` is not a decimal amount such as \"12.50\" or 12.50"));
    let digits = text.trim().strip_prefix('-').unwrap_or(text.trim());
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    if whole.is_empty() || fraction.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    let amount = Decimal::from_str(text.trim()).map_err(|_| invalid(format!("`{text}` is out of range for an amount (16 integer digits and two decimal places at most)")))?;
    model::check_amount(amount, minor_units).map_err(invalid)?;
    Ok(amount)
}

/// The amount and currency of a payment, and its free text, checked: the currency one accounts
/// may hold (default the pipeline's), the amount within its minor units.
pub fn money(state: &SharedState, amount_text: &str, currency_code: Option<&str>, text: Option<&str>) -> Result<(Decimal, String), Problem> {
    let code = currency(state, currency_code)?;
    let minor_units = state.settings.pipeline.minor_units(&code).unwrap_or(2);
    let checked = amount(amount_text, minor_units)?;
    check_reference(text)?;
    Ok((checked, code))
}

fn currency(state: &SharedState, given: Option<&str>) -> Result<String, Problem> {
    let pipeline = &state.settings.pipeline;
    match given.map(str::trim) {
        None => Ok(pipeline.currency.clone()),
        Some(code) if pipeline.minor_units(code).is_some() => Ok(code.to_string()),
        Some(code) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported-currency",
            "Unsupported currency",
            format!("accounts hold {}, not `{code}`", pipeline.currency_list()),
        )),
    }
}

fn check_reference(reference: Option<&str>) -> Result<(), Problem> {
    match reference {
        Some(text) if text.chars().count() > REFERENCE_MAX_CHARS || text.chars().any(char::is_control) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-reference",
            "Invalid reference",
            format!("a reference is at most {REFERENCE_MAX_CHARS} printable characters"),
        )),
        _ => Ok(()),
    }
}

fn invalid_payee(detail: &str) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-payee", "Invalid payee", detail)
}

/// The type of an identifier claim (`NIN` or `NHS`), its value checked: 422
/// `invalid-identifier` otherwise.
pub fn identifier(kind: &str, value: &str) -> Result<IdentifierType, Problem> {
    let identifier_type = match kind {
        "NIN" => IdentifierType::Nin,
        "NHS" => IdentifierType::Nhs,
        other => return Err(invalid_identifier(format!("type must be NIN or NHS, got `{other}`"))),
    };
    identifiers::normalise(identifier_type, value).map_err(|e| invalid_identifier(e.to_string()))?;
    Ok(identifier_type)
}

fn invalid_identifier(detail: String) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-identifier", "Invalid identifier", detail)
}

/// A 403 `forbidden`.
pub fn forbidden(detail: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_strings_positive_and_cent_precise() {
        assert_eq!(amount("12.50", 2).unwrap(), Decimal::new(1250, 2));
        for (bad, needle) in [("-1.00", "positive"), ("0", "positive"), ("1.001", "two decimal places"), ("12,50", "not a decimal"), ("1e3", "not a decimal")] {
            let problem = amount(bad, 2).unwrap_err();
            assert_eq!(problem.type_uri, "https://sluice.dev/problems/invalid-amount");
            assert!(problem.detail.contains(needle), "{bad}: {}", problem.detail);
        }
    }

    #[test]
    fn amounts_come_as_strings_or_numbers_read_exactly_from_the_json_text() {
        let transfer = |body: &str| serde_json::from_str::<WithdrawalRequest>(body).map(|r| r.amount);
        assert_eq!(transfer(r#"{"amount": "12.50"}"#).unwrap().text(), "12.50");
        assert_eq!(transfer(r#"{"amount": 12.50}"#).unwrap().text(), "12.50", "the number's digits, not a float's");
        assert_eq!(amount(transfer(r#"{"amount": 5000}"#).unwrap().text(), 2).unwrap(), Decimal::new(5000, 0));
        // What a float would round: refused for its third decimal, never rounded to 0.30.
        let precise = transfer(r#"{"amount": 0.30000000000000004}"#).unwrap();
        assert!(amount(precise.text(), 2).unwrap_err().detail.contains("two decimal places"));
        assert!(amount(transfer(r#"{"amount": 1e3}"#).unwrap().text(), 2).unwrap_err().detail.contains("not a decimal"));
        let huge = transfer(r#"{"amount": 123456789012345678901234567890123}"#).unwrap();
        assert!(amount(huge.text(), 2).unwrap_err().detail.contains("out of range"));
        assert!(amount("12345678901234567.00", 2).unwrap_err().detail.contains("16 integer digits"));
        for wrong in [r#"{"amount": true}"#, r#"{"amount": null}"#, r#"{"amount": ["1"]}"#] {
            assert!(transfer(wrong).unwrap_err().to_string().contains("amount"), "{wrong}");
        }
    }

    #[test]
    fn idempotency_keys_tell_retries_from_new_requests() {
        let table = IdempotencyTable::default();
        let first = fingerprint("Transfer", "u_1", &serde_json::json!({"amount": "1.00"}));
        let other = fingerprint("Transfer", "u_1", &serde_json::json!({"amount": "2.00"}));
        assert_eq!(table.seen("u_1", "k", &first), Seen::Never);
        let id = derived_id("u_1", "k", &first);
        table.remember("u_1", "k", &first, &id);
        assert_eq!(table.seen("u_1", "k", &first), Seen::SameRequest(id.clone()));
        assert_eq!(table.seen("u_1", "k", &other), Seen::OtherRequest);
        assert_eq!(table.seen("u_2", "k", &first), Seen::Never, "keys are scoped by caller");
        assert_eq!(derived_id("u_1", "k", &first), id, "a retry after a restart is the same command");
        assert_ne!(derived_id("u_1", "k", &other), id);
    }

    #[test]
    fn user_ids() {
        assert!(is_user_id(&model::user_id_for_email("a@b.co")));
        assert!(!is_user_id("u_123"));
        assert!(!is_user_id("alice"));
    }
}
