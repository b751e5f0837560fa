//! Each user's notifications (docs/architecture.md, notifications): every notice the processors
//! send to the `notifications` topic is also kept in the `notifications` store with a per-user
//! sequence number, and read marks (`MarkNotificationsRead`) are applied there, so
//! `GET /v1/notifications` lists them unread first. The newest [`KEPT_PER_USER`] are kept.

use serde::{Deserialize, Serialize};
use sluice_schemas::types::{MarkNotificationsRead, Notification};
use sluice_streams::{ProcessError, ProcessorContext};

use crate::model::{self, stores};

/// Notifications kept per user; older ones are deleted as new ones arrive.
pub const KEPT_PER_USER: i64 = 500;

/// Per-user counters, at [`meta_key`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationsMeta {
    /// Sequence number of the newest notification (0: none yet).
    pub last_sequence: i64,
    /// Every notification up to this sequence number is read.
    pub read_up_to: i64,
}

/// One notification, at [`entry_key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredNotification {
    /// Position in the user's notifications, from 1.
    pub sequence: i64,
    /// The notice's event id on the `notifications` topic.
    pub event_id: String,
    /// Machine-readable kind, e.g. `payment_received`.
    pub kind: String,
    /// Text shown to the user.
    pub message: String,
    /// The command or event that caused it.
    pub causation_id: String,
    /// When (the causing record's timestamp, ms).
    pub created_at_ms: i64,
    /// Marked read by its own sequence number (see also [`NotificationsMeta::read_up_to`]).
    pub read: bool,
}

impl StoredNotification {
    /// Read, by its own mark or by the user's watermark.
    pub fn is_read(&self, meta: &NotificationsMeta) -> bool {
        self.read || self.sequence <= meta.read_up_to
    }
}

/// Key of a user's counters.
pub fn meta_key(user_id: &str) -> String {
    format!("meta/{user_id}")
}

/// Key of a user's notification `sequence`: newest first under [`entries_prefix`].
pub fn entry_key(user_id: &str, sequence: i64) -> String {
    format!("n/{user_id}/{:016x}", u64::MAX - sequence.max(0) as u64)
}

/// Prefix of every notification of `user_id`.
pub fn entries_prefix(user_id: &str) -> String {
    format!("n/{user_id}/")
}

fn meta(ctx: &mut ProcessorContext<'_>, user_id: &str) -> Result<NotificationsMeta, ProcessError> {
    Ok(model::load(ctx.store(stores::NOTIFICATIONS)?, &meta_key(user_id))?.unwrap_or_default())
}

/// Gives `notice` the user's next sequence number and keeps it; drops the oldest beyond
/// [`KEPT_PER_USER`].
pub fn append(ctx: &mut ProcessorContext<'_>, notice: &mut Notification) -> Result<(), ProcessError> {
    let user_id = notice.user_id.clone();
    let mut counters = meta(ctx, &user_id)?;
    counters.last_sequence += 1;
    let sequence = counters.last_sequence;
    notice.sequence = Some(sequence);
    let entry = StoredNotification {
        sequence,
        event_id: notice.event_id.clone(),
        kind: notice.kind.clone(),
        message: notice.message.clone(),
        causation_id: notice.causation_id.clone(),
        created_at_ms: notice.occurred_at.0,
        read: false,
    };
    let store = ctx.store(stores::NOTIFICATIONS)?;
    model::save(store, &entry_key(&user_id, sequence), &entry)?;
    if sequence > KEPT_PER_USER {
        store.delete(entry_key(&user_id, sequence - KEPT_PER_USER).as_bytes())?;
    }
    model::save(store, &meta_key(&user_id), &counters)
}

/// Applies `mark` to `user_id`'s notifications: the watermark moves up (never down, never past
/// the newest), and each named one still kept is marked. Sequence numbers the user never had
/// are ignored.
pub fn mark_read(ctx: &mut ProcessorContext<'_>, user_id: &str, mark: &MarkNotificationsRead) -> Result<(), ProcessError> {
    let mut counters = meta(ctx, user_id)?;
    if let Some(up_to) = mark.up_to_sequence {
        counters.read_up_to = counters.read_up_to.max(up_to.min(counters.last_sequence));
        model::save(ctx.store(stores::NOTIFICATIONS)?, &meta_key(user_id), &counters)?;
    }
    for &sequence in &mark.sequences {
        let key = entry_key(user_id, sequence);
        let store = ctx.store(stores::NOTIFICATIONS)?;
        if let Some(mut entry) = model::load::<StoredNotification>(store, &key)? {
            if !entry.read {
                entry.read = true;
                model::save(store, &key, &entry)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_newest_first_under_their_user() {
        let mut keys = vec![entry_key("u_1", 1), entry_key("u_1", 300), entry_key("u_1", 20)];
        keys.sort();
        assert_eq!(keys, vec![entry_key("u_1", 300), entry_key("u_1", 20), entry_key("u_1", 1)]);
        assert!(keys.iter().all(|k| k.starts_with(&entries_prefix("u_1"))));
        assert!(!meta_key("u_1").starts_with(&entries_prefix("u_1")));
    }

    #[test]
    fn read_by_mark_or_watermark() {
        let entry = |sequence, read| StoredNotification { sequence, event_id: String::new(), kind: String::new(), message: String::new(), causation_id: String::new(), created_at_ms: 0, read };
        let meta = NotificationsMeta { last_sequence: 5, read_up_to: 2 };
        assert!(entry(2, false).is_read(&meta));
        assert!(!entry(3, false).is_read(&meta));
        assert!(entry(4, true).is_read(&meta));
    }
}
