use std::time::Instant;
use sluice_streams::builtin::register_builtins;
use sluice_streams::{ProcessorRegistry, Record, TestDriverConfig, Topology, TopologyTestDriver};
const TOPOLOGY: &str = "[[topic]]\nname = \"amounts\"\npartitions = 1\n[[topic]]\nname = \"totals\"\npartitions = 1\n[[store]]\nname = \"balances\"\n[[source]]\nname = \"s\"\ntopics = [\"amounts\"]\n[[processor]]\nname = \"sum\"\nkind = \"keyed-sum\"\nparents = [\"s\"]\nstores = [\"balances\"]\n[[sink]]\nname = \"out\"\ntopic = \"totals\"\nparents = [\"sum\"]\n";
fn main() {
    for round in 0..3 {
        let mut registry = ProcessorRegistry::new();
        register_builtins(&mut registry);
        let mut config = TestDriverConfig::new(&format!("probe{round}"));
        config.commit_every_records = 1000;
        let mut driver = TopologyTestDriver::new(Topology::parse(TOPOLOGY, "t").unwrap(), registry, config).unwrap();
        let inputs: Vec<Record> = (0..200_000u64).map(|i| Record::new(format!("account-{:05}", i % 10000), "7", i as i64)).collect();
        let t = Instant::now();
        for r in inputs { driver.pipe_input("amounts", r).unwrap(); }
        driver.commit().unwrap();
        println!("driver {:.0}/s", 200_000.0 / t.elapsed().as_secs_f64());
    }
}
