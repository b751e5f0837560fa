//! [`UsersView`]: the API's own replica of the pipeline's `users` store (a global store, in
//! Kafka Streams' words), kept from the store's changelog topic read committed, every
//! partition, by a thread of its own.
//!
//! It is where the API checks passwords: the interactive-query server never answers a password
//! hash (docs/security.md), so login and password change read the user from here, after
//! waiting until the replica has read its partition up to the end offset the broker gives at
//! that moment ([`UsersView::fresh`]): a password change or a registration committed before the
//! request is seen. For everything else the API asks the processors' stores first and falls
//! back to this replica when they cannot answer (every instance restarting, or none running), so
//! commands go on and are decided when the processors are back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// See the module docs. Stops its thread when dropped.
pub struct UsersView {
    entries: Arc<RwLock<HashMap<String, Vec<u8>>>>,
    /// True once the replica has read up to the end its changelog had when it started.
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// Asks the broker for end offsets ([`UsersView::fresh`]).
    watermarks: Arc<BaseConsumer>,
    topic: String,
}

/// How far the replica has read: its position per partition, the changelog's partition count
/// (0 until assigned), and a signal sent after each step of the replica's loop.
struct Progress {
    positions: Mutex<HashMap<i32, i64>>,
    partitions: AtomicI32,
    stepped: tokio::sync::watch::Sender<u64>,
}

/// How long [`UsersView::fresh`] waits for the replica to reach the broker's end offset.
pub const FRESH_WAIT: Duration = Duration::from_secs(3);

impl UsersView {
    /// Starts replicating `topic` (the `users` store's changelog) from `bootstrap_servers`.
    pub fn start(bootstrap_servers: &str, topic: &str) -> Result<UsersView, String> {
        let consumer: BaseConsumer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Ingest, bootstrap_servers)
            .set("group.id", format!("{topic}-api-view"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("the users replica's consumer: {e}"))?;
        let watermarks: BaseConsumer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Ingest, bootstrap_servers)
            .set("group.id", format!("{topic}-api-view"))
            .create()
            .map_err(|e| format!("the users replica's offsets client: {e}"))?;
        let progress = Arc::new(Progress { positions: Mutex::default(), partitions: AtomicI32::new(0), stepped: tokio::sync::watch::Sender::new(0) });
        let view = UsersView { entries: Arc::default(), ready: Arc::default(), stop: Arc::default(), progress, watermarks: Arc::new(watermarks), topic: topic.to_string() };
        let replica = Replica { entries: Arc::clone(&view.entries), ready: Arc::clone(&view.ready), stop: Arc::clone(&view.stop), progress: Arc::clone(&view.progress) };
        let topic = topic.to_string();
        std::thread::Builder::new()
            .name("sluice-users-view".to_string())
            .spawn(move || replica.run(&consumer, &topic))
            .map_err(|e| format!("starting the users replica: {e}"))?;
        Ok(view)
    }

    /// `user_id`'s value as of now (`None`: no such user): asks the broker for the end offset
    /// of the user's changelog partition, waits until the replica has read up to it (at most
    /// `wait`), then answers. Errs when the replica is not ready, the broker does not answer or
    /// the replica stays behind.
    pub async fn fresh(&self, user_id: &str, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        let partitions = self.progress.partitions.load(Ordering::SeqCst);
        if partitions == 0 || !self.ready.load(Ordering::SeqCst) {
            return Err("the API's users replica has not read the users changelog yet".to_string());
        }
        let partition = sluice_streams::partitioner::partition_for_key(user_id.as_bytes(), partitions);
        let (client, topic) = (Arc::clone(&self.watermarks), self.topic.clone());
        let (_, end) = tokio::task::spawn_blocking(move || client.fetch_watermarks(&topic, partition, Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the end offset of the users changelog: {e}"))?;
        let deadline = Instant::now() + wait;
        let mut stepped = self.progress.stepped.subscribe();
        loop {
            let position = self.progress.positions.lock().expect("replica positions lock").get(&partition).copied().unwrap_or(0);
            if position >= end {
                return Ok(self.entries.read().expect("users view lock").get(user_id).cloned());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!("the API's users replica is behind the users changelog (partition {partition}: at {position}, the end is {end})"));
            }
            let _ = tokio::time::timeout(remaining, stepped.changed()).await;
        }
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

/// What the replica's thread shares with the [`UsersView`].
struct Replica {
    entries: Arc<RwLock<HashMap<String, Vec<u8>>>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Replica {
    /// The replica's loop: assign every partition from the start (once the topic exists),
    /// apply each record (a tombstone deletes), publish the position after each step, and mark
    /// the replica ready once past the end offsets read at assignment.
    fn run(&self, consumer: &BaseConsumer, topic: &str) {
        let mut ends: Option<Vec<(i32, i64)>> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if ends.is_none() {
                match assign_all(consumer, topic) {
                    Ok(found) => {
                        self.progress.partitions.store(i32::try_from(found.len()).unwrap_or(i32::MAX), Ordering::SeqCst);
                        ends = Some(found);
                    }
                    Err(error) => {
                        tracing::debug!(%topic, %error, "users replica: the changelog is not readable yet");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    if let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()) {
                        let mut map = self.entries.write().expect("users view lock");
                        match message.payload() {
                            Some(value) => map.insert(key, value.to_vec()),
                            None => map.remove(&key),
                        };
                    }
                }
                Some(Err(error)) => tracing::debug!(%error, "users replica: consumer error"),
                None => {}
            }
            // The position, not the last record: transaction markers take offsets too.
            if let Ok(position) = consumer.position() {
                let mut positions = self.progress.positions.lock().expect("replica positions lock");
                for element in position.elements_for_topic(topic) {
                    if let Offset::Offset(offset) = element.offset() {
                        positions.insert(element.partition(), offset);
                    }
                }
            }
            self.progress.stepped.send_modify(|step| *step += 1);
            if !self.ready.load(Ordering::SeqCst) && caught_up(consumer, topic, ends.as_deref().unwrap_or_default()) {
                self.ready.store(true, Ordering::SeqCst);
                tracing::info!(%topic, users = self.entries.read().expect("users view lock").len(), "users replica caught up");
            }
        }
    }
}

/// Assigns every partition of `topic` from the beginning; answers each one's end offset.
fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64)>, String> {
    let partitions = topic_partitions(consumer, topic)?;
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

/// The partitions of `topic` (an error while it has none: not created yet).
pub(crate) fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err(format!("topic `{topic}` has no partitions yet"));
    }
    Ok(partitions)
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
