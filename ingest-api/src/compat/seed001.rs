//! Seed 001 (an auth service and a transaction service, FastAPI): its routes on the v1 API.
//! Users are identified by email in Sluice, so seed 001's `username` is an email address.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use serde::{Deserialize, Serialize};
use sluice_processors::model;
use utoipa::{IntoParams, ToSchema};

use super::{decide, registered, Decided};
use crate::accounts::{self, PageParams, TransactionResponse};
use crate::auth::{self, Caller, ChangePasswordRequest, LoginRequest, RegisterRequest, TokenResponse};
use crate::body::ApiJson;
use crate::commands::{self, Amount, TransferRequest};
use crate::ops::RequestContext;
use crate::problem::Problem;
use crate::SharedState;

/// `POST /register`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The user's email address (Sluice identifies users by email).
    #[schema(example = "ivan@example.com")]
    pub username: String,
    /// 10 to 128 characters.
    pub password: String,
    /// The email, when `username` is not one.
    pub email: Option<String>,
    /// Full name.
    pub full_name: Option<String>,
}

/// A seed 001 user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Seed001User {
    /// The user id.
    pub id: String,
    /// The username (the email).
    pub username: String,
    /// Normalised email.
    pub email: String,
}

/// Seed 001: sign up; 201 with the user once the pipeline has registered them. Every new
/// account starts with the configured welcome credit, as seed 001's did.
#[utoipa::path(post, path = "/register", tag = "compatibility", request_body = Registration,
    responses((status = 201, body = Seed001User), (status = 202, body = crate::commands::Accepted), (status = 409, body = Problem, description = "email-taken"), (status = 422, body = Problem)))]
pub async fn register(State(state): State<SharedState>, Extension(context): Extension<Arc<RequestContext>>, headers: HeaderMap, ApiJson(body): ApiJson<Registration>) -> Result<Response, Problem> {
    let email = body.email.clone().unwrap_or_else(|| body.username.clone());
    if !model::is_plausible_email(&model::normalise_email(&email)) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "Invalid email", format!("Sluice identifies users by email: `{email}` is not one (give username as an email, or email)")));
    }
    let request = RegisterRequest { email, password: body.password, full_name: body.full_name, date_of_birth: None, phone_number: None, identity: None };
    let (user, _) = match registered(&state, &context, &headers, request).await? {
        Ok(user) => user,
        Err(undecided) => return Ok(undecided),
    };
    Ok((StatusCode::CREATED, Json(Seed001User { id: user.user_id, username: body.username, email: user.email })).into_response())
}

/// `POST /token`: the OAuth2 password form (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PasswordForm {
    /// The email.
    pub username: String,
    /// The password.
    pub password: String,
    /// `password` when given.
    pub grant_type: Option<String>,
    /// Ignored.
    pub scope: Option<String>,
}

/// Seed 001: log in with the OAuth2 password form; the v1 token answer (`access_token`,
/// `token_type`, ...).
#[utoipa::path(post, path = "/token", tag = "compatibility", request_body(content = PasswordForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, body = Problem, description = "unsupported-grant-type"), (status = 401, body = Problem, description = "invalid-credentials")))]
pub async fn token(state: State<SharedState>, context: Extension<Arc<RequestContext>>, Form(form): Form<PasswordForm>) -> Result<Json<TokenResponse>, Problem> {
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "unsupported-grant-type", "Unsupported grant type", "only grant_type=password is supported here"));
    }
    auth::login(state, context, ApiJson(LoginRequest { email: form.username, password: form.password })).await
}

/// `POST /change-password`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    #[serde(alias = "current_password")]
    pub old_password: String,
    /// The new one.
    pub new_password: String,
}

/// A short answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Detail {
    /// What happened.
    pub detail: String,
}

/// Seed 001: change the password (every other session ends); 200 once the pipeline applied it.
#[utoipa::path(post, path = "/change-password", tag = "compatibility", security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 200, body = Detail), (status = 401, body = Problem, description = "invalid-credentials"), (status = 422, body = Problem, description = "weak-password")))]
pub async fn change_password(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(body): ApiJson<PasswordChange>) -> Result<Response, Problem> {
    let user_id = caller.user()?.user_id.clone();
    let request = ChangePasswordRequest { current_password: body.old_password, new_password: body.new_password };
    let answer = auth::change_password(State(state.clone()), caller, headers, ApiJson(request)).await?;
    match decide(&state, &user_id, answer, "Password change refused").await? {
        Decided::Settled(_) => Ok(Json(Detail { detail: "password changed; log in again with the new password".to_string() }).into_response()),
        Decided::Refused(_, problem) => Err(problem),
        Decided::Undecided(answer) => Ok(answer),
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Verified {
    /// The user id (or service name).
    pub user_id: String,
    /// The email, for users.
    pub username: Option<String>,
    /// The token's roles.
    pub roles: Vec<String>,
}

/// Seed 001: check a token (what its transaction service asked the auth service); 401 with the
/// token problem otherwise.
#[utoipa::path(get, path = "/verify", tag = "compatibility", security(("bearer" = [])), responses((status = 200, body = Verified), (status = 401, body = Problem)))]
pub async fn verify(caller: Caller) -> Json<Verified> {
    Json(Verified { user_id: caller.claims.sub.clone(), username: caller.user.as_ref().map(|u| u.email.clone()), roles: caller.claims.roles.clone() })
}

/// `GET /check-user`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckUserParams {
    /// The email of the user to check.
    pub username: Option<String>,
    /// Same, by its other name.
    pub email: Option<String>,
}

/// A registered user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckedUser {
    /// Always true (404 otherwise).
    pub exists: bool,
    /// The user id, to pay them.
    pub user_id: String,
}

/// Seed 001: is a user registered? For signed-in callers only, and limited like the payee
/// lookup (30 a minute): 200 with the user id, or 404 `user-not-found`.
#[utoipa::path(get, path = "/check-user", tag = "compatibility", security(("bearer" = [])), params(CheckUserParams),
    responses((status = 200, body = CheckedUser), (status = 404, body = Problem, description = "user-not-found"), (status = 429, body = Problem)))]
pub async fn check_user(State(state): State<SharedState>, caller: Caller, Query(params): Query<CheckUserParams>) -> Result<Json<CheckedUser>, Problem> {
    state.lookup_limiter.check(&format!("lookup:{}", caller.claims.sub))?;
    let email = model::normalise_email(params.username.as_deref().or(params.email.as_deref()).unwrap_or_default());
    if !model::is_plausible_email(&email) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "Invalid email", format!("`{email}` is not an email address (give ?username=)")));
    }
    let user_id = model::user_id_for_email(&email);
    match auth::read_user(&state, &user_id).await? {
        Some(_) => Ok(Json(CheckedUser { exists: true, user_id })),
        None => Err(Problem::new(StatusCode::NOT_FOUND, "user-not-found", "No such user", "no Sluice user has that email")),
    }
}

/// `POST /transfer`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The payee: an email (or a user id).
    #[serde(alias = "to_username", alias = "receiver_username", alias = "recipient", alias = "to")]
    pub receiver: String,
    /// A string or a JSON number, read exactly.
    #[schema(value_type = String, example = "25.00")]
    pub amount: Amount,
    /// ISO 4217 code; default the pipeline's.
    pub currency: Option<String>,
    /// Free text.
    #[serde(alias = "description")]
    pub reference: Option<String>,
}

/// A completed transfer, as seed 001 answered it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transferred {
    /// The transaction (command) id.
    pub id: String,
    /// The payer's user id.
    pub sender_id: String,
    /// The payee's user id.
    pub receiver_id: String,
    /// Amount, a decimal string.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `completed`.
    pub status: String,
}

/// Seed 001: send money to another registered user; 200 once both legs settled, a problem with
/// the pipeline's reason (`insufficient-funds`, `payee-unknown`, ...) otherwise.
#[utoipa::path(post, path = "/transfer", tag = "compatibility", security(("bearer" = [])), request_body = TransferBody,
    responses((status = 200, body = Transferred), (status = 202, body = crate::commands::Accepted), (status = 422, body = Problem)))]
pub async fn transfer(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(body): ApiJson<TransferBody>) -> Result<Response, Problem> {
    let payer = caller.user()?.user_id.clone();
    let by_id = commands::is_user_id(&body.receiver);
    let request = TransferRequest {
        payee_user_id: by_id.then(|| body.receiver.clone()),
        payee_email: (!by_id).then(|| body.receiver.clone()),
        amount: body.amount,
        currency: body.currency,
        reference: body.reference,
        user_id: None,
    };
    let receiver_id = if by_id { body.receiver.clone() } else { model::user_id_for_email(&body.receiver) };
    let answer = commands::transfer(State(state.clone()), caller, headers, ApiJson(request.clone())).await?;
    match decide(&state, &payer, answer, "Transfer refused").await? {
        Decided::Settled(id) => {
            let payment = crate::payments::find(&state, &payer, &id).await?;
            let amount = accounts::money_text(&state, &payment.currency, payment.amount);
            Ok(Json(Transferred { id, sender_id: payer, receiver_id, amount, currency: payment.currency, status: "completed".to_string() }).into_response())
        }
        Decided::Refused(_, problem) => Err(problem),
        Decided::Undecided(answer) => Ok(answer),
    }
}

/// Seeds 001 and 002: the caller's transactions, newest first, `skip`/`limit` paged (a JSON
/// array; the entries of `GET /v1/accounts/me/transactions`).
#[utoipa::path(get, path = "/transactions", tag = "compatibility", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = [TransactionResponse]), (status = 400, body = Problem, description = "invalid-limit")))]
pub async fn transactions(state: State<SharedState>, caller: Caller, page: Query<PageParams>) -> Result<Json<Vec<TransactionResponse>>, Problem> {
    Ok(Json(accounts::my_transactions(state, caller, page).await?.0.transactions))
}
