//! [`PartitionGroup`] (Kafka Streams' name): a task's fetched records, one queue per input
//! partition, and the choice of which record the task processes next (docs/architecture.md,
//! timestamp synchronization).
//!
//! The next record is the head with the lowest timestamp among the non-empty queues, so a
//! backlog built on several topics while the processors were down is processed in the order
//! it was produced, not topic by topic. A task whose queue for some partition is empty waits
//! (Kafka Streams' `max.task.idle.ms` semantics):
//! - while that partition has records on the broker not fetched yet (the caller says so);
//! - then, when it is caught up, another `max.task.idle.ms` for new records to arrive (0, the
//!   default, does not wait; -1 never waits, not even for records already on the broker).

use std::collections::VecDeque;
use std::sync::Arc;

/// A fetched record as the partition group sees it.
pub trait StampedRecord {
    /// Its offset in its partition.
    fn offset(&self) -> i64;
    /// Its timestamp (milliseconds since the epoch).
    fn timestamp(&self) -> i64;
    /// Its key bytes.
    fn key(&self) -> Option<&[u8]>;
}

struct RecordQueue<R> {
    topic: Arc<str>,
    records: VecDeque<R>,
    /// When (by the caller's clock) the task found this queue empty and caught up while
    /// others had records; the idle wait runs from there.
    idle_since: Option<i64>,
}

/// One task's input queues.
pub struct PartitionGroup<R> {
    partition: i32,
    queues: Vec<RecordQueue<R>>,
    max_task_idle_ms: i64,
}

/// Whether an empty input partition has more records on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchState {
    /// Records are on the broker that the consumer has not delivered yet.
    Lagging,
    /// The consumer has everything the broker has (or cannot tell and should not wait).
    CaughtUp,
}

impl<R: StampedRecord> PartitionGroup<R> {
    /// Queues for `topics` (in topology order, which breaks timestamp ties) on `partition`.
    pub fn new<'a>(topics: impl IntoIterator<Item = &'a Arc<str>>, partition: i32, max_task_idle_ms: i64) -> PartitionGroup<R> {
        let queues = topics.into_iter().map(|topic| RecordQueue { topic: Arc::clone(topic), records: VecDeque::new(), idle_since: None }).collect();
        PartitionGroup { partition, queues, max_task_idle_ms }
    }

    /// The partition of every queue.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Appends a fetched record to its topic's queue; returns the queue's length, or `None`
    /// for a topic this task does not read.
    pub fn add(&mut self, topic: &str, record: R) -> Option<usize> {
        let queue = self.queues.iter_mut().find(|q| &*q.topic == topic)?;
        queue.records.push_back(record);
        queue.idle_since = None;
        Some(queue.records.len())
    }

    /// Records buffered for `topic`.
    pub fn len(&self, topic: &str) -> usize {
        self.queues.iter().find(|q| &*q.topic == topic).map_or(0, |q| q.records.len())
    }

    /// Records buffered in all queues.
    pub fn buffered(&self) -> usize {
        self.queues.iter().map(|q| q.records.len()).sum()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.records.is_empty())
    }

    /// The offset after the last buffered record of `topic`, if any is buffered.
    pub fn next_offset(&self, topic: &str) -> Option<i64> {
        self.queues.iter().find(|q| &*q.topic == topic).and_then(|q| q.records.back()).map(|r| r.offset() + 1)
    }

    /// Drops every buffered record (a rewind refetches them).
    pub fn clear(&mut self) {
        for queue in &mut self.queues {
            queue.records.clear();
            queue.idle_since = None;
        }
    }

    /// Drops the buffered records of `topic` (its partition is being refetched).
    pub fn clear_topic(&mut self, topic: &str) {
        if let Some(queue) = self.queues.iter_mut().find(|q| &*q.topic == topic) {
            queue.records.clear();
        }
    }

    /// The queue whose head the task processes next, or `None` while it must wait (see the
    /// module docs). `now` is the caller's clock in milliseconds; `fetch_state` tells, for an
    /// empty queue's topic, whether the broker has more.
    pub fn next(&mut self, now: i64, mut fetch_state: impl FnMut(&str) -> FetchState) -> Option<usize> {
        let mut best: Option<(i64, usize)> = None;
        let mut empty = false;
        for (i, queue) in self.queues.iter().enumerate() {
            match queue.records.front() {
                Some(head) => {
                    if best.is_none_or(|(t, _)| head.timestamp() < t) {
                        best = Some((head.timestamp(), i));
                    }
                }
                None => empty = true,
            }
        }
        let (_, chosen) = best?;
        if empty && self.max_task_idle_ms >= 0 {
            for queue in &mut self.queues {
                if !queue.records.is_empty() {
                    continue;
                }
                if fetch_state(&queue.topic) == FetchState::Lagging {
                    queue.idle_since = None;
                    return None;
                }
                let since = *queue.idle_since.get_or_insert(now);
                if now - since < self.max_task_idle_ms {
                    return None;
                }
            }
        }
        Some(chosen)
    }

    /// The head of queue `queue` with its topic.
    pub fn peek(&self, queue: usize) -> Option<(&Arc<str>, &R)> {
        let q = self.queues.get(queue)?;
        q.records.front().map(|r| (&q.topic, r))
    }

    /// Puts a record taken by [`PartitionGroup::pop`] back at the head of `topic`'s queue (to
    /// retry it).
    pub fn push_front(&mut self, topic: &str, record: R) {
        if let Some(queue) = self.queues.iter_mut().find(|q| &*q.topic == topic) {
            queue.records.push_front(record);
        }
    }

    /// Removes the head of queue `queue`.
    pub fn pop(&mut self, queue: usize) -> Option<R> {
        self.queues.get_mut(queue)?.records.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R(i64, i64);

    impl StampedRecord for R {
        fn offset(&self) -> i64 {
            self.0
        }
        fn timestamp(&self) -> i64 {
            self.1
        }
        fn key(&self) -> Option<&[u8]> {
            None
        }
    }

    fn group(idle: i64) -> PartitionGroup<R> {
        let topics: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        PartitionGroup::new(&topics, 0, idle)
    }

    #[test]
    fn the_lowest_head_timestamp_goes_first_and_ties_go_to_topology_order() {
        let mut g = group(0);
        g.add("a", R(0, 30));
        g.add("a", R(1, 5));
        g.add("b", R(0, 10));
        g.add("b", R(1, 30));
        let mut order = Vec::new();
        while let Some(q) = g.next(0, |_| FetchState::CaughtUp) {
            let (topic, r) = g.peek(q).unwrap();
            order.push((topic.to_string(), r.offset()));
            g.pop(q);
        }
        // Offsets stay in order within a partition, whatever their timestamps.
        assert_eq!(order, [("b", 0), ("a", 0), ("a", 1), ("b", 1)].map(|(t, o)| (t.to_string(), o)));
    }

    #[test]
    fn an_empty_partition_with_records_on_the_broker_holds_the_task() {
        let mut g = group(0);
        g.add("a", R(0, 10));
        assert_eq!(g.next(0, |t| if t == "b" { FetchState::Lagging } else { FetchState::CaughtUp }), None);
        assert_eq!(g.next(0, |_| FetchState::CaughtUp), Some(0), "caught up and max.task.idle.ms = 0: go on");
        assert_eq!(group(-1).next(0, |_| FetchState::Lagging), None, "nothing buffered: nothing to do");
        let mut never_waits = group(-1);
        never_waits.add("a", R(0, 10));
        assert_eq!(never_waits.next(0, |_| FetchState::Lagging), Some(0), "-1 never waits");
    }

    #[test]
    fn max_task_idle_ms_waits_for_a_caught_up_empty_partition() {
        let mut g = group(100);
        g.add("a", R(0, 10));
        assert_eq!(g.next(1_000, |_| FetchState::CaughtUp), None);
        assert_eq!(g.next(1_099, |_| FetchState::CaughtUp), None);
        assert_eq!(g.next(1_100, |_| FetchState::CaughtUp), Some(0));
        g.add("b", R(0, 5));
        assert_eq!(g.next(1_100, |_| FetchState::CaughtUp), Some(1), "a record arrived: the wait is over");
    }
}
