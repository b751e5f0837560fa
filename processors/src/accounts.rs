//! Accounts and their ledger, shared by balance-check (payer side) and settlement (payee side),
//! which run in the same task and so see the same `accounts` and `ledger` stores.

use rust_decimal::Decimal;
use sluice_schemas::types::{AccountEvent, AccountEventPayload, AccountOpened, PaymentKind};
use sluice_streams::{ProcessError, ProcessorContext};

use crate::emit::{self, sinks};
use crate::model::{self, stores, Account, AccountStatus, Direction, LedgerEntry};
use crate::settings::PipelineSettings;

/// The system account a welcome credit comes from (the counterparty of its ledger entry).
pub const WELCOME_CREDIT_ACCOUNT: &str = "system:welcome-credit";

/// The account of `user_id`, opened now (with `accounts.events` AccountOpened) if it is new.
/// A configured `opening_balance` is booked as its first ledger entry: a credit from
/// [`WELCOME_CREDIT_ACCOUNT`], command id `welcome-credit:<user id>`, so that the ledger (and
/// the money invariant: balances = deposits - withdrawals + welcome credits) shows where it
/// came from.
pub fn open(ctx: &mut ProcessorContext<'_>, settings: &PipelineSettings, user_id: &str, causation_id: &str) -> Result<Account, ProcessError> {
    if let Some(account) = model::load::<Account>(ctx.store(stores::ACCOUNTS)?, user_id)? {
        return Ok(account);
    }
    let mut account = Account {
        user_id: user_id.to_string(),
        currency: settings.currency.clone(),
        // Money has two decimal places, a new account too ("0.00").
        balance: Decimal::new(0, 2),
        other_balances: Default::default(),
        status: AccountStatus::Open,
        frozen_reason: None,
        opened_at_ms: ctx.timestamp(),
        ledger_entries: 0,
    };
    model::save(ctx.store(stores::ACCOUNTS)?, user_id, &account)?;
    let opened = AccountEvent {
        event_id: format!("account-opened:{user_id}"),
        occurred_at: emit::now(ctx),
        user_id: user_id.to_string(),
        causation_id: causation_id.to_string(),
        payload: AccountEventPayload::AccountOpened(AccountOpened { currency: settings.currency.clone(), opening_balance: settings.opening_balance }),
    };
    emit::send(ctx, sinks::ACCOUNT_EVENTS, user_id, opened)?;
    if settings.opening_balance > Decimal::ZERO {
        let command_id = format!("welcome-credit:{user_id}");
        let welcome = Posting {
            command_id: &command_id,
            kind: PaymentKind::Deposit,
            direction: Direction::Credit,
            amount: settings.opening_balance,
            currency: &settings.currency,
            counterparty: Some(WELCOME_CREDIT_ACCOUNT),
            reference: Some("welcome credit"),
            reversal_reason: None,
        };
        post(ctx, &mut account, welcome)?;
    }
    Ok(account)
}

/// One movement on an account.
#[derive(Debug, Clone)]
pub struct Posting<'a> {
    /// The payment command.
    pub command_id: &'a str,
    /// Transfer, deposit, withdrawal or refund.
    pub kind: PaymentKind,
    /// Debit or credit.
    pub direction: Direction,
    /// Positive amount.
    pub amount: Decimal,
    /// Its currency (ISO 4217).
    pub currency: &'a str,
    /// The other party.
    pub counterparty: Option<&'a str>,
    /// Free text.
    pub reference: Option<&'a str>,
    /// Set on the credit that gives a reversed payment back.
    pub reversal_reason: Option<&'a str>,
}

/// Applies `posting` to `account`'s balance in its currency and writes the account and a ledger
/// entry. A debit beyond the balance is a bug (callers check funds first): the task fails
/// rather than go negative.
pub fn post(ctx: &mut ProcessorContext<'_>, account: &mut Account, posting: Posting<'_>) -> Result<(), ProcessError> {
    if posting.amount <= Decimal::ZERO {
        return Err(ProcessError::Fatal(format!("posting of {} on `{}` is not positive", posting.amount, account.user_id)));
    }
    let before = account.balance_in(posting.currency);
    let after = match posting.direction {
        Direction::Credit => before + posting.amount,
        Direction::Debit => before - posting.amount,
    };
    if after.is_sign_negative() {
        return Err(ProcessError::Fatal(format!("ledger invariant broken: `{}` would go negative in {}", account.user_id, posting.currency)));
    }
    account.set_balance(posting.currency, after);
    let entry = LedgerEntry {
        sequence: account.ledger_entries,
        command_id: posting.command_id.to_string(),
        kind: posting.kind,
        direction: posting.direction,
        amount: posting.amount,
        currency: Some(posting.currency.to_string()),
        balance_after: after,
        counterparty: posting.counterparty.map(str::to_string),
        reference: posting.reference.map(str::to_string),
        reversal_reason: posting.reversal_reason.map(str::to_string),
        timestamp_ms: ctx.timestamp(),
    };
    let key = model::ledger_key(&account.user_id, entry.sequence);
    account.ledger_entries += 1;
    model::save(ctx.store(stores::LEDGER)?, &key, &entry)?;
    model::save(ctx.store(stores::ACCOUNTS)?, &account.user_id.clone(), account)
}

/// Saves `account` (after a status change).
pub fn save(ctx: &mut ProcessorContext<'_>, account: &Account) -> Result<(), ProcessError> {
    model::save(ctx.store(stores::ACCOUNTS)?, &account.user_id, account)
}
