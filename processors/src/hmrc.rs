//! `hmrc-death-notification` (docs/architecture.md, the pipeline), per identifier: marks a NIN
//! or an NHS number deceased. If a user verified it, a deceased notice goes to that user's task, which freezes the user and the
//! account; if nobody did, the record stays so that a later claim is refused.

use sluice_schemas::types::{DeceasedNotice, HmrcPayload};
use sluice_schemas::AnyRecord;
use sluice_streams::{ProcessError, Processor, ProcessorContext, Record};

use crate::avro::AvroValue;
use crate::emit::{self, sinks, Activity};
use crate::identifiers;
use crate::model::{self, reasons, roles, stores, CommandState, IdentifierRecord};

/// Processor kind name.
pub const KIND: &str = "hmrc-death-notification";

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct HmrcDeathNotification;

impl Processor for HmrcDeathNotification {
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        emit::require_children(ctx, KIND, &[sinks::DECEASED, sinks::IDENTITY_ACTIVITY])
    }

    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let key = emit::key_of(KIND, &record)?.to_string();
        let Some(AnyRecord::HmrcCommand(command)) = record.value.avro() else { return Err(emit::unexpected(KIND, &record)) };
        // Per issuer, as in auth-validation: a refused notice cannot use up HMRC's id.
        if ctx.is_duplicate(stores::IDENTIFIER_DEDUPE, &format!("event:{}:{}", command.principal.subject, command.event_id))? {
            return Ok(());
        }
        let HmrcPayload::DeathNotification(notification) = &command.payload;
        let activity = Activity {
            user_id: &key,
            principal_subject: &command.principal.subject,
            command_id: &command.event_id,
            command_type: "DeathNotification",
            outcome: "rejected",
            reason: None,
        };
        if !command.principal.roles.iter().any(|r| r == roles::HMRC) {
            return reject(ctx, activity, &key, reasons::FORBIDDEN, "death notifications need the hmrc role");
        }
        let (kind, value) = match identifiers::death_identifier(&notification.nin, notification.nhs_number.as_deref()) {
            Ok(found) => found,
            Err(e) => return reject(ctx, activity, &key, reasons::INVALID_FORMAT, &e.to_string()),
        };
        let identifier = model::identifier_key(kind, &value);
        if identifier != key {
            return Err(ProcessError::poison("invalid_record", format!("death notifications are keyed by their identifier (`{identifier}`), got `{key}`")));
        }
        let mut record = model::load::<IdentifierRecord>(ctx.store(stores::IDENTITY_CLAIMS)?, &identifier)?.unwrap_or(IdentifierRecord {
            identifier_type: kind,
            identifier: value.clone(),
            claimed_by: None,
            date_of_death: None,
            death_reference: None,
        });
        let first_notice = record.date_of_death.is_none();
        if first_notice {
            record.date_of_death = Some(notification.date_of_death);
            record.death_reference = Some(notification.reference.clone());
            model::save(ctx.store(stores::IDENTITY_CLAIMS)?, &identifier, &record)?;
        }
        let holder = record.claimed_by.clone();
        if let (true, Some(user_id)) = (first_notice, &holder) {
            let notice = DeceasedNotice {
                event_id: format!("{}:deceased", command.event_id),
                occurred_at: emit::now(ctx),
                user_id: user_id.clone(),
                nin: value,
                date_of_death: notification.date_of_death,
                reference: notification.reference.clone(),
            };
            emit::send(ctx, sinks::DECEASED, user_id, notice)?;
        }
        emit::set_status_in(ctx, stores::NOTIFICATION_STATUS, &command.event_id, "DeathNotification", &key, CommandState::Settled, None)?;
        let activity = Activity { user_id: holder.as_deref().unwrap_or(&key), outcome: "settled", ..activity };
        emit::activity(ctx, sinks::IDENTITY_ACTIVITY, activity)
    }
}

/// Records a refused notification: its status (readable at `GET /v1/commands/{id}?nin=` or
/// `?nhs_number=`) and
/// its audit record.
fn reject(ctx: &mut ProcessorContext<'_>, mut activity: Activity<'_>, key: &str, reason: &'static str, detail: &str) -> Result<(), ProcessError> {
    emit::set_status_in(ctx, stores::NOTIFICATION_STATUS, activity.command_id, "DeathNotification", key, CommandState::Rejected, Some((reason, detail)))?;
    activity.reason = Some(reason);
    emit::activity(ctx, sinks::IDENTITY_ACTIVITY, activity)
}
