//! The running application as the operations view shows it: the topology (from the topology
//! the processors run), the instances and their tasks (from the discovery topic), pausing and
//! resuming this process's processors (Kafka Streams' `KafkaStreams#pause`), and throughput and
//! latency series sampled from the metrics this process records.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sluice_streams::interactive::STALE_AFTER;
use sluice_streams::metrics as names;
use sluice_streams::topology::{changelog_topic, NodeKind, Topology};
use sluice_streams::now_ms;
use utoipa::ToSchema;

use super::console;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::SharedState;

/// How often the series are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept (five minutes).
pub const SAMPLES_KEPT: usize = 150;

/// A node of the topology graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphNode {
    /// Node name.
    pub name: String,
    /// `source`, `processor` or `sink`.
    pub kind: String,
    /// The processor kind (processors only).
    pub processor: Option<String>,
    /// Topics read (a source) or written (a sink), by their names on the broker.
    pub topics: Vec<String>,
    /// Stores used (processors only).
    pub stores: Vec<String>,
    /// Downstream nodes.
    pub children: Vec<String>,
}

/// A store of a sub-topology.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphStore {
    /// Store name.
    pub name: String,
    /// Its changelog topic, when it has one.
    pub changelog: Option<String>,
}

/// A sub-topology: one task per partition runs it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphSubtopology {
    /// Its number (tasks are `<id>_<partition>`).
    pub id: usize,
    /// Partitions of its source topics, so tasks.
    pub partitions: i32,
    /// Sources, processors, sinks.
    pub nodes: Vec<GraphNode>,
    /// Its stores.
    pub stores: Vec<GraphStore>,
}

/// A topic of the topology.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphTopic {
    /// Name on the broker.
    pub name: String,
    /// `external`, `repartition` or `changelog`.
    pub kind: String,
    /// Whether its records are signed.
    pub signed: bool,
}

/// The running topology as a graph.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopologyGraph {
    /// The application id.
    pub application_id: String,
    /// Its sub-topologies.
    pub subtopologies: Vec<GraphSubtopology>,
    /// Its topics.
    pub topics: Vec<GraphTopic>,
}

/// The graph of `topology`.
pub fn graph(topology: &Topology, application_id: &str) -> TopologyGraph {
    let subtopologies = topology
        .subtopologies
        .iter()
        .map(|sub| GraphSubtopology {
            id: sub.id,
            partitions: sub.partitions,
            nodes: sub
                .nodes
                .iter()
                .filter_map(|name| topology.node(name))
                .map(|node| {
                    let (kind, processor, topics, stores) = match &node.kind {
                        NodeKind::Source { topics } => ("source", None, topics.iter().map(|t| t.topic_name(application_id)).collect(), Vec::new()),
                        NodeKind::Processor { kind, stores, .. } => ("processor", Some(kind.clone()), Vec::new(), stores.clone()),
                        NodeKind::Sink { topic } => ("sink", None, vec![topic.topic_name(application_id)], Vec::new()),
                    };
                    GraphNode { name: node.name.clone(), kind: kind.to_string(), processor, topics, stores, children: node.children.clone() }
                })
                .collect(),
            stores: sub
                .stores
                .iter()
                .filter_map(|name| topology.stores.iter().find(|s| &s.name == name))
                .map(|store| GraphStore { name: store.name.clone(), changelog: store.changelog.then(|| changelog_topic(application_id, &store.name)) })
                .collect(),
        })
        .collect();
    let mut topics: Vec<GraphTopic> = topology.topics.iter().map(|t| GraphTopic { name: t.name.clone(), kind: "external".into(), signed: t.signed }).collect();
    topics.extend(topology.repartitions.iter().map(|t| GraphTopic { name: sluice_streams::topology::repartition_topic(application_id, &t.name), kind: "repartition".into(), signed: t.signed }));
    topics.extend(topology.stores.iter().filter(|s| s.changelog).map(|s| GraphTopic { name: changelog_topic(application_id, &s.name), kind: "changelog".into(), signed: false }));
    TopologyGraph { application_id: application_id.to_string(), subtopologies, topics }
}

/// The names of `topology`'s source nodes (each record read is counted once, there).
pub fn source_nodes(topology: &Topology) -> Vec<String> {
    topology.nodes.iter().filter(|n| matches!(n.kind, NodeKind::Source { .. })).map(|n| n.name.clone()).collect()
}

/// The topology the processors run, as a graph.
#[utoipa::path(get, path = "/v1/ops/topology", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = TopologyGraph), (status = 403, body = Problem)))]
pub async fn topology(State(state): State<SharedState>, caller: Caller) -> Result<Json<TopologyGraph>, Problem> {
    let console = console(&state, &caller)?;
    Ok(Json(graph(&console.topology, &console.application_id)))
}

/// A task still restoring.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestoringTask {
    /// Task id (`<sub-topology>_<partition>`).
    pub task: String,
    /// Changelog records it has left to read.
    pub remaining: i64,
}

/// An instance of the processors, as it last published itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    /// Its `group.instance.id` (a stream thread of it).
    pub instance: String,
    /// Where its stores answer queries (empty without `application_server`).
    pub application_server: String,
    /// When it last published (ms since the epoch).
    pub updated_at_ms: i64,
    /// Whether that was longer ago than the discovery entries stay valid.
    pub stale: bool,
    /// Whether its processing is paused.
    pub paused: bool,
    /// Its active tasks.
    pub active_tasks: Vec<String>,
    /// Its standby tasks.
    pub standby_tasks: Vec<String>,
    /// Its tasks still restoring.
    pub restoring: Vec<RestoringTask>,
}

/// The instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    /// By name.
    pub instances: Vec<InstanceView>,
    /// Whether this process's processors are paused; `null` when it runs none.
    pub paused: Option<bool>,
}

/// The instances running the processors, with their tasks.
#[utoipa::path(get, path = "/v1/ops/instances", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = InstanceList), (status = 403, body = Problem)))]
pub async fn instances(State(state): State<SharedState>, caller: Caller) -> Result<Json<InstanceList>, Problem> {
    let console = console(&state, &caller)?;
    let now = now_ms();
    let stale_ms = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    // This process's own threads as they are now, then the others as they last published.
    let mut seen = std::collections::BTreeMap::new();
    for info in console.local.iter().flat_map(sluice_streams::StreamsHandle::local_threads).chain(state.queries.instances()) {
        seen.entry(info.instance.clone()).or_insert(info);
    }
    let mut instances: Vec<InstanceView> = seen
        .into_values()
        .map(|info| InstanceView {
            stale: now - info.updated_at_ms > stale_ms,
            instance: info.instance,
            application_server: info.application_server,
            updated_at_ms: info.updated_at_ms,
            paused: info.paused,
            active_tasks: info.tasks,
            standby_tasks: info.standby_tasks,
            restoring: info.restoring.into_iter().map(|(task, remaining)| RestoringTask { task, remaining }).collect(),
        })
        .collect();
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(Json(InstanceList { instances, paused: console.local.as_ref().map(sluice_streams::StreamsHandle::is_paused) }))
}

/// Whether processing is paused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PauseState {
    /// True while paused.
    pub paused: bool,
}

/// Pauses the processors of this process (`KafkaStreams#pause`): they keep their tasks and
/// process nothing until resumed, so their consumer group's lag grows.
#[utoipa::path(post, path = "/v1/ops/processing/pause", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = PauseState), (status = 409, body = Problem, description = "no-local-processors")))]
pub async fn pause(State(state): State<SharedState>, caller: Caller) -> Result<Json<PauseState>, Problem> {
    set_paused(&state, &caller, true)
}

/// Resumes the processors of this process.
#[utoipa::path(post, path = "/v1/ops/processing/resume", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = PauseState), (status = 409, body = Problem, description = "no-local-processors")))]
pub async fn resume(State(state): State<SharedState>, caller: Caller) -> Result<Json<PauseState>, Problem> {
    set_paused(&state, &caller, false)
}

fn set_paused(state: &SharedState, caller: &Caller, paused: bool) -> Result<Json<PauseState>, Problem> {
    let console = console(state, caller)?;
    let Some(handle) = &console.local else {
        return Err(Problem::new(StatusCode::CONFLICT, "no-local-processors", "No processors here", "this API runs without processors (`sluice ingest`); pause the `sluice run` instances themselves"));
    };
    handle.set_paused(paused);
    tracing::warn!(operator = %caller.claims.sub, paused, "processing {} by an operator", if paused { "paused" } else { "resumed" });
    Ok(Json(PauseState { paused }))
}

/// One sample of the series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Records read by the processors' source nodes per second.
    pub records_per_s: f64,
    /// Commands reaching their final outcome per second.
    pub commands_per_s: f64,
    /// Median accept-to-outcome latency of those commands (bucket upper bound), ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub p99_ms: Option<f64>,
    /// HTTP requests answered per second.
    pub http_requests_per_s: f64,
}

/// The series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    /// Time between samples.
    pub interval_ms: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// The counters one sample is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    records: f64,
    commands: f64,
    http: f64,
    /// Cumulative counts of `sluice_command_latency_seconds` by bucket upper bound.
    latency: BTreeMap<OrderedBound, f64>,
}

/// A bucket bound that orders (`+Inf` last).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedBound(f64);
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Samples this process's metrics every [`SAMPLE_INTERVAL`].
#[derive(Clone, Default)]
pub struct Sampler {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl Sampler {
    /// Starts sampling `handle`; `sources` are the topology's source nodes.
    pub fn start(&self, handle: PrometheusHandle, sources: Vec<String>) {
        let samples = Arc::clone(&self.samples);
        tokio::spawn(async move {
            let mut previous: Option<(i64, Totals)> = None;
            let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                ticks.tick().await;
                let now = now_ms();
                let totals = totals(&handle.render(), &sources);
                if let Some((then, before)) = &previous {
                    let sample = sample(now, now - then, before, &totals);
                    let mut kept = samples.lock().expect("samples lock");
                    kept.push_back(sample);
                    while kept.len() > SAMPLES_KEPT {
                        kept.pop_front();
                    }
                }
                previous = Some((now, totals));
            }
        });
    }

    /// The samples, oldest first.
    pub fn series(&self) -> Series {
        Series { interval_ms: u64::try_from(SAMPLE_INTERVAL.as_millis()).unwrap_or(u64::MAX), samples: self.samples.lock().expect("samples lock").iter().cloned().collect() }
    }
}

/// Sums the counters of a Prometheus text exposition.
fn totals(text: &str, sources: &[String]) -> Totals {
    let mut totals = Totals::default();
    let latency_bucket = format!("{}_bucket", names::COMMAND_LATENCY_SECONDS);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let label = |wanted: &str| labels.split(',').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == wanted).map(|(_, v)| v.trim_matches('"'));
        if name == names::PROCESS_RECORDS_TOTAL && label("processor").is_some_and(|p| sources.iter().any(|s| s == p)) {
            totals.records += value;
        } else if name == names::COMMANDS_TOTAL {
            totals.commands += value;
        } else if name == names::HTTP_REQUESTS_TOTAL {
            totals.http += value;
        } else if name == latency_bucket {
            let bound = match label("le") {
                Some("+Inf") => f64::INFINITY,
                Some(le) => le.parse().unwrap_or(f64::INFINITY),
                None => continue,
            };
            *totals.latency.entry(OrderedBound(bound)).or_default() += value;
        }
    }
    totals
}

/// The rates and percentiles between two totals `elapsed_ms` apart.
fn sample(at_ms: i64, elapsed_ms: i64, before: &Totals, after: &Totals) -> Sample {
    let seconds = (elapsed_ms.max(1) as f64) / 1000.0;
    let rate = |a: f64, b: f64| ((b - a).max(0.0)) / seconds;
    let buckets: Vec<(f64, f64)> = after.latency.iter().map(|(bound, count)| (bound.0, (count - before.latency.get(bound).copied().unwrap_or(0.0)).max(0.0))).collect();
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    let quantile = |q: f64| -> Option<f64> {
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let finite_max = buckets.iter().rev().find(|(bound, _)| bound.is_finite()).map(|(bound, _)| *bound);
        buckets.iter().find(|(_, count)| *count >= rank).map(|(bound, _)| if bound.is_finite() { *bound } else { finite_max.unwrap_or(0.0) }).map(|seconds| seconds * 1000.0)
    };
    Sample {
        at_ms,
        records_per_s: rate(before.records, after.records),
        commands_per_s: rate(before.commands, after.commands),
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        http_requests_per_s: rate(before.http, after.http),
    }
}

/// Throughput and latency of the last minutes, sampled every two seconds.
#[utoipa::path(get, path = "/v1/ops/metrics", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = Series), (status = 403, body = Problem)))]
pub async fn metrics(State(state): State<SharedState>, caller: Caller) -> Result<Json<Series>, Problem> {
    let console = console(&state, &caller)?;
    Ok(Json(console.sampler.series()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# TYPE sluice_process_records_total counter\n\
sluice_process_records_total{processor=\"commands-source\"} 100\n\
sluice_process_records_total{processor=\"auth\"} 100\n\
sluice_commands_total{type=\"Deposit\",outcome=\"settled\",reason=\"\"} 40\n\
sluice_http_requests_total{method=\"POST\",route=\"/v1/deposits\",status=\"202\"} 7\n\
sluice_command_latency_seconds_bucket{type=\"Deposit\",outcome=\"settled\",le=\"0.01\"} 30\n\
sluice_command_latency_seconds_bucket{type=\"Deposit\",outcome=\"settled\",le=\"0.1\"} 39\n\
sluice_command_latency_seconds_bucket{type=\"Deposit\",outcome=\"settled\",le=\"+Inf\"} 40\n";

    #[test]
    fn the_graph_of_the_pipeline_has_its_subtopologies_nodes_stores_and_topics() {
        let topology = Topology::from_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml")).unwrap();
        let graph = graph(&topology, "sluice");
        assert_eq!(graph.subtopologies.len(), topology.subtopologies.len());
        let nodes: Vec<&GraphNode> = graph.subtopologies.iter().flat_map(|s| &s.nodes).collect();
        let bridge = nodes.iter().find(|n| n.name == "json-bridge").expect("the json bridge");
        assert_eq!((bridge.kind.as_str(), bridge.processor.as_deref()), ("processor", Some("json-bridge")));
        // A repartition topic is written by a sink and read by a source, by its name on the broker.
        let credit = "sluice-credit-repartition";
        assert!(nodes.iter().any(|n| n.kind == "sink" && n.topics.iter().any(|t| t == credit)));
        assert!(nodes.iter().any(|n| n.kind == "source" && n.topics.iter().any(|t| t == credit)));
        assert!(graph.topics.iter().any(|t| t.name == credit && t.kind == "repartition" && t.signed));
        let users = graph.subtopologies.iter().flat_map(|s| &s.stores).find(|s| s.name == "users").unwrap();
        assert_eq!(users.changelog.as_deref(), Some("sluice-users-changelog"));
        assert!(source_nodes(&topology).iter().all(|name| nodes.iter().any(|n| &n.name == name && n.kind == "source")));
    }

    #[test]
    fn rates_count_source_nodes_once_and_percentiles_come_from_bucket_deltas() {
        let sources = vec!["commands-source".to_string()];
        let before = Totals::default();
        let after = totals(EXPOSITION, &sources);
        assert_eq!(after.records, 100.0, "only the source node counts: a record passes several nodes");
        let sample = sample(10_000, 2_000, &before, &after);
        assert_eq!(sample.records_per_s, 50.0);
        assert_eq!(sample.commands_per_s, 20.0);
        assert_eq!(sample.http_requests_per_s, 3.5);
        assert_eq!(sample.p50_ms, Some(10.0));
        // 99% of 40 is 39.6: past the 0.1 s bucket, in +Inf, shown as the largest finite bound.
        assert_eq!(sample.p99_ms, Some(100.0));
        let idle = super::sample(12_000, 2_000, &after, &after);
        assert_eq!((idle.commands_per_s, idle.p99_ms), (0.0, None));
    }
}
