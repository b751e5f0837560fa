//! Payments with their lifecycle (docs/architecture.md, payments): the caller's payments newest first,
//! filtered by status, direction and kind, and one payment by id, read from the processors'
//! `payments` store through interactive queries.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_processors::model::stores;
use sluice_processors::payments::{self, PaymentRecord, Side};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{money_text, DEFAULT_PAGE, MAX_PAGE};
use crate::auth::{symbol, Caller};
use crate::commands::forbidden;
use crate::problem::Problem;
use crate::SharedState;

/// Records read from the store per interactive query while filtering.
const SCAN_CHUNK: usize = 500;

/// Which payments, and which page of them.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentsParams {
    /// `pending`, `completed`, `failed`, `partially_refunded` or `refunded`.
    pub status: Option<String>,
    /// `outgoing` (money out of the account) or `incoming`.
    pub direction: Option<String>,
    /// `transfer`, `deposit`, `withdrawal` or `refund`.
    pub kind: Option<String>,
    /// Payments to skip (newest first). Default 0.
    pub skip: Option<usize>,
    /// Payments to return, 1 to 100. Default 20.
    pub limit: Option<usize>,
    /// Whose payments, when not the caller's (operators).
    pub user_id: Option<String>,
}

/// A payment, as one of its parties sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentResponse {
    /// The payment id: the id of the command that created it.
    pub payment_id: String,
    /// TRANSFER, DEPOSIT, WITHDRAWAL or REFUND.
    pub kind: String,
    /// `outgoing` or `incoming`, for this account.
    pub direction: String,
    /// `pending`, `completed`, `failed`, `partially_refunded` or `refunded`.
    pub status: String,
    /// Amount, a decimal string.
    #[schema(example = "25.00")]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The other party of a transfer or refund (user id).
    pub counterparty: Option<String>,
    /// What the other party is called (`Ada L.`; a masked email for a user without a name).
    pub counterparty_name: Option<String>,
    /// Free text from the command.
    pub reference: Option<String>,
    /// Machine-readable reason of a failure, e.g. `insufficient_funds`.
    pub reason: Option<String>,
    /// Human-readable detail of a failure.
    pub detail: Option<String>,
    /// Refunded so far, a decimal string.
    pub refunded_amount: String,
    /// For refunds: the transfer they refund.
    pub refund_of: Option<String>,
    /// When the payment was accepted (ms since the epoch).
    pub created_at_ms: i64,
    /// When its status last changed (ms since the epoch).
    pub updated_at_ms: i64,
}

impl PaymentResponse {
    /// `record` as answered, amounts with its currency's minor units.
    pub fn new(state: &SharedState, record: PaymentRecord) -> PaymentResponse {
        PaymentResponse {
            payment_id: record.payment_id,
            kind: symbol(&record.kind),
            direction: symbol(&record.direction),
            status: record.status.name().to_string(),
            amount: money_text(state, &record.currency, record.amount),
            currency: record.currency.clone(),
            counterparty_name: record.counterparty.as_deref().and_then(|id| crate::users::counterparty_name(state, id)),
            counterparty: record.counterparty,
            reference: record.reference,
            reason: record.reason,
            detail: record.detail,
            refunded_amount: money_text(state, &record.currency, record.refunded_amount),
            refund_of: record.refund_of,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
        }
    }
}

/// A page of payments, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentsPage {
    /// The payments.
    pub payments: Vec<PaymentResponse>,
    /// Payments skipped.
    pub skip: usize,
    /// Page size asked for.
    pub limit: usize,
    /// The `skip` of the next page, if there is one.
    pub next_skip: Option<usize>,
}

const STATUSES: &[&str] = &["pending", "completed", "failed", "partially_refunded", "refunded"];
const DIRECTIONS: &[&str] = &["outgoing", "incoming"];
const KINDS: &[&str] = &["transfer", "deposit", "withdrawal", "refund"];

/// A filter value, checked against the values it may take.
fn filter(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<Option<String>, Problem> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_lowercase();
    if allowed.contains(&value.as_str()) {
        Ok(Some(value))
    } else {
        Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query", format!("{name} must be one of {}, got `{value}`", allowed.join(", "))))
    }
}

/// Whose payments the caller asks for: their own, or (operators) any user's.
fn owner(caller: &Caller, user_id: Option<&str>) -> Result<String, Problem> {
    match user_id {
        Some(user_id) if caller.may_act_for(user_id) => Ok(user_id.to_string()),
        Some(user_id) => Err(forbidden(&format!("`{}` may not read the payments of `{user_id}`", caller.claims.sub))),
        None => Ok(caller.user()?.user_id.clone()),
    }
}

fn decode(bytes: &[u8]) -> Result<PaymentRecord, Problem> {
    serde_json::from_slice(bytes).map_err(|e| Problem::internal(format!("unreadable payment: {e}")))
}

/// The caller's payments, newest first: transfers and refunds they sent or received, deposits
/// and withdrawals, each with its status. Filters combine; `skip`/`limit` page the filtered list.
#[utoipa::path(get, path = "/v1/payments", tag = "queries", security(("bearer" = [])), params(PaymentsParams),
    responses((status = 200, body = PaymentsPage), (status = 400, body = Problem, description = "invalid-query, invalid-limit"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem, description = "store-unavailable (rebalancing): retry")))]
pub async fn list(State(state): State<SharedState>, caller: Caller, Query(params): Query<PaymentsParams>) -> Result<Json<PaymentsPage>, Problem> {
    let user_id = owner(&caller, params.user_id.as_deref())?;
    let status = filter("status", params.status.as_deref(), STATUSES)?;
    let direction = filter("direction", params.direction.as_deref(), DIRECTIONS)?;
    let kind = filter("kind", params.kind.as_deref(), KINDS)?;
    let (skip, limit) = (params.skip.unwrap_or(0), params.limit.unwrap_or(DEFAULT_PAGE));
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let unfiltered = status.is_none() && direction.is_none() && kind.is_none();
    let prefix = payments::records_prefix(&user_id);
    let wanted = |p: &PaymentResponse| {
        status.as_deref().is_none_or(|s| p.status == s)
            && direction.as_deref().is_none_or(|d| p.direction == d)
            && kind.as_deref().is_none_or(|k| p.kind.eq_ignore_ascii_case(k))
    };
    // Without filters the store pages; with them, the user's records are read in order, in
    // chunks, until the page and one more are found (so that `next_skip` is exact).
    let (mut matched, mut offset): (Vec<PaymentResponse>, usize) = (Vec::new(), if unfiltered { skip } else { 0 });
    let needed = if unfiltered { limit + 1 } else { skip.saturating_add(limit).saturating_add(1) };
    loop {
        let chunk = if unfiltered { needed } else { SCAN_CHUNK };
        let served = state.queries.scan(stores::PAYMENTS, &user_id, &prefix, offset, chunk).await?;
        let read = served.value.len();
        for (_, bytes) in &served.value {
            let payment = PaymentResponse::new(&state, decode(bytes)?);
            if wanted(&payment) {
                matched.push(payment);
            }
        }
        offset = offset.saturating_add(read);
        if read < chunk || matched.len() >= needed {
            break;
        }
    }
    let mut page: Vec<PaymentResponse> = if unfiltered { matched } else { matched.into_iter().skip(skip).collect() };
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(PaymentsPage { payments: page, skip, limit, next_skip: more.then_some(skip.saturating_add(limit)) }))
}

/// Whose payment: the caller's by default.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentParams {
    /// The account, when not the caller's (operators).
    pub user_id: Option<String>,
}

/// One of the caller's payments, with its status.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "queries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment id: the command id from the 202 answer"), PaymentParams),
    responses((status = 200, body = PaymentResponse), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "payment-not-found"), (status = 503, body = Problem)))]
pub async fn get(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>, Query(params): Query<PaymentParams>) -> Result<Json<PaymentResponse>, Problem> {
    let user_id = owner(&caller, params.user_id.as_deref())?;
    Ok(Json(PaymentResponse::new(&state, find(&state, &user_id, &id).await?)))
}

/// `user_id`'s record of payment `id` on `side`, if they have one.
pub async fn find_on(state: &SharedState, user_id: &str, side: Side, id: &str) -> Result<Option<PaymentRecord>, Problem> {
    let pointer = state.queries.get_on(stores::PAYMENTS, user_id, &payments::pointer_key(user_id, side, id)).await?;
    let Some(bytes) = pointer.value else { return Ok(None) };
    let key: String = serde_json::from_slice(&bytes).map_err(|e| Problem::internal(format!("unreadable payment pointer: {e}")))?;
    state.queries.get_on(stores::PAYMENTS, user_id, &key).await?.value.map(|bytes| decode(&bytes)).transpose()
}

/// `user_id`'s record of payment `id` (the one they sent, else the one they received), or 404
/// `payment-not-found` (saying so when the command was accepted and is not processed yet).
pub async fn find(state: &SharedState, user_id: &str, id: &str) -> Result<PaymentRecord, Problem> {
    for side in [Side::Payer, Side::Payee] {
        if let Some(record) = find_on(state, user_id, side, id).await? {
            return Ok(record);
        }
    }
    let detail = match state.idempotency.accepted_command(id) {
        Some(accepted) if accepted.key == user_id => format!("payment `{id}` is accepted and not processed yet: follow /v1/commands/{id}"),
        _ => format!("no payment `{id}` for `{user_id}`"),
    };
    Err(Problem::new(StatusCode::NOT_FOUND, "payment-not-found", "No such payment", detail))
}
