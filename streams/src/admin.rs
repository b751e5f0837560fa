//! Topic administration: creates the topics a topology needs with explicit configs,
//! idempotently, and checks existing ones have the expected partition count.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::topology::TopicSpec;

/// How long to wait for the broker to answer before calling it unreachable.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created now.
    Created,
    /// Already there with the expected partition count.
    AlreadyExists,
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No broker answered at the bootstrap address.
    #[error("cannot reach the Kafka broker at {bootstrap_servers} (waited {waited:?}): {reason}. Is it running? `sluice dev` starts one, or pass --bootstrap-servers")]
    Unreachable {
        /// The address tried.
        bootstrap_servers: String,
        /// How long we waited.
        waited: Duration,
        /// librdkafka's error.
        reason: String,
    },
    /// A topic exists with a different partition count than the topology needs.
    #[error("topic `{topic}` exists with {actual} partitions but the topology needs {expected}; co-partitioning would break. Delete it or fix topology.toml")]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions on the broker.
        actual: i32,
        /// Partitions in the topology.
        expected: i32,
    },
    /// The broker refused to create a topic.
    #[error("creating topic `{topic}` failed: {reason}")]
    CreateFailed {
        /// The topic.
        topic: String,
        /// The broker's error.
        reason: String,
    },
    /// Any other client error.
    #[error("kafka admin error: {0}")]
    Kafka(#[from] KafkaError),
}

/// Creates every topic in `specs` that does not exist yet, with its configs; verifies the
/// partition count of those that do. Returns one outcome per topic, in order.
pub async fn create_topics(bootstrap_servers: &str, specs: &[TopicSpec]) -> Result<Vec<(String, TopicOutcome)>, AdminError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka_client::client_config(bootstrap_servers)
        .set("socket.timeout.ms", "10000")
        .create()?;
    let existing = partition_counts(&admin, bootstrap_servers)?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .filter(|spec| !existing.iter().any(|(name, _)| name == &spec.name))
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(i32::from(spec.replication_factor))),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let mut created = Vec::new();
    if !new_topics.is_empty() {
        let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT)).request_timeout(Some(BROKER_TIMEOUT));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(topic) => created.push(topic),
                // Another process created it between our metadata read and now.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(AdminError::CreateFailed { topic, reason: code.to_string() }),
            }
        }
    }
    wait_for_leaders(&admin, &created)?;
    let now = partition_counts(&admin, bootstrap_servers)?;
    let mut outcomes = Vec::new();
    for spec in specs {
        if let Some((_, actual)) = now.iter().find(|(name, _)| name == &spec.name) {
            if *actual != spec.partitions {
                return Err(AdminError::PartitionMismatch { topic: spec.name.clone(), actual: *actual, expected: spec.partitions });
            }
        }
        let outcome = if created.contains(&spec.name) { TopicOutcome::Created } else { TopicOutcome::AlreadyExists };
        outcomes.push((spec.name.clone(), outcome));
    }
    Ok(outcomes)
}

/// Waits until every partition of `topics` is served by its leader: Kafka answers CreateTopics
/// before the new partitions are, and a client that uses them at once gets
/// UnknownTopicOrPartition or NotLeaderForPartition.
fn wait_for_leaders(admin: &AdminClient<DefaultClientContext>, topics: &[String]) -> Result<(), AdminError> {
    let deadline = std::time::Instant::now() + BROKER_TIMEOUT;
    let client = admin.inner();
    for topic in topics {
        loop {
            let metadata = client.fetch_metadata(Some(topic), BROKER_TIMEOUT)?;
            let ready = metadata.topics().iter().any(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0 && client.fetch_watermarks(topic, p.id(), BROKER_TIMEOUT).is_ok())
            });
            if ready {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(AdminError::CreateFailed { topic: topic.clone(), reason: format!("created, but its partitions have no leader after {BROKER_TIMEOUT:?}") });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Partition count of every topic on the broker.
pub fn partition_counts_of(bootstrap_servers: &str) -> Result<Vec<(String, i32)>, AdminError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka_client::client_config(bootstrap_servers).create()?;
    partition_counts(&admin, bootstrap_servers)
}

/// Checks a broker answers a metadata request within [`BROKER_TIMEOUT`].
pub fn ping(bootstrap_servers: &str) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka_client::client_config(bootstrap_servers).create()?;
    partition_counts(&admin, bootstrap_servers).map(|_| ())
}

fn partition_counts(admin: &AdminClient<DefaultClientContext>, bootstrap_servers: &str) -> Result<Vec<(String, i32)>, AdminError> {
    let metadata = admin.inner().fetch_metadata(None, BROKER_TIMEOUT).map_err(|e| AdminError::Unreachable {
        bootstrap_servers: bootstrap_servers.to_string(),
        waited: BROKER_TIMEOUT,
        reason: e.to_string(),
    })?;
    Ok(metadata
        .topics()
        .iter()
        .map(|topic| (topic.name().to_string(), i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX)))
        .collect())
}

/// The changelog topics (`(store, topic)`) of `topology` missing on the broker, when the
/// application `application_id` has run before (its group has committed offsets): recreating
/// them empty would silently start those stores empty after the next wipe or failover, so
/// start-up refuses instead and an operator decides (`sluice topics create` recreates them).
/// Empty for an application that never committed.
pub fn missing_changelogs(bootstrap_servers: &str, application_id: &str, topology: &crate::Topology) -> Result<Vec<(String, String)>, AdminError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let existing = partition_counts_of(bootstrap_servers)?;
    let missing: Vec<(String, String)> = topology
        .stores
        .iter()
        .filter(|store| store.changelog)
        .map(|store| (store.name.clone(), crate::topology::changelog_topic(application_id, &store.name)))
        .filter(|(_, topic)| !existing.iter().any(|(name, _)| name == topic))
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    // An OffsetFetch for the group's input partitions that exist; no group join.
    let consumer: BaseConsumer = crate::kafka_client::client_config(bootstrap_servers).set("group.id", application_id).create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    for sub in &topology.subtopologies {
        for topic in topology.input_topics(sub.id, application_id) {
            if existing.iter().any(|(name, _)| *name == topic) {
                for partition in 0..sub.partitions {
                    list.add_partition(&topic, partition);
                }
            }
        }
    }
    let committed = consumer.committed_offsets(list, BROKER_TIMEOUT)?;
    let ran_before = committed.elements().iter().any(|e| matches!(e.offset(), rdkafka::Offset::Offset(_)));
    Ok(if ran_before { missing } else { Vec::new() })
}
