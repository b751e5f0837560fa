use std::collections::BTreeMap;
use std::time::Instant;
use sluice_state::{ChangelogRecord, SourceOffset, TaskState};
fn main() {
    let n = 100_000u64;
    let committed = BTreeMap::from([(("amounts".to_string(), 0), n as i64)]);
    for round in 0..4 {
        let records: Vec<(i64, ChangelogRecord)> = (0..n).map(|i| (i as i64, ChangelogRecord { store: "balances".into(), key: format!("account-{:06}", i).into_bytes(), value: Some((i as i64).to_be_bytes().to_vec()), source: SourceOffset::new("amounts", 0, i as i64) })).collect();
        let dir = std::env::temp_dir().join(format!("rp-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut state = TaskState::open(&dir, &[("balances", true)]).unwrap();
        let t = Instant::now();
        state.restore(records, &committed).unwrap();
        let restore = n as f64 / t.elapsed().as_secs_f64();
        let dir2 = std::env::temp_dir().join(format!("rq-{round}"));
        let _ = std::fs::remove_dir_all(&dir2);
        let db2 = sled::Config::new().path(&dir2).open().unwrap();
        let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("sbalances\0account-{:06}", i).into_bytes()).collect();
        let t = Instant::now();
        let mut batch = sled::Batch::default();
        for (i, k) in keys.iter().enumerate() { batch.insert(k.as_slice(), &(i as i64 + 1).to_be_bytes()); }
        db2.apply_batch(batch).unwrap();
        let fresh_batch = n as f64 / t.elapsed().as_secs_f64();
        println!("restore {restore:.0}/s, raw sled fresh batch {fresh_batch:.0}/s");
        drop(state); drop(db2);
        let _ = std::fs::remove_dir_all(&dir); let _ = std::fs::remove_dir_all(&dir2);
    }
}
