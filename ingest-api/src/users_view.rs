//! [`UsersView`]: the API's own replica of the pipeline's `users` store (a global store, in
//! Kafka Streams' words), kept from the store's changelog topic read committed, every
//! partition, by a thread of its own. The API asks the processors' stores first (they are the
//! freshest: a logout or a password change applies there first); when they cannot answer
//! (every instance restarting, or none running) it answers from this replica, so logins and
//! commands go on and the commands are decided when the processors are back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// See the module docs. Stops its thread when dropped.
pub struct UsersView {
    entries: Arc<RwLock<HashMap<String, Vec<u8>>>>,
    /// True once the replica has read up to the end its changelog had when it started.
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl UsersView {
    /// Starts replicating `topic` (the `users` store's changelog) from `bootstrap_servers`.
    pub fn start(bootstrap_servers: &str, topic: &str) -> Result<UsersView, String> {
        let consumer: BaseConsumer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Ingest, bootstrap_servers)
            .set("group.id", format!("{topic}-api-view"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("the users replica's consumer: {e}"))?;
        let view = UsersView { entries: Arc::default(), ready: Arc::default(), stop: Arc::default() };
        let (entries, ready, stop, topic) = (Arc::clone(&view.entries), Arc::clone(&view.ready), Arc::clone(&view.stop), topic.to_string());
        std::thread::Builder::new()
            .name("sluice-users-view".to_string())
            .spawn(move || replicate(&consumer, &topic, &entries, &ready, &stop))
            .map_err(|e| format!("starting the users replica: {e}"))?;
        Ok(view)
    }

    /// The replica's value of `user_id` (`Some(None)`: no such user), or `None` while the
    /// replica has not caught up.
    pub fn get(&self, user_id: &str) -> Option<Option<Vec<u8>>> {
        if !self.ready.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.entries.read().expect("users view lock").get(user_id).cloned())
    }
}

impl Drop for UsersView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The replica's loop: assign every partition from the start (once the topic exists), apply
/// each record (a tombstone deletes), and mark the replica ready once past the end offsets
/// read at assignment.
fn replicate(consumer: &BaseConsumer, topic: &str, entries: &RwLock<HashMap<String, Vec<u8>>>, ready: &AtomicBool, stop: &AtomicBool) {
    let mut ends: Option<Vec<(i32, i64)>> = None;
    while !stop.load(Ordering::SeqCst) {
        if ends.is_none() {
            match assign_all(consumer, topic) {
                Ok(found) => ends = Some(found),
                Err(error) => {
                    tracing::debug!(%topic, %error, "users replica: the changelog is not readable yet");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { continue };
                let mut map = entries.write().expect("users view lock");
                match message.payload() {
                    Some(value) => map.insert(key, value.to_vec()),
                    None => map.remove(&key),
                };
            }
            Some(Err(error)) => tracing::debug!(%error, "users replica: consumer error"),
            None => {}
        }
        if !ready.load(Ordering::SeqCst) && caught_up(consumer, topic, ends.as_deref().unwrap_or_default()) {
            ready.store(true, Ordering::SeqCst);
            tracing::info!(%topic, users = entries.read().expect("users view lock").len(), "users replica caught up");
        }
    }
}

/// Assigns every partition of `topic` from the beginning; answers each one's end offset.
fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64)>, String> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err(format!("topic `{topic}` has no partitions yet"));
    }
    let mut list = TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in partitions {
        let (_, end) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        list.add_partition_offset(topic, partition, Offset::Beginning).map_err(|e| e.to_string())?;
        ends.push((partition, end));
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    Ok(ends)
}

/// True when the consumer's position is at or past `ends` on every partition (a position,
/// not the last record, since transaction markers take offsets too).
fn caught_up(consumer: &BaseConsumer, topic: &str, ends: &[(i32, i64)]) -> bool {
    let Ok(position) = consumer.position() else { return false };
    ends.iter().all(|&(partition, end)| {
        end == 0
            || position.elements_for_topic(topic).iter().any(|e| e.partition() == partition && matches!(e.offset(), Offset::Offset(o) if o >= end))
    })
}
