//! The processor topology, read from `topology.toml`: topics, stores, and a graph of sources,
//! processors and sinks. [`Topology::parse`] validates it and reports every problem with the
//! file, line and column; [`Topology::describe`] prints it like Kafka Streams'
//! `Topology#describe()`.
//!
//! Sub-topologies are found as in Kafka Streams: nodes joined by a parent/child edge or by a
//! shared store belong together; topics (including repartition topics) separate them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// One problem in a topology file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Why a topology file was refused: every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read {file}: {message}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        message: String,
    },
    /// The file was read but is invalid.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl TopologyError {
    /// The problems found (empty for I/O errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            TopologyError::Io { .. } => &[],
            TopologyError::Invalid(diagnostics) => diagnostics,
        }
    }
}

/// A Kafka topic the topology reads or writes, with the configs it is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// The schema of the topic's values, named for the application's serdes
    /// ([`crate::Serdes`]; the Sluice pipeline's are Avro schema file stems); `None`: bytes.
    pub schema: Option<String>,
    /// Topic configs, always including `cleanup.policy` and `retention.ms`.
    pub config: BTreeMap<String, String>,
    /// Whether every record on the topic carries a signature the runtime verifies before a
    /// processor sees it ([`crate::signing`]; docs/security.md, signed records). Needs the
    /// application's internal key.
    pub signed: bool,
}

impl TopicSpec {
    /// A compacted topic kept forever (`cleanup.policy=compact`, `retention.ms=-1`): store
    /// changelogs and the Schema Registry's `_schemas`.
    pub fn compacted(name: String, partitions: i32, replication_factor: i16) -> TopicSpec {
        let config = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
        ]);
        TopicSpec { name, partitions, replication_factor, schema: None, config, signed: false }
    }
}

/// What a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A key-value store.
    KeyValue,
    /// Processed event ids with a retention, for deduplication.
    Dedupe,
}

/// A state store, backed by a compacted changelog topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Store name.
    pub name: String,
    /// Key-value or dedupe.
    pub kind: StoreKind,
    /// How long dedupe entries are kept.
    pub retention_ms: Option<u64>,
    /// Whether writes are replicated to `<application.id>-<name>-changelog`.
    pub changelog: bool,
}

/// A topic as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicRef {
    /// A topic declared with `[[topic]]`.
    External(String),
    /// An internal repartition topic declared with `[[repartition]]`, by short name.
    Repartition(String),
}

impl TopicRef {
    /// The topic's name on the broker.
    pub fn topic_name(&self, application_id: &str) -> String {
        match self {
            TopicRef::External(name) => name.clone(),
            TopicRef::Repartition(name) => repartition_topic(application_id, name),
        }
    }
}

/// What a node does.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// Reads topics.
    Source {
        /// Topics read.
        topics: Vec<TopicRef>,
    },
    /// Runs a processor of a registered kind.
    Processor {
        /// The processor kind, looked up in the processor registry.
        kind: String,
        /// Stores it uses.
        stores: Vec<String>,
        /// Free-form settings passed to the processor's factory.
        config: toml::Table,
    },
    /// Writes a topic.
    Sink {
        /// Topic written.
        topic: TopicRef,
    },
}

/// A source, processor or sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// What it does.
    pub kind: NodeKind,
    /// Upstream nodes, by name.
    pub parents: Vec<String>,
    /// Downstream nodes, by name, in file order.
    pub children: Vec<String>,
}

/// A connected part of the topology; one task per partition runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTopology {
    /// Number, in order of first appearance in the file.
    pub id: usize,
    /// Node names: sources, then processors in topological order, then sinks.
    pub nodes: Vec<String>,
    /// Topics its sources read.
    pub source_topics: Vec<TopicRef>,
    /// Stores its processors use.
    pub stores: Vec<String>,
    /// Partition count shared by every source topic (so the number of tasks).
    pub partitions: i32,
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// External topics, in file order.
    pub topics: Vec<TopicSpec>,
    /// Repartition topics by short name (the `name` field is the short name).
    pub repartitions: Vec<TopicSpec>,
    /// Stores, in file order.
    pub stores: Vec<StoreSpec>,
    /// Every node, in file order: sources, processors, sinks.
    pub nodes: Vec<Node>,
    /// Sub-topologies, numbered from 0.
    pub subtopologies: Vec<SubTopology>,
}

/// `<application.id>-<name>-repartition`, as Kafka Streams names repartition topics.
pub fn repartition_topic(application_id: &str, name: &str) -> String {
    format!("{application_id}-{name}-repartition")
}

/// `<application.id>-<store>-changelog`, as Kafka Streams names changelog topics.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn from_file(path: &Path) -> Result<Topology, TopologyError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Io { file: label.clone(), message: e.to_string() })?;
        Topology::parse(&text, &label)
    }

    /// Parses and validates topology TOML; `file` names it in diagnostics.
    pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
        let lines = LineIndex::new(text, file);
        let raw: RawTopology = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            TopologyError::Invalid(vec![lines.diagnostic(&span, e.message().trim().to_string())])
        })?;
        Validator { lines, diagnostics: Vec::new() }.validate(raw)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// Broker names of the topics sub-topology `sub` reads.
    pub fn input_topics(&self, sub: usize, application_id: &str) -> Vec<String> {
        self.subtopologies[sub].source_topics.iter().map(|t| t.topic_name(application_id)).collect()
    }

    /// The stores of sub-topology `sub`, as `(name, changelog enabled)`.
    pub fn task_stores(&self, sub: usize) -> Vec<(String, bool)> {
        let used = &self.subtopologies[sub].stores;
        self.stores.iter().filter(|s| used.contains(&s.name)).map(|s| (s.name.clone(), s.changelog)).collect()
    }

    /// The partition count of a topic reference.
    pub fn partitions_of(&self, topic: &TopicRef) -> Option<i32> {
        let (list, name) = match topic {
            TopicRef::External(name) => (&self.topics, name),
            TopicRef::Repartition(name) => (&self.repartitions, name),
        };
        list.iter().find(|t| &t.name == name).map(|t| t.partitions)
    }

    /// Every topic the application needs, with its broker name and configs: external
    /// topics, repartition topics and store changelogs (compacted, partitioned like their
    /// sub-topology).
    pub fn topics_to_create(&self, application_id: &str) -> Vec<TopicSpec> {
        let mut topics = self.topics.clone();
        for repartition in &self.repartitions {
            topics.push(TopicSpec { name: repartition_topic(application_id, &repartition.name), ..repartition.clone() });
        }
        for sub in &self.subtopologies {
            for store in self.stores.iter().filter(|s| s.changelog && sub.stores.contains(&s.name)) {
                let replication_factor = self.topics.first().map_or(1, |t| t.replication_factor);
                topics.push(TopicSpec::compacted(changelog_topic(application_id, &store.name), sub.partitions, replication_factor));
            }
        }
        // Interactive-query discovery: which instance runs which task.
        let replication_factor = self.topics.first().map_or(1, |t| t.replication_factor);
        topics.push(TopicSpec::compacted(crate::interactive::instances_topic(application_id), 1, replication_factor));
        topics
    }

    /// The topology in the format of Kafka Streams' `Topology#describe()`.
    pub fn describe(&self, application_id: &str) -> String {
        let mut out = String::from("Topologies:\n");
        let by_name: HashMap<&str, &Node> = self.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(", ") };
        for sub in &self.subtopologies {
            let _ = writeln!(out, "   Sub-topology: {}", sub.id);
            for name in &sub.nodes {
                let node = by_name[name.as_str()];
                match &node.kind {
                    NodeKind::Source { topics } => {
                        let topics: Vec<String> = topics.iter().map(|t| t.topic_name(application_id)).collect();
                        let _ = writeln!(out, "    Source: {} (topics: [{}])", node.name, topics.join(", "));
                    }
                    NodeKind::Processor { stores, .. } => {
                        let _ = writeln!(out, "    Processor: {} (stores: [{}])", node.name, stores.join(", "));
                    }
                    NodeKind::Sink { topic } => {
                        let _ = writeln!(out, "    Sink: {} (topic: {})", node.name, topic.topic_name(application_id));
                    }
                }
                if !matches!(node.kind, NodeKind::Sink { .. }) {
                    let _ = writeln!(out, "      --> {}", list(&node.children));
                }
                if !matches!(node.kind, NodeKind::Source { .. }) {
                    let _ = writeln!(out, "      <-- {}", list(&node.parents));
                }
            }
            out.push('\n');
        }
        out
    }
}

// ---------------------------------------------------------------- the file format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "topic")]
    topics: Vec<RawTopic>,
    #[serde(default, rename = "repartition")]
    repartitions: Vec<RawTopic>,
    #[serde(default, rename = "store")]
    stores: Vec<RawStore>,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default, rename = "processor")]
    processors: Vec<RawProcessor>,
    #[serde(default, rename = "sink")]
    sinks: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default = "one")]
    partitions: Spanned<i32>,
    #[serde(default = "one_i16")]
    replication_factor: i16,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

impl Default for RawDefaults {
    fn default() -> Self {
        RawDefaults { partitions: one(), replication_factor: 1, config: BTreeMap::new() }
    }
}

fn one() -> Spanned<i32> {
    Spanned::new(0..0, 1)
}

fn one_i16() -> i16 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: Spanned<String>,
    partitions: Option<Spanned<i32>>,
    replication_factor: Option<i16>,
    /// Documentation only: what the record key is.
    #[serde(default)]
    #[allow(dead_code)]
    key: Option<String>,
    schema: Option<Spanned<String>>,
    config: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    signed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    name: Spanned<String>,
    #[serde(default = "key_value")]
    kind: StoreKind,
    retention_ms: Option<Spanned<u64>>,
    #[serde(default = "yes")]
    changelog: bool,
}

fn key_value() -> StoreKind {
    StoreKind::KeyValue
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    #[serde(default)]
    topics: Vec<Spanned<String>>,
    repartition: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessor {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    parents: Vec<Spanned<String>>,
    #[serde(default)]
    stores: Vec<Spanned<String>>,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: Spanned<String>,
    topic: Option<Spanned<String>>,
    repartition: Option<Spanned<String>>,
    #[serde(default)]
    parents: Vec<Spanned<String>>,
}

// ---------------------------------------------------------------- validation

struct LineIndex<'a> {
    text: &'a str,
    file: String,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str, file: &str) -> Self {
        LineIndex { text, file: file.to_string() }
    }

    fn diagnostic(&self, span: &Range<usize>, message: String) -> Diagnostic {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic { file: self.file.clone(), line, column, message }
    }
}

struct Validator<'a> {
    lines: LineIndex<'a>,
    diagnostics: Vec<Diagnostic>,
}

const VALID_CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];

impl Validator<'_> {
    fn error(&mut self, span: &Range<usize>, message: String) {
        self.diagnostics.push(self.lines.diagnostic(span, message));
    }

    fn validate(mut self, raw: RawTopology) -> Result<Topology, TopologyError> {
        if *raw.defaults.partitions.get_ref() < 1 {
            let span = raw.defaults.partitions.span();
            self.error(&span, "defaults.partitions must be at least 1".to_string());
        }
        let topics = self.topics(&raw.topics, &raw.defaults, "topic");
        let repartitions = self.topics(&raw.repartitions, &raw.defaults, "repartition");
        let stores = self.stores(&raw.stores);
        let nodes = self.nodes(&raw, &topics, &repartitions, &stores);
        let subtopologies = self.subtopologies(&raw, &nodes, &topics, &repartitions);
        self.unused_stores(&raw.stores, &nodes);
        if self.diagnostics.is_empty() {
            Ok(Topology { topics, repartitions, stores, nodes, subtopologies })
        } else {
            self.diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(TopologyError::Invalid(self.diagnostics))
        }
    }

    fn topics(&mut self, raw: &[RawTopic], defaults: &RawDefaults, what: &str) -> Vec<TopicSpec> {
        let mut seen = BTreeSet::new();
        let mut specs = Vec::new();
        for topic in raw {
            let name = topic.name.get_ref().clone();
            if !valid_topic_name(&name) {
                self.error(&topic.name.span(), format!("`{name}` is not a valid topic name (letters, digits, '.', '_', '-'; at most 249 characters)"));
            }
            if !seen.insert(name.clone()) {
                self.error(&topic.name.span(), format!("duplicate {what} `{name}`"));
            }
            let partitions = topic.partitions.as_ref().unwrap_or(&defaults.partitions);
            if *partitions.get_ref() < 1 {
                self.error(&partitions.span(), format!("{what} `{name}` must have at least 1 partition"));
            }
            let mut config = defaults.config.clone();
            let config_span = topic.config.as_ref().map_or_else(|| topic.name.span(), |c| c.span());
            if let Some(overrides) = &topic.config {
                config.extend(overrides.get_ref().clone());
            }
            config.entry("cleanup.policy".to_string()).or_insert_with(|| "delete".to_string());
            config.entry("retention.ms".to_string()).or_insert_with(|| "604800000".to_string());
            if !VALID_CLEANUP_POLICIES.contains(&config["cleanup.policy"].as_str()) {
                self.error(&config_span, format!("{what} `{name}`: cleanup.policy must be delete, compact or compact,delete"));
            }
            if config["retention.ms"].parse::<i64>().map_or(true, |ms| ms < -1) {
                self.error(&config_span, format!("{what} `{name}`: retention.ms must be an integer >= -1"));
            }
            if topic.schema.as_ref().is_some_and(|s| s.get_ref().trim().is_empty()) {
                self.error(&topic.name.span(), format!("{what} `{name}`: an empty schema name"));
            }
            specs.push(TopicSpec {
                name,
                partitions: *partitions.get_ref(),
                replication_factor: topic.replication_factor.unwrap_or(defaults.replication_factor),
                schema: topic.schema.as_ref().map(|s| s.get_ref().clone()),
                config,
                signed: topic.signed,
            });
        }
        specs
    }

    fn stores(&mut self, raw: &[RawStore]) -> Vec<StoreSpec> {
        let mut seen = BTreeSet::new();
        let mut specs = Vec::new();
        for store in raw {
            let name = store.name.get_ref().clone();
            if !seen.insert(name.clone()) {
                self.error(&store.name.span(), format!("duplicate store `{name}`"));
            }
            match (store.kind, &store.retention_ms) {
                (StoreKind::Dedupe, None) => self.error(&store.name.span(), format!("dedupe store `{name}` needs retention_ms")),
                (StoreKind::KeyValue, Some(retention)) => {
                    self.error(&retention.span(), format!("store `{name}`: retention_ms applies to dedupe stores only"))
                }
                _ => {}
            }
            specs.push(StoreSpec {
                name,
                kind: store.kind,
                retention_ms: store.retention_ms.as_ref().map(|r| *r.get_ref()),
                changelog: store.changelog,
            });
        }
        specs
    }

    fn topic_ref(
        &mut self,
        topic: Option<&Spanned<String>>,
        repartition: Option<&Spanned<String>>,
        topics: &[TopicSpec],
        repartitions: &[TopicSpec],
        node: &Spanned<String>,
    ) -> Option<TopicRef> {
        match (topic, repartition) {
            (Some(topic), None) => {
                if topics.iter().any(|t| &t.name == topic.get_ref()) {
                    Some(TopicRef::External(topic.get_ref().clone()))
                } else {
                    self.error(&topic.span(), format!("`{}` refers to unknown topic `{}` (declare it with [[topic]])", node.get_ref(), topic.get_ref()));
                    None
                }
            }
            (None, Some(repartition)) => {
                if repartitions.iter().any(|t| &t.name == repartition.get_ref()) {
                    Some(TopicRef::Repartition(repartition.get_ref().clone()))
                } else {
                    self.error(&repartition.span(), format!("`{}` refers to unknown repartition topic `{}` (declare it with [[repartition]])", node.get_ref(), repartition.get_ref()));
                    None
                }
            }
            (Some(_), Some(repartition)) => {
                self.error(&repartition.span(), format!("`{}` names both a topic and a repartition topic; use one", node.get_ref()));
                None
            }
            (None, None) => {
                self.error(&node.span(), format!("`{}` names no topic (set `topic` or `repartition`)", node.get_ref()));
                None
            }
        }
    }

    fn nodes(&mut self, raw: &RawTopology, topics: &[TopicSpec], repartitions: &[TopicSpec], stores: &[StoreSpec]) -> Vec<Node> {
        let mut nodes = Vec::new();
        let mut spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut read_by: HashMap<TopicRef, String> = HashMap::new();
        let mut check_name = |v: &mut Self, name: &Spanned<String>| {
            if spans.insert(name.get_ref().clone(), name.span()).is_some() {
                v.error(&name.span(), format!("duplicate node name `{}` (sources, processors and sinks share one namespace)", name.get_ref()));
            }
        };
        for source in &raw.sources {
            check_name(self, &source.name);
            let mut refs = Vec::new();
            if source.topics.is_empty() && source.repartition.is_none() {
                self.error(&source.name.span(), format!("source `{}` reads no topic (set `topics` or `repartition`)", source.name.get_ref()));
            }
            for topic in &source.topics {
                refs.extend(self.topic_ref(Some(topic), None, topics, repartitions, &source.name));
            }
            if let Some(repartition) = &source.repartition {
                refs.extend(self.topic_ref(None, Some(repartition), topics, repartitions, &source.name));
            }
            for topic in &refs {
                if let Some(other) = read_by.insert(topic.clone(), source.name.get_ref().clone()) {
                    self.error(&source.name.span(), format!("topic `{}` is already read by source `{other}`; a topic has one source", topic.topic_name("<application.id>")));
                }
            }
            nodes.push(Node { name: source.name.get_ref().clone(), kind: NodeKind::Source { topics: refs }, parents: Vec::new(), children: Vec::new() });
        }
        for processor in &raw.processors {
            check_name(self, &processor.name);
            for store in &processor.stores {
                if !stores.iter().any(|s| &s.name == store.get_ref()) {
                    self.error(&store.span(), format!("processor `{}` uses unknown store `{}` (declare it with [[store]])", processor.name.get_ref(), store.get_ref()));
                }
            }
            if processor.kind.get_ref().trim().is_empty() {
                self.error(&processor.kind.span(), format!("processor `{}` has an empty kind", processor.name.get_ref()));
            }
            nodes.push(Node {
                name: processor.name.get_ref().clone(),
                kind: NodeKind::Processor {
                    kind: processor.kind.get_ref().clone(),
                    stores: processor.stores.iter().map(|s| s.get_ref().clone()).collect(),
                    config: processor.config.clone(),
                },
                parents: processor.parents.iter().map(|p| p.get_ref().clone()).collect(),
                children: Vec::new(),
            });
        }
        for sink in &raw.sinks {
            check_name(self, &sink.name);
            let topic = self.topic_ref(sink.topic.as_ref(), sink.repartition.as_ref(), topics, repartitions, &sink.name);
            nodes.push(Node {
                name: sink.name.get_ref().clone(),
                kind: NodeKind::Sink { topic: topic.unwrap_or(TopicRef::External(String::new())) },
                parents: sink.parents.iter().map(|p| p.get_ref().clone()).collect(),
                children: Vec::new(),
            });
        }
        // Parent references: must exist, must not be sinks; every processor and sink has one.
        let parent_lists = raw
            .processors
            .iter()
            .map(|p| (&p.name, &p.parents))
            .chain(raw.sinks.iter().map(|s| (&s.name, &s.parents)));
        let mut edges = Vec::new();
        for (child, parents) in parent_lists {
            if parents.is_empty() {
                self.error(&child.span(), format!("`{}` has no parents, so nothing reaches it", child.get_ref()));
            }
            for parent in parents {
                match nodes.iter().find(|n| &n.name == parent.get_ref()) {
                    None => self.error(&parent.span(), format!("`{}` names unknown parent `{}`", child.get_ref(), parent.get_ref())),
                    Some(Node { kind: NodeKind::Sink { .. }, .. }) => {
                        self.error(&parent.span(), format!("`{}` names sink `{}` as a parent; sinks have no children", child.get_ref(), parent.get_ref()))
                    }
                    Some(_) if parent.get_ref() == child.get_ref() => {
                        self.error(&parent.span(), format!("`{}` is its own parent (cycle)", child.get_ref()))
                    }
                    Some(_) => edges.push((parent.get_ref().clone(), child.get_ref().clone())),
                }
            }
        }
        for (parent, child) in edges {
            if let Some(node) = nodes.iter_mut().find(|n| n.name == parent) {
                node.children.push(child);
            }
        }
        for source in &raw.sources {
            if nodes.iter().any(|n| &n.name == source.name.get_ref() && n.children.is_empty()) {
                self.error(&source.name.span(), format!("source `{}` feeds no processor or sink", source.name.get_ref()));
            }
        }
        self.cycles(raw, &nodes);
        nodes
    }

    fn cycles(&mut self, raw: &RawTopology, nodes: &[Node]) {
        // Depth-first search with colours over parent -> child edges between processors.
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let mut colour = vec![0u8; nodes.len()];
        let mut reported = BTreeSet::new();
        fn visit(i: usize, nodes: &[Node], index: &HashMap<&str, usize>, colour: &mut [u8], path: &mut Vec<usize>, found: &mut Vec<Vec<usize>>) {
            colour[i] = 1;
            path.push(i);
            for child in &nodes[i].children {
                let Some(&c) = index.get(child.as_str()) else { continue };
                match colour[c] {
                    0 => visit(c, nodes, index, colour, path, found),
                    1 => {
                        let start = path.iter().position(|&p| p == c).unwrap_or(0);
                        found.push(path[start..].to_vec());
                    }
                    _ => {}
                }
            }
            path.pop();
            colour[i] = 2;
        }
        let mut found = Vec::new();
        for i in 0..nodes.len() {
            if colour[i] == 0 {
                visit(i, nodes, &index, &mut colour, &mut Vec::new(), &mut found);
            }
        }
        for cycle in found {
            let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].name.as_str()).collect();
            let first = names[0];
            if !reported.insert(names.iter().copied().collect::<BTreeSet<_>>()) {
                continue;
            }
            let span = raw.processors.iter().find(|p| p.name.get_ref() == first).map_or(0..0, |p| p.name.span());
            let mut path = names.join(" -> ");
            let _ = write!(path, " -> {first}");
            self.error(&span, format!("cycle between processors: {path}"));
        }
    }

    fn subtopologies(&mut self, raw: &RawTopology, nodes: &[Node], topics: &[TopicSpec], repartitions: &[TopicSpec]) -> Vec<SubTopology> {
        // Union-find over parent/child edges and shared stores.
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let mut root: Vec<usize> = (0..nodes.len()).collect();
        fn find(root: &mut [usize], mut i: usize) -> usize {
            while root[i] != i {
                root[i] = root[root[i]];
                i = root[i];
            }
            i
        }
        let union = |root: &mut Vec<usize>, a: usize, b: usize| {
            let (ra, rb) = (find(root, a), find(root, b));
            if ra != rb {
                root[ra.max(rb)] = ra.min(rb);
            }
        };
        let mut store_owner: HashMap<&str, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for child in &node.children {
                if let Some(&c) = index.get(child.as_str()) {
                    union(&mut root, i, c);
                }
            }
            if let NodeKind::Processor { stores, .. } = &node.kind {
                for store in stores {
                    match store_owner.get(store.as_str()) {
                        Some(&other) => union(&mut root, i, other),
                        None => {
                            store_owner.insert(store.as_str(), i);
                        }
                    }
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..nodes.len() {
            let r = find(&mut root, i);
            groups.entry(r).or_default().push(i);
        }
        let partitions_of = |topic: &TopicRef| -> Option<i32> {
            let (list, name) = match topic {
                TopicRef::External(name) => (topics, name),
                TopicRef::Repartition(name) => (repartitions, name),
            };
            list.iter().find(|t| &t.name == name).map(|t| t.partitions)
        };
        let mut subs = Vec::new();
        for (id, members) in groups.into_values().enumerate() {
            let mut sources = Vec::new();
            let mut processors = Vec::new();
            let mut sinks = Vec::new();
            for &i in &members {
                match nodes[i].kind {
                    NodeKind::Source { .. } => sources.push(i),
                    NodeKind::Processor { .. } => processors.push(i),
                    NodeKind::Sink { .. } => sinks.push(i),
                }
            }
            let processors = topological_order(&processors, nodes, &index);
            let mut source_topics = Vec::new();
            let mut counts: BTreeMap<i32, Vec<String>> = BTreeMap::new();
            for &s in &sources {
                if let NodeKind::Source { topics } = &nodes[s].kind {
                    for topic in topics {
                        if let Some(p) = partitions_of(topic) {
                            counts.entry(p).or_default().push(format!("{} ({p})", topic.topic_name("<application.id>")));
                        }
                        source_topics.push(topic.clone());
                    }
                }
            }
            if counts.len() > 1 {
                let listing: Vec<String> = counts.values().flatten().cloned().collect();
                let first_source = sources.first().map(|&s| nodes[s].name.clone()).unwrap_or_default();
                let span = raw.sources.iter().find(|s| *s.name.get_ref() == first_source).map_or(0..0, |s| s.name.span());
                self.error(
                    &span,
                    format!(
                        "sources of sub-topology {id} are not co-partitioned: every source topic of a sub-topology needs the same partition count, found {}",
                        listing.join(", ")
                    ),
                );
            }
            let mut stores: Vec<String> = Vec::new();
            for &p in &processors {
                if let NodeKind::Processor { stores: used, .. } = &nodes[p].kind {
                    for store in used {
                        if !stores.contains(store) {
                            stores.push(store.clone());
                        }
                    }
                }
            }
            let names = sources.iter().chain(&processors).chain(&sinks).map(|&i| nodes[i].name.clone()).collect();
            subs.push(SubTopology { id, nodes: names, source_topics, stores, partitions: counts.keys().next().copied().unwrap_or(1) });
        }
        subs
    }

    fn unused_stores(&mut self, raw: &[RawStore], nodes: &[Node]) {
        for store in raw {
            let used = nodes.iter().any(|n| matches!(&n.kind, NodeKind::Processor { stores, .. } if stores.contains(store.name.get_ref())));
            if !used {
                self.error(&store.name.span(), format!("store `{}` is used by no processor", store.name.get_ref()));
            }
        }
    }
}

/// Kahn's algorithm, keeping file order among ready nodes (cycles were reported already).
fn topological_order(processors: &[usize], nodes: &[Node], index: &HashMap<&str, usize>) -> Vec<usize> {
    let set: BTreeSet<usize> = processors.iter().copied().collect();
    let mut indegree: BTreeMap<usize, usize> = processors.iter().map(|&p| (p, 0)).collect();
    for &p in processors {
        for child in &nodes[p].children {
            if let Some(&c) = index.get(child.as_str()) {
                if set.contains(&c) {
                    *indegree.entry(c).or_default() += 1;
                }
            }
        }
    }
    let mut order = Vec::new();
    let mut ready: BTreeSet<usize> = indegree.iter().filter(|(_, &d)| d == 0).map(|(&p, _)| p).collect();
    while let Some(p) = ready.pop_first() {
        order.push(p);
        for child in &nodes[p].children {
            if let Some(&c) = index.get(child.as_str()) {
                if let Some(d) = indegree.get_mut(&c) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(c);
                    }
                }
            }
        }
    }
    for &p in processors {
        if !order.contains(&p) {
            order.push(p);
        }
    }
    order
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[[topic]]
name = "in"
partitions = 2

[[topic]]
name = "out"
partitions = 2

[[repartition]]
name = "by-payee"
partitions = 2

[[store]]
name = "totals"

[[source]]
name = "in-source"
topics = ["in"]

[[processor]]
name = "aggregate"
kind = "sum"
parents = ["in-source"]
stores = ["totals"]

[[sink]]
name = "out-sink"
topic = "out"
parents = ["aggregate"]

[[sink]]
name = "repartition-sink"
repartition = "by-payee"
parents = ["aggregate"]

[[source]]
name = "repartitioned-source"
repartition = "by-payee"

[[processor]]
name = "credit"
kind = "credit"
parents = ["repartitioned-source"]

[[sink]]
name = "credit-sink"
topic = "out"
parents = ["credit"]
"#;

    fn errors(text: &str) -> Vec<Diagnostic> {
        Topology::parse(text, "t.toml").expect_err("invalid topology").diagnostics().to_vec()
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).expect("needle present") + 1
    }

    #[test]
    fn describe_matches_kafka_streams_format() {
        let topology = Topology::parse(SMALL, "t.toml").unwrap();
        let expected = "\
Topologies:
   Sub-topology: 0
    Source: in-source (topics: [in])
      --> aggregate
    Processor: aggregate (stores: [totals])
      --> out-sink, repartition-sink
      <-- in-source
    Sink: out-sink (topic: out)
      <-- aggregate
    Sink: repartition-sink (topic: app-by-payee-repartition)
      <-- aggregate

   Sub-topology: 1
    Source: repartitioned-source (topics: [app-by-payee-repartition])
      --> credit
    Processor: credit (stores: [])
      --> credit-sink
      <-- repartitioned-source
    Sink: credit-sink (topic: out)
      <-- credit

";
        assert_eq!(topology.describe("app"), expected);
    }

    #[test]
    fn topics_to_create_has_internal_topics_with_explicit_configs() {
        let topology = Topology::parse(SMALL, "t.toml").unwrap();
        let topics = topology.topics_to_create("app");
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["in", "out", "app-by-payee-repartition", "app-totals-changelog", "app-instances"]);
        let changelog = &topics[3];
        assert_eq!(changelog.config["cleanup.policy"], "compact");
        assert_eq!(changelog.partitions, 2);
        assert_eq!((topics[4].config["cleanup.policy"].as_str(), topics[4].partitions), ("compact", 1), "interactive-query discovery");
        for topic in &topics {
            assert!(topic.config.contains_key("cleanup.policy") && topic.config.contains_key("retention.ms"), "{topic:?}");
        }
    }

    #[test]
    fn the_pipeline_has_the_subtopologies_of_the_design() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml");
        let topology = Topology::from_file(&path).unwrap();
        let processors = |id: usize| -> Vec<String> {
            topology.subtopologies[id]
                .nodes
                .iter()
                .filter(|n| matches!(topology.node(n).unwrap().kind, NodeKind::Processor { .. }))
                .cloned()
                .collect()
        };
        assert_eq!(processors(0), ["auth-validation", "balance-check", "settlement", "identity-request"]);
        assert_eq!(processors(1), ["identity-verification", "hmrc-death-notification"]);
        assert_eq!(processors(2), ["json-bridge"]);
        assert_eq!(topology.subtopologies[1].stores, ["identity-claims", "identifier-dedupe", "notification-status"]);
        let described = topology.describe("sluice");
        assert!(described.contains("Source: credit-source (topics: [sluice-credit-repartition])"), "{described}");
        let created: Vec<String> = topology.topics_to_create("sluice").into_iter().map(|t| t.name).collect();
        for expected in ["sluice.dlq", "sluice-users-changelog", "sluice-identity-claims-changelog", "sluice-deceased-repartition"] {
            assert!(created.iter().any(|c| c == expected), "{expected} missing from {created:?}");
        }
    }

    #[test]
    fn unknown_store_is_reported_at_its_line() {
        let text = SMALL.replace(r#"stores = ["totals"]"#, r#"stores = ["totals", "missing"]"#);
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, line_of(&text, "\"missing\""));
        assert!(errors[0].message.contains("unknown store `missing`"), "{}", errors[0]);
        assert!(errors[0].to_string().starts_with(&format!("t.toml:{}:", errors[0].line)));
    }

    #[test]
    fn sources_not_co_partitioned_are_reported() {
        let text = SMALL.replacen("partitions = 2", "partitions = 3", 1).replace(
            "name = \"repartitioned-source\"\nrepartition = \"by-payee\"",
            "name = \"repartitioned-source\"\nrepartition = \"by-payee\"\n\n[[processor]]\nname = \"join\"\nkind = \"join\"\nparents = [\"repartitioned-source\"]\nstores = [\"totals\"]",
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("not co-partitioned"), "{}", errors[0]);
        assert!(errors[0].message.contains("in (3)") && errors[0].message.contains("app-by-payee-repartition (2)") || errors[0].message.contains("<application.id>-by-payee-repartition (2)"), "{}", errors[0]);
        assert_eq!(errors[0].line, line_of(&text, "name = \"in-source\""));
    }

    #[test]
    fn cycles_are_reported() {
        let text = format!("{SMALL}\n[[processor]]\nname = \"a\"\nkind = \"x\"\nparents = [\"in-source\", \"b\"]\n\n[[processor]]\nname = \"b\"\nkind = \"x\"\nparents = [\"a\"]\n");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("cycle between processors: a -> b -> a"), "{}", errors[0]);
        assert_eq!(errors[0].line, line_of(&text, "name = \"a\""));
    }

    #[test]
    fn duplicates_unknown_topics_and_parents_are_reported() {
        let text = format!("{SMALL}\n[[sink]]\nname = \"out-sink\"\ntopic = \"nowhere\"\nparents = [\"ghost\"]\n\n[[topic]]\nname = \"in\"\n");
        let messages: Vec<String> = errors(&text).into_iter().map(|d| d.message).collect();
        assert!(messages.iter().any(|m| m.contains("duplicate node name `out-sink`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("unknown topic `nowhere`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("unknown parent `ghost`")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("duplicate topic `in`")), "{messages:?}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_line() {
        let text = SMALL.replace("kind = \"sum\"", "kind = \"sum\"\nstorez = []");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, line_of(&text, "storez"));
        assert!(errors[0].message.contains("storez"), "{}", errors[0]);
        let broken = super::tests::errors("[[topic]\nname = 1");
        assert_eq!(broken[0].line, 1);
    }

    #[test]
    fn empty_schema_names_and_bad_configs_are_reported() {
        let text = SMALL.replacen(
            "name = \"in\"\npartitions = 2",
            "name = \"in\"\npartitions = 2\nschema = \" \"\nconfig = { \"cleanup.policy\" = \"shred\" }",
            1,
        );
        let messages: Vec<String> = errors(&text).into_iter().map(|d| d.message).collect();
        assert!(messages.iter().any(|m| m.contains("an empty schema name")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("cleanup.policy")), "{messages:?}");
    }
}
