//! The README's kcat workflow, run as written against `sluice dev`: list topics, produce JSON
//! commands with a JWT header to the `*.json` topics, consume the outcomes, and consume the DLQ
//! with its headers.

use super::*;

/// The first ```sh block after `heading` in the README.
fn readme_block(readme: &str, heading: &str) -> String {
    let from = readme.find(heading).unwrap_or_else(|| panic!("README has no `{heading}`"));
    let start = readme[from..].find("```sh\n").unwrap() + from + "```sh\n".len();
    let end = readme[start..].find("```").unwrap() + start;
    readme[start..end].to_string()
}

fn bash(script: &str) -> (bool, String) {
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("SLUICE__JWT_SECRET", E2E_SECRET)
        .output()
        .unwrap();
    (output.status.success(), format!("{}{}", text(&output.stdout), text(&output.stderr)))
}

#[test]
fn the_readme_kcat_workflow_works_against_the_dev_stack() {
    // `sluice dev` on its own broker, as the README runs it: SASL/SCRAM with ACLs, kcat's
    // settings written beside the state directory (`.sluice/` there).
    let p = Pipeline::start_on_own_broker("kcat", "sluice");
    // As the README says: once the stack is ready.
    let ready = api::wait_ready(&p);
    assert!(ready, "sluice dev did not become ready; see {}", p.dir.join("dev.log").display());
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let broker_line = format!("B={}", p.servers);
    let dev_dir = format!("{}/", p.dir.display());
    let produce = readme_block(&readme, "### Commands with kcat").replace("B=127.0.0.1:9092", &broker_line).replace(".sluice/", &dev_dir);
    let consume = readme_block(&readme, "Outcomes and state:").replace(".sluice/", &dev_dir);
    let settings = produce.lines().next().unwrap().to_string();
    assert!(settings.starts_with(&broker_line) && settings.contains("kcat.conf"), "the workflow names its broker and kcat's settings in its first line: {settings}");

    let (ok, output) = bash(&produce);
    assert!(ok, "the produce steps failed:\n{output}");
    for topic in ["auth.commands.json", "payments.commands.json"] {
        assert!(output.contains(&format!("topic \"{topic}\"")), "kcat -L lists {topic}:\n{output}");
    }
    // The dead letters keep the original headers (bearer tokens among them): operators only.
    assert!(!output.contains("topic \"sluice.dlq\""), "kcat users do not see the DLQ:\n{output}");

    // The outcomes arrive as the pipeline processes the commands.
    let deadline = Instant::now() + Duration::from_secs(90);
    let output = loop {
        let (ok, output) = bash(&format!("{settings}\n{consume}"));
        assert!(ok, "the consume steps failed:\n{output}");
        let settled = output.lines().any(|l| l.contains(r#""command_id":"t-1""#) && l.contains(r#""status":"settled""#));
        if settled && output.contains("sluice.error.class=invalid_command") {
            break output;
        }
        assert!(Instant::now() < deadline, "no outcome for t-1 or no dead letter yet:\n{output}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let alice = model::user_id_for_email("alice@example.com");
    let bob = model::user_id_for_email("bob@example.com");
    let balance = |user: &str| {
        output.lines().rfind(|l| l.starts_with(user) && l.contains(r#""balance""#)).map(|l| serde_json::from_str::<Account>(&l[user.len() + 1..]).unwrap().balance.to_string())
    };
    assert_eq!((balance(&alice).as_deref(), balance(&bob).as_deref()), (Some("210.00"), Some("40.00")), "{output}");
    assert!(output.contains("more than 2 decimal places"), "the DLQ header says why:\n{output}");
}
