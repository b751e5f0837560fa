//! `sluice dev --demo`: a few users, deposits and transfers through the HTTP API, so the console
//! is not empty. Every command carries an Idempotency-Key, so seeding again (within the 24 h
//! dedupe retention) adds nothing twice.

use std::time::Duration;

use serde_json::{json, Value};

/// The demo users' password.
pub(crate) const DEMO_PASSWORD: &str = "demo-password-1";
/// The demo users: (email, full name, deposit).
const USERS: [(&str, &str, &str); 3] = [("alice@demo.sluice", "Alice Liddell", "500.00"), ("bob@demo.sluice", "Bob Cratchit", "250.00"), ("carol@demo.sluice", "Carol Danvers", "100.00")];
/// Transfers: (payer index, payee index, amount, reference).
const TRANSFERS: [(usize, usize, &str, &str); 4] = [(0, 1, "42.50", "lunch"), (1, 2, "10.00", "tickets"), (2, 0, "5.00", "coffee"), (0, 2, "20.00", "birthday")];

/// Seeds the demo data through the API at `api` (e.g. `http://127.0.0.1:8080`); `operator` is
/// an operator token for the deposits.
pub(crate) async fn seed(api: &str, operator: &str) -> Result<(), String> {
    let client = Client { http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build().map_err(|e| e.to_string())?, api: api.trim_end_matches('/').to_string() };
    client.wait_ready().await?;
    let mut tokens = Vec::new();
    for (email, name, _) in USERS {
        let (status, body) = client.send("POST", "/v1/auth/register", None, None, json!({"email": email, "password": DEMO_PASSWORD, "full_name": name})).await?;
        if status != 202 && status != 409 {
            return Err(format!("registering {email}: {status} {body}"));
        }
    }
    for (email, name, _) in USERS {
        let token = client.log_in(email).await?;
        client.command(&token, "PATCH", "/v1/auth/me", &format!("demo-profile-{email}"), json!({"full_name": name, "date_of_birth": "1990-01-01"})).await?;
        tokens.push(token);
    }
    for (i, (email, _, amount)) in USERS.iter().enumerate() {
        let user_id = sluice_processors::model::user_id_for_email(email);
        client.command(operator, "POST", "/v1/deposits", &format!("demo-deposit-{i}"), json!({"user_id": user_id, "amount": amount, "reference": "demo top-up"})).await?;
    }
    for (i, (from, to, amount, reference)) in TRANSFERS.iter().enumerate() {
        let body = json!({"payee_email": USERS[*to].0, "amount": amount, "reference": reference});
        client.command(&tokens[*from], "POST", "/v1/transfers", &format!("demo-transfer-{i}"), body).await?;
    }
    Ok(())
}

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    async fn send(&self, method: &str, path: &str, token: Option<&str>, idempotency_key: Option<&str>, body: Value) -> Result<(u16, Value), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if !body.is_null() {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Waits until the API is ready (every task with stores is running).
    async fn wait_ready(&self) -> Result<(), String> {
        for _ in 0..600 {
            if let Ok((200, _)) = self.send("GET", "/ready", None, None, Value::Null).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("the API did not become ready within 2 minutes".to_string())
    }

    /// Logs in once the registration has been processed.
    async fn log_in(&self, email: &str) -> Result<String, String> {
        for _ in 0..100 {
            let (status, body) = self.send("POST", "/v1/auth/login", None, None, json!({"email": email, "password": DEMO_PASSWORD})).await?;
            if let (200, Some(token)) = (status, body["access_token"].as_str()) {
                return Ok(token.to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{email} could not log in (a demo user registered earlier with another password?)"))
    }

    /// Sends a command and waits for its outcome (so later commands see its effect).
    async fn command(&self, token: &str, method: &str, path: &str, key: &str, body: Value) -> Result<(), String> {
        let (status, accepted) = self.send(method, path, Some(token), Some(key), body).await?;
        let Some(status_url) = accepted["status_url"].as_str().filter(|_| status == 202) else {
            return Err(format!("{method} {path}: {status} {accepted}"));
        };
        for _ in 0..150 {
            let (_, outcome) = self.send("GET", status_url, Some(token), None, Value::Null).await?;
            if matches!(outcome["status"].as_str(), Some("settled" | "rejected")) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{method} {path}: no outcome for {status_url}"))
    }
}
