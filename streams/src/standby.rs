//! Standby replicas (Kafka Streams `num.standby.replicas`): where a task's warm copies live
//! (docs/guarantees.md, standby replicas).
//!
//! Kafka Streams' own assignor places standbys and later moves an active task to the
//! instance holding its warm copy. librdkafka offers no pluggable assignor, so Sluice keeps the
//! group's `range` assignment and places each standby where that assignor will move the task
//! when its owner leaves: the group is read (`DescribeGroups`: members and their current
//! assignments) every [`GROUP_REFRESH`], and for each task the owner is removed from the
//! sorted member list and the range assignment of the survivors is computed. The first standby
//! goes to the member that would then receive the task; further standbys to the members
//! after it. A member is a stream thread (its consumer), so a standby is never on the thread
//! that runs the task, and with several stream threads per instance it may be on another
//! thread of the same instance.
//!
//! Every instance computes the same placement from the same group description, with nothing
//! exchanged but what the broker already holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::stream_task::TaskId;

/// How often the group's members and assignments are read.
pub const GROUP_REFRESH: Duration = Duration::from_secs(2);

/// One member of the consumer group, as the group coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The coordinator's member id.
    pub member_id: String,
    /// Its `client.id`: the stream thread's name (its `group.instance.id` under static
    /// membership).
    pub client_id: String,
    /// Its assigned partitions, by topic.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A sub-topology as the placement sees it: its first input topic (which says who runs a
/// task) and its partition count.
#[derive(Debug, Clone)]
pub struct SubtopologyInputs {
    /// The sub-topology id.
    pub id: usize,
    /// One of its input topics (broker name).
    pub topic: String,
    /// Its partitions (tasks).
    pub partitions: i32,
}

/// Decodes a member's assignment (Kafka's `ConsumerProtocolAssignment`: version, then topics
/// with their partitions, then user data). `None` when the bytes are not one.
pub fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    let mut input = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        input = rest;
        Some(head)
    };
    let _version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut assignment = BTreeMap::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let topic = String::from_utf8(take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut partitions = Vec::with_capacity(usize::try_from(count).ok()?.min(1024));
        for _ in 0..count {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
        assignment.insert(topic, partitions);
    }
    Some(assignment)
}

/// The index of the member the `range` assignor gives `partition` of a topic with
/// `partitions` partitions, among `members` sorted members: each gets `partitions / members`
/// consecutive partitions, the first `partitions % members` one more.
pub fn range_owner(members: usize, partitions: i32, partition: i32) -> usize {
    let (members_i, partition) = (members as i32, partition);
    let per = partitions / members_i;
    let extra = partitions % members_i;
    let index = if partition < extra * (per + 1) { partition / (per + 1) } else { extra + (partition - extra * (per + 1)) / per };
    index as usize
}

/// The tasks whose standbys `me` (a `client.id`) should keep, given the group's members,
/// with `replicas` standbys per task. Members are sorted as librdkafka's range assignor
/// sorts them: by `group.instance.id` under static membership (here the `client.id`), by
/// member id otherwise. Tasks with no running owner (a rebalance in progress) get none.
pub fn standby_tasks(me: &str, members: &[GroupMember], static_membership: bool, subtopologies: &[SubtopologyInputs], replicas: usize) -> BTreeSet<TaskId> {
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| if static_membership { a.client_id.cmp(&b.client_id) } else { a.member_id.cmp(&b.member_id) });
    let mut mine = BTreeSet::new();
    if replicas == 0 || !sorted.iter().any(|m| m.client_id == me) {
        return mine;
    }
    for sub in subtopologies {
        for partition in 0..sub.partitions {
            let Some(owner) = sorted.iter().position(|m| m.assignment.get(&sub.topic).is_some_and(|p| p.contains(&partition))) else { continue };
            let survivors: Vec<&GroupMember> = sorted.iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, m)| *m).collect();
            if survivors.is_empty() {
                continue;
            }
            let first = range_owner(survivors.len(), sub.partitions, partition);
            if (0..replicas.min(survivors.len())).any(|k| survivors[(first + k) % survivors.len()].client_id == me) {
                mine.insert(TaskId { subtopology: sub.id, partition });
            }
        }
    }
    mine
}

/// The tasks the group's description assigns to `me` (a `client.id`). Its standbys of these
/// are about to be promoted: the coordinator may describe the new assignment before the
/// stream thread receives it, and a standby closed in between would be restored again.
pub fn assigned_tasks(me: &str, members: &[GroupMember], subtopologies: &[SubtopologyInputs]) -> BTreeSet<TaskId> {
    members
        .iter()
        .filter(|m| m.client_id == me)
        .flat_map(|m| subtopologies.iter().flat_map(move |sub| m.assignment.get(&sub.topic).into_iter().flatten().map(|&partition| TaskId { subtopology: sub.id, partition })))
        .collect()
}

/// The group as last described: its members, and a generation counter that changes with
/// each new description.
#[derive(Debug, Default)]
pub struct GroupView {
    /// Bumped when `members` changes.
    pub version: u64,
    /// The members with their assignments (empty while the group rebalances).
    pub members: Vec<GroupMember>,
}

/// Reads the group's description every [`GROUP_REFRESH`] into a shared [`GroupView`], on a
/// thread of its own (the stream threads never wait for it), until `stop`.
pub fn watch_group(bootstrap_servers: &str, group: &str, stop: Arc<AtomicBool>) -> Result<(Arc<Mutex<GroupView>>, std::thread::JoinHandle<()>), rdkafka::error::KafkaError> {
    let client: BaseConsumer = crate::kafka_client::client_config(bootstrap_servers).set("group.id", format!("{group}-describe")).create()?;
    let view = Arc::new(Mutex::new(GroupView::default()));
    let shared = Arc::clone(&view);
    let group = group.to_string();
    let handle = std::thread::Builder::new()
        .name("sluice-group-watch".to_string())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match client.fetch_group_list(Some(&group), Duration::from_secs(5)) {
                    Ok(list) => {
                        let members: Vec<GroupMember> = list
                            .groups()
                            .iter()
                            .filter(|g| g.name() == group && g.state() == "Stable")
                            .flat_map(|g| g.members())
                            .filter_map(|m| {
                                let assignment = decode_assignment(m.assignment()?)?;
                                Some(GroupMember { member_id: m.id().to_string(), client_id: m.client_id().to_string(), assignment })
                            })
                            .collect();
                        let mut view = shared.lock().expect("group view lock");
                        // A rebalancing group describes no assignments: keep the last view.
                        if !members.is_empty() && members != view.members {
                            view.members = members;
                            view.version += 1;
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot describe the consumer group; standby placement keeps its last view"),
                }
                let until = std::time::Instant::now() + GROUP_REFRESH;
                while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .expect("spawning the group watcher");
    Ok((view, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, client: &str, topic: &str, partitions: &[i32]) -> GroupMember {
        GroupMember { member_id: id.to_string(), client_id: client.to_string(), assignment: BTreeMap::from([(topic.to_string(), partitions.to_vec())]) }
    }

    #[test]
    fn range_owner_gives_the_first_members_one_partition_more() {
        // 8 partitions over 3 members: 3, 3, 2.
        let owners: Vec<usize> = (0..8).map(|p| range_owner(3, 8, p)).collect();
        assert_eq!(owners, vec![0, 0, 0, 1, 1, 1, 2, 2]);
        // Fewer partitions than members: one each, the last members none.
        assert_eq!((0..2).map(|p| range_owner(3, 2, p)).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!((0..4).map(|p| range_owner(1, 4, p)).collect::<Vec<_>>(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn an_assignment_is_decoded_from_the_consumer_protocol_bytes() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 3];
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(decode_assignment(&bytes), Some(BTreeMap::from([("abc".to_string(), vec![4, 5])])));
        assert_eq!(decode_assignment(&bytes[..9]), None, "truncated");
    }

    #[test]
    fn a_standby_is_placed_where_the_range_assignor_moves_the_task() {
        let subs = [SubtopologyInputs { id: 0, topic: "in".to_string(), partitions: 6 }];
        // Three members, sorted by member id: m1 runs 0-1, m2 runs 2-3, m3 runs 4-5.
        let members = vec![member("m2", "b", "in", &[2, 3]), member("m1", "a", "in", &[0, 1]), member("m3", "c", "in", &[4, 5])];
        // Without a: b and c share 0-5 as 0-2 and 3-5, so a's tasks 0 and 1 go to b.
        let task = |p| TaskId { subtopology: 0, partition: p };
        assert_eq!(standby_tasks("b", &members, false, &subs, 1), BTreeSet::from([task(0), task(1), task(4), task(5)]));
        assert_eq!(standby_tasks("a", &members, false, &subs, 1), BTreeSet::from([task(2)]));
        assert_eq!(standby_tasks("c", &members, false, &subs, 1), BTreeSet::from([task(3)]));
        // Two standbys: every task on both other members.
        assert_eq!(standby_tasks("c", &members, false, &subs, 2), BTreeSet::from([task(0), task(1), task(2), task(3)]));
        assert!(standby_tasks("a", &members, false, &subs, 0).is_empty());
        // Static membership sorts by client id: the same here.
        assert_eq!(standby_tasks("b", &members, true, &subs, 1), standby_tasks("b", &members, false, &subs, 1));
        // Alone in the group: nowhere to place a standby.
        assert!(standby_tasks("a", &members[1..2], false, &subs, 1).is_empty());
        // What the description assigns to each member.
        assert_eq!(assigned_tasks("b", &members, &subs), BTreeSet::from([task(2), task(3)]));
        assert!(assigned_tasks("d", &members, &subs).is_empty());
    }
}
