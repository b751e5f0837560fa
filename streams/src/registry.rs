//! The processor registry: what an application brings to the engine, the processor factory
//! for each `kind` named in topology.toml and the [`Serdes`] of the topics that name a schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::processor::Processor;
use crate::serde::{BytesOnly, Serdes};
use crate::topology::{NodeKind, Topology};

/// What a factory gets to build one processor instance (one per task).
pub struct ProcessorConfig<'a> {
    /// Node name.
    pub name: &'a str,
    /// The kind.
    pub kind: &'a str,
    /// The node's `config` table from topology.toml.
    pub config: &'a toml::Table,
    /// Stores the node declared.
    pub stores: &'a [String],
}

/// Builds a processor for a node, or says why the node's config is unusable.
pub type ProcessorFactory = Box<dyn Fn(&ProcessorConfig<'_>) -> Result<Box<dyn Processor>, String> + Send + Sync>;

/// Processor kinds by name, and the application's serdes.
pub struct ProcessorRegistry {
    factories: BTreeMap<String, ProcessorFactory>,
    serdes: Arc<dyn Serdes>,
}

impl Default for ProcessorRegistry {
    fn default() -> ProcessorRegistry {
        ProcessorRegistry { factories: BTreeMap::new(), serdes: Arc::new(BytesOnly) }
    }
}

impl ProcessorRegistry {
    /// An empty registry.
    pub fn new() -> ProcessorRegistry {
        ProcessorRegistry::default()
    }

    /// Registers `kind`; a later registration of the same kind replaces it.
    pub fn register(
        &mut self,
        kind: &str,
        factory: impl Fn(&ProcessorConfig<'_>) -> Result<Box<dyn Processor>, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.factories.insert(kind.to_string(), Box::new(factory));
        self
    }

    /// Sets the serdes of the topics that name a schema (default: none, every topic is bytes).
    pub fn set_serdes(&mut self, serdes: impl Serdes + 'static) -> &mut Self {
        self.serdes = Arc::new(serdes);
        self
    }

    /// The application's serdes.
    pub fn serdes(&self) -> &Arc<dyn Serdes> {
        &self.serdes
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Checks every processor node of `topology` has a registered kind and that its factory
    /// accepts the node's config (so a bad setting fails at start, not at the first
    /// assignment), and that the serdes know every schema a topic names; lists every problem.
    pub fn check(&self, topology: &Topology) -> Result<(), Vec<String>> {
        let schemas = topology.topics.iter().map(|t| (&t.name, &t.schema)).chain(topology.repartitions.iter().map(|r| (&r.name, &r.schema)));
        let mut problems: Vec<String> = schemas.filter_map(|(topic, schema)| self.serdes.check_schema(topic, schema.as_deref()?).err()).collect();
        problems.extend(topology
            .nodes
            .iter()
            .filter_map(|node| match &node.kind {
                NodeKind::Processor { kind, .. } if !self.factories.contains_key(kind) => Some(format!(
                    "processor `{}` has unknown kind `{kind}` (known: {})",
                    node.name,
                    self.kinds().collect::<Vec<_>>().join(", ")
                )),
                NodeKind::Processor { kind, stores, config } => {
                    self.create(&ProcessorConfig { name: &node.name, kind, config, stores }).err()
                }
                _ => None,
            }));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Builds the processor for one node.
    pub fn create(&self, config: &ProcessorConfig<'_>) -> Result<Box<dyn Processor>, String> {
        let factory = self.factories.get(config.kind).ok_or_else(|| format!("processor `{}` has unknown kind `{}`", config.name, config.kind))?;
        factory(config).map_err(|e| format!("processor `{}` ({}): {e}", config.name, config.kind))
    }
}
