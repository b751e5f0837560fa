//! The examples of the systems Sluice replaces, run as their READMEs give them (only the port,
//! and the token placeholder, changed) against `sluice dev`, checking the documented status and
//! shape (docs/compatibility.md).

use super::*;

/// Runs `script` in bash with `curl` answering its body, then a line with the HTTP status.
fn curl(script: &str) -> (u16, serde_json::Value) {
    let wrapped = format!("curl() {{ command curl -s -w '\\n%{{http_code}}' \"$@\"; }}\n{script}");
    let output = Command::new("bash").args(["-c", &wrapped]).output().unwrap();
    let stdout = text(&output.stdout);
    let (body, status) = stdout.trim_end().rsplit_once('\n').unwrap_or(("", stdout.trim()));
    (status.parse().unwrap_or(0), serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_string())))
}

/// Seed 004's README, section by section: register (NIN, NHS), log in, profile, the protected
/// NHS resource.
const SEED_004_REGISTER_NIN: &str = r#"curl -X POST http://localhost:8000/api/auth/register \
  -H "Content-Type: application/json" \
  -d '{
    "email": "test.nin@example.com",
    "identifierType": "NIN",
    "identifierValue": "AB123456C",
    "password": "password123",
    "phoneNumber": "+447123456789"
  }'"#;
const SEED_004_REGISTER_NHS: &str = r#"curl -X POST http://localhost:8000/api/auth/register \
  -H "Content-Type: application/json" \
  -d '{
    "email": "test.nhs@example.com",
    "identifierType": "NHS",
    "identifierValue": "NHS123456789",
    "password": "password123"
  }'"#;
const SEED_004_LOGIN: &str = r#"curl -X POST http://localhost:8000/api/auth/login \
  -H "Content-Type: application/json" \
  -d '{
    "email": "test.nin@example.com",
    "password": "password123"
  }'"#;
const SEED_004_PROFILE: &str = r#"TOKEN="ваш_access_token"
curl -X GET http://localhost:8000/api/auth/profile \
  -H "Authorization: Bearer $TOKEN""#;
const SEED_004_NHS: &str = r#"curl -X GET http://localhost:8000/api/nhs/patients \
  -H "Authorization: Bearer $TOKEN" -v"#;

#[test]
fn seed_004_examples_work_unchanged() {
    let p = Pipeline::start("seed-004");
    assert!(api::wait_ready(&p), "sluice dev did not become ready; see {}", p.dir.join("dev.log").display());
    let host = p.api.trim_start_matches("http://").to_string();
    let at = |script: &str| script.replace("localhost:8000", &host);

    // 1. Register (NIN): 201 with the user, once the pipeline has registered them.
    let (status, user) = curl(&at(SEED_004_REGISTER_NIN));
    assert_eq!(status, 201, "{user}");
    assert_eq!((user["email"].as_str(), user["phoneNumber"].as_str(), user["identifierType"].as_str()), (Some("test.nin@example.com"), Some("+447123456789"), Some("NIN")), "{user}");
    assert_eq!(user["id"].as_str(), Some(model::user_id_for_email("test.nin@example.com").as_str()));
    // 2. Register (NHS): its example number is not an NHS number (ten digits with a check
    // digit), which Sluice says plainly; nothing is registered.
    let (status, problem) = curl(&at(SEED_004_REGISTER_NHS));
    assert_eq!((status, problem["type"].as_str()), (422, Some("https://sluice.dev/problems/invalid-identifier")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("NHS number")), "{problem}");
    // 3. Log in: 200 with access_token.
    let (status, tokens) = curl(&at(SEED_004_LOGIN));
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().expect("an access_token").to_string();
    // 4. Profile, with the token where the README says to put it.
    let (status, profile) = curl(&at(SEED_004_PROFILE).replace("ваш_access_token", &token));
    assert_eq!((status, profile["email"].as_str()), (200, Some("test.nin@example.com")), "{profile}");
    // 5. The protected NHS resource: 200 with a valid token (this user has no NHS number).
    let (status, patients) = curl(&format!("TOKEN={token}\n{}", at(SEED_004_NHS)));
    assert_eq!((status, patients.clone()), (200, serde_json::json!({"patients": []})), "{patients}");
    let (status, _) = curl(&at(SEED_004_NHS).replace("$TOKEN", "not-a-token"));
    assert_eq!(status, 401);

    // The identity given at sign-up went through the pipeline: seed 004 sends no name or date
    // of birth, so its claim is refused with the reason, at the URL the 201 gave.
    let url = format!("{}{}", p.api, user["verificationStatusUrl"].as_str().expect("a verification status URL"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let (status, body) = curl(&format!("curl {url} -H 'Authorization: Bearer {token}'"));
        if status == 200 && body["status"] != "accepted" && body["status"] != "pending" {
            break body;
        }
        assert!(Instant::now() < deadline, "no outcome for the claim: {status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((outcome["status"].as_str(), outcome["reason"].as_str()), (Some("rejected"), Some("kyc_required")), "{outcome}");
}
