//! `GET /v1/users/lookup?email=`: confirmation of payee. An authenticated user asks whether an
//! email belongs to a Sluice user before sending money to it, and gets a display name ("Ada
//! L."), nothing more; lookups are limited per caller so the route cannot list the users.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_processors::model;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{read_user, Caller};
use crate::problem::Problem;
use crate::SharedState;

/// Lookups per caller: 30 a minute on average, 10 at once.
pub const LOOKUPS_PER_MINUTE: u32 = 30;
/// See [`LOOKUPS_PER_MINUTE`].
pub const LOOKUP_BURST: u32 = 10;

/// The email looked up.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    /// The payee's email address.
    pub email: Option<String>,
}

/// A payee that exists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayeeLookup {
    /// Always true (an unknown email is 404 `payee-not-found`).
    pub exists: bool,
    /// The payee's first name and the initial of their last name (`Ada L.`), or their email
    /// with the local part masked (`a***@example.com`) before they gave a name.
    #[schema(example = "Ada L.")]
    pub display_name: String,
}

/// Whether a payee exists, with a display name to confirm it.
#[utoipa::path(get, path = "/v1/users/lookup", tag = "queries", security(("bearer" = [])), params(LookupParams),
    responses((status = 200, body = PayeeLookup), (status = 404, body = Problem, description = "payee-not-found"),
        (status = 422, body = Problem, description = "invalid-email"), (status = 429, body = Problem, description = "rate-limited")))]
pub async fn lookup(State(state): State<SharedState>, caller: Caller, Query(params): Query<LookupParams>) -> Result<Json<PayeeLookup>, Problem> {
    state.lookup_limiter.check(&format!("lookup:{}", caller.claims.sub))?;
    let email = model::normalise_email(params.email.as_deref().unwrap_or_default());
    if !model::is_plausible_email(&email) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-email", "Invalid email", format!("`{email}` is not an email address (give ?email=)")));
    }
    let user = read_user(&state, &model::user_id_for_email(&email)).await?;
    let Some(user) = user else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "payee-not-found", "No such payee", "no Sluice user has that email"));
    };
    Ok(Json(PayeeLookup { exists: true, display_name: display_name(user.full_name.as_deref(), &email) }))
}

/// `Ada L.` from `Ada Lovelace`; `a***@example.com` without a name.
pub fn display_name(full_name: Option<&str>, email: &str) -> String {
    let words: Vec<&str> = full_name.unwrap_or_default().split_whitespace().collect();
    match words.as_slice() {
        [] => {
            let (local, domain) = email.split_once('@').unwrap_or((email, ""));
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        [only] => (*only).to_string(),
        [first, .., last] => format!("{first} {}.", last.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default()),
    }
}

/// What the other party of a payment is called, for its counterparty: a user's display name
/// ([`display_name`], from the API's users replica), or what a system account is; `None` when
/// the replica does not know the user (yet).
pub fn counterparty_name(state: &crate::SharedState, user_id: &str) -> Option<String> {
    if user_id == sluice_processors::accounts::WELCOME_CREDIT_ACCOUNT {
        return Some("Welcome credit".to_string());
    }
    let bytes = state.users.as_ref()?.get(user_id)??;
    let user: sluice_processors::model::User = serde_json::from_slice(&bytes).ok()?;
    Some(display_name(user.full_name.as_deref(), &user.email))
}

/// The lookup limiter of [`crate::AppState`].
pub fn limiter() -> crate::ops::RateLimiter {
    crate::ops::RateLimiter::per_minute(LOOKUPS_PER_MINUTE, LOOKUP_BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_show_a_first_name_and_an_initial_or_a_masked_email() {
        assert_eq!(display_name(Some("Ada King Lovelace"), "ada@example.com"), "Ada L.");
        assert_eq!(display_name(Some("Cher"), "cher@example.com"), "Cher");
        assert_eq!(display_name(None, "bob@example.com"), "b***@example.com");
        assert_eq!(display_name(Some("  "), "bob@example.com"), "b***@example.com");
    }
}
