//! Kafka's default partitioner (murmur2 of the key bytes), as the Java client and Kafka Streams
//! use; Sluice's producers use librdkafka's `murmur2_random`, which agrees for keyed records.

/// Partition of `key` among `partitions`, as Kafka's `DefaultPartitioner` computes it.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Checks that a keyed record arrived on the partition Kafka's partitioner gives its key; the
/// error says how to fix the producer. A task sees only its partition's keys, so a record on
/// another partition would be judged against state it does not hold.
pub fn check_partition(key: &[u8], partition: i32, partitions: i32) -> Result<(), String> {
    let expected = partition_for_key(key, partitions);
    if expected == partition {
        return Ok(());
    }
    Err(format!(
        "key {:?} belongs on partition {expected} of {partitions} (murmur2, Kafka's default partitioner) but arrived on partition {partition}: \
         produce with Kafka's partitioner (librdkafka clients such as kcat default to CRC32; set partitioner=murmur2_random)",
        String::from_utf8_lossy(key)
    ))
}

/// Kafka's murmur2 (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2 (as signed ints in Java).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn a_record_on_another_partition_than_its_key_hashes_to_is_refused() {
        let key = b"alice";
        let home = partition_for_key(key, 4);
        assert_eq!(check_partition(key, home, 4), Ok(()));
        let error = check_partition(key, (home + 1) % 4, 4).unwrap_err();
        assert!(error.contains(&format!("belongs on partition {home} of 4")), "{error}");
        assert!(error.contains("partitioner=murmur2_random"), "{error}");
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for key in ["a", "user-1", "NIN:QQ123456C", ""] {
            let p = partition_for_key(key.as_bytes(), 4);
            assert!((0..4).contains(&p));
            assert_eq!(p, partition_for_key(key.as_bytes(), 4));
        }
    }
}
