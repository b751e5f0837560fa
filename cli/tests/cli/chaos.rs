//! The chaos test (docs/guarantees.md, the chaos test), at a size that fits CI:
//! scripts/chaos/chaos.py runs three `sluice run` instances (exactly_once_v2, one standby), the
//! registry and the ingest API as processes on a private broker, sends users, deposits,
//! transfers (some to unknown payees, so reversed), refunds and client retries with the same
//! Idempotency-Key through HTTP while instances are killed with SIGKILL and restarted, one
//! state directory is wiped and the broker is restarted; then scripts/chaos/verify.py, an
//! independent verifier in Python (confluent-kafka, read_committed, the Schema Registry and the
//! HTTP API), checks that every command has exactly one final outcome, that money is
//! conserved, that no balance is negative and that each balance is the one it computes.

use super::*;

#[test]
fn kills_a_wiped_state_dir_and_a_broker_restart_lose_and_repeat_nothing_says_an_independent_verifier() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/chaos/chaos.py");
    let output = Command::new(&python)
        .arg(&script)
        .args(["--sluice", env!("CARGO_BIN_EXE_sluice"), "--python", &python, "--transfers", "300", "--kills", "4"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (scripts/test sets SLUICE_PYTHON to .venv's, which has confluent-kafka): {e}"));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "the chaos run or its verifier failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let summary = stdout.lines().rev().find(|l| l.starts_with("{\"commands\"")).unwrap_or_else(|| panic!("no summary line: {stdout}"));
    let figures: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!((figures["kills"].as_i64(), figures["wipes"].as_i64(), figures["broker_restarts"].as_i64()), (Some(4), Some(1), Some(1)), "{summary}");
    assert!(figures["transfers"].as_i64().unwrap() >= 300, "{summary}");
    eprintln!("{stdout}");
}
