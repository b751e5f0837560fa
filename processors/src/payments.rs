//! Payments as their parties see them, with a lifecycle (docs/architecture.md, payments):
//! each user's payments in the `payments` store, newest first, and `payments.events`, one
//! record per transition of a payment, keyed by its payer.
//!
//! A payment is created by its command and is `pending` until it completes (the payee was
//! credited), fails (refused, or returned to the payer) or, once completed, is refunded in
//! part or in full by its payee. The payer's record holds the lifecycle; the payee of a
//! transfer or refund gets an incoming record once credited.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sluice_schemas::types::{PaymentEvent, PaymentEventType, PaymentKind};
use sluice_streams::{ProcessError, ProcessorContext};

use crate::emit::{self, sinks, Payment};
use crate::model::{self, reasons, stores};

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Accepted, the payee not credited yet.
    Pending,
    /// Done.
    Completed,
    /// Refused, or the money came back to the payer.
    Failed,
    /// Completed, then refunded in part.
    PartiallyRefunded,
    /// Completed, then refunded in full.
    Refunded,
}

impl PaymentStatus {
    /// The name clients see (`pending`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Completed => "completed",
            PaymentStatus::Failed => "failed",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

/// Which way the money went, for the user whose record it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentDirection {
    /// Money out of this user's account (transfers and refunds they sent, withdrawals).
    Outgoing,
    /// Money into it (transfers and refunds they received, deposits).
    Incoming,
}

/// One payment of one user, in the `payments` store at [`record_key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// The id of the command that created the payment.
    pub payment_id: String,
    /// Transfer, deposit, withdrawal or refund.
    pub kind: PaymentKind,
    /// For this user.
    pub direction: PaymentDirection,
    /// Where it is.
    pub status: PaymentStatus,
    /// Amount.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// The other party of a transfer or refund.
    pub counterparty: Option<String>,
    /// Free text from the command.
    pub reference: Option<String>,
    /// Machine-readable reason of a failure.
    pub reason: Option<String>,
    /// Human-readable detail of a failure.
    pub detail: Option<String>,
    /// Refunded so far (completed refunds).
    pub refunded_amount: Decimal,
    /// For refunds: the transfer they refund.
    pub refund_of: Option<String>,
    /// When the command was accepted (its record's timestamp, ms).
    pub created_at_ms: i64,
    /// When the status last changed (ms).
    pub updated_at_ms: i64,
}

/// Key of a payment record: `p/<user>/<created, newest first>/<payment id>`, so that a scan of
/// [`records_prefix`] lists a user's payments newest first.
pub fn record_key(user_id: &str, created_at_ms: i64, payment_id: &str) -> String {
    format!("p/{user_id}/{:016x}/{payment_id}", u64::MAX - created_at_ms.max(0) as u64)
}

/// Prefix of every payment record of `user_id`.
pub fn records_prefix(user_id: &str) -> String {
    format!("p/{user_id}/")
}

/// Which party's record: the payer's (who issued the payment; for deposits, the user credited)
/// or the payee's of a transfer or refund. Command ids are unique per sender only, so a user
/// can hold a payment they sent and one they received with the same id: each side apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The payment's issuer.
    Payer,
    /// The one a transfer or refund credited.
    Payee,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Payer => "payer",
            Side::Payee => "payee",
        }
    }
}

/// Key of the pointer from a payment id to its record's key: `pid/<user>/<side>/<payment id>`.
pub fn pointer_key(user_id: &str, side: Side, payment_id: &str) -> String {
    format!("pid/{user_id}/{}/{payment_id}", side.name())
}

/// A user's record of `payment_id` on `side` and its key, if they have one.
pub fn load(ctx: &mut ProcessorContext<'_>, user_id: &str, side: Side, payment_id: &str) -> Result<Option<(String, PaymentRecord)>, ProcessError> {
    let Some(key) = model::load::<String>(ctx.store(stores::PAYMENTS)?, &pointer_key(user_id, side, payment_id))? else { return Ok(None) };
    Ok(model::load::<PaymentRecord>(ctx.store(stores::PAYMENTS)?, &key)?.map(|record| (key, record)))
}

fn create(ctx: &mut ProcessorContext<'_>, user_id: &str, side: Side, record: &PaymentRecord) -> Result<String, ProcessError> {
    let key = format!("{}:{}", record_key(user_id, record.created_at_ms, &record.payment_id), side.name());
    model::save(ctx.store(stores::PAYMENTS)?, &pointer_key(user_id, side, &record.payment_id), &key)?;
    model::save(ctx.store(stores::PAYMENTS)?, &key, record)?;
    Ok(key)
}

/// The payer's side of `payment` moves to `status` (with `reason` and its detail when it
/// failed): the record is created on first sight, with a `CREATED` event, and each change of
/// status after that is one event. Refusals that are not the account holder's payment (a
/// command for an account its sender may not act on, or for a user who does not exist) leave
/// no record.
pub fn track(ctx: &mut ProcessorContext<'_>, payment: &Payment, status: PaymentStatus, reason: Option<(&str, &str)>) -> Result<(), ProcessError> {
    if reason.is_some_and(|(r, _)| r == reasons::FORBIDDEN || r == reasons::USER_UNKNOWN) {
        return Ok(());
    }
    let user = payment.payer_user_id.as_str();
    let now = sluice_streams::now_ms();
    let (key, mut record) = match load(ctx, user, Side::Payer, &payment.command_id)? {
        Some(found) => found,
        None => {
            let direction = if payment.kind == PaymentKind::Deposit { PaymentDirection::Incoming } else { PaymentDirection::Outgoing };
            let record = new_record(ctx, payment, direction, PaymentStatus::Pending, payment.payee_user_id.clone());
            let key = create(ctx, user, Side::Payer, &record)?;
            event(ctx, payment, &record, PaymentEventType::Created, format!("{}:event:created", payment.command_id))?;
            (key, record)
        }
    };
    // Only a pending payment moves. Anything else is another command of this account with the
    // same id (ids are unique per sender: an operator's deposit and the user's own transfer
    // may share one): its record stays as it was; its command status tells its outcome.
    if record.status != PaymentStatus::Pending || status == PaymentStatus::Pending {
        return Ok(());
    }
    record.status = status;
    record.reason = reason.map(|(r, _)| r.to_string());
    record.detail = reason.map(|(_, d)| d.to_string());
    record.updated_at_ms = now;
    model::save(ctx.store(stores::PAYMENTS)?, &key, &record)?;
    let (event_type, step) = match status {
        PaymentStatus::Failed => (PaymentEventType::Failed, "failed"),
        _ => (PaymentEventType::Completed, "completed"),
    };
    event(ctx, payment, &record, event_type, format!("{}:event:{step}", payment.command_id))
}

/// The payee's side of a transfer or refund that credited them: an incoming, completed record.
pub fn received(ctx: &mut ProcessorContext<'_>, payment: &Payment) -> Result<(), ProcessError> {
    let Some(payee) = payment.payee_user_id.as_deref() else { return Ok(()) };
    if load(ctx, payee, Side::Payee, &payment.command_id)?.is_some() {
        return Ok(());
    }
    let record = new_record(ctx, payment, PaymentDirection::Incoming, PaymentStatus::Completed, Some(payment.payer_user_id.clone()));
    create(ctx, payee, Side::Payee, &record).map(drop)
}

/// A new record of `payment`, created at the current record's time.
fn new_record(ctx: &ProcessorContext<'_>, payment: &Payment, direction: PaymentDirection, status: PaymentStatus, counterparty: Option<String>) -> PaymentRecord {
    PaymentRecord {
        payment_id: payment.command_id.clone(),
        kind: payment.kind,
        direction,
        status,
        amount: payment.amount,
        currency: payment.currency.clone(),
        counterparty,
        reference: payment.reference.clone(),
        reason: None,
        detail: None,
        refunded_amount: Decimal::ZERO,
        refund_of: payment.refund_of.clone(),
        created_at_ms: ctx.timestamp(),
        updated_at_ms: sluice_streams::now_ms(),
    }
}

/// `refund` (a completed refund) gave back part of `user_id`'s payment `refund.refund_of` (on
/// `side`: the original payer's, whom the refund credited, or the payee's, who refunded): its
/// refunded amount grows, and it is `refunded` once all of it came back. On the payer's side
/// this is a `REFUNDED` event of the original.
pub fn refunded(ctx: &mut ProcessorContext<'_>, user_id: &str, side: Side, refund: &Payment) -> Result<(), ProcessError> {
    let Some(original) = refund.refund_of.as_deref() else { return Ok(()) };
    let Some((key, mut record)) = load(ctx, user_id, side, original)? else { return Ok(()) };
    if record.kind != PaymentKind::Transfer {
        return Ok(());
    }
    // Its payee refunded it, so it completed, even if the confirmation (on another repartition
    // topic than the refund's credit) has not arrived yet: it completes first, with its event.
    if record.status == PaymentStatus::Pending && side == Side::Payer {
        track(ctx, &sent(&record, user_id), PaymentStatus::Completed, None)?;
        return refunded(ctx, user_id, side, refund);
    }
    record.refunded_amount += refund.amount;
    record.status = if record.refunded_amount >= record.amount { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded };
    record.updated_at_ms = sluice_streams::now_ms();
    model::save(ctx.store(stores::PAYMENTS)?, &key, &record)?;
    if side == Side::Payee {
        return Ok(());
    }
    event(ctx, &sent(&record, user_id), &record, PaymentEventType::Refunded, format!("{original}:event:refunded:{}", refund.command_id))
}

/// The facts of a transfer `payer` sent, from their record of it.
fn sent(record: &PaymentRecord, payer: &str) -> Payment {
    Payment {
        command_id: record.payment_id.clone(),
        kind: record.kind,
        payer_user_id: payer.to_string(),
        payee_user_id: record.counterparty.clone(),
        amount: record.amount,
        currency: record.currency.clone(),
        reference: record.reference.clone(),
        principal_subject: payer.to_string(),
        refund_of: None,
    }
}

fn event(ctx: &mut ProcessorContext<'_>, payment: &Payment, record: &PaymentRecord, event_type: PaymentEventType, event_id: String) -> Result<(), ProcessError> {
    let refunds = matches!(event_type, PaymentEventType::Refunded);
    let event = PaymentEvent {
        event_id,
        occurred_at: emit::now(ctx),
        payment_id: payment.command_id.clone(),
        event_type,
        kind: payment.kind,
        payer_user_id: payment.payer_user_id.clone(),
        payee_user_id: payment.payee_user_id.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
        status: record.status.name().to_string(),
        reason: record.reason.clone(),
        refunded_amount: refunds.then_some(record.refunded_amount),
        refund_of: record.refund_of.clone(),
    };
    emit::send(ctx, sinks::PAYMENT_EVENTS, &payment.payer_user_id, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sort_newest_first_and_stay_under_their_user() {
        let mut keys = vec![record_key("u_1", 1_000, "a"), record_key("u_1", 3_000, "b"), record_key("u_1", 2_000, "c")];
        keys.sort();
        assert_eq!(keys, vec![record_key("u_1", 3_000, "b"), record_key("u_1", 2_000, "c"), record_key("u_1", 1_000, "a")]);
        assert!(keys.iter().all(|k| k.starts_with(&records_prefix("u_1"))));
        assert!(!record_key("u_10", 1, "a").starts_with(&records_prefix("u_1")));
        assert!(!pointer_key("u_1", Side::Payer, "a").starts_with(&records_prefix("u_1")));
        assert_ne!(pointer_key("u_1", Side::Payer, "a"), pointer_key("u_1", Side::Payee, "a"));
    }
}
