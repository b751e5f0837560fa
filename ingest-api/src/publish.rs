//! Publishing: a command is Avro-encoded through the Schema Registry (Confluent wire format,
//! TopicNameStrategy) and produced with `acks=all` and the idempotent producer; the API
//! answers only after the broker acknowledged it. A command is one record, so it is either
//! written or not: if the registry or the broker cannot be reached the client gets a 503 and
//! may retry with the same `Idempotency-Key`, which has one effect.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_schemas::{AvroRecord, Codec, CodecError};
use sluice_streams::signing::{InternalKeys, SIGNATURE_HEADER};

use crate::problem::Problem;

/// How long the producer tries to deliver a record before the request fails with 503. Below
/// the request timeout, so a stuck broker is reported as such.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a readiness probe waits for the broker and the registry.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Produces Avro records to Kafka.
pub struct Publisher {
    producer: FutureProducer,
    /// Signs every record published (docs/security.md, signed records).
    keys: Arc<InternalKeys>,
    codec: Codec,
    registry_url: String,
    http: reqwest::Client,
}

impl Publisher {
    /// A producer on `bootstrap_servers` and a codec on the registry at `registry_url`;
    /// records are signed with `keys`.
    pub fn new(bootstrap_servers: &str, (registry_url, user_info): (&str, Option<&str>), keys: Arc<InternalKeys>) -> Result<Publisher, String> {
        let producer: FutureProducer = sluice_streams::kafka_client::role_client_config(sluice_streams::kafka_client::Role::Ingest, bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Kafka's (and Kafka Streams') partitioner, so keys land where the processors'
            // tasks and interactive queries expect them.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .set("client.id", "sluice-ingest")
            .create()
            .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
        let codec = Codec::new(registry_url, user_info).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build().map_err(|e| e.to_string())?;
        Ok(Publisher { producer, keys, codec, registry_url: registry_url.trim_end_matches('/').to_string(), http })
    }

    /// Encodes `record` for `topic` and produces it keyed by `key`; resolves when the broker
    /// acknowledged it (all in-sync replicas).
    pub async fn publish<T: AvroRecord>(&self, topic: &str, key: &str, record: &T, headers: &[(&str, &str)]) -> Result<(), Problem> {
        let payload = self.codec.encode(topic, record).await.map_err(encode_problem)?;
        let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len() + 1);
        for (name, value) in headers.iter().filter(|(name, _)| *name != SIGNATURE_HEADER) {
            owned = owned.insert(rdkafka::message::Header { key: name, value: Some(*value) });
        }
        owned = self.keys.sign_into(owned, topic, Some(key.as_bytes()), Some(&payload));
        let message = FutureRecord::to(topic).key(key).payload(&payload).headers(owned);
        let unavailable = |why: String| {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", "Broker unavailable", format!("`{topic}` did not acknowledge the command: {why}; retry with the same Idempotency-Key"))
                .retry_after(1)
        };
        // librdkafka keeps a record that is in flight to a vanished broker past
        // `message.timeout.ms`; the API answers within its own bound regardless.
        match tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(1), self.producer.send(message, DELIVERY_TIMEOUT)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(unavailable(error.to_string())),
            Err(_) => Err(unavailable(format!("no acknowledgement within {} s", DELIVERY_TIMEOUT.as_secs() + 1))),
        }
    }

    /// Encodes and produces without waiting for the acknowledgement (the access log).
    pub async fn publish_detached<T: AvroRecord>(&self, topic: &str, key: &str, record: &T) -> Result<(), String> {
        let payload = self.codec.encode(topic, record).await.map_err(|e| e.to_string())?;
        let headers = self.keys.sign_into(rdkafka::message::OwnedHeaders::new_with_capacity(1), topic, Some(key.as_bytes()), Some(&payload));
        self.producer.send_result(FutureRecord::to(topic).key(key).payload(&payload).headers(headers)).map(|_| ()).map_err(|(error, _)| error.to_string())
    }

    /// `Ok` when the broker answers a metadata request and the registry lists its subjects.
    pub async fn probe(&self) -> Result<(), Vec<String>> {
        let mut failures = Vec::new();
        let producer = self.producer.clone();
        let broker = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, PROBE_TIMEOUT).map(|_| ())).await;
        match broker {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("broker: {error}")),
            Err(error) => failures.push(format!("broker probe: {error}")),
        }
        match self.http.get(format!("{}/subjects", self.registry_url)).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => failures.push(format!("schema registry: answered {}", response.status())),
            Err(error) => failures.push(format!("schema registry: {error}")),
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Waits up to `timeout` for records still in flight (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

fn encode_problem(error: CodecError) -> Problem {
    if error.is_poison() {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding-failed", "Command could not be encoded", error.to_string())
    } else {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable", "Schema Registry unavailable", format!("{error}; nothing was written, retry")).retry_after(1)
    }
}
