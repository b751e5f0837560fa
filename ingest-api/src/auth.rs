//! Authentication: sign-up, login, token refresh, logout, password change and the caller's
//! profile, and [`Caller`], the checked principal of every authenticated request.
//!
//! Passwords are hashed here with argon2id and only the PHC string travels to the pipeline.
//! Login reads the user (and its hash) from the `users` store through an interactive query,
//! or from the API's replica of it while no processor instance answers.
//! A token is refused when its signature, algorithm, key, `exp`, `iss`, `aud` or use is wrong,
//! and, for users, when it was issued before the user's sessions were revoked (logout or
//! password change, applied by the pipeline).

use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sluice_processors::jwt::{self, Claims, TokenError, TokenUse};
use sluice_processors::model::{self, roles, stores, User};
use sluice_schemas::types::{AuthCommand, AuthPayload, ChangePassword, IdentityAtSignUp, Principal, RegisterUser, RevokeSessions, UpdateProfile, UserStatus};
use sluice_schemas::{Date, TimestampMillis};
use sluice_streams::now_ms;
use utoipa::ToSchema;

use crate::body::ApiJson;
use crate::commands::{self, Accepted, Submission};
use crate::login_guard::LoginGuard;
use crate::ops::RequestContext;
use crate::problem::Problem;
use crate::SharedState;

/// The command topic of auth commands.
pub const AUTH_TOPIC: &str = "auth.commands";
/// Shortest password accepted.
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest password accepted (argon2 work is bounded by it).
pub const PASSWORD_MAX_CHARS: usize = 128;

/// The authenticated principal of a request: a verified access token, and for users the
/// user record it was checked against.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Claims,
    /// The user, when the subject is one (role `user`).
    pub user: Option<User>,
}

impl Caller {
    /// The principal as recorded in commands.
    pub fn principal(&self) -> Principal {
        Principal { subject: self.claims.sub.clone(), roles: self.claims.roles.clone(), token_issued_at: TimestampMillis(self.claims.iat_ms) }
    }

    /// True if the caller may act on `user_id`'s account: its owner, or an operator.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.claims.sub == user_id || self.claims.has_role(roles::OPERATOR)
    }

    /// The user record, or 403 for service accounts on user-only routes.
    pub fn user(&self) -> Result<&User, Problem> {
        self.user.as_ref().ok_or_else(|| Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", format!("`{}` is a service account, not a user", self.claims.sub)))
    }
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Caller, Problem> {
        let context = parts.extensions.get::<Arc<RequestContext>>().cloned();
        let value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(|| token_problem(&TokenError::Missing))?;
        let token = jwt::bearer(value).map_err(|e| token_problem(&e))?;
        let claims = state.keys.verify(token, now_ms(), TokenUse::Access).map_err(|e| token_problem(&e))?;
        if let Some(context) = &context {
            context.set_subject(&claims.sub);
        }
        state.limiter.check(&format!("sub:{}", claims.sub))?;
        let user = if claims.has_role(roles::USER) { Some(current_user(state, &claims).await?) } else { None };
        Ok(Caller { claims, user })
    }
}

/// The user a user token names, refused if the token predates a logout or password change.
async fn current_user(state: &SharedState, claims: &Claims) -> Result<User, Problem> {
    let user = read_user(state, &claims.sub)
        .await?
        .ok_or_else(|| Problem::new(StatusCode::UNAUTHORIZED, "user-unknown", "Unknown user", format!("no user `{}`", claims.sub)))?;
    if claims.iat_ms < user.tokens_valid_after_ms {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, "token-revoked", "Token revoked", "the session was ended (logout or password change); log in again"));
    }
    Ok(user)
}

/// The user `user_id` from the `users` store, wherever its task runs; from the API's own
/// replica of it ([`crate::users_view`]) when no instance can answer. Its password hash is
/// empty when a remote instance answered (query answers never carry one): use
/// [`read_credentials`] to check a password.
pub async fn read_user(state: &SharedState, user_id: &str) -> Result<Option<User>, Problem> {
    let value = match state.queries.get(stores::USERS, user_id).await {
        Ok(served) => served.value,
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() => match state.users.as_ref().and_then(|view| view.get(user_id)) {
            Some(value) => {
                metrics::counter!(USERS_VIEW_READS_TOTAL).increment(1);
                value
            }
            None => return Err(problem),
        },
        Err(problem) => return Err(problem),
    };
    parse_user(value)
}

/// The user `user_id` with their password hash, for a password check: from the API's replica
/// of the users changelog once it has read what the broker held when asked
/// ([`crate::users_view::UsersView::fresh`]), so a registration or password change committed
/// before this request counts.
pub async fn read_credentials(state: &SharedState, user_id: &str) -> Result<Option<User>, Problem> {
    let view = state.users.as_ref().ok_or_else(|| Problem::internal("the API runs without its users replica"))?;
    let value = view
        .fresh(user_id, crate::users_view::FRESH_WAIT)
        .await
        .map_err(|why| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "users-replica-behind", "Try again shortly", why))?;
    parse_user(value)
}

fn parse_user(value: Option<Vec<u8>>) -> Result<Option<User>, Problem> {
    value.map(|bytes| serde_json::from_slice::<User>(&bytes).map_err(|e| Problem::internal(format!("unreadable user record: {e}")))).transpose()
}

/// Counter: users read from the API's own replica because no processor instance answered.
pub const USERS_VIEW_READS_TOTAL: &str = "sluice_api_users_replica_reads_total";

/// The 401 of a refused token: type `https://sluice.dev/problems/<code>`, e.g. `token-expired`.
pub fn token_problem(error: &TokenError) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, &error.code().replace('_', "-"), "Invalid token", error.to_string())
}

/// `POST /v1/auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email address; it names the account.
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// 10 to 128 characters; hashed with argon2id here and never stored or sent in clear.
    pub password: String,
    /// Full legal name (optional now; needed with a date of birth to move money).
    pub full_name: Option<String>,
    /// Date of birth, `YYYY-MM-DD` (18 or over); with `full_name`, KYC level BASIC at once.
    #[schema(example = "1990-04-01")]
    pub date_of_birth: Option<String>,
    /// Phone number: international (`+44 7700 900123`) or UK national (`07700 900123`).
    #[schema(example = "+44 7700 900123")]
    pub phone_number: Option<String>,
    /// An identity to verify right after sign-up (needs `full_name` and `date_of_birth`): its
    /// status is at `/v1/commands/<command_id>:identity`, its result in `GET /v1/auth/me` and
    /// the notifications.
    pub identity: Option<SignUpIdentity>,
}

/// The identity of a one-call registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpIdentity {
    /// `NIN` (National Insurance number) or `NHS` (NHS number).
    #[serde(rename = "type")]
    #[schema(example = "NIN")]
    pub identifier_type: String,
    /// The identifier; spaces allowed.
    #[schema(example = "AB 12 34 56 C")]
    pub value: String,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the last refresh.
    pub refresh_token: String,
}

/// `POST /v1/auth/change-password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now.
    pub current_password: String,
    /// The new one, 10 to 128 characters.
    pub new_password: String,
}

/// `PATCH /v1/auth/me`: a name and date of birth (18 or over) raise KYC to BASIC.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// Full legal name.
    pub full_name: Option<String>,
    /// Date of birth, `YYYY-MM-DD`.
    #[schema(example = "1990-04-01")]
    pub date_of_birth: Option<String>,
}

/// Tokens from login or refresh.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Bearer token for the API.
    pub access_token: String,
    /// Token for `POST /v1/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The user.
    pub user_id: String,
}

/// The caller's profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileResponse {
    /// User id (`u_` + 20 hex digits of the email's SHA-256).
    pub user_id: String,
    /// Normalised email.
    pub email: String,
    /// Full legal name.
    pub full_name: Option<String>,
    /// Date of birth.
    pub date_of_birth: Option<String>,
    /// Phone number, international form.
    pub phone_number: Option<String>,
    /// ACTIVE, FROZEN or DECEASED.
    pub status: String,
    /// BROWSING, BASIC or FULL.
    pub kyc_level: String,
    /// Verified identifiers, e.g. `NIN:QQ123456C`.
    pub identifiers: Vec<String>,
    /// When the registration was processed (ms since the epoch).
    pub registered_at_ms: i64,
}

impl From<&User> for ProfileResponse {
    fn from(user: &User) -> ProfileResponse {
        ProfileResponse {
            user_id: user.user_id.clone(),
            email: user.email.clone(),
            full_name: user.full_name.clone(),
            date_of_birth: user.date_of_birth.map(|d| d.to_string()),
            phone_number: user.phone_number.clone(),
            status: symbol(&user.status),
            kyc_level: symbol(&user.kyc_level),
            identifiers: user.identifiers.clone(),
            registered_at_ms: user.registered_at_ms,
        }
    }
}

/// An enum's name as serde writes it (e.g. `BASIC`, `open`, `debit`).
pub(crate) fn symbol<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Sign up. The account exists once the pipeline has processed the command (follow the status URL).
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body give the same command")),
    responses((status = 202, body = Accepted), (status = 409, body = Problem, description = "email-taken"), (status = 422, body = Problem, description = "invalid-email, weak-password, invalid-body")))]
pub async fn register(State(state): State<SharedState>, Extension(context): Extension<Arc<RequestContext>>, headers: HeaderMap, ApiJson(request): ApiJson<RegisterRequest>) -> Result<Response, Problem> {
    register_user(&state, &context, &headers, request, true).await
}

/// A registration: checked, hashed and published. With `profile_for_identity`, an identity
/// without the name and date of birth its verification needs is refused here (422
/// `kyc-required`); without (the seed routes, whose clients never send them), the claim is
/// made and the pipeline refuses it as `kyc_required`, the registration standing.
pub(crate) async fn register_user(state: &SharedState, context: &RequestContext, headers: &HeaderMap, request: RegisterRequest, profile_for_identity: bool) -> Result<Response, Problem> {
    state.limiter.check(&context.anonymous_key())?;
    let email = model::normalise_email(&request.email);
    if !model::is_plausible_email(&email) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "Invalid email", format!("`{}` is not an email address", request.email)));
    }
    check_password(&request.password)?;
    if let Some(name) = &request.full_name {
        check_name(name)?;
    }
    let date_of_birth = request.date_of_birth.as_deref().map(parse_date_of_birth).transpose()?;
    let phone_number = request
        .phone_number
        .as_deref()
        .map(|phone| model::normalise_phone(phone).map_err(|why| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-phone", "Invalid phone number", why)))
        .transpose()?;
    let identity = request.identity.as_ref().map(|identity| sign_up_identity(identity, profile_for_identity.then_some((request.full_name.as_deref(), date_of_birth)))).transpose()?;
    let user_id = model::user_id_for_email(&email);
    if read_user(state, &user_id).await?.is_some() {
        return Err(Problem::new(StatusCode::CONFLICT, "email-taken", "Email taken", format!("`{email}` is already registered; log in instead")));
    }
    let password_hash = hash_password(&state.login_guard, request.password.clone()).await?;
    let principal = Principal { subject: user_id.clone(), roles: Vec::new(), token_issued_at: TimestampMillis(0) };
    // The fingerprint leaves the password out: the hash is salted, the email names the user.
    let fingerprint = serde_json::json!({ "email": email, "full_name": request.full_name, "date_of_birth": request.date_of_birth, "phone_number": phone_number, "identity": request.identity });
    let submission = Submission { command_type: "RegisterUser", topic: AUTH_TOPIC, key: user_id.clone(), subject: user_id.clone(), status_query: None };
    let register = RegisterUser { email, password_hash, full_name: request.full_name, date_of_birth, phone_number, identity };
    commands::submit(state, headers, submission, &fingerprint, auth_command(principal, AuthPayload::RegisterUser(register))).await
}

/// A date of birth as the API takes it (`YYYY-MM-DD`); the pipeline checks the age.
fn parse_date_of_birth(text: &str) -> Result<Date, Problem> {
    text.parse::<Date>().map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-profile", "Invalid profile", e.to_string()))
}

/// The identity of a one-call registration, checked: a known type, a well-formed identifier,
/// and (when `profile` is given) the name and date of birth its verification needs.
fn sign_up_identity(identity: &SignUpIdentity, profile: Option<(Option<&str>, Option<Date>)>) -> Result<IdentityAtSignUp, Problem> {
    let identifier_type = commands::identifier(&identity.identifier_type, &identity.value)?;
    if profile.is_some_and(|(name, born)| name.is_none() || born.is_none()) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "kyc-required",
            "Name and date of birth needed",
            "an identity at sign-up is verified against the holder's full_name and date_of_birth: give both",
        ));
    }
    Ok(IdentityAtSignUp { identifier_type, value: identity.value.clone() })
}

/// Log in with email and password; answers an access and a refresh token.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem, description = "invalid-credentials"), (status = 403, body = Problem, description = "account-closed (deceased)")))]
pub async fn login(State(state): State<SharedState>, Extension(context): Extension<Arc<RequestContext>>, ApiJson(request): ApiJson<LoginRequest>) -> Result<Json<TokenResponse>, Problem> {
    state.limiter.check(&context.anonymous_key())?;
    let user_id = model::user_id_for_email(&request.email);
    state.login_guard.check(&user_id, Instant::now())?;
    let user = read_credentials(&state, &user_id).await?;
    // Verify against a real hash even for unknown users, so timing does not tell them apart.
    let stored = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_string());
    let matches = verify_password(&state.login_guard, &user_id, request.password, stored).await?;
    let user = match user {
        Some(user) if matches => {
            state.login_guard.succeeded(&user_id);
            user
        }
        // Only registered accounts count failures: whether an email is registered is no
        // secret (registration says so), and a login tried before the registration was
        // processed does not count against the new account.
        Some(_) => {
            state.login_guard.failed(&user_id, Instant::now());
            return Err(invalid_credentials());
        }
        None => return Err(invalid_credentials()),
    };
    if user.status == UserStatus::Deceased {
        return Err(account_closed());
    }
    context.set_subject(&user.user_id);
    issue_tokens(&state, &user.user_id).map(Json)
}

/// Trade a refresh token for a new access and refresh token.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem, description = "invalid or revoked refresh token")))]
pub async fn refresh(State(state): State<SharedState>, Extension(context): Extension<Arc<RequestContext>>, ApiJson(request): ApiJson<RefreshRequest>) -> Result<Json<TokenResponse>, Problem> {
    state.limiter.check(&context.anonymous_key())?;
    let claims = state.keys.verify(&request.refresh_token, now_ms(), TokenUse::Refresh).map_err(|e| token_problem(&e))?;
    context.set_subject(&claims.sub);
    let user = current_user(&state, &claims).await?;
    if user.status == UserStatus::Deceased {
        return Err(account_closed());
    }
    issue_tokens(&state, &user.user_id).map(Json)
}

/// Log out everywhere: every token issued before this is refused once the pipeline applied it.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 202, body = Accepted), (status = 401, body = Problem)))]
pub async fn logout(State(state): State<SharedState>, caller: Caller, headers: HeaderMap) -> Result<Response, Problem> {
    let user = caller.user()?.user_id.clone();
    let principal = caller.principal();
    let submission = Submission { command_type: "RevokeSessions", topic: AUTH_TOPIC, key: user.clone(), subject: user, status_query: None };
    commands::submit(&state, &headers, submission, &serde_json::json!({ "jti": caller.claims.jti }), auth_command(principal, AuthPayload::RevokeSessions(RevokeSessions { reason: Some("logout".to_string()) }))).await
}

/// Change the password (the current one is checked here); ends every other session.
#[utoipa::path(post, path = "/v1/auth/change-password", tag = "auth", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 202, body = Accepted), (status = 401, body = Problem, description = "invalid-credentials"), (status = 422, body = Problem, description = "weak-password")))]
pub async fn change_password(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<ChangePasswordRequest>) -> Result<Response, Problem> {
    let user = caller.user()?.clone();
    check_password(&request.new_password)?;
    state.login_guard.check(&user.user_id, Instant::now())?;
    let stored = read_credentials(&state, &user.user_id).await?.map(|u| u.password_hash).unwrap_or_else(|| DUMMY_HASH.to_string());
    if !verify_password(&state.login_guard, &user.user_id, request.current_password, stored).await? {
        state.login_guard.failed(&user.user_id, Instant::now());
        return Err(invalid_credentials());
    }
    let password_hash = hash_password(&state.login_guard, request.new_password).await?;
    let principal = caller.principal();
    let submission = Submission { command_type: "ChangePassword", topic: AUTH_TOPIC, key: user.user_id.clone(), subject: user.user_id.clone(), status_query: None };
    commands::submit(&state, &headers, submission, &serde_json::json!({ "jti": caller.claims.jti }), auth_command(principal, AuthPayload::ChangePassword(ChangePassword { password_hash }))).await
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = ProfileResponse), (status = 401, body = Problem)))]
pub async fn me(caller: Caller) -> Result<Json<ProfileResponse>, Problem> {
    Ok(Json(ProfileResponse::from(caller.user()?)))
}

/// Update the profile; with a name and a date of birth (18 or over) KYC becomes BASIC.
#[utoipa::path(patch, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])), request_body = ProfileRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key")),
    responses((status = 202, body = Accepted), (status = 422, body = Problem, description = "invalid-profile")))]
pub async fn update_me(State(state): State<SharedState>, caller: Caller, headers: HeaderMap, ApiJson(request): ApiJson<ProfileRequest>) -> Result<Response, Problem> {
    let user_id = caller.user()?.user_id.clone();
    if let Some(name) = &request.full_name {
        check_name(name)?;
    }
    let date_of_birth = request.date_of_birth.as_deref().map(parse_date_of_birth).transpose()?;
    if request.full_name.is_none() && date_of_birth.is_none() {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-profile", "Invalid profile", "give full_name, date_of_birth or both"));
    }
    let principal = caller.principal();
    let submission = Submission { command_type: "UpdateProfile", topic: AUTH_TOPIC, key: user_id.clone(), subject: user_id, status_query: None };
    commands::submit(&state, &headers, submission, &request, auth_command(principal, AuthPayload::UpdateProfile(UpdateProfile { full_name: request.full_name.clone(), date_of_birth }))).await
}

fn issue_tokens(state: &SharedState, user_id: &str) -> Result<TokenResponse, Problem> {
    let now = now_ms();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = &state.settings;
    let access = state.keys.issue(user_id, &[roles::USER], TokenUse::Access, now, settings.access_ttl_s, &format!("a-{id}")).map_err(Problem::internal)?;
    let refresh = state.keys.issue(user_id, &[roles::USER], TokenUse::Refresh, now, settings.refresh_ttl_s, &format!("r-{id}")).map_err(Problem::internal)?;
    Ok(TokenResponse { access_token: access, refresh_token: refresh, token_type: "Bearer".to_string(), expires_in: settings.access_ttl_s, user_id: user_id.to_string() })
}

/// The envelope of an auth command, built once its id and idempotency key are known.
fn auth_command(principal: Principal, payload: AuthPayload) -> impl FnOnce(String, Option<String>) -> AuthCommand {
    move |event_id, idempotency_key| AuthCommand { event_id, occurred_at: TimestampMillis(now_ms()), principal, idempotency_key, payload }
}

fn account_closed() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "account-closed", "Account closed", "this account was closed after a death notification")
}

fn invalid_credentials() -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Invalid credentials", "wrong email or password")
}

pub(crate) fn check_password(password: &str) -> Result<(), Problem> {
    let chars = password.chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak-password",
            "Password not accepted",
            format!("a password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters, this one has {chars}"),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Problem> {
    let chars = name.trim().chars().count();
    if chars == 0 || chars > 200 || name.chars().any(char::is_control) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-profile", "Invalid profile", "full_name must be 1 to 200 printable characters"));
    }
    Ok(())
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes), off the async threads, on one of
/// the login guard's threads.
pub(crate) async fn hash_password(guard: &LoginGuard, password: String) -> Result<String, Problem> {
    guard
        .compute(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default().hash_password(password.as_bytes(), &salt).map(|hash| hash.to_string())
        })
        .await?
        .map_err(|e| Problem::internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against `account`'s stored hash in one of the login guard's slots. A
/// stored hash whose parameters lie outside the bounds (docs/security.md) is never computed:
/// the check fails.
async fn verify_password(guard: &LoginGuard, account: &str, password: String, phc: String) -> Result<bool, Problem> {
    if sluice_processors::auth_validation::is_argon2id_phc(&phc) {
        guard
            .compute(move || match PasswordHash::new(&phc) {
                Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
                Err(_) => false,
            })
            .await
    } else {
        tracing::warn!(user = account, "the stored password hash is not an argon2id hash within the bounds; not computing it");
        Ok(false)
    }
}

/// An argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2x1aWNlLWR1bW15LXNhbHQ$3F0a3mUyq1dqsVPjyBqN0o6qC4a9s3N7D8bT7YbJ5kA";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_to_argon2id_and_verify() {
        let guard = LoginGuard::new(1, crate::login_guard::SLOT_WAIT);
        let hash = hash_password(&guard, "correct horse battery".to_string()).await.unwrap();
        assert!(sluice_processors::auth_validation::is_argon2id_phc(&hash), "{hash}");
        assert!(verify_password(&guard, "u", "correct horse battery".to_string(), hash.clone()).await.unwrap());
        assert!(!verify_password(&guard, "u", "wrong horse battery".to_string(), hash).await.unwrap());
        let hostile = "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string();
        assert!(!verify_password(&guard, "u", "anything".to_string(), hostile).await.unwrap(), "never computed");
        assert!(PasswordHash::new(DUMMY_HASH).is_ok(), "the dummy hash parses, so unknown users cost a full verification");
    }

    #[test]
    fn password_bounds() {
        assert_eq!(check_password("short").unwrap_err().type_uri, "https://sluice.dev/problems/weak-password");
        assert!(check_password("long enough!").is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
