//! Engine benchmarks, in records per second (`cargo bench -p sluice-benches`):
//!
//! - `sled/insert`, `sled/insert-unique-keys`: raw sled inserts of the same keys and values,
//!   the ceiling for any sled store.
//! - `driver/keyed-sum/*`: the balance aggregation (get + put on a sled store, one output and
//!   one changelog record per input) through the TopologyTestDriver, committing every 1,000 or
//!   40,000 records (the latter is what a 100 ms commit interval holds at this rate).
//! - `restore/changelog`: restoring a store from changelog records into sled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_state::{ChangelogRecord, SourceOffset, TaskState};
use sluice_streams::builtin::register_builtins;
use sluice_streams::{ProcessorRegistry, Record, TestDriverConfig, Topology, TopologyTestDriver};

// The allocator a deployment would use (glibc malloc spends a quarter of the driver's time
// in malloc/free here); every group of this run uses it, raw sled included.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 100_000;
const ACCOUNTS: u64 = 10_000;

const TOPOLOGY: &str = r#"
[[topic]]
name = "amounts"
partitions = 1

[[topic]]
name = "totals"
partitions = 1

[[store]]
name = "balances"

[[source]]
name = "amounts-source"
topics = ["amounts"]

[[processor]]
name = "sum"
kind = "keyed-sum"
parents = ["amounts-source"]
stores = ["balances"]

[[sink]]
name = "totals-sink"
topic = "totals"
parents = ["sum"]
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Removes a scratch directory when dropped (after criterion's timing).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(i: u64) -> String {
    format!("account-{:05}", i % ACCOUNTS)
}

fn sled_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("sled");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    // 10,000 keys updated 10 times each (as the driver's workload), and 100,000 new keys into
    // a fresh tree (as a restore of a compacted changelog).
    for (name, keys) in [("insert", ACCOUNTS), ("insert-unique-keys", RECORDS)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = Scratch(scratch("sled"));
                    let db = sled::Config::new().path(&dir.0).open().unwrap();
                    let start = Instant::now();
                    for i in 0..RECORDS {
                        db.insert(format!("account-{:06}", i % keys).as_bytes(), &(i as i64).to_be_bytes()).unwrap();
                    }
                    elapsed += start.elapsed();
                    drop(db);
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn driver_keyed_sum(c: &mut Criterion) {
    let inputs: Vec<Record> = (0..RECORDS).map(|i| Record::new(key(i), "7", i as i64)).collect();
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    // 40,000 records is what the default commit.interval.ms (100) holds at ~400k records/s;
    // 1,000 shows the cost of committing 40 times more often.
    for commit_every in [1_000usize, 40_000] {
        group.bench_function(format!("keyed-sum/commit-every-{commit_every}"), |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let mut registry = ProcessorRegistry::new();
                    register_builtins(&mut registry);
                    let mut config = TestDriverConfig::new("bench");
                    config.commit_every_records = commit_every;
                    let topology = Topology::parse(TOPOLOGY, "bench.toml").unwrap();
                    let mut driver = TopologyTestDriver::new(topology, registry, config).unwrap();
                    let batch = inputs.clone();
                    let start = Instant::now();
                    for record in batch {
                        driver.pipe_input("amounts", record).unwrap();
                    }
                    driver.commit().unwrap();
                    elapsed += start.elapsed();
                    drop(driver);
                }
                elapsed
            })
        });
    }
    group.finish();
}

/// Changelog records over `keys` distinct keys (updates of one key in offset order).
fn changelog(keys: u64) -> Vec<(i64, ChangelogRecord)> {
    (0..RECORDS)
        .map(|i| {
            let record = ChangelogRecord {
                store: "balances".into(),
                key: format!("account-{:06}", i % keys).into_bytes(),
                value: Some((i as i64).to_be_bytes().to_vec()),
                source: SourceOffset::new("amounts", 0, i as i64),
            };
            (i as i64, record)
        })
        .collect()
}

fn restore(c: &mut Criterion) {
    let committed = BTreeMap::from([(("amounts".to_string(), 0), RECORDS as i64)]);
    let mut group = c.benchmark_group("restore");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    // Unique keys: a fully compacted changelog. 10 updates per key: compaction behind.
    for (name, keys) in [("changelog-unique-keys", RECORDS), ("changelog-10-updates-per-key", ACCOUNTS)] {
        let records = changelog(keys);
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = Scratch(scratch("restore"));
                    let mut state = TaskState::open(&dir.0, &[("balances", true)]).unwrap();
                    let batch = records.clone();
                    let start = Instant::now();
                    let stats = state.restore(batch, &committed).unwrap();
                    elapsed += start.elapsed();
                    assert_eq!(stats.applied, RECORDS);
                    drop(state);
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sled_insert, driver_keyed_sum, restore);
criterion_main!(benches);
