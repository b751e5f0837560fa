//! [`DedupeStore`]: processed event ids with a retention (docs/guarantees.md, Deduplication), on any
//! [`KeyValueStore`], so its writes are changelogged and restored like any other state.

use crate::store::KeyValueStore;
use crate::StateError;

/// Keys `e<event id>` map to the time it was seen; keys `t<time><event id>` index them by
/// time so expired ids are found without a full scan.
const ID_PREFIX: u8 = b'e';
const TIME_PREFIX: u8 = b't';

/// Remembers event ids for `retention_ms` (of record time) to skip repeats.
pub struct DedupeStore<'a, S: KeyValueStore + ?Sized> {
    store: &'a mut S,
    retention_ms: i64,
}

impl<'a, S: KeyValueStore + ?Sized> DedupeStore<'a, S> {
    /// Wraps `store`, forgetting ids after `retention_ms`.
    pub fn new(store: &'a mut S, retention_ms: i64) -> Self {
        DedupeStore { store, retention_ms }
    }

    /// Records `event_id` as seen at `timestamp_ms`; returns true if it was seen before (and
    /// not yet expired), i.e. the event is a duplicate and must be skipped.
    pub fn check_and_mark(&mut self, event_id: &str, timestamp_ms: i64) -> Result<bool, StateError> {
        let id_key = id_key(event_id);
        if let Some(seen_at) = self.store.get(&id_key)? {
            let seen_at = decode_time(&seen_at)?;
            if timestamp_ms.saturating_sub(seen_at) < self.retention_ms {
                return Ok(true);
            }
            self.store.delete(&time_key(seen_at, event_id))?;
        }
        self.store.put(&id_key, &timestamp_ms.to_be_bytes())?;
        self.store.put(&time_key(timestamp_ms, event_id), &[])?;
        Ok(false)
    }

    /// True if `event_id` was seen and has not expired at `timestamp_ms`.
    pub fn contains(&self, event_id: &str, timestamp_ms: i64) -> Result<bool, StateError> {
        match self.store.get(&id_key(event_id))? {
            Some(seen_at) => Ok(timestamp_ms.saturating_sub(decode_time(&seen_at)?) < self.retention_ms),
            None => Ok(false),
        }
    }

    /// Forgets ids seen more than `retention_ms` before `now_ms`; returns how many.
    pub fn purge_expired(&mut self, now_ms: i64) -> Result<u64, StateError> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let mut expired = Vec::new();
        for entry in self.store.prefix_scan(&[TIME_PREFIX]) {
            let (key, _) = entry?;
            let seen_at = decode_time(key.get(1..9).unwrap_or_default())?;
            let seen_at = ((seen_at as u64) ^ (1 << 63)) as i64;
            if seen_at > cutoff {
                break;
            }
            expired.push(key);
        }
        for key in &expired {
            self.store.delete(key)?;
            self.store.delete(&id_key(&String::from_utf8_lossy(&key[9..])))?;
        }
        Ok(expired.len() as u64)
    }
}

fn id_key(event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + event_id.len());
    key.push(ID_PREFIX);
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// Time keys sort by time: the sign bit is flipped so negative times sort first.
fn time_key(timestamp_ms: i64, event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + event_id.len());
    key.push(TIME_PREFIX);
    key.extend_from_slice(&((timestamp_ms as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(event_id.as_bytes());
    key
}

fn decode_time(bytes: &[u8]) -> Result<i64, StateError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| StateError::Corrupt(format!("dedupe time of {} bytes", bytes.len())))?;
    Ok(i64::from_be_bytes(raw))
}
