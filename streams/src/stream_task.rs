//! A [`StreamTask`] (Kafka Streams' name): one partition of one sub-topology. It runs records through the processor graph
//! depth-first (as Kafka Streams does), buffers sink outputs and store writes, fires
//! punctuations, and commits its state with its input positions. It does no I/O: the runtime
//! and the test driver feed it records and deliver what it produces.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use sluice_state::{ChangelogRecord, DedupeStore, KeyValueStore, SledStore, SourceOffset, StateError, TaskState};

use crate::processor::{ProcessError, Processor, Punctuation, PunctuationType};
use crate::record::{Headers, OutputRecord, Record, RecordMetadata};
use crate::registry::{ProcessorConfig, ProcessorRegistry};
use crate::topology::{NodeKind, StoreKind, Topology};

/// Sub-topology and partition, written `0_3` as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Sub-topology number.
    pub subtopology: usize,
    /// Partition number.
    pub partition: i32,
}

impl TaskId {
    /// Where this task keeps its state: `<state_dir>/<application.id>/<task id>`.
    pub fn state_dir(self, state_dir: &std::path::Path, application_id: &str) -> std::path::PathBuf {
        state_dir.join(application_id).join(self.to_string())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Why a task could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A processor could not be created or initialised.
    #[error("task {task}: {message}")]
    Processor {
        /// The task.
        task: TaskId,
        /// What went wrong.
        message: String,
    },
    /// The sub-topology does not exist.
    #[error("no sub-topology {0}")]
    UnknownSubtopology(usize),
    /// State failure.
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug)]
enum GraphKind {
    Source,
    Processor,
    Sink { topic: Arc<str> },
}

struct GraphNode {
    name: Arc<str>,
    kind: GraphKind,
    children: Vec<usize>,
    stores: Vec<String>,
    /// Records processed here (a no-op handle when no metrics recorder is installed).
    records: metrics::Counter,
    /// Time to process one record here.
    latency: metrics::Histogram,
}

impl GraphNode {
    /// Runs one `process` call of this node's processor, measuring it.
    fn measure<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = f();
        self.latency.record(started.elapsed().as_secs_f64());
        self.records.increment(1);
        result
    }
}

#[derive(Debug)]
struct Schedule {
    node: usize,
    interval_ms: i64,
    kind: PunctuationType,
    /// Next due time; for stream time, unset until the first record.
    next_due: Option<i64>,
}

/// The input being processed, as the context reports it.
#[derive(Debug, Clone, Default)]
struct RecordContext {
    metadata: Option<RecordMetadata>,
    timestamp: i64,
    headers: Headers,
}

/// One partition of one sub-topology.
pub struct StreamTask {
    id: TaskId,
    application_id: String,
    nodes: Vec<GraphNode>,
    processors: Vec<Option<Box<dyn Processor>>>,
    inputs: Vec<TaskInput>,
    dedupe_retention: HashMap<String, i64>,
    state: TaskState,
    outputs: Vec<OutputRecord>,
    schedules: Vec<Schedule>,
    stream_time: Option<i64>,
    /// Stream time at which expired dedupe entries are purged next (None: at the next record).
    next_dedupe_purge: Option<i64>,
    wall_clock: i64,
}

/// How far stream time advances between two purges of expired dedupe entries.
pub const DEDUPE_PURGE_INTERVAL_MS: i64 = 60_000;

/// One input topic-partition of a task.
struct TaskInput {
    topic: String,
    /// The topic name shared by every changelog stamp (no allocation per record).
    shared_topic: Arc<str>,
    source: usize,
    /// Next offset to process.
    position: i64,
}

impl StreamTask {
    /// Builds the task of sub-topology `id.subtopology` for partition `id.partition` over
    /// `state`, creates its processors and calls their `init`.
    pub fn new(
        id: TaskId,
        topology: &Topology,
        registry: &ProcessorRegistry,
        application_id: &str,
        state: TaskState,
        wall_clock: i64,
    ) -> Result<StreamTask, TaskError> {
        let sub = topology.subtopologies.get(id.subtopology).ok_or(TaskError::UnknownSubtopology(id.subtopology))?;
        let index: HashMap<&str, usize> = sub.nodes.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut nodes = Vec::new();
        let mut processors = Vec::new();
        let mut inputs = Vec::new();
        for (i, name) in sub.nodes.iter().enumerate() {
            let node = topology.node(name).expect("sub-topology nodes exist");
            let children = node.children.iter().filter_map(|c| index.get(c.as_str()).copied()).collect();
            let (kind, stores, processor) = match &node.kind {
                NodeKind::Source { topics } => {
                    for topic in topics {
                        let name = topic.topic_name(application_id);
                        let position = state.checkpoint().input_offsets.get(&(name.clone(), id.partition)).copied().unwrap_or(0);
                        inputs.push(TaskInput { shared_topic: Arc::from(name.as_str()), topic: name, source: i, position });
                    }
                    (GraphKind::Source, Vec::new(), None)
                }
                NodeKind::Processor { kind, stores, config } => {
                    let config = ProcessorConfig { name, kind, config, stores };
                    let processor = registry.create(&config).map_err(|message| TaskError::Processor { task: id, message })?;
                    (GraphKind::Processor, stores.clone(), Some(processor))
                }
                NodeKind::Sink { topic } => (GraphKind::Sink { topic: Arc::from(topic.topic_name(application_id)) }, Vec::new(), None),
            };
            // Processor nodes count the records they process and time them; a source counts the
            // records it reads (each once, however many processors it passes); sinks get no series.
            let (records, latency) = match kind {
                GraphKind::Processor => (
                    metrics::counter!(crate::metrics::PROCESS_RECORDS_TOTAL, "processor" => name.clone()),
                    metrics::histogram!(crate::metrics::PROCESS_LATENCY_SECONDS, "processor" => name.clone()),
                ),
                GraphKind::Source => (metrics::counter!(crate::metrics::PROCESS_RECORDS_TOTAL, "processor" => name.clone()), metrics::Histogram::noop()),
                GraphKind::Sink { .. } => (metrics::Counter::noop(), metrics::Histogram::noop()),
            };
            nodes.push(GraphNode { name: Arc::from(name.as_str()), kind, children, stores, records, latency });
            processors.push(processor);
        }
        let dedupe_retention = topology
            .stores
            .iter()
            .filter(|s| s.kind == StoreKind::Dedupe)
            .map(|s| (s.name.clone(), i64::try_from(s.retention_ms.unwrap_or_default()).unwrap_or(i64::MAX)))
            .collect();
        let mut task = StreamTask {
            id,
            application_id: application_id.to_string(),
            nodes,
            processors,
            inputs,
            dedupe_retention,
            state,
            outputs: Vec::new(),
            schedules: Vec::new(),
            stream_time: None,
            next_dedupe_purge: None,
            wall_clock,
        };
        for i in 0..task.nodes.len() {
            if task.processors[i].is_some() {
                let record = RecordContext { timestamp: wall_clock, ..RecordContext::default() };
                task.with_processor(i, &record, |p, ctx| p.init(ctx)).map_err(|e| TaskError::Processor { task: id, message: format!("init of `{}`: {e}", task.nodes[i].name) })?;
            }
        }
        Ok(task)
    }

    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Topics this task reads (broker names), in topology order.
    pub fn input_topics(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|input| input.topic.as_str())
    }

    /// Input topics (shared names) with the next offset to process.
    pub fn inputs(&self) -> impl Iterator<Item = (&Arc<str>, i64)> {
        self.inputs.iter().map(|input| (&input.shared_topic, input.position))
    }

    /// Next offset to process of an input topic (on this task's partition).
    pub fn position(&self, topic: &str) -> Option<i64> {
        self.inputs.iter().find(|input| input.topic == topic).map(|input| input.position)
    }

    /// The task's state.
    pub fn state(&self) -> &TaskState {
        &self.state
    }

    /// Next offset to process per input topic-partition (processed, maybe not committed).
    pub fn positions(&self) -> BTreeMap<(String, i32), i64> {
        self.inputs.iter().map(|input| ((input.topic.clone(), self.id.partition), input.position)).collect()
    }

    /// The highest record timestamp seen.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// Processes one input record. On error, every effect of this record (store writes,
    /// changelog records, outputs) is undone and its position is not advanced; the caller
    /// decides (by [`ProcessError::action`]) whether to [`StreamTask::skip`] it, retry, or stop.
    pub fn process(&mut self, metadata: RecordMetadata, record: Record) -> Result<(), ProcessError> {
        let input = self
            .inputs
            .iter()
            .position(|input| *input.topic == *metadata.topic)
            .ok_or_else(|| ProcessError::Fatal(format!("task {} does not read topic {}", self.id, metadata.topic)))?;
        let source = self.inputs[input].source;
        self.nodes[source].records.increment(1);
        self.state.savepoint();
        let outputs_before = self.outputs.len();
        self.state.set_source(&SourceOffset { topic: Arc::clone(&metadata.topic), partition: metadata.partition, offset: metadata.offset });
        let offset = metadata.offset;
        let timestamp = record.timestamp;
        let context = RecordContext { metadata: Some(metadata), timestamp, headers: record.headers.clone() };
        // The source forwards to its children as a processor would.
        let result = self.with_context(source, &context, |ctx| ctx.forward(record));
        if let Err(error) = result {
            self.state.rollback();
            self.outputs.truncate(outputs_before);
            return Err(error);
        }
        self.inputs[input].position = offset + 1;
        self.stream_time = Some(self.stream_time.map_or(timestamp, |t| t.max(timestamp)));
        self.purge_expired_dedupe()?;
        self.punctuate(PunctuationType::StreamTime)
    }

    /// Deletes the dedupe entries older than their store's retention, by stream time, once
    /// every [`DEDUPE_PURGE_INTERVAL_MS`] of it. The deletes are changelogged like any write
    /// (as tombstones not caused by an input, so a restore always applies them).
    fn purge_expired_dedupe(&mut self) -> Result<(), ProcessError> {
        let Some(now) = self.stream_time else { return Ok(()) };
        if self.next_dedupe_purge.is_some_and(|next| now < next) {
            return Ok(());
        }
        self.next_dedupe_purge = Some(now.saturating_add(DEDUPE_PURGE_INTERVAL_MS));
        self.state.set_source(&SourceOffset::none());
        for (name, retention) in &self.dedupe_retention {
            if !self.state.store_names().any(|store| store == name) {
                continue; // another sub-topology's store
            }
            let purged = DedupeStore::new(self.state.store_mut(name)?, *retention).purge_expired(now)?;
            if purged > 0 {
                tracing::debug!(task = %self.id, store = %name, purged, "expired dedupe entries purged");
            }
        }
        Ok(())
    }

    /// Marks a record as handled without effect (dead-lettered or skipped by the handler).
    pub fn skip(&mut self, metadata: &RecordMetadata) {
        if let Some(input) = self.inputs.iter_mut().find(|input| *input.topic == *metadata.topic) {
            input.position = metadata.offset + 1;
        }
    }

    /// Advances the wall clock and fires due wall-clock punctuations.
    pub fn advance_wall_clock(&mut self, now: i64) -> Result<(), ProcessError> {
        self.wall_clock = self.wall_clock.max(now);
        self.punctuate(PunctuationType::WallClockTime)
    }

    fn punctuate(&mut self, kind: PunctuationType) -> Result<(), ProcessError> {
        let now = match kind {
            PunctuationType::StreamTime => match self.stream_time {
                Some(t) => t,
                None => return Ok(()),
            },
            PunctuationType::WallClockTime => self.wall_clock,
        };
        for s in 0..self.schedules.len() {
            let schedule = &mut self.schedules[s];
            if schedule.kind != kind {
                continue;
            }
            let due = *schedule.next_due.get_or_insert(now + schedule.interval_ms);
            if now < due {
                continue;
            }
            // Fire once, then skip missed intervals.
            schedule.next_due = Some(now - (now - due) % schedule.interval_ms + schedule.interval_ms);
            let node = schedule.node;
            // Punctuation writes are not caused by an input record: restores always apply them.
            self.state.set_source(&SourceOffset::none());
            let context = RecordContext { metadata: None, timestamp: now, headers: Vec::new() };
            let punctuation = Punctuation { schedule: s, kind, timestamp: now };
            self.with_processor(node, &context, |p, ctx| p.punctuate(punctuation, ctx))?;
        }
        Ok(())
    }

    /// Takes the records the sinks wrote since the last call.
    pub fn take_outputs(&mut self) -> Vec<OutputRecord> {
        std::mem::take(&mut self.outputs)
    }

    /// Takes the changelog records of the store writes since the last call.
    pub fn drain_changelog(&mut self) -> Vec<ChangelogRecord> {
        self.state.drain_changelog()
    }

    /// Commits state with the current positions and the given next changelog offsets
    /// (docs/guarantees.md, the commit protocol, step 2; outputs and changelog must have been delivered first).
    pub fn commit(&mut self, changelog_offsets: &[(&str, i64)]) -> Result<(), StateError> {
        let inputs: Vec<(&str, i32, i64)> = self.inputs.iter().map(|input| (input.topic.as_str(), self.id.partition, input.position)).collect();
        self.state.commit(&inputs, changelog_offsets)
    }

    /// Closes the processors and returns the state (for suspension or restore).
    pub fn close(mut self) -> TaskState {
        for processor in self.processors.iter_mut().flatten() {
            processor.close();
        }
        self.state
    }

    fn with_processor(
        &mut self,
        node: usize,
        record: &RecordContext,
        f: impl FnOnce(&mut Box<dyn Processor>, &mut ProcessorContext<'_>) -> Result<(), ProcessError>,
    ) -> Result<(), ProcessError> {
        let mut processor = self.processors[node].take().expect("a processor is never re-entered (the graph is acyclic)");
        let result = self.with_context(node, record, |ctx| f(&mut processor, ctx));
        self.processors[node] = Some(processor);
        result
    }

    /// Runs `f` with the context of `node` (a processor, or a source forwarding its input).
    fn with_context<R>(&mut self, node: usize, record: &RecordContext, f: impl FnOnce(&mut ProcessorContext<'_>) -> R) -> R {
        let mut ctx = ProcessorContext {
            node,
            task: self.id,
            application_id: &self.application_id,
            nodes: &self.nodes,
            processors: &mut self.processors,
            state: &mut self.state,
            outputs: &mut self.outputs,
            schedules: &mut self.schedules,
            dedupe_retention: &self.dedupe_retention,
            record,
            stream_time: self.stream_time,
            wall_clock: self.wall_clock,
        };
        f(&mut ctx)
    }
}

/// What a processor can do while it runs (Kafka Streams' `ProcessorContext`).
pub struct ProcessorContext<'a> {
    node: usize,
    task: TaskId,
    application_id: &'a str,
    nodes: &'a [GraphNode],
    processors: &'a mut [Option<Box<dyn Processor>>],
    state: &'a mut TaskState,
    outputs: &'a mut Vec<OutputRecord>,
    schedules: &'a mut Vec<Schedule>,
    dedupe_retention: &'a HashMap<String, i64>,
    record: &'a RecordContext,
    stream_time: Option<i64>,
    wall_clock: i64,
}

impl ProcessorContext<'_> {
    /// Sends `record` to every child (processors run now, depth-first; sinks buffer it).
    pub fn forward(&mut self, record: Record) -> Result<(), ProcessError> {
        let nodes = self.nodes;
        let children = &nodes[self.node].children;
        let Some((&last, others)) = children.split_last() else { return Ok(()) };
        for &child in others {
            self.dispatch(child, record.clone())?;
        }
        self.dispatch(last, record)
    }

    /// Sends `record` to the child named `child` only.
    pub fn forward_to(&mut self, child: &str, record: Record) -> Result<(), ProcessError> {
        let target = self.nodes[self.node]
            .children
            .iter()
            .copied()
            .find(|&c| &*self.nodes[c].name == child)
            .ok_or_else(|| ProcessError::Fatal(format!("`{}` has no child named `{child}`", self.nodes[self.node].name)))?;
        self.dispatch(target, record)
    }

    /// Names of this processor's children, in topology order.
    pub fn child_names(&self) -> Vec<&str> {
        self.nodes[self.node].children.iter().map(|&c| &*self.nodes[c].name).collect()
    }

    /// A store this processor declared in topology.toml.
    pub fn store(&mut self, name: &str) -> Result<&mut dyn KeyValueStore, ProcessError> {
        Ok(self.sled_store(name)?)
    }

    /// Records `event_id` in the dedupe store `store` at the record's time; true if it was seen
    /// before (skip the record). Counts hits in `sluice_dedupe_hits_total`.
    pub fn is_duplicate(&mut self, store: &str, event_id: &str) -> Result<bool, ProcessError> {
        let timestamp = self.record.timestamp;
        let duplicate = self.dedupe(store)?.check_and_mark(event_id, timestamp)?;
        if duplicate {
            metrics::counter!(crate::metrics::DEDUPE_HITS_TOTAL, "store" => store.to_string()).increment(1);
        }
        Ok(duplicate)
    }

    /// A dedupe store this processor declared, with the retention from topology.toml.
    pub fn dedupe(&mut self, name: &str) -> Result<DedupeStore<'_, SledStore>, ProcessError> {
        let retention = *self.dedupe_retention.get(name).ok_or_else(|| ProcessError::Fatal(format!("`{name}` is not a dedupe store")))?;
        Ok(DedupeStore::new(self.sled_store(name)?, retention))
    }

    fn sled_store(&mut self, name: &str) -> Result<&mut SledStore, ProcessError> {
        let node = &self.nodes[self.node];
        if !node.stores.iter().any(|s| s == name) {
            return Err(ProcessError::Fatal(format!("processor `{}` did not declare store `{name}` in topology.toml", node.name)));
        }
        Ok(self.state.store_mut(name)?)
    }

    /// Timestamp of the record being processed (or of the punctuation).
    pub fn timestamp(&self) -> i64 {
        self.record.timestamp
    }

    /// Headers of the record being processed.
    pub fn headers(&self) -> &Headers {
        &self.record.headers
    }

    /// Topic, partition and offset of the record being processed (`None` in punctuations).
    pub fn record_metadata(&self) -> Option<&RecordMetadata> {
        self.record.metadata.as_ref()
    }

    /// The task running this processor.
    pub fn task_id(&self) -> TaskId {
        self.task
    }

    /// Kafka Streams `application.id`.
    pub fn application_id(&self) -> &str {
        self.application_id
    }

    /// The highest record timestamp this task has seen.
    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The wall clock as the runtime (or test driver) sets it.
    pub fn wall_clock_time(&self) -> i64 {
        self.wall_clock
    }

    /// Calls this processor's `punctuate` every `interval_ms` of `kind` time; returns the
    /// schedule's id. The first call is one interval after the first time observed.
    pub fn schedule(&mut self, interval_ms: i64, kind: PunctuationType) -> Result<usize, ProcessError> {
        if interval_ms <= 0 {
            return Err(ProcessError::Fatal(format!("punctuation interval must be positive, got {interval_ms} ms")));
        }
        let next_due = match kind {
            PunctuationType::WallClockTime => Some(self.wall_clock + interval_ms),
            PunctuationType::StreamTime => self.stream_time.map(|t| t + interval_ms),
        };
        self.schedules.push(Schedule { node: self.node, interval_ms, kind, next_due });
        Ok(self.schedules.len() - 1)
    }

    fn dispatch(&mut self, node: usize, record: Record) -> Result<(), ProcessError> {
        match &self.nodes[node].kind {
            GraphKind::Sink { topic } => {
                self.outputs.push(OutputRecord { topic: Arc::clone(topic), sink: Arc::clone(&self.nodes[node].name), record });
                Ok(())
            }
            GraphKind::Processor => {
                let mut processor = self.processors[node].take().expect("a processor is never re-entered (the graph is acyclic)");
                let mut ctx = ProcessorContext {
                    node,
                    task: self.task,
                    application_id: self.application_id,
                    nodes: self.nodes,
                    processors: &mut *self.processors,
                    state: &mut *self.state,
                    outputs: &mut *self.outputs,
                    schedules: &mut *self.schedules,
                    dedupe_retention: self.dedupe_retention,
                    record: self.record,
                    stream_time: self.stream_time,
                    wall_clock: self.wall_clock,
                };
                let result = self.nodes[node].measure(|| processor.process(record, &mut ctx));
                self.processors[node] = Some(processor);
                result
            }
            GraphKind::Source => Err(ProcessError::Fatal(format!("source `{}` cannot be a child", self.nodes[node].name))),
        }
    }
}
