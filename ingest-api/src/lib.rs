//! `sluice-ingest`: the thin axum HTTP front door — JWT auth, validated commands Avro-encoded
//! through the Schema Registry and produced to the command topics, interactive queries, and
//! OpenAPI. Built in the ingest API issue.
