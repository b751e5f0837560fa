//! Outputs shared by the processors: typed records to named sinks, command statuses, the audit
//! trail, notifications and payment outcomes. Every derived record's `event_id` is a function
//! of its cause (docs/architecture.md, topics and keys), so a replay produces the same ids and consumers can dedupe.

use rust_decimal::Decimal;
use sluice_schemas::types::{ActivityLog, Notification, PaymentKind, PaymentRejected, PaymentSettled};
use sluice_schemas::{AnyRecord, TimestampMillis};
use sluice_streams::metrics as names;
use sluice_streams::{ProcessError, ProcessorContext, Record, Value};

use crate::avro::AvroValue;
use crate::model::{self, stores, CommandState, CommandStatus};

/// Sink and child names, as wired in topology.toml.
pub mod sinks {
    /// Per-user sub-topology: auth.events.
    pub const AUTH_EVENTS: &str = "auth-events-sink";
    /// Credit legs, keyed by payee.
    pub const CREDIT: &str = "credit-sink";
    /// Reversals and confirmations, keyed by payer.
    pub const REVERSAL: &str = "reversal-sink";
    /// Identity claims, keyed by identifier.
    pub const IDENTITY_CLAIM: &str = "identity-claim-sink";
    /// payments.settled.
    pub const SETTLED: &str = "settled-sink";
    /// payments.rejected.
    pub const REJECTED: &str = "rejected-sink";
    /// identity.verification.result, from the per-user sub-topology.
    pub const IDENTITY_REJECTED: &str = "identity-rejected-sink";
    /// accounts.events.
    pub const ACCOUNT_EVENTS: &str = "accounts-events-sink";
    /// notifications.
    pub const NOTIFICATIONS: &str = "notifications-sink";
    /// payments.events.
    pub const PAYMENT_EVENTS: &str = "payment-events-sink";
    /// system.logs.activity, from the per-user sub-topology.
    pub const ACTIVITY: &str = "activity-sink";
    /// Verification results back to the user's task.
    pub const IDENTITY_RESULT: &str = "identity-result-sink";
    /// identity.verification.result, from the per-identifier sub-topology.
    pub const IDENTITY_VERIFICATION_RESULT: &str = "identity-verification-result-sink";
    /// Deceased notices, keyed by user id.
    pub const DECEASED: &str = "deceased-sink";
    /// system.logs.activity, from the per-identifier sub-topology.
    pub const IDENTITY_ACTIVITY: &str = "identity-activity-sink";
    /// The next processors of auth-validation.
    pub const BALANCE_CHECK: &str = "balance-check";
    /// See above.
    pub const IDENTITY_REQUEST: &str = "identity-request";
}

/// Fails with a clear message if the node lacks a child the processor writes to.
pub fn require_children(ctx: &ProcessorContext<'_>, kind: &str, needed: &[&str]) -> Result<(), ProcessError> {
    let children = ctx.child_names();
    let missing: Vec<&str> = needed.iter().copied().filter(|n| !children.contains(n)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProcessError::Fatal(format!("{kind} needs children {} in topology.toml", missing.join(", "))))
    }
}

/// Sends a typed record keyed by `key` to the child `sink`, at the current record's time.
pub fn send(ctx: &mut ProcessorContext<'_>, sink: &str, key: &str, value: impl Into<AnyRecord>) -> Result<(), ProcessError> {
    let record = Record { key: Some(key.to_string()), value: crate::avro::record(value), timestamp: ctx.timestamp(), headers: Vec::new() };
    ctx.forward_to(sink, record)
}

/// The current record's time as an Avro timestamp.
pub fn now(ctx: &ProcessorContext<'_>) -> TimestampMillis {
    TimestampMillis(ctx.timestamp())
}

/// Writes a command's status to `command-status`.
pub fn set_status(
    ctx: &mut ProcessorContext<'_>,
    command_id: &str,
    command_type: &str,
    user_id: &str,
    status: CommandState,
    reason: Option<(&str, &str)>,
) -> Result<(), ProcessError> {
    set_status_in(ctx, stores::COMMAND_STATUS, command_id, command_type, user_id, status, reason)
}

/// Writes a command's status to `store` (`command-status`, or `notification-status` on the
/// per-identifier tasks), under [`model::status_key`]: each user's (or identifier's) statuses
/// apart, so a command of a partition neighbour with the same id never replaces one.
pub fn set_status_in(
    ctx: &mut ProcessorContext<'_>,
    store: &str,
    command_id: &str,
    command_type: &str,
    user_id: &str,
    status: CommandState,
    reason: Option<(&str, &str)>,
) -> Result<(), ProcessError> {
    let value = CommandStatus {
        command_id: command_id.to_string(),
        command_type: command_type.to_string(),
        user_id: user_id.to_string(),
        status,
        reason: reason.map(|(r, _)| r.to_string()),
        detail: reason.map(|(_, d)| d.to_string()),
        updated_at_ms: ctx.timestamp(),
    };
    let key = model::status_key(user_id, command_id);
    // A command refused because its sender may not act for `user_id` never replaces a status the
    // account's own command with that id has (it would hide the real outcome from its owner).
    if reason.is_some_and(|(r, _)| r == crate::model::reasons::FORBIDDEN) && ctx.store(store)?.get(key.as_bytes())?.is_some() {
        return Ok(());
    }
    model::save(ctx.store(store)?, &key, &value)
}

/// One audit record of a command's final outcome.
pub struct Activity<'a> {
    /// The user the command concerned.
    pub user_id: &'a str,
    /// Who issued it.
    pub principal_subject: &'a str,
    /// The command.
    pub command_id: &'a str,
    /// E.g. `Transfer`.
    pub command_type: &'a str,
    /// `settled` or `rejected`.
    pub outcome: &'a str,
    /// Reason when rejected.
    pub reason: Option<&'a str>,
}

/// Writes `activity` to the audit sink `sink`.
pub fn activity(ctx: &mut ProcessorContext<'_>, sink: &str, activity: Activity<'_>) -> Result<(), ProcessError> {
    let log = ActivityLog {
        event_id: format!("{}:activity", activity.command_id),
        occurred_at: now(ctx),
        user_id: activity.user_id.to_string(),
        principal_subject: activity.principal_subject.to_string(),
        command_id: activity.command_id.to_string(),
        command_type: activity.command_type.to_string(),
        outcome: activity.outcome.to_string(),
        reason: activity.reason.map(str::to_string),
    };
    // Observability only (never read back): outcomes by type and reason, and the time from the
    // command's record timestamp (when the API accepted it) to its outcome.
    let labels = [("type", log.command_type.clone()), ("outcome", log.outcome.clone())];
    metrics::counter!(names::COMMANDS_TOTAL, &[labels[0].clone(), labels[1].clone(), ("reason", log.reason.clone().unwrap_or_default())]).increment(1);
    let latency_ms = sluice_streams::now_ms().saturating_sub(ctx.timestamp()).max(0);
    metrics::histogram!(names::COMMAND_LATENCY_SECONDS, &labels).record(latency_ms as f64 / 1000.0);
    send(ctx, sink, activity.user_id, log)
}

/// Sends a user-facing notice about `causation_id`.
pub fn notify(ctx: &mut ProcessorContext<'_>, user_id: &str, causation_id: &str, kind: &str, message: String) -> Result<(), ProcessError> {
    let mut notice = Notification {
        event_id: format!("{causation_id}:notify:{kind}:{user_id}"),
        occurred_at: now(ctx),
        user_id: user_id.to_string(),
        causation_id: causation_id.to_string(),
        kind: kind.to_string(),
        message,
        sequence: None,
    };
    crate::notifications::append(ctx, &mut notice)?;
    send(ctx, sinks::NOTIFICATIONS, user_id, notice)
}

/// The facts of a payment command, for its outcome records.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The command id.
    pub command_id: String,
    /// Transfer, deposit, withdrawal or refund.
    pub kind: PaymentKind,
    /// The user debited (for deposits: credited).
    pub payer_user_id: String,
    /// The user credited, for transfers and refunds.
    pub payee_user_id: Option<String>,
    /// Amount.
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// Free text.
    pub reference: Option<String>,
    /// Who issued it.
    pub principal_subject: String,
    /// For refunds: the transfer being refunded.
    pub refund_of: Option<String>,
}

/// Command type name of a payment kind, as in the Avro union (`Transfer`, ...).
pub fn payment_type(kind: PaymentKind) -> &'static str {
    match kind {
        PaymentKind::Transfer => "Transfer",
        PaymentKind::Deposit => "Deposit",
        PaymentKind::Withdrawal => "Withdrawal",
        PaymentKind::Refund => "Refund",
    }
}

/// The one outcome of a refused payment: `payments.rejected`, its status and audit record.
/// Runs on the payer's task (which holds the status).
pub fn reject_payment(ctx: &mut ProcessorContext<'_>, payment: &Payment, reason: &str, detail: &str) -> Result<(), ProcessError> {
    let rejected = PaymentRejected {
        event_id: format!("{}:rejected", payment.command_id),
        occurred_at: now(ctx),
        command_id: payment.command_id.clone(),
        kind: payment.kind,
        payer_user_id: payment.payer_user_id.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
        reason: reason.to_string(),
        detail: detail.to_string(),
    };
    send(ctx, sinks::REJECTED, &payment.payer_user_id, rejected)?;
    let command_type = payment_type(payment.kind);
    set_status(ctx, &payment.command_id, command_type, &payment.payer_user_id, CommandState::Rejected, Some((reason, detail)))?;
    crate::payments::track(ctx, payment, crate::payments::PaymentStatus::Failed, Some((reason, detail)))?;
    payment_activity(ctx, payment, "rejected", Some(reason))
}

/// The `payments.settled` record and audit record of a completed payment (its status is set
/// by the caller, on the payer's task).
pub fn settle_payment(ctx: &mut ProcessorContext<'_>, payment: &Payment) -> Result<(), ProcessError> {
    let settled = PaymentSettled {
        event_id: format!("{}:settled", payment.command_id),
        occurred_at: now(ctx),
        command_id: payment.command_id.clone(),
        kind: payment.kind,
        payer_user_id: payment.payer_user_id.clone(),
        payee_user_id: payment.payee_user_id.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
        reference: payment.reference.clone(),
    };
    send(ctx, sinks::SETTLED, &payment.payer_user_id, settled)?;
    payment_activity(ctx, payment, "settled", None)
}

/// The audit record of a payment's outcome.
fn payment_activity(ctx: &mut ProcessorContext<'_>, payment: &Payment, outcome: &str, reason: Option<&str>) -> Result<(), ProcessError> {
    let record = Activity {
        user_id: &payment.payer_user_id,
        principal_subject: &payment.principal_subject,
        command_id: &payment.command_id,
        command_type: payment_type(payment.kind),
        outcome,
        reason,
    };
    activity(ctx, sinks::ACTIVITY, record)
}

/// The event id of a record the processors consume: `event_id` of commands, events and legs.
pub fn event_id_of(value: &Value) -> Option<&str> {
    let record = value.avro()?;
    Some(match record {
        AnyRecord::AuthCommand(r) => &r.event_id,
        AnyRecord::PaymentCommand(r) => &r.event_id,
        AnyRecord::IdentityCommand(r) => &r.event_id,
        AnyRecord::HmrcCommand(r) => &r.event_id,
        AnyRecord::PaymentLeg(r) => &r.event_id,
        AnyRecord::IdentityClaim(r) => &r.event_id,
        AnyRecord::IdentityVerificationResult(r) => &r.event_id,
        AnyRecord::DeceasedNotice(r) => &r.event_id,
        _ => return None,
    })
}

/// Who issued a command (`None` for internal records).
pub fn principal_of(value: &Value) -> Option<&sluice_schemas::types::Principal> {
    Some(match value.avro()? {
        AnyRecord::AuthCommand(r) => &r.principal,
        AnyRecord::PaymentCommand(r) => &r.principal,
        AnyRecord::IdentityCommand(r) => &r.principal,
        AnyRecord::HmrcCommand(r) => &r.principal,
        _ => return None,
    })
}

/// A record the processor cannot handle: dead-lettered by the runtime.
pub fn unexpected(kind: &str, record: &Record) -> ProcessError {
    let what = match &record.value {
        Value::Record(r) => match record.value.avro() {
            Some(avro) => avro.full_name().to_string(),
            None => r.type_name().to_string(),
        },
        Value::Bytes(_) => "raw bytes".to_string(),
        Value::Null => "a tombstone".to_string(),
    };
    ProcessError::poison("invalid_record", format!("{kind} cannot process {what}"))
}

/// The record's key, or a poison pill: every pipeline topic is keyed.
pub fn key_of<'r>(kind: &str, record: &'r Record) -> Result<&'r str, ProcessError> {
    record.key.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| ProcessError::poison("invalid_record", format!("{kind} needs a keyed record")))
}
