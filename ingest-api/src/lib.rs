//! `sluice-ingest`: the thin axum HTTP front door of Sluice.
//!
//! - [`queries`]: interactive queries over the processors' stores, served by every `sluice run`
//!   instance at its `application_server` and routed to the instance that owns a key.
//! - [`problem`]: RFC 9457 `application/problem+json` errors.

pub mod problem;
pub mod queries;
