//! `sluice-processors`: the fintech pipeline (docs/architecture.md, the pipeline) as [`Processor`]s wired by
//! `topology.toml`:
//!
//! | kind | task | does |
//! |---|---|---|
//! | `auth-validation` | per user | users, passwords, sessions, profiles; gates every other command |
//! | `balance-check` | per user (payer) | deposits, withdrawals, debits and their outcomes |
//! | `settlement` | per user (payee) | credits, or reversals back to the payer |
//! | `identity-request` | per user | NIN / NHS number format, claim keyed by identifier |
//! | `identity-verification` | per identifier | one user per identifier, none if deceased |
//! | `hmrc-death-notification` | per identifier | marks a NIN deceased, freezes its holder |
//! | `json-bridge` | stateless | kcat JSON commands with a JWT header to Avro, or the DLQ |
//!
//! Processors are deterministic (docs/guarantees.md, Determinism): ids derive from the causing record, time is the
//! record's timestamp (tokens in the bridge are judged at it too).

pub mod accounts;
pub mod avro;
pub mod auth_validation;
pub mod balance_check;
pub mod bridge;
pub mod emit;
pub mod hmrc;
pub mod identifiers;
pub mod identity;
pub mod jwt;
pub mod model;
pub mod notifications;
pub mod payments;
pub mod revocations;
pub mod settings;
pub mod settlement;

use std::sync::Arc;

use sluice_streams::{Processor, ProcessorRegistry};

pub use jwt::{JwtKeys, JwtSettings};
pub use settings::PipelineSettings;

/// Registers every kind above. `jwt` is needed only by `json-bridge`; without it a topology
/// that uses the bridge fails at start with a message naming the missing setting.
pub fn register(registry: &mut ProcessorRegistry, jwt: Option<Arc<JwtKeys>>) {
    registry.register(auth_validation::KIND, |config| {
        let settings = PipelineSettings::from_table(config.config, auth_validation::CONFIG_KEYS)?;
        Ok(Box::new(auth_validation::AuthValidation::new(settings)) as Box<dyn Processor>)
    });
    registry.register(balance_check::KIND, |config| {
        let settings = PipelineSettings::from_table(config.config, balance_check::CONFIG_KEYS)?;
        Ok(Box::new(balance_check::BalanceCheck::new(settings)) as Box<dyn Processor>)
    });
    registry.register(settlement::KIND, |config| {
        let settings = PipelineSettings::from_table(config.config, settlement::CONFIG_KEYS)?;
        Ok(Box::new(settlement::Settlement::new(settings)) as Box<dyn Processor>)
    });
    registry.register(identity::REQUEST_KIND, |config| {
        PipelineSettings::from_table(config.config, &[])?;
        Ok(Box::new(identity::IdentityRequest) as Box<dyn Processor>)
    });
    registry.register(identity::VERIFICATION_KIND, |config| {
        PipelineSettings::from_table(config.config, &[])?;
        Ok(Box::new(identity::IdentityVerification) as Box<dyn Processor>)
    });
    registry.register(hmrc::KIND, |config| {
        PipelineSettings::from_table(config.config, &[])?;
        Ok(Box::new(hmrc::HmrcDeathNotification) as Box<dyn Processor>)
    });
    registry.register(bridge::KIND, move |config| {
        PipelineSettings::from_table(config.config, &[])?;
        let keys = jwt.clone().ok_or("json-bridge checks JWTs: set jwt_secret (SLUICE__JWT_SECRET), or jwt_algorithm and jwt_public_key_file")?;
        Ok(Box::new(bridge::JsonBridge::new(keys)) as Box<dyn Processor>)
    });
}
