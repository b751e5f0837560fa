//! Password reset (docs/security.md, password reset): a request makes a single-use, expiring
//! token and delivers it to the account holder through the [`Outbox`] (never through Kafka:
//! the pipeline only ever sees its SHA-256); the confirmation presents the token with a new
//! password, which the pipeline applies and which revokes every session.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_processors::model::{self, CommandState, CommandStatus};
use sluice_schemas::types::{AuthCommand, AuthPayload, ConfirmPasswordReset, Principal, RequestPasswordReset, UserStatus};
use sluice_schemas::TimestampMillis;
use utoipa::ToSchema;

use crate::auth::{self, AUTH_TOPIC};
use crate::body::ApiJson;
use crate::commands::{self, Submission};
use crate::problem::Problem;
use crate::SharedState;

/// How long a route waits for the pipeline's decision before it answers 202: 2 s less than the
/// request timeout (so that the 202 and its status URL, not a timeout, reach the client), and
/// at least 1 s.
pub fn decision_wait(state: &SharedState) -> Duration {
    state.settings.request_timeout.saturating_sub(Duration::from_secs(2)).max(Duration::from_secs(1))
}

/// Reset requests per email address: 3 in a burst, then one a minute.
pub fn limiter() -> crate::ops::RateLimiter {
    crate::ops::RateLimiter::per_minute(1, 3)
}

/// Where reset messages go: a directory a mail relay sends from, one RFC 5322 message per
/// file (`sluice dev`: `.sluice/outbox`, where a developer reads them).
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Writes messages into `dir` (created if missing).
    pub fn new(dir: PathBuf) -> Outbox {
        Outbox { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes one message to `to`, readable by its owner only; answers the file written.
    pub fn deliver(&self, to: &str, subject: &str, body: &str) -> std::io::Result<PathBuf> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("{}-{}.eml", sluice_streams::now_ms(), uuid::Uuid::new_v4().simple());
        let path = self.dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path)?;
        write!(file, "To: {to}\r\nFrom: Sluice <no-reply@sluice.invalid>\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n")?;
        Ok(path)
    }
}

/// `POST /v1/auth/reset-password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's email.
    #[schema(example = "ada@example.com")]
    pub email: String,
}

/// The same answer whether the account exists or not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetRequested {
    /// What happens next.
    pub detail: String,
    /// How long a reset token holds, seconds.
    pub expires_in: u64,
}

/// The SHA-256 of a token, hex: all the pipeline ever sees of it.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Ask for a password reset: if an active account has this email, a single-use token valid for
/// `password_reset_ttl_s` is sent to it (in dev: a file in `.sluice/outbox`). The answer is the
/// same either way, so this route tells nobody whether an email has an account.
#[utoipa::path(post, path = "/v1/auth/reset-password", tag = "auth", request_body = ResetRequest,
    responses((status = 202, body = ResetRequested), (status = 422, body = Problem, description = "invalid-email"),
        (status = 429, body = Problem, description = "too-many-requests"), (status = 503, body = Problem, description = "reset-unavailable: no outbox configured")))]
pub async fn request(State(state): State<SharedState>, _headers: HeaderMap, ApiJson(request): ApiJson<ResetRequest>) -> Result<Response, Problem> {
    let Some(outbox) = state.settings.reset_outbox.as_ref() else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "reset-unavailable", "Password reset unavailable", "this API has no password_reset_outbox to deliver reset tokens through"));
    };
    let email = model::normalise_email(&request.email);
    if !model::is_plausible_email(&email) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "Invalid email", format!("`{}` is not an email address", request.email)));
    }
    let user_id = model::user_id_for_email(&email);
    state.reset_limiter.check(&user_id)?;
    let ttl = state.settings.reset_ttl_s;
    let answer = ResetRequested { detail: "if an account has this email, a reset token was sent to it".to_string(), expires_in: ttl };
    // The rest happens after the answer, so that neither the answer nor its timing says whether
    // the account exists (an Idempotency-Key, if sent, is ignored for the same reason: a retry
    // asks for a new token, which replaces the last).
    let outbox = outbox.clone();
    tokio::spawn(async move {
        if let Err(problem) = send_token(&state, &outbox, &user_id, ttl).await {
            tracing::warn!(%user_id, detail = %problem.detail, "password reset: the token could not be sent");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// For an active account: publishes the token's hash, then delivers the token.
async fn send_token(state: &SharedState, outbox: &Outbox, user_id: &str, ttl: u64) -> Result<(), Problem> {
    let user_id = user_id.to_string();
    let user = auth::read_user(state, &user_id).await?;
    if let Some(user) = user.filter(|u| u.status == UserStatus::Active) {
        let token = format!("{user_id}.{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let expires_at = TimestampMillis(sluice_streams::now_ms() + i64::try_from(ttl).unwrap_or(i64::MAX / 2) * 1000);
        let principal = Principal { subject: user_id.clone(), roles: Vec::new(), token_issued_at: TimestampMillis(0) };
        let payload = AuthPayload::RequestPasswordReset(RequestPasswordReset { token_sha256: token_sha256(&token), expires_at });
        let submission = Submission { command_type: "RequestPasswordReset", topic: AUTH_TOPIC, key: user_id.clone(), subject: user_id.clone(), status_query: None };
        // The command first: the token is sent only once the pipeline will know its hash.
        let published = commands::submit(state, &HeaderMap::new(), submission, &serde_json::json!({ "user": user_id }), anonymous(principal, payload)).await?;
        if !published.status().is_success() {
            return Err(Problem::internal(format!("the reset request was not published ({})", published.status())));
        }
        let body = format!(
            "Someone asked to reset the password of your Sluice account.\n\nYour reset token (valid {} minutes, once):\n\n{token}\n\nSet a new password with:\n\ncurl -X POST http://<sluice>/v1/auth/reset-password/confirm -H 'content-type: application/json' -d '{{\"token\": \"{token}\", \"new_password\": \"...\"}}'\n\nIf it was not you, ignore this message: your password stays as it is.",
            ttl / 60
        );
        outbox.deliver(&user.email, "Reset your Sluice password", &body).map_err(|e| Problem::internal(format!("cannot write to the reset outbox: {e}")))?;
    }
    Ok(())
}

fn anonymous(principal: Principal, payload: AuthPayload) -> impl FnOnce(String, Option<String>) -> AuthCommand {
    move |event_id, idempotency_key| AuthCommand { event_id, occurred_at: TimestampMillis(sluice_streams::now_ms()), principal, idempotency_key, payload }
}

/// The detail of every invalid token.
const INVALID_TOKEN: &str = "this is not a reset token Sluice sent, or a newer one replaced it";

/// `POST /v1/auth/reset-password/confirm`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmation {
    /// The token from the reset message.
    pub token: String,
    /// The new password (same rules as at sign-up).
    pub new_password: String,
}

/// The password was reset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetDone {
    /// What happened.
    pub detail: String,
}

/// Set a new password with a reset token: every session of the account is revoked. 200 once the
/// pipeline applied it; a reused, expired or unknown token is refused with its own type.
#[utoipa::path(post, path = "/v1/auth/reset-password/confirm", tag = "auth", request_body = ResetConfirmation,
    responses((status = 200, body = ResetDone), (status = 202, body = crate::commands::Accepted, description = "not decided yet: follow the status URL"),
        (status = 400, body = Problem, description = "invalid-reset-token, reset-token-used, reset-token-expired"), (status = 422, body = Problem, description = "weak-password")))]
pub async fn confirm(State(state): State<SharedState>, _headers: HeaderMap, ApiJson(request): ApiJson<ResetConfirmation>) -> Result<Response, Problem> {
    let invalid = || Problem::new(StatusCode::BAD_REQUEST, "invalid-reset-token", "Invalid reset token", INVALID_TOKEN);
    let token = request.token.trim();
    let Some((user_id, secret)) = token.split_once('.') else { return Err(invalid()) };
    if !user_id.starts_with("u_") || user_id.len() > 64 || secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    auth::check_password(&request.new_password)?;
    // Guessing is bounded like logins: per account, and the pipeline's single-use check.
    state.login_guard.check(user_id, std::time::Instant::now())?;
    let password_hash = auth::hash_password(&state.login_guard, request.new_password.clone()).await?;
    let principal = Principal { subject: user_id.to_string(), roles: Vec::new(), token_issued_at: TimestampMillis(0) };
    let payload = AuthPayload::ConfirmPasswordReset(ConfirmPasswordReset { token_sha256: token_sha256(token), password_hash });
    let submission = Submission { command_type: "ConfirmPasswordReset", topic: AUTH_TOPIC, key: user_id.to_string(), subject: user_id.to_string(), status_query: None };
    let fingerprint = serde_json::json!({ "token": token_sha256(token) });
    // No Idempotency-Key: anyone may call this route naming any account, and a key used here
    // would be used up for that account's own commands (a confirmation is single-use anyway).
    let accepted = commands::submit(&state, &HeaderMap::new(), submission, &fingerprint, anonymous(principal, payload)).await?;
    let (command_id, accepted) = match commands::accepted_command_id(accepted).await? {
        Ok(accepted) => accepted,
        Err(other) => return Ok(other),
    };
    match commands::wait_for_status(&state, user_id, &command_id, decision_wait(&state)).await {
        Some(status) if status.status == CommandState::Settled => Ok(Json(ResetDone { detail: "the password was reset and every session signed out: log in with the new password".to_string() }).into_response()),
        Some(status) => {
            state.login_guard.failed(user_id, std::time::Instant::now());
            Err(refusal(&status))
        }
        None => Ok(accepted),
    }
}

fn refusal(status: &CommandStatus) -> Problem {
    let reason = status.reason.as_deref().unwrap_or("rejected");
    let (code, title) = match reason {
        model::reasons::RESET_TOKEN_USED => (StatusCode::BAD_REQUEST, "Reset token used"),
        model::reasons::RESET_TOKEN_EXPIRED => (StatusCode::BAD_REQUEST, "Reset token expired"),
        model::reasons::INVALID_RESET_TOKEN | model::reasons::USER_UNKNOWN => (StatusCode::BAD_REQUEST, "Invalid reset token"),
        model::reasons::ACCOUNT_FROZEN => (StatusCode::FORBIDDEN, "Account closed"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "Password reset refused"),
    };
    // Every invalid token reads the same, whoever it names: nobody learns from this route which
    // user ids exist.
    if title == "Invalid reset token" {
        return Problem::new(code, "invalid-reset-token", title, INVALID_TOKEN);
    }
    crate::compat::reason_problem(status, code, title)
}
