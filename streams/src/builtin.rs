//! Processors that ship with the engine.
//!
//! `keyed-sum`: the balance aggregation of Kafka Streams' word-count fame. Each record's value
//! is a signed integer in UTF-8 text (e.g. `-250`), its key an account; the processor keeps a
//! running total per key in its first store and forwards `key -> total` to its children. With
//! a dedupe store declared as well, an event id seen before is skipped (the id is the
//! `event_id` header, or the record's topic-partition-offset when there is none).

use crate::processor::{ProcessError, Processor};
use crate::record::{Record, Value};
use crate::registry::{ProcessorConfig, ProcessorRegistry};
use crate::stream_task::ProcessorContext;

/// Header carrying a record's event id (docs/architecture.md, topics and keys).
pub const EVENT_ID_HEADER: &str = "event_id";

/// Registers the built-in kinds (`keyed-sum`).
pub fn register_builtins(registry: &mut ProcessorRegistry) {
    registry.register("keyed-sum", |config| KeyedSum::from_config(config).map(|p| Box::new(p) as Box<dyn Processor>));
}

/// Running total per key. See the module docs.
#[derive(Debug, Clone)]
pub struct KeyedSum {
    store: String,
    dedupe: Option<String>,
}

impl KeyedSum {
    /// Uses the node's stores: `config.store` (default: the first store) for totals and
    /// `config.dedupe` (optional) for event ids.
    pub fn from_config(config: &ProcessorConfig<'_>) -> Result<KeyedSum, String> {
        let named = |key: &str| config.config.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let store = named("store").or_else(|| config.stores.first().cloned()).ok_or("keyed-sum needs a store")?;
        let dedupe = named("dedupe");
        for name in std::iter::once(&store).chain(&dedupe) {
            if !config.stores.contains(name) {
                return Err(format!("store `{name}` is not declared on the node"));
            }
        }
        Ok(KeyedSum { store, dedupe })
    }
}

impl Processor for KeyedSum {
    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let Record { key, value, timestamp, headers } = record;
        let key = key.ok_or_else(|| ProcessError::poison("invalid_record", "keyed-sum needs a key"))?;
        let amount = match &value {
            Value::Bytes(bytes) => std::str::from_utf8(bytes).ok().and_then(|t| t.trim().parse::<i64>().ok()),
            _ => None,
        }
        .ok_or_else(|| ProcessError::poison("invalid_record", format!("value of `{key}` is not an integer")))?;
        if let Some(dedupe) = &self.dedupe {
            let event_id = match headers.iter().find(|(name, _)| name == EVENT_ID_HEADER) {
                Some((_, id)) => String::from_utf8_lossy(id).into_owned(),
                None => ctx.record_metadata().map(|m| format!("{}-{}-{}", m.topic, m.partition, m.offset)).unwrap_or_default(),
            };
            if ctx.is_duplicate(dedupe, &event_id)? {
                return Ok(());
            }
        }
        let store = ctx.store(&self.store)?;
        let total = match store.get(key.as_bytes())? {
            Some(bytes) => i64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| ProcessError::Fatal(format!("total of `{key}` is corrupt")))?),
            None => 0,
        };
        let total = total.checked_add(amount).ok_or_else(|| ProcessError::poison("invalid_record", format!("total of `{key}` would overflow")))?;
        store.put(key.as_bytes(), &total.to_be_bytes())?;
        ctx.forward(Record { key: Some(key), value: Value::Bytes(total.to_string().into_bytes()), timestamp, headers })
    }
}
