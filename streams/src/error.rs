//! The engine's error (Kafka Streams' `StreamsException`): why a stream thread, or the test
//! driver, stopped. Every variant names what happened and where.

use crate::processor::ProcessError;
use crate::stream_task::TaskId;

/// Why the runtime (or the test driver) stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// Kafka client failure.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A task could not be built.
    #[error(transparent)]
    Task(#[from] crate::stream_task::TaskError),
    /// State failure.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// Processing failed under the `fail` policy, or with a fatal error.
    #[error("processing {topic}-{partition}@{offset}: {error}")]
    Process {
        /// Input topic.
        topic: String,
        /// Input partition.
        partition: i32,
        /// Input offset.
        offset: i64,
        /// The error.
        error: ProcessError,
    },
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
    /// A wall-clock punctuation failed (it has no input record to dead-letter or skip).
    #[error("punctuating task {task}: {error}")]
    Punctuation {
        /// The task.
        task: TaskId,
        /// The error.
        error: ProcessError,
    },
    /// The consumer hit a fatal error (e.g. fenced by another member with its
    /// `group.instance.id`); this stream thread cannot go on.
    #[error("the consumer failed: {0}")]
    ConsumerFailed(String),
    /// A record could not be produced and retrying cannot help (e.g. a topic that does not
    /// exist, a record the broker refuses).
    #[error("producing to {topic}: {reason}")]
    Send {
        /// The topic.
        topic: String,
        /// The producer's answer.
        reason: String,
    },
    /// This thread's transactional producer was fenced: another producer with its
    /// `transactional.id` started (a newer incarnation of this instance), or a transaction
    /// error Kafka calls fatal. The thread's uncommitted work is discarded and the thread is
    /// replaced (docs/guarantees.md, exactly_once_v2).
    #[error("the transactional producer was fenced or failed fatally: {0}")]
    Fenced(String),
    /// A task's committed offsets could not be read for `task.timeout.ms`. Under
    /// `read_committed` the broker withholds them while a transaction holding offsets for them
    /// is open; one that never ends is a hanging transaction (docs/guarantees.md, a hanging
    /// transaction).
    #[error("task {task}: the committed offsets of {partitions} could not be read within task.timeout.ms ({error}); if this persists, a transaction may hang: look with `kafka-transactions.sh find-hanging`, see docs/guarantees.md, a hanging transaction")]
    TaskTimeout {
        /// The task.
        task: TaskId,
        /// Its input partitions.
        partitions: String,
        /// The last error.
        error: String,
    },
    /// A store's changelog topic is missing: restoring from nothing would silently lose the
    /// store, so the task refuses to start.
    #[error("task {task}: changelog topic `{topic}` of store `{store}` does not exist; restoring from it is impossible (create it with `sluice topics create` only if an empty store is acceptable)")]
    MissingChangelog {
        /// The task.
        task: TaskId,
        /// The store.
        store: String,
        /// The changelog topic.
        topic: String,
    },
    /// Reading a changelog failed.
    #[error("restoring task {task} from {topic}-{partition} at offset {offset}: {reason}")]
    Restore {
        /// The task.
        task: TaskId,
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Where the restore was.
        offset: i64,
        /// What failed.
        reason: String,
    },
    /// Processor kinds missing from the registry, or configs they refuse.
    #[error("{}", .0.join("\n"))]
    Registry(Vec<String>),
    /// A topic the topology does not know (test driver).
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
}
