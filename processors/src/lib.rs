//! `sluice-processors`: the fintech processors of DESIGN §4 — auth-validation, balance-check,
//! settlement, identity-request, identity-verification, hmrc-death-notification and the kcat
//! JSON bridge — each a `Processor` wired by `topology.toml`. Built in the pipeline issue.
