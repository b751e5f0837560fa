//! Token revocation by subject (docs/security.md, revocable tokens): `sluice revoke --subject S`
//! writes "every token of S issued before now is void" to the compacted topic
//! `<application_id>-revocations`, signed with the internal key; every process that checks
//! tokens (the HTTP API, the kcat bridge in `sluice run`) follows that topic and refuses such
//! tokens with `token_revoked`. It is how a service account's token (an operator's, HMRC's) is
//! withdrawn before it expires; users end their own sessions with logout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_streams::signing::InternalKeys;

/// The compacted topic of an application's revocations (one partition).
pub fn revocations_topic(application_id: &str) -> String {
    format!("{application_id}-revocations")
}

/// One revocation: the value on the topic, keyed by `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The token subject (a service account's name, or a user id).
    pub subject: String,
    /// Tokens of `subject` issued before this instant (ms) are refused.
    pub revoked_before_ms: i64,
    /// Why, for the audit trail.
    pub reason: Option<String>,
}

/// The revocations known to this process, shared by every token check.
#[derive(Clone, Default)]
pub struct Revocations {
    before: Arc<RwLock<HashMap<String, i64>>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("subjects", &self.before.read().expect("revocations lock").len()).finish()
    }
}

impl Revocations {
    /// Whether a token of `subject` issued at `issued_at_ms` has been revoked.
    pub fn revoked(&self, subject: &str, issued_at_ms: i64) -> bool {
        self.before.read().expect("revocations lock").get(subject).is_some_and(|before| issued_at_ms < *before)
    }

    /// Takes in one record of the topic if its signature holds (a later revocation of a
    /// subject never moves its instant back).
    fn apply<M: Message>(&self, keys: &InternalKeys, topic: &str, message: &M) -> Result<(), String> {
        keys.verify_message(topic, message).map_err(|e| e.to_string())?;
        let (key, value) = (message.key(), message.payload());
        let revocation: Revocation = serde_json::from_slice(value.ok_or("a revocation cannot be deleted")?).map_err(|e| e.to_string())?;
        if key != Some(revocation.subject.as_bytes()) {
            return Err("a revocation keyed by another subject".to_string());
        }
        let mut before = self.before.write().expect("revocations lock");
        let entry = before.entry(revocation.subject).or_insert(i64::MIN);
        *entry = (*entry).max(revocation.revoked_before_ms);
        Ok(())
    }

    /// Follows `<application_id>-revocations` from the beginning on a thread of its own until
    /// `stop` is set, with this process's Kafka connection; unsigned or forged records are
    /// ignored (and logged).
    pub fn follow(bootstrap_servers: &str, application_id: &str, keys: Arc<InternalKeys>, stop: Arc<AtomicBool>) -> Result<Revocations, String> {
        let topic = revocations_topic(application_id);
        let consumer: BaseConsumer = sluice_streams::kafka_client::client_config(bootstrap_servers)
            .set("group.id", format!("{topic}-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("the revocations consumer: {e}"))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Beginning).map_err(|e| e.to_string())?;
        consumer.assign(&list).map_err(|e| e.to_string())?;
        let revocations = Revocations::default();
        let shared = revocations.clone();
        std::thread::Builder::new()
            .name("sluice-revocations".to_string())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(250)) else { continue };
                    if let Err(error) = shared.apply(&keys, &topic, &message) {
                        tracing::warn!(offset = message.offset(), %error, "revocation refused");
                    }
                }
            })
            .map_err(|e| format!("starting the revocations thread: {e}"))?;
        Ok(revocations)
    }
}

/// Writes a revocation of every token of `subject` issued before `now_ms`, signed with `keys`,
/// and waits until the broker has it.
pub fn publish(bootstrap_servers: &str, application_id: &str, keys: &InternalKeys, revocation: &Revocation) -> Result<(), String> {
    let topic = revocations_topic(application_id);
    let producer: BaseProducer = sluice_streams::kafka_client::client_config(bootstrap_servers)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()
        .map_err(|e| format!("the revocations producer: {e}"))?;
    let value = serde_json::to_vec(revocation).map_err(|e| e.to_string())?;
    let headers = keys.sign_into(OwnedHeaders::new(), &topic, Some(revocation.subject.as_bytes()), Some(&value));
    producer
        .send(BaseRecord::to(&topic).key(&revocation.subject).payload(&value).headers(headers))
        .map_err(|(e, _)| format!("writing to {topic}: {e}"))?;
    producer.flush(Duration::from_secs(10)).map_err(|e| format!("writing to {topic}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_revocations_count_and_they_never_move_back() {
        let keys = InternalKeys::new("i1", "an-internal-secret-of-32-or-more-chars", "").unwrap();
        let revocations = Revocations::default();
        let record = |subject: &str, before: i64| serde_json::to_vec(&Revocation { subject: subject.into(), revoked_before_ms: before, reason: None }).unwrap();
        let message = |key: &[u8], value: &[u8], signature: Option<&[u8]>| {
            let headers = signature.map(|s| OwnedHeaders::new().insert(rdkafka::message::Header { key: sluice_streams::signing::SIGNATURE_HEADER, value: Some(s) }));
            rdkafka::message::OwnedMessage::new(Some(value.to_vec()), Some(key.to_vec()), "t".to_string(), rdkafka::Timestamp::NotAvailable, 0, 0, headers)
        };
        let value = record("back-office", 1_000);
        let forged = InternalKeys::new("i1", "the-attacker-guesses-a-key-of-32-chars", "").unwrap().sign_record("t", Some(b"back-office"), Some(&value));
        assert!(revocations.apply(&keys, "t", &message(b"back-office", &value, Some(&forged))).is_err());
        assert!(revocations.apply(&keys, "t", &message(b"back-office", &value, None)).is_err());
        assert!(!revocations.revoked("back-office", 999), "a forged revocation changes nothing");
        let signature = keys.sign_record("t", Some(b"back-office"), Some(&value));
        revocations.apply(&keys, "t", &message(b"back-office", &value, Some(&signature))).unwrap();
        assert!(revocations.revoked("back-office", 999) && !revocations.revoked("back-office", 1_000) && !revocations.revoked("hmrc-gateway", 0));
        let earlier = record("back-office", 10);
        let signature = keys.sign_record("t", Some(b"back-office"), Some(&earlier));
        revocations.apply(&keys, "t", &message(b"back-office", &earlier, Some(&signature))).unwrap();
        assert!(revocations.revoked("back-office", 999), "an older revocation does not undo a newer one");
        let rekeyed = keys.sign_record("t", Some(b"someone"), Some(&value));
        assert!(revocations.apply(&keys, "t", &message(b"someone", &value, Some(&rekeyed))).is_err(), "keyed by another subject");
    }
}
