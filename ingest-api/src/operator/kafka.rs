//! Kafka as the operations view shows it: topics with their partitions, offsets and configs,
//! the latest records of a topic decoded (Avro through the Schema Registry, JSON, text),
//! and consumer groups with their lag per partition. Every read is a plain assignment (no
//! consumer group, nothing committed), `read_committed`, as the console's principal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_streams::kafka_client::{role_client_config, Role};
use sluice_streams::topology::{changelog_topic, repartition_topic};
use utoipa::{IntoParams, ToSchema};

use super::{console, Console};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::SharedState;

/// How long one metadata, offsets or fetch request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Most records one topic read returns.
pub const MAX_RECORDS: usize = 100;
/// Header values shown in place of a credential.
pub const REDACTED: &str = "<redacted>";

/// The group named by the console's readers (they assign partitions and commit nothing).
pub fn reader_group(application_id: &str) -> String {
    format!("{application_id}-console")
}

/// A header, its value as text (hex when it is not UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeaderView {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// How a value was read.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecodedValue {
    /// `avro` (Confluent framing, decoded through the registry), `json`, `text`, `binary`
    /// (shown as hex) or `null` (a tombstone).
    pub value_format: String,
    /// The Avro writer's schema id.
    pub schema_id: Option<u32>,
    /// The value as JSON (Avro and JSON values), secrets replaced by `<redacted>`.
    #[schema(value_type = Object)]
    pub value: Option<serde_json::Value>,
    /// Text values; hex of binary ones.
    pub value_text: Option<String>,
    /// Fields whose values were replaced by `<redacted>`.
    pub redacted: Vec<String>,
    /// Why an Avro value could not be decoded.
    pub decode_error: Option<String>,
}

/// One record of a topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp (ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// Key as text (hex when it is not UTF-8).
    pub key: Option<String>,
    /// Headers, credentials redacted.
    pub headers: Vec<HeaderView>,
    /// The value.
    #[serde(flatten)]
    pub decoded: DecodedValue,
}

/// A topic in the list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// `external` (declared in topology.toml), `repartition`, `changelog` or `internal`
    /// (discovery, the registry's `_schemas`, the broker's own).
    pub kind: String,
    /// Partition count.
    pub partitions: usize,
    /// Records between the low and high watermarks, summed over partitions.
    pub records: i64,
}

/// The topics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    /// By name.
    pub topics: Vec<TopicSummary>,
}

/// One partition of a topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartitionView {
    /// Partition.
    pub partition: i32,
    /// Leader broker id.
    pub leader: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// Low watermark (first offset kept).
    pub low: i64,
    /// High watermark (next offset).
    pub high: i64,
}

/// A topic config.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    /// Config name.
    pub name: String,
    /// Value (`null` for a sensitive one).
    pub value: Option<String>,
    /// Whether it is the broker's default.
    pub is_default: bool,
    /// Whether the broker hides it.
    pub sensitive: bool,
}

/// A topic's partitions and configs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicDetail {
    /// Topic name.
    pub name: String,
    /// See [`TopicSummary::kind`].
    pub kind: String,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
    /// Its configs, by name.
    pub configs: Vec<ConfigView>,
}

/// Records of a topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordsPage {
    /// Topic name.
    pub topic: String,
    /// Newest first.
    pub records: Vec<RecordView>,
}

/// Which records.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsParams {
    /// How many, 1 to 100 (default 20).
    pub limit: Option<usize>,
    /// Only this partition.
    pub partition: Option<i32>,
}

/// A consumer group's position on one partition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset.
    pub committed: Option<i64>,
    /// High watermark.
    pub end: i64,
    /// `end - committed`.
    pub lag: i64,
}

/// A consumer group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// Group id.
    pub group: String,
    /// Stable, Empty, PreparingRebalance, ...
    pub state: String,
    /// Members now.
    pub members: usize,
    /// Lag summed over its partitions.
    pub lag: i64,
    /// The partitions it has committed offsets for.
    pub partitions: Vec<GroupPartition>,
}

/// The consumer groups.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// By group id.
    pub groups: Vec<GroupView>,
}

impl Console {
    /// What a topic is to this application.
    pub fn topic_kind(&self, name: &str) -> &'static str {
        let app = &self.application_id;
        if self.topology.topics.iter().any(|t| t.name == name) {
            "external"
        } else if self.topology.repartitions.iter().any(|t| repartition_topic(app, &t.name) == name) {
            "repartition"
        } else if self.topology.stores.iter().any(|s| changelog_topic(app, &s.name) == name) {
            "changelog"
        } else {
            "internal"
        }
    }

    /// A consumer that reads by assignment, as the console's principal.
    pub(crate) fn reader(&self) -> Result<BaseConsumer, Problem> {
        role_client_config(Role::Console, &self.bootstrap_servers)
            // librdkafka wants a group for position(); nothing is ever committed to it.
            .set("group.id", reader_group(&self.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("client.id", "sluice-console-reader")
            .create()
            .map_err(|e| kafka_problem(&e.to_string()))
    }

    /// Decodes a value: Avro through the registry when it is framed so, else JSON, text or hex;
    /// credentials redacted.
    pub async fn decode(&self, payload: Option<&[u8]>) -> DecodedValue {
        let Some(bytes) = payload else {
            return DecodedValue { value_format: "null".into(), schema_id: None, value: None, value_text: None, redacted: Vec::new(), decode_error: None };
        };
        let mut redacted = BTreeSet::new();
        if bytes.first() == Some(&0) && bytes.len() >= 5 {
            return match self.codec.decode_json(bytes).await {
                Ok(decoded) => DecodedValue {
                    value_format: "avro".into(),
                    schema_id: Some(decoded.schema_id),
                    value: Some(redact_json(decoded.value, &mut redacted)),
                    value_text: None,
                    redacted: redacted.into_iter().collect(),
                    decode_error: None,
                },
                Err(error) => DecodedValue {
                    value_format: "binary".into(),
                    schema_id: sluice_schemas::codec::split_header(bytes).ok().map(|(id, _)| id),
                    value: None,
                    value_text: Some(hex(bytes)),
                    redacted: Vec::new(),
                    decode_error: Some(error.to_string()),
                },
            };
        }
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let value = redact_json(json, &mut redacted);
            return DecodedValue { value_format: "json".into(), schema_id: None, value: Some(value), value_text: None, redacted: redacted.into_iter().collect(), decode_error: None };
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => DecodedValue { value_format: "text".into(), schema_id: None, value: None, value_text: Some(text.to_string()), redacted: Vec::new(), decode_error: None },
            Err(_) => DecodedValue { value_format: "binary".into(), schema_id: None, value: None, value_text: Some(hex(bytes)), redacted: Vec::new(), decode_error: None },
        }
    }

    /// A record as the console shows it.
    pub async fn record_view(&self, message: &OwnedMessage) -> RecordView {
        RecordView {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(text_or_hex),
            headers: header_views(message),
            decoded: self.decode(message.payload()).await,
        }
    }
}

/// A message's headers as text, credentials redacted.
pub fn header_views(message: &OwnedMessage) -> Vec<HeaderView> {
    let Some(headers) = message.headers() else { return Vec::new() };
    headers
        .iter()
        .map(|h| {
            let value = if is_secret_name(h.key) { REDACTED.to_string() } else { h.value.map(text_or_hex).unwrap_or_default() };
            HeaderView { name: h.key.to_string(), value }
        })
        .collect()
}

/// Whether a field or header named `name` holds a credential: passwords and their hashes,
/// secrets, bearer tokens, reset-token hashes.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name.contains("secret") || name == "authorization" || name.ends_with("token") || name.ends_with("_hash")
}

/// `value` with the values of secret fields ([`is_secret_name`]) replaced, at any depth; their
/// names are added to `redacted`.
pub fn redact_json(value: serde_json::Value, redacted: &mut BTreeSet<String>) -> serde_json::Value {
    match value {
        serde_json::Value::Object(object) => serde_json::Value::Object(
            object
                .into_iter()
                .map(|(name, value)| {
                    if is_secret_name(&name) && !value.is_null() {
                        redacted.insert(name.clone());
                        (name, serde_json::Value::String(REDACTED.to_string()))
                    } else {
                        let value = redact_json(value, redacted);
                        (name, value)
                    }
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(|item| redact_json(item, redacted)).collect()),
        other => other,
    }
}

/// UTF-8 text, or hex.
pub fn text_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => hex(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 503 for a broker that could not answer; 403 for what the console's principal may not see.
pub(crate) fn kafka_problem(error: &str) -> Problem {
    if error.contains("Authorization") || error.contains("authorization") {
        return Problem::new(StatusCode::FORBIDDEN, "console-not-authorized", "Not readable by the console", format!("the console's Kafka principal may not do this: {error}"));
    }
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", "Broker unavailable", format!("Kafka did not answer: {error}")).retry_after(1)
}

/// Reads `[from, to)` of each (topic, partition, from, to), waiting at most [`KAFKA_TIMEOUT`]
/// (a partition whose end is an open transaction gives what is committed so far).
pub(crate) fn read_ranges(consumer: &BaseConsumer, ranges: &[(String, i32, i64, i64)]) -> Result<Vec<OwnedMessage>, String> {
    read_ranges_within(consumer, ranges, KAFKA_TIMEOUT).map(|(messages, _)| messages)
}

/// Records read, and the (topic, partition) pairs not read to their end in time.
type RangesRead = (Vec<OwnedMessage>, Vec<(String, i32)>);

/// [`read_ranges`], waiting at most `timeout`; also says which partitions were not read to
/// their end in that time.
fn read_ranges_within(consumer: &BaseConsumer, ranges: &[(String, i32, i64, i64)], timeout: Duration) -> Result<RangesRead, String> {
    let wanted: Vec<&(String, i32, i64, i64)> = ranges.iter().filter(|(_, _, from, to)| from < to).collect();
    if wanted.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, from, _) in &wanted {
        list.add_partition_offset(topic, *partition, Offset::Offset(*from)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let mut open: BTreeMap<(String, i32), i64> = wanted.iter().map(|(t, p, _, to)| ((t.clone(), *p), *to)).collect();
    let mut messages = Vec::new();
    let deadline = Instant::now() + timeout;
    while !open.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let key = (message.topic().to_string(), message.partition());
                if let Some(to) = open.get(&key) {
                    if message.offset() < *to {
                        messages.push(message.detach());
                    }
                    if message.offset() + 1 >= *to {
                        open.remove(&key);
                    }
                }
            }
            Some(Err(error)) => {
                let text = error.to_string();
                if text.contains("uthorization") {
                    return Err(text);
                }
                tracing::debug!(%error, "console read");
            }
            None => {
                // Transaction markers and compacted gaps: the position says where reading is.
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements() {
                        if let Offset::Offset(position) = element.offset() {
                            let key = (element.topic().to_string(), element.partition());
                            if open.get(&key).is_some_and(|to| position >= *to) {
                                open.remove(&key);
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = consumer.unassign();
    Ok((messages, open.into_keys().collect()))
}

/// A partition's id, leader and replicas.
type PartitionMetadata = (i32, i32, Vec<i32>);

/// The topics the console's principal can see, with their partitions' leaders and replicas.
fn metadata(consumer: &BaseConsumer, topic: Option<&str>) -> Result<Vec<(String, Vec<PartitionMetadata>)>, String> {
    let metadata = consumer.fetch_metadata(topic, KAFKA_TIMEOUT).map_err(|e| e.to_string())?;
    let mut topics = Vec::new();
    for t in metadata.topics() {
        if let Some(error) = t.error() {
            return Err(format!("{}: {:?}", t.name(), error));
        }
        let partitions = t.partitions().iter().map(|p| (p.id(), p.leader(), p.replicas().to_vec())).collect();
        topics.push((t.name().to_string(), partitions));
    }
    Ok(topics)
}

/// Runs blocking Kafka calls off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, Problem> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Problem::internal(e.to_string()))?.map_err(|e| kafka_problem(&e))
}

/// Every topic with its partition count and records.
#[utoipa::path(get, path = "/v1/ops/topics", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = TopicList), (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn topics(State(state): State<SharedState>, caller: Caller) -> Result<Json<TopicList>, Problem> {
    let console = console(&state, &caller)?;
    let consumer = console.reader()?;
    let listed = blocking(move || {
        let mut out = Vec::new();
        for (name, partitions) in metadata(&consumer, None)? {
            let mut records = 0;
            for (partition, _, _) in &partitions {
                if let Ok((low, high)) = consumer.fetch_watermarks(&name, *partition, KAFKA_TIMEOUT) {
                    records += high - low;
                }
            }
            out.push((name, partitions.len(), records));
        }
        Ok(out)
    })
    .await?;
    let mut topics: Vec<TopicSummary> = listed.into_iter().map(|(name, partitions, records)| TopicSummary { kind: console.topic_kind(&name).to_string(), name, partitions, records }).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TopicList { topics }))
}

/// A topic's partitions, offsets and configs.
#[utoipa::path(get, path = "/v1/ops/topics/{name}", tag = "operator", security(("bearer" = [])),
    params(("name" = String, Path, description = "Topic name")),
    responses((status = 200, body = TopicDetail), (status = 404, body = Problem, description = "topic-not-found")))]
pub async fn topic(State(state): State<SharedState>, caller: Caller, Path(name): Path<String>) -> Result<Json<TopicDetail>, Problem> {
    let console = console(&state, &caller)?;
    let partitions = partitions_of(console, &name).await?;
    let admin: AdminClient<DefaultClientContext> = role_client_config(Role::Console, &console.bootstrap_servers).create().map_err(|e| kafka_problem(&e.to_string()))?;
    let described = admin.describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT))).await.map_err(|e| kafka_problem(&e.to_string()))?;
    let mut configs: Vec<ConfigView> = Vec::new();
    for resource in described.into_iter().flatten() {
        for entry in resource.entries {
            configs.push(ConfigView { value: if entry.is_sensitive { None } else { entry.value }, name: entry.name, is_default: entry.is_default, sensitive: entry.is_sensitive });
        }
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TopicDetail { kind: console.topic_kind(&name).to_string(), name, partitions, configs }))
}

/// A topic's partitions with their watermarks; 404 when it does not exist.
async fn partitions_of(console: &Console, name: &str) -> Result<Vec<PartitionView>, Problem> {
    topic_partitions(console, name).await?.ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "topic-not-found", "No such topic", format!("no topic `{name}` (or the console's principal may not describe it)")))
}

/// One topic's partitions with their watermarks, from that topic's metadata alone; `None` when
/// the broker does not know it or the console's principal may not describe it.
pub(crate) async fn topic_partitions(console: &Console, name: &str) -> Result<Option<Vec<PartitionView>>, Problem> {
    let consumer = console.reader()?;
    let topic = name.to_string();
    blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT).map_err(|e| e.to_string())?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        match found.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART | RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => return Ok(None),
            Some(error) => return Err(format!("{topic}: {error:?}")),
        }
        let mut out = Vec::new();
        for p in found.partitions() {
            let (low, high) = consumer.fetch_watermarks(&topic, p.id(), KAFKA_TIMEOUT).map_err(|e| e.to_string())?;
            out.push(PartitionView { partition: p.id(), leader: p.leader(), replicas: p.replicas().to_vec(), low, high });
        }
        out.sort_by_key(|p| p.partition);
        Ok(Some(out))
    })
    .await
}

/// The latest records of a topic, decoded, newest first.
#[utoipa::path(get, path = "/v1/ops/topics/{name}/records", tag = "operator", security(("bearer" = [])),
    params(("name" = String, Path, description = "Topic name"), RecordsParams),
    responses((status = 200, body = RecordsPage), (status = 403, body = Problem, description = "console-not-authorized"), (status = 404, body = Problem, description = "topic-not-found")))]
pub async fn records(State(state): State<SharedState>, caller: Caller, Path(name): Path<String>, Query(params): Query<RecordsParams>) -> Result<Json<RecordsPage>, Problem> {
    let console = console(&state, &caller)?;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_RECORDS {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to {MAX_RECORDS}, got {limit}")));
    }
    let partitions = partitions_of(console, &name).await?;
    let chosen: Vec<&PartitionView> = partitions.iter().filter(|p| params.partition.is_none_or(|wanted| wanted == p.partition)).collect();
    if chosen.is_empty() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "partition-not-found", "No such partition", format!("`{name}` has {} partitions", partitions.len())));
    }
    let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
    let ranges: Vec<(String, i32, i64, i64)> = chosen.iter().map(|p| (name.clone(), p.partition, (p.high - limit_i64).max(p.low), p.high)).collect();
    let consumer = console.reader()?;
    let mut messages = blocking(move || read_ranges(&consumer, &ranges)).await?;
    messages.sort_by_key(|m| std::cmp::Reverse((m.timestamp().to_millis().unwrap_or(0), m.offset())));
    messages.truncate(limit);
    let mut records = Vec::with_capacity(messages.len());
    for message in &messages {
        records.push(console.record_view(message).await);
    }
    Ok(Json(RecordsPage { topic: name, records }))
}

/// Offset lag at most this is checked for records (see [`groups`]).
const MARKER_SLACK: i64 = 2;

/// Every consumer group with its committed offsets and lag. Lag counts records: a group that
/// read a transactional topic to its end (the processors' repartition topics under
/// exactly_once_v2) has committed the offset after its last record, and the transaction's
/// commit marker that follows is not a record, so a small offset gap is read
/// (`read_committed`) and counts only the records in it.
#[utoipa::path(get, path = "/v1/ops/groups", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = GroupList), (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn groups(State(state): State<SharedState>, caller: Caller) -> Result<Json<GroupList>, Problem> {
    let console = console(&state, &caller)?;
    let consumer = console.reader()?;
    let servers = console.bootstrap_servers.clone();
    let groups = blocking(move || {
        let listed = consumer.fetch_group_list(None, KAFKA_TIMEOUT).map_err(|e| e.to_string())?;
        let topics = metadata(&consumer, None)?;
        let mut all = TopicPartitionList::new();
        for (topic, partitions) in &topics {
            for (partition, _, _) in partitions {
                all.add_partition(topic, *partition);
            }
        }
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut groups = Vec::new();
        for group in listed.groups() {
            let member: BaseConsumer = role_client_config(Role::Console, &servers)
                .set("group.id", group.name())
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| e.to_string())?;
            let committed = match member.committed_offsets(all.clone(), KAFKA_TIMEOUT) {
                Ok(list) => list,
                Err(error) => {
                    tracing::debug!(group = group.name(), %error, "committed offsets not readable");
                    continue;
                }
            };
            let mut partitions = Vec::new();
            for element in committed.elements() {
                let Offset::Offset(offset) = element.offset() else { continue };
                let key = (element.topic().to_string(), element.partition());
                let end = match ends.get(&key) {
                    Some(end) => *end,
                    None => {
                        let (_, high) = consumer.fetch_watermarks(&key.0, key.1, KAFKA_TIMEOUT).map_err(|e| e.to_string())?;
                        ends.insert(key.clone(), high);
                        high
                    }
                };
                partitions.push(GroupPartition { topic: key.0, partition: key.1, committed: Some(offset), end, lag: (end - offset).max(0) });
            }
            let gaps: Vec<(String, i32, i64, i64)> = partitions.iter().filter(|p| p.lag > 0 && p.lag <= MARKER_SLACK).filter_map(|p| Some((p.topic.clone(), p.partition, p.committed?, p.end))).collect();
            if !gaps.is_empty() {
                if let Ok((records, unfinished)) = read_ranges_within(&consumer, &gaps, Duration::from_millis(500)) {
                    let read = |p: &GroupPartition| gaps.iter().any(|g| g.0 == p.topic && g.1 == p.partition) && !unfinished.iter().any(|u| u.0 == p.topic && u.1 == p.partition);
                    for partition in partitions.iter_mut().filter(|p| read(p)) {
                        let found = records.iter().filter(|m| m.topic() == partition.topic && m.partition() == partition.partition).count();
                        partition.lag = partition.lag.min(i64::try_from(found).unwrap_or(i64::MAX));
                    }
                }
            }
            partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            groups.push(GroupView {
                group: group.name().to_string(),
                state: group.state().to_string(),
                members: group.members().len(),
                lag: partitions.iter().map(|p| p.lag).sum(),
                partitions,
            });
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    })
    .await?;
    Ok(Json(GroupList { groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_at_any_depth_and_named() {
        let mut redacted = BTreeSet::new();
        let user = serde_json::json!({
            "user_id": "u_1",
            "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "password_reset": {"token_sha256": "ab", "expires_at_ms": 1},
            "sessions": [{"refresh_token": "r", "issued_at_ms": 2}],
            "token_issued_at": 3,
            "phone_number": null,
        });
        let shown = redact_json(user, &mut redacted);
        assert!(!shown.to_string().contains("argon2"), "{shown}");
        assert_eq!(shown["password_reset"], REDACTED, "a secret object is replaced whole");
        assert_eq!(shown["sessions"][0]["refresh_token"], REDACTED);
        assert_eq!((shown["user_id"].as_str(), shown["token_issued_at"].as_i64(), shown["sessions"][0]["issued_at_ms"].as_i64()), (Some("u_1"), Some(3), Some(2)), "the rest is kept: {shown}");
        assert_eq!(redacted.into_iter().collect::<Vec<_>>(), ["password_hash", "password_reset", "refresh_token"]);
        assert!(is_secret_name("Authorization") && is_secret_name("used_reset_sha256_hash") && !is_secret_name("sluice.signature"));
    }
}
