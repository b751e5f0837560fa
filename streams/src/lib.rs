//! `sluice-streams`: the Sluice stream-processing engine, named after Kafka Streams: the
//! [`topology::Topology`] read from `topology.toml`, and (as it grows) tasks, the runtime,
//! the commit protocol and the test driver.

pub mod admin;
pub mod config;
pub mod topology;

pub use topology::{Topology, TopologyError};
