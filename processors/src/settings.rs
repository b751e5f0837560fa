//! The business settings of the pipeline, from a processor node's `config` table in
//! topology.toml. Unknown keys are refused, like everywhere else in Sluice.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Most minor units a currency may have: money is an Avro decimal of scale 2 on the wire.
pub const MAX_MINOR_UNITS: u32 = 2;

/// Settings with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// The default currency: of a command that names none, of limits and welcome credits
    /// (`currency`, default `GBP`).
    pub currency: String,
    /// Every currency accounts may hold, with its minor units (`currencies`, e.g.
    /// `"GBP:2,EUR:2,USD:2,RUB:2,JPY:0"`; default: the default currency, 2).
    pub currencies: BTreeMap<String, u32>,
    /// Largest transfer or withdrawal at KYC level `basic`, in the default currency
    /// (`basic_transfer_limit`, default `1000.00`).
    pub basic_transfer_limit: Decimal,
    /// The same in other currencies (`basic_transfer_limits`, e.g. `"EUR:1150.00,RUB:100000"`);
    /// a currency without one has `basic_transfer_limit` as its limit.
    pub basic_transfer_limits: BTreeMap<String, Decimal>,
    /// Balance of a newly opened account (`opening_balance`, default `0.00`).
    pub opening_balance: Decimal,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            currency: "GBP".to_string(),
            currencies: BTreeMap::new(),
            basic_transfer_limit: Decimal::new(100_000, 2),
            basic_transfer_limits: BTreeMap::new(),
            opening_balance: Decimal::ZERO,
        }
    }
}

/// An ISO 4217 code: three upper-case letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
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
                    if !is_currency_code(text) {
                        return Err(format!("`currency` must be an ISO 4217 code, got `{text}`"));
                    }
                    settings.currency = text.to_string();
                }
                "currencies" => settings.currencies = currencies(text)?,
                "basic_transfer_limit" => settings.basic_transfer_limit = money(key, text)?,
                "basic_transfer_limits" => {
                    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        let (code, amount) = item.split_once(':').ok_or_else(|| format!("`{key}`: `{item}` must be CODE:AMOUNT, e.g. EUR:1150.00"))?;
                        settings.basic_transfer_limits.insert(code.trim().to_string(), money(key, amount.trim())?);
                    }
                }
                "opening_balance" => {
                    let amount = money(key, text)?;
                    settings.opening_balance = amount;
                }
                _ => unreachable!("allowed keys are handled above"),
            }
        }
        if settings.currencies.is_empty() {
            settings.currencies.insert(settings.currency.clone(), MAX_MINOR_UNITS);
        } else if !settings.currencies.contains_key(&settings.currency) {
            return Err(format!("`currencies` must include the default currency {}", settings.currency));
        }
        if let Some(code) = settings.basic_transfer_limits.keys().find(|c| !settings.currencies.contains_key(*c)) {
            return Err(format!("`basic_transfer_limits` names {code}, which is not in `currencies`"));
        }
        Ok(settings)
    }

    /// The largest transfer or withdrawal at KYC level `basic` in `currency`.
    pub fn basic_limit(&self, currency: &str) -> Decimal {
        self.basic_transfer_limits.get(currency).copied().unwrap_or(self.basic_transfer_limit)
    }

    /// The minor units of `code`, if accounts may hold it.
    pub fn minor_units(&self, code: &str) -> Option<u32> {
        self.currencies.get(code).copied()
    }

    /// The supported currencies, for messages: `EUR, GBP, RUB, USD`.
    pub fn currency_list(&self) -> String {
        self.currencies.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `"GBP:2,EUR:2,JPY:0"` as codes and minor units.
fn currencies(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut found = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (code, units) = item.split_once(':').ok_or_else(|| format!("`currencies`: `{item}` must be CODE:MINOR_UNITS, e.g. GBP:2"))?;
        let (code, units) = (code.trim(), units.trim());
        if !is_currency_code(code) {
            return Err(format!("`currencies`: `{code}` is not an ISO 4217 code"));
        }
        let units: u32 = units.parse().map_err(|_| format!("`currencies`: the minor units of {code} must be a number, got `{units}`"))?;
        if units > MAX_MINOR_UNITS {
            return Err(format!("`currencies`: {code} has {units} minor units; at most {MAX_MINOR_UNITS} (amounts travel as decimal(18,2))"));
        }
        if found.insert(code.to_string(), units).is_some() {
            return Err(format!("`currencies`: {code} is listed twice"));
        }
    }
    if found.is_empty() {
        return Err("`currencies` lists no currency".to_string());
    }
    Ok(found)
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
        assert_eq!(settings.minor_units("GBP"), Some(2), "the default currency alone by default");
    }

    #[test]
    fn currencies_with_their_minor_units() {
        let keys = ["currency", "currencies", "basic_transfer_limit", "basic_transfer_limits"];
        let table: toml::Table = "currency = \"GBP\"\ncurrencies = \"GBP:2, EUR:2,JPY:0\"".parse().unwrap();
        let settings = PipelineSettings::from_table(&table, &keys).unwrap();
        assert_eq!((settings.minor_units("JPY"), settings.minor_units("EUR"), settings.minor_units("USD")), (Some(0), Some(2), None));
        assert_eq!(settings.currency_list(), "EUR, GBP, JPY");
        let limits: toml::Table = "currencies = \"GBP:2,JPY:0\"\nbasic_transfer_limits = \"JPY:190000\"".parse().unwrap();
        let settings = PipelineSettings::from_table(&limits, &keys).unwrap();
        assert_eq!((settings.basic_limit("JPY"), settings.basic_limit("GBP")), (Decimal::new(190_000, 0), Decimal::new(100_000, 2)));
        for (bad, why) in [
            ("currencies = \"EUR:2\"", "must include the default currency GBP"),
            ("currencies = \"GBP:3\"", "at most 2"),
            ("currencies = \"GBP\"", "CODE:MINOR_UNITS"),
            ("currencies = \"GBP:2,gbp:2\"", "not an ISO 4217 code"),
            ("currencies = \"GBP:2,GBP:2\"", "listed twice"),
            ("basic_transfer_limits = \"EUR:10\"", "not in `currencies`"),
        ] {
            let table: toml::Table = bad.parse().unwrap();
            let error = PipelineSettings::from_table(&table, &keys).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
