//! `sluice-state`: state stores for Sluice processors (docs/architecture.md, docs/guarantees.md).
//!
//! - [`KeyValueStore`]: the store API processors see (get, put, delete, range, prefix scan,
//!   approximate count), implemented by [`SledStore`].
//! - [`TaskState`]: the state of one task: its stores in one sled tree, the writes of the
//!   current commit buffered (read-your-writes) and applied atomically together with the
//!   task's [`Checkpoint`] (input offsets, changelog offsets) in one sled batch.
//! - Every write yields a [`ChangelogRecord`] stamped with the input topic-partition-offset
//!   that caused it; [`TaskState::restore`] rebuilds state from such records, skipping those
//!   stamped beyond the committed input offset.
//! - [`DedupeStore`]: processed event ids with a retention, on top of any [`KeyValueStore`].
//!
//! A state directory that cannot be opened (corrupt, other format version) is wiped and the
//! task is marked for restore; it never crash-loops.

mod changelog;
mod dedupe;
mod reader;
mod store;
mod task_state;

pub use changelog::{ChangelogRecord, SourceOffset, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC};
pub use dedupe::DedupeStore;
pub use reader::{Entry, StoreReader};
pub use store::{KeyValueStore, KvIter, SledStore};
pub use task_state::{Checkpoint, RestoreStats, TaskState, RESTORE_BATCH_SIZE};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sled failed (I/O or corruption).
    #[error("state store I/O: {0}")]
    Sled(#[from] sled::Error),
    /// The state directory could not be prepared.
    #[error("state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process has the state directory open.
    #[error("state directory {0} is in use by another process (two instances sharing a state_dir?)")]
    Locked(std::path::PathBuf),
    /// A store name the task does not have.
    #[error("no store named `{0}` in this task")]
    UnknownStore(String),
    /// A store name that cannot be used (empty or containing NUL).
    #[error("invalid store name `{0}`: must be non-empty and contain no NUL byte")]
    InvalidStoreName(String),
    /// Stored bytes that do not have the expected layout.
    #[error("corrupt state entry: {0}")]
    Corrupt(String),
}
