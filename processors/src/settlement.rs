//! `settlement` (docs/architecture.md, the pipeline), on the payee's task: credits the payee of a transfer or refund,
//! emits `payments.settled` and a notification, and confirms to the payer's task; if the payee
//! is unknown, frozen or deceased, sends the money back to the payer's task instead.

use sluice_schemas::types::{LegType, PaymentKind, PaymentLeg, UserStatus};
use sluice_schemas::AnyRecord;
use sluice_streams::{ProcessError, Processor, ProcessorContext, Record};

use crate::avro::AvroValue;
use crate::accounts::{self, Posting};
use crate::emit::{self, sinks};
use crate::payments;
use crate::model::{self, reasons, stores, AccountStatus, Direction, IncomingPayment, User};
use crate::settings::PipelineSettings;

/// Processor kind name.
pub const KIND: &str = "settlement";

/// Config keys of the node.
pub const CONFIG_KEYS: &[&str] = &["currency", "opening_balance"];

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Settlement {
    settings: PipelineSettings,
}

impl Settlement {
    /// With the given settings.
    pub fn new(settings: PipelineSettings) -> Settlement {
        Settlement { settings }
    }
}

impl Processor for Settlement {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(ctx, KIND, &[sinks::REVERSAL, sinks::SETTLED, sinks::ACCOUNT_EVENTS, sinks::NOTIFICATIONS, sinks::ACTIVITY, sinks::PAYMENT_EVENTS])
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(KIND, &record)?.to_string();
        let Some(AnyRecord::PaymentLeg(leg)) = record.value.avro() else { return Err(emit::unexpected(KIND, &record)) };
        if leg.leg != LegType::Credit || leg.payee_user_id != key {
            return Err(ProcessError::poison("invalid_record", "settlement takes credit legs keyed by their payee"));
        }
        if ctx.is_duplicate(stores::USER_DEDUPE, &format!("event:{}", leg.event_id))? {
            return Ok(());
        }
        let user: Option<User> = model::load(ctx.store(stores::USERS)?, &key)?;
        let refusal = match &user {
            None => Some(reasons::PAYEE_UNKNOWN),
            Some(user) if user.status != UserStatus::Active => Some(reasons::ACCOUNT_FROZEN),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            return send_leg(ctx, leg, LegType::Reversal, Some(reason));
        }
        let mut account = accounts::open(ctx, &self.settings, &key, &leg.command_id)?;
        if account.status == AccountStatus::Frozen {
            return send_leg(ctx, leg, LegType::Reversal, Some(reasons::ACCOUNT_FROZEN));
        }
        let posting = Posting {
            command_id: &leg.command_id,
            kind: leg.kind,
            direction: Direction::Credit,
            amount: leg.amount,
            currency: &leg.currency,
            counterparty: Some(&leg.payer_user_id),
            reference: leg.reference.as_deref(),
            reversal_reason: None,
        };
        accounts::post(ctx, &mut account, posting)?;
        if leg.kind == PaymentKind::Transfer {
            let incoming = IncomingPayment { payer_user_id: leg.payer_user_id.clone(), amount: leg.amount, refunded: rust_decimal::Decimal::ZERO, currency: Some(leg.currency.clone()) };
            model::save(ctx.store(stores::PAYMENTS)?, &model::incoming_key(&key, &leg.command_id), &incoming)?;
        }
        let payment = crate::balance_check::payment_of_leg(leg);
        emit::settle_payment(ctx, &payment)?;
        payments::received(ctx, &payment)?;
        // A refund credits the payer of the transfer it refunds: that transfer's record here.
        payments::refunded(ctx, &key, payments::Side::Payer, &payment)?;
        let (kind, message) = match leg.kind {
            PaymentKind::Refund => ("refund_received", format!("You received a refund of {} {} from {}.", leg.amount, leg.currency, leg.payer_user_id)),
            _ => ("payment_received", format!("You received {} {} from {}.", leg.amount, leg.currency, leg.payer_user_id)),
        };
        emit::notify(ctx, &key, &leg.command_id, kind, message)?;
        send_leg(ctx, leg, LegType::Confirmation, None)
    }
}

/// Sends a confirmation or reversal of `credit` back to the payer's task.
fn send_leg(ctx: &mut ProcessorContext<'_>, credit: &PaymentLeg, leg: LegType, reason: Option<&str>) -> Result<(), ProcessError> {
    let step = match leg {
        LegType::Confirmation => "confirmation",
        LegType::Reversal => "reversal",
        LegType::Credit => "credit",
    };
    let back = PaymentLeg {
        event_id: format!("{}:{step}", credit.command_id),
        occurred_at: emit::now(ctx),
        leg,
        reason: reason.map(str::to_string),
        ..credit.clone()
    };
    emit::send(ctx, sinks::REVERSAL, &credit.payer_user_id, back)
}
