//! The dead-letter queue (docs/operations.md, the dead-letter queue): list the dead letters on
//! `sluice.dlq` with their `sluice.error.*` headers, show one decoded, replay one to the topic
//! it came from, or discard it. Shared by the operator console and `sluice dlq`.
//!
//! A replay writes the original key, value and headers back, exactly as they were: a signed
//! record keeps its signature (kept on the dead letter as `sluice.dlq.signature`), so the
//! runtime verifies it again, and a forged one is dead-lettered again rather than made genuine. Each decision is kept on the compacted
//! `sluice.dlq.actions` (a dead letter is replayed or discarded once) and audited on
//! `system.logs.activity`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use sluice_schemas::types::{ActivityLog, DeadLetter, DeadLetterAction, DeadLetterOutcome};
use sluice_schemas::TimestampMillis;
use sluice_streams::signing::SIGNATURE_HEADER;
use sluice_streams::{now_ms, DLQ_HEADER_PREFIX, DLQ_SIGNATURE_HEADER, DLQ_TOPIC};
use utoipa::{IntoParams, ToSchema};

use super::kafka::{blocking, header_views, kafka_problem, read_ranges, text_or_hex, topic_partitions, DecodedValue, HeaderView};
use super::{console, Console};
use crate::auth::Caller;
use crate::body::ApiJson;
use crate::problem::Problem;
use crate::SharedState;

/// Where operators' decisions are kept.
pub const ACTIONS_TOPIC: &str = "sluice.dlq.actions";
/// Where they are audited.
pub const ACTIVITY_TOPIC: &str = "system.logs.activity";
/// Dead letters read back per DLQ partition for a list (the newest).
pub const LIST_WINDOW: i64 = 1000;
/// Longest note.
pub const MAX_NOTE: usize = 1000;

/// Where a replay went.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ReplayTarget {
    /// The original topic.
    pub topic: String,
    /// Partition written.
    pub partition: i32,
    /// Offset written.
    pub offset: i64,
}

/// What an operator decided.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Handled {
    /// `replayed` or `discarded`.
    pub action: String,
    /// Who.
    pub operator: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Why.
    pub note: String,
    /// Where a replay went.
    pub replayed_to: Option<ReplayTarget>,
}

/// A dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// `<partition>-<offset>` on sluice.dlq.
    pub id: String,
    /// Partition on sluice.dlq.
    pub partition: i32,
    /// Offset on sluice.dlq.
    pub offset: i64,
    /// When it was dead-lettered (the original record's timestamp).
    pub dead_lettered_at_ms: i64,
    /// The topic it came from.
    pub source_topic: String,
    /// Its partition there.
    pub source_partition: i32,
    /// Its offset there.
    pub source_offset: i64,
    /// Why, as a class: deserialization, wrong_partition, forged_command, ...
    pub error_class: String,
    /// Why, in words.
    pub error_message: String,
    /// The original key (text, or hex).
    pub key: Option<String>,
    /// What was cut from the original key or value (such a letter cannot be replayed).
    pub truncated: Option<String>,
    /// `open`, `replayed` or `discarded`.
    pub status: String,
    /// The decision, once made.
    pub handled: Option<Handled>,
}

/// A dead letter with its headers and its original value decoded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterDetail {
    /// The dead letter.
    #[serde(flatten)]
    pub letter: DeadLetterView,
    /// Its `sluice.error.*` headers.
    pub headers: Vec<HeaderView>,
    /// The original record's headers (credentials shown as `<redacted>`).
    pub original_headers: Vec<HeaderView>,
    /// The original value.
    #[serde(flatten)]
    pub decoded: DecodedValue,
}

/// Dead letters, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// The dead letters.
    pub dead_letters: Vec<DeadLetterView>,
    /// How many of those read are open.
    pub open: usize,
}

/// Which dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `open` (default) or `all`.
    pub status: Option<String>,
    /// How many, 1 to 500 (default 50).
    pub limit: Option<usize>,
}

/// An operator's reason.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionRequest {
    /// Why (required, at most 1000 characters).
    pub note: String,
}

/// A dead letter read back: its record on sluice.dlq and its value.
struct Letter {
    message: OwnedMessage,
    value: DeadLetter,
}

fn parse_id(id: &str) -> Result<(i32, i64), Problem> {
    id.split_once('-')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .filter(|(p, o): &(i32, i64)| *p >= 0 && *o >= 0)
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "dead-letter-not-found", "No such dead letter", format!("no dead letter `{id}` (ids are `<partition>-<offset>` on {DLQ_TOPIC})"))
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

impl Console {
    /// Reads the dead letters in `ranges` of sluice.dlq.
    async fn read_letters(&self, ranges: Vec<(String, i32, i64, i64)>) -> Result<Vec<Letter>, Problem> {
        let consumer = self.reader()?;
        let messages = blocking(move || read_ranges(&consumer, &ranges)).await?;
        let mut letters = Vec::with_capacity(messages.len());
        for message in messages {
            match self.codec.decode::<DeadLetter>(message.payload().unwrap_or_default()).await {
                Ok(value) => letters.push(Letter { message, value }),
                Err(error) => tracing::warn!(partition = message.partition(), offset = message.offset(), %error, "a record on the DLQ is not a DeadLetter"),
            }
        }
        Ok(letters)
    }

    /// Every decision on `sluice.dlq.actions`, by dead-letter id (the latest wins).
    async fn decisions(&self) -> Result<HashMap<String, DeadLetterAction>, Problem> {
        let consumer = self.reader()?;
        let messages = blocking(move || {
            let (low, high) = consumer.fetch_watermarks(ACTIONS_TOPIC, 0, std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
            read_ranges(&consumer, &[(ACTIONS_TOPIC.to_string(), 0, low, high)])
        })
        .await?;
        let mut decisions = HashMap::new();
        for message in messages {
            if let Ok(action) = self.codec.decode::<DeadLetterAction>(message.payload().unwrap_or_default()).await {
                decisions.insert(action.dead_letter_id.clone(), action);
            }
        }
        Ok(decisions)
    }

    fn view(letter: &Letter, decision: Option<&DeadLetterAction>) -> DeadLetterView {
        let (partition, offset) = (letter.message.partition(), letter.message.offset());
        let handled = decision.map(|d| Handled {
            action: if d.outcome == DeadLetterOutcome::Replayed { "replayed".into() } else { "discarded".into() },
            operator: d.operator.clone(),
            at_ms: d.occurred_at.0,
            note: d.note.clone(),
            replayed_to: d.replayed_partition.zip(d.replayed_offset).map(|(partition, offset)| ReplayTarget { topic: d.source_topic.clone(), partition, offset }),
        });
        DeadLetterView {
            id: format!("{partition}-{offset}"),
            partition,
            offset,
            dead_lettered_at_ms: letter.value.occurred_at.0,
            source_topic: letter.value.source_topic.clone(),
            source_partition: letter.value.source_partition,
            source_offset: letter.value.source_offset,
            error_class: letter.value.error_class.clone(),
            error_message: letter.value.error_message.clone(),
            key: letter.value.key.as_ref().map(|k| text_or_hex(&k.0)),
            truncated: header(&letter.message, "sluice.error.truncated"),
            status: handled.as_ref().map_or_else(|| "open".to_string(), |h| h.action.clone()),
            handled,
        }
    }

    /// The newest dead letters (the last [`LIST_WINDOW`] of each partition), newest first.
    pub async fn dead_letters(&self, open_only: bool, limit: usize) -> Result<DeadLetterList, Problem> {
        // No DLQ topic yet: nothing was dead-lettered.
        let partitions = topic_partitions(self, DLQ_TOPIC).await?.unwrap_or_default();
        let ranges = partitions.iter().map(|p| (DLQ_TOPIC.to_string(), p.partition, (p.high - LIST_WINDOW).max(p.low), p.high)).collect();
        let letters = self.read_letters(ranges).await?;
        let decisions = self.decisions().await?;
        let mut views: Vec<DeadLetterView> = letters.iter().map(|l| Console::view(l, decisions.get(&format!("{}-{}", l.message.partition(), l.message.offset())))).collect();
        views.sort_by_key(|v| std::cmp::Reverse((v.dead_lettered_at_ms, v.partition, v.offset)));
        let open = views.iter().filter(|v| v.handled.is_none()).count();
        let dead_letters = views.into_iter().filter(|v| !open_only || v.handled.is_none()).take(limit).collect();
        Ok(DeadLetterList { dead_letters, open })
    }

    async fn letter(&self, id: &str) -> Result<(Letter, Option<DeadLetterAction>), Problem> {
        let (partition, offset) = parse_id(id)?;
        let letter = self.read_letters(vec![(DLQ_TOPIC.to_string(), partition, offset, offset + 1)]).await?.into_iter().find(|l| l.message.offset() == offset).ok_or_else(|| not_found(id))?;
        let decision = self.decisions().await?.remove(id);
        Ok((letter, decision))
    }

    /// One dead letter, its original value decoded.
    pub async fn dead_letter(&self, id: &str) -> Result<DeadLetterDetail, Problem> {
        let (letter, decision) = self.letter(id).await?;
        let (errors, mut original): (Vec<HeaderView>, Vec<HeaderView>) = header_views(&letter.message).into_iter().partition(|h| h.name.starts_with(DLQ_HEADER_PREFIX));
        for header in &mut original {
            if header.name == DLQ_SIGNATURE_HEADER {
                header.name = SIGNATURE_HEADER.to_string();
            }
        }
        let decoded = self.decode(letter.value.value.as_ref().map(|v| v.0.as_slice())).await;
        Ok(DeadLetterDetail { letter: Console::view(&letter, decision.as_ref()), headers: errors, original_headers: original, decoded })
    }

    /// Writes a dead letter's original record back to its topic, then records the decision.
    pub async fn replay(&self, id: &str, operator: &str, note: &str) -> Result<DeadLetterView, Problem> {
        let note = check_note(note)?;
        let _one_at_a_time = self.dlq_lock.lock().await;
        let (letter, decision) = self.letter(id).await?;
        refuse_handled(id, decision.as_ref())?;
        if let Some(cut) = header(&letter.message, "sluice.error.truncated") {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "dead-letter-truncated", "Dead letter truncated", format!("the dead letter keeps only part of the original record ({cut}), so it cannot be replayed; discard it")));
        }
        let topic = letter.value.source_topic.clone();
        let key = letter.value.key.as_ref().map(|k| k.0.clone());
        let partition = match &key {
            Some(key) => sluice_streams::partitioner::partition_for_key(key, self.partition_count(&topic).await?),
            None => letter.value.source_partition,
        };
        let mut headers = OwnedHeaders::new();
        if let Some(original) = letter.message.headers() {
            for h in original.iter().filter(|h| !h.key.starts_with(DLQ_HEADER_PREFIX)) {
                let key = if h.key == DLQ_SIGNATURE_HEADER { SIGNATURE_HEADER } else { h.key };
                headers = headers.insert(Header { key, value: h.value });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).partition(partition).headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &letter.value.value {
            record = record.payload(value.0.as_slice());
        }
        let delivered = self.producer.send(record, crate::publish::DELIVERY_TIMEOUT).await.map_err(|(error, _)| kafka_problem(&error.to_string()))?;
        let target = ReplayTarget { topic: topic.clone(), partition: delivered.partition, offset: delivered.offset };
        tracing::warn!(dead_letter = id, %operator, topic = %target.topic, partition = target.partition, offset = target.offset, "dead letter replayed");
        let action = self.decide(&letter, DeadLetterOutcome::Replayed, operator, note, Some(&target)).await?;
        Ok(Console::view(&letter, Some(&action)))
    }

    /// Marks a dead letter handled without replaying it.
    pub async fn discard(&self, id: &str, operator: &str, note: &str) -> Result<DeadLetterView, Problem> {
        let note = check_note(note)?;
        let _one_at_a_time = self.dlq_lock.lock().await;
        let (letter, decision) = self.letter(id).await?;
        refuse_handled(id, decision.as_ref())?;
        tracing::warn!(dead_letter = id, %operator, "dead letter discarded");
        let action = self.decide(&letter, DeadLetterOutcome::Discarded, operator, note, None).await?;
        Ok(Console::view(&letter, Some(&action)))
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, Problem> {
        let count = topic_partitions(self, topic).await?.map_or(0, |p| p.len());
        i32::try_from(count).ok().filter(|c| *c > 0).ok_or_else(|| kafka_problem(&format!("topic {topic} has no partitions")))
    }

    /// Keeps the decision on sluice.dlq.actions and audits it on system.logs.activity.
    async fn decide(&self, letter: &Letter, outcome: DeadLetterOutcome, operator: &str, note: &str, target: Option<&ReplayTarget>) -> Result<DeadLetterAction, Problem> {
        let id = format!("{}-{}", letter.message.partition(), letter.message.offset());
        let action = DeadLetterAction {
            event_id: uuid::Uuid::new_v4().to_string(),
            occurred_at: TimestampMillis(now_ms()),
            dead_letter_id: id.clone(),
            outcome,
            operator: operator.to_string(),
            note: note.to_string(),
            source_topic: letter.value.source_topic.clone(),
            replayed_partition: target.map(|t| t.partition),
            replayed_offset: target.map(|t| t.offset),
        };
        let (command_type, verb) = if outcome == DeadLetterOutcome::Replayed { ("DeadLetterReplay", "replayed") } else { ("DeadLetterDiscard", "discarded") };
        let audit = ActivityLog {
            event_id: action.event_id.clone(),
            occurred_at: action.occurred_at,
            user_id: letter.value.key.as_ref().map(|k| text_or_hex(&k.0)).unwrap_or_default(),
            principal_subject: operator.to_string(),
            command_id: format!("dlq:{id}"),
            command_type: command_type.to_string(),
            outcome: verb.to_string(),
            reason: Some(letter.value.error_class.clone()),
        };
        let not_recorded = |what: &str, error: String| {
            let replayed = target.map(|t| format!(" (the record was replayed to {}/{}@{})", t.topic, t.partition, t.offset)).unwrap_or_default();
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "decision-not-recorded", "Decision not recorded", format!("{what} was not written: {error}{replayed}")).retry_after(1)
        };
        let payload = self.codec.encode(ACTIONS_TOPIC, &action).await.map_err(|e| not_recorded(ACTIONS_TOPIC, e.to_string()))?;
        self.producer.send(FutureRecord::to(ACTIONS_TOPIC).key(&id).payload(&payload), crate::publish::DELIVERY_TIMEOUT).await.map_err(|(e, _)| not_recorded(ACTIONS_TOPIC, e.to_string()))?;
        let payload = self.codec.encode(ACTIVITY_TOPIC, &audit).await.map_err(|e| not_recorded(ACTIVITY_TOPIC, e.to_string()))?;
        self.producer
            .send(FutureRecord::to(ACTIVITY_TOPIC).key(&audit.user_id).payload(&payload), crate::publish::DELIVERY_TIMEOUT)
            .await
            .map_err(|(e, _)| not_recorded(ACTIVITY_TOPIC, e.to_string()))?;
        Ok(action)
    }
}

fn check_note(note: &str) -> Result<&str, Problem> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > MAX_NOTE {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "note-required", "Note required", format!("say why in `note` (1 to {MAX_NOTE} characters): it is kept with the decision and audited")));
    }
    Ok(note)
}

fn refuse_handled(id: &str, decision: Option<&DeadLetterAction>) -> Result<(), Problem> {
    match decision {
        None => Ok(()),
        Some(d) => Err(Problem::new(
            StatusCode::CONFLICT,
            "dead-letter-handled",
            "Dead letter already handled",
            format!("dead letter {id} was {} by {} ({})", if d.outcome == DeadLetterOutcome::Replayed { "replayed" } else { "discarded" }, d.operator, d.note),
        )),
    }
}

/// The dead letters, newest first.
#[utoipa::path(get, path = "/v1/ops/dlq", tag = "operator", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = DeadLetterList), (status = 400, body = Problem, description = "invalid-limit"), (status = 403, body = Problem)))]
pub async fn list(State(state): State<SharedState>, caller: Caller, Query(params): Query<ListParams>) -> Result<Json<DeadLetterList>, Problem> {
    let console = console(&state, &caller)?;
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-limit", "Invalid limit", format!("limit must be 1 to 500, got {limit}")));
    }
    let open_only = match params.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-status", "Invalid status", format!("status is `open` or `all`, not `{other}`"))),
    };
    console.dead_letters(open_only, limit).await.map(Json)
}

/// One dead letter, decoded.
#[utoipa::path(get, path = "/v1/ops/dlq/{id}", tag = "operator", security(("bearer" = [])),
    params(("id" = String, Path, description = "`<partition>-<offset>` on sluice.dlq")),
    responses((status = 200, body = DeadLetterDetail), (status = 404, body = Problem, description = "dead-letter-not-found")))]
pub async fn show(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>) -> Result<Json<DeadLetterDetail>, Problem> {
    console(&state, &caller)?.dead_letter(&id).await.map(Json)
}

/// Replays a dead letter to the topic it came from (its original key, value and headers).
#[utoipa::path(post, path = "/v1/ops/dlq/{id}/replay", tag = "operator", security(("bearer" = [])), request_body = DecisionRequest,
    params(("id" = String, Path, description = "`<partition>-<offset>` on sluice.dlq")),
    responses((status = 200, body = DeadLetterView), (status = 404, body = Problem, description = "dead-letter-not-found"), (status = 409, body = Problem, description = "dead-letter-handled"),
        (status = 422, body = Problem, description = "dead-letter-truncated or note-required")))]
pub async fn replay(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>, ApiJson(request): ApiJson<DecisionRequest>) -> Result<Json<DeadLetterView>, Problem> {
    console(&state, &caller)?.replay(&id, &caller.claims.sub, &request.note).await.map(Json)
}

/// Marks a dead letter handled without replaying it.
#[utoipa::path(post, path = "/v1/ops/dlq/{id}/discard", tag = "operator", security(("bearer" = [])), request_body = DecisionRequest,
    params(("id" = String, Path, description = "`<partition>-<offset>` on sluice.dlq")),
    responses((status = 200, body = DeadLetterView), (status = 404, body = Problem, description = "dead-letter-not-found"), (status = 409, body = Problem, description = "dead-letter-handled"),
        (status = 422, body = Problem, description = "note-required")))]
pub async fn discard(State(state): State<SharedState>, caller: Caller, Path(id): Path<String>, ApiJson(request): ApiJson<DecisionRequest>) -> Result<Json<DeadLetterView>, Problem> {
    console(&state, &caller)?.discard(&id, &caller.claims.sub, &request.note).await.map(Json)
}
