//! Changelog records: what each store write replicates to `<application.id>-<store>-changelog`.

use std::sync::Arc;

/// Header carrying the input topic that caused a changelog record.
pub const HEADER_SOURCE_TOPIC: &str = "sluice.source.topic";
/// Header carrying the input partition (decimal text).
pub const HEADER_SOURCE_PARTITION: &str = "sluice.source.partition";
/// Header carrying the input offset (decimal text).
pub const HEADER_SOURCE_OFFSET: &str = "sluice.source.offset";

/// The input record a write came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceOffset {
    /// Input topic.
    pub topic: Arc<str>,
    /// Input partition.
    pub partition: i32,
    /// Offset of the input record.
    pub offset: i64,
}

impl SourceOffset {
    /// A source position.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> SourceOffset {
        SourceOffset { topic: topic.into(), partition, offset }
    }

    /// The stamp of a write no input record caused (a punctuation): restores always apply it.
    pub fn none() -> SourceOffset {
        SourceOffset::new("", -1, -1)
    }

    /// The three `sluice.source.*` headers of this position.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (HEADER_SOURCE_TOPIC, self.topic.to_string()),
            (HEADER_SOURCE_PARTITION, self.partition.to_string()),
            (HEADER_SOURCE_OFFSET, self.offset.to_string()),
        ]
    }

    /// Reads a position back from `sluice.source.*` headers.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<SourceOffset> {
        let (mut topic, mut partition, mut offset) = (None, None, None);
        for (name, value) in headers {
            let text = std::str::from_utf8(value).ok();
            match name {
                HEADER_SOURCE_TOPIC => topic = text.map(Arc::<str>::from),
                HEADER_SOURCE_PARTITION => partition = text.and_then(|t| t.parse().ok()),
                HEADER_SOURCE_OFFSET => offset = text.and_then(|t| t.parse().ok()),
                _ => {}
            }
        }
        Some(SourceOffset { topic: topic?, partition: partition?, offset: offset? })
    }
}

/// One store write as replicated to the changelog: a value, or a tombstone (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    /// The store written.
    pub store: Arc<str>,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` is a delete (tombstone).
    pub value: Option<Vec<u8>>,
    /// The input record whose processing made this write.
    pub source: SourceOffset,
}
