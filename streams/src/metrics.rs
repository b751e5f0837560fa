//! Every metric Sluice records, named once here (Prometheus conventions: base units,
//! `_total` and `_seconds` suffixes, low-cardinality labels) and described by [`describe`].

/// Records processed, by processor node (`processor`); a source node counts the records it reads.
pub const PROCESS_RECORDS_TOTAL: &str = "sluice_process_records_total";
/// Time to process one record in a processor node, children included (`processor`).
pub const PROCESS_LATENCY_SECONDS: &str = "sluice_process_latency_seconds";
/// Time of one commit (deliveries awaited, state written, offsets committed).
pub const COMMIT_LATENCY_SECONDS: &str = "sluice_commit_latency_seconds";
/// Time of each phase of a commit (`phase`): `flush` (the changelog sent and every delivery
/// acknowledged), `send_offsets` (the input offsets added to the transaction), `commit_transaction`
/// (the transaction ended), `state` (the tasks' sled batches written).
pub const COMMIT_PHASE_SECONDS: &str = "sluice_commit_phase_seconds";
/// Time the stream thread waits in one consumer poll.
pub const POLL_LATENCY_SECONDS: &str = "sluice_poll_latency_seconds";
/// Records between the consumer position and the end of a partition (`topic`, `partition`).
pub const RECORDS_LAG: &str = "sluice_records_lag";
/// Changelog records still to read by restoring tasks (`task`).
pub const RESTORE_RECORDS_REMAINING: &str = "sluice_restore_records_remaining";
/// Changelog records restored (`task`).
pub const RESTORE_RECORDS_TOTAL: &str = "sluice_restore_records_total";
/// Records sent to the dead-letter queue (`reason`: the error class).
pub const DLQ_RECORDS_TOTAL: &str = "sluice_dlq_records_total";
/// Records skipped because their event id was seen before (`store`).
pub const DEDUPE_HITS_TOTAL: &str = "sluice_dedupe_hits_total";
/// Entries in a store as of the last commit (`store`, `task`).
pub const STORE_KEYS: &str = "sluice_store_keys";
/// Consumer group rebalances this instance took part in.
pub const REBALANCES_TOTAL: &str = "sluice_rebalances_total";
/// Tasks this instance runs.
pub const ACTIVE_TASKS: &str = "sluice_active_tasks";
/// Standby tasks this instance keeps (`num_standby_replicas`).
pub const STANDBY_TASKS: &str = "sluice_standby_tasks";
/// Changelog records a standby task has not applied yet, by task and store.
pub const STANDBY_RECORDS_LAG: &str = "sluice_standby_records_lag";
/// Retriable failures (registry or broker away) after which the stream thread backed off and
/// redid its work from the last commit (`reason`: `process` or `send`).
pub const TASK_RETRIES_TOTAL: &str = "sluice_task_retries_total";
/// Counter: discovery entries refused (unsigned, forged, or dated in the future).
pub const DISCOVERY_ENTRIES_REFUSED_TOTAL: &str = "sluice_discovery_entries_refused_total";
/// Counter: stream threads replaced, by `reason` (`fenced`).
pub const THREAD_RESTARTS_TOTAL: &str = "sluice_thread_restarts_total";

/// Commands that reached their final outcome in the pipeline (`type`, `outcome`: settled or
/// rejected, `reason`: empty when settled).
pub const COMMANDS_TOTAL: &str = "sluice_commands_total";
/// Time from a command's record timestamp (accepted by the API) to its final outcome (`type`,
/// `outcome`): the end-to-end latency of the pipeline.
pub const COMMAND_LATENCY_SECONDS: &str = "sluice_command_latency_seconds";
/// HTTP requests answered by the ingest API (`method`, `route`, `status`).
pub const HTTP_REQUESTS_TOTAL: &str = "sluice_http_requests_total";
/// Time to answer one HTTP request (`method`, `route`).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "sluice_http_request_duration_seconds";
/// Commands the ingest API accepted and published (`type`).
pub const HTTP_COMMANDS_TOTAL: &str = "sluice_http_commands_total";
/// Problem answers of the ingest API, by route and problem type name (`route`, `problem`,
/// e.g. `invalid-amount`): every refusal, counted once where responses leave.
pub const HTTP_PROBLEMS_TOTAL: &str = "sluice_http_problems_total";

/// Histogram buckets, in seconds, for every latency histogram.
pub const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Records the time since `started` as one `phase` of a commit ([`COMMIT_PHASE_SECONDS`]).
pub(crate) fn record_commit_phase(phase: &'static str, started: std::time::Instant) {
    metrics::histogram!(COMMIT_PHASE_SECONDS, "phase" => phase).record(started.elapsed().as_secs_f64());
}

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(PROCESS_RECORDS_TOTAL, "Records processed, by processor node.");
    describe_histogram!(PROCESS_LATENCY_SECONDS, Unit::Seconds, "Time to process one record in a processor node, children included.");
    describe_histogram!(COMMIT_LATENCY_SECONDS, Unit::Seconds, "Time of one commit: deliveries awaited, state written, offsets committed.");
    describe_histogram!(COMMIT_PHASE_SECONDS, Unit::Seconds, "Time of each phase of a commit: flush, send_offsets, commit_transaction, state.");
    describe_histogram!(POLL_LATENCY_SECONDS, Unit::Seconds, "Time the stream thread waits in one consumer poll.");
    describe_gauge!(RECORDS_LAG, "Records between the consumer position and the end of the partition.");
    describe_gauge!(RESTORE_RECORDS_REMAINING, "Changelog records still to read by restoring tasks.");
    describe_counter!(RESTORE_RECORDS_TOTAL, "Changelog records restored.");
    describe_counter!(DLQ_RECORDS_TOTAL, "Records sent to the dead-letter queue, by error class.");
    describe_counter!(DEDUPE_HITS_TOTAL, "Records skipped because their event id was seen before.");
    describe_gauge!(STORE_KEYS, "Entries in a store as of the last commit.");
    describe_counter!(REBALANCES_TOTAL, "Consumer group rebalances this instance took part in.");
    describe_gauge!(ACTIVE_TASKS, "Tasks this instance runs.");
    describe_gauge!(STANDBY_TASKS, "Standby tasks this instance keeps warm.");
    describe_gauge!(STANDBY_RECORDS_LAG, "Changelog records a standby task has not applied yet.");
    describe_counter!(TASK_RETRIES_TOTAL, "Retriable failures after which the stream thread backed off and retried.");
    describe_counter!(COMMANDS_TOTAL, "Commands that reached their final outcome, by type, outcome and reason.");
    describe_histogram!(COMMAND_LATENCY_SECONDS, Unit::Seconds, "Time from a command's record timestamp to its final outcome.");
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered by the ingest API.");
    describe_histogram!(HTTP_REQUEST_DURATION_SECONDS, Unit::Seconds, "Time to answer one HTTP request.");
    describe_counter!(HTTP_COMMANDS_TOTAL, "Commands the ingest API accepted and published.");
    describe_counter!(HTTP_PROBLEMS_TOTAL, "Problem answers of the ingest API, by route and problem type.");
}
