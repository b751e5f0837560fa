//! The routes of the systems Sluice replaces (docs/compatibility.md), mapped onto the v1 API
//! so that their users' own examples work unchanged. Seed 004 (a gateway with NIN/NHS
//! registration): `POST /api/auth/register` (camelCase body, 201 with the user once the
//! pipeline has registered them), `POST /api/auth/login`, `GET /api/auth/profile` and
//! `GET /api/nhs/patients`. Errors are problem+json, as on v1.

use std::sync::Arc;
use std::time::Duration;

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

/// How long `POST /api/auth/register` waits for the pipeline to register the user before it
/// answers 202 with the command's status URL instead of 201.
pub const REGISTER_WAIT: Duration = Duration::from_secs(10);

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
    let accepted = auth::register_user(&state, &context, &headers, request, false).await?;
    let (command_id, accepted) = match crate::commands::accepted_command_id(accepted).await? {
        Ok(accepted) => accepted,
        Err(other) => return Ok(other),
    };
    let user_id = model::user_id_for_email(&body.email);
    match crate::commands::wait_for_status(&state, &user_id, &command_id, REGISTER_WAIT).await {
        Some(status) if status.status == CommandState::Rejected => return Err(refusal(&status)),
        Some(_) => {}
        None => return Ok(accepted),
    }
    let status_url = format!("/v1/commands/{command_id}");
    let user = auth::read_user(&state, &user_id).await?.ok_or_else(|| Problem::internal("registered, yet not found"))?;
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

/// A refused registration as problem+json: the pipeline's reason as the type.
fn refusal(status: &CommandStatus) -> Problem {
    let reason = status.reason.clone().unwrap_or_else(|| "rejected".to_string());
    let code = if reason == model::reasons::EMAIL_TAKEN { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
    Problem::new(code, &reason.replace('_', "-"), "Registration refused", status.detail.clone().unwrap_or_default())
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
