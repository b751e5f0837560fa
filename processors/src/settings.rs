//! The business settings of the pipeline, from a processor node's `config` table in
//! topology.toml. Unknown keys are refused, like everywhere else in Sluice.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Settings with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// The one currency accounts hold (`currency`, default `GBP`).
    pub currency: String,
    /// Largest transfer or withdrawal at KYC level `basic` (`basic_transfer_limit`, default `1000.00`).
    pub basic_transfer_limit: Decimal,
    /// Balance of a newly opened account (`opening_balance`, default `0.00`).
    pub opening_balance: Decimal,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings { currency: "GBP".to_string(), basic_transfer_limit: Decimal::new(100_000, 2), opening_balance: Decimal::ZERO }
    }
}

impl PipelineSettings {
    /// Reads the keys in `allowed` from `table`; any other key is an error.
    pub fn from_table(table: &toml::Table, allowed: &[&str]) -> Result<PipelineSettings, String> {
        let mut settings = PipelineSettings::default();
        for (key, value) in table {
            if !allowed.contains(&key.as_str()) {
                return Err(format!("unknown config key `{key}` (known: {})", allowed.join(", ")));
            }
            let text = value.as_str().ok_or_else(|| format!("`{key}` must be a string, e.g. \"1000.00\""))?;
            match key.as_str() {
                "currency" => {
                    if text.len() != 3 || !text.chars().all(|c| c.is_ascii_uppercase()) {
                        return Err(format!("`currency` must be an ISO 4217 code, got `{text}`"));
                    }
                    settings.currency = text.to_string();
                }
                "basic_transfer_limit" => settings.basic_transfer_limit = money(key, text)?,
                "opening_balance" => {
                    let amount = money(key, text)?;
                    settings.opening_balance = amount;
                }
                _ => unreachable!("allowed keys are handled above"),
            }
        }
        Ok(settings)
    }
}

fn money(key: &str, text: &str) -> Result<Decimal, String> {
    let amount = Decimal::from_str(text).map_err(|e| format!("`{key}`: `{text}` is not an amount: {e}"))?;
    if amount.is_sign_negative() || amount.normalize().scale() > 2 {
        return Err(format!("`{key}` must be a non-negative amount with at most two decimal places, got `{text}`"));
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let table: toml::Table = "basic_transfer_limit = \"250.00\"".parse().unwrap();
        let settings = PipelineSettings::from_table(&table, &["basic_transfer_limit"]).unwrap();
        assert_eq!(settings.basic_transfer_limit, Decimal::new(25000, 2));
        assert_eq!(settings.currency, "GBP");
        let unknown: toml::Table = "limit = \"1\"".parse().unwrap();
        assert!(PipelineSettings::from_table(&unknown, &["currency"]).unwrap_err().contains("unknown config key `limit`"));
        let negative: toml::Table = "opening_balance = \"-1\"".parse().unwrap();
        assert!(PipelineSettings::from_table(&negative, &["opening_balance"]).is_err());
    }
}
