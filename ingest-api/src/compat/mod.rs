//! The routes of the systems Sluice replaces (docs/compatibility.md), mapped onto the v1 API
//! so that their users' own examples work unchanged. Errors are problem+json, as on v1.
//!
//! - [`seed000`]: the HTML pages of seed 000, which lead to the web console's;
//! - [`seed001`]: `/register`, `/token` (OAuth2 password form), `/change-password`, `/verify`,
//!   `/check-user`, `/transfer`, `/transactions`;
//! - [`seed002`]: `/auth/*` and `/payments` (list, create, detail, refund);
//! - seed 004 (here): `POST /api/auth/register` (camelCase body, 201 with the user once the
//!   pipeline has registered them), `POST /api/auth/login`, `GET /api/auth/profile` and
//!   `GET /api/nhs/patients`.
//!
//! Routes that were synchronous in the seeds wait for the pipeline's decision (at most 2 s less
//! than the request timeout, [`crate::reset::decision_wait`]) and answer it; past that they
//! answer 202 with the status URL, as v1 does.

pub mod seed000;
pub mod seed001;
pub mod seed002;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sluice_processors::model::{self, CommandState, CommandStatus};
use utoipa::ToSchema;

use crate::auth::{self, Caller, LoginRequest, ProfileResponse, RegisterRequest, SignUpIdentity, TokenResponse};
use crate::body::ApiJson;
use crate::ops::RequestContext;
use crate::problem::Problem;
use crate::SharedState;


/// What became of a command a compatibility route submitted.
pub enum Decided {
    /// Settled: its command id.
    Settled(String),
    /// Refused: its command id, and its reason as problem+json.
    Refused(String, Problem),
    /// Not decided in time, or not accepted at all: the answer to give as is.
    Undecided(Response),
}

/// Waits for the decision on the command `answer` accepted for `user_id`.
pub async fn decide(state: &SharedState, user_id: &str, answer: Response, title: &str) -> Result<Decided, Problem> {
    let (command_id, answer) = match crate::commands::accepted_command_id(answer).await? {
        Ok(accepted) => accepted,
        Err(other) => return Ok(Decided::Undecided(other)),
    };
    Ok(match crate::commands::wait_for_status(state, user_id, &command_id, crate::reset::decision_wait(state)).await {
        Some(status) if status.status == CommandState::Settled => Decided::Settled(command_id),
        Some(status) => Decided::Refused(command_id, refused(&status, title)),
        None => Decided::Undecided(answer),
    })
}

/// A refused command as problem+json: the pipeline's reason as the type (`email_taken` is
/// `email-taken`), 409 for a taken email, 403 for a closed account or a forbidden act, 422 for
/// the rest.
pub fn refused(status: &CommandStatus, title: &str) -> Problem {
    let reason = status.reason.clone().unwrap_or_else(|| "rejected".to_string());
    let code = match reason.as_str() {
        model::reasons::EMAIL_TAKEN => StatusCode::CONFLICT,
        model::reasons::FORBIDDEN | model::reasons::ACCOUNT_FROZEN => StatusCode::FORBIDDEN,
        model::reasons::TOKEN_REVOKED => StatusCode::UNAUTHORIZED,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    reason_problem(status, code, title)
}

/// The problem named after a refused command's reason (`insufficient_funds` ->
/// `insufficient-funds`), with its detail.
pub(crate) fn reason_problem(status: &CommandStatus, code: StatusCode, title: &str) -> Problem {
    let reason = status.reason.as_deref().unwrap_or("rejected");
    Problem::new(code, &reason.replace('_', "-"), title, status.detail.clone().unwrap_or_default())
}

/// Seed 004's registration body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Seed004Registration {
    /// Email address.
    #[schema(example = "test.nin@example.com")]
    pub email: String,
    /// 10 to 128 characters.
    #[schema(example = "password123")]
    pub password: String,
    /// `NIN` or `NHS`.
    #[schema(example = "NIN")]
    pub identifier_type: Option<String>,
    /// The identifier.
    #[schema(example = "AB123456C")]
    pub identifier_value: Option<String>,
    /// Phone number, international or UK national.
    #[schema(example = "+447123456789")]
    pub phone_number: Option<String>,
    /// Full legal name (Sluice verifies an identity against it).
    pub full_name: Option<String>,
    /// Date of birth, `YYYY-MM-DD` (Sluice verifies an identity against it).
    pub date_of_birth: Option<String>,
}

/// The registered user, as seed 004 answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Seed004User {
    /// The user id.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Phone number, international form.
    pub phone_number: Option<String>,
    /// `NIN` or `NHS`, when an identity was given.
    pub identifier_type: Option<String>,
    /// ACTIVE, FROZEN or DECEASED.
    pub status: String,
    /// BROWSING, BASIC or FULL (FULL once the identity is verified).
    pub kyc_level: String,
    /// Where the identity verification's outcome appears (with the user's token).
    pub verification_status_url: Option<String>,
}

/// Seed 004: sign up, optionally with an identity to verify; 201 with the user once the
/// pipeline has registered them (the identity is verified after, like `POST /v1/auth/register`
/// with `identity`; without a name and date of birth, which seed 004's clients never send, the
/// claim is refused `kyc_required` at its status URL and can be made again after
/// `PATCH /v1/auth/me`).
#[utoipa::path(post, path = "/api/auth/register", tag = "compatibility", request_body = Seed004Registration,
    responses((status = 201, body = Seed004User), (status = 202, body = crate::commands::Accepted, description = "the pipeline has not registered the user yet"),
        (status = 409, body = Problem, description = "email-taken"), (status = 422, body = Problem)))]
pub async fn seed004_register(
    State(state): State<SharedState>,
    Extension(context): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Seed004Registration>,
) -> Result<Response, Problem> {
    let identity = match (&body.identifier_type, &body.identifier_value) {
        (Some(kind), Some(value)) => Some(SignUpIdentity { identifier_type: kind.clone(), value: value.clone() }),
        (None, None) => None,
        _ => return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-identifier", "Invalid identifier", "give identifierType and identifierValue together")),
    };
    let identifier_type = identity.as_ref().map(|i| i.identifier_type.clone());
    let request = RegisterRequest {
        email: body.email.clone(),
        password: body.password,
        full_name: body.full_name,
        date_of_birth: body.date_of_birth,
        phone_number: body.phone_number,
        identity,
    };
    let user = match registered(&state, &context, &headers, request).await? {
        Ok(user) => user,
        Err(undecided) => return Ok(undecided),
    };
    let status_url = format!("/v1/commands/{}", user.1);
    let user = user.0;
    let verification_status_url = identifier_type.is_some().then(|| format!("{status_url}:identity"));
    let profile = ProfileResponse::from(&user);
    let created = Seed004User {
        id: profile.user_id,
        email: profile.email,
        phone_number: profile.phone_number,
        identifier_type,
        status: profile.status,
        kyc_level: profile.kyc_level,
        verification_status_url,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Registers `request`'s user and waits until the pipeline has: the user and the command id,
/// or (not decided in time) the 202 answer to give.
pub async fn registered(
    state: &SharedState,
    context: &RequestContext,
    headers: &HeaderMap,
    request: RegisterRequest,
) -> Result<Result<(sluice_processors::model::User, String), Response>, Problem> {
    let user_id = model::user_id_for_email(&request.email);
    let accepted = auth::register_user(state, context, headers, request, false).await?;
    match decide(state, &user_id, accepted, "Registration refused").await? {
        Decided::Settled(command_id) => {
            let user = auth::read_user(state, &user_id).await?.ok_or_else(|| Problem::internal("registered, yet not found"))?;
            Ok(Ok((user, command_id)))
        }
        Decided::Refused(_, problem) => Err(problem),
        Decided::Undecided(answer) => Ok(Err(answer)),
    }
}

/// Seed 004: log in with email and password; the same answer as `POST /v1/auth/login`
/// (`access_token`, `refresh_token`, `token_type`, `expires_in`, `user_id`).
#[utoipa::path(post, path = "/api/auth/login", tag = "compatibility", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem, description = "invalid-credentials")))]
pub async fn seed004_login(state: State<SharedState>, context: Extension<Arc<RequestContext>>, request: ApiJson<LoginRequest>) -> Result<Json<TokenResponse>, Problem> {
    auth::login(state, context, request).await
}

/// Seed 004: the caller's profile, as `GET /v1/auth/me`.
#[utoipa::path(get, path = "/api/auth/profile", tag = "compatibility", security(("bearer" = [])),
    responses((status = 200, body = ProfileResponse), (status = 401, body = Problem)))]
pub async fn seed004_profile(caller: Caller) -> Result<Json<ProfileResponse>, Problem> {
    auth::me(caller).await
}

/// The caller's NHS record, if their NHS number is verified.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NhsPatient {
    /// The verified NHS number.
    pub nhs_number: String,
    /// Full legal name.
    pub full_name: Option<String>,
    /// Date of birth.
    pub date_of_birth: Option<String>,
}

/// The answer of `GET /api/nhs/patients`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NhsPatients {
    /// The caller's own record when their NHS number is verified; empty otherwise.
    pub patients: Vec<NhsPatient>,
}

/// Seed 004's protected NHS resource: 200 for a valid token, with the caller's own NHS record
/// (no one else's).
#[utoipa::path(get, path = "/api/nhs/patients", tag = "compatibility", security(("bearer" = [])),
    responses((status = 200, body = NhsPatients), (status = 401, body = Problem)))]
pub async fn seed004_nhs_patients(caller: Caller) -> Result<Json<NhsPatients>, Problem> {
    let patients = match caller.user.as_ref() {
        Some(user) => user
            .identifiers
            .iter()
            .filter_map(|id| id.strip_prefix("NHS:"))
            .map(|nhs| NhsPatient { nhs_number: nhs.to_string(), full_name: user.full_name.clone(), date_of_birth: user.date_of_birth.map(|d| d.to_string()) })
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(NhsPatients { patients }))
}
