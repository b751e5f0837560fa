//! `order-totals`: a pipeline built on the Sluice engine (`sluice-streams`) alone, with its own
//! value types and serdes, to show what an application brings to the engine
//! (docs/architecture.md, serdes):
//!
//! - [`Order`] and [`CustomerTotal`], its values, as JSON on the wire ([`JsonSerdes`]);
//! - two processors: `by-customer` checks an order and re-keys it by customer (through the
//!   `orders-by-customer` repartition topic), `total` keeps a running [`CustomerTotal`] per
//!   customer in the `totals` store and emits each new one to `customer-totals`;
//! - its own dead letter: a JSON document ([`JsonSerdes::dead_letter`]).
//!
//! Amounts are integer minor units (cents): no floats near money.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_streams::{
    Data, DeadLetter, ErrorPolicy, ProcessError, Processor, ProcessorContext, ProcessorRegistry, Record, SendError, Serdes, StreamsConfig, StreamsError, Topology, Value,
};

/// The topology, `topology.toml` next to this crate's manifest.
pub const TOPOLOGY: &str = include_str!("../topology.toml");

/// An order as produced to `orders`, keyed by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The order's id.
    pub order_id: String,
    /// Who placed it.
    pub customer: String,
    /// Its amount in cents; must be positive.
    pub amount_cents: i64,
}

/// A customer's running total, as emitted to `customer-totals` and kept in `totals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerTotal {
    /// The customer.
    pub customer: String,
    /// Orders counted.
    pub orders: u64,
    /// Their sum in cents.
    pub total_cents: i64,
}

/// The schemas `topology.toml` names, and the type each one is.
const SCHEMAS: [&str; 2] = ["order", "customer-total"];

/// JSON serdes for [`Order`] (`order`) and [`CustomerTotal`] (`customer-total`).
pub struct JsonSerdes;

impl Serdes for JsonSerdes {
    fn check_schema(&self, topic: &str, schema: &str) -> Result<(), String> {
        if SCHEMAS.contains(&schema) {
            Ok(())
        } else {
            Err(format!("topic `{topic}`: order-totals has no schema `{schema}` (known: {})", SCHEMAS.join(", ")))
        }
    }

    fn deserialize(&self, topic: &str, schema: &str, bytes: &[u8]) -> Result<Value, ProcessError> {
        let poison = |e: serde_json::Error| ProcessError::poison("deserialization", format!("{topic}: not a JSON {schema}: {e}"));
        match schema {
            "order" => serde_json::from_slice::<Order>(bytes).map(Value::record).map_err(poison),
            _ => serde_json::from_slice::<CustomerTotal>(bytes).map(Value::record).map_err(poison),
        }
    }

    fn serialize(&self, topic: &str, _schema: Option<&str>, value: &dyn Data) -> Result<Vec<u8>, SendError> {
        let any = value.as_any();
        let json = if let Some(order) = any.downcast_ref::<Order>() {
            serde_json::to_vec(order)
        } else if let Some(total) = any.downcast_ref::<CustomerTotal>() {
            serde_json::to_vec(total)
        } else {
            return Err(SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason: format!("order-totals cannot write a {}", value.type_name()) }));
        };
        json.map_err(|e| SendError::Fatal(StreamsError::Send { topic: topic.to_string(), reason: e.to_string() }))
    }

    /// A JSON document: where the record was, why it failed, and its value as text.
    fn dead_letter(&self, letter: &DeadLetter<'_>) -> Value {
        let document = serde_json::json!({
            "id": letter.event_id(),
            "topic": &*letter.source.topic,
            "partition": letter.source.partition,
            "offset": letter.source.offset,
            "error_class": letter.error.class(),
            "error": letter.message(),
            "value": letter.value.map(String::from_utf8_lossy),
        });
        Value::Bytes(document.to_string().into_bytes())
    }
}

/// `by-customer`: refuses orders with a non-positive amount, re-keys the rest by customer.
struct ByCustomer;

impl Processor for ByCustomer {
    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let order = record.value.as_record::<Order>().ok_or_else(|| ProcessError::poison("invalid_order", "not an order"))?;
        if order.amount_cents <= 0 {
            return Err(ProcessError::poison("invalid_order", format!("order {} has amount {} cents; it must be positive", order.order_id, order.amount_cents)));
        }
        let customer = order.customer.clone();
        ctx.forward(Record { key: Some(customer), ..record })
    }
}

/// `total`: the running total per customer (key).
struct Total;

impl Processor for Total {
    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let order = record.value.as_record::<Order>().ok_or_else(|| ProcessError::poison("invalid_order", "not an order"))?;
        let store = ctx.store("totals")?;
        let mut total = match store.get(order.customer.as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProcessError::Fatal(format!("totals/{}: {e}", order.customer)))?,
            None => CustomerTotal { customer: order.customer.clone(), orders: 0, total_cents: 0 },
        };
        total.orders += 1;
        total.total_cents = total.total_cents.checked_add(order.amount_cents).ok_or_else(|| ProcessError::poison("invalid_order", "the total overflows"))?;
        let bytes = serde_json::to_vec(&total).map_err(|e| ProcessError::Fatal(e.to_string()))?;
        store.put(order.customer.as_bytes(), &bytes)?;
        ctx.forward(Record::new(order.customer.clone(), Value::record(total), record.timestamp))
    }
}

/// The topology.
pub fn topology() -> Topology {
    Topology::parse(TOPOLOGY, "examples/order-totals/topology.toml").expect("the shipped topology is valid")
}

/// The processors and serdes of this application.
pub fn registry() -> ProcessorRegistry {
    let mut registry = ProcessorRegistry::new();
    registry.register("by-customer", |_| Ok(Box::new(ByCustomer) as Box<dyn Processor>));
    registry.register("total", |_| Ok(Box::new(Total) as Box<dyn Processor>));
    registry.set_serdes(JsonSerdes);
    registry
}

/// Settings: application id `order-totals`, bad records to the DLQ.
pub fn config(bootstrap_servers: &str, state_dir: PathBuf) -> StreamsConfig {
    StreamsConfig {
        deserialization_error_policy: ErrorPolicy::Dlq,
        processing_error_policy: ErrorPolicy::Dlq,
        ..StreamsConfig::new("order-totals", bootstrap_servers, state_dir)
    }
}
