//! The [`Processor`] API (Kafka Streams' `Processor`): one required method, defaulted hooks.

use std::fmt;

use sluice_state::StateError;

use crate::record::Record;
use crate::stream_task::ProcessorContext;

/// A node of the topology that processes records. Only `process` is required; `init` (to
/// schedule punctuations), `punctuate` and `close` have defaults. Processors must be
/// deterministic (docs/guarantees.md, Determinism): output depends only on the input record and the stores.
pub trait Processor: Send {
    /// Called once before the first record, e.g. to [`ProcessorContext::schedule`].
    fn init(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let _ = ctx;
        Ok(())
    }

    /// Processes one record: read and write stores, forward records to children and sinks.
    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError>;

    /// Called when a schedule made in `init` is due.
    fn punctuate(&mut self, punctuation: Punctuation, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        let _ = (punctuation, ctx);
        Ok(())
    }

    /// Called when the task closes.
    fn close(&mut self) {}
}

/// The simplest processor shape: a function of the record and the context.
pub struct FnProcessor<F>(pub F);

impl<F> Processor for FnProcessor<F>
where
    F: FnMut(Record, &mut ProcessorContext<'_>) -> Result<(), ProcessError> + Send,
{
    fn process(&mut self, record: Record, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        (self.0)(record, ctx)
    }
}

/// What drives a punctuation (Kafka Streams' `PunctuationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// Advanced by record timestamps.
    StreamTime,
    /// Advanced by the wall clock (the runtime's, or the test driver's).
    WallClockTime,
}

/// A due schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punctuation {
    /// Which schedule (the value [`ProcessorContext::schedule`] returned).
    pub schedule: usize,
    /// Stream time or wall clock.
    pub kind: PunctuationType,
    /// The time it fired at, milliseconds.
    pub timestamp: i64,
}

/// What the runtime does with a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The record is at fault: apply the exception handler (dead-letter, log, or fail).
    DeadLetter,
    /// A transient failure: re-process the batch from the last commit.
    Retry,
    /// A bug or broken state: stop the task.
    Fail,
}

/// Why processing a record failed; the kind, not the message, decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record cannot be processed (a poison pill).
    #[error("{class}: {message}")]
    Poison {
        /// Machine-readable class, e.g. `deserialization`, `invalid_record`.
        class: String,
        /// Human-readable message.
        message: String,
    },
    /// A transient failure; retrying may succeed.
    #[error("retriable: {0}")]
    Retriable(String),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A bug or misconfiguration.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ProcessError {
    /// A poison pill of `class`.
    pub fn poison(class: impl Into<String>, message: impl fmt::Display) -> ProcessError {
        ProcessError::Poison { class: class.into(), message: message.to_string() }
    }

    /// What the runtime does about it.
    pub fn action(&self) -> ErrorAction {
        match self {
            ProcessError::Poison { .. } => ErrorAction::DeadLetter,
            ProcessError::Retriable(_) => ErrorAction::Retry,
            ProcessError::State(_) | ProcessError::Fatal(_) => ErrorAction::Fail,
        }
    }

    /// The machine-readable class used in `sluice.error.class` headers.
    pub fn class(&self) -> &str {
        match self {
            ProcessError::Poison { class, .. } => class,
            ProcessError::Retriable(_) => "retriable",
            ProcessError::State(_) => "state",
            ProcessError::Fatal(_) => "fatal",
        }
    }
}
