//! `balance-check` (docs/architecture.md, the pipeline), on the payer's task: settles deposits and withdrawals, debits
//! transfers and refunds and sends their credit leg to the payee's task, and applies what comes
//! back (a confirmation, or a reversal that re-credits the payer). Also freezes the account of
//! a deceased user.

use sluice_schemas::types::{
    AccountEvent, AccountEventPayload, AccountFrozen, DeceasedNotice, LegType, PaymentCommand, PaymentLeg, PaymentPayload,
};
use sluice_schemas::AnyRecord;
use sluice_streams::{ProcessError, Processor, ProcessorContext, Record};

use crate::avro::AvroValue;
use crate::accounts::{self, Posting};
use crate::auth_validation::payment_facts;
use crate::emit::{self, sinks, Payment};
use crate::model::{self, reasons, stores, AccountStatus, CommandState, Direction, IncomingPayment, OutgoingPayment, PaymentState};
use crate::payments::{self, PaymentStatus};
use crate::settings::PipelineSettings;

/// Processor kind name.
pub const KIND: &str = "balance-check";

/// Config keys of the node.
pub const CONFIG_KEYS: &[&str] = &["currency", "opening_balance"];

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BalanceCheck {
    settings: PipelineSettings,
}

impl BalanceCheck {
    /// With the given settings.
    pub fn new(settings: PipelineSettings) -> BalanceCheck {
        BalanceCheck { settings }
    }
}

impl Processor for BalanceCheck {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(ctx, KIND, &[sinks::CREDIT, sinks::SETTLED, sinks::REJECTED, sinks::ACCOUNT_EVENTS, sinks::NOTIFICATIONS, sinks::ACTIVITY, sinks::PAYMENT_EVENTS])
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(KIND, &record)?.to_string();
        match record.value.avro() {
            // Commands and notices come from auth-validation, which deduplicated them.
            Some(AnyRecord::PaymentCommand(command)) => self.command(&key, command, ctx),
            Some(AnyRecord::DeceasedNotice(notice)) => self.freeze(&key, notice, ctx),
            Some(AnyRecord::PaymentLeg(leg)) => {
                if ctx.is_duplicate(stores::USER_DEDUPE, &format!("event:{}", leg.event_id))? {
                    return Ok(());
                }
                match leg.leg {
                    LegType::Confirmation => self.confirm(leg, ctx),
                    LegType::Reversal => self.reverse(leg, ctx),
                    LegType::Credit => Err(ProcessError::poison("invalid_record", "credit legs belong on the credit topic")),
                }
            }
            _ => Err(emit::unexpected(KIND, &record)),
        }
    }
}

impl BalanceCheck {
    fn command(&self, key: &str, command: &PaymentCommand, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let mut payment = payment_facts(key, command);
        let mut account = accounts::open(ctx, &self.settings, key, &command.event_id)?;
        if account.status == AccountStatus::Frozen {
            return emit::reject_payment(ctx, &payment, reasons::ACCOUNT_FROZEN, "the account is frozen");
        }
        // A refund must name a transfer this user received, with enough of it left.
        let mut refunded = None;
        if let PaymentPayload::Refund(refund) = &command.payload {
            let incoming_key = model::incoming_key(key, &refund.payment_id);
            let Some(incoming) = model::load::<IncomingPayment>(ctx.store(stores::PAYMENTS)?, &incoming_key)? else {
                let detail = format!("no settled transfer `{}` to this account", refund.payment_id);
                return emit::reject_payment(ctx, &payment, reasons::PAYMENT_UNKNOWN, &detail);
            };
            let paid_in = incoming.currency.as_deref().unwrap_or(&self.settings.currency);
            if payment.currency != paid_in {
                let detail = format!("payment `{}` was in {paid_in}: refund it in {paid_in}, not {}", refund.payment_id, payment.currency);
                return emit::reject_payment(ctx, &payment, reasons::CURRENCY_MISMATCH, &detail);
            }
            let refundable = incoming.amount - incoming.refunded;
            if payment.amount > refundable {
                let detail = format!("only {refundable} of payment `{}` can still be refunded", refund.payment_id);
                return emit::reject_payment(ctx, &payment, reasons::REFUND_EXCEEDS_PAYMENT, &detail);
            }
            refunded = Some((incoming_key, incoming));
        }
        let debit = !matches!(command.payload, PaymentPayload::Deposit(_));
        let balance = account.balance_in(&payment.currency);
        if debit && balance < payment.amount {
            let detail = format!("balance {balance} {} is less than {}", payment.currency, payment.amount);
            return emit::reject_payment(ctx, &payment, reasons::INSUFFICIENT_FUNDS, &detail);
        }
        let posting = |direction, counterparty| Posting {
            command_id: &command.event_id,
            kind: payment.kind,
            direction,
            amount: payment.amount,
            currency: &payment.currency,
            counterparty,
            reference: None,
            reversal_reason: None,
        };
        match &command.payload {
            PaymentPayload::Deposit(deposit) => {
                accounts::post(ctx, &mut account, Posting { reference: deposit.reference.as_deref(), ..posting(Direction::Credit, None) })?;
                emit::set_status(ctx, &command.event_id, "Deposit", key, CommandState::Settled, None)?;
                emit::settle_payment(ctx, &payment)?;
                payments::track(ctx, &payment, PaymentStatus::Completed, None)?;
                let message = format!("{} {} was deposited into your account.", payment.amount, payment.currency);
                emit::notify(ctx, key, &command.event_id, "deposit_received", message)
            }
            PaymentPayload::Withdrawal(withdrawal) => {
                accounts::post(ctx, &mut account, Posting { reference: withdrawal.reference.as_deref(), ..posting(Direction::Debit, None) })?;
                emit::set_status(ctx, &command.event_id, "Withdrawal", key, CommandState::Settled, None)?;
                emit::settle_payment(ctx, &payment)?;
                payments::track(ctx, &payment, PaymentStatus::Completed, None)
            }
            PaymentPayload::Transfer(transfer) => {
                let payee = transfer.payee_user_id.as_str();
                let reference = transfer.reference.as_deref();
                accounts::post(ctx, &mut account, Posting { reference, ..posting(Direction::Debit, Some(payee)) })?;
                self.send_credit(ctx, &payment, payee, None)
            }
            PaymentPayload::Refund(refund) => {
                let (incoming_key, mut incoming) = refunded.expect("checked above");
                let payee = incoming.payer_user_id.clone();
                payment.payee_user_id = Some(payee.clone());
                accounts::post(ctx, &mut account, Posting { reference: refund.reason.as_deref(), ..posting(Direction::Debit, Some(&payee)) })?;
                incoming.refunded += payment.amount;
                model::save(ctx.store(stores::PAYMENTS)?, &incoming_key, &incoming)?;
                self.send_credit(ctx, &payment, &payee, Some(refund.payment_id.clone()))
            }
        }
    }

    /// Records the payment in flight and sends its credit leg to the payee's task.
    fn send_credit(&self, ctx: &mut ProcessorContext<'_>, payment: &Payment, payee: &str, refund_of: Option<String>) -> Result<(), ProcessError> {
        let outgoing = OutgoingPayment { kind: payment.kind, payee_user_id: payee.to_string(), amount: payment.amount, state: PaymentState::InFlight, refund_of };
        model::save(ctx.store(stores::PAYMENTS)?, &model::outgoing_key(&payment.payer_user_id, &payment.command_id), &outgoing)?;
        emit::set_status(ctx, &payment.command_id, emit::payment_type(payment.kind), &payment.payer_user_id, CommandState::Pending, None)?;
        payments::track(ctx, payment, PaymentStatus::Pending, None)?;
        let leg = PaymentLeg {
            event_id: format!("{}:credit", payment.command_id),
            occurred_at: emit::now(ctx),
            command_id: payment.command_id.clone(),
            kind: payment.kind,
            leg: LegType::Credit,
            payer_user_id: payment.payer_user_id.clone(),
            payee_user_id: payee.to_string(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            reference: payment.reference.clone(),
            reason: None,
            refund_of: payment.refund_of.clone(),
        };
        emit::send(ctx, sinks::CREDIT, payee, leg)
    }

    /// The payee was credited: the payment is settled.
    fn confirm(&self, leg: &PaymentLeg, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = model::outgoing_key(&leg.payer_user_id, &leg.command_id);
        let mut outgoing = load_outgoing(ctx, &key)?;
        outgoing.state = PaymentState::Settled;
        model::save(ctx.store(stores::PAYMENTS)?, &key, &outgoing)?;
        emit::set_status(ctx, &leg.command_id, emit::payment_type(leg.kind), &leg.payer_user_id, CommandState::Settled, None)?;
        let payment = Payment { refund_of: outgoing.refund_of.clone(), ..payment_of_leg(leg) };
        payments::track(ctx, &payment, PaymentStatus::Completed, None)?;
        // A completed refund: the transfer it refunds, as its payee (this user) sees it.
        payments::refunded(ctx, &leg.payer_user_id, payments::Side::Payee, &payment)
    }

    /// The payee could not be credited: the money comes back to the payer, and the payment's
    /// one outcome is its rejection.
    fn reverse(&self, leg: &PaymentLeg, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = model::outgoing_key(&leg.payer_user_id, &leg.command_id);
        let mut outgoing = load_outgoing(ctx, &key)?;
        outgoing.state = PaymentState::Reversed;
        model::save(ctx.store(stores::PAYMENTS)?, &key, &outgoing)?;
        let reason = leg.reason.as_deref().unwrap_or(reasons::PAYEE_UNKNOWN);
        // Money that comes back is credited even to a frozen account: it never left the payer.
        let mut account = accounts::open(ctx, &self.settings, &leg.payer_user_id, &leg.command_id)?;
        let posting = Posting {
            command_id: &leg.command_id,
            kind: leg.kind,
            direction: Direction::Credit,
            amount: leg.amount,
            currency: &leg.currency,
            counterparty: Some(&leg.payee_user_id),
            reference: leg.reference.as_deref(),
            reversal_reason: Some(reason),
        };
        accounts::post(ctx, &mut account, posting)?;
        if let Some(original) = &outgoing.refund_of {
            let incoming_key = model::incoming_key(&leg.payer_user_id, original);
            if let Some(mut incoming) = model::load::<IncomingPayment>(ctx.store(stores::PAYMENTS)?, &incoming_key)? {
                incoming.refunded -= leg.amount;
                model::save(ctx.store(stores::PAYMENTS)?, &incoming_key, &incoming)?;
            }
        }
        let detail = match reason {
            reasons::PAYEE_UNKNOWN => format!("no user `{}`; the money was returned", leg.payee_user_id),
            reasons::ACCOUNT_FROZEN => format!("the account of `{}` is frozen; the money was returned", leg.payee_user_id),
            other => format!("{other}; the money was returned"),
        };
        let payment = Payment { refund_of: outgoing.refund_of.clone(), ..payment_of_leg(leg) };
        emit::reject_payment(ctx, &payment, reason, &detail)?;
        let message = format!("Your payment of {} {} was returned: {detail}.", leg.amount, leg.currency);
        emit::notify(ctx, &leg.payer_user_id, &leg.command_id, "payment_returned", message)
    }

    /// The user died: their account is frozen for good.
    fn freeze(&self, key: &str, notice: &DeceasedNotice, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let mut account = accounts::open(ctx, &self.settings, key, &notice.event_id)?;
        if account.status == AccountStatus::Frozen {
            return Ok(());
        }
        account.status = AccountStatus::Frozen;
        account.frozen_reason = Some(reasons::DECEASED.to_string());
        accounts::save(ctx, &account)?;
        let frozen = AccountEvent {
            event_id: format!("{}:frozen", notice.event_id),
            occurred_at: emit::now(ctx),
            user_id: key.to_string(),
            causation_id: notice.event_id.clone(),
            payload: AccountEventPayload::AccountFrozen(AccountFrozen { reason: reasons::DECEASED.to_string(), date_of_death: Some(notice.date_of_death) }),
        };
        emit::send(ctx, sinks::ACCOUNT_EVENTS, key, frozen)?;
        let message = "This account is frozen following a notification of death from HMRC. No money can move in or out.".to_string();
        emit::notify(ctx, key, &notice.event_id, "account_frozen", message)
    }
}

/// The facts of the payment a leg belongs to (its payer issued it).
pub(crate) fn payment_of_leg(leg: &PaymentLeg) -> Payment {
    Payment {
        command_id: leg.command_id.clone(),
        kind: leg.kind,
        payer_user_id: leg.payer_user_id.clone(),
        payee_user_id: Some(leg.payee_user_id.clone()),
        amount: leg.amount,
        currency: leg.currency.clone(),
        reference: leg.reference.clone(),
        principal_subject: leg.payer_user_id.clone(),
        refund_of: leg.refund_of.clone(),
    }
}

fn load_outgoing(ctx: &mut ProcessorContext<'_>, key: &str) -> Result<OutgoingPayment, ProcessError> {
    model::load::<OutgoingPayment>(ctx.store(stores::PAYMENTS)?, key)?
        .filter(|p| p.state == PaymentState::InFlight)
        .ok_or_else(|| ProcessError::Fatal(format!("no payment in flight at `{key}`")))
}
