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

/// Seed 002's README examples (the gateway on 8080): register, log in, pay 5000 RUB.
const SEED_002_REGISTER: &str = r#"curl -X POST http://localhost:8080/auth/register \
  -H "Content-Type: application/json" \
  -d '{
    "username": "user1",
    "email": "user1@example.com",
    "password": "password123",
    "first_name": "Иван",
    "last_name": "Иванов"
  }'"#;
const SEED_002_LOGIN: &str = r#"curl -X POST http://localhost:8080/auth/login \
  -H "Content-Type: application/json" \
  -d '{
    "email": "user1@example.com",
    "password": "password123"
  }'"#;
const SEED_002_PAYMENT: &str = r#"curl -X POST http://localhost:8080/payments \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer YOUR_ACCESS_TOKEN" \
  -d '{
    "amount": 5000,
    "currency": "RUB",
    "description": "Оплата участия в конференции",
    "client_id": 1,
    "event_id": 1,
    "payment_method_id": 1
  }'"#;
const SEED_002_HEALTH: &str = "curl http://localhost:8080/user-service/health";

/// Seeds 000, 001 and 002 on their compatibility routes: seed 002's README examples verbatim,
/// then each route of seeds 001 and 002 with the shapes their users relied on, and seed 000's
/// pages leading to the console.
#[test]
fn seed_000_001_002_routes_work_on_sluice() {
    let p = Pipeline::start("seeds");
    assert!(api::wait_ready(&p), "sluice dev did not become ready; see {}", p.dir.join("dev.log").display());
    let api = api::Api::new(&p);
    let host = p.api.trim_start_matches("http://").to_string();
    let at = |script: &str| script.replace("localhost:8080", &host);
    let operator = p.token("ops", "operator");

    // Seed 002, as its README runs it.
    let (status, user) = curl(&at(SEED_002_REGISTER));
    assert_eq!(status, 201, "{user}");
    assert_eq!((user["username"].as_str(), user["email"].as_str(), user["first_name"].as_str()), (Some("user1"), Some("user1@example.com"), Some("Иван")), "{user}");
    let (status, tokens) = curl(&at(SEED_002_LOGIN));
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap().to_string();
    // A new account may not move money before its profile is complete (KYC): the payment is
    // created and fails with that reason.
    let (status, payment) = curl(&at(SEED_002_PAYMENT).replace("YOUR_ACCESS_TOKEN", &token));
    assert_eq!(status, 201, "{payment}");
    assert_eq!((payment["status"].as_str(), payment["reason"].as_str(), payment["currency"].as_str(), payment["amount"].as_str()), (Some("failed"), Some("kyc_required"), Some("RUB"), Some("5000.00")), "{payment}");
    assert!(payment["reference"].as_str().is_some_and(|r| r.contains("конференции") && r.contains("event 1")), "{payment}");
    // With a profile and roubles on the account, the same example completes.
    let profile = api.call("PATCH", "/v1/auth/me", Some(&token), &[], Some(("application/json", br#"{"full_name": "Ivan Ivanov", "date_of_birth": "1990-05-01"}"#.to_vec())));
    assert_eq!(api.outcome(profile.at("/status_url"), &token)["status"], "settled");
    let user1 = user["id"].as_str().unwrap();
    let roubles = api.command("/v1/deposits", &operator, serde_json::json!({"user_id": user1, "amount": "8000.00", "currency": "RUB"}));
    assert_eq!(api.outcome(&roubles, &operator)["status"], "settled");
    let (status, paid) = curl(&at(SEED_002_PAYMENT).replace("YOUR_ACCESS_TOKEN", &token));
    assert_eq!((status, paid["status"].as_str(), paid["direction"].as_str()), (201, Some("completed"), Some("outgoing")), "{paid}");
    let (status, health) = curl(&at(SEED_002_HEALTH));
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "{health}");

    // Seed 002's other routes.
    let listed = api.get("/payments?status=completed", Some(&token));
    assert_eq!(listed.body["payments"][0]["payment_id"], paid["payment_id"], "{}", listed.body);
    let one = api.get(&format!("/payments/{}", paid["payment_id"].as_str().unwrap()), Some(&token));
    assert_eq!((one.status, one.at("/status")), (200, "completed"));
    assert_eq!(api.get("/auth/me", Some(&token)).at("/full_name"), "Ivan Ivanov");
    let refreshed = api.post("/auth/refresh", None, serde_json::json!({"refresh_token": tokens["refresh_token"]}));
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);

    // Seed 001: register with a username (an email), the OAuth2 password form, verify, check a
    // user, transfer to user1, history; then change the password.
    let registered = api.post("/register", None, serde_json::json!({"username": "pyotr@example.com", "password": "pyotr-password-1"}));
    assert_eq!((registered.status, registered.at("/username")), (201, "pyotr@example.com"), "{}", registered.body);
    let pyotr = registered.at("/id").to_string();
    let form = |password: &str| Some(("application/x-www-form-urlencoded", format!("grant_type=password&username=pyotr%40example.com&password={password}").into_bytes()));
    let issued = api.call("POST", "/token", None, &[], form("pyotr-password-1"));
    assert_eq!((issued.status, issued.at("/token_type")), (200, "Bearer"), "{}", issued.body);
    let pyotr_token = issued.at("/access_token").to_string();
    let wrong = api.call("POST", "/token", None, &[], form("not-his-password"));
    assert_eq!((wrong.status, wrong.problem_type()), (401, "invalid-credentials"));
    assert_eq!(api.get("/verify", Some(&pyotr_token)).at("/username"), "pyotr@example.com");
    assert_eq!(api.get("/verify", None).status, 401);
    let found = api.get("/check-user?username=user1@example.com", Some(&pyotr_token));
    assert_eq!((found.status, found.at("/user_id")), (200, user1), "{}", found.body);
    let missing = api.get("/check-user?username=nobody@example.com", Some(&pyotr_token));
    assert_eq!((missing.status, missing.problem_type()), (404, "user-not-found"));
    assert_eq!(api.get("/check-user?username=user1@example.com", None).status, 401, "only for signed-in callers");
    let profile = api.call("PATCH", "/v1/auth/me", Some(&pyotr_token), &[], Some(("application/json", br#"{"full_name": "Pyotr Petrov", "date_of_birth": "1988-02-03"}"#.to_vec())));
    assert_eq!(api.outcome(profile.at("/status_url"), &pyotr_token)["status"], "settled");
    let short = api.post("/transfer", Some(&pyotr_token), serde_json::json!({"receiver": "user1@example.com", "amount": 10}));
    assert_eq!((short.status, short.problem_type()), (422, "insufficient-funds"), "{}", short.body);
    let deposit = api.command("/v1/deposits", &operator, serde_json::json!({"user_id": pyotr, "amount": "100.00"}));
    assert_eq!(api.outcome(&deposit, &operator)["status"], "settled");
    let sent = api.post("/transfer", Some(&pyotr_token), serde_json::json!({"receiver": "user1@example.com", "amount": 10}));
    assert_eq!((sent.status, sent.at("/status"), sent.at("/amount"), sent.at("/receiver_id")), (200, "completed", "10.00", user1), "{}", sent.body);
    let history = api.get("/transactions?skip=0&limit=1", Some(&pyotr_token));
    assert_eq!((history.body[0]["command_id"].as_str(), history.body.as_array().map(Vec::len)), (Some(sent.at("/id")), Some(1)), "newest first: {}", history.body);
    let changed = api.post("/change-password", Some(&pyotr_token), serde_json::json!({"old_password": "pyotr-password-1", "new_password": "pyotr-password-2"}));
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(api.call("POST", "/token", None, &[], form("pyotr-password-2")).status, 200);

    // Seed 002's refund, in full by default, by the payee (user1 received Pyotr's 10.00).
    let refund = api.post(&format!("/payments/{}/refund", sent.at("/id")), Some(&token), serde_json::json!({}));
    assert_eq!((refund.status, refund.at("/status"), refund.at("/amount"), refund.at("/kind")), (201, "completed", "10.00", "REFUND"), "{}", refund.body);

    // Seed 000's pages lead to the console's.
    for (page, to) in [("/signup_form.html", "/#/signup"), ("/login_form.html", "/#/login"), ("/protected_web.html", "/#/account"), ("/send_transaction.html", "/#/account"), ("/index.html", "/")] {
        let head = Command::new("curl").args(["-s", "-i", &format!("{}{page}", p.api)]).output().unwrap();
        let head = text(&head.stdout);
        let location = head.lines().find_map(|l| l.strip_prefix("location: ")).map(str::trim);
        assert!(head.starts_with("HTTP/1.1 308") && location == Some(to), "{page}: {head}");
    }
}
