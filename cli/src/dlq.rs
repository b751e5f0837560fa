//! `sluice dlq list|show|replay|discard`: the dead-letter queue from the command line, the same
//! operations as the operator console's (`sluice_ingest::operator::dlq`, docs/operations.md).
//! Connects as the configured principal (an administrator's, `--config .sluice/admin.toml`
//! under `sluice dev`, or the console's).

use std::sync::Arc;

use sluice_ingest::operator::dlq::{DeadLetterView, Handled};
use sluice_ingest::operator::Console;
use sluice_streams::Topology;

use crate::config::SluiceConfig;

/// What to do.
#[derive(clap::Subcommand)]
pub(crate) enum DlqAction {
    /// The newest dead letters, newest first.
    List {
        /// Also those already replayed or discarded.
        #[arg(long)]
        all: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: its headers and its original value decoded (JSON).
    Show {
        /// `<partition>-<offset>` on sluice.dlq (the first column of `list`).
        id: String,
    },
    /// Write a dead letter's original record back to the topic it came from (with its
    /// original headers: a signed record is verified again).
    Replay {
        /// `<partition>-<offset>` on sluice.dlq.
        id: String,
        /// Why (kept with the decision and audited on system.logs.activity).
        #[arg(long)]
        note: String,
        /// Who decides (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Mark a dead letter handled without replaying it.
    Discard {
        /// `<partition>-<offset>` on sluice.dlq.
        id: String,
        /// Why.
        #[arg(long)]
        note: String,
        /// Who decides (default: $USER).
        #[arg(long)]
        operator: Option<String>,
    },
}

/// Runs one DLQ action.
pub(crate) async fn run(action: DlqAction, config: &SluiceConfig) -> Result<(), String> {
    let topology = Topology::from_file(&config.topology).map_err(|e| e.to_string())?;
    let console = Console::new(&config.bootstrap_servers, &config.application_id, Arc::new(topology), (&config.schema_registry_url, config.registry_user_info()), None)?;
    let operator = |given: Option<String>| given.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".to_string());
    let problem = |p: sluice_ingest::problem::Problem| format!("{}: {}", p.title, p.detail);
    match action {
        DlqAction::List { all, limit, json } => {
            let list = console.dead_letters(!all, limit).await.map_err(problem)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
                return Ok(());
            }
            println!("{:<10} {:<24} {:<34} {:<18} {:<10} MESSAGE", "ID", "DEAD-LETTERED (UTC)", "SOURCE", "CLASS", "STATUS");
            for letter in &list.dead_letters {
                let source = format!("{}/{}@{}", letter.source_topic, letter.source_partition, letter.source_offset);
                println!("{:<10} {:<24} {:<34} {:<18} {:<10} {}", letter.id, utc(letter.dead_lettered_at_ms), source, letter.error_class, letter.status, one_line(&letter.error_message, 80));
            }
            println!("{} open", list.open);
        }
        DlqAction::Show { id } => {
            let detail = console.dead_letter(&id).await.map_err(problem)?;
            println!("{}", serde_json::to_string_pretty(&detail).map_err(|e| e.to_string())?);
        }
        DlqAction::Replay { id, note, operator: who } => {
            let letter = console.replay(&id, &operator(who), &note).await.map_err(problem)?;
            print_decision(&letter);
        }
        DlqAction::Discard { id, note, operator: who } => {
            let letter = console.discard(&id, &operator(who), &note).await.map_err(problem)?;
            print_decision(&letter);
        }
    }
    Ok(())
}

fn print_decision(letter: &DeadLetterView) {
    match &letter.handled {
        Some(Handled { action, replayed_to: Some(to), .. }) => println!("{} {action} to {}/{}@{}", letter.id, to.topic, to.partition, to.offset),
        Some(Handled { action, .. }) => println!("{} {action}", letter.id),
        None => println!("{} open", letter.id),
    }
}

/// `2026-12-03 09:41:07` from ms since the epoch (UTC).
fn utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = sluice_schemas::Date(i32::try_from(days).unwrap_or(i32::MAX)).ymd();
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}...", flat.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_796_300_467_000), "2026-12-03 12:21:07");
    }
}
