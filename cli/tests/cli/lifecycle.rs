//! Payments with their lifecycle, notifications (list, read marks, the live stream) and
//! password reset, over HTTP against `sluice dev` (run inside the API journey).

use super::*;

use serde_json::{json, Value};

use super::api::Api;

/// The command id of a status URL (`/v1/commands/<id>?...`).
fn command_id(status_url: &str) -> &str {
    status_url.trim_start_matches("/v1/commands/").split('?').next().unwrap()
}

/// Alice deposited (`deposit`, a status URL), paid Bob `transfer` (120.50) and Bob refunded
/// 20.00 of it (`refund`); Bob's `too_much` transfer was refused.
pub(super) fn payments_have_a_lifecycle(api: &Api<'_>, (alice_token, bob_token): (&str, &str), (deposit, transfer, refund, too_much): (&str, &str, &str, &str)) {
    let (deposit, refund, too_much) = (command_id(deposit), command_id(refund), command_id(too_much));
    let mine = api.get("/v1/payments", Some(alice_token));
    assert_eq!(mine.status, 200, "{}", mine.body);
    let listed: Vec<(&str, &str, &str)> = mine.body["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["payment_id"].as_str().unwrap(), p["direction"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, vec![(refund, "incoming", "completed"), (transfer, "outgoing", "partially_refunded"), (deposit, "incoming", "completed")], "newest first: {}", mine.body);
    let detail = api.get(&format!("/v1/payments/{transfer}"), Some(alice_token));
    assert_eq!((detail.status, detail.at("/amount"), detail.at("/refunded_amount"), detail.at("/kind")), (200, "120.50", "20.00", "TRANSFER"), "{}", detail.body);
    // Bob's side of the same payment, and his refused one with its reason.
    let theirs = api.get(&format!("/v1/payments/{transfer}"), Some(bob_token));
    assert_eq!((theirs.at("/direction"), theirs.at("/status")), ("incoming", "partially_refunded"), "{}", theirs.body);
    let failed = api.get("/v1/payments?status=failed", Some(bob_token));
    assert_eq!(failed.body["payments"].as_array().unwrap().len(), 1, "{}", failed.body);
    assert_eq!((failed.body["payments"][0]["payment_id"].as_str(), failed.body["payments"][0]["reason"].as_str()), (Some(too_much), Some("limit_exceeded")));
    // Filters combine and page.
    let deposits = api.get("/v1/payments?direction=incoming&kind=deposit", Some(alice_token));
    assert_eq!(deposits.body["payments"].as_array().unwrap().len(), 1, "{}", deposits.body);
    let page = api.get("/v1/payments?limit=1&skip=1", Some(alice_token));
    assert_eq!((page.body["payments"][0]["payment_id"].as_str(), page.body["next_skip"].as_u64()), (Some(transfer), Some(2)), "{}", page.body);
    // Euros beside pounds, nothing converted: a euro transfer, refunded in euros without saying so.
    let alice = api.get("/v1/auth/me", Some(alice_token)).at("/user_id").to_string();
    let operator = api.p.token("ops", "operator");
    let euros = api.command("/v1/deposits", &operator, json!({"user_id": alice, "amount": 30, "currency": "EUR"}));
    assert_eq!(api.outcome(&euros, &operator)["status"], "settled");
    let sent = api.command("/v1/transfers", alice_token, json!({"payee_email": "bob@example.com", "amount": "12.00", "currency": "EUR"}));
    assert_eq!(api.outcome(&sent, alice_token)["status"], "settled");
    let back = api.command(&format!("/v1/payments/{}/refund", command_id(&sent)), bob_token, json!({"amount": "2.00"}));
    assert_eq!(api.outcome(&back, bob_token)["status"], "settled");
    let account = api.get("/v1/accounts/me", Some(alice_token));
    assert_eq!(account.body["balances"], json!([{"currency": "GBP", "balance": "399.50"}, {"currency": "EUR", "balance": "20.00"}]), "{}", account.body);
    let short = api.command("/v1/transfers", alice_token, json!({"payee_email": "bob@example.com", "amount": "25.00", "currency": "EUR"}));
    let outcome = api.outcome(&short, alice_token);
    assert_eq!(outcome["reason"], "insufficient_funds", "pounds do not pay for euros: {outcome}");
    let euro_payment = api.get(&format!("/v1/payments/{}", command_id(&sent)), Some(alice_token));
    assert_eq!((euro_payment.at("/currency"), euro_payment.at("/refunded_amount")), ("EUR", "2.00"), "{}", euro_payment.body);

    for (what, path, token, status, problem) in [
        ("an unknown status", "/v1/payments?status=lost", alice_token, 400, "invalid-query"),
        ("a page too large", "/v1/payments?limit=500", alice_token, 400, "invalid-limit"),
        ("someone else's payment", &*format!("/v1/payments/{deposit}"), bob_token, 404, "payment-not-found"),
        ("no such payment", "/v1/payments/c-nothing", alice_token, 404, "payment-not-found"),
    ] {
        let answer = api.get(path, Some(token));
        assert_eq!((answer.status, answer.problem_type()), (status, problem), "{what}: {}", answer.body);
    }
}

/// Reads server-sent events from `response` until one `notification` event arrives (30 s at
/// most); answers its `id` and its data as JSON.
fn next_event(api: &Api<'_>, response: &mut reqwest::Response) -> (i64, Value) {
    api.p.io.block_on(async {
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event: notification") {
                    let id = block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().parse().unwrap();
                    let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                    return (id, serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("a notification event within 30 s").unwrap().expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
}

fn open_stream(api: &Api<'_>, token: &str, last_event_id: Option<i64>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}/v1/notifications/stream", api.p.api)).header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = api.p.io.block_on(request.send()).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Bob was told of Alice's transfer; a live stream gets Alice's next notice as it happens, a
/// resumed one what it missed; read marks go through the pipeline.
pub(super) fn notifications_are_delivered(api: &Api<'_>, (alice, alice_token, bob_token): (&str, &str, &str), operator: &str) {
    let bob_notes = api.get("/v1/notifications", Some(bob_token));
    assert_eq!(bob_notes.status, 200, "{}", bob_notes.body);
    let received = bob_notes.body["notifications"].as_array().unwrap().iter().find(|n| n["kind"] == "payment_received" && n["message"].as_str().is_some_and(|m| m.contains("120.50"))).unwrap_or_else(|| panic!("{}", bob_notes.body));
    assert!(received["message"].as_str().unwrap().contains("120.50") && received["read"] == false, "{received}");

    let mut live = open_stream(api, alice_token, None);
    let deposit = api.command("/v1/deposits", operator, json!({"user_id": alice, "amount": "1.25"}));
    assert_eq!(api.outcome(&deposit, operator)["status"], "settled");
    let (id, event) = next_event(api, &mut live);
    assert_eq!((event["kind"].as_str(), event["sequence"].as_i64()), (Some("deposit_received"), Some(id)), "{event}");
    assert!(event["message"].as_str().unwrap().contains("1.25"), "{event}");
    drop(live);
    // Resuming after the one before the newest gets the newest again at once.
    let mut resumed = open_stream(api, alice_token, Some(id - 1));
    assert_eq!(next_event(api, &mut resumed).0, id);
    drop(resumed);

    let page = api.get("/v1/notifications", Some(alice_token));
    let unread = page.body["unread_count"].as_u64().unwrap();
    assert!(unread >= 2 && page.body["last_sequence"] == id, "{}", page.body);
    assert!(page.body["notifications"].as_array().unwrap().iter().take(unread as usize).all(|n| n["read"] == false), "unread first: {}", page.body);
    let mark = api.command("/v1/notifications/read", alice_token, json!({"up_to_sequence": id}));
    assert_eq!(api.outcome(&mark, alice_token)["status"], "settled");
    let page = api.get("/v1/notifications?unread_only=true", Some(alice_token));
    assert_eq!((page.body["unread_count"].as_u64(), page.body["notifications"].as_array().map(Vec::len)), (Some(0), Some(0)), "{}", page.body);
    for (what, body) in [("nothing to mark", json!({})), ("sequence 0", json!({"sequences": [0]}))] {
        let answer = api.post("/v1/notifications/read", Some(alice_token), body);
        assert_eq!((answer.status, answer.problem_type()), (422, "invalid-request"), "{what}: {}", answer.body);
    }
    let anonymous = api.get("/v1/notifications/stream", None);
    assert_eq!((anonymous.status, anonymous.problem_type()), (401, "missing-token"));
}

/// The reset messages `sluice dev` wrote for `email` (its outbox, `.sluice/outbox`).
fn mails_to(api: &Api<'_>, email: &str) -> Vec<String> {
    let outbox = api.p.dir.join("outbox");
    let Ok(entries) = std::fs::read_dir(&outbox) else { return Vec::new() };
    let mut mails: Vec<(PathBuf, String)> = entries.map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read_to_string(p).unwrap())).filter(|(_, m)| m.contains(&format!("To: {email}\r\n"))).collect();
    mails.sort();
    mails.into_iter().map(|(_, m)| m).collect()
}

/// Erin forgets her password: the token reaches her outbox only, works once, revokes her
/// sessions; asking for an email without an account answers the same and sends nothing.
pub(super) fn a_password_is_reset_with_a_single_use_token(api: &Api<'_>) {
    let (erin_token, _, _) = api.sign_up("erin@example.com", "erin-password-1");
    // Erin's live stream, open with the session the reset will end.
    let mut stream = open_stream(api, &erin_token, None);
    let nobody = api.post("/v1/auth/reset-password", None, json!({"email": "nobody@example.com"}));
    let asked = api.post("/v1/auth/reset-password", None, json!({"email": "Erin@Example.com"}));
    assert_eq!((asked.status, nobody.status), (202, 202), "{} {}", asked.body, nobody.body);
    assert_eq!(asked.body, nobody.body, "the answer does not tell whether the account exists");
    // Sent after the answer: it arrives shortly.
    let mail = api.wait_for("Erin's reset message in the outbox", || mails_to(api, "erin@example.com").pop());
    assert!(mails_to(api, "nobody@example.com").is_empty());
    let token = mail.lines().map(str::trim).find(|l| l.starts_with("u_") && l.contains('.')).unwrap_or_else(|| panic!("{mail}")).to_string();

    let confirm = |token: &str, password: &str| api.post("/v1/auth/reset-password/confirm", None, json!({"token": token, "new_password": password}));
    let forged = format!("{}.{}", token.split('.').next().unwrap(), "0".repeat(64));
    for (what, answer, status, problem) in [
        ("a made-up token", confirm(&forged, "erin-password-2"), 400, "invalid-reset-token"),
        ("not a token", confirm("hello", "erin-password-2"), 400, "invalid-reset-token"),
        ("a weak password", confirm(&token, "short"), 422, "weak-password"),
    ] {
        assert_eq!((answer.status, answer.problem_type()), (status, problem), "{what}: {}", answer.body);
    }
    let done = confirm(&token, "erin-password-2");
    assert_eq!(done.status, 200, "{}", done.body);
    // The reset signed every session out: the stream opened with the old token ends (after the
    // notices it had coming).
    api.p.io.block_on(async {
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(chunk) = stream.chunk().await.expect("the stream ends cleanly") {
                drop(chunk);
            }
        });
        ended.await.expect("the stream of a revoked session ends");
    });
    let again = confirm(&token, "erin-password-3");
    assert_eq!((again.status, again.problem_type()), (400, "reset-token-used"), "{}", again.body);
    api.wait_for("Erin's old session to be refused", || {
        let answer = api.get("/v1/auth/me", Some(&erin_token));
        (answer.status == 401).then(|| assert_eq!(answer.problem_type(), "token-revoked", "{}", answer.body))
    });
    let old_password = api.post("/v1/auth/login", None, json!({"email": "erin@example.com", "password": "erin-password-1"}));
    assert_eq!(old_password.status, 401, "{}", old_password.body);
    let (new_token, _, _) = api.log_in("erin@example.com", "erin-password-2");
    let notes = api.get("/v1/notifications", Some(&new_token));
    let kinds: Vec<&str> = notes.body["notifications"].as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    assert!(kinds.contains(&"password_reset") && kinds.contains(&"password_reset_requested"), "{}", notes.body);
}
