//! Seed 002 ("Style Flow": its auth, payments and gateway parts): `/auth/*` and `/payments` on
//! the v1 API. Its events, resources and clients services are not Sluice's: a payment's
//! `client_id`, `event_id` and `payment_method_id` are taken and kept in its reference.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{decide, registered, Decided};
use crate::auth::{self, Caller, LoginRequest, ProfileResponse, RefreshRequest, RegisterRequest, TokenResponse};
use crate::body::ApiJson;
use crate::commands::{self, Amount, RefundRequest, TransferRequest, WithdrawalRequest};
use crate::ops::RequestContext;
use crate::payments::{self, PaymentParams, PaymentResponse, PaymentsPage, PaymentsParams};
use crate::problem::Problem;
use crate::reset::{self, ResetConfirmation, ResetRequest};
use crate::SharedState;

/// `POST /auth/register`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Shown back; Sluice identifies users by email.
    #[schema(example = "user1")]
    pub username: Option<String>,
    /// Email address.
    #[schema(example = "user1@example.com")]
    pub email: String,
    /// 10 to 128 characters.
    pub password: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
}

/// The registered user, as seed 002 answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Seed002User {
    /// The user id.
    pub id: String,
    /// The username given at sign-up.
    pub username: Option<String>,
    /// Normalised email.
    pub email: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// ACTIVE, FROZEN or DECEASED.
    pub status: String,
    /// BROWSING, BASIC or FULL.
    pub kyc_level: String,
}

/// Seed 002: sign up; 201 with the user once the pipeline has registered them.
#[utoipa::path(post, path = "/auth/register", tag = "compatibility", request_body = Registration,
    responses((status = 201, body = Seed002User), (status = 202, body = crate::commands::Accepted), (status = 409, body = Problem, description = "email-taken"), (status = 422, body = Problem)))]
pub async fn register(State(state): State<SharedState>, Extension(context): Extension<Arc<RequestContext>>, headers: HeaderMap, ApiJson(body): ApiJson<Registration>) -> Result<Response, Problem> {
    let names: Vec<&str> = [body.first_name.as_deref(), body.last_name.as_deref()].into_iter().flatten().map(str::trim).filter(|n| !n.is_empty()).collect();
    let full_name = (!names.is_empty()).then(|| names.join(" "));
    let request = RegisterRequest { email: body.email, password: body.password, full_name, date_of_birth: None, phone_number: None, identity: None };
    let (user, _) = match registered(&state, &context, &headers, request).await? {
        Ok(user) => user,
        Err(undecided) => return Ok(undecided),
    };
    let profile = ProfileResponse::from(&user);
    let created = Seed002User {
        id: profile.user_id,
        username: body.username,
        email: profile.email,
        first_name: body.first_name,
        last_name: body.last_name,
        status: profile.status,
        kyc_level: profile.kyc_level,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Seed 002: log in, as `POST /v1/auth/login`.
#[utoipa::path(post, path = "/auth/login", tag = "compatibility", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem, description = "invalid-credentials")))]
pub async fn login(state: State<SharedState>, context: Extension<Arc<RequestContext>>, request: ApiJson<LoginRequest>) -> Result<Json<TokenResponse>, Problem> {
    auth::login(state, context, request).await
}

/// Seed 002: a new token pair, as `POST /v1/auth/refresh`.
#[utoipa::path(post, path = "/auth/refresh", tag = "compatibility", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)))]
pub async fn refresh(state: State<SharedState>, context: Extension<Arc<RequestContext>>, request: ApiJson<RefreshRequest>) -> Result<Json<TokenResponse>, Problem> {
    auth::refresh(state, context, request).await
}

/// A short answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Detail {
    /// What happened.
    pub detail: String,
}

/// Seed 002: log out everywhere; 200 once every earlier token is refused.
#[utoipa::path(post, path = "/auth/logout", tag = "compatibility", security(("bearer" = [])), responses((status = 200, body = Detail), (status = 401, body = Problem)))]
pub async fn logout(State(state): State<SharedState>, caller: Caller, headers: HeaderMap) -> Result<Response, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let answer = auth::logout(State(state.clone()), caller, headers).await?;
    match decide(&state, &user_id, answer, "Logout refused").await? {
        Decided::Settled(_) => Ok(Json(Detail { detail: "logged out: every earlier token is refused".to_string() }).into_response()),
        Decided::Refused(_, problem) => Err(problem),
        Decided::Undecided(answer) => Ok(answer),
    }
}

/// Seed 002: the caller's profile, as `GET /v1/auth/me`.
#[utoipa::path(get, path = "/auth/me", tag = "compatibility", security(("bearer" = [])), responses((status = 200, body = ProfileResponse), (status = 401, body = Problem)))]
pub async fn me(caller: Caller) -> Result<Json<ProfileResponse>, Problem> {
    auth::me(caller).await
}

/// `POST /auth/reset-password`: ask for a token, or set a new password with one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PasswordReset {
    /// `{email}`: a token is sent to the account holder.
    Request(ResetRequest),
    /// `{token, new_password}`: as `POST /v1/auth/reset-password/confirm`.
    Confirm(ResetConfirmation),
}

/// Seed 002: password reset, both steps on one route (`POST /v1/auth/reset-password` and
/// `/v1/auth/reset-password/confirm`).
#[utoipa::path(post, path = "/auth/reset-password", tag = "compatibility", request_body = PasswordReset,
    responses((status = 202, body = reset::ResetRequested), (status = 200, body = reset::ResetDone), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn reset_password(state: State<SharedState>, headers: HeaderMap, ApiJson(body): ApiJson<PasswordReset>) -> Result<Response, Problem> {
    match body {
        PasswordReset::Request(request) => reset::request(state, headers, ApiJson(request)).await,
        PasswordReset::Confirm(confirmation) => reset::confirm(state, headers, ApiJson(confirmation)).await,
    }
}

/// Seed 002: the caller's payments, as `GET /v1/payments`.
#[utoipa::path(get, path = "/payments", tag = "compatibility", security(("bearer" = [])), params(PaymentsParams),
    responses((status = 200, body = PaymentsPage), (status = 400, body = Problem)))]
pub async fn list(state: State<SharedState>, caller: Caller, params: Query<PaymentsParams>) -> Result<Json<PaymentsPage>, Problem> {
    payments::list(state, caller, params).await
}

/// Seed 002: one payment, as `GET /v1/payments/{id}`.
#[utoipa::path(get, path = "/payments/{id}", tag = "compatibility", security(("bearer" = [])), params(("id" = String, Path, description = "Payment id"), PaymentParams),
    responses((status = 200, body = PaymentResponse), (status = 404, body = Problem, description = "payment-not-found")))]
pub async fn get(state: State<SharedState>, caller: Caller, id: Path<String>, params: Query<PaymentParams>) -> Result<Json<PaymentResponse>, Problem> {
    payments::get(state, caller, id, params).await
}

/// `POST /payments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// A string or a JSON number, read exactly (`5000`).
    #[schema(value_type = String, example = "5000")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's.
    #[schema(example = "RUB")]
    pub currency: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Seed 002's client (kept in the reference).
    pub client_id: Option<i64>,
    /// Seed 002's event (kept in the reference).
    pub event_id: Option<i64>,
    /// Seed 002's payment method (kept in the reference).
    pub payment_method_id: Option<i64>,
    /// A Sluice user to pay: then a transfer; without a payee the money leaves Sluice (a
    /// withdrawal to the merchant).
    pub payee_email: Option<String>,
}

/// Seed 002: pay. With `payee_email`, a transfer to that user; without, a payment out of Sluice
/// (a withdrawal) for what `description` says. 201 with the payment once the pipeline decided
/// it (`completed`, or `failed` with its reason), 202 with the status URL if it has not yet.
#[utoipa::path(post, path = "/payments", tag = "compatibility", security(("bearer" = [])), request_body = NewPayment,
    responses((status = 201, body = PaymentResponse), (status = 202, body = crate::commands::Accepted), (status = 422, body = Problem, description = "invalid-amount, unsupported-currency, ...")))]
pub async fn create(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(body): ApiJson<NewPayment>) -> Result<Response, Problem> {
    let payer = caller.user()?.user_id.clone();
    let ids: Vec<String> = [("client", body.client_id), ("event", body.event_id), ("payment method", body.payment_method_id)]
        .into_iter()
        .filter_map(|(name, id)| id.map(|id| format!("{name} {id}")))
        .collect();
    let reference = match (body.description.as_deref(), ids.is_empty()) {
        (Some(text), true) => Some(text.to_string()),
        (Some(text), false) => Some(format!("{text} ({})", ids.join(", "))),
        (None, false) => Some(ids.join(", ")),
        (None, true) => None,
    };
    let answer = match body.payee_email {
        Some(payee) => {
            let request = TransferRequest { payee_user_id: None, payee_email: Some(payee), amount: body.amount, currency: body.currency, reference, user_id: None };
            commands::transfer(State(state.clone()), caller, headers, ApiJson(request)).await?
        }
        None => {
            let request = WithdrawalRequest { amount: body.amount, currency: body.currency, reference, user_id: None };
            commands::withdraw(State(state.clone()), caller, headers, ApiJson(request)).await?
        }
    };
    answer_payment(&state, &payer, answer).await
}

/// The payment a payment command created, once decided: 201 whether it completed or failed
/// (a failed payment is a payment, with its reason).
async fn answer_payment(state: &SharedState, payer: &str, answer: Response) -> Result<Response, Problem> {
    let command_id = match decide(state, payer, answer, "Payment refused").await? {
        Decided::Settled(id) => id,
        Decided::Refused(id, problem) => {
            // The payment exists, failed: answer it (its id is the command's).
            match payments::find(state, payer, &id).await {
                Ok(payment) => return Ok((StatusCode::CREATED, Json(PaymentResponse::new(state, payment))).into_response()),
                Err(_) => return Err(problem),
            }
        }
        Decided::Undecided(answer) => return Ok(answer),
    };
    let payment = payments::find(state, payer, &command_id).await?;
    Ok((StatusCode::CREATED, Json(PaymentResponse::new(state, payment))).into_response())
}

/// `POST /payments/{id}/refund`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Default: all that is left of the payment.
    #[schema(value_type = Option<String>, example = "5.00")]
    pub amount: Option<Amount>,
    /// Why.
    pub reason: Option<String>,
}

/// Seed 002: refund a payment received, in full by default; 201 with the refund once decided.
#[utoipa::path(post, path = "/payments/{id}/refund", tag = "compatibility", security(("bearer" = [])), params(("id" = String, Path, description = "The payment received")), request_body = RefundBody,
    responses((status = 201, body = PaymentResponse), (status = 202, body = crate::commands::Accepted), (status = 404, body = Problem, description = "payment-not-found"), (status = 422, body = Problem)))]
pub async fn refund(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>, headers: HeaderMap, ApiJson(body): ApiJson<RefundBody>) -> Result<Response, Problem> {
    let payee = caller.user()?.user_id.clone();
    let received = payments::find_on(&state, &payee, sluice_processors::payments::Side::Payee, &id)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "payment-not-found", "No such payment", format!("no payment `{id}` received by `{payee}`")))?;
    let amount = match body.amount {
        Some(amount) => amount,
        None => Amount::exact(&(received.amount - received.refunded_amount)),
    };
    let request = RefundRequest { amount, currency: Some(received.currency.clone()), reason: body.reason };
    let answer = commands::refund(State(state.clone()), caller, Path(id), headers, ApiJson(request)).await?;
    answer_payment(&state, &payee, answer).await
}

/// Seed 002's services that Sluice stands in for.
pub const SERVICES: &[&str] = &["gateway-service", "auth-service", "user-service", "payment-service"];

/// Seed 002's gateway: a service's health (`/user-service/health`), as `GET /health`, for the
/// services Sluice replaces; 404 `unknown-service` for the others (events, resources and
/// clients are not Sluice's).
#[utoipa::path(get, path = "/{service}/health", tag = "compatibility", params(("service" = String, Path, description = "gateway-service, auth-service, user-service or payment-service")),
    responses((status = 200, body = crate::ops::Health), (status = 404, body = Problem, description = "unknown-service")))]
pub async fn service_health(Path(service): Path<String>) -> Result<Json<crate::ops::Health>, Problem> {
    if !SERVICES.contains(&service.as_str()) {
        return Err(Problem::new(StatusCode::NOT_FOUND, "unknown-service", "Unknown service", format!("Sluice stands in for {}, not `{service}`", SERVICES.join(", "))));
    }
    Ok(crate::ops::health().await)
}
