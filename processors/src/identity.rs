//! `identity-request` (per user: checks the identifier's format, sends a claim keyed by the
//! identifier) and `identity-verification` (per identifier: one user per identifier, none for
//! a deceased NIN; the result goes back to the user's task and to
//! `identity.verification.result`).

use sluice_schemas::types::{IdentityClaim, IdentityCommand, IdentityPayload, IdentityVerificationResult, VerificationOutcome};
use sluice_schemas::AnyRecord;
use sluice_streams::{ProcessError, Processor, ProcessorContext, Record};

use crate::avro::AvroValue;
use crate::emit::{self, sinks, Activity};
use crate::identifiers;
use crate::model::{self, reasons, stores, CommandState, IdentifierRecord};

/// Kind name of the per-user step.
pub const REQUEST_KIND: &str = "identity-request";
/// Kind name of the per-identifier step.
pub const VERIFICATION_KIND: &str = "identity-verification";

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct IdentityRequest;

impl Processor for IdentityRequest {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(ctx, REQUEST_KIND, &[sinks::IDENTITY_CLAIM, sinks::IDENTITY_REJECTED, sinks::ACTIVITY])
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(REQUEST_KIND, &record)?.to_string();
        let Some(AnyRecord::IdentityCommand(command)) = record.value.avro() else { return Err(emit::unexpected(REQUEST_KIND, &record)) };
        let IdentityPayload::VerifyIdentity(verify) = &command.payload;
        match identifiers::normalise(verify.identifier_type, &verify.value) {
            Err(error) => reject_request(ctx, &key, command, reasons::INVALID_FORMAT, &error.to_string()),
            Ok(identifier) => {
                emit::set_status(ctx, &command.event_id, "VerifyIdentity", &key, CommandState::Pending, None)?;
                let claim = IdentityClaim {
                    event_id: format!("{}:claim", command.event_id),
                    occurred_at: emit::now(ctx),
                    command_id: command.event_id.clone(),
                    user_id: key.clone(),
                    identifier_type: verify.identifier_type,
                    identifier: identifier.clone(),
                };
                emit::send(ctx, sinks::IDENTITY_CLAIM, &model::identifier_key(verify.identifier_type, &identifier), claim)
            }
        }
    }
}

/// The one outcome of a verification refused on the user's task (gate or format): the result
/// on `identity.verification.result`, the command's status and its audit record.
pub(crate) fn reject_request(ctx: &mut ProcessorContext<'_>, key: &str, command: &IdentityCommand, reason: &str, detail: &str) -> Result<(), ProcessError> {
    let IdentityPayload::VerifyIdentity(verify) = &command.payload;
    let result = IdentityVerificationResult {
        event_id: format!("{}:result", command.event_id),
        occurred_at: emit::now(ctx),
        command_id: command.event_id.clone(),
        user_id: key.to_string(),
        identifier_type: verify.identifier_type,
        identifier: verify.value.clone(),
        outcome: VerificationOutcome::Rejected,
        reason: Some(reason.to_string()),
    };
    emit::send(ctx, sinks::IDENTITY_REJECTED, key, result)?;
    emit::set_status(ctx, &command.event_id, "VerifyIdentity", key, CommandState::Rejected, Some((reason, detail)))?;
    let activity = Activity {
        user_id: key,
        principal_subject: &command.principal.subject,
        command_id: &command.event_id,
        command_type: "VerifyIdentity",
        outcome: "rejected",
        reason: Some(reason),
    };
    emit::activity(ctx, sinks::ACTIVITY, activity)
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct IdentityVerification;

impl Processor for IdentityVerification {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(ctx, VERIFICATION_KIND, &[sinks::IDENTITY_RESULT, sinks::IDENTITY_VERIFICATION_RESULT, sinks::IDENTITY_ACTIVITY])
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(VERIFICATION_KIND, &record)?.to_string();
        let Some(AnyRecord::IdentityClaim(claim)) = record.value.avro() else { return Err(emit::unexpected(VERIFICATION_KIND, &record)) };
        if key != model::identifier_key(claim.identifier_type, &claim.identifier) {
            return Err(ProcessError::poison("invalid_record", "identity claims are keyed by their identifier"));
        }
        if ctx.is_duplicate(stores::IDENTIFIER_DEDUPE, &format!("event:{}", claim.event_id))? {
            return Ok(());
        }
        let existing: Option<IdentifierRecord> = model::load(ctx.store(stores::IDENTITY_CLAIMS)?, &key)?;
        let refusal = match &existing {
            Some(record) if record.date_of_death.is_some() => Some(reasons::DECEASED),
            Some(IdentifierRecord { claimed_by: Some(owner), .. }) if *owner != claim.user_id => Some(reasons::ALREADY_CLAIMED),
            _ => None,
        };
        if refusal.is_none() {
            let record = IdentifierRecord {
                identifier_type: claim.identifier_type,
                identifier: claim.identifier.clone(),
                claimed_by: Some(claim.user_id.clone()),
                date_of_death: None,
                death_reference: None,
            };
            model::save(ctx.store(stores::IDENTITY_CLAIMS)?, &key, &record)?;
        }
        let result = IdentityVerificationResult {
            event_id: format!("{}:result", claim.command_id),
            occurred_at: emit::now(ctx),
            command_id: claim.command_id.clone(),
            user_id: claim.user_id.clone(),
            identifier_type: claim.identifier_type,
            identifier: claim.identifier.clone(),
            outcome: if refusal.is_none() { VerificationOutcome::Verified } else { VerificationOutcome::Rejected },
            reason: refusal.map(str::to_string),
        };
        emit::send(ctx, sinks::IDENTITY_RESULT, &claim.user_id, result.clone())?;
        emit::send(ctx, sinks::IDENTITY_VERIFICATION_RESULT, &claim.user_id, result)?;
        let activity = Activity {
            user_id: &claim.user_id,
            principal_subject: &claim.user_id,
            command_id: &claim.command_id,
            command_type: "VerifyIdentity",
            outcome: if refusal.is_none() { "settled" } else { "rejected" },
            reason: refusal,
        };
        emit::activity(ctx, sinks::IDENTITY_ACTIVITY, activity)
    }
}
