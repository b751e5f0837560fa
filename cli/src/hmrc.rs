//! `sluice hmrc simulate`: HMRC's death notification feed, simulated (seed 004's HMRC service
//! sends one a while after it starts). After a delay it posts a notification for one NIN or NHS
//! number to the HTTP API as the `hmrc` service account, then follows its status until the
//! pipeline has decided it. `sluice dev --hmrc-death IDENTIFIER` runs the same against its own
//! API.

use std::time::Duration;

use crate::config::SluiceConfig;

/// Flags of `sluice hmrc simulate` (and what `sluice dev --hmrc-death` fills in).
#[derive(clap::Args, Clone)]
pub(crate) struct SimulateArgs {
    /// The deceased's National Insurance number.
    #[arg(long, conflicts_with = "nhs_number", required_unless_present = "nhs_number")]
    pub(crate) nin: Option<String>,
    /// The deceased's NHS number (ten digits).
    #[arg(long)]
    pub(crate) nhs_number: Option<String>,
    /// Seconds to wait before sending (HMRC's feed is not immediate).
    #[arg(long, default_value_t = 30)]
    pub(crate) after_s: u64,
    /// Date of death, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub(crate) date_of_death: Option<String>,
    /// HMRC's reference (default: HMRC-SIM-<time>).
    #[arg(long)]
    pub(crate) reference: Option<String>,
    /// The HTTP API (default: http://<http_listen>).
    #[arg(long)]
    pub(crate) api: Option<String>,
    /// The dev stack's state dir, to find its generated JWT secret (default: the state_dir setting).
    #[arg(long)]
    pub(crate) state_dir: Option<std::path::PathBuf>,
}

/// `sluice hmrc ...`.
#[derive(clap::Subcommand)]
pub(crate) enum HmrcCommand {
    /// Send a death notification for one identifier after a delay, as HMRC's feed would, and
    /// print what the pipeline decided.
    Simulate(SimulateArgs),
}

/// The notification's body: the identifier, the date of death and the reference.
pub(crate) fn notification_body(args: &SimulateArgs, today: &str, now_ms: i64) -> serde_json::Value {
    let mut body = serde_json::json!({
        "date_of_death": args.date_of_death.clone().unwrap_or_else(|| today.to_string()),
        "reference": args.reference.clone().unwrap_or_else(|| format!("HMRC-SIM-{now_ms}")),
    });
    match (&args.nin, &args.nhs_number) {
        (Some(nin), _) => body["nin"] = serde_json::json!(nin),
        (None, Some(nhs)) => body["nhs_number"] = serde_json::json!(nhs),
        (None, None) => {}
    }
    body
}

/// Waits, sends the notification as `hmrc-simulator` (role hmrc, a token signed with the
/// configured JWT keys) and follows its status; returns the final status as JSON.
pub(crate) async fn simulate(args: SimulateArgs, config: &SluiceConfig) -> Result<serde_json::Value, String> {
    let keys = crate::run::jwt_keys(config)?.ok_or("no JWT keys configured to sign HMRC's token")?;
    let api = args.api.clone().unwrap_or_else(|| format!("http://{}", config.http_listen));
    let identifier = args.nin.as_deref().map(|n| format!("NIN {n}")).or_else(|| args.nhs_number.as_deref().map(|n| format!("NHS number {n}"))).unwrap_or_default();
    println!("HMRC simulator: a death notification for {identifier} in {} s", args.after_s);
    tokio::time::sleep(Duration::from_secs(args.after_s)).await;
    let now_ms = sluice_streams::now_ms();
    let today = sluice_schemas::Date(i32::try_from(now_ms / 86_400_000).unwrap_or_default()).to_string();
    let token = keys.issue("hmrc-simulator", &["hmrc"], sluice_processors::jwt::TokenUse::Access, now_ms, 300, &format!("hmrc-sim-{now_ms}"))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let body = notification_body(&args, &today, now_ms);
    let response = client
        .post(format!("{api}/v1/hmrc/death-notifications"))
        .bearer_auth(&token)
        .header("idempotency-key", body["reference"].as_str().unwrap_or_default())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{api}: {e}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(|e| format!("{api} answered {status} without JSON: {e}"))?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!("{api} refused the notification ({status}): {answer}"));
    }
    let status_url = answer["status_url"].as_str().ok_or("no status_url in the answer")?.to_string();
    println!("HMRC simulator: sent {body}; status at {status_url}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current: serde_json::Value = client.get(format!("{api}{status_url}")).bearer_auth(&token).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        if matches!(current["status"].as_str(), Some("settled" | "rejected")) {
            println!("HMRC simulator: {current}");
            return Ok(current);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no outcome for the notification within 60 s: {current}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_one_identifier_with_defaults_for_the_rest() {
        let args = SimulateArgs { nin: None, nhs_number: Some("943 476 5919".into()), after_s: 0, date_of_death: None, reference: None, api: None, state_dir: None };
        let body = notification_body(&args, "2026-12-03", 42);
        assert_eq!(body, serde_json::json!({"nhs_number": "943 476 5919", "date_of_death": "2026-12-03", "reference": "HMRC-SIM-42"}));
    }
}
