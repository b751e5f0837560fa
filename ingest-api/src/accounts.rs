//! Queries over the processors' stores (interactive queries, routed to the instance that owns
//! the key): a command's status, the caller's account and its history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_processors::model::{self, roles, stores, Account, CommandState, CommandStatus, LedgerEntry};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{symbol, Caller};
use crate::commands::forbidden;
use crate::problem::Problem;
use crate::SharedState;

/// Default page size of the transaction history.
pub const DEFAULT_PAGE: usize = 20;
/// Largest page of the transaction history.
pub const MAX_PAGE: usize = 100;

/// Whose command: the caller's by default.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandParams {
    /// The account the command acted on, when not the caller's (operators).
    pub user_id: Option<String>,
    /// The NIN of a death notification (role `hmrc`).
    pub nin: Option<String>,
    /// The NHS number of a death notification (role `hmrc`).
    pub nhs_number: Option<String>,
}

/// A command's status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommandStatusResponse {
    /// The command id.
    pub command_id: String,
    /// E.g. `Transfer`.
    pub command_type: String,
    /// `accepted` (published, not processed yet), `pending` (in progress), `settled` or `rejected`.
    pub status: String,
    /// Machine-readable reason when rejected, e.g. `insufficient_funds`.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub detail: Option<String>,
    /// When the status last changed (ms since the epoch), once processed.
    pub updated_at_ms: Option<i64>,
}

/// The status of a command: accepted, pending, settled or rejected with a reason.
#[utoipa::path(get, path = "/v1/commands/{id}", tag = "queries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Command id from the 202 answer"), CommandParams),
    responses((status = 200, body = CommandStatusResponse), (status = 403, body = Problem), (status = 404, body = Problem, description = "command-not-found"),
        (status = 503, body = Problem, description = "store-unavailable (rebalancing): retry")))]
pub async fn command_status(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>, Query(params): Query<CommandParams>) -> Result<Json<CommandStatusResponse>, Problem> {
    use sluice_schemas::types::IdentifierType;
    let identifier = match (&params.nin, &params.nhs_number) {
        (Some(_), Some(_)) => return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query", "give nin or nhs_number, not both")),
        (Some(nin), None) => Some((IdentifierType::Nin, nin)),
        (None, Some(nhs)) => Some((IdentifierType::Nhs, nhs)),
        (None, None) => None,
    };
    let (store, key) = match (&params.user_id, identifier) {
        (Some(_), Some(_)) => return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query", "give user_id or an identifier (nin, nhs_number), not both")),
        (None, Some((kind, value))) => {
            if !caller.claims.has_role(roles::HMRC) && !caller.claims.has_role(roles::OPERATOR) {
                return Err(forbidden("only hmrc and operators may read death notifications"));
            }
            let value = sluice_processors::identifiers::normalise(kind, value).map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-identifier", "Invalid identifier", e.to_string()))?;
            (stores::NOTIFICATION_STATUS, model::identifier_key(kind, &value))
        }
        (Some(user_id), None) if caller.may_act_for(user_id) => (stores::COMMAND_STATUS, user_id.clone()),
        (Some(user_id), None) => return Err(forbidden(&format!("`{}` may not read the commands of `{user_id}`", caller.claims.sub))),
        (None, None) => (stores::COMMAND_STATUS, caller.claims.sub.clone()),
    };
    let served = state.queries.get_on(store, &key, &model::status_key(&key, &id)).await?;
    if let Some(bytes) = served.value {
        let status: CommandStatus = serde_json::from_slice(&bytes).map_err(|e| Problem::internal(format!("unreadable command status: {e}")))?;
        // Statuses are kept per user (or NIN); the owner is checked again all the same
        // (docs/security.md, command statuses).
        if store == stores::COMMAND_STATUS && status.user_id != key {
            return Err(command_not_found(&id, &key));
        }
        return Ok(Json(CommandStatusResponse {
            command_id: status.command_id,
            command_type: status.command_type,
            status: state_name(status.status).to_string(),
            reason: status.reason,
            detail: status.detail,
            updated_at_ms: Some(status.updated_at_ms),
        }));
    }
    match state.idempotency.accepted_command(&id) {
        Some(accepted) if accepted.key == key => Ok(Json(CommandStatusResponse {
            command_id: id,
            command_type: accepted.command_type.to_string(),
            status: "accepted".to_string(),
            reason: None,
            detail: None,
            updated_at_ms: None,
        })),
        _ => Err(command_not_found(&id, &key)),
    }
}

fn command_not_found(id: &str, key: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "command-not-found", "No such command", format!("no command `{id}` for `{key}`"))
}

/// `amount` written with `currency`'s minor units (two for a currency no longer configured).
pub fn money_text(state: &SharedState, currency: &str, amount: rust_decimal::Decimal) -> String {
    let places = state.settings.pipeline.minor_units(currency).unwrap_or(2) as usize;
    format!("{amount:.places$}")
}

fn state_name(state: CommandState) -> &'static str {
    match state {
        CommandState::Pending => "pending",
        CommandState::Settled => "settled",
        CommandState::Rejected => "rejected",
    }
}

/// A balance in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CurrencyBalance {
    /// ISO 4217 code.
    pub currency: String,
    /// Balance, a decimal string with the currency's minor units.
    #[schema(example = "120.50")]
    pub balance: String,
}

/// The caller's account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountResponse {
    /// The holder.
    pub user_id: String,
    /// Balance in the home currency, a decimal string.
    #[schema(example = "120.50")]
    pub balance: String,
    /// ISO 4217 code of the home currency.
    pub currency: String,
    /// Every balance the account holds, the home currency first.
    pub balances: Vec<CurrencyBalance>,
    /// `open`, `frozen`, or `not_opened` before the first payment.
    pub status: String,
    /// Why it was frozen.
    pub frozen_reason: Option<String>,
    /// ACTIVE, FROZEN or DECEASED.
    pub user_status: String,
    /// BROWSING, BASIC or FULL.
    pub kyc_level: String,
}

/// Balance, account status and KYC level of the caller.
#[utoipa::path(get, path = "/v1/accounts/me", tag = "queries", security(("bearer" = [])),
    responses((status = 200, body = AccountResponse), (status = 401, body = Problem), (status = 503, body = Problem)))]
pub async fn my_account(State(state): State<SharedState>, caller: Caller) -> Result<Json<AccountResponse>, Problem> {
    account_of(&state, caller.user()?).await.map(Json)
}

/// The account of `user` (as `GET /v1/accounts/me` answers it; an operator's view too).
pub async fn account_of(state: &SharedState, user: &sluice_processors::model::User) -> Result<AccountResponse, Problem> {
    let served = state.queries.get(stores::ACCOUNTS, &user.user_id).await?;
    let account = served.value.map(|bytes| serde_json::from_slice::<Account>(&bytes)).transpose().map_err(|e| Problem::internal(format!("unreadable account: {e}")))?;
    let (user_status, kyc_level) = (symbol(&user.status), symbol(&user.kyc_level));
    Ok(match account {
        Some(account) => AccountResponse {
            balances: account.balances().into_iter().map(|(currency, balance)| CurrencyBalance { balance: money_text(state, &currency, balance), currency }).collect(),
            user_id: account.user_id,
            balance: format!("{:.2}", account.balance),
            currency: account.currency,
            status: symbol(&account.status),
            frozen_reason: account.frozen_reason,
            user_status,
            kyc_level,
        },
        None => AccountResponse {
            user_id: user.user_id.clone(),
            balance: format!("{:.2}", state.settings.pipeline.opening_balance),
            currency: state.settings.pipeline.currency.clone(),
            balances: vec![CurrencyBalance { currency: state.settings.pipeline.currency.clone(), balance: format!("{:.2}", state.settings.pipeline.opening_balance) }],
            status: "not_opened".to_string(),
            frozen_reason: None,
            user_status,
            kyc_level,
        },
    })
}

/// A page of history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Entries to skip (newest first). Default 0.
    pub skip: Option<usize>,
    /// Entries to return, 1 to 100. Default 20.
    pub limit: Option<usize>,
}

/// One entry of the history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransactionResponse {
    /// Position in the account's history, from 0.
    pub sequence: u64,
    /// The payment command.
    pub command_id: String,
    /// TRANSFER, DEPOSIT, WITHDRAWAL or REFUND.
    pub kind: String,
    /// `debit` or `credit`.
    pub direction: String,
    /// Amount, a decimal string.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance in this currency after it.
    pub balance_after: String,
    /// The other party of a transfer or refund.
    pub counterparty: Option<String>,
    /// What the other party is called (`Ada L.`; a masked email for a user without a name).
    pub counterparty_name: Option<String>,
    /// Free text.
    pub reference: Option<String>,
    /// Set when the money came back, with why.
    pub reversal_reason: Option<String>,
    /// When (ms since the epoch).
    pub timestamp_ms: i64,
}

/// A page of transactions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransactionsPage {
    /// The entries.
    pub transactions: Vec<TransactionResponse>,
    /// Entries skipped.
    pub skip: usize,
    /// Page size asked for.
    pub limit: usize,
    /// The `skip` of the next page, if there may be one.
    pub next_skip: Option<usize>,
}

/// The caller's transactions, newest first, `skip`/`limit` paginated.
#[utoipa::path(get, path = "/v1/accounts/me/transactions", tag = "queries", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = TransactionsPage), (status = 400, body = Problem, description = "invalid-limit")))]
pub async fn my_transactions(State(state): State<SharedState>, caller: Caller, Query(page): Query<PageParams>) -> Result<Json<TransactionsPage>, Problem> {
    transactions_of(&state, &caller.user()?.user_id, &page).await.map(Json)
}

/// A page of `user_id`'s transactions, newest first (an operator's view too).
pub async fn transactions_of(state: &SharedState, user_id: &str, page: &PageParams) -> Result<TransactionsPage, Problem> {
    let (skip, limit) = (page.skip.unwrap_or(0), page.limit.unwrap_or(DEFAULT_PAGE));
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to {MAX_PAGE}, got {limit}")));
    }
    let served = state.queries.scan(stores::LEDGER, user_id, &model::ledger_prefix(user_id), skip, limit).await?;
    let transactions = served
        .value
        .iter()
        .map(|(_, bytes)| serde_json::from_slice::<LedgerEntry>(bytes).map(|entry| transaction(state, &entry)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(format!("unreadable ledger entry: {e}")))?;
    let next_skip = (transactions.len() == limit).then_some(skip + limit);
    Ok(TransactionsPage { transactions, skip, limit, next_skip })
}

fn transaction(state: &SharedState, entry: &LedgerEntry) -> TransactionResponse {
    // Entries from before currencies are in the pipeline's default one.
    let currency = entry.currency.clone().unwrap_or_else(|| state.settings.pipeline.currency.clone());
    TransactionResponse {
        sequence: entry.sequence,
        command_id: entry.command_id.clone(),
        kind: symbol(&entry.kind),
        direction: symbol(&entry.direction),
        amount: money_text(state, &currency, entry.amount),
        balance_after: money_text(state, &currency, entry.balance_after),
        currency,
        counterparty: entry.counterparty.clone(),
        counterparty_name: entry.counterparty.as_deref().and_then(|id| crate::users::counterparty_name(state, id)),
        reference: entry.reference.clone(),
        reversal_reason: entry.reversal_reason.clone(),
        timestamp_ms: entry.timestamp_ms,
    }
}
